"""Microsoft.Compute scale sets: the extension model, per-instance copies and the three upgrade policies.

Writes change only the model (bumping its version). Instances keep the model version they run until they are
upgraded: by POST manualupgrade (Manual), right away (Automatic), or batch after batch of
maxBatchInstancePercent (Rolling, also via POST extensionRollingUpgrade). Upgrades are scheduled as pending
entries with a start time and applied lazily when the clock reaches them.
"""
import copy
import math

import azure.mgmt.compute.models as compute_models

from . import handlers
from .arm import COMPUTE, SUB, busy, conflict, lookup
from .compute import (check_extension_body, check_one_per_handler, check_property_change,
                      check_type_handler_version, unchanged, written_extension)
from .compute import settle as settle_vm
from .errors import ArmError, not_found
from .state import FLEXIBLE, HandlerRun, Instance, ScaleSet
from .validation import required_missing, validate_model

VMSS_TYPE = "Microsoft.Compute/virtualMachineScaleSets"


def vmss_id(ss):
    return f"/subscriptions/{ss.sub}/resourceGroups/{ss.rg}/providers/{VMSS_TYPE}/{ss.name}"


def settle(ss, now):
    """Apply upgrades whose start time has come and drop model extensions whose delete finished."""
    for key in [k for k, e in ss.extensions.items() if e.deleting_until is not None and now >= e.deleting_until]:
        del ss.extensions[key]
    if ss.orchestration_mode == FLEXIBLE:  # the instances are VMs: settled as VMs (compute.settle)
        for vm in ss.instances:
            settle_vm(vm, now)
        return
    for instance in ss.instances:
        while instance.pending and instance.pending[0][0] <= now:
            dummy, version, extensions = instance.pending.pop(0)
            instance.model_version, instance.extensions = version, extensions


def find_scale_set(ctx, rg, name):
    ss = lookup(ctx.sub.scale_sets, ctx, rg, name, VMSS_TYPE)
    settle(ss, ctx.now)
    return ss


def _live_model(ss):
    return {k: e for k, e in ss.extensions.items() if e.deleting_until is None}


def model_extension_body(ctx, ss, ext, provisioning_state=None):
    if provisioning_state is None:
        provisioning_state = "Deleting" if ext.deleting_until is not None else ext.run.provisioning_state(ctx.now)
    return {"name": ext.name, "id": f"{vmss_id(ss)}/extensions/{ext.name}",
            "type": f"{VMSS_TYPE}/extensions", "properties": dict(ext.props, provisioningState=provisioning_state)}


def scale_set_body(ctx, ss):
    body = {
        "name": ss.name, "id": vmss_id(ss), "type": VMSS_TYPE, "location": ss.location, "tags": dict(ss.tags),
        "sku": {"name": "Standard_B2s", "tier": "Standard", "capacity": len(ss.instances)},
        "properties": {
            "uniqueId": ss.unique_id,
            "orchestrationMode": ss.orchestration_mode,
            "upgradePolicy": _upgrade_policy(ss),
            "provisioningState": "Updating" if busy(ss.busy_until, ctx.now) else "Succeeded",
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": ss.name[:9], "adminUsername": "azureuser"},
                "storageProfile": {"osDisk": {"osType": ss.os_type, "createOption": "FromImage"}},
                "extensionProfile": {"extensions": [model_extension_body(ctx, ss, e)
                                                    for e in _live_model(ss).values()]},
            },
        },
    }
    if ss.orchestration_mode == FLEXIBLE:
        # As the Flexible create example answers (tests/data/arm-examples/compute-2026-04-01/
        # virtualMachineScaleSetExamples/VirtualMachineScaleSet_Create_WithPriorityMixPolicy.json).
        body["properties"].update(platformFaultDomainCount=ss.platform_fault_domain_count, singlePlacementGroup=False)
    return body


def _upgrade_policy(ss):
    policy = {"mode": ss.upgrade_mode}
    if ss.upgrade_mode == "Rolling":
        policy["rollingUpgradePolicy"] = {"maxBatchInstancePercent": ss.max_batch_pct,
                                          "maxUnhealthyInstancePercent": 20,
                                          "maxUnhealthyUpgradedInstancePercent": 20,
                                          "pauseTimeBetweenBatches": "PT0S"}
    return policy


