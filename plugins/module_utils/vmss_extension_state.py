# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One scale-set extension driven to its declared state: the model's extension child resource, the
protected-settings fingerprint in the scale set's tags, and the rollout to the instances (module_utils/vmss_rollout).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    HttpResponseError,
    as_rest,
    describe_azure_error,
    resource_id,
    submit_with_retry,
    wait_for_poller,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    FINGERPRINT_TAG,
    build_body,
    changed_properties,
    default_timeout,
    desired_definition,
    extension_result,
    fingerprint,
    fingerprint_matches,
    write_diff,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.vmss_rollout import (
    RolloutBackend,
    instance_statuses,
    manual_rollout,
    new_summary,
    plan_batches,
    platform_rollout,
    sort_ids,
    unhealthy_instances,
)


def ext_result(ext):
    """extension_result without what scale-set extensions do not have (location, tags)."""
    if not ext:
        return {}
    result = extension_result(ext)
    for key in ("location", "tags"):
        result.pop(key, None)
    return result


class SdkBackend(RolloutBackend):
    """The rollout's view of Azure: instance views and manual upgrades through the compute client."""

    def __init__(self, run):
        self.run = run

    def instances(self):
        return self.run.read_instances()

    def manual_upgrade(self, ids, timeout):
        run = self.run
        poller = run.submit(lambda: run.compute.virtual_machine_scale_sets.begin_update_instances(
            run.group, run.vmss_name, {"instanceIds": list(ids)}), "upgrading instances %s of" % ", ".join(ids),
            run.vmss_id)
        try:
            if not wait_for_poller(poller, timeout):
                return None  # the instance wait reports what did not finish
            poller.result()
        except HttpResponseError as exc:
            return describe_azure_error(exc, "manual upgrade of instances %s of" % ", ".join(ids), run.vmss_id)
        return None

    def now(self):
        return time.time()

    def sleep(self, seconds):
        time.sleep(seconds)


