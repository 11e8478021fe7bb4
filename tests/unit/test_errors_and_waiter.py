"""The one error path (AzureOperationError, azure_error, not_found_error, the module wrapper) and the one waiter."""
import json
import subprocess
import sys

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import RequestsTransportResponse
from azure.core.rest import HttpRequest

from ansible_collections.azure_vm.extensions.plugins.module_utils import errors as ac
from ansible_collections.azure_vm.extensions.plugins.module_utils import waiter as wt


def make_error(status, code, message, headers=None):
    import requests

    raw = requests.Response()
    raw.status_code = status
    raw._content = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw.headers.update(headers or {})
    raw.headers["Content-Type"] = "application/json"
    return HttpResponseError(response=RequestsTransportResponse(HttpRequest("PUT", "https://x/y"), raw))


def test_sdk_error_becomes_one_exception_with_code_status_and_ids():
    exc = make_error(409, "Conflict", "another operation is in progress",
                     {"x-ms-request-id": "req-1", "x-ms-correlation-request-id": "corr-2"})
    err = ac.azure_error(exc, "writing", "/subscriptions/s/x", changed=False)
    assert isinstance(err, ac.AzureOperationError)
    assert err.msg == ("writing /subscriptions/s/x failed: Conflict: another operation is in progress "
                       "(HTTP 409, x-ms-request-id: req-1, x-ms-correlation-request-id: corr-2)")
    assert err.fields() == {"changed": False, "error_code": "Conflict", "status_code": 409, "request_id": "req-1",
                            "correlation_id": "corr-2"}


def test_arm_errors_context_converts_and_keeps_the_cause():
    with pytest.raises(ac.AzureOperationError) as info:
        with ac.arm_errors("reading", "/x"):
            raise make_error(500, "InternalServerError", "boom")
    assert info.value.error_code == "InternalServerError" and isinstance(info.value.__context__, HttpResponseError)


def test_auth_error_is_the_same_exception_type():
    assert issubclass(ac.AzureAuthError, ac.AzureOperationError)


@pytest.mark.parametrize("code, message, expected", [
    ("SubscriptionNotFound", "The subscription 'sub' could not be found.", "subscription sub not found"),
    ("ResourceGroupNotFound", "Resource group 'rg-x' could not be found.",
     "resource group 'rg-x' not found in subscription sub"),
    ("ParentResourceNotFound", "parent missing", "virtual machine 'vm-1' not found in resource group 'rg-x'"),
    ("ResourceNotFound", "The Resource 'Microsoft.Compute/virtualMachines/vm-1' was not found",
     "extension 'cse' not found on virtual machine 'vm-1' in resource group 'rg-x'"),
])
def test_not_found_names_the_missing_level_with_arms_code(code, message, expected):
    err = ac.not_found_error(make_error(404, code, message), "sub", "rg-x", resource=("extension", "cse"),
                             parent=("vm", "vm-1"))
    assert err.msg.startswith(expected) and "(%s: %s)" % (code, message) in err.msg
    assert err.error_code == code and err.status_code == 404


def test_not_found_for_a_scale_set():
    err = ac.not_found_error(make_error(404, "ResourceNotFound", "gone"), "sub", "rg", resource=("vmss", "ss"))
    assert err.msg == "virtual machine scale set 'ss' not found in resource group 'rg' (ResourceNotFound: gone)"


class FakeClock(object):
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_waiter_backs_off_up_to_the_cap_and_never_past_the_deadline():
    clock = FakeClock()
    deadline = wt.Deadline(10, clock=clock)
    lines = []
    waiter = wt.Waiter(deadline, 1, backoff=2, max_interval=3, progress=lines.append, sleep=clock.sleep)
    with pytest.raises(wt.WaitTimeout) as info:
        waiter.until(lambda: "transitioning", lambda v: False, "handler", describe=lambda v: v)
    assert clock.sleeps == [1, 2, 3, 3, 1]  # 1 + 2 + 3 + 3 = 9, then the last second left
    assert "timed out after 10s waiting for handler; last state: transitioning" == info.value.msg
    assert info.value.last == "transitioning"
    assert lines == ["waiting for handler: transitioning (0s)"]  # reported when the state changes, not every poll


def test_waiter_done_predicate():
    clock = FakeClock()
    values = iter(["a", "b", "ok"])
    waiter = wt.Waiter(wt.Deadline(100, clock=clock), 1, sleep=clock.sleep)
    assert waiter.until(lambda: next(values), lambda v: v == "ok", "x") == "ok"
    assert clock.sleeps == [1, 1]


def test_retry_only_another_operation_in_progress():
    calls = []

    def begin():
        calls.append(1)
        if len(calls) < 3:
            raise make_error(409, "Conflict", "Operation 'x' is not allowed since another operation is in progress")
        return "poller"

    assert wt.submit_with_retry(begin, wt.Deadline(30), 0.01, "writing", "/x") == "poller" and len(calls) == 3