# --- upgrades -------------------------------------------------------------------------------------------------
def _upgraded_extensions(ctx, ss, instance, at):
    """The instance's extensions after applying the current model at time `at`; handlers run for changes."""
    if ss.orchestration_mode == FLEXIBLE:  # the instance is a VM: flexible.py applies the model to it
        from . import flexible
        return flexible.upgraded_vm_extensions(ctx, ss, instance, at, _live_model(ss))
    result, failures = {}, []
    for key, model_ext in _live_model(ss).items():
        current = instance.extensions.get(key)
        if current is not None and current.version == model_ext.version:
            result[key] = current
            continue
        run = handlers.start_run(ctx.state, f"{ss.name}/{instance.instance_id}", model_ext.name, model_ext.props,
                                 ss.os_type, "Creating" if current is None else "Updating", at,
                                 agent_ready=ss.agent_status == "Ready", protected=model_ext.protected)
        run.version = handlers.handler_version(ctx.state, ss.location, model_ext.props)
        ext = copy.copy(model_ext)
        ext.run, ext.deleting_until = run, None
        result[key] = ext
        if run.outcome == "failed":
            failures.append((model_ext, run))
    ends = [e.run.end for e in result.values() if e.run.start == at]
    end = None if None in ends else max(ends, default=at)
    return result, failures, end, ss.model_version


def _latest_extension_versions(ctx, ss, instance, at):
    """extensionRollingUpgrade: the instance's own extensions that opted into automatic upgrade move to the newest
    version the catalogue has for them; the model is NOT applied (the instance keeps its model version)."""
    result, failures = dict(instance.extensions), []
    for key, ext in instance.extensions.items():
        latest = handlers.handler_version(ctx.state, ss.location, ext.props)
        if not ext.props.get("enableAutomaticUpgrade") or (ext.run.version or latest) == latest:
            continue
        # A Flexible instance is a VM: its handler runs (and its `extension` faults match) under the VM's name, with
        # the VM's own agent.
        flexible = ss.orchestration_mode == FLEXIBLE
        target = instance.name if flexible else f"{ss.name}/{instance.instance_id}"
        agent = instance.agent_status if flexible else ss.agent_status
        run = handlers.start_run(ctx.state, target, ext.name, ext.props, ss.os_type,
                                 "Updating", at, agent_ready=agent == "Ready", protected=ext.protected)
        run.version = latest
        upgraded = copy.copy(ext)
        upgraded.run = run
        result[key] = upgraded
        if run.outcome == "failed":
            failures.append((ext, run))
    ends = [e.run.end for e in result.values() if e.run.start == at]
    end = None if None in ends else max(ends, default=at)
    return result, failures, end, instance.model_version


def _schedule(ctx, ss, instances, batch_size=None, upgrade=_upgraded_extensions):
    """Upgrade `instances` (to the current model, or as `upgrade` says) in batches when batch_size is set;
    return the operation."""
    batch_size = batch_size or len(instances) or 1
    start, end, error = ctx.now, ctx.now, None
    for index in range(0, len(instances), batch_size):
        batch_end = start
        for instance in instances[index:index + batch_size]:
            extensions, failures, finish, version = upgrade(ctx, ss, instance, start)
            instance.pending = [p for p in instance.pending if p[0] < start] + [(start, version, extensions)]
            if failures and error is None:
                model_ext, run = failures[0]
                error = handlers.provisioning_error(model_ext.name, model_ext.props, run)
            batch_end = None if finish is None or batch_end is None else max(batch_end, finish)
        end = batch_end
        if end is None or error is not None:
            break  # a rolling upgrade stops at the first failed (or never-ending) batch
        start = end
    ss.busy_until = end
    settle(ss, ctx.now)
    op = ctx.state.new_operation(ss.location, ctx.now, end, error)
    if batch_size < len(instances) or ss.upgrade_mode == "Rolling":
        ss.last_rolling = {"op": op, "instances": [i.instance_id for i in instances]}
    return op


def _batch_size(ss):
    return max(1, math.ceil(len(ss.instances) * ss.max_batch_pct / 100))


