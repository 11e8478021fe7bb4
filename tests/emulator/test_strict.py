"""Where Azure is strict, the emulator is too: each test here failed against the emulator before it was made
strict (issue 13), and holds the real behaviour it is based on (tests/data: recordings and REST examples)."""
import json
from pathlib import Path

import pytest
import yaml
from azure.core.exceptions import HttpResponseError

from emulator_clients import LOCATION, RG, compute, features, raw, resources, vm_path
from emulator_control import Emulator

DATA = Path(__file__).resolve().parents[1] / "data"
CS = {"location": LOCATION, "properties": {
    "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
    "autoUpgradeMinorVersion": True, "settings": {"commandToExecute": "echo one"},
    "protectedSettings": {"token": "strict-s3cret"}}}


def _with(props=None, **top):
    body = json.loads(json.dumps(CS))
    body["properties"].update(props or {})
    body.update(top)
    return body


def _message(client, vm, name):
    view = client.virtual_machine_extensions.get(RG, vm, name, expand="instanceView").instance_view
    return view.statuses[0].message


def _put(client, vm, name, body):
    return client.virtual_machine_extensions.begin_create_or_update(RG, vm, name, body).result()


@pytest.fixture
def quick(emulator):
    emulator.settings(handler_duration_s=0.05, delete_duration_s=0.05)
    return emulator


# --- VM body ---------------------------------------------------------------------------------------------------
def _recorded_vm_body():
    cassette = yaml.safe_load((DATA / "recordings" / "test_mgmt_compute.test_vm_extensions.yaml").read_text())
    for item in cassette["interactions"]:
        uri = item["request"]["uri"].split("?")[0]
        if item["request"]["method"] == "GET" and "/providers/Microsoft.Compute/virtualMachines/" in uri \
                and "/extensions" not in uri:
            return json.loads(item["response"]["body"]["string"])
    raise AssertionError("no VM GET in the recording")


def test_vm_body_has_every_profile_of_the_recorded_real_body(emulator):
    recorded = _recorded_vm_body()["properties"]
    status, dummy, body = raw(emulator, "GET", vm_path(emulator, "vm-win-01"))
    assert status == 200
    ours = body["properties"]
    assert set(recorded) <= set(ours)
    for profile in ("storageProfile", "osProfile", "networkProfile"):
        assert set(recorded[profile]) <= set(ours[profile]), profile
    assert set(recorded["osProfile"]["windowsConfiguration"]) <= set(ours["osProfile"]["windowsConfiguration"])
    vm = compute(emulator).virtual_machines.get(RG, "vm-web-01")
    assert vm.storage_profile.data_disks == [] and vm.storage_profile.image_reference.publisher
    assert vm.network_profile.network_interfaces[0].id.endswith("/networkInterfaces/vm-web-01-nic")
    assert vm.os_profile.allow_extension_operations is True


# --- an unchanged write does not rerun the handler -------------------------------------------------------------
def test_identical_put_and_patch_do_not_rerun_the_handler_nor_consume_a_fault(quick):
    client = compute(quick)
    quick.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "stdout": "run one"}, "times": 1}])
    _put(client, "vm-web-02", "cs", CS)
    assert "run one" in _message(client, "vm-web-02", "cs")
    # A fault waits for the next real handler run.
    quick.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "outcome": "failed",
                                 "message": "Enable failed: run two"}, "times": 1}])
    status, headers, body = raw(quick, "PUT", vm_path(quick, "vm-web-02", "/extensions/cs"), CS)
    assert status == 200 and body["properties"]["provisioningState"] == "Updating"  # as the recording answers
    assert "Azure-AsyncOperation" in headers
    assert _put(client, "vm-web-02", "cs", CS).provisioning_state == "Succeeded"
    client.virtual_machine_extensions.begin_update(
        RG, "vm-web-02", "cs", {"properties": {"autoUpgradeMinorVersion": True}}).result()
    assert "run one" in _message(client, "vm-web-02", "cs")
    # The same forceUpdateTag twice: one rerun only; the fault is consumed by that rerun.
    with pytest.raises(HttpResponseError, match="run two"):
        _put(client, "vm-web-02", "cs", _with({"forceUpdateTag": "1"}))
    quick.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "stdout": "run three"}, "times": 1}])
    with pytest.raises(HttpResponseError, match="run two"):  # unchanged: still the failed run, no rerun
        _put(client, "vm-web-02", "cs", _with({"forceUpdateTag": "1"}))
    _put(client, "vm-web-02", "cs", _with({"forceUpdateTag": "2"}))
    assert "run three" in _message(client, "vm-web-02", "cs")


