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
attributes:
  check_mode:
    support: full
    description: Reads the feature and reports whether it would change; sends no register, unregister or provider request.
  diff_mode:
    support: full
    description: Shows the feature state before and after.
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

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    AzureModule,
    AzureOperationError,
    arm_errors,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.registration import (
    DEFAULT_TIMEOUT,
    TARGET_NAME,
    feature_id,
    feature_result,
    is_done,
    is_heading,
    read_feature,
    read_provider,
    send_provider,
    validate_feature_name,
    validate_namespace,
    validate_timeout,
    wait_for_provider,
    wait_for_state,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Deadline, WaitTimeout


class PreviewFeature(object):
    """One run: read, decide, request, wait for the feature, propagate to the provider, report."""

    def __init__(self, azure):
        self.azure = azure
        self.connection = azure.connection
        self.params = azure.params
        self.namespace = self.params["namespace"]
        self.name = self.params["name"]
        self.wanted = self.params["state"]
        self.timeout = self.params["timeout"]
        self.deadline = Deadline(self.timeout)
        self.label = "%s/%s" % (self.namespace, self.name)
        self.result = dict(changed=False, namespace=self.namespace, name=self.name, propagated=False)

    def fail(self, msg, **extra):
        result = dict(self.result)
        result.update(extra)
        raise AzureOperationError(msg, **result)

    def send(self):
        action = "register" if self.wanted == "registered" else "unregister"
        features = self.connection.features.features
        with arm_errors("%sing preview feature" % action,
                        feature_id(self.connection.subscription_id, self.namespace, self.name), **self.result):
            sent = features.register if action == "register" else features.unregister
            return feature_result(sent(self.namespace, self.name))

    def wait_for_feature(self, feature):
        if is_done(feature["state"], self.wanted):
            return feature
        try:
            feature = wait_for_state(lambda: read_feature(self.connection, self.namespace, self.name), self.wanted,
                                     self.deadline, self.connection.polling_interval,
                                     "preview feature %s to become %s" % (self.label, TARGET_NAME[self.wanted]),
                                     self.azure.progress)
        except WaitTimeout as exc:
            feature = exc.last
            self.result["state"] = feature["state"]
            hint = " (Pending: the feature waits for approval by Microsoft)" if feature["state"] == "Pending" else ""
            self.fail("timed out after %ds waiting for preview feature %s to become %s; last state: %s%s" % (
                self.timeout, self.label, TARGET_NAME[self.wanted], feature["state"], hint))
        self.result["state"] = feature["state"]
        return feature

    def propagate(self):
        """Register the provider again (what `az provider register` does) and wait until it is Registered."""
        provider = send_provider(self.connection, self.namespace, "register", self.result)
        self.result.update(propagated=True, provider_state=provider["state"])
        if not self.params["wait"]:
            return
        try:
            provider = wait_for_provider(self.connection, self.namespace, "registered", self.deadline, provider,
                                         self.result, self.azure.progress)
        except WaitTimeout as exc:
            self.result["provider_state"] = exc.last["state"]
            self.fail("preview feature %s is %s, but timed out after %ds (the task's timeout) waiting for resource "
                      "provider %s to be Registered again; last state: %s" % (
                          self.label, self.result["state"], self.timeout, self.namespace, exc.last["state"]))
        self.result["provider_state"] = provider["state"]

    def run(self):
        feature = read_feature(self.connection, self.namespace, self.name)
        self.result.update(id=feature["id"], state_before=feature["state"], state=feature["state"])
        if is_done(feature["state"], self.wanted):
            self.result["provider_state"] = read_provider(self.connection, self.namespace, self.result)["state"]
            provider_state = self.result["provider_state"]
            if self.wanted == "registered" and self.params["propagate"] and not is_done(provider_state, "registered"):
                self.azure.warn("preview feature %s is registered but resource provider %s is %s; register it with "
                                "azure_vm.extensions.resource_provider" % (self.label, self.namespace, provider_state))
            return self.result
        request = not is_heading(feature["state"], self.wanted)
        will_propagate = self.params["propagate"] and self.params["wait"]
        if self.azure.check_mode:
            provider = read_provider(self.connection, self.namespace, self.result)
            self.result.update(changed=request or will_propagate, state=TARGET_NAME[self.wanted],
                               provider_state=provider["state"], propagated=will_propagate)
            self.result["diff"] = dict(before=dict(state=feature["state"]), after=dict(state=TARGET_NAME[self.wanted]))
            return self.result
        if request:
            feature = self.send()
            self.result.update(changed=True, state=feature["state"])
        if self.params["wait"]:
            feature = self.wait_for_feature(feature)
            self.result["state"] = feature["state"]
        if self.params["propagate"]:
            if is_done(feature["state"], self.wanted):
                self.propagate()
                self.result["changed"] = True
            else:
                self.azure.warn("preview feature %s is %s, so resource provider %s was not registered again to "
                                "propagate it (wait=false). Run azure_vm.extensions.resource_provider with "
                                "reregister=true once the feature is %s." % (
                                    self.label, feature["state"], self.namespace, TARGET_NAME[self.wanted]))
        if "provider_state" not in self.result:
            self.result["provider_state"] = read_provider(self.connection, self.namespace, self.result)["state"]
        if self.result["changed"]:
            self.result["diff"] = dict(before=dict(state=self.result["state_before"]),
                                       after=dict(state=self.result["state"]))
        return self.result


def run(azure):
    validate_namespace(azure.params["namespace"])
    validate_feature_name(azure.params["name"])
    validate_timeout(azure.params)
    return PreviewFeature(azure).run()


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
    ).run(run)


if __name__ == "__main__":
    main()
