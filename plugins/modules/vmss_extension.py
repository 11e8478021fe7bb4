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
  - A 409 "another operation is in progress" is retried with backoff until O(timeout); any other 409 fails at once.
  - Before any write, the task fails when a targeted instance is stopped or deallocated, naming it and its state.
  - "Both orchestration modes. On a Flexible scale set (the mode Azure recommends for new workloads) the instances
    are VMs: the module lists them with the VM List's scale-set filter, names them by their VM names (also in
    O(upgrade_instances) and in the results), upgrades them with the same batches, health gates and resume as on a
    Uniform scale set (C(manualupgrade) takes VM names there, so the model's protected settings reach them as
    Azure holds them), and counts an instance as on the latest model when its VM extension carries the model's
    definition. It never calls the Uniform-only scale-set instance view or scale-set VM APIs. See the collection's
    C(docs/vmss.md)."
  - "Success means terminal: when the model already matches, instances still transitioning are waited for, and
    instances that do not run the latest model yet (a rollout that was interrupted, or not waited on) are rolled
    out to in batches, as a first run would; the task reports V(instances) in RV(changes) then."
author:
  - azure_vm.extensions maintainers (@azure-vm)
requirements:
  - azure-mgmt-resource (the Tags API, for the protected-settings fingerprint)
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
  suppress_failures:
    description:
      - Suppress handler failures (the instances' provisioning does not fail). Not managed when omitted.
      - With V(true), failed instances are reported as a warning instead of failing the task; the rollout still
        stops at O(max_unhealthy_percent).
    type: bool
  upgrade_instances:
    description:
      - C(Manual) upgrade policy only. The instances to upgrade to the new model after a change - instance ids
        (numbers) on a Uniform scale set, VM names on a Flexible one; the other kind is refused, naming the mode,
        before any write.
      - Omitted or V([all]) upgrades every instance; V([]) or V([none]) only changes the model (instances pick it
        up when upgraded later).
      - When the extension already matches, the targeted instances that do not run the scale set's latest model
        yet (an earlier run with fewer instances, an interrupted rollout, O(wait=false)) are upgraded, so a canary
        run with a few ids followed by a run with V([all]) converges and a killed rollout is resumed. A manual
        upgrade applies the whole latest model, including other extensions' changes waiting in it; use V([]) to
        leave the instances alone.
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
  instances:
    description: Returned by M(azure_vm.extensions.vmss_extension_info); accepted and ignored (round trip).
    type: dict
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
      - Seconds for the whole task - retries of 409 conflicts, the model write and every batch of the rollout
        together. A rollout that reaches it stops, sends no further batch, and names the instances not reached.
      - Defaults to 90 minutes for CustomScript, CustomScriptExtension, Chef and DSC handlers and to 20 minutes
        for others, as Azure's handler timeouts.
    type: int
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.extension
  - azure_vm.extensions.extension_rerun
  - azure_vm.extensions.attributes
attributes:
  check_mode:
    support: full
    description: Reports what would change and the batches that would be sent; sends no write.
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
rerun:
  description:
    - What a rerun or a restore did (O(rerun=true) with a definition read from Azure or O(rerun_method=delete_reapply),
      or O(definition_from_backup)). Also on failure.
  returned: when the task reran or restored the extension
  type: dict
  contains:
    outcome:
      description:
        - V(succeeded), V(restored) (from a backup), V(unchanged) (a restore found it in place), V(planned)
          (check mode), V(refused) (nothing was written), V(failed) (after the backup was written),
          V(delete_failed) or V(not_found).
      type: str
    method:
      description: V(force_update_tag), V(delete_reapply) or V(restore).
      type: str
    handler_message:
      description: The handler's status and substatus messages after the reapply, on one line.
      type: str
    backup_file:
      description: The backup file of this run (empty when none was written).
      type: str
    backup:
      description:
        - When the rerun failed after its backup was written, the backup itself (never a secret), as
          O(definition_from_backup) takes it. Where the controller's disk does not last (AWX), keep it.
      returned: on failure after the backup
      type: dict
    summary:
      description: One line with the target, extension, method, outcome, handler message and backup file.
      type: str
      sample: 'vm=vm-web-01 extension=customScript method=delete_reapply outcome=succeeded handler="Enable succeeded"
        backup=/home/u/.ansible/azure_vm_extensions/backups/rg-demo_vm-web-01_customScript_20261207T120000Z.json'
before:
  description: The definition read from Azure before a rerun (or the one saved in the backup of a restore).
  returned: when the task reran or restored the extension
  type: dict
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

from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_task import (
    TASK_OPTION_RULES,
    VMSS_TASK_OPTIONS,
    run,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule


def main():
    # pacing: a rollout polls every instance's view for a long time, within the scale set's budgets.
    AzureModule(argument_spec=VMSS_TASK_OPTIONS, clients=("compute", "resources"), pacing=True,
                supports_check_mode=True, **TASK_OPTION_RULES).run(lambda azure: run(azure, "vmss"))


if __name__ == "__main__":
    main()
