"""A VM extension handler that never finishes: ARM gives up at Azure's handler timeout (20 minutes, 90 for
CustomScript, Chef and DSC; seeds 000 and 002, "marked as timed out"). The operation then fails with
VMExtensionProvisioningTimeout and the extension's provisioningState is Failed, while the guest agent still
reports the handler transitioning. Simulated time is moved with POST /_emulator/clock, so nothing races a timer."""
import pytest
from azure.core.exceptions import HttpResponseError

from emulator_clients import LOCATION, RG, compute

CUSTOM_SCRIPT = {"location": LOCATION, "properties": {
    "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
    "settings": {"commandToExecute": "sleep 10000"}}}
MONITOR = {"location": LOCATION, "properties": {
    "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent", "typeHandlerVersion": "1.0"}}


def advance(emu, seconds):
    emu._call("POST", "clock", {"advance_s": seconds})  # pylint: disable=protected-access


def handler_code(ext):
    return ext.instance_view.statuses[0].code


@pytest.mark.parametrize("name, body, timeout_s", [("cs", CUSTOM_SCRIPT, 90 * 60), ("monitor", MONITOR, 20 * 60)])
def test_handler_that_never_finishes_is_failed_by_arm_at_the_handler_timeout(emulator, name, body, timeout_s):
    emulator.faults([{"extension": {"vm": "vm-web-02", "name": name, "outcome": "timeout"}, "times": 1}])
    client = compute(emulator)
    poller = client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", name, body)

    advance(emulator, timeout_s - 60)  # a minute before the timeout: still running, the VM still busy
    ext = client.virtual_machine_extensions.get(RG, "vm-web-02", name, expand="instanceView")
    assert (ext.provisioning_state, handler_code(ext)) == ("Creating", "ProvisioningState/transitioning")
    assert not poller.done()

    advance(emulator, 120)
    with pytest.raises(HttpResponseError) as failure:
        poller.result(timeout=60)  # a bound, so that an operation that never ends fails the test instead of hanging
    assert "VMExtensionProvisioningTimeout" in str(failure.value)
    assert f"Provisioning of VM extension {name} has timed out." in str(failure.value)
    ext = client.virtual_machine_extensions.get(RG, "vm-web-02", name, expand="instanceView")
    # ARM's state and the handler's own report now disagree: Failed, yet still transitioning.
    assert (ext.provisioning_state, handler_code(ext)) == ("Failed", "ProvisioningState/transitioning")
    listed = [vm for vm in client.virtual_machines.list_all() if vm.name == "vm-web-02"][0]
    assert [(e.name, e.provisioning_state) for e in listed.resources] == [(name, "Failed")]

    # ARM no longer holds the VM: the extension can be deleted and reapplied (the rerun that repairs it).
    client.virtual_machine_extensions.begin_delete(RG, "vm-web-02", name).result()
    again = client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", name, body).result()
    assert again.provisioning_state == "Succeeded"


def test_identical_write_over_a_timed_out_handler_ends_with_the_timeout(emulator):
    emulator.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "outcome": "timeout"}, "times": 1}])
    client = compute(emulator)
    client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", CUSTOM_SCRIPT, polling=False)
    advance(emulator, 90 * 60 + 60)
    with pytest.raises(HttpResponseError, match="VMExtensionProvisioningTimeout"):
        client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", CUSTOM_SCRIPT).result(
            timeout=60)
