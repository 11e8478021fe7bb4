#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: extension_image_info
short_description: List the VM extension types and versions a publisher offers in an Azure region
version_added: 0.1.0
description:
  - The extension image catalogue of a region, as C(az vm extension image list) and C(Get-AzVMExtensionImage) show
    it - a publisher's extension types, each with its versions and the latest one.
  - Versions are ordered numerically (C(2.1.10) is newer than C(2.1.6)); ARM itself lists them as strings.
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  location:
    description: Azure region, for example C(westeurope).
    type: str
    required: true
  publisher:
    description: Extension publisher, for example C(Microsoft.Azure.Extensions).
    type: str
    required: true
  type:
    description: Only this extension type, for example C(CustomScript). Without it, every type of the publisher.
    type: str
  version:
    description:
      - Only versions under this prefix; C(2.1) matches C(2.1), C(2.1.6) and C(2.1.10) but not C(2.10).
    type: str
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.query
  - azure_vm.extensions.attributes.info
"""

EXAMPLES = r"""
- name: The CustomScript versions available in West Europe
  azure_vm.extensions.extension_image_info:
    location: westeurope
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
  register: custom_script

- name: The newest 2.1.x
  azure_vm.extensions.extension_image_info:
    location: westeurope
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    version: "2.1"
    query: "images[0].latest"
  register: newest
"""

RETURN = r"""
images:
  description: One entry per extension type of the publisher (or the one asked for).
  returned: always
  type: list
  elements: dict
  contains:
    publisher:
      description: Publisher.
      type: str
      sample: Microsoft.Azure.Extensions
    type:
      description: Extension type.
      type: str
      sample: CustomScript
    versions:
      description: Versions (under O(version) if given), oldest first in numeric order.
      type: list
      elements: str
      sample: ["2.0.2", "2.1.6", "2.1.10"]
    latest:
      description: The newest of RV(images[].versions), or null when none matched.
      type: str
      sample: "2.1.10"
query_result:
  description: The value of O(query) over the result.
  returned: when O(query) is given
  type: raw
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_images import image_info
from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule


def main():
    AzureModule(
        argument_spec=dict(
            location=dict(type="str", required=True),
            publisher=dict(type="str", required=True),
            type=dict(type="str"),
            version=dict(type="str"),
        ),
        query=True,
        supports_check_mode=True,
    ).run(image_info)


if __name__ == "__main__":
    main()
