"""Microsoft.Compute for single VMs: VMs, their instance views, VM extensions, operations and extension images.

Extension writes follow the recorded protocol: PUT 201/200 with provisioningState Creating/Updating and an
Azure-AsyncOperation header; DELETE 202 with Azure-AsyncOperation and Location; the operation is polled until
the simulated handler finishes. One extension operation at a time per VM (409 otherwise), and a failed
extension blocks other installs on its VM ("seed 000").
"""
import re

import azure.mgmt.compute.models as compute_models

from . import handlers
from .arm import COMPUTE, SUB, busy, conflict, lookup
from .errors import ArmError, not_found
from .state import Extension, HandlerRun
from .validation import require_object, required_missing, validate_model

VM_TYPE = "Microsoft.Compute/virtualMachines"
EXT_TYPE = "Microsoft.Compute/virtualMachines/extensions"
IMAGE_TYPE = "Microsoft.Compute/locations/publishers"
# Public properties an extension keeps, in the order ARM returns them.
KEPT_PROPERTIES = ("autoUpgradeMinorVersion", "forceUpdateTag", "enableAutomaticUpgrade", "suppressFailures",
                   "publisher", "type", "typeHandlerVersion", "settings", "provisionAfterExtensions",
                   "protectedSettingsFromKeyVault")


def canonical_props(state, location, props):
    """Azure normalizes publisher/type casing to the catalogue's; keep only what ARM stores and returns."""
    image = handlers.find_image(state, location, props.get("publisher", ""), props.get("type", ""))
    if image:
        props = dict(props, publisher=image["publisher"], type=image["type"])
    return {key: props[key] for key in KEPT_PROPERTIES if key in props}


def check_extension_body(body, model, new):
    validate_model(body, model)
    properties = body.get("properties")
    if properties is None:
        if new:
            raise required_missing("properties")
        return {}
    require_object(properties.get("settings"), "properties.settings")
    require_object(properties.get("protectedSettings"), "properties.protectedSettings")
    if new:
        for key in ("publisher", "type", "typeHandlerVersion"):
            if properties.get(key) in (None, ""):
                raise required_missing(f"properties.{key}")
    check_type_handler_version(properties.get("typeHandlerVersion"))
    return properties


_HANDLER_VERSION = re.compile(r"^\d+\.\d+$")


def check_type_handler_version(version):
    """Azure takes typeHandlerVersion as "major.minor" only: "abc", "2", "2.1.6" or "1.9.5" get 400 InvalidParameter
    "The value of parameter typeHandlerVersion is invalid." (target typeHandlerVersion), the error users report for
    every other shape; the Azure CLI trims --version to major.minor for that reason (its
    _normalize_extension_version). Sources: tests/data/reference/issue-25.md. A well-formed version the catalogue
    lacks (Azure's ArtifactNotFound) is not modelled."""
    if version is not None and not (isinstance(version, str) and _HANDLER_VERSION.match(version)):
        raise ArmError(400, "InvalidParameter", "The value of parameter typeHandlerVersion is invalid.",
                       target="typeHandlerVersion")


def extension_body(ctx, vm, ext, provisioning_state=None, instance_view=False):
    if provisioning_state is None:
        provisioning_state = "Deleting" if ext.deleting_until is not None else ext.run.provisioning_state(ctx.now)
    props = dict(ext.props, provisioningState=provisioning_state)
    if instance_view:
        props["instanceView"] = handlers.extension_instance_view(ctx.state, ext, vm.os_type, vm.location, ctx.now)
    body = {"name": ext.name, "id": f"{vm_id(vm)}/extensions/{ext.name}", "type": EXT_TYPE,
            "location": ext.location or vm.location}
    if ext.tags:
        body["tags"] = ext.tags
    body["properties"] = props
    return body


LINUX_IMAGE = {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2",
               "version": "latest", "exactVersion": "22.04.202404080"}
WINDOWS_IMAGE = {"publisher": "MicrosoftWindowsServer", "offer": "WindowsServer", "sku": "2022-datacenter-azure-edition",
                 "version": "latest", "exactVersion": "20348.2340.240303"}


def nic_id(vm):
    return f"/subscriptions/{vm.sub}/resourceGroups/{vm.rg}/providers/Microsoft.Network/networkInterfaces/{vm.name}-nic"


