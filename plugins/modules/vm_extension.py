#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_extension
short_description: Install, update, rerun or remove an extension on an Azure VM, and report its real status
version_added: 0.1.0
description:
  - Keeps a VM extension at the declared publisher, type, version, settings, protected settings, upgrade flags
    and tags. Detects a change of the protected settings alone (see O(protected_settings_fingerprint)).
  - Success means the handler on the VM reported C(ProvisioningState/succeeded), not only that ARM accepted the
    write. A failing handler fails the task with its status and substatus messages (a CustomScript's stdout and
    stderr).
  - Before writing, checks that the VM exists and is running (a stopped or deallocated VM fails at once, naming
    its power state and what to do, with nothing written), that its VM agent reports Ready, and that no other
    extension on the VM is in a failed state (Azure would fail the new install anyway).
  - A 409 "another operation is in progress" (Azure serializes the operations on one VM) is retried with
    backoff until O(timeout). Any other 409 fails at once with Azure's error code.
  - "Success means terminal: with O(wait=true) the task returns only when the handler has finished, also when
    nothing had to change - a handler still transitioning (an earlier run was interrupted after its write, or used
    O(wait=false)) is waited for, and the task fails with the handler's messages if it failed."
  - Errors name what is missing (subscription, resource group, VM) with Azure's error code and request ids; at
    C(-vvv) the result also holds the Python traceback (RV(traceback)).
  - "Fleet pattern: submit every VM's change with O(wait=false) (the task returns once Azure accepted the write),
    then wait with M(azure_vm.extensions.vm_extension_info) and O(azure_vm.extensions.vm_extension_info#module:wait=true)."
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  resource_group:
    description: Resource group of the virtual machine.
    type: str
    required: true
  vm_name:
    description: Name of the virtual machine.
    type: str
    required: true
  name:
    description: Name of the extension on the VM.
    type: str
    required: true
  state:
    description: Whether the extension should exist.
    type: str
    default: present
    choices: [present, absent]
  protected_settings_fingerprint:
    description:
      - ARM never returns protected settings, so a change to them alone is invisible. With this on, the module
        stores a salted, deliberately slow PBKDF2-SHA256 fingerprint (200,000 iterations, random salt; never the
        secret) in the extension's tag C(azure_vm.extensions.protected_settings) and compares against it.
      - "Trade-off: anyone who can read the extension's tags can test guesses against the fingerprint at about
        0.1 s a guess. Strong secrets stay safe; a short password could be guessed. Turn this off to store
        nothing; then protected settings are only sent when something else changes, on creation, or with O(rerun)."
    type: bool
    default: true
  suppress_failures:
    description: Suppress handler failures (the VM's provisioning does not fail). Not managed when omitted.
    type: bool
  tags:
    description: Tags of the extension resource (the fingerprint tag is managed separately).
    type: dict
  location:
    description: Region of the extension. Defaults to the VM's region.
    type: str
  check_vm_agent:
    description:
      - Fail before writing when the VM agent does not report Ready (the extension could not be installed).
        Install or repair the agent with the C(azure_vm.extensions.waagent) role.
    type: bool
    default: true
  ignore_failed_extensions:
    description:
      - Go ahead even when another extension on the VM is in a failed state. Azure fails new installs on such a
        VM, so by default the task fails first and names the failed extension.
    type: bool
    default: false
  wait:
    description:
      - Wait until the handler has finished and check its status. With V(false) the task returns as soon as
        Azure accepted the write.
    type: bool
    default: true
  timeout:
    description:
      - Seconds for the whole task - retries of 409 conflicts, the write, and the wait for the handler together.
        Defaults to 90 minutes for CustomScript, CustomScriptExtension, Chef and DSC handlers and to 20 minutes for
        others, as Azure's handler timeouts.
    type: int
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.extension
  - azure_vm.extensions.extension_rerun
  - azure_vm.extensions.attributes
notes:
  - An entry of M(azure_vm.extensions.vm_extension_info)'s RV(azure_vm.extensions.vm_extension_info#module:extensions)
    can be passed back unchanged (its C(id), C(provisioning_state) and C(instance_view) are accepted and ignored,
    its Key Vault reference in ARM's shape is accepted, its masked fingerprint tag is ignored); it then reports no
    change.
attributes:
  diff_mode:
    support: full
    description:
      - Shows the extension before and after. Protected settings appear (masked) only when they are part of the
        change; the fingerprint tag's value is masked.
"""

EXAMPLES = r"""
- name: Run a script with CustomScript; a changed secret alone is applied
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    settings:
      fileUris: ["https://example.blob.core.windows.net/scripts/setup.sh"]
    protected_settings:
      commandToExecute: "./setup.sh --token {{ vault_token }}"

- name: Opt an extension into automatic upgrade, at the newest version in the region
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
    name: AzureMonitorLinuxAgent
    publisher: Microsoft.Azure.Monitor
    type: AzureMonitorLinuxAgent
    type_handler_version: latest
    enable_automatic_upgrade: true

- name: Run the script again (new force_update_tag every time)
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    rerun: true

- name: Fleet, step 1 - submit on every VM without waiting
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: "{{ inventory_hostname }}"
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    settings: {commandToExecute: "echo hello"}
    wait: false
  delegate_to: localhost

- name: Fleet, step 2 - wait for every VM's handler
  azure_vm.extensions.vm_extension_info:
    resource_group: rg-demo
    vm_name: "{{ inventory_hostname }}"
    name: customScript
    wait: true
  delegate_to: localhost

- name: Remove an extension
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
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
summary:
  description: What changed, in plain words (name, old and new version, the properties that changed).
  returned: when something changed
  type: str
  sample: "customScript: version 2.0 -> 2.1; settings changed"
traceback:
  description: The Python traceback of a failure (at C(-vvv) and more).
  returned: on failure, at verbosity 3 or more
  type: str
error_code:
  description: Azure's error code of a failure, for example V(ResourceGroupNotFound) or V(VMNotRunning).
  returned: on failure, when known
  type: str
request_id:
  description: The C(x-ms-request-id) of the failed Azure request (what Azure support asks for).
  returned: on failure, when Azure answered
  type: str
progress:
  description: What the waits saw, one line per change of state (at C(-v) and more).
  returned: at verbosity 1 or more, when the task waited
  type: list
  elements: str
changes:
  description: The options whose declared value differed from Azure (empty when nothing changed).
  returned: always
  type: list
  elements: str
  sample: [settings, protected_settings]
extension:
  description: The extension as Azure reports it after the run (empty after a removal). Never holds protected settings.
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
    provisioning_state:
      description: ARM provisioning state, for example V(Succeeded), V(Creating) (with O(wait=false)) or V(Failed).
      type: str
    tags:
      description: Tags, including the protected-settings fingerprint tag when used (its value masked).
      type: dict
instance_view:
  description: What the handler reports on the VM.
  returned: when the extension exists and O(wait=true)
  type: dict
  contains:
    state:
      description: V(succeeded), V(failed), V(transitioning) or V(unknown).
      type: str
    statuses:
      description: Statuses (code, level, display_status, message, time).
      type: list
      elements: dict
    substatuses:
      description: Substatuses (for example StdOut and StdErr).
      type: list
      elements: dict
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_task import (
    TASK_OPTION_RULES,
    VM_TASK_OPTIONS,
    run,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule


def main():
    AzureModule(argument_spec=VM_TASK_OPTIONS, supports_check_mode=True, **TASK_OPTION_RULES).run(
        lambda azure: run(azure, "vm"))


if __name__ == "__main__":
    main()