def _after_model_change(ctx, ss):
    """Automatic and Rolling scale sets roll the new model out at once; Manual ones wait for manualupgrade."""
    if ss.upgrade_mode == "Automatic":
        return _schedule(ctx, ss, ss.instances)
    if ss.upgrade_mode == "Rolling":
        return _schedule(ctx, ss, ss.instances, _batch_size(ss))
    return ctx.state.new_operation(ss.location, ctx.now, ctx.now)


def _writable(ctx, ss, operation):
    if busy(ss.busy_until, ctx.now):
        raise conflict("VM scale set", ss.name, operation)


def _finish_model_ext(ext, op):
    """The model extension's provisioningState follows the operation that rolled it out."""
    outcome = "failed" if op.error else "succeeded"
    ext.run = HandlerRun(op.start, op.end, outcome, (op.error or {}).get("message", ""), ext.run.kind)


# --- extensions -----------------------------------------------------------------------------------------------
def _write_extension(ctx, ss, name, model, patch):
    """PUT/PATCH of a model extension: the same rules as on a VM (compute.py). An identical definition changes
    nothing (no new model version, nothing rolled out); a changed one bumps the model and rolls it out by policy."""
    existing = ss.extensions.get(name.lower())
    if existing is not None and existing.deleting_until is not None:
        existing = None
    if patch and existing is None:
        raise not_found(f"{VMSS_TYPE}/{ss.name}/extensions", name, ss.rg)
    properties = check_extension_body(ctx.body, model, new=existing is None)
    if existing is not None:
        check_property_change(existing, properties)
    ext = written_extension(ctx, existing, name, ss.location, properties, patch, True)
    check_one_per_handler(ctx.state, ss.location, ss.extensions, name, ext.props, ss.os_type)
    _writable(ctx, ss, "PutVMScaleSetExtension" if not patch else "PatchVMScaleSetExtension")
    if unchanged(existing, ext):
        op = ctx.state.new_operation(ss.location, ctx.now, ctx.now)
        return 200, model_extension_body(ctx, ss, existing, "Updating"), ctx.async_headers(op)
    kind = "Creating" if existing is None else "Updating"
    ss.model_version += 1
    ext.run = HandlerRun(ctx.now, ctx.now, "succeeded", "", kind)
    ext.version = ss.model_version
    ss.extensions[name.lower()] = ext
    op = _after_model_change(ctx, ss)
    _finish_model_ext(ext, op)
    return (201 if existing is None else 200), model_extension_body(ctx, ss, ext, kind), ctx.async_headers(op)


def put_extension(ctx, sub, rg, vmss, name):
    return _write_extension(ctx, find_scale_set(ctx, rg, vmss), name,
                            compute_models.VirtualMachineScaleSetExtension, patch=False)


def patch_extension(ctx, sub, rg, vmss, name):
    return _write_extension(ctx, find_scale_set(ctx, rg, vmss), name,
                            compute_models.VirtualMachineScaleSetExtensionUpdate, patch=True)


def get_extension(ctx, sub, rg, vmss, name):
    ss = find_scale_set(ctx, rg, vmss)
    ext = ss.extensions.get(name.lower())
    if ext is None:
        raise not_found(f"{VMSS_TYPE}/{ss.name}/extensions", name, ss.rg)
    return 200, model_extension_body(ctx, ss, ext)


def list_extensions(ctx, sub, rg, vmss):
    ss = find_scale_set(ctx, rg, vmss)
    return 200, ctx.page([model_extension_body(ctx, ss, e) for e in ss.extensions.values()])


def delete_extension(ctx, sub, rg, vmss, name):
    ss = find_scale_set(ctx, rg, vmss)
    ext = ss.extensions.get(name.lower())
    if ext is None:
        return 204, None
    _writable(ctx, ss, "DeleteVMScaleSetExtension")
    ext.deleting_until = ctx.now + ctx.state.settings["delete_duration_s"]
    ss.model_version += 1
    op = _after_model_change(ctx, ss)
    end = ext.deleting_until if op.end is None else max(op.end, ext.deleting_until)
    op.end = None if op.end is None else end
    ss.busy_until = op.end
    return 202, None, ctx.async_headers(op, with_location=True)