@pytest.mark.parametrize("change", [
    {"settings": {"commandToExecute": "echo two"}},
    {"protectedSettings": {"token": "rotated"}},
    {"typeHandlerVersion": "2.0"},
    {"autoUpgradeMinorVersion": False},
    {"forceUpdateTag": "new"},
], ids=["settings", "protected", "version", "flag", "forceUpdateTag"])
def test_a_changed_definition_reruns_the_handler(quick, change):
    client = compute(quick)
    _put(client, "vm-web-02", "cs", CS)
    quick.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "stdout": "rerun"}, "times": 1}])
    _put(client, "vm-web-02", "cs", _with(change))
    assert "rerun" in _message(client, "vm-web-02", "cs")
    assert "strict-s3cret" not in str(quick.state()) and "rotated" not in str(quick.state())


# --- one extension per handler, no publisher/type change -------------------------------------------------------
def test_a_second_extension_of_the_same_handler_is_refused(quick):
    status, dummy, body = raw(quick, "PUT", vm_path(quick, "vm-web-01", "/extensions/second"), CS)
    assert status == 400 and body["error"]["code"] == "BadRequest"
    assert body["error"]["message"] == (
        "Multiple VMExtensions per handler not supported for OS type 'Linux'. VMExtension 'customScript' with "
        "handler 'Microsoft.Azure.Extensions.CustomScript' already added or specified in input.")
    bginfo = {"location": LOCATION, "properties": {"publisher": "microsoft.compute", "type": "bginfo",
                                                   "typeHandlerVersion": "2.2"}}
    status, dummy, body = raw(quick, "PUT", vm_path(quick, "vm-win-01", "/extensions/bg2"), bginfo)
    assert status == 400 and "for OS type 'Windows'. VMExtension 'BGInfo'" in body["error"]["message"]
    assert not [r for r in quick.requests() if r["path"].endswith("/second") and r["status"] < 300]
    image = compute(quick).virtual_machine_extension_images.get(
        LOCATION, "Microsoft.Azure.Extensions", "CustomScript", "2.1.10")
    assert image.supports_multiple_extensions is False


def test_publisher_or_type_of_an_existing_extension_cannot_change(quick):
    for key, value in (("type", "CustomScriptX"), ("publisher", "Microsoft.OSTCExtensions")):
        status, dummy, body = raw(quick, "PUT", vm_path(quick, "vm-web-01", "/extensions/customScript"),
                                  _with({key: value}))
        assert status == 400 and body["error"] == {
            "code": "PropertyChangeNotAllowed", "message": f"Changing property '{key}' is not allowed.",
            "target": key}
    # the same names in another casing are no change (ARM stores the catalogue's casing)
    status, dummy, dummy = raw(quick, "PUT", vm_path(quick, "vm-web-01", "/extensions/customScript"),
                               _with({"publisher": "microsoft.azure.extensions", "type": "customscript"}))
    assert status == 200
    ext = {"properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
                          "typeHandlerVersion": "2.1"}}
    client = compute(quick)
    client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-manual", "cs", ext).result()
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_set_extensions.begin_update(
            RG, "vmss-manual", "cs", {"properties": {"type": "Other"}}).result()
    assert exc.value.error.code == "PropertyChangeNotAllowed"
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-manual", "cs2", ext).result()
    assert exc.value.error.code == "BadRequest" and "Multiple VMExtensions per handler" in exc.value.error.message


def test_failed_linux_handler_code_is_failed_0(emulator):
    view = compute(emulator).virtual_machines.instance_view(RG, "vm-failed-ext")
    assert view.extensions[0].statuses[0].code == "ProvisioningState/failed/0"


# --- api-versions ----------------------------------------------------------------------------------------------
def test_unknown_api_versions_are_refused_as_arm_does(emulator):
    path = vm_path(emulator, "vm-web-01")
    status, dummy, body = raw(emulator, "GET", path, query="api-version=1999-01-01")
    assert status == 400 and body["error"]["code"] == "NoRegisteredProviderFound"
    assert body["error"]["message"].startswith(
        "No registered resource provider found for location 'westeurope' and API version '1999-01-01' for type "
        "'virtualMachines'. The supported api-versions are '2026-04-01, 2025-04-01, ")
    status, dummy, body = raw(emulator, "GET", path, query="api-version=not-a-version")
    assert status == 400 and body["error"]["code"] == "InvalidApiVersionParameter"
    assert body["error"]["message"].startswith("The api-version 'not-a-version' is invalid. The supported versions")
    sub = emulator.env["AZURE_SUBSCRIPTION_ID"]
    status, dummy, body = raw(emulator, "GET", f"/subscriptions/{sub}/resourceGroups/{RG}",
                              query="api-version=2026-04-01")  # a Compute version on Microsoft.Resources
    assert status == 400 and body["error"]["code"] == "InvalidApiVersionParameter"
    feature = f"/subscriptions/{sub}/providers/Microsoft.Features/providers/Microsoft.Compute/features/EncryptionAtHost"
    assert raw(emulator, "GET", feature, query="api-version=2025-04-01")[0] == 400
    # every version the SDKs send, and the incumbent's (azure-mgmt-compute 33: 2024-07-01), is served
    for version in ("2026-04-01", "2024-07-01", "2023-09-01", "2020-06-01"):
        assert raw(emulator, "GET", path, query=f"api-version={version}")[0] == 200, version
    assert raw(emulator, "GET", feature, query="api-version=2021-07-01")[0] == 200
    assert raw(emulator, "GET", f"/subscriptions/{sub}/resourceGroups/{RG}", query="api-version=2022-09-01")[0] == 200


