"""Flexible orchestration scale sets: the instances are ordinary VMs (compute.py serves them), the scale set keeps
the model, and the Uniform-only operations answer as Azure answers them on a Flexible scale set.

Every behaviour here comes from tests/data/flexible-scale-sets.md (facts with their sources; "thin" where no
source states it exactly). The routes registered here come before vmss.py's and hand Uniform scale sets back to
vmss.py unchanged.
"""
import copy

from . import handlers
from . import vmss as scale_sets  # the Uniform implementation; `vmss` is the route's scale-set name here
from .arm import COMPUTE
from .errors import ArmError, not_found
from .state import FLEXIBLE, ORCHESTRATION_MODES, UNIFORM, has_health_extension, new_flexible_vm
from .validation import required_missing

VMSS_VM_TYPE = f"{scale_sets.VMSS_TYPE}/virtualMachines"


def is_flexible(ss):
    return ss.orchestration_mode == FLEXIBLE


# --- writes of the scale set itself ---------------------------------------------------------------------------
def check_scale_set_write(ctx, ss, props, mode, model):
    """The orchestration rules of a scale-set PUT/PATCH, checked before anything changes; returns the mode.

    - orchestrationMode is set at creation and "cannot be changed or updated later" (orch-modes);
    - a Flexible scale set is created with platformFaultDomainCount (example-vmss-flex, terraform-orchestrated);
    - Rolling on Flexible needs the Application Health extension (upgrade-policy).
    The status codes and messages are the emulator's own where the facts file says "thin"."""
    asked = props.get("orchestrationMode")
    if asked is not None and asked not in ORCHESTRATION_MODES:
        raise ArmError(400, "InvalidParameter", f"The value '{asked}' of orchestrationMode is not valid; it must be "
                       f"one of {', '.join(ORCHESTRATION_MODES)}.", target="properties.orchestrationMode")
    current = ss.orchestration_mode if ss is not None else None
    if current is not None and asked is not None and asked != current:
        raise ArmError(400, "PropertyChangeNotAllowed", "Changing property 'orchestrationMode' is not allowed.",
                       target="orchestrationMode")
    orchestration = current or asked or UNIFORM
    if orchestration == FLEXIBLE:
        if ss is None and props.get("platformFaultDomainCount") is None:
            raise required_missing("properties.platformFaultDomainCount")
        extensions = {k: e for k, (dummy, e) in model.items()} if model is not None else ss.extensions
        if mode == "Rolling" and not has_health_extension(extensions):
            raise ArmError(400, "BadRequest", "A Virtual Machine Scale Set with Flexible orchestration mode and "
                           "upgrade policy mode 'Rolling' must have the Application Health extension "
                           "(ApplicationHealthLinux or ApplicationHealthWindows) in its model.",
                           target="upgradePolicy.mode")
    return orchestration


def set_orchestration(ss, orchestration, props):
    ss.orchestration_mode = orchestration
    if orchestration == FLEXIBLE:
        ss.platform_fault_domain_count = int(props["platformFaultDomainCount"])


def set_capacity(ctx, ss, capacity):
    """sku.capacity of a Flexible scale set: new VMs (which get the model, vmss.py schedules it) or, scaling in,
    the newest VMs deleted with their extensions. Returns the added VMs."""
    while len(ss.instances) > capacity:
        vm = ss.instances.pop()
        ctx.sub.vms.pop((vm.rg.lower(), vm.name.lower()), None)
    added = []
    while len(ss.instances) < capacity:
        vm = new_flexible_vm(ss)
        ctx.sub.vms[(vm.rg.lower(), vm.name.lower())] = vm
        ss.instances.append(vm)
        added.append(vm)
    return added


# --- the model applied to an instance ---------------------------------------------------------------------------
class ScheduledExtensions(dict):
    """What a scheduled upgrade leaves on a VM, remembering the VM's extensions when it was scheduled: when a later
    batch lands (compute.settle), an extension written or deleted through the VM API in between stays as written."""

    def __init__(self, result, before):
        super().__init__(result)
        self.before = dict(before)

    def landed(self, current):
        merged = dict(self)
        for key, ext in current.items():
            if self.before.get(key) is not ext:
                merged[key] = ext
        for key, ext in self.before.items():
            if key not in current and merged.get(key) is ext:
                del merged[key]
        return merged


