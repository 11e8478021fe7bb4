#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_extension_info
short_description: Read the extensions of an Azure VM with their real handler status
version_added: 0.1.0
description:
  - Returns one extension or every extension of a virtual machine, each with its definition and its instance
    view (the handler's statuses and substatuses, for example a CustomScript's stdout and stderr), and the
    VM agent's version and readiness.
  - With O(wait=true) it waits until the extensions have reached a terminal state (succeeded or failed), which
    is the second half of the fleet pattern "submit every change with C(wait=false), then wait".
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
    description:
      - Name of one extension. Without it, every extension of the VM is returned.
      - A missing extension returns an empty list, not an error.
    type: str
  wait:
    description:
      - Wait until the returned extensions are no longer transitioning.
      - The task fails if one of them ended in a failed state, with the handler's messages.
    type: bool
    default: false
  timeout:
    description:
      - Seconds for the whole task with O(wait=true). Defaults to 90 minutes when a CustomScript, Chef or DSC
        handler is among the extensions and 20 minutes otherwise, as Azure's own handler timeouts.
    type: int
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.query
  - azure_vm.extensions.attributes.info
"""

EXAMPLES = r"""
- name: All extensions of a VM, with their handler status
  azure_vm.extensions.vm_extension_info:
    resource_group: rg-demo
    vm_name: vm-web-01
  register: exts

- name: Only the names of extensions whose handler failed
  azure_vm.extensions.vm_extension_info:
    resource_group: rg-demo
    vm_name: vm-web-01
    query: "extensions[?instance_view.state=='failed'].name"
  register: failed

- name: Fleet pattern, step 2 - wait for what was submitted with wait=false
  azure_vm.extensions.vm_extension_info:
    resource_group: rg-demo
    vm_name: "{{ inventory_hostname }}"
    name: customScript
    wait: true
  delegate_to: localhost
"""

RETURN = r"""
extensions:
  description: The extensions, each with its instance view.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: ARM resource id.
      type: str
      sample: /subscriptions/xxx/resourceGroups/rg-demo/providers/Microsoft.Compute/virtualMachines/vm-web-01/extensions/customScript
    name:
      description: Extension name.
      type: str
    publisher:
      description: Extension publisher.
      type: str
      sample: Microsoft.Azure.Extensions
    type:
      description: Extension type.
      type: str
      sample: CustomScript
    type_handler_version:
      description: Handler version.
      type: str
      sample: "2.1"
    settings:
      description: Public settings.
      type: dict
    auto_upgrade_minor_version:
      description: Whether Azure may pick newer minor versions at deployment.
      type: bool
    enable_automatic_upgrade:
      description: Whether the platform upgrades the extension automatically.
      type: bool
    suppress_failures:
      description: Whether handler failures are suppressed.
      type: bool
    provisioning_state:
      description: ARM provisioning state.
      type: str
      sample: Succeeded
    tags:
      description:
        - Tags of the extension resource. The value of the protected-settings fingerprint tag
          (C(azure_vm.extensions.protected_settings)) is masked.
      type: dict
    force_update_tag:
      description: The force-update tag last sent.
      type: str
    provision_after_extensions:
      description: Extensions provisioned before this one.
      type: list
      elements: str
    protected_settings_from_key_vault:
      description:
        - The Key Vault reference of the protected settings, in ARM's shape (C(secretUrl), C(sourceVault.id)),
          which M(azure_vm.extensions.vm_extension) also accepts, so an entry can be passed back unchanged.
      type: dict
    location:
      description: Region of the extension.
      type: str
    instance_view:
      description: What the handler on the VM reports.
      type: dict
      contains:
        state:
          description: V(succeeded), V(failed), V(transitioning) or V(unknown), from the ProvisioningState status.
          type: str
        statuses:
          description: Statuses (code, level, display_status, message, time).
          type: list
          elements: dict
        substatuses:
          description: Substatuses, such as a Windows CustomScript's StdOut and StdErr.
          type: list
          elements: dict
vm_agent:
  description: The VM agent (waagent on Linux) as the VM's instance view reports it.
  returned: always
  type: dict
  contains:
    version:
      description: Agent version.
      type: str
      sample: 2.9.1.1
    status:
      description: Display status, V(Ready) when healthy.
      type: str
    message:
      description: The agent status message.
      type: str
    ready:
      description: Whether the agent reports Ready.
      type: bool
query_result:
  description: The value of O(query) over the result.
  returned: when O(query) is given
  type: raw
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule
from ansible_collections.azure_vm.extensions.plugins.module_utils.vm_extension_state import vm_extension_info


def main():
    AzureModule(
        argument_spec=dict(
            resource_group=dict(type="str", required=True),
            vm_name=dict(type="str", required=True),
            name=dict(type="str"),
            wait=dict(type="bool", default=False),
            timeout=dict(type="int"),
        ),
        query=True,
        supports_check_mode=True,
    ).run(vm_extension_info)


if __name__ == "__main__":
    main()