def manual_upgrade(ctx, sub, rg, vmss):
    ss = find_scale_set(ctx, rg, vmss)
    validate_model(ctx.body, compute_models.VirtualMachineScaleSetVMInstanceRequiredIDs)
    by_id = {i.instance_id: i for i in ss.instances}
    wanted = [str(i) for i in ctx.body["instanceIds"]]
    if "*" in wanted:  # "* for all instances" (the Azure CLI's help; it sends ["*"]): tests/data/reference/issue-25.md
        wanted = list(by_id)
    unknown = [i for i in wanted if i not in by_id]
    if unknown:
        raise ArmError(400, "InvalidParameter",
                       f"The provided instanceId {unknown[0]} is not an active Virtual Machine Scale Set VM instanceId.",
                       target="instanceIds")
    _writable(ctx, ss, "ManualUpgradeVMScaleSet")
    op = _schedule(ctx, ss, [by_id[i] for i in wanted])
    return 202, None, ctx.async_headers(op, with_location=True)


def extension_rolling_upgrade(ctx, sub, rg, vmss):
    """POST extensionRollingUpgrade (VirtualMachineScaleSetRollingUpgrades_StartExtensionUpgrade): "move all
    extensions for all virtual machine scale set instances to the latest available extension version"; instances
    already running the latest versions are not affected, and the model is not applied. A Manual scale set has
    no rolling upgrades: refused with 409 OperationNotAllowed (the message text is the emulator's own)."""
    ss = find_scale_set(ctx, rg, vmss)
    if ss.upgrade_mode == "Manual":
        raise ArmError(409, "OperationNotAllowed",
                       f"Rolling upgrade of extensions is not allowed on VM scale set '{ss.name}' because its upgrade "
                       "policy mode is 'Manual'. Use 'Automatic' or 'Rolling', or upgrade the instances manually.")
    _writable(ctx, ss, "ExtensionRollingUpgrade")
    op = _schedule(ctx, ss, ss.instances, _batch_size(ss), upgrade=_latest_extension_versions)
    ss.last_rolling = {"op": op, "instances": [i.instance_id for i in ss.instances]}
    return 202, None, ctx.async_headers(op, with_location=True)


def rolling_upgrade_latest(ctx, sub, rg, vmss):
    """GET rollingUpgrades/latest: the status of the latest rolling upgrade (RollingUpgradeStatusInfo)."""
    ss = find_scale_set(ctx, rg, vmss)
    latest = ss.last_rolling
    if latest is None:
        raise ArmError(404, "NotFound", f"No rolling upgrade has been run on VM scale set '{ss.name}'.")
    op = latest["op"]
    status = op.status(ctx.now)
    counts = {"successfulInstanceCount": 0, "failedInstanceCount": 0, "inProgressInstanceCount": 0,
              "pendingInstanceCount": 0}
    by_id = {i.instance_id: i for i in ss.instances}
    for instance_id in latest["instances"]:
        instance = by_id.get(instance_id)
        if instance is None:
            continue
        runs = [e.run for e in instance.extensions.values() if e.run.start >= op.start]
        if instance.pending:
            counts["pendingInstanceCount"] += 1
        elif any(not r.finished(ctx.now) for r in runs):
            counts["inProgressInstanceCount"] += 1
        elif any(r.outcome == "failed" for r in runs):
            counts["failedInstanceCount"] += 1
        else:
            counts["successfulInstanceCount"] += 1
    running = {"code": {"InProgress": "RollingForward", "Succeeded": "Completed", "Failed": "Faulted"}[status],
               "startTime": handlers.iso(op.start), "lastAction": "Start", "lastActionTime": handlers.iso(op.start)}
    body = {"location": ss.location, "properties": {
        "policy": _upgrade_policy(ss).get("rollingUpgradePolicy", {}), "runningStatus": running, "progress": counts}}
    if status == "Failed":
        body["properties"]["error"] = op.error
    return 200, body


