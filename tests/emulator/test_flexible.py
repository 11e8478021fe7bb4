"""Flexible orchestration scale sets in the emulator, with the real compute client (issue 26).

The facts and their sources are in tests/data/flexible-scale-sets.md; the world is tests/emulator/flexible-seed.yml
(rg-flex: vmss-flex Manual x3 with a model extension, vmss-flex-auto Automatic x2, vmss-flex-rolling Rolling x3 with
the health extension, vmss-uniform, and the standalone vm-solo).
"""
import copy
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from emulator_clients import compute, raw
from emulator_control import Emulator

SEED = Path(__file__).resolve().parent / "flexible-seed.yml"
RG = "rg-flex"
VM_TYPE = "Microsoft.Compute/virtualMachines"
CS = {"properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
                     "settings": {"commandToExecute": "echo flex"}, "protectedSettings": {"k": "flex-s3cret-value"}}}
VM_CS = dict(CS, location="westeurope")  # a VM extension names its location; a scale-set one does not
HEALTH = {"name": "health", "properties": {"publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux",
                                           "typeHandlerVersion": "2.0", "settings": {"port": 80}}}


@pytest.fixture(scope="module")
def flex_process(tmp_path_factory):
    emu = Emulator.start(str(tmp_path_factory.mktemp("flex-emulator")), seed=str(SEED))
    yield emu
    emu.stop()


@pytest.fixture
def flex(flex_process):
    flex_process.reset()
    flex_process.settings(handler_duration_s=0.2)
    return flex_process


def scale_set_id(emu, name):
    return (f"/subscriptions/{emu.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{RG}/providers/"
            f"Microsoft.Compute/virtualMachineScaleSets/{name}")


def in_scale_set(emu, name):
    return f"'virtualMachineScaleSet/id' eq '{scale_set_id(emu, name)}'"


def instances(client, emu, name):
    """The scale set's VMs with their instance views, by the VM list's scale-set filter: {vm name: VM}."""
    return {vm.name: vm for vm in client.virtual_machines.list(RG, filter=in_scale_set(emu, name),
                                                               expand="instanceView")}


def ext_codes(vm):
    return {e.name: e.statuses[0].code for e in vm.instance_view.extensions or []}


def vm_extensions(client, vm_name):
    return {e.name: e for e in client.virtual_machine_extensions.list(RG, vm_name, expand="instanceView").value}


def test_scale_set_reports_its_orchestration_mode(flex):
    client = compute(flex)
    flexible = client.virtual_machine_scale_sets.get(RG, "vmss-flex")
    assert (flexible.orchestration_mode, flexible.platform_fault_domain_count) == ("Flexible", 1)
    assert flexible.upgrade_policy.mode == "Manual" and flexible.sku.capacity == 3
    assert flexible.single_placement_group is False
    assert [e.name for e in flexible.virtual_machine_profile.extension_profile.extensions] == ["monitor"]
    uniform = client.virtual_machine_scale_sets.get(RG, "vmss-uniform")
    assert uniform.orchestration_mode == "Uniform" and uniform.platform_fault_domain_count is None
    listed = {s.name: s.orchestration_mode for s in client.virtual_machine_scale_sets.list(RG)}
    assert listed == {"vmss-flex": "Flexible", "vmss-flex-auto": "Flexible", "vmss-flex-rolling": "Flexible",
                      "vmss-uniform": "Uniform"}


