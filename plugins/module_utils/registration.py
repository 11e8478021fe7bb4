# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Subscription registrations: preview features (Microsoft.Features) and resource providers, and what the
preview_feature, preview_feature_info and resource_provider modules do with them.

Neither is a long-running operation in ARM's sense: the register/unregister POST answers 200 at once with a
transitional state (Registering, Unregistering, Pending), and the state moves on by itself. So the only way to
know it is done is to GET it again until it settles. States are compared case-insensitively, as ARM's examples
spell them both ways ("Registered", "registered").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import as_rest, read_or_absent
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    AzureOperationError,
    WaitTimeout,
    arm_errors,
    not_found_error,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Deadline, Waiter

# 20 minutes: Azure's automatic extension upgrade documentation says a feature registration can take up to 15.
DEFAULT_TIMEOUT = 1200

# What each desired state accepts as done. A feature or provider that was never registered is as good as
# unregistered.
DONE = {
    "registered": ("registered",),
    "unregistered": ("unregistered", "notregistered"),
}
# Transitional states that are already heading for the desired state: wait, do not send the POST again.
HEADING = {
    "registered": ("registering", "pending"),
    "unregistered": ("unregistering",),
}
TARGET_NAME = {"registered": "Registered", "unregistered": "Unregistered"}

NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9-]+)+$")
FEATURE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def norm(state):
    return (state or "").lower()


def is_done(state, wanted):
    return norm(state) in DONE[wanted]


def is_heading(state, wanted):
    return norm(state) in HEADING[wanted]


def validate_namespace(namespace, option="namespace"):
    if not NAMESPACE_PATTERN.match(namespace or ""):
        raise AzureOperationError("%s must be a resource provider namespace such as 'Microsoft.Compute'; got %r" % (option, namespace))


def validate_feature_name(name):
    if name is not None and "/" in name:
        raise AzureOperationError("name must be the feature name alone, such as 'AutomaticExtensionUpgradePreview' "
                                  "(give the provider in namespace); got %r" % name)
    if name is not None and not FEATURE_PATTERN.match(name):
        raise AzureOperationError("name must be a preview feature name such as 'AutomaticExtensionUpgradePreview'; got %r" % name)


def validate_timeout(params):
    timeout = params.get("timeout")
    if timeout is not None and timeout <= 0:
        raise AzureOperationError("timeout must be a positive number of seconds; got %r" % timeout)


# ---- preview features -----------------------------------------------------------------------------------------
def feature_id(subscription_id, namespace, name):
    return "/subscriptions/%s/providers/Microsoft.Features/providers/%s/features/%s" % (
        subscription_id, namespace, name)


def feature_result(feature):
    """A feature (REST JSON) as the modules return it: namespace and name apart (ARM's name is 'Namespace/Name')."""
    full_name = feature.get("name") or ""
    feature_id_value = feature.get("id") or ""
    namespace, name = None, full_name
    if "/" in full_name:
        namespace, name = full_name.split("/", 1)
    else:
        match = re.search(r"/providers/Microsoft\.Features/providers/([^/]+)/features/([^/]+)$", feature_id_value,
                          re.IGNORECASE)
        if match:
            namespace = match.group(1)
    return dict(
        id=feature_id_value,
        namespace=namespace,
        name=name,
        state=canonical_state((feature.get("properties") or {}).get("state")),
    )


# ARM returns some features' states in lower case ('registered'); one spelling, so `state=='Registered'` finds all.
CANONICAL_STATES = dict((state.lower(), state) for state in (
    "Registered", "Registering", "NotRegistered", "Unregistered", "Unregistering", "Pending"))


def canonical_state(state):
    return CANONICAL_STATES.get(norm(state), state)