def scale_set_instance_view(ctx, sub, rg, vmss):
    """GET {scale set}/instanceView: status counts of the instances and of each extension."""
    ss = find_scale_set(ctx, rg, vmss)
    vm_codes, ext_codes = {}, {}
    for instance in ss.instances:
        vm_code = "ProvisioningState/updating" if instance.pending else "ProvisioningState/succeeded"
        vm_codes[vm_code] = vm_codes.get(vm_code, 0) + 1
        for ext in instance.extensions.values():
            statuses, dummy = handlers.extension_statuses(ext, ss.os_type, ctx.now)
            per_ext = ext_codes.setdefault(ext.name, {})
            per_ext[statuses[0]["code"]] = per_ext.get(statuses[0]["code"], 0) + 1
    state = "Updating" if busy(ss.busy_until, ctx.now) else "Succeeded"
    return 200, {
        "virtualMachine": {"statusesSummary": [{"code": c, "count": n} for c, n in vm_codes.items()]},
        "extensions": [{"name": name, "statusesSummary": [{"code": c, "count": n} for c, n in codes.items()]}
                       for name, codes in ext_codes.items()],
        "statuses": [{"code": f"ProvisioningState/{state.lower()}", "level": "Info",
                      "displayStatus": f"Provisioning {state.lower()}", "time": handlers.iso(ctx.now)}],
    }


# --- scale set and instances ----------------------------------------------------------------------------------
UPGRADE_MODES = ("Manual", "Automatic", "Rolling")


def _model_from_profile(ctx, ss, entries, base):
    """The extension model a scale-set PUT/PATCH asks for (extensionProfile.extensions), checked by the same rules
    as the extension child resource. An extension given without protectedSettings keeps its protected settings
    (a GET body never holds them, so a read-modify-write must not wipe them)."""
    model = {}
    for index, entry in enumerate(entries):
        where = f"properties.virtualMachineProfile.extensionProfile.extensions[{index}]"
        name = entry.get("name")
        if not name:
            raise required_missing(f"{where}.name")
        props = entry.get("properties") or {}
        existing = ss.extensions.get(name.lower()) if ss is not None else None
        if existing is not None and existing.deleting_until is not None:
            existing = None
        if existing is None:
            for key in ("publisher", "type", "typeHandlerVersion"):
                if props.get(key) in (None, ""):
                    raise required_missing(f"{where}.properties.{key}")
        else:
            check_property_change(existing, props)
        check_type_handler_version(props.get("typeHandlerVersion"))
        ext = written_extension(ctx, existing, name, base["location"], props, False, True)
        if existing is not None and "protectedSettings" not in props:
            ext.protected = existing.protected
        check_one_per_handler(ctx.state, base["location"], {k: e for k, (dummy, e) in model.items()}, name,
                              ext.props, base["os_type"])
        model[name.lower()] = (existing, ext)
    return model


