# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The errors module_utils raise, and the one conversion of an SDK error into words a user can act on.

module_utils raise AzureOperationError (or a subclass); only the module wrapper (module.AzureModule.run) turns it
into fail_json, and the fleet catches it per VM. Needs no connection; azure-core is imported only for its
exception types.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from azure.core.exceptions import AzureError, HttpResponseError
except ImportError:  # the module wrapper reports the missing SDK; except clauses stay valid meanwhile
    class AzureError(Exception):  # noqa: D101
        pass

    class HttpResponseError(AzureError):  # noqa: D101
        pass


class AzureOperationError(Exception):
    """What went wrong, in words a user can act on.

    msg: the message (safe to show; never holds a secret). result: extra fields for the task result (what was
    done so far, the extension, instance views...). error_code, status_code: ARM's error code and HTTP status when
    Azure answered. request_id, correlation_id: x-ms-request-id and x-ms-correlation-request-id, which Azure
    support asks for.
    """

    def __init__(self, msg, error_code=None, status_code=None, request_id=None, correlation_id=None, **result):
        super(AzureOperationError, self).__init__(msg)
        self.msg = msg
        self.error_code = error_code
        self.status_code = status_code
        self.request_id = request_id
        self.correlation_id = correlation_id
        self.result = result

    def fields(self):
        """The result fields of a failed task: result plus the ARM ids that are known."""
        fields = dict(self.result)
        for key in ("error_code", "status_code", "request_id", "correlation_id"):
            if getattr(self, key) is not None:
                fields[key] = getattr(self, key)
        return fields


class AzureAuthError(AzureOperationError):
    """Credentials or cloud settings that cannot work; the message is safe to show."""


class WaitTimeout(AzureOperationError):
    """A deadline passed before the awaited thing was done; .last holds the last value fetched."""

    def __init__(self, msg, last=None, **result):
        super(WaitTimeout, self).__init__(msg, **result)
        self.last = last


def _response_headers(exc):
    response = getattr(exc, "response", None)
    return getattr(response, "headers", None) or {}


def error_code(exc):
    """ARM's error code of an SDK error (or of an AzureOperationError), or None."""
    if isinstance(exc, AzureOperationError):
        return exc.error_code
    return getattr(getattr(exc, "error", None), "code", None)


def error_message(exc):
    """ARM's error message of an SDK error, without the SDK's decoration."""
    error = getattr(exc, "error", None)
    return (getattr(error, "message", None) or getattr(exc, "message", None) or str(exc)).strip()


def is_not_found(exc):
    return getattr(exc, "status_code", None) == 404


def describe_azure_error(exc, operation, resource_id=None):
    """One line: what we did, on what, ARM's error code and message, and the ids support asks for."""
    parts = [operation]
    if resource_id:
        parts.append(resource_id)
    text = " ".join(parts) + " failed"
    code = error_code(exc)
    status = getattr(exc, "status_code", None)
    text += ": " + ("%s: " % code if code else "") + error_message(exc)
    if status:
        text += " (HTTP %s" % status
        headers = _response_headers(exc)
        for header in ("x-ms-request-id", "x-ms-correlation-request-id"):
            if headers.get(header):
                text += ", %s: %s" % (header, headers[header])
        text += ")"
    return text


def azure_error(exc, operation, resource_id=None, msg=None, **result):
    """The one conversion of an SDK HttpResponseError into AzureOperationError (message, code, status, ids).

    msg replaces the generated message (for callers that know better words, such as not_found_error)."""
    headers = _response_headers(exc)
    return AzureOperationError(msg or describe_azure_error(exc, operation, resource_id), error_code=error_code(exc),
                               status_code=getattr(exc, "status_code", None),
                               request_id=headers.get("x-ms-request-id"),
                               correlation_id=headers.get("x-ms-correlation-request-id"), **result)


class arm_errors(object):  # pylint: disable=invalid-name
    """Context manager: an HttpResponseError inside becomes AzureOperationError via azure_error().

        with arm_errors("reading", vm_id):
            vm = compute.virtual_machines.get(...)
    """

    def __init__(self, operation, resource_id=None, **result):
        self.operation = operation
        self.resource_id = resource_id
        self.result = result

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and isinstance(exc, HttpResponseError) and not isinstance(exc, AzureOperationError):
            raise azure_error(exc, self.operation, self.resource_id, **self.result)
        return False


# ARM's 404 codes say which level is missing: the subscription, the resource group, the parent of a child resource
# (a VM or scale set, when its extension was asked for), or the resource itself.
KIND_NAMES = {"vm": "virtual machine", "vmss": "virtual machine scale set", "extension": "extension",
              "instance": "scale-set instance", "feature": "preview feature", "provider": "resource provider"}


def not_found_error(exc, subscription_id, resource_group=None, resource=None, parent=None, hint=None, **result):
    """An AzureOperationError naming exactly what is missing, with ARM's error code.

    resource: (kind, name) of what was asked for, kind a key of KIND_NAMES; parent: (kind, name) of the resource
    it lives in (the VM of an extension); hint: words on what to check, appended. ARM's code decides which one is
    reported missing: SubscriptionNotFound -> the subscription, ResourceGroupNotFound -> the resource group,
    ParentResourceNotFound -> the parent, anything else (ResourceNotFound, NotFound) -> the resource itself.
    """
    code = error_code(exc) or "NotFound"
    lowered = code.lower()
    if lowered == "subscriptionnotfound":
        what = "subscription %s not found (check subscription_id and the credentials' access)" % subscription_id
    elif lowered == "resourcegroupnotfound":
        what = "resource group %r not found in subscription %s" % (resource_group, subscription_id)
    elif lowered == "parentresourcenotfound" and parent:
        what = "%s %r not found in resource group %r" % (KIND_NAMES.get(parent[0], parent[0]), parent[1],
                                                         resource_group)
    elif resource:
        what = "%s %r not found" % (KIND_NAMES.get(resource[0], resource[0]), resource[1])
        if parent:
            what += " on %s %r" % (KIND_NAMES.get(parent[0], parent[0]), parent[1])
        if resource_group:
            what += " in resource group %r" % resource_group
        elif subscription_id:
            what += " in subscription %s" % subscription_id
    else:
        what = "not found"
    msg = "%s (%s: %s)" % (what, code, error_message(exc))
    if hint:
        msg += ". " + hint
    return azure_error(exc, "reading", msg=msg, **result)
