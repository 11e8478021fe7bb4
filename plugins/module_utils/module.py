# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The module wrapper: an AnsibleModule with the auth options and a lazily built connection. Its run() is the only
place where an AzureOperationError (or an SDK error that escaped) becomes fail_json."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import importlib.util
import traceback

from ansible.module_utils.ansible_release import __version__ as ANSIBLE_VERSION
from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.azure_vm.extensions.plugins.module_utils.auth import AZURE_AUTH_ARGSPEC
from ansible_collections.azure_vm.extensions.plugins.module_utils.client import SDK_CLIENTS, AzureConnection
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    AzureOperationError,
    HttpResponseError,
    azure_error,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.query import apply_query


def _importable(module_name):
    """True when module_name can be imported, found without importing it (the SDKs take a second to import)."""
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


class AzureModule(object):
    """An AnsibleModule with the auth options, a lazily built AzureConnection and Azure-aware failures.

    clients: the SDK clients (keys of client.SDK_CLIENTS) the module uses; a missing package fails before any work.
    pacing: the connection paces its requests with the throttling scheduler (modules that send many).
    query: the module takes the `query` option (JMESPath over its result, returned as query_result).
    """

    def __init__(self, argument_spec, clients=("compute",), pacing=False, query=False, **kwargs):
        spec = dict(AZURE_AUTH_ARGSPEC)
        if query:
            spec["query"] = dict(type="str")
        spec.update(argument_spec)
        self.module = AnsibleModule(argument_spec=spec, **kwargs)
        self.params = self.module.params
        self.check_mode = self.module.check_mode
        self.pacing = pacing
        self.query = query
        for name in ("azure.core", "azure.identity") + tuple(SDK_CLIENTS[client][0] for client in clients):
            if not _importable(name):
                package = dict((mod, pkg) for mod, dummy, pkg in SDK_CLIENTS.values()).get(name) or name.replace(
                    ".", "-")
                self.module.fail_json(msg=missing_required_lib(package))
        self._connection = None
        self.progress_log = []

    @property
    def connection(self):
        """The AzureConnection, built on first use; raises AzureAuthError when the credentials cannot work."""
        if self._connection is None:
            self._connection = AzureConnection(self.params, pacing=self.pacing)
        return self._connection

    @property
    def verbosity(self):
        return getattr(self.module, "_verbosity", 0) or 0

    def progress(self, msg):
        """The waits' progress hook: collected, and returned as `progress` at -v (and later verbosities)."""
        self.progress_log.append(msg)
        self.module.debug(msg)

    def warn(self, msg):
        self.module.warn(msg)

    def run(self, work):
        """result = work(self), then exit_json; an AzureOperationError (or an SDK error that escaped) becomes
        fail_json with its message, result fields, ARM code and ids, and the traceback (-vvv)."""
        try:
            result = work(self)
            if self.query and self.params.get("query"):
                result["query_result"] = apply_query(self.params["query"], result)
        except AzureOperationError as exc:
            self._fail_exception(exc, exc.msg, exc.fields())
        except HttpResponseError as exc:
            converted = azure_error(exc, "calling Azure")
            self._fail_exception(exc, converted.msg, converted.fields())
        else:
            if self.progress_log and self.verbosity >= 1:
                result.setdefault("progress", list(self.progress_log))
            self.module.exit_json(**result)

    def _fail_exception(self, exc, msg, fields):
        """fail_json with the traceback: ansible-core 2.19+ takes the exception itself (shown with
        ANSIBLE_DISPLAY_TRACEBACK=error), older versions a string (shown at -vvv). At -vvv the formatted traceback
        is also returned as `traceback`, whatever the version and configuration."""
        if self.progress_log and self.verbosity >= 1:
            fields.setdefault("progress", list(self.progress_log))
        formatted = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if self.verbosity >= 3:
            fields["traceback"] = formatted
        modern = tuple(int(part) for part in ANSIBLE_VERSION.split(".")[:2] if part.isdigit()) >= (2, 19)
        self.module.fail_json(msg=msg, exception=exc if modern else formatted, **fields)