def _write_scale_set(ctx, rg, name, patch):
    """PUT (create or replace) and PATCH of the scale set itself, so that another team's change to it (capacity,
    upgrade policy, tags, the extension profile) can be emulated. Only the parts the emulator models are kept;
    the body is validated against the SDK's VirtualMachineScaleSet / VirtualMachineScaleSetUpdate model."""
    validate_model(ctx.body, compute_models.VirtualMachineScaleSetUpdate if patch
                   else compute_models.VirtualMachineScaleSet)
    group = ctx.resource_group(rg)
    ss = ctx.sub.scale_sets.get((rg.lower(), name.lower()))
    if ss is None and patch:
        raise not_found(VMSS_TYPE, name, rg)
    body = ctx.body
    props = body.get("properties") or {}
    profile = props.get("virtualMachineProfile") or {}
    policy = props.get("upgradePolicy") or {}
    mode = policy.get("mode", ss.upgrade_mode if ss else "Manual")
    if mode not in UPGRADE_MODES:
        raise ArmError(400, "InvalidParameter", f"The value '{mode}' of upgradePolicy.mode is not valid; it must be "
                       f"one of {', '.join(UPGRADE_MODES)}.", target="upgradePolicy.mode")
    os_type = ((profile.get("storageProfile") or {}).get("osDisk") or {}).get("osType") or (
        ss.os_type if ss else "Linux")
    base = {"location": ss.location if ss else body.get("location", group["location"]), "os_type": os_type}
    entries = (profile.get("extensionProfile") or {}).get("extensions")
    model = _model_from_profile(ctx, ss, entries, base) if entries is not None else None
    from . import flexible
    orchestration = flexible.check_scale_set_write(ctx, ss, props, mode, model)
    created = ss is None
    if created:
        ss = ScaleSet(ctx.sub.id, group["name"], name, base["location"], os_type, mode, 20, "Ready",
                      "2.7.41491.1102" if os_type == "Windows" else "2.9.1.1")
        flexible.set_orchestration(ss, orchestration, props)
        ctx.sub.scale_sets[(rg.lower(), name.lower())] = ss
    else:
        _writable(ctx, ss, "UpdateVMScaleSet")
    rolling = policy.get("rollingUpgradePolicy") or {}
    ss.upgrade_mode = mode
    if "maxBatchInstancePercent" in rolling:
        ss.max_batch_pct = int(rolling["maxBatchInstancePercent"])
    if "tags" in body or not patch:
        ss.tags = dict(body.get("tags") or {})
    changed, removed = [], []
    if model is not None:
        new_model = {}
        for key, (existing, ext) in model.items():
            if unchanged(existing, ext):
                new_model[key] = existing
            else:
                new_model[key] = ext
                changed.append(ext)
        removed = [k for k, e in ss.extensions.items() if k not in new_model and e.deleting_until is None]
        if changed or removed:
            ss.model_version += 1
            for ext in changed:
                ext.version = ss.model_version
                ext.run = HandlerRun(ctx.now, ctx.now, "succeeded", "", "Updating")
        ss.extensions = new_model
    added = []
    capacity = (body.get("sku") or {}).get("capacity")
    if capacity is not None and ss.orchestration_mode == FLEXIBLE:
        added = flexible.set_capacity(ctx, ss, int(capacity))
    elif capacity is not None:
        capacity = int(capacity)
        if capacity < len(ss.instances):
            ss.instances = ss.instances[:capacity]  # scale in: the newest instances go first
        next_id = max((int(i.instance_id) for i in ss.instances if i.instance_id.isdigit()), default=-1) + 1
        while len(ss.instances) < capacity:
            instance = Instance(next_id, 0)
            ss.instances.append(instance)
            added.append(instance)
            next_id += 1
    model_changed = bool(changed or removed)
    targets = [i for i in ss.instances if i in added or (model_changed and ss.upgrade_mode != "Manual")]
    if targets:
        op = _schedule(ctx, ss, targets, _batch_size(ss) if ss.upgrade_mode == "Rolling" else None)
    else:
        op = ctx.state.new_operation(ss.location, ctx.now, ctx.now)
    for ext in changed:
        _finish_model_ext(ext, op)
    return (201 if created else 200), scale_set_body(ctx, ss), ctx.async_headers(op)


def put_scale_set(ctx, sub, rg, vmss):
    return _write_scale_set(ctx, rg, vmss, patch=False)


def patch_scale_set(ctx, sub, rg, vmss):
    return _write_scale_set(ctx, rg, vmss, patch=True)


def get_scale_set(ctx, sub, rg, vmss):
    return 200, scale_set_body(ctx, find_scale_set(ctx, rg, vmss))


def _scale_set_page(ctx, sets):
    for ss in sets:
        settle(ss, ctx.now)
    return 200, ctx.page([scale_set_body(ctx, ss) for ss in sets])


def list_scale_sets(ctx, sub, rg):
    ctx.resource_group(rg)
    return _scale_set_page(ctx, [ss for (ss_rg, dummy), ss in ctx.sub.scale_sets.items() if ss_rg == rg.lower()])


def list_all_scale_sets(ctx, sub):
    """GET /subscriptions/{s}/providers/Microsoft.Compute/virtualMachineScaleSets (List All), paged."""
    return _scale_set_page(ctx, list(ctx.sub.scale_sets.values()))


def instance_view(ctx, ss, instance):
    exts = list(instance.extensions.values())
    view = {
        "platformUpdateDomain": 0, "platformFaultDomain": 0, "computerName": f"{ss.name[:9]}{int(instance.instance_id):06X}"
        if instance.instance_id.isdigit() else instance.instance_id,
        "vmAgent": handlers.vm_agent_view(ctx.state, ss.agent_status, ss.agent_version, exts, ss.location, ctx.now),
        "extensions": [handlers.extension_instance_view(ctx.state, e, ss.os_type, ss.location, ctx.now) for e in exts],
        "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded"},
                     {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}],
    }
    return view