def test_provider_document_lists_the_real_versions(emulator):
    provider = resources(emulator).providers.get("Microsoft.Compute")
    types = {t.resource_type: t.api_versions for t in provider.resource_types}
    assert types["virtualMachines/extensions"][0] == "2026-04-01"
    assert {"2024-07-01", "2025-04-01", "2020-06-01"} <= set(types["virtualMachines"])
    assert "2025-04-01" not in resources(emulator).providers.get("Microsoft.Features").resource_types[0].api_versions


# --- features --------------------------------------------------------------------------------------------------
def test_feature_states_are_compared_case_insensitively(tmp_path):
    seed = yaml.safe_load((Path(__file__).resolve().parent / "default-seed.yml").read_text())
    seed["subscriptions"][0]["features"] = {"Microsoft.Compute": {"LowerCasePreview": "notregistered",
                                                                  "RegisteredPreview": "registered"}}
    seed["subscriptions"][0]["providers"]["Microsoft.Network"] = "unregistered"
    path = tmp_path / "seed.yml"
    path.write_text(yaml.safe_dump(seed))
    emu = Emulator.start(str(tmp_path / "emu"), seed=str(path))
    try:
        emu.settings(hold_registrations=True)
        client = features(emu)
        assert client.features.register("Microsoft.Compute", "LowerCasePreview").properties.state == "Registering"
        assert client.features.unregister("Microsoft.Compute", "RegisteredPreview").properties.state \
            == "Unregistering"
        assert resources(emu).providers.register("Microsoft.Network").registration_state == "Registering"
    finally:
        emu.stop()


# --- scale sets ------------------------------------------------------------------------------------------------
EXT = {"properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
                      "settings": {"commandToExecute": "echo hi"}, "protectedSettings": {"k": "vmss-strict-s3cret"}}}


def test_scale_set_put_and_patch(quick):
    client = compute(quick)
    client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-auto", "cs", EXT).result()
    before = client.virtual_machine_scale_sets.get(RG, "vmss-auto")
    # another team's change: a read-modify-write of the scale set (capacity 3 -> 4, a tag)
    before.sku.capacity = 4
    before.tags = {"team": "other"}
    after = client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-auto", before).result()
    assert after.sku.capacity == 4 and after.tags == {"team": "other"}
    instances = {i.instance_id: i for i in client.virtual_machine_scale_set_vms.list(RG, "vmss-auto",
                                                                                      expand="instanceView")}
    assert sorted(instances) == ["0", "1", "2", "3"] and instances["3"].latest_model_applied
    assert instances["3"].instance_view.extensions[0].statuses[0].code == "ProvisioningState/succeeded"
    assert [e.name for e in after.virtual_machine_profile.extension_profile.extensions] == ["cs"]
    # the round trip kept the extension (its protected settings too: no change, so no rerun)
    assert not any(r["method"] == "PUT" and "/extensions/" in r["path"] for r in quick.writes()[1:])
    updated = client.virtual_machine_scale_sets.begin_update(RG, "vmss-auto", {"tags": {"team": "ops"}}).result()
    assert updated.tags == {"team": "ops"} and updated.sku.capacity == 4
    # changing the extension profile through the scale set rolls the new model out (Automatic)
    body = client.virtual_machine_scale_sets.get(RG, "vmss-auto").as_dict()
    body["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"][0]["properties"]["settings"] = {
        "commandToExecute": "echo changed"}
    client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-auto", body).result()
    listed = client.virtual_machine_scale_set_vm_extensions.list(RG, "vmss-auto", "0").value
    assert listed[0].settings == {"commandToExecute": "echo changed"}
    dup = json.loads(json.dumps(body))
    dup["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"].append(
        {"name": "cs2", "properties": EXT["properties"]})
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-auto", dup).result()
    assert exc.value.error.code == "BadRequest"
    assert "vmss-strict-s3cret" not in str(quick.state())