def vm_id(vm):
    return f"/subscriptions/{vm.sub}/resourceGroups/{vm.rg}/providers/{VM_TYPE}/{vm.name}"


def settle(vm, now):
    """Apply what the clock decided: extensions whose delete finished are gone."""
    for key in [k for k, ext in vm.extensions.items() if ext.deleting_until is not None and now >= ext.deleting_until]:
        del vm.extensions[key]
    # A Flexible instance's share of a scale-set upgrade (vmss.py schedules it) takes effect when its time comes;
    # a model upgrade (flexible.ScheduledExtensions) keeps what the VM API wrote on the VM meanwhile.
    while vm.pending and vm.pending[0][0] <= now:
        dummy, version, extensions = vm.pending.pop(0)
        landed = getattr(extensions, "landed", None)
        vm.model_version, vm.extensions = version, (landed(vm.extensions) if landed else extensions)


def find_vm(ctx, rg, name):
    vm = lookup(ctx.sub.vms, ctx, rg, name, VM_TYPE)
    settle(vm, ctx.now)
    return vm


def find_extension(vm, name):
    ext = vm.extensions.get(name.lower())
    if ext is None:
        raise not_found(f"{VM_TYPE}/{vm.name}/extensions", name, vm.rg)
    return ext


# --- VMs ------------------------------------------------------------------------------------------------------
def instance_view(ctx, vm):
    exts = list(vm.extensions.values())
    windows = vm.os_type == "Windows"
    power = {"running": "VM running", "stopped": "VM stopped", "deallocated": "VM deallocated"}
    view = {
        "computerName": vm.computer_name,
        "osName": "Windows Server 2022 Datacenter" if windows else "ubuntu",
        "osVersion": "10.0.20348.2340" if windows else "22.04",
        "vmAgent": handlers.vm_agent_view(ctx.state, vm.agent_status, vm.agent_version, exts, vm.location, ctx.now),
        "disks": [{"name": f"{vm.name}_OsDisk_1", "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"}]}],
        "hyperVGeneration": "V2",
        "extensions": [handlers.extension_instance_view(ctx.state, ext, vm.os_type, vm.location, ctx.now)
                       for ext in exts],
        "statuses": [
            {"code": f"ProvisioningState/{vm_provisioning_state(ctx, vm).lower()}", "level": "Info",
             "displayStatus": f"Provisioning {vm_provisioning_state(ctx, vm).lower()}"},
            {"code": f"PowerState/{vm.power_state}", "level": "Info",
             "displayStatus": power.get(vm.power_state, vm.power_state)},
        ],
    }
    if vm.platform_fault_domain is not None:
        view["platformFaultDomain"] = vm.platform_fault_domain
    return view


def vm_provisioning_state(ctx, vm):
    return "Updating" if busy(vm.busy_until, ctx.now) else "Succeeded"


