#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vmss_extension
short_description: Install, update, rerun or remove an extension on an Azure scale set, and roll it out to the instances
version_added: 0.1.0
description:
  - Keeps an extension of a virtual machine scale set's model at the declared publisher, type, version, settings
    and upgrade flags, then rolls the change out to the instances according to the scale set's upgrade policy.
  - Writes only the scale set's extension child resource (C(virtualMachineScaleSets/{name}/extensions/{extension})),
    never the whole scale-set model, so a concurrent change to another extension or to the scale set is kept.
  - "C(Manual) upgrade policy: the instances in O(upgrade_instances) are upgraded with manual upgrades in batches of
    at most O(batch_percent) of the scale set's instances (rounded up, at least one). Each batch is waited on until
    every instance in it reports the extension succeeded or failed before the next one is sent. The rollout stops,
    and sends no later batch, when more than O(max_unhealthy_percent) of the instances upgraded so far are
    unhealthy, as Azure's own extension upgrade orchestrator does."
  - "C(Automatic) and C(Rolling) upgrade policies: Azure upgrades the instances itself; the module waits until
    every instance reports the latest model (C(latestModelApplied)) and the extension finished. With
    O(rolling_upgrade=true) it also starts an extension rolling upgrade on a C(Rolling) scale set."
  - Before a rollout starts, the task fails if more than O(max_unhealthy_percent) of the instances are already
    unhealthy (VM agent not Ready, or another extension failed).
  - The task fails when the extension's handler failed on any instance (unless O(suppress_failures=true)), naming
    each instance and the handler's message.
  - A 409 "another operation is in progress" is retried with backoff until O(timeout).
author:
  - azure_vm.extensions maintainers (@azure-vm)
notes:
  - "Protected settings: ARM never returns them, and scale-set extension resources have no tags, so the salted
    fingerprint (see O(protected_settings_fingerprint)) is kept in a tag of the scale set itself, written through
    the Tags API's Merge operation (C(Microsoft.Resources/tags/write) permission) so that neither the model nor
    anybody else's tags are touched."