def test_scale_set_instance_view_and_rolling_upgrade_status(quick):
    client = compute(quick)
    client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-rolling", "cs", EXT).result()
    view = client.virtual_machine_scale_sets.get_instance_view(RG, "vmss-rolling")
    assert view.virtual_machine.statuses_summary[0].code == "ProvisioningState/succeeded"
    assert view.virtual_machine.statuses_summary[0].count == 3
    assert view.extensions[0].name == "cs"
    assert view.extensions[0].statuses_summary[0].code == "ProvisioningState/succeeded"
    latest = client.virtual_machine_scale_set_rolling_upgrades.get_latest(RG, "vmss-rolling")
    assert latest.running_status.code == "Completed" and latest.progress.successful_instance_count == 3
    assert latest.policy.max_batch_instance_percent == 20


def test_extension_rolling_upgrade_refused_on_manual(quick):
    with pytest.raises(HttpResponseError) as exc:
        compute(quick).virtual_machine_scale_set_rolling_upgrades.begin_start_extension_upgrade(
            RG, "vmss-manual").result()
    assert exc.value.status_code == 409 and exc.value.error.code == "OperationNotAllowed"


def test_extension_rolling_upgrade_moves_extensions_to_their_latest_version_without_applying_the_model(tmp_path):
    seed = yaml.safe_load((Path(__file__).resolve().parent / "default-seed.yml").read_text())
    seed["settings"] = {"handler_duration_s": 0.05}
    seed["subscriptions"][0]["resource_groups"][0]["scale_sets"] = [{
        "name": "vmss-aeu", "os_type": "Linux", "capacity": 2, "upgrade_policy": "Manual", "extensions": [
            {"name": "cs", "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
             "type_handler_version": "2.1", "enable_automatic_upgrade": True, "handler_version": "2.1.6"},
            {"name": "ama", "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent",
             "type_handler_version": "1.9", "handler_version": "1.9.1"}]}]
    path = tmp_path / "seed.yml"
    path.write_text(yaml.safe_dump(seed))
    emu = Emulator.start(str(tmp_path / "emu"), seed=str(path))
    try:
        client = compute(emu)

        def versions():
            return {(vm.instance_id, e.name): e.type_handler_version
                    for vm in client.virtual_machine_scale_set_vms.list(RG, "vmss-aeu", expand="instanceView")
                    for e in vm.instance_view.extensions}

        assert set(versions().values()) == {"2.1.6", "1.9.1"}
        # a model change the Manual scale set has not applied yet
        client.virtual_machine_scale_set_extensions.begin_update(
            RG, "vmss-aeu", "ama", {"properties": {"settings": {"x": 1}}}).result()
        client.virtual_machine_scale_sets.begin_update(
            RG, "vmss-aeu", {"properties": {"upgradePolicy": {"mode": "Rolling"}}}).result()
        client.virtual_machine_scale_set_rolling_upgrades.begin_start_extension_upgrade(RG, "vmss-aeu").result()
        assert versions() == {("0", "cs"): "2.1.10", ("1", "cs"): "2.1.10", ("0", "ama"): "1.9.1",
                              ("1", "ama"): "1.9.1"}
        instances = list(client.virtual_machine_scale_set_vms.list(RG, "vmss-aeu"))
        assert not any(vm.latest_model_applied for vm in instances)
        assert client.virtual_machine_scale_set_rolling_upgrades.get_latest(
            RG, "vmss-aeu").running_status.code == "Completed"
    finally:
        emu.stop()


def test_identical_scale_set_extension_put_changes_nothing(quick):
    client = compute(quick)
    vmss_ext = client.virtual_machine_scale_set_extensions
    vmss_ext.begin_create_or_update(RG, "vmss-auto", "cs", EXT).result()
    model = client.virtual_machine_scale_sets.get(RG, "vmss-auto")
    quick.faults([{"extension": {"vm": "vmss-auto/0", "name": "cs", "outcome": "failed",
                                 "message": "Enable failed: rolled out"}, "times": 1}])
    assert vmss_ext.begin_create_or_update(RG, "vmss-auto", "cs", EXT).result().provisioning_state == "Succeeded"
    assert client.virtual_machine_scale_sets.get(RG, "vmss-auto").as_dict() == model.as_dict()
    changed = json.loads(json.dumps(EXT))
    changed["properties"]["settings"] = {"commandToExecute": "echo changed"}
    with pytest.raises(HttpResponseError, match="rolled out"):  # the fault waited for a real rollout
        vmss_ext.begin_create_or_update(RG, "vmss-auto", "cs", changed).result()