def vm_body(ctx, vm, with_instance_view=False):
    windows = vm.os_type == "Windows"
    os_profile = {"computerName": vm.computer_name, "adminUsername": "azureuser"}
    if windows:
        os_profile["windowsConfiguration"] = {"provisionVMAgent": True, "enableAutomaticUpdates": True,
                                              "patchSettings": {"patchMode": "AutomaticByOS"}}
    else:
        os_profile["linuxConfiguration"] = {"disablePasswordAuthentication": True, "provisionVMAgent": True,
                                            "patchSettings": {"patchMode": "ImageDefault"}}
    os_profile.update(secrets=[], allowExtensionOperations=True, requireGuestProvisionSignal=True)
    properties = {
        "vmId": vm.vm_id,
        "hardwareProfile": {"vmSize": "Standard_B2s"},
        # The shape of the recorded real body (tests/data/recordings/test_mgmt_compute.test_vm_extensions.yaml,
        # the VM PUT/GET): imageReference, osDisk, dataDisks (a list, even empty), osProfile with secrets and
        # allowExtensionOperations, networkProfile with the NIC ids. Clients such as azure.azcollection's
        # azure_rm_virtualmachine_info read all of them.
        "storageProfile": {
            "imageReference": dict(WINDOWS_IMAGE if windows else LINUX_IMAGE),
            "osDisk": {"osType": vm.os_type, "name": f"{vm.name}_OsDisk_1", "createOption": "FromImage",
                       "caching": "ReadWrite", "managedDisk": {
                           "storageAccountType": "Premium_LRS",
                           "id": f"/subscriptions/{vm.sub}/resourceGroups/{vm.rg}/providers/Microsoft.Compute/disks/"
                                 f"{vm.name}_OsDisk_1"},
                       "deleteOption": "Delete", "diskSizeGB": 30},
            "dataDisks": [],
        },
        "osProfile": os_profile,
        "networkProfile": {"networkInterfaces": [{"id": nic_id(vm)}]},
        "provisioningState": vm_provisioning_state(ctx, vm),
    }
    if vm.scale_set_id is not None:
        # A Flexible scale set's instance (tests/data/arm-examples/compute-2026-04-01/virtualMachineExamples/
        # VirtualMachine_Create_InAVmssWithCustomerAssignedPlatformFaultDomain.json).
        properties["virtualMachineScaleSet"] = {"id": vm.scale_set_id}
        properties["platformFaultDomain"] = vm.platform_fault_domain
    if with_instance_view:
        properties["instanceView"] = instance_view(ctx, vm)
    return {
        "name": vm.name, "id": vm_id(vm), "type": VM_TYPE, "location": vm.location, "properties": properties,
        # As ARM does: the VM's extension child resources in full (never their protected settings).
        "resources": [extension_body(ctx, vm, ext) for ext in vm.extensions.values()],
    }


def get_vm(ctx, sub, rg, vm):
    return 200, vm_body(ctx, find_vm(ctx, rg, vm), ctx.expand_instance_view())


def get_vm_instance_view(ctx, sub, rg, vm):
    return 200, instance_view(ctx, find_vm(ctx, rg, vm))


def status_only_body(ctx, vm):
    """A VM as `statusOnly=true` lists it: its identity and run-time status (the instance view, with the
    extensions' statuses), without the model's profiles. Clients that list with statusOnly read
    properties.instanceView and properties.vmId, and list a second time without it for the profiles."""
    return {"name": vm.name, "id": vm_id(vm), "type": VM_TYPE, "location": vm.location,
            "properties": {"vmId": vm.vm_id, "instanceView": instance_view(ctx, vm)}}


def _vm_page(ctx, vms, filtered=False):
    """VirtualMachines List / List All / List By Location: one page of VMs, paged by nextLink (page_size)."""
    for vm in vms:
        settle(vm, ctx.now)
    if ctx.query.get("statusOnly", "").lower() == "true":
        return 200, ctx.page(vms, lambda vm: status_only_body(ctx, vm))
    expand = filtered and ctx.expand_instance_view()
    return 200, ctx.page(vms, lambda vm: vm_body(ctx, vm, expand))


# VMs - List and List All: "$filter ... Allowed value is 'virtualMachineScaleSet/id' eq /subscriptions/{subId}/
# resourceGroups/{resourceGroupName}/providers/Microsoft.Compute/virtualMachineScaleSets/{vmssName}'", and
# "$expand ... 'instanceView' ... can only be specified if a valid $filter option is specified" (the REST spec, as
# azure-mgmt-compute 39.0.0's docstrings carry it). Clients quote both sides (the Java SDK's
# listByVirtualMachineScaleSetId: "'virtualMachineScaleSet/id' eq '%s'"); tests/data/flexible-scale-sets.md.
_SCALE_SET_FILTER = re.compile(r"\s*'?virtualMachineScaleSet/id'?\s+eq\s+'([^']+)'\s*", re.IGNORECASE)


def _scale_set_filter(ctx, vms):
    """(the VMs the request's $filter keeps, whether a valid $filter was given). The error texts are the
    emulator's own (no published sample; tests/emulator/README.md)."""
    expression = ctx.query.get("$filter")
    if expression is None:
        if ctx.expand_instance_view():
            raise ArmError(400, "InvalidParameter", "The $expand=instanceView option can only be specified "
                           "together with a valid $filter option.", target="$expand")
        return vms, False
    match = _SCALE_SET_FILTER.fullmatch(expression)
    if not match:
        raise ArmError(400, "InvalidParameter", f"The $filter value '{expression}' is not supported; the allowed "
                       "value is 'virtualMachineScaleSet/id' eq '<scale set id>'.", target="$filter")
    wanted = match.group(1).rstrip("/").lower()
    return [vm for vm in vms if (vm.scale_set_id or "").lower() == wanted], True


