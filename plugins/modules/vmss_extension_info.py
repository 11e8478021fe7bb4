#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vmss_extension_info
short_description: Read the extensions of an Azure scale set's model with their status on every instance
version_added: 0.1.0
description:
  - Returns one extension or every extension of a virtual machine scale set's model, each with a summary of what
    the instances report for it, counts by handler state, the failing instances with the handler's messages,
    and the instances that do not run the latest model yet.
  - Also returns the scale set's upgrade policy and instance count.
author:
  - azure_vm.extensions maintainers (@azure-vm)
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
    description:
      - Name of one extension. Without it, every extension of the scale set's model is returned.
      - A missing extension returns an empty list, not an error.
    type: str
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.query
  - azure_vm.extensions.attributes.info
"""

EXAMPLES = r"""
- name: Every extension of a scale set, with the instances' status
  azure_vm.extensions.vmss_extension_info:
    resource_group: rg-demo
    vmss_name: vmss-web
  register: exts

- name: Instances where customScript failed, with the handler's messages
  azure_vm.extensions.vmss_extension_info:
    resource_group: rg-demo
    vmss_name: vmss-web
    name: customScript
    query: "extensions[0].instances.failed"
  register: failed
"""

RETURN = r"""
scale_set:
  description: The scale set.
  returned: always
  type: dict
  contains:
    id:
      description: ARM resource id.
      type: str
    name:
      description: Name.
      type: str
    location:
      description: Region.
      type: str
    upgrade_policy:
      description: V(Manual), V(Automatic) or V(Rolling).
      type: str
    orchestration_mode:
      description:
        - V(Uniform) or V(Flexible). On a Flexible scale set the instances are VMs, named by their VM names, and an
          instance counts as on the latest model when its VM extension carries the model's definition.
      type: str
    capacity:
      description: Number of instances.
      type: int
extensions:
  description: The extensions of the scale set's model, each with the instances' status.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: ARM resource id.
      type: str
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
    provision_after_extensions:
      description: Extensions provisioned before this one.
      type: list
      elements: str
    provisioning_state:
      description: ARM provisioning state of the model extension.
      type: str
      sample: Succeeded
    instances:
      description: What the instances report for this extension.
      type: dict
      contains:
        total:
          description: Number of instances.
          type: int
        counts:
          description:
            - Number of instances by handler state, V(succeeded), V(failed), V(transitioning), V(unknown), or
              V(absent) when the instance does not run the extension (not upgraded yet).
          type: dict
          sample: {succeeded: 4, failed: 1}
        failed:
          description: Instances whose handler failed.
          type: list
          elements: dict
          contains:
            instance_id:
              description: Instance id.
              type: str
            message:
              description: The handler's status and substatus messages.
              type: str
        not_latest_model:
          description: Ids of the instances that do not run the scale set's latest model.
          type: list
          elements: str
query_result:
  description: The value of O(query) over the result.
  returned: when O(query) is given
  type: raw
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule
from ansible_collections.azure_vm.extensions.plugins.module_utils.vmss_extension_state import vmss_extension_info


def main():
    AzureModule(
        argument_spec=dict(
            resource_group=dict(type="str", required=True),
            vmss_name=dict(type="str", required=True),
            name=dict(type="str"),
        ),
        query=True,
        supports_check_mode=True,
    ).run(vmss_extension_info)


if __name__ == "__main__":
    main()