class VmssExtension(object):
    """One run of the module: read, compare, write, roll out, report."""

    def __init__(self, azure):
        self.azure = azure
        self.params = azure.params
        self.group = self.params["resource_group"]
        self.vmss_name = self.params["vmss_name"]
        self.name = self.params["name"]
        self.compute = azure.connection.compute
        sub = azure.connection.subscription_id
        self.vmss_id = resource_id(sub, self.group, "virtualMachineScaleSets", self.vmss_name)
        self.ext_id = resource_id(sub, self.group, "virtualMachineScaleSets", self.vmss_name, "extensions", self.name)
        self.interval = azure.connection.polling_interval
        self.step_timeout = self.params["timeout"]

    # ---- reads -------------------------------------------------------------------------------------------------
    def read_vmss(self):
        try:
            return as_rest(self.compute.virtual_machine_scale_sets.get(self.group, self.vmss_name))
        except HttpResponseError as exc:
            if exc.status_code == 404:
                self.azure.fail("virtual machine scale set %r not found in resource group %r (%s)" % (
                    self.vmss_name, self.group, exc.error.code if exc.error else "NotFound"), error_code="NotFound")
            self.azure.fail_azure(exc, "reading", self.vmss_id)

    def read_extension(self):
        try:
            return as_rest(self.compute.virtual_machine_scale_set_extensions.get(self.group, self.vmss_name,
                                                                                 self.name))
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return None
            self.azure.fail_azure(exc, "reading", self.ext_id)

    def read_instances(self):
        try:
            return [as_rest(vm) for vm in self.compute.virtual_machine_scale_set_vms.list(
                self.group, self.vmss_name, expand="instanceView")]
        except HttpResponseError as exc:
            self.azure.fail_azure(exc, "reading the instances of", self.vmss_id)

    # ---- writes ------------------------------------------------------------------------------------------------
    def submit(self, begin, operation="writing", target=None):
        deadline = time.time() + self.step_timeout
        try:
            return submit_with_retry(begin, deadline, min(self.interval, 5))
        except HttpResponseError as exc:
            self.azure.fail_azure(exc, operation, target or self.ext_id, changed=self.wrote)

    def wait_write(self, poller, operation, timeout, tolerate_handler_failure):
        """Wait for a model write's LRO. On Automatic/Rolling scale sets it spans the rollout: a handler failure
        there ends it with an error, which the instance views then explain, so that one is tolerated."""
        try:
            if not wait_for_poller(poller, timeout):
                if not tolerate_handler_failure:
                    self.azure.fail("timed out after %ds waiting for %s of extension %s on scale set %s" % (
                        timeout, operation, self.name, self.vmss_name), changed=True)
                return
            poller.result()
        except HttpResponseError as exc:
            statuses = instance_statuses(self.read_instances(), self.name)
            if tolerate_handler_failure and any(s["state"] == "failed" for s in statuses):
                return
            self.azure.fail_azure(exc, operation, self.ext_id, changed=True, instances=statuses)

    # ---- policy ------------------------------------------------------------------------------------------------
    @staticmethod
    def policy_of(vmss):
        props = vmss.get("properties") or {}
        policy = props.get("upgradePolicy") or {}
        mode = policy.get("mode") or "Manual"
        rolling = policy.get("rollingUpgradePolicy") or {}
        return mode, rolling.get("maxBatchInstancePercent") or 20

    def targets(self, instances):
        """The instance ids a Manual rollout upgrades (upgrade_instances), checked against the scale set."""
        ids = sort_ids(vm.get("instanceId") for vm in instances)
        wanted = self.params["upgrade_instances"]
        if wanted is None or [w.lower() for w in wanted] == ["all"]:
            return ids
        if wanted == [] or [w.lower() for w in wanted] == ["none"]:
            return []
        unknown = [w for w in wanted if str(w) not in ids]
        if unknown:
            self.azure.fail("upgrade_instances: instance id(s) %s not in scale set %s (instances: %s)" % (
                ", ".join(unknown), self.vmss_name, ", ".join(ids)))
        return sort_ids(set(str(w) for w in wanted))

    def check_health(self, instances, mode, targets):
        """Seed 001, step 1: no rollout while more than max_unhealthy_percent of the instances are unhealthy."""
        if mode == "Manual" and not targets:
            return
        unhealthy = unhealthy_instances(instances, self.name)
        limit = self.params["max_unhealthy_percent"]
        if instances and len(unhealthy) * 100.0 > limit * len(instances):
            self.azure.fail(
                "%d of %d instances of scale set %s are already unhealthy (more than max_unhealthy_percent=%d), so "
                "no rollout was started and nothing was written:\n%s" % (
                    len(unhealthy), len(instances), self.vmss_name, limit,
                    "\n".join("%s: %s" % (item["instance_id"], item["message"]) for item in unhealthy)),
                unhealthy_instances=unhealthy)

    def rollout(self, mode, rolling_pct, instances, targets, present):
        """Roll the model change out; return (summary, statuses)."""
        ids = sort_ids(vm.get("instanceId") for vm in instances)
        backend = SdkBackend(self)
        if mode == "Manual":
            if not targets:
                return new_summary(mode, len(ids)), instance_statuses(self.read_instances(), self.name)
            return manual_rollout(backend, self.name, self.vmss_name, targets, len(ids),
                                  self.params["batch_percent"], self.params["max_unhealthy_percent"], present,
                                  self.step_timeout, self.interval)
        if mode == "Rolling" and self.params["rolling_upgrade"]:
            poller = self.submit(lambda: self.compute.virtual_machine_scale_set_rolling_upgrades.
                                 begin_start_extension_upgrade(self.group, self.vmss_name),
                                 "starting an extension rolling upgrade of", self.vmss_id)
            self.wait_write(poller, "the extension rolling upgrade", self.platform_timeout(mode, rolling_pct, ids), True)
        return platform_rollout(backend, self.name, self.vmss_name, mode, ids, len(ids), present,
                                self.platform_timeout(mode, rolling_pct, ids), self.interval)

    def platform_timeout(self, mode, rolling_pct, ids):
        if mode == "Rolling":
            return self.step_timeout * len(plan_batches(ids, len(ids), rolling_pct) or [[]])
        return self.step_timeout

    def finish(self, result, summary, statuses):
        """Fail on a stopped rollout or failed instances; warn instead with suppress_failures."""
        result.update(rollout=summary, instances=statuses)
        if summary["reason"]:
            self.azure.fail(summary["reason"], **result)
        if summary["failed"]:
            text = "extension %s failed on %d instance(s) of scale set %s: %s" % (
                self.name, len(summary["failed"]), self.vmss_name, "; ".join(
                    "%s: %s" % (item["instance_id"], item["message"]) for item in summary["failed"]))
            if self.params["suppress_failures"]:
                self.azure.warn(text + " (suppress_failures is on)")
            else:
                self.azure.fail(text, **result)
        return result

    # ---- states ------------------------------------------------------------------------------------------------
    wrote = False

    # ---- protected-settings fingerprint, kept in a tag of the scale set ----------------------------------------
    @property
    def fingerprint_tag(self):
        return "%s.%s" % (FINGERPRINT_TAG, self.name)

    def with_stored_fingerprint(self, current, vmss):
        """The extension as changed_properties sees it: scale-set extensions have no tags, so the fingerprint the
        module keeps in the scale set's tags stands in for the extension's own tag."""
        stored = (vmss.get("tags") or {}).get(self.fingerprint_tag)
        return dict(current, tags={FINGERPRINT_TAG: stored} if stored else {})

    def update_fingerprint(self, vmss):
        """After a write: store the new fingerprint, or drop a stale one when fingerprints are off or the
        extension is gone. Tags - Update At Scope with Merge/Delete changes only this tag, never the model
        and never another writer's tags."""
        stored = (vmss.get("tags") or {}).get(self.fingerprint_tag)
        secrets = self.params.get("protected_settings")
        keep = self.params["state"] == "present" and self.params.get("protected_settings_fingerprint")
        if keep and secrets is not None:
            if stored and fingerprint_matches(secrets, stored):
                return
            operation, tags = "Merge", {self.fingerprint_tag: fingerprint(secrets)}
        elif stored and not (keep and secrets is None):
            operation, tags = "Delete", {self.fingerprint_tag: stored}
        else:
            return
        try:
            self.azure.connection.resources.tags.begin_update_at_scope(
                self.vmss_id, {"operation": operation, "properties": {"tags": tags}}).result()
        except HttpResponseError as exc:
            self.azure.fail_azure(exc, "updating the protected-settings fingerprint tag of", self.vmss_id,
                                  changed=True)

    def absent(self):
        current = self.read_extension()
        vmss = self.read_vmss()
        mode, rolling_pct = self.policy_of(vmss)
        instances = self.read_instances()
        total = len(instances)
        if current is None:
            return dict(changed=False, changes=[], extension={}, rollout=new_summary(mode, total),
                        instances=instance_statuses(instances, self.name))
        if self.step_timeout is None:
            self.step_timeout = default_timeout((current.get("properties") or {}).get("type"))
        targets = self.targets(instances) if mode == "Manual" else []
        diff = dict(before=ext_result(current), after={})
        if self.azure.check_mode:
            return self.planned(mode, instances, targets, dict(changed=True, changes=["state"],
                                                               extension=ext_result(current), diff=diff))
        poller = self.submit(lambda: self.compute.virtual_machine_scale_set_extensions.begin_delete(
            self.group, self.vmss_name, self.name, polling=self.params["wait"]), "deleting")
        self.wrote = True
        self.update_fingerprint(vmss)
        result = dict(changed=True, changes=["state"], extension={}, diff=diff)
        if not self.params["wait"]:
            return self.no_wait(mode, instances, targets, result)
        ids = sort_ids(vm.get("instanceId") for vm in instances)
        self.wait_write(poller, "the removal", self.platform_timeout(mode, rolling_pct, ids), mode != "Manual")
        summary, statuses = self.rollout(mode, rolling_pct, instances, targets, present=False)
        return self.finish(result, summary, statuses)

    def planned(self, mode, instances, targets, result):
        """Check mode: the rollout that would happen."""
        summary = new_summary(mode, len(instances))
        if mode == "Manual":
            summary["batches"] = plan_batches(targets, len(instances), self.params["batch_percent"])
            summary["pending"] = sort_ids(targets)
        else:
            summary["pending"] = sort_ids(vm.get("instanceId") for vm in instances)
        result.update(rollout=summary, instances=instance_statuses(instances, self.name))
        return result

    def no_wait(self, mode, instances, targets, result):
        """wait=false: on a Manual scale set, one unbatched upgrade request for the targets; nothing waited on."""
        summary = new_summary(mode, len(instances))
        if mode == "Manual" and targets:
            self.submit(lambda: self.compute.virtual_machine_scale_sets.begin_update_instances(
                self.group, self.vmss_name, {"instanceIds": targets}, polling=False),
                "upgrading instances of", self.vmss_id)
            summary["batches"] = [targets]
        summary["pending"] = targets if mode == "Manual" else sort_ids(vm.get("instanceId") for vm in instances)
        result.update(rollout=summary, instances=instance_statuses(self.read_instances(), self.name))
        return result

    def present(self):
        params = self.params
        vmss = self.read_vmss()
        location = vmss.get("location")
        mode, rolling_pct = self.policy_of(vmss)
        current = self.read_extension()
        desired = desired_definition(self.azure, current, location, "scale set %s" % self.vmss_name, self.ext_id)
        desired["tags"] = None  # scale-set extensions have no tags
        changes = ["state"] if current is None else changed_properties(
            desired, self.with_stored_fingerprint(current, vmss), params["protected_settings_fingerprint"])
        instances = self.read_instances()
        targets = self.targets(instances) if mode == "Manual" else []
        if current is not None and not changes:
            statuses = instance_statuses(instances, self.name)
            result = dict(changed=False, changes=[], extension=ext_result(current),
                          rollout=new_summary(mode, len(instances)), instances=statuses)
            failed = [s for s in statuses if s["state"] == "failed"]
            if failed and not params["suppress_failures"]:
                self.azure.fail(
                    "extension %s on scale set %s matches the declared definition but its handler failed on "
                    "instance(s) %s. Set rerun=true to run it again." % (self.name, self.vmss_name, "; ".join(
                        "%s: %s" % (s["instance_id"], s["message"]) for s in failed)), **result)
            stale = [s["instance_id"] for s in statuses if s["instance_id"] in targets and not s["latest_model_applied"]]
            if not stale or mode != "Manual":
                return result
            if params["upgrade_instances"] is None:
                self.azure.warn("instance(s) %s of scale set %s do not run the latest model; set upgrade_instances "
                                "(for example [all]) to upgrade them" % (", ".join(stale), self.vmss_name))
                return result
            # Asked for explicitly: bring the listed instances that lag behind to the latest model (canary, then all).
            self.check_health(instances, mode, stale)
            result.update(changed=True, changes=["instances"])
            if self.azure.check_mode:
                return self.planned(mode, instances, stale, result)
            if not params["wait"]:
                return self.no_wait(mode, instances, stale, result)
            summary, statuses = self.rollout(mode, rolling_pct, instances, stale, present=True)
            return self.finish(result, summary, statuses)
        self.check_health(instances, mode, targets)
        body = {"properties": build_body(desired, location, current, use_fingerprint=False)["properties"]}
        diff = write_diff(current, body, self.ext_id, self.name, params["protected_settings"],
                          omit=("instance_view", "provisioning_state", "location", "tags"))
        if self.azure.check_mode:
            return self.planned(mode, instances, targets, dict(changed=True, changes=changes, extension=diff["after"],
                                                               diff=diff))
        poller = self.submit(lambda: self.compute.virtual_machine_scale_set_extensions.begin_create_or_update(
            self.group, self.vmss_name, self.name, body, polling=params["wait"]))
        self.wrote = True
        self.update_fingerprint(vmss)
        if not params["wait"]:
            result = dict(changed=True, changes=changes, extension=ext_result(as_rest(poller.result())),
                          diff=diff)
            return self.no_wait(mode, instances, targets, result)
        ids = sort_ids(vm.get("instanceId") for vm in instances)
        self.wait_write(poller, "the model change", self.platform_timeout(mode, rolling_pct, ids), mode != "Manual")
        summary, statuses = self.rollout(mode, rolling_pct, instances, targets, present=True)
        result = dict(changed=True, changes=changes, extension=ext_result(self.read_extension() or {}),
                      diff=diff)
        return self.finish(result, summary, statuses)