def read_feature(connection, namespace, name, missing_ok=False):
    """The feature as feature_result(), None when missing and missing_ok, else an error naming it."""
    missing = None if missing_ok else (lambda exc: not_found_error(
        exc, connection.subscription_id, resource=("feature", "%s/%s" % (namespace, name)),
        hint="Check the namespace and the name; azure_vm.extensions.preview_feature_info with namespace=%s lists "
             "its features." % namespace))
    feature = read_or_absent(lambda: connection.features.features.get(namespace, name),
                             feature_id(connection.subscription_id, namespace, name), missing=missing)
    return feature_result(feature) if feature is not None else None


def read_features(connection, namespace, name):
    """preview_feature_info's list: one feature, a namespace's, or all."""
    if name:
        found = read_feature(connection, namespace, name, missing_ok=True)
        return [found] if found else []
    features = connection.features.features
    with arm_errors("listing preview features of", "/subscriptions/%s/providers/Microsoft.Features/%sfeatures" % (
            connection.subscription_id, "providers/%s/" % namespace if namespace else "")):
        listed = features.list(namespace) if namespace else features.list_all()
        return [feature_result(as_rest(feature)) for feature in listed]


# ---- resource providers ---------------------------------------------------------------------------------------
def provider_id(subscription_id, namespace):
    return "/subscriptions/%s/providers/%s" % (subscription_id, namespace)


def provider_result(provider):
    provider = as_rest(provider)
    return dict(
        id=provider.get("id"),
        namespace=provider.get("namespace"),
        state=provider.get("registrationState"),
        registration_policy=provider.get("registrationPolicy"),
    )


def read_provider(connection, namespace, result=None):
    """The provider as provider_result(); a missing one raises naming it (with result, what the task did so far)."""
    provider = read_or_absent(
        lambda: connection.resources.providers.get(namespace), provider_id(connection.subscription_id, namespace),
        missing=lambda exc: not_found_error(exc, connection.subscription_id, resource=("provider", namespace),
                                            **(result or {})))
    return provider_result(provider)


def send_provider(connection, namespace, action, result=None):
    """POST .../providers/{namespace}/register or /unregister; the provider as provider_result()."""
    providers = connection.resources.providers
    with arm_errors("%sing resource provider" % action, provider_id(connection.subscription_id, namespace),
                    **(result or {})):
        if action == "register":
            return provider_result(providers.register(namespace))
        return provider_result(providers.unregister(namespace))


def wait_for_state(fetch, wanted, deadline, interval, what, progress=None):
    """Poll fetch() (a feature or provider result) through the waiter until it is in the wanted state.
    Raises waiter.WaitTimeout (with .last) at the deadline."""
    return Waiter(deadline, interval, progress=progress).until(
        fetch, lambda value: is_done(value["state"], wanted), what, describe=lambda value: value["state"])


def wait_for_provider(connection, namespace, wanted, deadline, current=None, result=None, progress=None):
    """Poll the provider until it is in the wanted state; raises waiter.WaitTimeout at the deadline."""
    if current is not None and is_done(current["state"], wanted):
        return current
    return wait_for_state(lambda: read_provider(connection, namespace, result), wanted, deadline,
                          connection.polling_interval, "resource provider %s to become %s" % (
                              namespace, TARGET_NAME[wanted]), progress)


# ---- the modules ------------------------------------------------------------------------------------------------
class PreviewFeature(object):
    """preview_feature: read, decide, request, wait for the feature, propagate to the provider, report."""

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
            return feature_result(as_rest(sent(self.namespace, self.name)))

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


def preview_feature(azure):
    validate_namespace(azure.params["namespace"])
    validate_feature_name(azure.params["name"])
    validate_timeout(azure.params)
    return PreviewFeature(azure).run()


def preview_feature_info(azure):
    params = azure.params
    if params["namespace"] is not None:
        validate_namespace(params["namespace"])
    validate_feature_name(params["name"])
    return dict(changed=False, features=read_features(azure.connection, params["namespace"], params["name"]))


def resource_provider(azure):
    """resource_provider: register or unregister (or register again) and wait."""
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