def instance_body(ctx, ss, instance, with_view):
    properties = {
        "latestModelApplied": instance.model_version == ss.model_version,
        "provisioningState": "Updating" if instance.pending else "Succeeded",
        "vmId": f"{ss.unique_id[:-4]}{int(instance.instance_id) % 10000:04d}" if instance.instance_id.isdigit()
        else ss.unique_id,
    }
    if with_view:
        properties["instanceView"] = instance_view(ctx, ss, instance)
    return {
        "name": f"{ss.name}_{instance.instance_id}", "instanceId": instance.instance_id,
        "id": f"{vmss_id(ss)}/virtualMachines/{instance.instance_id}",
        "type": f"{VMSS_TYPE}/virtualMachines", "location": ss.location,
        "sku": {"name": "Standard_B2s", "tier": "Standard"}, "properties": properties,
        # As ARM does (VirtualMachineScaleSetVM_List_MaximumSet_Gen.json in tests/data/arm-examples):
        # the instance's extension child resources in full, never their protected settings.
        "resources": [instance_extension_body(ctx, ss, instance, e) for e in instance.extensions.values()],
    }


def instance_extension_body(ctx, ss, instance, ext, with_view=False):
    """One extension as a scale-set instance runs it (VirtualMachineScaleSetVMExtensions Get/List)."""
    props = dict(ext.props, provisioningState=ext.run.provisioning_state(ctx.now))
    if with_view:
        props["instanceView"] = handlers.extension_instance_view(ctx.state, ext, ss.os_type, ss.location, ctx.now)
    return {"name": ext.name, "id": f"{vmss_id(ss)}/virtualMachines/{instance.instance_id}/extensions/{ext.name}",
            "type": f"{VMSS_TYPE}/virtualMachines/extensions", "location": ss.location, "properties": props}


def _instance(ss, instance_id):
    for instance in ss.instances:
        if instance.instance_id == instance_id:
            return instance
    raise not_found(f"{VMSS_TYPE}/{ss.name}/virtualMachines", instance_id, ss.rg)


SELECT_VALUES = ("instanceView", "instanceView/statuses")


def list_instances(ctx, sub, rg, vmss):
    ss = find_scale_set(ctx, rg, vmss)
    select = ctx.query.get("$select")
    if select is not None:
        return 200, ctx.page([_selected_instance_view(ctx, ss, i, select) for i in ss.instances])
    expand = ctx.expand_instance_view()
    return 200, ctx.page([instance_body(ctx, ss, i, expand) for i in ss.instances])


def _selected_instance_view(ctx, ss, instance, select):
    """$select=instanceView: each instance is its instance view alone, without the model view (no name, location,
    resources[]...); instanceView/statuses keeps only the statuses. The REST reference allows only these two values.
    Sources (tests/data/reference/issue-25.md): Azure/azure-cli#2459 (Microsoft's VMSS PM: this query returns the
    instance view for all VMs, not the model view) and #4296 (with it, the non-instance-view properties are null)."""
    wanted = next((v for v in SELECT_VALUES if v.lower() == select.strip().lower()), None)
    if wanted is None:
        raise ArmError(400, "InvalidParameter", f"The value '{select}' of parameter '$select' is not valid; allowed "
                       f"values are {', '.join(repr(v) for v in SELECT_VALUES)}.", target="$select")
    view = instance_view(ctx, ss, instance)
    if wanted == "instanceView/statuses":
        view = {"statuses": view["statuses"]}
    return {"properties": {"instanceView": view}}


def get_instance(ctx, sub, rg, vmss, instance_id):
    ss = find_scale_set(ctx, rg, vmss)
    return 200, instance_body(ctx, ss, _instance(ss, instance_id), ctx.expand_instance_view())


def list_instance_extensions(ctx, sub, rg, vmss, instance_id):
    """VirtualMachineScaleSetVMExtensions List: not paged ({"value": [...]}), like the VM extension list."""
    ss = find_scale_set(ctx, rg, vmss)
    instance = _instance(ss, instance_id)
    expand = ctx.expand_instance_view()
    return 200, {"value": [instance_extension_body(ctx, ss, instance, e, expand) for e in instance.extensions.values()]}


def get_instance_extension(ctx, sub, rg, vmss, instance_id, name):
    ss = find_scale_set(ctx, rg, vmss)
    instance = _instance(ss, instance_id)
    ext = instance.extensions.get(name.lower())
    if ext is None:
        raise not_found(f"{VMSS_TYPE}/{ss.name}/virtualMachines/{instance_id}/extensions", name, ss.rg)
    return 200, instance_extension_body(ctx, ss, instance, ext, ctx.expand_instance_view())


