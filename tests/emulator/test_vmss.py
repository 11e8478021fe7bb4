"""Scale-set extensions and the Manual / Automatic / Rolling upgrade policies, with the real compute client."""

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from emulator_clients import RG, compute

EXT = {"properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
                      "settings": {"commandToExecute": "echo hi"}, "protectedSettings": {"k": "vmss-s3cret-value"}}}

OTHER = {"properties": {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent",
                        "typeHandlerVersion": "1.0"}}


def _instances(client, vmss):
    return {vm.instance_id: vm for vm in client.virtual_machine_scale_set_vms.list(RG, vmss, expand="instanceView")}


def _ext_status(vm, name="cs"):
    for ext in vm.instance_view.extensions or []:
        if ext.name == name:
            return ext.statuses[0].code
    return None


def test_manual_upgrade_with_failing_instance(emulator):
    emulator.settings(handler_duration_s=0.2, page_size=2)
    client = compute(emulator)
    result = client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-manual", "cs", EXT).result()
    assert result.provisioning_state == "Succeeded" and result.protected_settings is None
    vmss = client.virtual_machine_scale_sets.get(RG, "vmss-manual")
    assert vmss.sku.capacity == 5 and vmss.upgrade_policy.mode == "Manual"
    assert [e.name for e in vmss.virtual_machine_profile.extension_profile.extensions] == ["cs"]
    instances = _instances(client, "vmss-manual")  # paged: page_size 2 -> 3 pages
    assert sorted(instances) == ["0", "1", "2", "3", "4"]
    assert not any(vm.latest_model_applied for vm in instances.values())
    assert instances["0"].name == "vmss-manual_0" and _ext_status(instances["0"]) is None

    emulator.faults([{"extension": {"vm": "vmss-manual/1", "name": "cs", "outcome": "failed",
                                    "message": "Enable failed: instance one"}, "times": 1}])
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-manual", {"instanceIds": ["0", "1"]}).result()
    assert "VMExtensionProvisioningError" in str(exc.value) and "instance one" in str(exc.value)
    instances = _instances(client, "vmss-manual")
    assert _ext_status(instances["0"]) == "ProvisioningState/succeeded"
    assert _ext_status(instances["1"]).startswith("ProvisioningState/failed")
    assert instances["0"].latest_model_applied and not instances["2"].latest_model_applied
    view = client.virtual_machine_scale_set_vms.get_instance_view(RG, "vmss-manual", "1")
    assert "instance one" in view.extensions[0].statuses[0].message

    client.virtual_machine_scale_set_extensions.begin_delete(RG, "vmss-manual", "cs").result()
    assert _ext_status(_instances(client, "vmss-manual")["0"]) is not None  # still there until upgraded
    client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-manual", {"instanceIds": ["0"]}).result()
    assert _ext_status(_instances(client, "vmss-manual")["0"]) is None
    assert "vmss-s3cret-value" not in str(emulator.state())


def test_write_during_a_rollout_conflicts(emulator):
    # Instance 0's handler never ends (timeout fault), so the rollout is held in progress, whatever the clock.
    emulator.faults([{"extension": {"vm": "vmss-auto/0", "name": "cs", "outcome": "timeout"}}])
    client = compute(emulator)
    poller = client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-auto", "cs", EXT)
    with pytest.raises(ResourceExistsError):
        client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-auto", "other", OTHER)
    assert poller.status().lower() == "inprogress"
    emulator.reset()  # ends the held operation, so the poller's thread stops


def test_automatic_upgrades_all_instances(emulator):
    emulator.settings(handler_duration_s=0.2)
    client = compute(emulator)
    poller = client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-auto", "cs", EXT)
    assert poller.result().provisioning_state == "Succeeded"
    instances = _instances(client, "vmss-auto")
    assert all(vm.latest_model_applied for vm in instances.values())
    assert {_ext_status(vm) for vm in instances.values()} == {"ProvisioningState/succeeded"}
    (listed,) = client.virtual_machine_scale_set_extensions.list(RG, "vmss-auto")
    assert listed.name == "cs"


def test_rolling_upgrade_holds_at_an_unfinished_batch(emulator):
    # Instance 0's handler never ends: the first batch (20% of 3 -> batches of one) is held, whatever the clock.
    emulator.faults([{"extension": {"vm": "vmss-rolling/0", "name": "cs", "outcome": "timeout"}}])
    client = compute(emulator)
    poller = client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-rolling", "cs", EXT)
    first = _instances(client, "vmss-rolling")
    assert sorted(i for i, vm in first.items() if _ext_status(vm)) == ["0"]
    assert _ext_status(first["0"]) == "ProvisioningState/transitioning"
    assert poller.status().lower() == "inprogress"
    emulator.reset()


def test_rolling_upgrades_in_batches(emulator):
    emulator.settings(handler_duration_s=0.2)
    client = compute(emulator)
    poller = client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-rolling", "cs", EXT)
    poller.result()
    assert all(vm.latest_model_applied for vm in _instances(client, "vmss-rolling").values())
    rolling = client.virtual_machine_scale_set_rolling_upgrades.begin_start_extension_upgrade(RG, "vmss-rolling")
    rolling.result()
    ops = [r for r in emulator.writes() if r["path"].endswith("/extensionRollingUpgrade")]
    assert ops and ops[0]["status"] == 202


def test_tags_at_scale_set_scope_merge_and_delete(emulator):
    """Tags - Update At Scope: Merge keeps the other tags (a concurrent writer's), Delete removes only ours."""
    from emulator_clients import resources

    client = resources(emulator)
    scope = compute(emulator).virtual_machine_scale_sets.get(RG, "vmss-auto").id
    client.tags.begin_update_at_scope(scope, {"operation": "Merge", "properties": {"tags": {"owner": "ops"}}}).result()
    client.tags.begin_update_at_scope(scope, {"operation": "Merge", "properties": {"tags": {"ours": "1"}}}).result()
    assert client.tags.get_at_scope(scope).properties.tags == {"owner": "ops", "ours": "1"}
    assert compute(emulator).virtual_machine_scale_sets.get(RG, "vmss-auto").tags == {"owner": "ops", "ours": "1"}
    client.tags.begin_update_at_scope(scope, {"operation": "Delete", "properties": {"tags": {"ours": "1"}}}).result()
    assert client.tags.get_at_scope(scope).properties.tags == {"owner": "ops"}
    with pytest.raises(HttpResponseError) as exc:
        client.tags.begin_update_at_scope(scope, {"operation": "Append", "properties": {"tags": {}}}).result()
    assert exc.value.status_code == 400
