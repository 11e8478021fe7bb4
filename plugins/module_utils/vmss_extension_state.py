# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One scale-set extension driven to its declared state: the model's extension child resource, the
protected-settings fingerprint in the scale set's tags, and the rollout to the instances (module_utils/vmss_rollout);
and the reads of vmss_extension_info. Raises AzureOperationError; never ends the process. One deadline (the task's
timeout, or the rerun's) covers every step.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import as_rest, read_or_absent
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    AzureOperationError,
    WaitTimeout,
    arm_errors,
    not_found_error,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_images import resolve_version
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTIONS,
    FINGERPRINT_TAG,
    build_body,
    changed_properties,
    default_timeout,
    desired_definition,
    fingerprint,
    fingerprint_matches,
    validate_extension_options,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import extension_result, write_diff
from ansible_collections.azure_vm.extensions.plugins.module_utils.vm_extension_state import ExtensionState, change_summary
from ansible_collections.azure_vm.extensions.plugins.module_utils.vmss_rollout import (
    RolloutBackend,
    flexible_instance,
    instance_statuses,
    manual_rollout,
    new_summary,
    not_running_instances,
    plan_batches,
    platform_rollout,
    sort_ids,
    summarize,
    unhealthy_instances,
    wait_for_instances,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import (
    Deadline,
    submit_with_retry,
    wait_for_poller,
)

# Flexible orchestration: the instances are VMs, listed with the VM List's scale-set filter (always with it:
# $expand=instanceView needs a filter) - tests/data/flexible-scale-sets.md, section 3.
FLEXIBLE_FILTER = "'virtualMachineScaleSet/id' eq '%s'"

VMSS_EXTENSION_OPTIONS = dict(
    EXTENSION_OPTIONS,
    vmss_name=dict(type="str", required=True),
    upgrade_instances=dict(type="list", elements="str"),
    batch_percent=dict(type="int", default=20),
    max_unhealthy_percent=dict(type="int", default=20),
    rolling_upgrade=dict(type="bool", default=False),
    protected_settings_fingerprint=dict(type="bool", default=True, no_log=False),
    # returned by vmss_extension_info: accepted and ignored, so that its entries round-trip
    instances=dict(type="dict"),
)


def validate_vmss_options(params):
    """Refuse bad input before anything is read or written, naming the option and what is allowed."""
    validate_extension_options(params)
    for option in ("batch_percent", "max_unhealthy_percent"):
        low = 1 if option == "batch_percent" else 0
        if not low <= params[option] <= 100:
            raise AzureOperationError("%s must be between %d and 100; got %r" % (option, low, params[option]))
    if params["rolling_upgrade"] and not params["wait"]:
        raise AzureOperationError("rolling_upgrade=true needs wait=true (the extension rolling upgrade starts after "
                                  "the model change has been applied)")
    wanted = params["upgrade_instances"] or []
    if len(wanted) > 1 and [w for w in wanted if w.lower() in ("all", "none")]:
        raise AzureOperationError("upgrade_instances: 'all' and 'none' cannot be mixed with instance ids; got %r"
                                  % wanted)


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
        """timeout: the task's waiter.Deadline."""
        deadline = timeout
        run = self.run
        operation = "manual upgrade of instances %s of" % ", ".join(ids)
        poller = run.submit(lambda: run.compute.virtual_machine_scale_sets.begin_update_instances(
            run.group, run.vmss_name, {"instanceIds": list(ids)}), operation, run.vmss_id)
        try:
            wait_for_poller(poller, deadline, operation + " " + run.vmss_name, operation, run.vmss_id,
                            progress=run.progress)
        except WaitTimeout:
            return None  # the instance wait reports what did not finish
        except AzureOperationError as exc:
            return exc.msg
        return None

    def now(self):
        return time.monotonic()

    def sleep(self, seconds):
        time.sleep(seconds)


class VmssExtension(ExtensionState):
    """One extension of one scale set: present(definition) or absent() return the result dict, failures raise.

    deadline: the waiter.Deadline every step shares; without one, the first step starts it from timeout (or
    Azure's handler timeout for the extension's type). The rollout options are vmss_extension's own (see
    VMSS_EXTENSION_OPTIONS)."""

    kind = "vmss"
    parent_type = "virtualMachineScaleSets"
    parent_words = "scale set"
    wrote = False

    def __init__(self, connection, resource_group, vmss_name, name, deadline=None, timeout=None, check_mode=False,
                 progress=None, upgrade_instances=None, batch_percent=20, max_unhealthy_percent=20,
                 rolling_upgrade=False):
        super(VmssExtension, self).__init__(connection, resource_group, vmss_name, name, deadline, check_mode,
                                            progress)
        self.vmss_name = vmss_name
        self.vmss_id = self.parent_id
        self.timeout = deadline.seconds if deadline is not None else timeout
        self.upgrade_instances = upgrade_instances
        self.batch_percent = batch_percent
        self.max_unhealthy_percent = max_unhealthy_percent
        self.rolling_upgrade = rolling_upgrade
        self.interval = connection.polling_interval
        self.orchestration = None  # Uniform or Flexible, from the scale set's read
        self.model = None          # the model's extension (REST), what a Flexible VM is compared with

    def start_clock(self, extension_type):
        """The task's one deadline, unless the caller gave one: timeout, or Azure's handler timeout for this type."""
        if self.deadline is None:
            self.timeout = self.timeout or default_timeout(extension_type)
            self.deadline = Deadline(self.timeout)

    # ---- reads -------------------------------------------------------------------------------------------------
    def read_vmss(self):
        vmss = read_or_absent(
            lambda: self.compute.virtual_machine_scale_sets.get(self.group, self.vmss_name), self.vmss_id,
            missing=lambda exc: not_found_error(exc, self.connection.subscription_id, self.group,
                                                resource=("vmss", self.vmss_name)))
        self.orchestration = (vmss.get("properties") or {}).get("orchestrationMode") or "Uniform"
        return vmss

    @property
    def flexible(self):
        if self.orchestration is None:
            self.read_vmss()
        return self.orchestration.lower() == "flexible"

    def read_extension(self):
        self.model = read_or_absent(lambda: self.compute.virtual_machine_scale_set_extensions.get(
            self.group, self.vmss_name, self.name), self.ext_id)
        return self.model

    def read(self):
        """(this extension or None, the scale set), both as Azure has them now."""
        return self.read_extension(), self.read_vmss()

    def read_instances(self):
        """The instances with their instance views. On a Flexible scale set they are VMs (one paged VM List with the
        scale set's filter), each compared with the model's extension as this run last read or wrote it."""
        if self.flexible:
            return [flexible_instance(vm, self.name, self.model) for vm in self.read_vms()]
        with arm_errors("reading the instances of", self.vmss_id):
            return [as_rest(vm) for vm in self.compute.virtual_machine_scale_set_vms.list(
                self.group, self.vmss_name, expand="instanceView")]

    def read_vms(self):
        """A Flexible scale set's VMs (REST) with their instance views and extensions."""
        with arm_errors("reading the instances of", self.vmss_id):
            return [as_rest(vm) for vm in self.compute.virtual_machines.list(
                self.group, filter=FLEXIBLE_FILTER % self.vmss_id, expand="instanceView")]

    # ---- writes ------------------------------------------------------------------------------------------------
    def submit(self, begin, operation="writing", target=None):
        return submit_with_retry(begin, self.deadline, min(self.interval, 5), operation, target or self.ext_id,
                                 progress=self.progress, changed=self.wrote)

    def wait_write(self, poller, operation, tolerate_handler_failure):
        """Wait for a model write's LRO. On Automatic/Rolling scale sets it spans the rollout: a handler failure
        there ends it with an error, which the instance views then explain, so that one is tolerated."""
        try:
            wait_for_poller(poller, self.deadline, "%s of extension %s on scale set %s" % (
                operation, self.name, self.vmss_name), operation, self.ext_id, progress=self.progress, changed=True)
        except WaitTimeout:
            if not tolerate_handler_failure:
                raise AzureOperationError("timed out after %ds waiting for %s of extension %s on scale set %s" % (
                    self.timeout, operation, self.name, self.vmss_name), changed=True)
        except AzureOperationError as exc:
            statuses = instance_statuses(self.read_instances(), self.name)
            if tolerate_handler_failure and any(s["state"] == "failed" for s in statuses):
                return
            exc.result.update(instances=statuses)
            raise

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
        wanted = self.upgrade_instances
        if wanted is None or [w.lower() for w in wanted] == ["all"]:
            return ids
        if wanted == [] or [w.lower() for w in wanted] == ["none"]:
            return []
        unknown = [w for w in wanted if str(w) not in ids]
        if unknown:
            kind = "; on a Flexible scale set the instances are VMs, named by their VM names" if self.flexible \
                else "; a Uniform scale set's instance ids are numbers"
            raise AzureOperationError(
                "upgrade_instances: instance id(s) %s not in scale set %s, which is in %s orchestration mode (its "
                "instances: %s)%s. Nothing was written." % (", ".join(unknown), self.vmss_name, self.orchestration,
                                                            ", ".join(ids), kind))
        return sort_ids(set(str(w) for w in wanted))

    def check_health(self, instances, mode, targets):
        """Before any write: no target instance may be stopped or deallocated (Azure runs no handler there), and
        no rollout while more than max_unhealthy_percent of the instances are unhealthy (as Azure's automatic
        extension upgrade checks before it starts)."""
        asleep = not_running_instances(instances, targets if mode == "Manual" else None)
        if asleep:
            raise AzureOperationError(
                "instance(s) %s of scale set %s are not running, and Azure cannot run extension handlers there; "
                "start them (az vmss start --instance-ids ...), or leave them out with upgrade_instances, then run "
                "the task again. Nothing was written." % (", ".join(
                    "%s (PowerState/%s)" % (item["instance_id"], item["power_state"]) for item in asleep),
                    self.vmss_name), error_code="VMNotRunning", not_running_instances=asleep, changed=False)
        if mode == "Manual" and not targets:
            return
        unhealthy = unhealthy_instances(instances, self.name)
        limit = self.max_unhealthy_percent
        if instances and len(unhealthy) * 100.0 > limit * len(instances):
            raise AzureOperationError(
                "%d of %d instances of scale set %s are already unhealthy (more than max_unhealthy_percent=%d), so "
                "no rollout was started and nothing was written:\n%s" % (
                    len(unhealthy), len(instances), self.vmss_name, limit,
                    "\n".join("%s: %s" % (item["instance_id"], item["message"]) for item in unhealthy)),
                unhealthy_instances=unhealthy, changed=False)

    def rollout(self, mode, instances, targets, present):
        """Roll the model change out; return (summary, statuses)."""
        ids = sort_ids(vm.get("instanceId") for vm in instances)
        backend = SdkBackend(self)
        if mode == "Manual":
            if not targets:
                return new_summary(mode, len(ids)), instance_statuses(self.read_instances(), self.name)
            return manual_rollout(backend, self.name, self.vmss_name, targets, len(ids),
                                  self.batch_percent, self.max_unhealthy_percent, present,
                                  interval=self.interval, deadline=self.deadline, progress=self.progress)
        if mode == "Rolling" and self.rolling_upgrade:
            poller = self.submit(lambda: self.compute.virtual_machine_scale_set_rolling_upgrades.
                                 begin_start_extension_upgrade(self.group, self.vmss_name),
                                 "starting an extension rolling upgrade of", self.vmss_id)
            self.wait_write(poller, "the extension rolling upgrade", True)
        return platform_rollout(backend, self.name, self.vmss_name, mode, ids, len(ids), present,
                                interval=self.interval, deadline=self.deadline, progress=self.progress)

    def finish(self, result, summary, statuses, suppress_failures):
        """Fail on a stopped rollout or failed instances; warn instead with suppress_failures."""
        result.update(rollout=summary, instances=statuses)
        if summary["reason"]:
            raise AzureOperationError(summary["reason"], **result)
        if summary["failed"]:
            text = "extension %s failed on %d instance(s) of scale set %s: %s" % (
                self.name, len(summary["failed"]), self.vmss_name, "; ".join(
                    "%s: %s" % (item["instance_id"], item["message"]) for item in summary["failed"]))
            if suppress_failures:
                self.warnings.append(text + " (suppress_failures is on)")
            else:
                raise AzureOperationError(text, **result)
        return result

    # ---- protected-settings fingerprint, kept in a tag of the scale set ----------------------------------------
    @property
    def fingerprint_tag(self):
        return "%s.%s" % (FINGERPRINT_TAG, self.name)

    def with_stored_fingerprint(self, current, vmss):
        """The extension as changed_properties sees it: scale-set extensions have no tags, so the fingerprint the
        module keeps in the scale set's tags stands in for the extension's own tag."""
        stored = (vmss.get("tags") or {}).get(self.fingerprint_tag)
        return dict(current, tags={FINGERPRINT_TAG: stored} if stored else {})

    def update_fingerprint(self, vmss, definition=None):
        """After a write: store the new fingerprint, or drop a stale one when fingerprints are off or the
        extension is gone (definition None). Tags - Update At Scope with Merge/Delete changes only this tag, never
        the model and never another writer's tags."""
        stored = (vmss.get("tags") or {}).get(self.fingerprint_tag)
        secrets = (definition or {}).get("protected_settings")
        keep = definition is not None and definition.get("protected_settings_fingerprint", True)
        if keep and secrets is not None:
            if stored and fingerprint_matches(secrets, stored):
                return
            operation, tags = "Merge", {self.fingerprint_tag: fingerprint(secrets)}
        elif stored and not (keep and secrets is None):
            operation, tags = "Delete", {self.fingerprint_tag: stored}
        else:
            return
        with arm_errors("updating the protected-settings fingerprint tag of", self.vmss_id, changed=True):
            self.connection.resources.tags.begin_update_at_scope(
                self.vmss_id, {"operation": operation, "properties": {"tags": tags}}).result()

    # ---- states ------------------------------------------------------------------------------------------------
    def absent(self, wait=True):
        current = self.read_extension()
        vmss = self.read_vmss()
        mode, dummy = self.policy_of(vmss)
        instances = self.read_instances()
        total = len(instances)
        if current is None:
            return dict(changed=False, changes=[], extension={}, rollout=new_summary(mode, total),
                        instances=instance_statuses(instances, self.name))
        self.start_clock((current.get("properties") or {}).get("type"))
        targets = self.targets(instances) if mode == "Manual" else []
        diff = dict(before=ext_result(current), after={})
        if self.check_mode:
            return self.planned(mode, instances, targets, dict(changed=True, changes=["state"],
                                                               extension=ext_result(current), diff=diff))
        self.check_health(instances, mode, targets)
        poller = self.submit(lambda: self.compute.virtual_machine_scale_set_extensions.begin_delete(
            self.group, self.vmss_name, self.name, polling=wait), "deleting")
        self.wrote = True
        self.model = None
        self.update_fingerprint(vmss)
        result = dict(changed=True, changes=["state"], extension={}, diff=diff, summary="%s: removed" % self.name)
        if not wait:
            return self.no_wait(mode, instances, targets, result)
        self.wait_write(poller, "the removal", mode != "Manual")
        summary, statuses = self.rollout(mode, instances, targets, present=False)
        return self.finish(result, summary, statuses, None)

    def planned(self, mode, instances, targets, result):
        """Check mode: the rollout that would happen."""
        summary = new_summary(mode, len(instances))
        if mode == "Manual":
            summary["batches"] = plan_batches(targets, len(instances), self.batch_percent)
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

    def unchanged(self, current, mode, instances, targets, wait, suppress_failures):
        """The model matches. Success means terminal: instances that do not run the latest model yet (a rollout
        that was interrupted or not waited on) are rolled out to, instances still transitioning are waited for,
        and failed ones fail the task."""
        statuses = instance_statuses(instances, self.name)
        result = dict(changed=False, changes=[], extension=ext_result(current),
                      rollout=new_summary(mode, len(instances)), instances=statuses)
        busy = [s["instance_id"] for s in statuses if s["state"] == "transitioning"]
        if wait and not self.check_mode and busy:
            # Handlers an earlier run started are still at work: wait for them before anything else.
            statuses, in_time = wait_for_instances(SdkBackend(self), self.name, busy, True, False, self.deadline,
                                                   self.interval, self.progress)
            result.update(instances=statuses)
            if not in_time:
                raise AzureOperationError(
                    "timed out after %ds waiting for extension %s on instance(s) %s of scale set %s, which were "
                    "still transitioning from an earlier run: %s" % (self.timeout, self.name, ", ".join(busy),
                                                                     self.vmss_name, "; ".join(
                        "%s: %s" % (s["instance_id"], s["message"]) for s in statuses
                        if s["instance_id"] in busy)), **result)
        stale = [s["instance_id"] for s in result["instances"] if not s["latest_model_applied"]
                 and (mode != "Manual" or s["instance_id"] in targets)]
        if mode == "Manual" and stale:
            # Resume the rollout: the targeted instances that lag behind get the latest model, in batches.
            self.check_health(instances, mode, stale)
            result.update(changed=True, changes=["instances"],
                          summary="%s: rollout resumed on instance(s) %s" % (self.name, ", ".join(stale)))
            if self.check_mode:
                return self.planned(mode, instances, stale, result)
            if not wait:
                return self.no_wait(mode, instances, stale, result)
            summary, statuses = self.rollout(mode, instances, stale, present=True)
            return self.finish(result, summary, statuses, suppress_failures)
        if wait and not self.check_mode and stale:
            # Automatic/Rolling: Azure is still upgrading; wait until the instances run the latest model.
            summary, statuses = platform_rollout(SdkBackend(self), self.name, self.vmss_name, mode, stale,
                                                 len(instances), True, interval=self.interval,
                                                 deadline=self.deadline, progress=self.progress)
            result.update(instances=statuses)
            if summary["reason"]:
                raise AzureOperationError(summary["reason"], **result)
        failed = [s for s in result["instances"] if s["state"] == "failed"]
        if failed and not suppress_failures:
            raise AzureOperationError(
                "extension %s on scale set %s matches the declared definition but its handler failed on "
                "instance(s) %s. Set rerun=true to run it again." % (self.name, self.vmss_name, "; ".join(
                    "%s: %s" % (s["instance_id"], s["message"]) for s in failed)), **result)
        return result

    def present(self, definition, wait=True):
        """definition: vmss_extension's definition options (validated; see VMSS_EXTENSION_OPTIONS)."""
        vmss = self.read_vmss()
        location = vmss.get("location")
        mode, dummy = self.policy_of(vmss)
        current = self.read_extension()
        self.start_clock(definition["type"])
        desired = desired_definition(definition, self.name, current, self.where,
                                     resolve_version(definition, self.connection, location, self.ext_id))
        desired["tags"] = None  # scale-set extensions have no tags
        use_fingerprint = definition.get("protected_settings_fingerprint", True)
        changes = ["state"] if current is None else changed_properties(
            desired, self.with_stored_fingerprint(current, vmss), use_fingerprint)
        instances = self.read_instances()
        targets = self.targets(instances) if mode == "Manual" else []
        if current is not None and not changes:
            return self.unchanged(current, mode, instances, targets, wait, definition.get("suppress_failures"))
        self.check_health(instances, mode, targets)
        body = {"properties": build_body(desired, location, current, use_fingerprint=False)["properties"]}
        diff = write_diff(current, body, self.ext_id, self.name, definition.get("protected_settings"), changes,
                          omit=("instance_view", "provisioning_state", "location", "tags"))
        summary_text = change_summary(self.name, current, body, changes)
        if self.check_mode:
            return self.planned(mode, instances, targets, dict(changed=True, changes=changes, extension=diff["after"],
                                                               diff=diff, summary=summary_text))
        poller = self.submit(lambda: self.compute.virtual_machine_scale_set_extensions.begin_create_or_update(
            self.group, self.vmss_name, self.name, body, polling=wait))
        self.wrote = True
        self.model = dict(body, name=self.name)  # what a Flexible VM must carry from now on
        self.update_fingerprint(vmss, definition)
        if not wait:
            result = dict(changed=True, changes=changes, extension=ext_result(as_rest(poller.result())),
                          diff=diff, summary=summary_text)
            return self.no_wait(mode, instances, targets, result)
        self.wait_write(poller, "the model change", mode != "Manual")
        summary, statuses = self.rollout(mode, instances, targets, present=True)
        result = dict(changed=True, changes=changes, extension=ext_result(self.read_extension() or {}),
                      diff=diff, summary=summary_text)
        return self.finish(result, summary, statuses, definition.get("suppress_failures"))


# ---- vmss_extension_info ---------------------------------------------------------------------------------------
def vmss_extension_info(azure):
    """vmss_extension_info: the scale set's extensions (or the named one) with per-instance status counts and
    failing instances, and the scale set's upgrade policy and capacity."""
    params = azure.params
    connection = azure.connection
    run = VmssExtension(connection, params["resource_group"], params["vmss_name"], params["name"] or "")
    vmss = run.read_vmss()
    if params["name"]:
        found = [ext for ext in [run.read_extension()] if ext is not None]
    else:
        with arm_errors("reading extensions of", run.vmss_id):
            found = [as_rest(ext) for ext in run.compute.virtual_machine_scale_set_extensions.list(
                run.group, run.vmss_name)]
    vms = run.read_vms() if run.flexible else run.read_instances()
    extensions = []
    for ext in found:
        item = ext_result(ext)
        # On a Flexible scale set each extension has its own "latest model": whether the VM carries its definition.
        instances = [flexible_instance(vm, item["name"], ext) for vm in vms] if run.flexible else vms
        item["instances"] = summarize(instance_statuses(instances, item["name"]))
        extensions.append(item)
    props = vmss.get("properties") or {}
    scale_set = {
        "id": vmss.get("id"),
        "name": vmss.get("name"),
        "location": vmss.get("location"),
        "upgrade_policy": (props.get("upgradePolicy") or {}).get("mode") or "Manual",
        "orchestration_mode": run.orchestration,
        "capacity": (vmss.get("sku") or {}).get("capacity", len(vms)),
    }
    return dict(changed=False, scale_set=scale_set, extensions=extensions)