def test_instances_are_vms_carrying_the_scale_set_id(flex):
    client = compute(flex)
    vms = instances(client, flex, "vmss-flex")
    assert len(vms) == 3 and all(name.startswith("vmss-flex_") and len(name) == len("vmss-flex_") + 8
                                 for name in vms)
    for name, vm in vms.items():
        assert vm.type == VM_TYPE and vm.virtual_machine_scale_set.id == scale_set_id(flex, "vmss-flex")
        assert vm.platform_fault_domain == 0 and vm.instance_view.platform_fault_domain == 0
        assert [s.code for s in vm.instance_view.statuses] == ["ProvisioningState/succeeded", "PowerState/running"]
        assert ext_codes(vm) == {"monitor": "ProvisioningState/succeeded"}  # the seeded model, as a VM extension
        assert [(r.name, r.type) for r in vm.resources] == [("monitor", "Microsoft.Compute/virtualMachines/extensions")]
        assert vm.os_profile.computer_name.startswith("vmss-flex") and vm.os_profile.computer_name != name
        # The single-VM APIs serve the instance like any VM.
        single = client.virtual_machines.get(RG, name, expand="instanceView")
        assert single.virtual_machine_scale_set.id == vm.virtual_machine_scale_set.id
        assert client.virtual_machines.instance_view(RG, name).statuses[1].code == "PowerState/running"
    # Without the filter the resource group's list has every VM: the standalone one and all Flexible instances.
    every = [vm.name for vm in client.virtual_machines.list(RG)]
    assert len(every) == 1 + 3 + 2 + 3 and "vm-solo" in every and set(vms) <= set(every)
    assert client.virtual_machines.get(RG, "vm-solo").virtual_machine_scale_set is None
    # List All with statusOnly and the filter: the instances' run-time status only.
    status = list(client.virtual_machines.list_all(status_only="true", filter=in_scale_set(flex, "vmss-flex")))
    assert sorted(vm.name for vm in status) == sorted(vms)
    assert all(vm.instance_view.statuses[1].code == "PowerState/running" and vm.storage_profile is None
               for vm in status)


def test_filtered_list_pages_and_rejects_what_the_spec_does_not_allow(flex):
    flex.settings(page_size=2)
    client = compute(flex)
    assert len(instances(client, flex, "vmss-flex")) == 3  # two pages; the nextLink keeps $filter and $expand
    pages = [r for r in flex.arm_requests() if r["path"].endswith("/resourceGroups/rg-flex/providers/"
                                                                  "Microsoft.Compute/virtualMachines")]
    assert len(pages) == 2 and pages[1]["query"]["$filter"] == in_scale_set(flex, "vmss-flex")
    assert pages[1]["query"]["$expand"] == "instanceView"
    path = f"/subscriptions/{flex.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{RG}/providers/Microsoft.Compute/" \
           "virtualMachines"
    status, dummy, body = raw(flex, "GET", path, query="api-version=2026-04-01&$expand=instanceView")
    assert status == 400 and body["error"]["code"] == "InvalidParameter" and body["error"]["target"] == "$expand"
    status, dummy, body = raw(flex, "GET", path, query="api-version=2026-04-01&$filter=name%20eq%20%27x%27")
    assert status == 400 and body["error"]["target"] == "$filter"
    # The property may come unquoted; ids compare case-insensitively, as ARM ids do.
    unquoted = f"virtualMachineScaleSet/id eq '{scale_set_id(flex, 'VMSS-FLEX-AUTO').upper()}'"
    assert len(list(client.virtual_machines.list(RG, filter=unquoted))) == 2


def test_uniform_only_operations_answer_as_on_flexible(flex):
    client = compute(flex)
    name = sorted(instances(client, flex, "vmss-flex"))[0]
    with pytest.raises(ResourceExistsError) as exc:
        client.virtual_machine_scale_sets.get_instance_view(RG, "vmss-flex")
    assert exc.value.status_code == 409 and exc.value.error.code == "OperationNotAllowed"
    assert exc.value.error.message.startswith(
        "Operation 'VirtualMachineScaleSets.instanceView.GET' is not allowed on Virtual Machine Scale Set 'vmss-flex'")
    calls = (lambda: client.virtual_machine_scale_set_vms.get(RG, "vmss-flex", name),
             lambda: client.virtual_machine_scale_set_vms.get_instance_view(RG, "vmss-flex", name),
             lambda: client.virtual_machine_scale_set_vm_extensions.list(RG, "vmss-flex", name),
             lambda: client.virtual_machine_scale_set_vm_extensions.get(RG, "vmss-flex", name, "monitor"))
    for call in calls:
        with pytest.raises(HttpResponseError) as exc:
            call()
        assert exc.value.status_code == 400 and exc.value.error.code == "InvalidParameter"
        assert exc.value.error.message == "Virtual Machine Scale Set VM instanceId must be a number."
        assert exc.value.error.target == "instanceId"
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machine_scale_set_vms.get(RG, "vmss-flex", "0")
    # The VMSS VM list works on Flexible: the instances' names as instance ids, never an instance view.
    listed = list(client.virtual_machine_scale_set_vms.list(RG, "vmss-flex", expand="instanceView"))
    names = sorted(instances(client, flex, "vmss-flex"))
    assert sorted((vm.name, vm.instance_id) for vm in listed) == [(n, n) for n in names]
    assert all(vm.instance_view is None and vm.resources is None for vm in listed)
    # The same calls on the Uniform scale set still answer as before.
    assert client.virtual_machine_scale_sets.get_instance_view(RG, "vmss-uniform").virtual_machine is not None
    assert client.virtual_machine_scale_set_vms.get(RG, "vmss-uniform", "1").instance_id == "1"
    with pytest.raises(ResourceNotFoundError):  # Uniform keeps its 404 for an unknown instance id
        client.virtual_machine_scale_set_vms.get(RG, "vmss-uniform", name)


