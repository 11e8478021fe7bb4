"""VM extension lifecycle against the emulator with the real compute client (create, update, fail, delete)."""
import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError

from emulator_clients import LOCATION, RG, compute, raw, vm_path

CUSTOM_SCRIPT = {"location": LOCATION, "properties": {
    "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
    "autoUpgradeMinorVersion": True, "settings": {"commandToExecute": "echo hi"},
    "protectedSettings": {"storageAccountKey": "s3cret", "nested": {"token": "t0ken"}}}}

MONITOR = {"location": LOCATION, "properties": {
    "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent", "typeHandlerVersion": "1.0"}}


@pytest.fixture
def fast(emulator):
    emulator.settings(handler_duration_s=0.2, delete_duration_s=0.1)
    return emulator


def test_create_then_repeat_masks_protected_settings(fast):
    client = compute(fast)
    fast.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "outcome": "succeeded", "stdout": "hi"}}])
    result = client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", CUSTOM_SCRIPT).result()
    assert result.provisioning_state == "Succeeded" and result.protected_settings is None
    client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", CUSTOM_SCRIPT).result()
    puts = [r for r in fast.writes() if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [201, 200]
    assert puts[0]["body"]["properties"]["protectedSettings"] == {"storageAccountKey": "***", "nested": {"token": "***"}}
    view = client.virtual_machine_extensions.get(RG, "vm-web-02", "cs", expand="instanceView").instance_view
    assert view.statuses[0].message == "Enable succeeded: \n[stdout]\nhi\n\n[stderr]\n"
    assert "s3cret" not in str(fast.requests()) and "s3cret" not in str(fast.state())


def test_put_response_and_transitioning_state(fast):
    # The handler is held running (an hour) so that the checks below never race its end.
    fast.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "outcome": "succeeded", "duration_s": 3600}}])
    status, headers, body = raw(fast, "PUT", vm_path(fast, "vm-web-02", "/extensions/cs"), CUSTOM_SCRIPT)
    assert status == 201 and body["properties"]["provisioningState"] == "Creating"
    assert "protectedSettings" not in body["properties"] and "Azure-AsyncOperation" in headers
    assert "/providers/Microsoft.Compute/locations/westeurope/operations/" in headers["Azure-AsyncOperation"]
    view = compute(fast).virtual_machines.instance_view(RG, "vm-web-02").extensions[0]
    assert view.statuses[0].code == "ProvisioningState/transitioning"
    status, dummy, body = raw(fast, "PUT", vm_path(fast, "vm-web-02", "/extensions/other"), MONITOR)
    assert status == 409 and body["error"]["code"] == "Conflict" and "vm-web-02" in body["error"]["message"]
    with pytest.raises(ResourceExistsError):
        compute(fast).virtual_machine_extensions.begin_delete(RG, "vm-web-02", "cs")


def test_failure_fault_reaches_the_sdk(fast):
    fast.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "outcome": "failed", "message": "Enable failed: boom",
                                "stderr": "no such file"}, "times": 1}])
    client = compute(fast)
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", CUSTOM_SCRIPT).result()
    assert "VMExtensionProvisioningError" in str(exc.value) and "Enable failed: boom" in str(exc.value)
    ext = client.virtual_machine_extensions.get(RG, "vm-web-02", "cs", expand="instanceView")
    assert ext.provisioning_state == "Failed"
    assert ext.instance_view.statuses[0].message == "Enable failed: boom\n[stdout]\n\n[stderr]\nno such file\n"
    # times: 1 -> a rerun (a new forceUpdateTag: the same definition alone does not rerun the handler) succeeds
    rerun = {**CUSTOM_SCRIPT, "properties": {**CUSTOM_SCRIPT["properties"], "forceUpdateTag": "2"}}
    client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", rerun).result()
    assert client.virtual_machine_extensions.get(RG, "vm-web-02", "cs").provisioning_state == "Succeeded"


def test_timeout_fault_stays_in_progress(fast):
    fast.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "outcome": "timeout"}}])
    client = compute(fast)
    poller = client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", CUSTOM_SCRIPT)
    time.sleep(0.5)
    assert not poller.done() and poller.status().lower() == "inprogress"
    assert client.virtual_machine_extensions.get(RG, "vm-web-02", "cs").provisioning_state == "Creating"
    fast.reset()


