# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The region's extension image catalogue (`az vm extension image list`): which types and versions a publisher
offers, and the version `type_handler_version: latest` stands for. ARM lists versions as strings, so the newest is
found by numeric order (extension_model.version_tuple), never by string order."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError, arm_errors
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    handler_version,
    latest_version,
    versions_matching,
)


def list_versions(connection, location, publisher, extension_type):
    """The version names of one extension image in a region, as ARM lists them."""
    images = connection.compute.virtual_machine_extension_images
    return [image.name for image in images.list_versions(location, publisher, extension_type)]


def resolve_version(definition, connection, location, target_id):
    """The version to send: type_handler_version as given, or for 'latest' the major.minor of the newest in the
    region's catalogue."""
    if definition["type_handler_version"] != "latest":
        return definition["type_handler_version"]
    publisher, extension_type = definition["publisher"], definition["type"]
    with arm_errors("listing versions of extension image %s.%s in %s for" % (publisher, extension_type, location),
                    target_id):
        version = latest_version(list_versions(connection, location, publisher, extension_type))
    if not version:
        raise AzureOperationError("type_handler_version=latest: no versions of %s.%s in %s" % (
            publisher, extension_type, location))
    # Azure takes major.minor only (extension_model.VERSION_PATTERN): the newest major.minor, whose newest patch the
    # handler then runs.
    return handler_version(version)


def image_info(azure):
    """extension_image_info: each type of a publisher in a region (or the one asked for) with its versions under
    the `version` prefix in numeric order, and the latest."""
    params = azure.params
    images = azure.connection.compute.virtual_machine_extension_images
    with arm_errors("listing", "extension images of %s in %s" % (params["publisher"], params["location"])):
        types = [params["type"]] if params["type"] else \
            [image.name for image in images.list_types(params["location"], params["publisher"])]
        found = []
        for name in types:
            versions = versions_matching(list_versions(azure.connection, params["location"], params["publisher"],
                                                       name), params["version"])
            found.append(dict(publisher=params["publisher"], type=name, versions=versions,
                              latest=versions[-1] if versions else None))
    return dict(changed=False, images=found)