def list_vms(ctx, sub, rg):
    ctx.resource_group(rg)
    vms, filtered = _scale_set_filter(ctx, [vm for (vm_rg, dummy), vm in ctx.sub.vms.items() if vm_rg == rg.lower()])
    return _vm_page(ctx, vms, filtered)


def list_all_vms(ctx, sub):
    """GET /subscriptions/{s}/providers/Microsoft.Compute/virtualMachines[?statusOnly=true] (List All)."""
    vms, filtered = _scale_set_filter(ctx, list(ctx.sub.vms.values()))
    return _vm_page(ctx, vms, filtered)


def list_vms_by_location(ctx, sub, location):
    """GET /subscriptions/{s}/providers/Microsoft.Compute/locations/{location}/virtualMachines."""
    wanted = location.replace(" ", "").lower()
    return _vm_page(ctx, [vm for vm in ctx.sub.vms.values() if vm.location.replace(" ", "").lower() == wanted])


# --- VM extensions --------------------------------------------------------------------------------------------
def _writable(ctx, vm, operation):
    if busy(vm.busy_until, ctx.now):
        raise conflict("VM", vm.name, operation)
    if vm.power_state != "running":
        raise ArmError(409, "OperationNotAllowed",
                       "Cannot modify extensions in the VM when the VM is not running.")


def _failed_sibling(vm, name, now):
    for ext in vm.extensions.values():
        if ext.name.lower() != name.lower() and ext.deleting_until is None and ext.run.finished(now) \
                and ext.run.outcome == "failed":
            return ext
    return None


def _run_handler(ctx, vm, ext, kind):
    """Start the handler for a written extension and the operation that tracks it; returns the operation."""
    sibling = _failed_sibling(vm, ext.name, ctx.now) if kind == "Creating" else None
    if sibling is not None:
        # The agent reports the VM's failed extension for every later extension operation.
        duration = ctx.state.settings["handler_duration_s"]
        error = handlers.provisioning_error(sibling.name, sibling.props, sibling.run)
        ext.run = HandlerRun(ctx.now, ctx.now + duration, "failed", error["message"], kind)
        end = ext.run.end
    else:
        ext.run = handlers.start_run(ctx.state, vm.name, ext.name, ext.props, vm.os_type, kind, ctx.now,
                                     agent_ready=vm.agent_status == "Ready", protected=ext.protected)
        if ext.run.end is None:
            # A handler that never finishes: ARM gives up at Azure's handler timeout (handlers.handler_timeout_s).
            ext.run.deadline = ctx.now + handlers.handler_timeout_s(ext.props)
        end, error = handlers.operation_end_and_error(ext.name, ext.props, ext.run, ctx.now)
    vm.busy_until = end
    return ctx.state.new_operation(vm.location, ctx.now, end, error)


def check_property_change(existing, props):
    """Publisher and type of an existing extension cannot change in place (delete it and create it again)."""
    for key in ("publisher", "type"):
        if key in props and props[key].lower() != existing.props.get(key, "").lower():
            raise ArmError(400, "PropertyChangeNotAllowed", f"Changing property '{key}' is not allowed.", target=key)


def check_one_per_handler(state, location, extensions, name, props, os_type):
    """One extension per handler (publisher.type) on a VM or in a scale-set model, as the real error says:
    "Multiple VMExtensions per handler not supported for OS type 'Linux'. VMExtension '...' with handler '...'
    already added or specified in input." Only handlers whose image says supportsMultipleExtensions are exempt."""
    ident = (props.get("publisher", "").lower(), props.get("type", "").lower())
    if handlers.supports_multiple_extensions(ident[1]):
        return
    for other in extensions.values():
        if other.name.lower() == name.lower() or other.deleting_until is not None:
            continue
        if (other.props.get("publisher", "").lower(), other.props.get("type", "").lower()) == ident:
            handler = f"{other.props.get('publisher')}.{other.props.get('type')}"
            raise ArmError(400, "BadRequest",
                           f"Multiple VMExtensions per handler not supported for OS type '{os_type}'. VMExtension "
                           f"'{other.name}' with handler '{handler}' already added or specified in input.")