def test_failed_sibling_blocks_new_install(fast):
    client = compute(fast)
    with pytest.raises(HttpResponseError) as exc:
        client.virtual_machine_extensions.begin_create_or_update(RG, "vm-failed-ext", "second", MONITOR).result()
    assert "VMExtensionProvisioningError" in str(exc.value) and "'installApp'" in str(exc.value)
    assert "ech: not found" in str(exc.value)
    fixed = dict(CUSTOM_SCRIPT)
    assert client.virtual_machine_extensions.begin_create_or_update(
        RG, "vm-failed-ext", "installApp", fixed).result().provisioning_state == "Succeeded"


def test_agent_not_ready_fails(fast):
    with pytest.raises(HttpResponseError, match="VMAgentStatusCommunicationError"):
        compute(fast).virtual_machine_extensions.begin_create_or_update(
            RG, "vm-agent-down", "cs", CUSTOM_SCRIPT).result()


def test_delete_then_gone(fast):
    status, headers, body = raw(fast, "DELETE", vm_path(fast, "vm-web-01", "/extensions/customScript"))
    assert status == 202 and body is None and {"Azure-AsyncOperation", "Location"} <= set(headers)
    time.sleep(0.15)
    status, dummy, body = raw(fast, "GET", vm_path(fast, "vm-web-01", "/extensions/customScript"))
    assert status == 404 and body["error"]["code"] == "ResourceNotFound"
    status, dummy, dummy = raw(fast, "DELETE", vm_path(fast, "vm-web-01", "/extensions/customScript"))
    assert status == 204
    compute(fast).virtual_machine_extensions.begin_delete(RG, "vm-win-01", "BGInfo").result()
    assert compute(fast).virtual_machine_extensions.list(RG, "vm-win-01").value == []


def test_patch_and_list(fast):
    client = compute(fast)
    result = client.virtual_machine_extensions.begin_update(
        RG, "vm-web-01", "customScript", {"properties": {"settings": {"commandToExecute": "echo bye"}}}).result()
    assert result.settings == {"commandToExecute": "echo bye"} and result.type_handler_version == "2.1"
    (listed,) = client.virtual_machine_extensions.list(RG, "vm-web-01").value
    assert listed.publisher == "Microsoft.Azure.Extensions" and listed.provisioning_state == "Succeeded"


@pytest.mark.parametrize("properties,needle", [
    ({"publisher": "P", "type": "T", "typeHandlerVersion": "1.0", "bogus": 1}, "properties.bogus"),
    ({"publisher": "P", "type": "T", "typeHandlerVersion": "1.0", "settings": "x"}, "properties.settings"),
    ({"publisher": "P", "type": "T", "typeHandlerVersion": "1.0", "autoUpgradeMinorVersion": "yes"},
     "properties.autoUpgradeMinorVersion"),
    ({"publisher": "P", "type": "T", "typeHandlerVersion": 2.1}, "properties.typeHandlerVersion"),
    ({"publisher": "P", "type": "T"}, "properties.typeHandlerVersion"),
])
def test_bad_bodies(fast, properties, needle):
    status, dummy, body = raw(fast, "PUT", vm_path(fast, "vm-web-02", "/extensions/bad"),
                              {"location": LOCATION, "properties": properties})
    assert status == 400 and body["error"]["code"] in ("InvalidRequestContent", "BadRequest")
    assert needle in body["error"]["message"]
    status, dummy, body = raw(fast, "PUT", vm_path(fast, "vm-web-02", "/extensions/bad"), {"properties": properties})
    assert status == 400


def test_canonical_casing(fast):
    body = {"location": LOCATION, "properties": {"publisher": "microsoft.azure.extensions", "type": "customscript",
                                                 "typeHandlerVersion": "2.1"}}
    result = compute(fast).virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", body).result()
    assert (result.properties.publisher, result.properties.type) == ("Microsoft.Azure.Extensions", "CustomScript")