options:
  resource_group:
    description: Resource group of the scale set.
    type: str
    required: true
  vmss_name:
    description: Name of the virtual machine scale set.
    type: str
    required: true
  name:
    description: Name of the extension in the scale set's model.
    type: str
    required: true
  state:
    description:
      - Whether the extension should exist. With V(absent) the removal is rolled out like any other model change.
    type: str
    default: present
    choices: [present, absent]
  publisher:
    description:
      - Extension publisher, for example C(Microsoft.Azure.Extensions). Required with O(state=present).
      - Cannot change on an existing extension; delete it first or use the C(rerun_extension) role.
    type: str
  type:
    description:
      - Extension type, for example C(CustomScript). Required with O(state=present). Casing differences that
        Azure normalizes are not changes.
    type: str
  type_handler_version:
    description:
      - Handler version, for example C(2.1). Required with O(state=present).
      - V(latest) picks the highest version in the scale set's region from the extension image catalogue
        (numeric order); with O(auto_upgrade_minor_version=true) its major.minor is used.
    type: str
  settings:
    description: Public settings (JSON object). Compared deeply; key order and "1" versus 1 do not count as changes.
    type: dict
  protected_settings:
    description:
      - Protected settings, encrypted by Azure and never returned by it. Never logged, shown masked in diffs.
      - A change of these alone is detected through O(protected_settings_fingerprint).
      - Mutually exclusive with O(protected_settings_from_key_vault).
    type: dict
  protected_settings_from_key_vault:
    description: Protected settings held in Key Vault, referenced instead of passed.
    type: dict
    suboptions:
      secret_url:
        description: URL of the Key Vault secret.
        type: str
        required: true
      source_vault_id:
        description: Resource id of the Key Vault.
        type: str
        required: true
  auto_upgrade_minor_version:
    description: Let Azure use the newest minor version of O(type_handler_version) at deployment (recommended).
    type: bool
    default: true
  enable_automatic_upgrade:
    description:
      - Let the platform upgrade the extension automatically when a new version is published (automatic
        extension upgrade, rolled through the scale set in batches of 20%). Not managed when omitted.
    type: bool
  suppress_failures:
    description:
      - Suppress handler failures (the instances' provisioning does not fail). Not managed when omitted.
      - With V(true), failed instances are reported as a warning instead of failing the task; the rollout still
        stops at O(max_unhealthy_percent).
    type: bool
  force_update_tag:
    description: A string that, when changed, makes Azure run the handler again even if nothing else changed.
    type: str
  rerun:
    description:
      - Run the handler again on the instances, by sending a new unique O(force_update_tag). Always reports a change.
      - Mutually exclusive with O(force_update_tag).
    type: bool
    default: false
  provision_after_extensions:
    description: Extensions of the scale set that must be provisioned before this one (extension sequencing).
    type: list
    elements: str
  upgrade_instances:
    description:
      - C(Manual) upgrade policy only. The instance ids to upgrade to the new model after a change.
      - Omitted or V([all]) upgrades every instance; V([]) or V([none]) only changes the model (instances pick it
        up when upgraded later).
      - When given and the extension already matches, the listed instances that do not run the scale set's latest
        model yet (an earlier run with fewer instances, a stopped rollout, O(wait=false)) are upgraded, so a canary
        run with a few ids followed by a run with V([all]) converges. A manual upgrade applies the whole latest
        model, including other extensions' changes waiting in it. When omitted, such instances only cause a warning.
      - Ignored for C(Automatic) and C(Rolling) scale sets, where Azure upgrades every instance.
    type: list
    elements: str
  batch_percent:
    description:
      - C(Manual) upgrade policy. The largest share of the scale set's instances upgraded at once, in percent;
        a batch holds at least one instance.
    type: int
    default: 20
  max_unhealthy_percent:
    description:
      - Stop the rollout when more than this percentage of the instances upgraded so far report the extension
        failed. Also the largest share of instances that may be unhealthy before a rollout starts.
    type: int
    default: 20
  protected_settings_fingerprint:
    description:
      - ARM never returns protected settings, so a change to them alone is invisible. With this on, the module
        keeps a salted, deliberately slow PBKDF2-SHA256 fingerprint (200,000 iterations, random salt; never the
        secret) in the scale set's tag C(azure_vm.extensions.protected_settings.<name>) and compares against it.
      - "Trade-off: anyone who can read the scale set's tags can test guesses against the fingerprint at about
        0.1 s a guess. Strong secrets stay safe; a short password could be guessed. Turn this off to store
        nothing (an existing fingerprint tag is removed at the next write); protected settings are then only sent
        when something else changes, on creation, or with O(rerun)."
    type: bool
    default: true
  rolling_upgrade:
    description:
      - C(Rolling) upgrade policy. After the model change, also start an extension rolling upgrade
        (C(extensionRollingUpgrade)) and wait for it. Needs O(wait=true).
    type: bool
    default: false
  wait:
    description:
      - Wait for the rollout and check the instances' handler status.
      - With V(false) the task returns as soon as Azure accepted the write. On a C(Manual) scale set the
        O(upgrade_instances) are then upgraded in one request, without batches or health checks (use V([]) to
        change only the model); follow up with M(azure_vm.extensions.vmss_extension_info).
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each step, including retries of 409 conflicts. A step is the model write and each
        batch of a C(Manual) rollout; a C(Rolling) rollout gets this for each of its batches.
      - Defaults to 90 minutes for CustomScript, CustomScriptExtension, Chef and DSC handlers and to 20 minutes
        for others, as Azure's handler timeouts.
    type: int
extends_documentation_fragment:
  - azure_vm.extensions.azure
attributes:
  check_mode:
    support: full
    description: Reports what would change and the batches that would be sent; sends no write.
  diff_mode:
    support: full
    description: Shows the extension before and after; protected values are masked.
"""

EXAMPLES = r"""
- name: Add a script extension and roll it out in batches of 20%, stopping on failures
  azure_vm.extensions.vmss_extension:
    resource_group: rg-demo
    vmss_name: vmss-web
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    settings:
      fileUris: ["https://example.blob.core.windows.net/scripts/setup.sh"]
    protected_settings:
      commandToExecute: "./setup.sh --token {{ vault_token }}"
  register: rollout

- name: Canary - change the model and upgrade only two instances, one at a time
  azure_vm.extensions.vmss_extension:
    resource_group: rg-demo
    vmss_name: vmss-web
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    settings: {commandToExecute: "./setup.sh --v2"}
    upgrade_instances: ["0", "1"]
    batch_percent: 1

- name: Opt into automatic extension upgrade, after the health extension
  azure_vm.extensions.vmss_extension:
    resource_group: rg-demo
    vmss_name: vmss-web
    name: DependencyAgentLinux
    publisher: Microsoft.Azure.Monitoring.DependencyAgent
    type: DependencyAgentLinux
    type_handler_version: "9.5"
    enable_automatic_upgrade: true
    provision_after_extensions: [HealthExtension]

- name: Rotate a secret (ARM never returns protected settings, so run the handler again)
  azure_vm.extensions.vmss_extension:
    resource_group: rg-demo
    vmss_name: vmss-web
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    protected_settings:
      commandToExecute: "./setup.sh --token {{ new_token }}"
    rerun: true

- name: Remove the extension and roll the removal out
  azure_vm.extensions.vmss_extension:
    resource_group: rg-demo
    vmss_name: vmss-web
    name: customScript
    state: absent
"""

RETURN = r"""
changes:
  description:
    - The options whose declared value differed from Azure (empty when nothing changed).
    - V(instances) alone when the extension matched and only instances listed in O(upgrade_instances) that lagged
      behind the latest model were upgraded.
  returned: always
  type: list
  elements: str
  sample: [settings]
extension:
  description: The extension in the scale set's model after the run (empty after a removal). Never holds protected settings.
  returned: always
  type: dict
  contains:
    id:
      description: ARM resource id.
      type: str
    name:
      description: Extension name.
      type: str
    publisher:
      description: Publisher.
      type: str
    type:
      description: Type.
      type: str
    type_handler_version:
      description: Handler version.
      type: str
    settings:
      description: Public settings.
      type: dict
    auto_upgrade_minor_version:
      description: Minor-version auto upgrade flag.
      type: bool
    enable_automatic_upgrade:
      description: Automatic upgrade flag.
      type: bool
    suppress_failures:
      description: Failure suppression flag.
      type: bool
    force_update_tag:
      description: The force-update tag last sent.
      type: str
    provision_after_extensions:
      description: Extensions provisioned before this one.
      type: list
      elements: str
    provisioning_state:
      description: ARM provisioning state of the model extension.
      type: str
rollout:
  description: What the rollout did.
  returned: always
  type: dict
  contains:
    policy:
      description: The scale set's upgrade policy, V(Manual), V(Automatic) or V(Rolling).
      type: str
    instances_total:
      description: Number of instances in the scale set.
      type: int
    batches:
      description:
        - The instance ids of each manual upgrade sent, in order (in check mode, the batches that would be sent).
          Empty when Azure orchestrates the upgrade (C(Automatic), C(Rolling)).
      type: list
      elements: list
      sample: [["0"], ["1"], ["2"]]
    upgraded:
      description: Ids of the instances the rollout reached.
      type: list
      elements: str
    succeeded:
      description: Ids of the upgraded instances whose handler succeeded (or, for a removal, that no longer run it).
      type: list
      elements: str
    failed:
      description: Upgraded instances whose handler failed, with the handler's messages.
      type: list
      elements: dict
      contains:
        instance_id:
          description: Instance id.
          type: str
        message:
          description: The handler's status and substatus messages.
          type: str
    pending:
      description: Ids of targeted instances not upgraded (the rollout stopped, timed out, or was not waited on).
      type: list
      elements: str
    stopped:
      description: Whether the rollout stopped before reaching every targeted instance.
      type: bool
    reason:
      description: Why it stopped.
      type: str
instances:
  description: Every instance's view of the extension after the run.
  returned: always
  type: list
  elements: dict
  contains:
    instance_id:
      description: Instance id.
      type: str
    latest_model_applied:
      description: Whether the instance runs the scale set's latest model.
      type: bool
    state:
      description: V(succeeded), V(failed), V(transitioning), V(unknown), or V(absent) when the instance does not run the extension.
      type: str
    message:
      description: The handler's status and substatus messages on this instance.
      type: str
"""

import time
import uuid

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    AzureModule,
    HttpResponseError,
    describe_azure_error,
    resource_id,
    submit_with_retry,
    wait_for_poller,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    FINGERPRINT_TAG,
    fingerprint,
    fingerprint_matches,
    EXTENSION_OPTION_RULES,
    EXTENSION_OPTIONS,
    build_body,
    changed_properties,
    default_timeout,
    extension_result,
    identity_conflicts,
    resolve_type_handler_version,
    validate_extension_options,
    mask_secrets,
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
            return self.compute.virtual_machine_scale_sets.get(self.group, self.vmss_name).as_dict()
        except HttpResponseError as exc:
            if exc.status_code == 404:
                self.azure.fail("virtual machine scale set %r not found in resource group %r (%s)" % (
                    self.vmss_name, self.group, exc.error.code if exc.error else "NotFound"), error_code="NotFound")
            self.azure.fail_azure(exc, "reading", self.vmss_id)

    def read_extension(self):
        try:
            return self.compute.virtual_machine_scale_set_extensions.get(self.group, self.vmss_name,
                                                                         self.name).as_dict()
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return None
            self.azure.fail_azure(exc, "reading", self.ext_id)

    def read_instances(self):
        try:
            return [vm.as_dict() for vm in self.compute.virtual_machine_scale_set_vms.list(
                self.group, self.vmss_name, expand="instanceView")]
        except HttpResponseError as exc:
            self.azure.fail_azure(exc, "reading the instances of", self.vmss_id)

    def resolve_version(self, location):
        return resolve_type_handler_version(self.azure, location, self.ext_id)

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
        if current is not None:
            conflicts = identity_conflicts(params, current)
            if conflicts:
                self.azure.fail(
                    "extension %s on scale set %s: %s cannot change in place. Delete the extension first "
                    "(state=absent) or use the azure_vm.extensions.rerun_extension role." % (
                        self.name, self.vmss_name, ", ".join(conflicts)))
        desired = dict(params)
        desired["tags"] = None  # scale-set extensions have no tags
        desired["type_handler_version"] = self.resolve_version(location)
        if params["rerun"]:
            desired["force_update_tag"] = str(uuid.uuid4())
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
        after = ext_result(body)
        after.update(id=self.ext_id, name=self.name)
        if params["protected_settings"] is not None:
            after["protected_settings"] = mask_secrets(params["protected_settings"])
        diff = dict(before=ext_result(current) if current else {}, after=after)
        for side in diff.values():
            for key in ("instance_view", "provisioning_state", "location", "tags"):
                side.pop(key, None)
        if self.azure.check_mode:
            return self.planned(mode, instances, targets, dict(changed=True, changes=changes, extension=diff["after"],
                                                               diff=diff))
        poller = self.submit(lambda: self.compute.virtual_machine_scale_set_extensions.begin_create_or_update(
            self.group, self.vmss_name, self.name, body, polling=params["wait"]))
        self.wrote = True
        self.update_fingerprint(vmss)
        if not params["wait"]:
            result = dict(changed=True, changes=changes, extension=ext_result(poller.result().as_dict()),
                          diff=diff)
            return self.no_wait(mode, instances, targets, result)
        ids = sort_ids(vm.get("instanceId") for vm in instances)
        self.wait_write(poller, "the model change", self.platform_timeout(mode, rolling_pct, ids), mode != "Manual")
        summary, statuses = self.rollout(mode, rolling_pct, instances, targets, present=True)
        result = dict(changed=True, changes=changes, extension=ext_result(self.read_extension() or {}),
                      diff=diff)
        return self.finish(result, summary, statuses)


def validate(azure):
    """Refuse bad input before anything is read or written, naming the option and what is allowed."""
    validate_extension_options(azure)
    params = azure.params
    for option in ("batch_percent", "max_unhealthy_percent"):
        low = 1 if option == "batch_percent" else 0
        if not low <= params[option] <= 100:
            azure.fail("%s must be between %d and 100; got %r" % (option, low, params[option]))
    if params["rolling_upgrade"] and not params["wait"]:
        azure.fail("rolling_upgrade=true needs wait=true (the extension rolling upgrade starts after the model change "
                   "has been applied)")
    wanted = params["upgrade_instances"] or []
    if len(wanted) > 1 and [w for w in wanted if w.lower() in ("all", "none")]:
        azure.fail("upgrade_instances: 'all' and 'none' cannot be mixed with instance ids; got %r" % wanted)


def main():
    azure = AzureModule(
        argument_spec=dict(
            EXTENSION_OPTIONS,
            vmss_name=dict(type="str", required=True),
            upgrade_instances=dict(type="list", elements="str"),
            batch_percent=dict(type="int", default=20),
            max_unhealthy_percent=dict(type="int", default=20),
            rolling_upgrade=dict(type="bool", default=False),
            protected_settings_fingerprint=dict(type="bool", default=True, no_log=False),
        ),
        supports_check_mode=True,
        **EXTENSION_OPTION_RULES
    )
    validate(azure)
    run = VmssExtension(azure)
    if run.step_timeout is None and azure.params["state"] == "present":
        run.step_timeout = default_timeout(azure.params["type"])
    result = run.present() if azure.params["state"] == "present" else run.absent()
    azure.exit(**result)


if __name__ == "__main__":
    main()