def written_extension(ctx, existing, name, location, properties, patch, tags_missing):
    """The extension a PUT (patch=False) or PATCH leaves: a new Extension object (run not yet set). A PATCH keeps
    what it does not name; a PUT replaces the definition except settings and protectedSettings: omitted, they keep
    the stored value; given (also {}), they replace it.

    Source (tests/data/reference/issue-25.md): Azure/WALinuxAgent#3427, Microsoft's agent team, whose tests write
    CustomScript with begin_create_or_update (PUT): after a PUT with only protectedSettings, a PUT with only settings
    kept the old protectedSettings (and the other way round), so the handler saw commandToExecute in both; they now
    send the unused one as {} "to reset any pre-existing value in the VM model". The Azure CLI relies on it too:
    `az vm extension set --force-update` reruns with a PUT that carries no protectedSettings."""
    given = {k: v for k, v in properties.items() if v is not None}  # JSON null: not given
    stored = existing if existing is not None and existing.deleting_until is None else None
    if patch:
        merged = dict(existing.props, **{k: v for k, v in given.items() if k != "protectedSettings"})
    else:
        merged = dict(given)
        if stored is not None and "settings" not in given and "settings" in stored.props:
            merged["settings"] = stored.props["settings"]
    if "protectedSettings" in given:
        protected = ctx.state.protected_digest(given["protectedSettings"])
    else:
        protected = stored.protected if stored is not None else None
    ext = Extension(existing.name if existing else name, canonical_props(ctx.state, location, merged), None,
                    protected=protected)
    if patch and tags_missing:
        ext.tags = existing.tags  # a PATCH keeps what it does not name; a PUT replaces
    return ext


def unchanged(existing, ext):
    """Azure reruns a handler only for a changed definition (settings, protected settings, version, flags) or a
    new forceUpdateTag value (which is why forceUpdateTag exists); an identical write leaves the handler alone."""
    return existing is not None and existing.deleting_until is None and existing.definition() == ext.definition()


def _no_op_write(ctx, vm, existing, status):
    """An identical PUT/PATCH: 200 with provisioningState "Updating" and an operation that ends at once with the
    existing run's outcome; no handler runs, so no queued handler fault is consumed. The real recording
    (tests/data/recordings/azure-sdk-assets_...extensions-subset.json) shows exactly this: an unchanged PATCH
    answered "Updating" and its operation ended 0.23 s later, where the create had taken minutes."""
    end, error = handlers.operation_end_and_error(existing.name, existing.props, existing.run, ctx.now)
    op = ctx.state.new_operation(vm.location, ctx.now, end, error)
    return status, extension_body(ctx, vm, existing, "Updating"), ctx.async_headers(op)


def _write_extension(ctx, vm, name, model, patch):
    existing = vm.extensions.get(name.lower())
    if patch and existing is None:
        raise not_found(f"{VM_TYPE}/{vm.name}/extensions", name, vm.rg)
    properties = check_extension_body(ctx.body, model, new=existing is None)
    if existing is not None:
        check_property_change(existing, properties)
    ext = written_extension(ctx, existing, name, vm.location, properties, patch, "tags" not in ctx.body)
    check_one_per_handler(ctx.state, vm.location, vm.extensions, name, ext.props, vm.os_type)
    _writable(ctx, vm, "PutVMExtension" if existing is None else "UpdateVMExtension")
    ext.location = ctx.body.get("location") or (existing.location if existing else None) or vm.location
    if "tags" in ctx.body:
        ext.tags = ctx.body["tags"]
    if unchanged(existing, ext):
        existing.tags = ext.tags
        return _no_op_write(ctx, vm, existing, 200)
    kind = "Creating" if existing is None else "Updating"
    vm.extensions[name.lower()] = ext
    op = _run_handler(ctx, vm, ext, kind)
    return (201 if existing is None else 200), extension_body(ctx, vm, ext, kind), ctx.async_headers(op)


def put_extension(ctx, sub, rg, vm, name):
    return _write_extension(ctx, find_vm(ctx, rg, vm), name, compute_models.VirtualMachineExtension, patch=False)