def upgraded_vm_extensions(ctx, ss, vm, at, model):
    """vmss.py's upgrade step for a Flexible instance: the model's extensions applied to the VM as extension writes
    would apply them (tests/data/flexible-scale-sets.md, section 4, thin): an identical definition does not rerun the
    handler; an extension the VM got from the model and the model no longer has is removed; extensions written on
    the VM itself and absent from the model stay. Handlers run under the VM's name, like any VM's."""
    result, failures = {}, []
    for key, ext in vm.extensions.items():
        if key not in model and not (ext.version and ext.deleting_until is None):
            result[key] = ext
    for key, model_ext in model.items():
        current = vm.extensions.get(key)
        if current is not None and current.deleting_until is None and current.definition() == model_ext.definition():
            result[key] = current
            continue
        run = handlers.start_run(ctx.state, vm.name, model_ext.name, model_ext.props, vm.os_type,
                                 "Creating" if current is None else "Updating", at,
                                 agent_ready=vm.agent_status == "Ready", protected=model_ext.protected)
        run.version = handlers.handler_version(ctx.state, vm.location, model_ext.props)
        ext = copy.copy(model_ext)
        ext.run, ext.deleting_until, ext.location = run, None, vm.location
        result[key] = ext
        if run.outcome == "failed":
            failures.append((model_ext, run))
    ends = [e.run.end for e in result.values() if e.run.start == at]
    end = None if None in ends else max(ends, default=at)
    return ScheduledExtensions(result, vm.extensions), failures, end, ss.model_version


# --- Uniform-only operations ------------------------------------------------------------------------------------
def scale_set_instance_view(ctx, sub, rg, vmss):
    """GET {scale set}/instanceView: "VMSS Get Instance View | No" on Flexible (orch-modes); the reported error
    begins "Operation 'VirtualMachineScaleSets.instanceView.GET' is not allowed on Virtual Machine Scale Set"
    (nomad-1096). 409 and the end of the message are the emulator's (thin)."""
    ss = scale_sets.find_scale_set(ctx, rg, vmss)
    if not is_flexible(ss):
        return scale_sets.scale_set_instance_view(ctx, sub, rg, vmss)
    raise ArmError(409, "OperationNotAllowed",
                   f"Operation 'VirtualMachineScaleSets.instanceView.GET' is not allowed on Virtual Machine Scale Set "
                   f"'{ss.name}' since it is in Flexible orchestration mode.")


def _instance_reference(ss, vm):
    """A Flexible instance as VMSS VMs - List gives it: "a list of scale sets VM IDs" (orch-modes), read by clients
    as name and instanceId (= the VM name) only (nomad-1106, steampipe-829). The exact item shape is not published
    (thin): no instanceView, latestModelApplied or resources[] here; the VM APIs have them."""
    return {"name": vm.name, "instanceId": vm.name, "id": f"{scale_sets.vmss_id(ss)}/virtualMachines/{vm.name}",
            "type": VMSS_VM_TYPE, "location": vm.location, "properties": {"vmId": vm.vm_id}}


def list_instances(ctx, sub, rg, vmss):
    ss = scale_sets.find_scale_set(ctx, rg, vmss)
    if not is_flexible(ss):
        return scale_sets.list_instances(ctx, sub, rg, vmss)
    return 200, ctx.page([_instance_reference(ss, vm) for vm in ss.instances])


def _refuse_instance(ss, instance_id):
    """The VMSS VM APIs on a Flexible scale set: given the VM name, "Virtual Machine Scale Set VM instanceId must be
    a number." (400 InvalidParameter, target instanceId: steampipe-829, azcollection-1526); a number names no
    instance (thin: 404)."""
    if not instance_id.isdigit():
        raise ArmError(400, "InvalidParameter", "Virtual Machine Scale Set VM instanceId must be a number.",
                       target="instanceId")
    raise not_found(f"{scale_sets.VMSS_TYPE}/{ss.name}/virtualMachines", instance_id, ss.rg)


def _per_instance(uniform):
    """A VMSS VM route: refused on a Flexible scale set, vmss.py's `uniform` handler otherwise."""
    def handler(ctx, sub, rg, vmss, instance_id, **rest):
        ss = scale_sets.find_scale_set(ctx, rg, vmss)
        if is_flexible(ss):
            _refuse_instance(ss, instance_id)
        return uniform(ctx, sub, rg, vmss, instance_id, **rest)
    return handler


def register(router):
    ss = rf"{COMPUTE}/virtualMachineScaleSets/(?P<vmss>[^/]+)"
    instance = rf"{ss}/virtualMachines/(?P<instance_id>[^/]+)"
    router.add("GET", rf"{ss}/instanceView", scale_set_instance_view, scale_sets.VMSS_TYPE)
    router.add("GET", rf"{ss}/virtualMachines", list_instances, VMSS_VM_TYPE)
    router.add("GET", instance, _per_instance(scale_sets.get_instance), VMSS_VM_TYPE)
    router.add("GET", rf"{instance}/instanceView", _per_instance(scale_sets.get_instance_view), VMSS_VM_TYPE)
    router.add("GET", rf"{instance}/extensions", _per_instance(scale_sets.list_instance_extensions),
               f"{VMSS_VM_TYPE}/extensions")
    router.add("GET", rf"{instance}/extensions/(?P<name>[^/]+)", _per_instance(scale_sets.get_instance_extension),
               f"{VMSS_VM_TYPE}/extensions")