def test_vm_extension_on_an_instance_runs_its_handler_like_any_vm(flex):
    client = compute(flex)
    name = sorted(instances(client, flex, "vmss-flex"))[1]
    flex.faults([{"extension": {"vm": name, "name": "cs", "outcome": "succeeded", "stdout": "from flex\n"},
                  "times": 1},
                 {"extension": {"vm": name, "name": "cs", "outcome": "failed", "message": "Enable failed: second"},
                  "times": 1}])
    result = client.virtual_machine_extensions.begin_create_or_update(RG, name, "cs", VM_CS).result()
    assert result.provisioning_state == "Succeeded" and result.protected_settings is None
    view = vm_extensions(client, name)["cs"].instance_view
    assert view.statuses[0].code == "ProvisioningState/succeeded" and "from flex" in view.statuses[0].message
    # The identical write again: no handler run, so the queued failing fault is not consumed and nothing changes.
    again = client.virtual_machine_extensions.begin_create_or_update(RG, name, "cs", VM_CS).result()
    assert again.provisioning_state == "Succeeded"
    assert vm_extensions(client, name)["cs"].instance_view.statuses[0].message == view.statuses[0].message
    # A changed definition reruns it, and this time the handler fails (the fault queued for this VM).
    changed = copy.deepcopy(VM_CS)
    changed["properties"]["settings"]["commandToExecute"] = "echo changed"
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_extensions.begin_create_or_update(RG, name, "cs", changed).result()
    assert "VMExtensionProvisioningError" in str(exc.value) and "second" in str(exc.value)
    assert ext_codes(instances(client, flex, "vmss-flex")[name])["cs"] == "ProvisioningState/failed/0"
    # The other instances and the scale set's model are untouched by a VM extension write.
    others = {n: ext_codes(vm) for n, vm in instances(client, flex, "vmss-flex").items() if n != name}
    assert all(codes == {"monitor": "ProvisioningState/succeeded"} for codes in others.values())
    assert [e.name for e in client.virtual_machine_scale_set_extensions.list(RG, "vmss-flex")] == ["monitor"]
    assert "flex-s3cret-value" not in str(flex.state()) and "flex-s3cret-value" not in str(flex.requests())


def test_manual_model_reaches_new_instances_and_manually_upgraded_ones(flex):
    client = compute(flex)
    first, second, third = sorted(instances(client, flex, "vmss-flex"))
    client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-flex", "cs", CS).result()
    assert all("cs" not in ext_codes(vm) for vm in instances(client, flex, "vmss-flex").values())
    # Scale out: the new VM is created with the model.
    grown = client.virtual_machine_scale_sets.begin_update(RG, "vmss-flex", {"sku": {"capacity": 4}}).result()
    assert grown.sku.capacity == 4
    vms = instances(client, flex, "vmss-flex")
    (new,) = set(vms) - {first, second, third}
    assert ext_codes(vms[new]) == {"monitor": "ProvisioningState/succeeded", "cs": "ProvisioningState/succeeded"}
    assert vm_extensions(client, new)["cs"].settings == {"commandToExecute": "echo flex"}
    # manualupgrade takes the VM names as instance ids; only the named instance gets the model.
    client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-flex", {"instanceIds": [first]}).result()
    vms = instances(client, flex, "vmss-flex")
    assert "cs" in ext_codes(vms[first]) and "cs" not in ext_codes(vms[second])
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-flex", {"instanceIds": ["0"]}).result()
    assert exc.value.status_code == 400 and exc.value.error.code == "InvalidParameter"
    # Twice: the identical model write and the same manual upgrade change nothing and run no handler (a failing
    # fault queued for the upgraded instance stays unconsumed, its extension stays succeeded).
    flex.faults([{"extension": {"vm": first, "name": "cs", "outcome": "failed"}, "times": 1}])
    before = client.virtual_machine_scale_sets.get(RG, "vmss-flex")
    client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-flex", "cs", CS).result()
    client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-flex", {"instanceIds": [first]}).result()
    assert client.virtual_machine_scale_sets.get(RG, "vmss-flex").as_dict() == before.as_dict()
    assert ext_codes(instances(client, flex, "vmss-flex")[first])["cs"] == "ProvisioningState/succeeded"
    # Scale in removes the newest instance, a VM like any other.
    client.virtual_machine_scale_sets.begin_update(RG, "vmss-flex", {"sku": {"capacity": 3}}).result()
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machines.get(RG, new)
    assert sorted(instances(client, flex, "vmss-flex")) == [first, second, third]


