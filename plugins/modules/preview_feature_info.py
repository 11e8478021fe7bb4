#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: preview_feature_info
short_description: Read the registration state of Azure subscription preview features
version_added: 0.1.0
description:
  - Returns one preview feature (O(namespace) and O(name)), every feature of a resource provider (O(namespace)
    alone), or every feature of the subscription (neither), each with its registration state, as
    C(az feature show) and C(az feature list) do.
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  namespace:
    description: Resource provider namespace, for example C(Microsoft.Compute). Without it, every feature of the subscription is returned.
    type: str
  name:
    description:
      - Name of one feature, without the namespace, for example C(AutomaticExtensionUpgradePreview). Needs O(namespace).
      - A missing feature returns an empty list, not an error.
    type: str
requirements:
  - azure-mgmt-resource-features
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.query
  - azure_vm.extensions.attributes.info
seealso:
  - module: azure_vm.extensions.preview_feature
"""

EXAMPLES = r"""
- name: State of the automatic extension upgrade preview
  azure_vm.extensions.preview_feature_info:
    namespace: Microsoft.Compute
    name: AutomaticExtensionUpgradePreview
  register: aeu

- name: Fail unless it is registered
  ansible.builtin.assert:
    that: aeu.features[0].state == 'Registered'

- name: Every registered Microsoft.Compute preview feature, names only
  azure_vm.extensions.preview_feature_info:
    namespace: Microsoft.Compute
    query: "features[?state=='Registered'].name"
  register: compute_features

- name: Every feature of the subscription
  azure_vm.extensions.preview_feature_info:
  register: all_features
"""

RETURN = r"""
features:
  description: The features, in the order Azure lists them.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: ARM id of the feature.
      type: str
      sample: /subscriptions/xxx/providers/Microsoft.Features/providers/Microsoft.Compute/features/AutomaticExtensionUpgradePreview
    namespace:
      description: Resource provider namespace.
      type: str
      sample: Microsoft.Compute
    name:
      description: Feature name, without the namespace.
      type: str
      sample: AutomaticExtensionUpgradePreview
    state:
      description: Registration state, for example V(NotRegistered), V(Pending), V(Registering), V(Registered),
        V(Unregistering) or V(Unregistered).
      type: str
      sample: Registered
query_result:
  description: The value of O(query) over the result.
  returned: when O(query) is given
  type: raw
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule
from ansible_collections.azure_vm.extensions.plugins.module_utils.registration import preview_feature_info


def main():
    AzureModule(
        clients=("features",),
        argument_spec=dict(
            namespace=dict(type="str"),
            name=dict(type="str"),
        ),
        required_by=dict(name="namespace"),
        query=True,
        supports_check_mode=True,
    ).run(preview_feature_info)


if __name__ == "__main__":
    main()
