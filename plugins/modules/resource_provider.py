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
attributes:
  check_mode:
    support: full
    description: Reads the provider and reports whether it would change; sends no register or unregister request.
  diff_mode:
    support: full
    description: Shows the registration state before and after.
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

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    AzureModule,
    AzureOperationError,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.registration import (
    DEFAULT_TIMEOUT,
    TARGET_NAME,
    is_done,
    is_heading,
    read_provider,
    send_provider,
    validate_namespace,
    validate_timeout,
    wait_for_provider,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Deadline, WaitTimeout


def run(azure):
    params = azure.params
    validate_namespace(params["namespace"])
    validate_timeout(params)
    if params["reregister"] and params["state"] != "registered":
        raise AzureOperationError("reregister=true needs state=registered")
    deadline = Deadline(params["timeout"])
    connection = azure.connection
    namespace, wanted = params["namespace"], params["state"]
    provider = read_provider(connection, namespace)
    result = dict(changed=False, id=provider["id"], namespace=provider["namespace"] or namespace,
                  state_before=provider["state"], state=provider["state"],
                  registration_policy=provider["registration_policy"])
    if is_done(provider["state"], wanted) and not params["reregister"]:
        return result
    request = params["reregister"] or not is_heading(provider["state"], wanted)
    if azure.check_mode:
        result.update(changed=request, state=TARGET_NAME[wanted])
    else:
        if request:
            provider = send_provider(connection, namespace, "register" if wanted == "registered" else "unregister",
                                     result)
            result.update(changed=True, state=provider["state"])
        if params["wait"]:
            try:
                provider = wait_for_provider(connection, namespace, wanted, deadline, provider, result, azure.progress)
            except WaitTimeout as exc:
                result["state"] = exc.last["state"]
                raise AzureOperationError("timed out after %ds waiting for resource provider %s to become %s; last "
                                          "state: %s" % (params["timeout"], namespace, TARGET_NAME[wanted],
                                                         exc.last["state"]), **result)
            result["state"] = provider["state"]
    if result["changed"]:
        result["diff"] = dict(before=dict(state=result["state_before"]), after=dict(state=result["state"]))
    return result


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
    ).run(run)


if __name__ == "__main__":
    main()
