"""List operations with nextLink paging, read with the real compute client (which follows every nextLink)."""
from emulator_clients import RG, compute, raw

SEED_VMS = ["vm-agent-down", "vm-failed-ext", "vm-web-01", "vm-web-02", "vm-win-01"]


def _list_gets(emulator, suffix):
    return [r for r in emulator.arm_requests() if r["method"] == "GET" and r["path"].endswith(suffix)]


def test_list_all_vms_iterates_every_page(emulator):
    emulator.settings(page_size=2)
    client = compute(emulator)
    vms = list(client.virtual_machines.list_all())
    assert sorted(vm.name for vm in vms) == SEED_VMS
    assert len(vms) == len({vm.id for vm in vms})  # no page served twice
    pages = _list_gets(emulator, "/providers/Microsoft.Compute/virtualMachines")
    assert len(pages) == 3  # 5 VMs, 2 a page
    assert [p["query"].get("$skiptoken") for p in pages] == [None, "2", "4"]
    assert all(p["query"]["api-version"] == "2026-04-01" for p in pages)
    web = next(vm for vm in vms if vm.name == "vm-web-01")
    assert web.storage_profile.os_disk.os_type == "Linux" and web.instance_view is None
    assert [r.name for r in web.resources] == ["customScript"]


def test_list_all_status_only_returns_instance_views_on_every_page(emulator):
    emulator.settings(page_size=2)
    client = compute(emulator)
    vms = {vm.name: vm for vm in client.virtual_machines.list_all(status_only="true")}
    assert sorted(vms) == SEED_VMS
    pages = _list_gets(emulator, "/providers/Microsoft.Compute/virtualMachines")
    assert len(pages) == 3 and all(p["query"].get("statusOnly") == "true" for p in pages)
    for vm in vms.values():
        assert vm.instance_view is not None and vm.storage_profile is None and vm.vm_id
        assert [s.code for s in vm.instance_view.statuses][1] == "PowerState/running"
    failed = vms["vm-failed-ext"].instance_view
    assert failed.extensions[0].name == "installApp"
    assert failed.extensions[0].statuses[0].code.startswith("ProvisioningState/failed")
    assert "ech: not found" in failed.extensions[0].statuses[0].message
    assert vms["vm-agent-down"].instance_view.vm_agent.statuses[0].display_status == "Not Ready"
    assert vms["vm-web-01"].instance_view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"


def test_list_by_resource_group_and_location(emulator):
    emulator.settings(page_size=3)
    client = compute(emulator)
    assert sorted(vm.name for vm in client.virtual_machines.list(RG)) == SEED_VMS
    assert len(_list_gets(emulator, f"/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines")) == 2
    assert sorted(vm.name for vm in client.virtual_machines.list_by_location("westeurope")) == SEED_VMS
    assert list(client.virtual_machines.list_by_location("eastus")) == []


def test_bad_skiptoken_is_refused(emulator):
    sub = emulator.env["AZURE_SUBSCRIPTION_ID"]
    status, dummy, body = raw(emulator, "GET", f"/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines",
                              query="api-version=2026-04-01&$skiptoken=nope")
    assert status == 400 and body["error"]["code"] == "InvalidSkipToken"


def test_scale_set_lists(emulator):
    emulator.settings(page_size=2, handler_duration_s=0.05)
    client = compute(emulator)
    ext = {"properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
                          "typeHandlerVersion": "2.1", "settings": {"commandToExecute": "echo hi"}}}
    client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-auto", "cs", ext).result()
    assert sorted(ss.name for ss in client.virtual_machine_scale_sets.list_all()) == [
        "vmss-auto", "vmss-manual", "vmss-rolling"]
    instances = list(client.virtual_machine_scale_set_vms.list(RG, "vmss-auto", expand="instanceView"))
    assert [i.instance_id for i in instances] == ["0", "1", "2"]
    assert len(_list_gets(emulator, "/virtualMachineScaleSets/vmss-auto/virtualMachines")) == 2
    for instance in instances:
        assert instance.instance_view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"
        # resources[] holds the instance's extensions in full, as ARM returns them
        (resource,) = instance.resources
        assert resource.name == "cs" and resource.publisher == "Microsoft.Azure.Extensions"
        assert resource.settings == {"commandToExecute": "echo hi"} and resource.provisioning_state == "Succeeded"
    listed = client.virtual_machine_scale_set_vm_extensions.list(RG, "vmss-auto", "1", expand="instanceView")
    (only,) = listed.value
    assert only.name == "cs" and only.type_handler_version == "2.1"
    assert only.instance_view.statuses[0].code == "ProvisioningState/succeeded"
    assert only.id.endswith("/virtualMachineScaleSets/vmss-auto/virtualMachines/1/extensions/cs")
    one = client.virtual_machine_scale_set_vm_extensions.get(RG, "vmss-auto", "1", "cs")
    assert one.settings == {"commandToExecute": "echo hi"} and one.instance_view is None
    assert client.virtual_machine_scale_set_vm_extensions.list(RG, "vmss-manual", "0").value == []
