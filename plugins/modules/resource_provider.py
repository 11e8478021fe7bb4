#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: resource_provider
short_description: Register or unregister an Azure resource provider in the subscription and report its state
version_added: 0.1.0
description:
  - Registers (or unregisters) a resource provider such as C(Microsoft.Compute) in the subscription, as
    C(az provider register --namespace) does, and waits until its registration state is C(Registered)
    (or C(Unregistered)).
  - Idempotent. A provider already in the desired state is left alone and nothing is sent; one already
    C(Registering) (or C(Unregistering)) is waited for, not requested again.
  - With O(reregister=true) the register request is sent even to a registered provider, which is how a preview
    feature registered with C(wait=false) is propagated to the provider later.
  - An unknown namespace fails the task before anything is sent, with the ARM error code.
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  namespace:
    description: Resource provider namespace, for example C(Microsoft.Compute).
    type: str
    required: true
  state:
    description:
      - V(registered) registers the provider, V(unregistered) unregisters it.
      - A provider that was never registered (C(NotRegistered)) counts as unregistered.
      - Azure refuses to unregister a provider that still has resources in the subscription; the task then fails
        with Azure's error.
    type: str
    default: registered
    choices: [registered, unregistered]
  reregister:
    description:
      - Send the register request even when the provider is already C(Registered), to propagate preview features
        registered since. Always reports a change. Only with O(state=registered).
    type: bool
    default: false
  wait:
    description:
      - Wait until the provider has reached the desired state. The task fails when O(timeout) runs out, with the
        last state seen.
      - With V(false) the task returns once Azure accepted the request.
    type: bool
    default: true
  timeout:
    description: Seconds for the whole task with O(wait=true), polling every O(polling_interval) seconds.
    type: int
    default: 1200
requirements:
  - azure-mgmt-resource
extends_documentation_fragment:
  - azure_vm.extensions.azure
  - azure_vm.extensions.attributes
seealso:
  - module: azure_vm.extensions.preview_feature
"""

EXAMPLES = r"""
- name: Make sure Microsoft.Compute is registered in the subscription
  azure_vm.extensions.resource_provider:
    namespace: Microsoft.Compute

- name: Propagate preview features registered earlier with wait=false
  azure_vm.extensions.resource_provider:
    namespace: Microsoft.Compute
    reregister: true

- name: Unregister a provider the subscription no longer uses
  azure_vm.extensions.resource_provider:
    namespace: Microsoft.Network
    state: unregistered
"""

RETURN = r"""
id:
  description: ARM id of the provider.
  returned: always
  type: str
  sample: /subscriptions/xxx/providers/Microsoft.Compute
namespace:
  description: Resource provider namespace, in Azure's casing.
  returned: always
  type: str
  sample: Microsoft.Compute
state_before:
  description: Registration state before the task.
  returned: always
  type: str
  sample: NotRegistered
state:
  description:
    - Registration state after the task, for example V(Registered), V(Registering) (with O(wait=false)) or
      V(Unregistered). In check mode, the state it would reach.
  returned: always
  type: str
  sample: Registered
registration_policy:
  description: The provider's registration policy, for example V(RegistrationRequired).
  returned: always
  type: str
  sample: RegistrationRequired
"""

from ansible_collections.azure_vm.extensions.plugins.module_utils.module import AzureModule
from ansible_collections.azure_vm.extensions.plugins.module_utils.registration import DEFAULT_TIMEOUT, resource_provider


def main():
    AzureModule(
        clients=("resources",),
        argument_spec=dict(
            namespace=dict(type="str", required=True),
            state=dict(type="str", default="registered", choices=["registered", "unregistered"]),
            reregister=dict(type="bool", default=False),
            wait=dict(type="bool", default=True),
            timeout=dict(type="int", default=DEFAULT_TIMEOUT),
        ),
        supports_check_mode=True,
    ).run(resource_provider)


if __name__ == "__main__":
    main()
