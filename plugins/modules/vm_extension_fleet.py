#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_extension_fleet
short_description: Converge the declared extensions of many Azure VMs at once, in about the time Azure needs
version_added: 0.1.0
description:
  - Brings every listed VM's extensions to their declared state from one process on the controller. It is what
    the C(azure_vm.extensions.extensions) role runs once per play batch; call it directly to converge a list of
    VMs without an inventory.
  - Each VM is read once (C($expand=instanceView)); a VM whose extensions all match costs that one read.
  - Azure runs one extension operation at a time on a VM and VMs in parallel, so every VM goes on to its next
    operation as soon as its own is over. The total time is about the number of operations per VM times the
    handler time, whatever the number of VMs, or Azure's write budget when that is tighter. Waiting uses single
    reads while few VMs are pending and C(List All statusOnly=true) sweeps when many are.
  - Every extension gets exactly the checks and comparison of M(azure_vm.extensions.vm_extension) (VM agent
    Ready, no failed sibling, protected-settings fingerprint, handler status). A VM that fails does not stop the
    others; the task fails when any VM failed, and RV(hosts) tells which and why.
  - Every request waits for a slot in client-side token buckets seeded from Azure's published limits (ARM per
    subscription and principal, Compute per policy and per VM) and corrected by the
    C(x-ms-ratelimit-remaining-*) headers; a 429's C(Retry-After) is always honoured, and several runs with one
    principal (AWX job slices) share its budget. See the collection's C(docs/scheduler.md).
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  targets:
    description:
      - The VMs and what each should have. Only the protected values in it (C(protected_settings)) are hidden from
        the output; names, versions and settings are shown.
    type: list
    elements: dict
    required: true
    suboptions:
      host:
        description: Name that RV(hosts) uses for this VM (the inventory host). Defaults to O(targets[].vm_name).
        type: str
      vm_name:
        description: Name of the virtual machine. Defaults to O(targets[].host).
        type: str
      resource_group:
        description: Resource group of the virtual machine.
        type: str
        required: true
      subscription_id:
        description:
          - Subscription of the virtual machine. Defaults to the task's O(subscription_id) (or
            E(AZURE_SUBSCRIPTION_ID)). VMs of several subscriptions are converged in one task with one credential.
          - The C(extensions) role passes each inventory host's C(azure_subscription_id) here, so that a write
            always lands in the subscription the inventory named.
        type: str
      extensions:
        description:
          - The declared extensions, each with M(azure_vm.extensions.vm_extension)'s options (without
            C(resource_group), C(vm_name), C(wait) and C(timeout)), validated as that module validates them.
          - An entry of M(azure_vm.extensions.vm_extension_info)'s RV(azure_vm.extensions.vm_extension_info#module:extensions)
            can be given unchanged.
        type: list
        elements: dict
        default: []
        suboptions:
          name:
            description: Name of the extension on the VM.
            type: str
            required: true
          state:
            description: Whether the extension should exist.
            type: str
            default: present
            choices: [present, absent]
          publisher:
            description: Extension publisher. Required with O(targets[].extensions[].state=present).
            type: str
          type:
            description: Extension type. Required with O(targets[].extensions[].state=present).
            type: str
          type_handler_version:
            description: Handler version, or V(latest). Required with O(targets[].extensions[].state=present). A string; an unquoted YAML number is refused.
            type: raw
          settings:
            description: Public settings, compared exactly (see M(azure_vm.extensions.vm_extension)).
            type: dict
          protected_settings:
            description: Protected settings. Never logged or returned.
            type: dict
          protected_settings_from_key_vault:
            description: Protected settings held in Key Vault (C(secret_url), C(source_vault_id), or ARM's shape).
            type: dict
          protected_settings_fingerprint:
            description: Keep the protected-settings fingerprint tag (see M(azure_vm.extensions.vm_extension)).
            type: bool
            default: true
          auto_upgrade_minor_version:
            description: Let Azure use the newest minor version at deployment.
            type: bool
            default: true
          enable_automatic_upgrade:
            description: Automatic extension upgrade. Not managed when omitted.
            type: bool
          suppress_failures:
            description: Suppress handler failures. Not managed when omitted.
            type: bool
          force_update_tag:
            description: A string that, when changed, makes Azure run the handler again.
            type: str
          rerun:
            description: Run the handler again now (a new unique force-update tag).
            type: bool
            default: false
          provision_after_extensions:
            description: Extensions that must be provisioned before this one.
            type: list
            elements: str
          tags:
            description: Tags of the extension resource.
            type: dict
          location:
            description: Region of the extension. Defaults to the VM's region.
            type: str
          check_vm_agent:
            description: Fail before writing when the VM agent does not report Ready.
            type: bool
            default: true
          ignore_failed_extensions:
            description: Go ahead even when another extension on the VM is in a failed state.
            type: bool
            default: false
          id:
            description: Returned by the info module; accepted and ignored.
            type: str
          provisioning_state:
            description: Returned by the info module; accepted and ignored.
            type: str
          instance_view:
            description: Returned by the info module; accepted and ignored.
            type: dict
      exclusive:
        description: Also remove the extensions of the VM that are not declared.
        type: bool
        default: false
  polling_interval:
    description:
      - Seconds between two status reads while VMs are waited for. While the waiting VMs are fewer than the pages
        of one C(List All) sweep, each is read with its own GET at most this often; otherwise one
        C(List All statusOnly=true) sweep reads them all this often. Every request also waits for its slot in
        Azure's published throttling budgets.
      - C(poll_interval) is the old name, kept as an alias.
    type: float
    default: 5
    aliases: [poll_interval]
  progress_file:
    description:
      - A file to which a progress line (VMs submitted, succeeded, failed, waiting) is appended about every
        10 seconds while the fleet waits, for C(tail -f). The lines hold counts only. The same lines are returned
        as RV(progress) at C(-v).
    type: path
  max_workers:
    description: Threads that talk to Azure at once.
    type: int
    default: 32
  ignore_vm_failures:
    description:
      - Report failed VMs in RV(hosts) without failing the task (the C(extensions) role does this and fails each
        inventory host on its own). The task still fails when nothing could be done at all, for example on an
        authentication error.
    type: bool
    default: false
  timeout:
    description:
      - Seconds for the whole task, all operations and all VMs together. When it runs out, every VM still waited for
        fails with its handler's last status.
      - Defaults to the largest sum, over one VM's declared extensions, of Azure's handler timeouts (90 minutes for
        CustomScript, Chef and DSC handlers, 20 minutes for others and for removals).
    type: int
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.attributes
notes:
  - This module's O(polling_interval) replaces the auth fragment's one (it paces the fleet's own status polls).
attributes:
  diff_mode:
    support: none
    description: Per-VM changes are listed in RV(hosts) instead.
"""

EXAMPLES = r"""
- name: Converge two VMs' extensions in one task
  azure_vm.extensions.vm_extension_fleet:
    targets:
      - vm_name: vm-web-01
        resource_group: rg-demo
        extensions:
          - name: AzureMonitorLinuxAgent
            publisher: Microsoft.Azure.Monitor
            type: AzureMonitorLinuxAgent
            type_handler_version: "1.33"
            enable_automatic_upgrade: true
      - vm_name: vm-web-02
        resource_group: rg-demo
        exclusive: true
        extensions: []
  register: fleet
"""

RETURN = r"""
progress:
  description: The progress lines (VMs submitted, succeeded, failed, waiting) written while the fleet waited.
  returned: at verbosity 1 (C(-v)) and above, when the fleet waited
  type: list
  elements: str
hosts:
  description: Per target (by O(targets[].host)) what happened.
  returned: always
  type: dict
  contains:
    subscription_id:
      description: The subscription the VM was addressed in.
      type: str
    changed:
      description: Whether anything was written for this VM.
      type: bool
    failed:
      description: Whether this VM failed.
      type: bool
    msg:
      description:
        - In plain words, what changed (per extension - its name, old and new version, the properties that
          changed), or why it failed (with the handler's status and substatus messages).
      type: str
      sample: "changed: customScript: version 2.0 -> 2.1; settings changed; monitor: created at version 1.33"
    summary:
      description: One line per extension written or removed, as in RV(hosts.msg).
      type: list
      elements: str
    changes:
      description: Per extension name, the options that differed.
      type: dict
    error:
      description: On failure, the details - ARM's error code and request ids, the extension and its instance view.
      type: dict
    removed:
      description: Extensions removed because O(targets[].exclusive) is on.
      type: list
      elements: str
    warnings:
      description: Warnings for this VM.
      type: list
      elements: str
    extensions:
      description: The VM's extensions after the run, as M(azure_vm.extensions.vm_extension_info) returns them.
      type: list
      elements: dict
rounds:
  description: The most operations one VM needed.
  returned: always
  type: int
vm_reads:
  description: Reads sent (one per VM, one per completed operation, and the pages of the list sweeps).
  returned: always
  type: int
waiting:
  description: How the fleet waited.
  returned: always
  type: dict
  contains:
    list_sweeps:
      description: C(List All statusOnly=true) sweeps.
      type: int
    list_pages:
      description: Pages those sweeps read.
      type: int
    single_reads:
      description: GETs of one VM while waiting (and after a sweep showed it settled).
      type: int
elapsed_s:
  description: Seconds the convergence took.
  returned: always
  type: float
throttling:
  description: Requests sent, 429 answers met and the lowest remaining ARM budgets seen.
  returned: always
  type: dict
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.fleet import FLEET_TASK_OPTIONS, fleet_task
from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule


def main():
    AzureModule(argument_spec=FLEET_TASK_OPTIONS, pacing=True, supports_check_mode=True).run(fleet_task)


if __name__ == "__main__":
    main()
