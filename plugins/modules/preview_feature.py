#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: preview_feature
short_description: Register or unregister an Azure subscription preview feature and propagate it
version_added: 0.1.0
description:
  - Registers (or unregisters) a preview feature of a resource provider in the subscription, for example
    C(Microsoft.Compute/AutomaticExtensionUpgradePreview), the opt-in that automatic extension upgrade needs.
  - Azure answers the register request at once with C(Registering) and finishes later (up to 15 minutes), so with
    O(wait=true) the module polls the feature until it is C(Registered) (or C(Unregistered)).
  - With O(propagate=true) it then completes the opt-in the way Azure documents it, by registering the resource
    provider again (C(az provider register --namespace Microsoft.Compute)) and waiting until the provider is
    C(Registered).
  - Idempotent. A feature already in the desired state is left alone and nothing is sent, not even the provider
    re-registration. A feature already C(Registering) (or C(Unregistering)) is waited for, not requested again.
  - An unknown feature fails the task before anything is sent, naming the feature and the ARM error code.
  - Use M(azure_vm.extensions.resource_provider) to register or re-register a provider on its own.
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  namespace:
    description: Resource provider namespace of the feature, for example C(Microsoft.Compute).
    type: str
    required: true
  name:
    description: Name of the feature, without the namespace, for example C(AutomaticExtensionUpgradePreview).
    type: str
    required: true
  state:
    description:
      - V(registered) opts the subscription into the feature, V(unregistered) opts it out.
      - A feature that was never registered (C(NotRegistered)) counts as unregistered.
    type: str
    default: registered
    choices: [registered, unregistered]
  wait:
    description:
      - Wait until the feature has reached the desired state (and, with O(propagate=true), until the provider is
        C(Registered) again). The task fails when O(timeout) runs out, with the last state seen.
      - With V(false) the task returns once Azure accepted the request. Propagation then only happens if the
        feature already reached its state in Azure's answer; otherwise a warning says so, and a later run with
        O(wait=true) while the feature is still in transition, or M(azure_vm.extensions.resource_provider) with
        O(azure_vm.extensions.resource_provider#module:reregister=true), completes it.
    type: bool
    default: true
  timeout:
    description:
      - Seconds for the whole task - the wait for the feature and the wait for the provider together - with
        O(wait=true). Polls every O(polling_interval) seconds.
    type: int
    default: 1200
  propagate:
    description:
      - After the feature changed state, register its resource provider again so that the change reaches the
        provider, as Azure documents for preview features. Not done when the feature was already in the desired
        state.
    type: bool
    default: true
requirements:
  - azure-mgmt-resource-features
  - azure-mgmt-resource
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.attributes
notes:
  - A feature in state C(Pending) waits for approval by Microsoft; the module waits for it like for C(Registering)
    and fails at O(timeout) with the last state if no approval came.
seealso:
  - module: azure_vm.extensions.preview_feature_info
  - module: azure_vm.extensions.resource_provider
  - name: Automatic extension upgrade for VMs and scale sets
    description: Enabling preview access (register the feature, then re-register Microsoft.Compute).
    link: https://learn.microsoft.com/azure/virtual-machines/automatic-extension-upgrade
"""

EXAMPLES = r"""
- name: Opt the subscription into automatic extension upgrade (waits until Registered, then re-registers Microsoft.Compute)
  azure_vm.extensions.preview_feature:
    namespace: Microsoft.Compute
    name: AutomaticExtensionUpgradePreview

- name: Ask for a feature without waiting (Azure may take up to 15 minutes)
  azure_vm.extensions.preview_feature:
    namespace: Microsoft.Network
    name: AllowBastionPreview
    wait: false
  register: bastion_preview

- name: Opt out again
  azure_vm.extensions.preview_feature:
    namespace: Microsoft.Compute
    name: AutomaticExtensionUpgradePreview
    state: unregistered
"""

RETURN = r"""
id:
  description: ARM id of the feature.
  returned: always
  type: str
  sample: /subscriptions/xxx/providers/Microsoft.Features/providers/Microsoft.Compute/features/AutomaticExtensionUpgradePreview
namespace:
  description: Resource provider namespace of the feature.
  returned: always
  type: str
  sample: Microsoft.Compute
name:
  description: Feature name.
  returned: always
  type: str
  sample: AutomaticExtensionUpgradePreview
state_before:
  description: The feature's state before the task, as Azure reports it.
  returned: always
  type: str
  sample: NotRegistered
state:
  description:
    - The feature's state after the task, for example V(Registered), V(Registering) (with O(wait=false)) or
      V(Unregistered). In check mode, the state it would reach.
  returned: always
  type: str
  sample: Registered
provider_state:
  description:
    - Registration state of the feature's resource provider after the task (C(registrationState)), for example
      V(Registered).
  returned: always
  type: str
  sample: Registered
propagated:
  description: Whether the resource provider was registered again to propagate the change (in check mode, whether it would be).
  returned: always
  type: bool
  sample: true
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule
from ansible_collections.azure_vm.extensions.plugins.module_utils.registration import DEFAULT_TIMEOUT, preview_feature


def main():
    AzureModule(
        clients=("features", "resources"),
        argument_spec=dict(
            namespace=dict(type="str", required=True),
            name=dict(type="str", required=True),
            state=dict(type="str", default="registered", choices=["registered", "unregistered"]),
            wait=dict(type="bool", default=True),
            timeout=dict(type="int", default=DEFAULT_TIMEOUT),
            propagate=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    ).run(preview_feature)


if __name__ == "__main__":
    main()