def patch_extension(ctx, sub, rg, vm, name):
    return _write_extension(ctx, find_vm(ctx, rg, vm), name, compute_models.VirtualMachineExtensionUpdate, patch=True)


def get_extension(ctx, sub, rg, vm, name):
    vm = find_vm(ctx, rg, vm)
    return 200, extension_body(ctx, vm, find_extension(vm, name), instance_view=ctx.expand_instance_view())


def list_extensions(ctx, sub, rg, vm):
    vm = find_vm(ctx, rg, vm)
    expand = ctx.expand_instance_view()
    return 200, {"value": [extension_body(ctx, vm, ext, instance_view=expand) for ext in vm.extensions.values()]}


def delete_extension(ctx, sub, rg, vm, name):
    vm = find_vm(ctx, rg, vm)
    ext = vm.extensions.get(name.lower())
    if ext is None:
        return 204, None
    _writable(ctx, vm, "DeleteVMExtension")
    ext.deleting_until = ctx.now + ctx.state.settings["delete_duration_s"]
    vm.busy_until = ext.deleting_until
    op = ctx.state.new_operation(vm.location, ctx.now, ext.deleting_until)
    return 202, None, ctx.async_headers(op, with_location=True)


# --- operations -----------------------------------------------------------------------------------------------
def get_operation(ctx, sub, location, op_id):
    op = ctx.state.operations.get(op_id)
    if op is None or op.location.lower() != location.lower():
        raise ArmError(404, "NotFound", f"The operation '{op_id}' could not be found.")
    status = op.status(ctx.now)
    if ctx.query.get("monitor", "").lower() == "true":
        # The Location (monitor) URL: 202 while running, then 200 with no body (or the error).
        if status == "InProgress":
            return 202, None, {"Location": f"{ctx.base_url}{ctx.path}?" + "&".join(
                f"{k}={v}" for k, v in ctx.query.items())}
        if status == "Failed":
            raise ArmError(400, op.error["code"], op.error["message"])
        return 200, None
    body = {"startTime": handlers.iso(op.start)}
    if status != "InProgress":
        body["endTime"] = handlers.iso(op.end)
    body["status"] = status
    if status == "Failed":
        body["error"] = op.error
    body["name"] = op.id
    return 200, body


# --- extension images -----------------------------------------------------------------------------------------
IMAGE_NOT_FOUND = ArmError(404, "NotFound", "The entity was not found in this Azure location.")


def _publisher_types(ctx, location, publisher):
    types = ctx.state.images.get(location.lower(), {}).get(publisher.lower())
    if not types:
        raise IMAGE_NOT_FOUND
    return types


def _image_base(ctx, location, image):
    return (f"/Subscriptions/{ctx.sub.id}/Providers/Microsoft.Compute/Locations/{location}/Publishers/"
            f"{image['publisher']}/ArtifactTypes/VMExtension/Types/{image['type']}")


def list_publishers(ctx, sub, location):
    """VirtualMachineImages_ListPublishers, GET .../locations/{location}/publishers: a bare JSON array of
    {name, location, id} (tests/data/arm-examples/compute-2026-04-01/virtualMachineImageExamples/
    VirtualMachineImage_ListPublishers_MaximumSet_Gen.json). `az vm extension image list` and `az vm extension set`
    without --version start here. Only the catalogue's extension publishers are listed (see README: Azure lists
    every image publisher of the region)."""
    publishers = ctx.state.images.get(location.lower(), {})
    names = sorted({next(iter(types.values()))["publisher"] for types in publishers.values() if types}, key=str.lower)
    base = f"/Subscriptions/{ctx.sub.id}/Providers/Microsoft.Compute/Locations/{location}/Publishers"
    return 200, [{"name": name, "location": location, "id": f"{base}/{name}"} for name in names]


def list_image_types(ctx, sub, location, publisher):
    types = _publisher_types(ctx, location, publisher)
    return 200, [{"name": image["type"], "location": location, "id": _image_base(ctx, location, image)}
                 for image in types.values()]


def _image(ctx, location, publisher, type_name):
    image = _publisher_types(ctx, location, publisher).get(type_name.lower())
    if image is None:
        raise IMAGE_NOT_FOUND
    return image


