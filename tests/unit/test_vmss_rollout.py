"""Unit tests of the scale-set rollout: batches, health limits, instance statuses, with a fake Azure backend."""
import sys

import pytest

from harness import collections_path

sys.path.insert(0, collections_path())

from ansible_collections.azure_vm.extensions.plugins.module_utils import vmss_rollout as ro  # noqa: E402

OK = [{"code": "ProvisioningState/succeeded", "message": "Enable succeeded"}]
BAD = [{"code": "ProvisioningState/failed/1", "message": "Enable failed: boom"}]
BUSY = [{"code": "ProvisioningState/transitioning", "message": "Enable in progress"}]


def vm(instance_id, statuses=None, latest=True, ext="cs", agent="Ready", others=None):
    extensions = [] if statuses is None else [{"name": ext, "statuses": statuses}]
    extensions += others or []
    view = {"vmAgent": {"statuses": [{"displayStatus": agent, "message": "agent"}]}, "extensions": extensions}
    return {"instanceId": str(instance_id), "properties": {"latestModelApplied": latest, "instanceView": view}}


class FakeScaleSet(ro.RolloutBackend):
    """Instances whose handler outcome is fixed in advance; a manual upgrade makes it appear after `polls` reads."""

    def __init__(self, count, failing=(), polls=1, error_for=None):
        self.count, self.failing, self.polls, self.error_for = count, set(failing), polls, error_for
        self.upgraded = {}  # id -> reads since upgrade
        self.calls = []
        self.clock = 0.0

    def instances(self):
        found = []
        for index in range(self.count):
            key = str(index)
            if key not in self.upgraded:
                found.append(vm(key, None, latest=False))
                continue
            self.upgraded[key] += 1
            if self.upgraded[key] <= self.polls:
                found.append(vm(key, BUSY))
            else:
                found.append(vm(key, BAD if key in self.failing else OK))
        return found

    def manual_upgrade(self, ids, timeout):
        self.calls.append(list(ids))
        for key in ids:
            self.upgraded[key] = 0
        if self.error_for and self.error_for in ids:
            return "BadRequest: nope"
        return "VMExtensionProvisioningError" if self.failing & set(ids) else None

    def now(self):
        return self.clock

    def sleep(self, seconds):
        self.clock += seconds


@pytest.mark.parametrize("total,percent,size", [(5, 20, 1), (10, 20, 2), (11, 20, 3), (3, 20, 1), (1, 20, 1),
                                                (100, 20, 20), (7, 100, 7), (4, 1, 1)])
def test_batch_size_is_at_most_percent_rounded_up_and_at_least_one(total, percent, size):
    assert ro.batch_size(total, percent) == size


def test_plan_batches_in_numeric_order():
    assert ro.plan_batches(["10", "2", "1", "0"], 4, 50) == [["0", "1"], ["2", "10"]]
    assert ro.plan_batches([], 5, 20) == []


@pytest.mark.parametrize("failed,upgraded,limit,expected", [(1, 5, 20, False), (1, 3, 20, True), (0, 0, 20, False),
                                                            (1, 1, 20, True), (1, 2, 50, False), (2, 3, 50, True),
                                                            (1, 10, 0, True)])
def test_too_unhealthy_is_strictly_more_than_the_limit(failed, upgraded, limit, expected):
    assert ro.too_unhealthy(failed, upgraded, limit) is expected


def test_instance_status_states_and_messages():
    assert ro.instance_status(vm(0, OK), "CS") == {"instance_id": "0", "latest_model_applied": True,
                                                   "state": "succeeded",
                                                   "message": "[ProvisioningState/succeeded] Enable succeeded"}
    assert ro.instance_status(vm(1, None, latest=False), "cs")["state"] == "absent"
    assert ro.instance_status(vm(2, BAD), "cs")["message"].endswith("Enable failed: boom")
    assert ro.instance_status(vm(3, BUSY), "cs")["state"] == "transitioning"


def test_unhealthy_instances_ignore_our_own_extension():
    other_failed = [{"name": "other", "statuses": BAD}]
    found = ro.unhealthy_instances([vm(0, BAD), vm(1, OK, others=other_failed), vm(2, OK, agent="Not Ready")], "cs")
    assert [item["instance_id"] for item in found] == ["1", "2"]
    assert "extension other failed" in found[0]["message"] and "VM agent Not Ready" in found[1]["message"]


def test_summarize_counts_failures_and_stale_instances():
    summary = ro.summarize(ro.instance_statuses([vm(0, OK), vm(1, BAD), vm(2, None, latest=False)], "cs"))
    assert summary["counts"] == {"succeeded": 1, "failed": 1, "absent": 1}
    assert summary["failed"][0]["instance_id"] == "1" and summary["not_latest_model"] == ["2"]


def test_manual_rollout_all_good_waits_for_each_batch():
    backend = FakeScaleSet(5, polls=2)
    summary, statuses = ro.manual_rollout(backend, "cs", "ss", ["0", "1", "2", "3", "4"], 5, interval=1)
    assert backend.calls == [["0"], ["1"], ["2"], ["3"], ["4"]]
    assert summary["succeeded"] == ["0", "1", "2", "3", "4"] and not summary["stopped"]
    assert backend.clock == 10  # two polls of one second per batch: each batch was waited on
    assert {s["state"] for s in statuses} == {"succeeded"}