def test_a_stopped_vm_409_is_not_retried():
    # ARM's answer for a VM that is not running: OperationNotAllowed, which no retry fixes.
    calls = []

    def begin():
        calls.append(1)
        raise make_error(409, "OperationNotAllowed", "Cannot modify extensions in the VM when the VM is not running.")

    with pytest.raises(ac.AzureOperationError) as info:
        wt.submit_with_retry(begin, wt.Deadline(30), 0.01, "writing", "/x")
    assert len(calls) == 1 and info.value.error_code == "OperationNotAllowed"


def test_operation_not_allowed_saying_another_operation_is_retried():
    exc = make_error(409, "OperationNotAllowed", "Operation 'PutVMExtension' is not allowed since another "
                     "operation is in progress on the VM.")
    assert wt.is_operation_in_progress(exc)
    assert not wt.is_operation_in_progress(make_error(404, "NotFound", "x"))


def test_retry_gives_up_at_the_deadline_with_arms_error():
    clock = FakeClock()

    def begin():
        raise make_error(409, "Conflict", "another operation is in progress")

    deadline = wt.Deadline(0.05)
    with pytest.raises(ac.AzureOperationError) as info:
        wt.submit_with_retry(begin, deadline, 0.02, "writing", "/x")
    assert info.value.error_code == "Conflict" and not isinstance(info.value, wt.WaitTimeout)
    del clock


WRAPPER_MODULE = r'''
import json, sys
sys.path.insert(0, %(path)r)
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError
from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule
def work(azure):
    def inner():
        raise AzureOperationError("extension x on VM y failed: boom", error_code="VMExtensionProvisioningError",
                                  request_id="r-1", extension={"name": "x"})
    inner()
AzureModule(argument_spec={}).run(work)
'''


def test_module_wrapper_turns_the_exception_into_fail_json_with_traceback(tmp_path):
    from harness import collections_path

    script = tmp_path / "mod.py"
    script.write_text(WRAPPER_MODULE % {"path": collections_path()})
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_verbosity": 3}}))
    proc = subprocess.run([sys.executable, str(script), str(args)], capture_output=True, text=True, check=False)
    out = json.loads(proc.stdout)
    assert out["failed"] is True and out["msg"] == "extension x on VM y failed: boom"
    assert out["error_code"] == "VMExtensionProvisioningError" and out["request_id"] == "r-1"
    assert out["extension"] == {"name": "x"}
    assert "Traceback" in out["traceback"] and "in inner" in out["traceback"]


# ---- arm.read_or_absent: the one GET that may find nothing ---------------------------------------------------
def test_read_or_absent_404_is_none_or_the_named_error_and_others_raise():
    from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import read_or_absent

    def fails(status, code):
        def fetch():
            raise make_error(status, code, "nope")
        return fetch

    assert read_or_absent(lambda: {"name": "x"}, "/x") == {"name": "x"}
    assert read_or_absent(fails(404, "ResourceNotFound"), "/x") is None
    with pytest.raises(ac.AzureOperationError) as info:
        read_or_absent(fails(404, "ResourceGroupNotFound"), "/x", missing=lambda exc: ac.not_found_error(
            exc, "sub", "rg-x", resource=("vm", "vm-1")))
    assert info.value.msg.startswith("resource group 'rg-x' not found in subscription sub")
    with pytest.raises(ac.AzureOperationError) as info:
        read_or_absent(fails(403, "AuthorizationFailed"), "/x")
    assert info.value.msg.startswith("reading /x failed: AuthorizationFailed: nope (HTTP 403")


# ---- waiter.wait_for_poller: the SDK's own poller, bounded by the task's deadline ---------------------------------
class FakePoller(object):
    """What wait_for_poller uses of azure-core's LROPoller: wait(timeout), done(), result()."""

    def __init__(self, finishes_after, error=None):
        self.finishes_after = finishes_after
        self.error = error
        self.waited = []

    def wait(self, timeout=None):
        self.waited.append(timeout)
        if self.error is not None and self.done():
            raise self.error

    def done(self):
        return sum(t for t in self.waited if t is not None) >= self.finishes_after or None in self.waited

    def result(self):
        if self.error is not None:
            raise self.error
        return "resource"


def test_wait_for_poller_waits_once_with_the_time_left_and_returns_the_result():
    poller = FakePoller(finishes_after=5)
    assert wt.wait_for_poller(poller, wt.Deadline(30), "the write", "writing", "/x") == "resource"
    assert len(poller.waited) == 1 and 29 < poller.waited[0] <= 30  # one wait: the SDK polls, not us


def test_wait_for_poller_times_out_at_the_deadline_and_reports_a_failed_operation():
    with pytest.raises(wt.WaitTimeout, match="timed out after 1s waiting for the write"):
        wt.wait_for_poller(FakePoller(finishes_after=60), wt.Deadline(1), "the write", "writing", "/x")
    failed = FakePoller(finishes_after=0, error=make_error(400, "VMExtensionProvisioningError", "handler failed"))
    with pytest.raises(ac.AzureOperationError) as info:
        wt.wait_for_poller(failed, wt.Deadline(30), "the write", "writing", "/x", changed=True)
    assert info.value.error_code == "VMExtensionProvisioningError" and info.value.result == {"changed": True}
