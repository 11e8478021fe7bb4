# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rolling a scale-set extension change out to the instances, the way Azure's automatic extension upgrade
orchestrator does (learn.microsoft.com, "Automatic extension upgrade for VMs and scale sets", "How does it work").

Batches of at most a given percentage of the instances (rounded up, at least one), each batch waited on until
every instance in it reports the extension in a terminal state, and a stop as soon as the share of unhealthy
upgraded instances exceeds a limit. Works on ARM's REST shape (the SDK models' ``as_dict()``) through a small
backend object, so it needs no SDK import and is unit-testable with a fake backend.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import matches_definition
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import (
    handler_state,
    named,
    status_messages,
    vm_agent_result,
    vm_states,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Deadline, WaitTimeout, Waiter

DEFAULT_BATCH_PERCENT = 20
DEFAULT_MAX_UNHEALTHY_PERCENT = 20
# The extension is not on the instance (not rolled out yet, or removed).
ABSENT = "absent"


# ---- instances ---------------------------------------------------------------------------------------------------
def instance_sort_key(instance_id):
    """Numeric instance ids in numeric order ('2' before '10'), anything else after them."""
    text = str(instance_id)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def sort_ids(ids):
    return sorted((str(i) for i in ids), key=instance_sort_key)


def instance_extension_view(instance, ext_name):
    """The named extension's view from a scale-set instance (REST shape), or None; names are case-insensitive."""
    view = ((instance.get("properties") or {}).get("instanceView") or {})
    return named(view.get("extensions"), ext_name)


def flexible_instance(vm, ext_name, model):
    """A Flexible scale set's VM (REST, read with $expand=instanceView) in the shape of a Uniform instance, so that
    everything here works on "instances" whichever mode provides them: instanceId is the VM name (what manualupgrade
    takes on Flexible), the instance view is the VM's, and latestModelApplied - which a Flexible VM does not have -
    says whether its extension ext_name carries the model's definition (model: the scale set's extension, REST, or
    None when the model has none)."""
    props = vm.get("properties") or {}
    return {"instanceId": vm.get("name"), "name": vm.get("name"), "id": vm.get("id"),
            "properties": {"instanceView": props.get("instanceView"),
                           "latestModelApplied": matches_definition(model, named(vm.get("resources"), ext_name))}}


def instance_status(instance, ext_name):
    """{instance_id, latest_model_applied, state, message} for one instance and one extension."""
    props = instance.get("properties") or {}
    view = instance_extension_view(instance, ext_name)
    return {
        "instance_id": str(instance.get("instanceId")),
        "latest_model_applied": bool(props.get("latestModelApplied")),
        "state": handler_state(view.get("statuses")) if view is not None else ABSENT,
        "message": status_messages(view) if view is not None else "",
    }


def instance_statuses(instances, ext_name):
    return sorted((instance_status(instance, ext_name) for instance in instances),
                  key=lambda status: instance_sort_key(status["instance_id"]))


def unhealthy_instances(instances, ext_name):
    """Instances already unhealthy for a reason other than this extension: agent not Ready, another extension failed.

    Returns [{instance_id, message}]. This is what the orchestrator checks before an upgrade starts.
    """
    found = []
    for instance in instances:
        view = (instance.get("properties") or {}).get("instanceView") or {}
        reasons = []
        if view.get("vmAgent") is not None:
            agent = vm_agent_result(view)
            if not agent["ready"]:
                reasons.append("VM agent %s: %s" % (agent["status"], agent["message"] or ""))
        for ext in view.get("extensions") or []:
            if (ext.get("name") or "").lower() != ext_name.lower() and handler_state(ext.get("statuses")) == "failed":
                reasons.append("extension %s failed: %s" % (ext.get("name"), status_messages(ext)))
        if reasons:
            found.append({"instance_id": str(instance.get("instanceId")), "message": "; ".join(reasons)})
    return sorted(found, key=lambda item: instance_sort_key(item["instance_id"]))


def not_running_instances(instances, ids=None):
    """Instances (among ids) that are stopped or deallocated: Azure runs no extension handler there.
    Returns [{instance_id, power_state}]."""
    wanted = None if ids is None else set(str(i) for i in ids)
    found = []
    for instance in instances:
        instance_id = str(instance.get("instanceId"))
        if wanted is not None and instance_id not in wanted:
            continue
        power, dummy = vm_states((instance.get("properties") or {}).get("instanceView"))
        if power in ("stopped", "stopping", "deallocated", "deallocating"):
            found.append({"instance_id": instance_id, "power_state": power})
    return sorted(found, key=lambda item: instance_sort_key(item["instance_id"]))


def summarize(statuses):
    """Counts by state, failing instances with their messages, instances not on the latest model (info module)."""
    counts = {}
    for status in statuses:
        counts[status["state"]] = counts.get(status["state"], 0) + 1
    return {
        "total": len(statuses),
        "counts": counts,
        "failed": [{"instance_id": s["instance_id"], "message": s["message"]} for s in statuses if s["state"] == "failed"],
        "not_latest_model": [s["instance_id"] for s in statuses if not s["latest_model_applied"]],
    }


# ---- batches -----------------------------------------------------------------------------------------------------
def batch_size(total, percent):
    """At most `percent` of `total` instances, rounded up, at least one."""
    return max(1, int(math.ceil(total * percent / 100.0)))


def plan_batches(ids, total, percent):
    """Split instance ids (numeric order) into batches of batch_size(total, percent)."""
    ids = sort_ids(ids)
    size = batch_size(total, percent)
    return [ids[index:index + size] for index in range(0, len(ids), size)]


def too_unhealthy(failed, upgraded, max_unhealthy_percent):
    """True when more than max_unhealthy_percent of the upgraded instances are unhealthy (the orchestrator stops
    the upgrade then)."""
    return upgraded > 0 and failed * 100.0 > max_unhealthy_percent * upgraded


def settled(status, present, require_latest_model):
    """Whether one instance has finished: the handler ended (present) or the extension is gone (absent)."""
    if require_latest_model and not status["latest_model_applied"]:
        return False
    if present:
        return status["state"] in ("succeeded", "failed")
    return status["state"] == ABSENT


# ---- the rollout -------------------------------------------------------------------------------------------------
class RolloutBackend(object):
    """What a rollout needs from Azure. The module passes one built on the SDK; unit tests pass a fake.

    instances(): the scale set's instances with their instance views (REST dicts).
    manual_upgrade(ids, deadline): upgrade these instances to the latest model and wait, at most until the deadline;
    return None, or the error text of a failed operation (a handler failure ends the operation with an error too).
    now(), sleep(seconds): the clock.
    """

    def instances(self):
        raise NotImplementedError

    def manual_upgrade(self, ids, timeout):
        raise NotImplementedError

    def now(self):
        raise NotImplementedError

    def sleep(self, seconds):
        raise NotImplementedError


def new_summary(policy, total):
    return {"policy": policy, "instances_total": total, "batches": [], "upgraded": [], "succeeded": [], "failed": [],
            "pending": [], "stopped": False, "reason": None}


def wait_for_instances(backend, ext_name, ids, present, require_latest_model, deadline, interval, progress=None):
    """Poll the instance views (through the waiter) until every instance in ids has settled or the deadline;
    return (statuses, in_time)."""
    wanted = set(str(i) for i in ids)
    state = {}

    def fetch():
        state["statuses"] = instance_statuses(backend.instances(), ext_name)
        return [s for s in state["statuses"] if s["instance_id"] in wanted]

    def describe(mine):
        waiting = [s["instance_id"] for s in mine if not settled(s, present, require_latest_model)]
        suffix = "; waiting for %s" % ", ".join(waiting) if waiting else ""
        return "%d of %d instance(s) settled%s" % (len(mine) - len(waiting), len(mine), suffix)

    waiter = Waiter(deadline, interval, progress=progress, sleep=backend.sleep)
    try:
        waiter.until(fetch, lambda mine: all(settled(s, present, require_latest_model) for s in mine),
                     "extension %s on instances %s" % (ext_name, ", ".join(sort_ids(wanted))), describe=describe)
    except WaitTimeout:
        return state["statuses"], False
    return state["statuses"], True


def _record(summary, batch_statuses, present):
    for status in batch_statuses:
        summary["upgraded"].append(status["instance_id"])
        if status["state"] == "failed":
            summary["failed"].append({"instance_id": status["instance_id"], "message": status["message"]})
        elif (present and status["state"] == "succeeded") or (not present and status["state"] == ABSENT):
            summary["succeeded"].append(status["instance_id"])


def _describe(ext_name, vmss_name, summary, why):
    text = "rollout of extension %s on scale set %s stopped: %s" % (ext_name, vmss_name, why)
    if summary["failed"]:
        text += ". Failed instances: " + "; ".join(
            "%s: %s" % (item["instance_id"], item["message"] or "no message") for item in summary["failed"])
    if summary["pending"]:
        text += ". Not upgraded: %s" % ", ".join(summary["pending"])
    return text


def manual_rollout(backend, ext_name, vmss_name, targets, total, batch_percent=DEFAULT_BATCH_PERCENT,
                   max_unhealthy_percent=DEFAULT_MAX_UNHEALTHY_PERCENT, present=True, timeout=1200, interval=15,
                   deadline=None, progress=None):
    """Upgrade `targets` batch by batch with manual upgrades; return (summary, statuses).

    Each batch is waited on (instance views) before the next one is sent. The rollout stops, and sends no later
    batch, when more than max_unhealthy_percent of the instances upgraded so far are unhealthy, when an upgrade
    operation fails for another reason than a handler, or at the deadline: the task's, when given, else `timeout`
    seconds for the whole rollout.
    """
    deadline = deadline or Deadline(timeout, clock=backend.now)
    summary = new_summary("Manual", total)
    batches = plan_batches(targets, total, batch_percent)
    statuses = []
    for number, batch in enumerate(batches, 1):
        summary["batches"].append(batch)
        error = backend.manual_upgrade(batch, deadline)
        statuses, in_time = wait_for_instances(backend, ext_name, batch, present, False, deadline, interval,
                                               progress)
        by_id = dict((s["instance_id"], s) for s in statuses)
        batch_statuses = [by_id[i] for i in batch if i in by_id]
        _record(summary, [s for s in batch_statuses if settled(s, present, False)], present)
        summary["pending"] = [i for later in batches[number:] for i in later]
        if not in_time:
            waiting = [s["instance_id"] for s in batch_statuses if not settled(s, present, False)]
            summary["pending"] = waiting + summary["pending"]
            summary["stopped"] = True
            summary["reason"] = _describe(ext_name, vmss_name, summary, "batch %d (instances %s) did not finish "
                                          "before the task's timeout (%ds)" % (number, ", ".join(batch),
                                                                               deadline.seconds))
            break
        if error and not any(s["state"] == "failed" for s in batch_statuses):
            summary["stopped"] = True
            summary["reason"] = _describe(ext_name, vmss_name, summary, "the manual upgrade of instances %s failed: "
                                          "%s" % (", ".join(batch), error))
            break
        if too_unhealthy(len(summary["failed"]), len(summary["upgraded"]), max_unhealthy_percent):
            summary["stopped"] = True
            summary["reason"] = _describe(
                ext_name, vmss_name, summary,
                "after batch %d of %d, %d of %d upgraded instances are unhealthy (%d%%, more than "
                "max_unhealthy_percent=%d)" % (number, len(batches), len(summary["failed"]), len(summary["upgraded"]),
                                               int(round(len(summary["failed"]) * 100.0 / len(summary["upgraded"]))),
                                               max_unhealthy_percent))
            break
    return summary, statuses


def platform_rollout(backend, ext_name, vmss_name, policy, ids, total, present=True, timeout=1200, interval=15,
                     deadline=None, progress=None):
    """Automatic and Rolling scale sets: the platform upgrades; wait until ids run the latest model and settled."""
    deadline = deadline or Deadline(timeout, clock=backend.now)
    summary = new_summary(policy, total)
    statuses, in_time = wait_for_instances(backend, ext_name, ids, present, True, deadline, interval, progress)
    wanted = set(ids)
    mine = [s for s in statuses if s["instance_id"] in wanted]
    _record(summary, [s for s in mine if settled(s, present, True)], present)
    summary["pending"] = [s["instance_id"] for s in mine if not settled(s, present, True)]
    if not in_time:
        summary["stopped"] = True
        summary["reason"] = _describe(ext_name, vmss_name, summary, "instances %s did not report the latest model "
                                      "with the extension finished before the task's timeout (%ds)" % (
                                          ", ".join(summary["pending"]), deadline.seconds))
    return summary, statuses