def test_automatic_model_change_reaches_every_instance_and_keeps_their_own_extensions(flex):
    client = compute(flex)
    one, two = sorted(instances(client, flex, "vmss-flex-auto"))
    own = {"location": "westeurope", "properties": {"publisher": "Microsoft.OSTCExtensions",
                                                    "type": "VMAccessForLinux", "typeHandlerVersion": "1.5"}}
    client.virtual_machine_extensions.begin_create_or_update(RG, one, "access", own).result()
    flex.faults([{"extension": {"vm": two, "name": "cs", "outcome": "failed", "message": "Enable failed: two"},
                  "times": 1}])
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-flex-auto", "cs", CS).result()
    assert "VMExtensionProvisioningError" in str(exc.value) and "two" in str(exc.value)
    vms = instances(client, flex, "vmss-flex-auto")
    assert ext_codes(vms[one]) == {"access": "ProvisioningState/succeeded", "cs": "ProvisioningState/succeeded"}
    assert ext_codes(vms[two]) == {"cs": "ProvisioningState/failed/0"}
    assert client.virtual_machine_scale_set_extensions.get(RG, "vmss-flex-auto", "cs").provisioning_state == "Failed"
    # Removing the extension from the model removes it from the instances that got it from the model, and leaves
    # the extension written on the VM itself.
    client.virtual_machine_scale_set_extensions.begin_delete(RG, "vmss-flex-auto", "cs").result()
    vms = instances(client, flex, "vmss-flex-auto")
    assert ext_codes(vms[one]) == {"access": "ProvisioningState/succeeded"} and ext_codes(vms[two]) == {}


def test_rolling_flexible_goes_batch_by_batch_and_needs_the_health_extension(flex):
    client = compute(flex)
    names = [vm.name for vm in client.virtual_machine_scale_set_vms.list(RG, "vmss-flex-rolling")]  # batch order
    flex.faults([{"extension": {"vm": names[0], "name": "cs", "outcome": "timeout"}}])
    poller = client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-flex-rolling", "cs", CS)
    vms = instances(client, flex, "vmss-flex-rolling")
    assert ext_codes(vms[names[0]])["cs"] == "ProvisioningState/transitioning"
    assert all("cs" not in ext_codes(vms[n]) for n in names[1:])  # the next batches wait for the first one
    assert poller.status().lower() == "inprogress"
    flex.reset()  # ends the held operation
    flex.settings(handler_duration_s=0.2)
    # Rolling on a Flexible scale set without the Application Health extension in its model is refused, unchanged.
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_sets.begin_update(
            RG, "vmss-flex", {"properties": {"upgradePolicy": {"mode": "Rolling"}}}).result()
    assert exc.value.status_code == 400 and "Application Health" in exc.value.error.message
    assert client.virtual_machine_scale_sets.get(RG, "vmss-flex").upgrade_policy.mode == "Manual"
    profile = {"extensionProfile": {"extensions": [{"name": "monitor", "properties": {
        "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent", "typeHandlerVersion": "1.33"}},
        HEALTH]}}
    client.virtual_machine_scale_sets.begin_update(RG, "vmss-flex", {"properties": {
        "upgradePolicy": {"mode": "Rolling"}, "virtualMachineProfile": profile}}).result()
    assert client.virtual_machine_scale_sets.get(RG, "vmss-flex").upgrade_policy.mode == "Rolling"
    assert all(ext_codes(vm).get("health") == "ProvisioningState/succeeded"
               for vm in instances(client, flex, "vmss-flex").values())