def list_image_versions(ctx, sub, location, publisher, type_name):
    """Versions as ARM lists them: ordered as strings (so 2.1.10 sorts before 2.1.6), $filter/$orderby/$top."""
    image = _image(ctx, location, publisher, type_name)
    versions = sorted(image["versions"])
    flt = ctx.query.get("$filter")
    if flt:
        prefix = _startswith_prefix(flt)
        versions = [v for v in versions if v.lower().startswith(prefix.lower())]
    order = ctx.query.get("$orderby", "").strip().lower()
    if order:
        if order not in ("name", "name asc", "name desc"):
            raise ArmError(400, "InvalidParameter", f"The $orderby value '{ctx.query['$orderby']}' is not supported.")
        versions = sorted(versions, reverse=order.endswith("desc"))
    if "$top" in ctx.query:
        try:
            versions = versions[:int(ctx.query["$top"])]
        except ValueError:
            raise ArmError(400, "InvalidParameter", "The $top value must be an integer.") from None
    base = _image_base(ctx, location, image)
    return 200, [{"name": v, "location": location, "id": f"{base}/Versions/{v}"} for v in versions]


def _startswith_prefix(expression):
    match = re.fullmatch(r"\s*startswith\(\s*name\s*,\s*'([^']*)'\s*\)\s*", expression, re.IGNORECASE)
    if not match:
        raise ArmError(400, "InvalidParameter", f"The $filter value '{expression}' is not supported; "
                       "use startswith(name,'<prefix>').")
    return match.group(1)


def get_image_version(ctx, sub, location, publisher, type_name, version):
    image = _image(ctx, location, publisher, type_name)
    if version not in image["versions"]:
        raise IMAGE_NOT_FOUND
    os_name = image["os"] or "Linux"
    return 200, {
        "properties": {"operatingSystem": os_name, "computeRole": "IaaS", "handlerSchema": "",
                       "vmScaleSetEnabled": True,
                       "supportsMultipleExtensions": handlers.supports_multiple_extensions(image["type"])},
        "location": location, "name": version,
        "id": f"{_image_base(ctx, location, image)}/Versions/{version}",
    }


def register(router):
    vm = rf"{COMPUTE}/virtualMachines/(?P<vm>[^/]+)"
    router.add("GET", rf"{COMPUTE}/virtualMachines", list_vms, VM_TYPE)
    router.add("GET", rf"{SUB}/providers/Microsoft\.Compute/virtualMachines", list_all_vms, VM_TYPE)
    router.add("GET", rf"{SUB}/providers/Microsoft\.Compute/locations/(?P<location>[^/]+)/virtualMachines",
               list_vms_by_location, "Microsoft.Compute/locations/virtualMachines")
    router.add("GET", vm, get_vm, VM_TYPE)
    router.add("GET", rf"{vm}/instanceView", get_vm_instance_view, VM_TYPE)
    router.add("GET", rf"{vm}/extensions", list_extensions, EXT_TYPE)
    for method, func in (("PUT", put_extension), ("PATCH", patch_extension), ("GET", get_extension),
                         ("DELETE", delete_extension)):
        router.add(method, rf"{vm}/extensions/(?P<name>[^/]+)", func, EXT_TYPE)
    router.add("GET", rf"{SUB}/providers/Microsoft\.Compute/locations/(?P<location>[^/]+)/operations/(?P<op_id>[^/]+)",
               get_operation, "Microsoft.Compute/locations/operations")
    router.add("GET", rf"{SUB}/providers/Microsoft\.Compute/locations/(?P<location>[^/]+)/publishers", list_publishers,
               IMAGE_TYPE)
    images = rf"{SUB}/providers/Microsoft\.Compute/locations/(?P<location>[^/]+)/publishers/(?P<publisher>[^/]+)" \
             r"/artifacttypes/vmextension/types"
    router.add("GET", images, list_image_types, IMAGE_TYPE)
    router.add("GET", rf"{images}/(?P<type_name>[^/]+)/versions", list_image_versions, IMAGE_TYPE)
    router.add("GET", rf"{images}/(?P<type_name>[^/]+)/versions/(?P<version>[^/]+)", get_image_version,
               IMAGE_TYPE)