def test_manual_rollout_stops_when_too_many_upgraded_instances_fail():
    backend = FakeScaleSet(5, failing=["2"])
    summary, _statuses = ro.manual_rollout(backend, "cs", "ss", ["0", "1", "2", "3", "4"], 5, interval=1)
    assert backend.calls == [["0"], ["1"], ["2"]]
    assert summary["stopped"] and summary["pending"] == ["3", "4"]
    assert summary["failed"] == [{"instance_id": "2", "message": "[ProvisioningState/failed/1] Enable failed: boom"}]
    assert "1 of 3 upgraded instances are unhealthy (33%" in summary["reason"]
    assert "2: [ProvisioningState/failed/1] Enable failed: boom" in summary["reason"]


def test_manual_rollout_continues_within_the_limit():
    backend = FakeScaleSet(10, failing=["9"])
    summary, _statuses = ro.manual_rollout(backend, "cs", "ss", [str(i) for i in range(10)], 10, interval=1)
    assert len(backend.calls) == 5 and not summary["stopped"]
    assert [f["instance_id"] for f in summary["failed"]] == ["9"]


def test_manual_rollout_stops_on_an_operation_error_without_handler_failure():
    backend = FakeScaleSet(5, error_for="1")
    summary, _statuses = ro.manual_rollout(backend, "cs", "ss", ["0", "1", "2", "3", "4"], 5, interval=1)
    assert backend.calls == [["0"], ["1"]] and summary["stopped"]
    assert "BadRequest: nope" in summary["reason"] and summary["pending"] == ["2", "3", "4"]


def test_manual_rollout_times_out():
    backend = FakeScaleSet(3, polls=100)
    summary, _statuses = ro.manual_rollout(backend, "cs", "ss", ["0", "1", "2"], 3, timeout=5, interval=1)
    assert backend.calls == [["0"]] and summary["stopped"]
    assert "did not finish before the task's timeout (5s)" in summary["reason"]
    assert summary["pending"] == ["0", "1", "2"]


def test_timeout_is_the_whole_rollout_not_each_batch():
    # Each batch settles after 3 polls of 1 s; 3 batches need about 9 s. With timeout=5 the old per-batch timeout
    # let all of them through; the whole-task deadline stops in the second batch and sends no third one.
    backend = FakeScaleSet(3, polls=3)
    summary, _statuses = ro.manual_rollout(backend, "cs", "ss", ["0", "1", "2"], 3, timeout=5, interval=1)
    assert backend.calls == [["0"], ["1"]] and summary["stopped"] and summary["pending"] == ["1", "2"]
    assert backend.clock <= 5


def test_manual_rollout_of_a_removal_waits_until_the_extension_is_gone():
    class Removal(FakeScaleSet):
        def instances(self):
            return [vm(i, OK if str(i) not in self.upgraded else None) for i in range(self.count)]

    backend = Removal(2)
    summary, _statuses = ro.manual_rollout(backend, "cs", "ss", ["0", "1"], 2, batch_percent=50, present=False,
                                           interval=1)
    assert summary["succeeded"] == ["0", "1"] and not summary["stopped"]


def test_platform_rollout_needs_latest_model():
    class Stale(FakeScaleSet):
        def instances(self):
            return [vm(0, OK, latest=self.clock >= 3), vm(1, OK)]

    backend = Stale(2)
    summary, _statuses = ro.platform_rollout(backend, "cs", "ss", "Automatic", ["0", "1"], 2, interval=1)
    assert backend.clock == 3 and summary["succeeded"] == ["0", "1"] and summary["batches"] == []
    backend = Stale(2)
    summary, _statuses = ro.platform_rollout(backend, "cs", "ss", "Automatic", ["0", "1"], 2, timeout=2, interval=1)
    assert summary["stopped"] and summary["pending"] == ["0"]


def powered(instance_id, power):
    instance = vm(instance_id, OK)
    instance["properties"]["instanceView"]["statuses"] = [{"code": "ProvisioningState/succeeded"},
                                                          {"code": "PowerState/%s" % power}]
    return instance


def test_not_running_instances_are_named_with_their_power_state():
    instances = [powered(0, "running"), powered(1, "deallocated"), powered(2, "stopped"), vm(3, OK)]
    assert ro.not_running_instances(instances) == [{"instance_id": "1", "power_state": "deallocated"},
                                                   {"instance_id": "2", "power_state": "stopped"}]
    assert ro.not_running_instances(instances, ["0", "2"]) == [{"instance_id": "2", "power_state": "stopped"}]


def test_scale_set_with_a_deallocated_target_fails_before_any_write():
    from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError
    from ansible_collections.azure_vm.extensions.plugins.module_utils.vmss_extension_state import VmssExtension

    run = VmssExtension.__new__(VmssExtension)
    run.max_unhealthy_percent = 20
    run.name, run.vmss_name = "cs", "ss"
    instances = [powered(0, "running"), powered(1, "deallocated")]
    with pytest.raises(AzureOperationError) as info:
        run.check_health(instances, "Manual", ["0", "1"])
    assert "instance(s) 1 (PowerState/deallocated) of scale set ss are not running" in info.value.msg
    assert info.value.error_code == "VMNotRunning"
    run.check_health(instances, "Manual", ["0"])  # leaving it out with upgrade_instances is fine
