# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""ARM's vocabulary without a connection: resource ids, SDK models as REST JSON, and the one way to read a
resource that may be absent."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    HttpResponseError,
    azure_error,
    is_not_found,
)


def resource_id(subscription_id, resource_group, *path):
    """The ARM id of a Microsoft.Compute resource: resource_id(sub, rg, 'virtualMachines', vm)."""
    return "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/%s" % (
        subscription_id, resource_group, "/".join(path))


def parse_resource_id(arm_id):
    """{lower-case segment name: the name after it} from an ARM id: 'subscriptions', 'resourcegroups',
    'virtualmachines', 'virtualmachinescalesets', 'extensions'..."""
    parts = (arm_id or "").strip("/").split("/")
    return dict((parts[i].lower(), parts[i + 1]) for i in range(0, len(parts) - 1, 2))


def as_rest(model):
    """An SDK model as ARM's REST JSON (camelCase, nested ``properties``), whichever generator built the SDK.

    TypeSpec-generated SDKs (azure-mgmt-compute >= 38, azure-mgmt-resource >= 25) are mappings of the wire JSON;
    older AutoRest/msrest SDKs (the lower end of requirements.txt, and what azure.azcollection pins) flatten
    ``properties`` into snake_case attributes, so they are serialized back to the wire form.
    """
    if model is None or isinstance(model, dict):
        return model
    if hasattr(model, "keys"):
        return model.as_dict()
    return model.serialize(keep_readonly=True)


def read_or_absent(fetch, target_id, missing=None, operation="reading"):
    """fetch()'s answer as REST JSON. A 404 is None (absent), or, with missing given, the error missing(exc)
    raises (one that names what is missing); any other ARM error raises AzureOperationError naming target_id."""
    try:
        return as_rest(fetch())
    except HttpResponseError as exc:
        if not is_not_found(exc):
            raise azure_error(exc, operation, target_id)
        if missing is None:
            return None
        raise missing(exc)
