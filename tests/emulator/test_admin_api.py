"""The admin API: reset, the request log, match faults with times, settings, throttling."""
import time

import pytest
from azure.core.exceptions import HttpResponseError

from emulator_clients import RG, compute, raw, vm_path


def test_request_log_and_reset(emulator):
    compute(emulator).virtual_machines.get(RG, "vm-web-01")
    entries = emulator.arm_requests()
    (entry,) = entries
    assert entry["method"] == "GET" and entry["status"] == 200 and entry["query"]["api-version"]
    assert entry["client_request_id"] and "azsdk-python" in entry["user_agent"]
    assert entry["duration_ms"] >= 0 and entry["time"] <= time.time()
    assert not emulator.writes()
    emulator.reset()
    assert emulator.requests() == []


def test_match_fault_times(emulator):
    emulator.faults([{"match": {"method": "GET", "path": "virtualMachines/vm-web-01$"},
                      "respond": {"status": 503, "body": {"error": {"code": "ServiceUnavailable", "message": "x"}},
                                  "headers": {"Retry-After": "0"}}, "times": 2}])
    assert compute(emulator).virtual_machines.get(RG, "vm-web-01").name == "vm-web-01"  # retried by azure-core
    assert [r["status"] for r in emulator.arm_requests()] == [503, 503, 200]


def test_match_fault_until_reset(emulator):
    emulator.faults([{"match": {"path": "/extensions/"}, "respond": {"status": 400, "body": {
        "error": {"code": "Custom", "message": "injected"}}}}])
    with pytest.raises(HttpResponseError, match="injected"):
        compute(emulator).virtual_machine_extensions.get(RG, "vm-web-01", "customScript")
    with pytest.raises(HttpResponseError, match="injected"):
        compute(emulator).virtual_machine_extensions.get(RG, "vm-web-01", "customScript")
    emulator.reset()
    compute(emulator).virtual_machine_extensions.get(RG, "vm-web-01", "customScript")


def test_settings_validation(emulator):
    assert emulator.settings(page_size=3)["page_size"] == 3
    with pytest.raises(Exception, match="unknown setting"):
        emulator.settings(nope=1)


def test_throttling_window_model(emulator):
    # Setting `throttle` alone selects the earlier fixed-window model (tools written for it keep working).
    assert emulator.settings(throttle={"reads": 3, "window_s": 2})["throttle_model"] == "window"
    # The simulated clock nearly stopped: the 2 s window cannot pass while the counts are checked.
    emulator.settings(time_scale=1e-6)
    path = vm_path(emulator, "vm-web-01")
    remaining = [raw(emulator, "GET", path)[1]["x-ms-ratelimit-remaining-subscription-reads"] for dummy in range(3)]
    assert remaining == ["2", "1", "0"]
    status, headers, body = raw(emulator, "GET", path)
    assert status == 429 and body["error"]["code"] == "SubscriptionRequestsThrottled" and int(headers["Retry-After"]) >= 1
    status, headers, dummy = raw(emulator, "PUT", path + "/extensions/x", {})  # writes have their own budget
    assert status == 400 and headers["x-ms-ratelimit-remaining-subscription-writes"] == "1199"
    (refused,) = [r for r in emulator.arm_requests() if r["status"] == 429]
    assert refused["throttled_by"] == "window/reads" and isinstance(refused["retry_after"], int)
    assert refused["retry_after"] >= 1
    # At time_scale 1 the SDK honours Retry-After (at most the 2 s window) and gets through once the window frees.
    seen = len(emulator.arm_requests())
    emulator.settings(time_scale=1)
    assert compute(emulator).virtual_machines.get(RG, "vm-web-01").name == "vm-web-01"
    entries = emulator.arm_requests()[seen:]
    assert entries[-1]["status"] == 200
    assert all(r["throttled_by"] == "window/reads" and 1 <= r["retry_after"] <= 2 for r in entries
               if r["status"] == 429)


def test_write_budget_headers(emulator):
    status, headers, dummy = raw(emulator, "DELETE", vm_path(emulator, "vm-web-02", "/extensions/none"))
    assert status == 204 and headers["x-ms-ratelimit-remaining-subscription-deletes"] == "199"
    assert headers["x-ms-ratelimit-remaining-resource"] == (
        "Microsoft.Compute/UpdateVMSubscriptionMaximum;1499,Microsoft.Compute/UpdateVMResource;11")


def test_injected_429_is_logged_as_a_fault(emulator):
    emulator.faults([{"match": {"method": "GET", "path": "virtualMachines/vm-web-01$"},
                      "respond": {"status": 429, "headers": {"Retry-After": "0"}}, "times": 1}])
    assert raw(emulator, "GET", vm_path(emulator, "vm-web-01"))[0] == 429
    (entry,) = emulator.arm_requests()
    assert entry["throttled_by"] == "fault" and entry["retry_after"] == 0


def test_vm_power_and_agent_state_change_outside_arm(emulator):
    client = compute(emulator)

    def view():
        instance = client.virtual_machines.instance_view(RG, "vm-web-01")
        return ([s.code for s in instance.statuses if s.code.startswith("PowerState/")],
                instance.vm_agent.statuses[0].display_status)

    assert view() == (["PowerState/running"], "Ready")
    assert emulator.set_vm(RG, "vm-web-01", agent_status="NotReady")["agent_status"] == "NotReady"
    assert view() == (["PowerState/running"], "Not Ready")
    emulator.set_vm(RG, "vm-web-01", power_state="deallocated", agent_status="Ready")
    assert view() == (["PowerState/deallocated"], "Ready")
    for bad, message in (({"power_state": "off"}, "power_state must be one of running, stopped, deallocated"),
                         ({"agent_status": "ready"}, "agent_status must be one of Ready, NotReady")):
        with pytest.raises(Exception, match=message):
            emulator.set_vm(RG, "vm-web-01", **bad)
    with pytest.raises(Exception, match="no VM 'vm-nope'"):
        emulator.set_vm(RG, "vm-nope", power_state="running")
    assert not emulator.writes()  # an admin call is not an ARM request
    emulator.reset()
    assert view() == (["PowerState/running"], "Ready")