def test_create_a_flexible_scale_set(flex):
    client = compute(flex)
    body = {"location": "westeurope", "sku": {"name": "Standard_B2s", "capacity": 2},
            "properties": {"orchestrationMode": "Flexible", "upgradePolicy": {"mode": "Automatic"},
                           "virtualMachineProfile": {"extensionProfile": {"extensions": [dict(CS, name="cs")]}}}}
    with pytest.raises(HttpResponseError) as exc:  # Flexible needs platformFaultDomainCount
        client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-new", body).result()
    assert exc.value.status_code == 400 and "platformFaultDomainCount" in exc.value.error.message
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machine_scale_sets.get(RG, "vmss-new")
    body["properties"]["platformFaultDomainCount"] = 2
    created = client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-new", body).result()
    assert (created.orchestration_mode, created.platform_fault_domain_count, created.sku.capacity) == \
        ("Flexible", 2, 2)
    vms = instances(client, flex, "vmss-new")
    assert sorted(vm.platform_fault_domain for vm in vms.values()) == [0, 1]
    assert all(ext_codes(vm) == {"cs": "ProvisioningState/succeeded"} for vm in vms.values())
    # The same PUT again: no new instance, no handler run (a failing fault stays unconsumed).
    flex.faults([{"extension": {"vm": name, "name": "cs", "outcome": "failed"}, "times": 1} for name in vms])
    client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-new", body).result()
    again = instances(client, flex, "vmss-new")
    assert sorted(again) == sorted(vms)
    assert all(ext_codes(vm) == {"cs": "ProvisioningState/succeeded"} for vm in again.values())
    # The orchestration mode is fixed at creation.
    body["properties"]["orchestrationMode"] = "Uniform"
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-new", body).result()
    assert exc.value.status_code == 400 and exc.value.error.code == "PropertyChangeNotAllowed"
    assert client.virtual_machine_scale_sets.get(RG, "vmss-new").orchestration_mode == "Flexible"


def test_extension_rolling_upgrade_on_flexible_moves_opted_in_extensions(flex):
    """vmss-flex-rolling's health extension opted into automatic upgrade and runs 2.0.10; the catalogue has 2.0.12."""
    client = compute(flex)

    def versions():
        return {n: vm_extensions(client, n)["health"].instance_view.type_handler_version
                for n in instances(client, flex, "vmss-flex-rolling")}

    assert set(versions().values()) == {"2.0.10"}
    client.virtual_machine_scale_set_rolling_upgrades.begin_start_extension_upgrade(RG, "vmss-flex-rolling").result()
    assert set(versions().values()) == {"2.0.12"}
    latest = client.virtual_machine_scale_set_rolling_upgrades.get_latest(RG, "vmss-flex-rolling")
    assert latest.running_status.code == "Completed" and latest.progress.successful_instance_count == 3
    # Twice: nothing left to move, no handler runs (a failing fault on every instance stays unconsumed).
    flex.faults([{"extension": {"vm": n, "name": "health", "outcome": "failed"}, "times": 1} for n in versions()])
    client.virtual_machine_scale_set_rolling_upgrades.begin_start_extension_upgrade(RG, "vmss-flex-rolling").result()
    assert set(versions().values()) == {"2.0.12"}
    assert all(ext_codes(vm)["health"] == "ProvisioningState/succeeded"
               for vm in instances(client, flex, "vmss-flex-rolling").values())


def test_vm_extension_written_while_its_batch_waits_stays_when_the_batch_lands(flex):
    """A Rolling rollout reaches the third VM two batches later; a VM extension written on that VM meanwhile (the VM
    API) is neither lost nor undone when the batch lands. The clock is moved by the test, not by real time."""
    flex.settings(time_scale=1e-6)
    client = compute(flex)
    names = [vm.name for vm in client.virtual_machine_scale_set_vms.list(RG, "vmss-flex-rolling")]  # batch order
    poller = client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-flex-rolling", "cs", CS)
    assert "cs" not in ext_codes(instances(client, flex, "vmss-flex-rolling")[names[2]])  # its batch waits
    own = {"location": "westeurope", "properties": {"publisher": "Microsoft.OSTCExtensions",
                                                    "type": "VMAccessForLinux", "typeHandlerVersion": "1.5"}}
    written = client.virtual_machine_extensions.begin_create_or_update(RG, names[2], "access", own)
    flex._call("POST", "clock", {"advance_s": 10})  # pylint: disable=protected-access
    assert written.result().provisioning_state == "Succeeded"
    assert poller.result().provisioning_state == "Succeeded"
    succeeded = "ProvisioningState/succeeded"
    assert ext_codes(instances(client, flex, "vmss-flex-rolling")[names[2]]) == {
        "health": succeeded, "access": succeeded, "cs": succeeded}
