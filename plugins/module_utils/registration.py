# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Subscription registrations: preview features (Microsoft.Features) and resource providers.

Neither is a long-running operation in ARM's sense: the register/unregister POST answers 200 at once with a
transitional state (Registering, Unregistering, Pending), and the state moves on by itself. So the only way to
know it is done is to GET it again until it settles. States are compared case-insensitively, as ARM's examples
spell them both ways ("Registered", "registered").
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    AzureOperationError,
    HttpResponseError,
    arm_errors,
    error_code,
    error_message,
    is_not_found,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Waiter

DEFAULT_TIMEOUT = 1200  # 20 minutes; seed 001 says a feature registration can take up to 15.

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
    """A FeatureResult as the modules return it: namespace and name apart (ARM's name is 'Namespace/Name')."""
    full_name = getattr(feature, "name", None) or ""
    feature_id_value = getattr(feature, "id", None) or ""
    namespace, name = None, full_name
    if "/" in full_name:
        namespace, name = full_name.split("/", 1)
    else:
        match = re.search(r"/providers/Microsoft\.Features/providers/([^/]+)/features/([^/]+)$", feature_id_value,
                          re.IGNORECASE)
        if match:
            namespace = match.group(1)
    properties = getattr(feature, "properties", None)
    return dict(
        id=feature_id_value,
        namespace=namespace,
        name=name,
        state=getattr(properties, "state", None),
    )


def read_feature(connection, namespace, name, missing_ok=False):
    """The feature as feature_result(), None when missing and missing_ok, else an error naming it."""
    try:
        return feature_result(connection.features.features.get(namespace, name))
    except HttpResponseError as exc:
        if is_not_found(exc):
            if missing_ok:
                return None
            code = error_code(exc) or "NotFound"
            raise AzureOperationError(
                "preview feature %s/%s not found in subscription %s (%s: %s). Check the namespace and the name; "
                "azure_vm.extensions.preview_feature_info with namespace=%s lists its features." % (
                    namespace, name, connection.subscription_id, code, error_message(exc), namespace),
                error_code=code, status_code=404)
        with arm_errors("reading preview feature", feature_id(connection.subscription_id, namespace, name)):
            raise


# ---- resource providers ---------------------------------------------------------------------------------------
def provider_id(subscription_id, namespace):
    return "/subscriptions/%s/providers/%s" % (subscription_id, namespace)


def provider_result(provider):
    return dict(
        id=provider.get("id"),
        namespace=provider.get("namespace"),
        state=provider.get("registrationState"),
        registration_policy=provider.get("registrationPolicy"),
    )


def read_provider(connection, namespace, result=None):
    """The provider as provider_result(); a missing one raises naming it (with result, what the task did so far)."""
    result = result or {}
    try:
        return provider_result(connection.resources.providers.get(namespace))
    except HttpResponseError as exc:
        if is_not_found(exc):
            code = error_code(exc) or "NotFound"
            raise AzureOperationError("resource provider %s not found in subscription %s (%s: %s)" % (
                namespace, connection.subscription_id, code, error_message(exc)), error_code=code, status_code=404,
                **result)
        with arm_errors("reading resource provider", provider_id(connection.subscription_id, namespace), **result):
            raise


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