def get_instance_view(ctx, sub, rg, vmss, instance_id):
    ss = find_scale_set(ctx, rg, vmss)
    return 200, instance_view(ctx, ss, _instance(ss, instance_id))


TAG_OPERATIONS = ("Merge", "Replace", "Delete")


def _tags_body(ss):
    return {"id": f"{vmss_id(ss)}/providers/Microsoft.Resources/tags/default", "name": "default",
            "type": "Microsoft.Resources/tags", "properties": {"tags": dict(ss.tags)}}


def get_tags(ctx, sub, rg, vmss):
    return 200, _tags_body(find_scale_set(ctx, rg, vmss))


def patch_tags(ctx, sub, rg, vmss):
    """Tags - Update At Scope: Merge adds or replaces the given tags and leaves the others, as ARM does, so a
    client can change its own tag without overwriting a concurrent change to another."""
    ss = find_scale_set(ctx, rg, vmss)
    body = ctx.body if isinstance(ctx.body, dict) else {}
    operation = body.get("operation")
    tags = (body.get("properties") or {}).get("tags")
    if operation not in TAG_OPERATIONS or not isinstance(tags, dict):
        raise ArmError(400, "InvalidRequestContent",
                       "The request must have 'operation' (one of Merge, Replace, Delete) and 'properties.tags'.")
    if operation == "Merge":
        ss.tags.update(tags)
    elif operation == "Replace":
        ss.tags = dict(tags)
    else:
        for key, value in tags.items():
            if ss.tags.get(key) == value or value in ("", None):
                ss.tags.pop(key, None)
    return 200, _tags_body(ss)


def register(router):
    from . import flexible
    flexible.register(router)  # first: its routes answer for Flexible scale sets and hand Uniform ones back here
    ss = rf"{COMPUTE}/virtualMachineScaleSets/(?P<vmss>[^/]+)"
    router.add("GET", rf"{ss}/providers/Microsoft\.Resources/tags/default", get_tags, "Microsoft.Resources/tags")
    router.add("PATCH", rf"{ss}/providers/Microsoft\.Resources/tags/default", patch_tags, "Microsoft.Resources/tags")
    router.add("GET", rf"{COMPUTE}/virtualMachineScaleSets", list_scale_sets, VMSS_TYPE)
    router.add("GET", ss, get_scale_set, VMSS_TYPE)
    router.add("PUT", ss, put_scale_set, VMSS_TYPE)
    router.add("PATCH", ss, patch_scale_set, VMSS_TYPE)
    router.add("GET", rf"{ss}/instanceView", scale_set_instance_view, VMSS_TYPE)
    router.add("GET", rf"{ss}/rollingUpgrades/latest", rolling_upgrade_latest, VMSS_TYPE)
    router.add("GET", rf"{ss}/extensions", list_extensions, f"{VMSS_TYPE}/extensions")
    for method, func in (("PUT", put_extension), ("PATCH", patch_extension), ("GET", get_extension),
                         ("DELETE", delete_extension)):
        router.add(method, rf"{ss}/extensions/(?P<name>[^/]+)", func, f"{VMSS_TYPE}/extensions")
    router.add("POST", rf"{ss}/manualupgrade", manual_upgrade, VMSS_TYPE)
    router.add("POST", rf"{ss}/extensionRollingUpgrade", extension_rolling_upgrade, VMSS_TYPE)
    router.add("GET", rf"{ss}/virtualMachines", list_instances, f"{VMSS_TYPE}/virtualMachines")
    instance = rf"{ss}/virtualMachines/(?P<instance_id>[^/]+)"
    router.add("GET", instance, get_instance, f"{VMSS_TYPE}/virtualMachines")
    router.add("GET", rf"{instance}/instanceView", get_instance_view, f"{VMSS_TYPE}/virtualMachines")
    router.add("GET", rf"{instance}/extensions", list_instance_extensions, f"{VMSS_TYPE}/virtualMachines/extensions")
    router.add("GET", rf"{instance}/extensions/(?P<name>[^/]+)", get_instance_extension,
               f"{VMSS_TYPE}/virtualMachines/extensions")
    router.add("GET", rf"{SUB}/providers/Microsoft\.Compute/virtualMachineScaleSets", list_all_scale_sets, VMSS_TYPE)
