# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One VM extension driven to its declared state: read, check, compare, write, wait, report.

Used by the vm_extension module for one extension, and by the fleet engine (module_utils/fleet.py) for many VMs at
once, which hands it the VM it already read so that a VM costs one ARM read however many extensions it declares.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    HttpResponseError,
    as_rest,
    error_code,
    resource_id,
    submit_with_retry,
    wait_for_poller,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTIONS,
    build_body,
    changed_properties,
    default_timeout,
    desired_definition,
    extension_result,
    extensions_from_vm,
    handler_state,
    instance_view_result,
    status_messages,
    vm_agent_result,
    write_diff,
)

# The options of one VM extension (the vm_extension module adds vm_name; the fleet module takes it per target).
VM_EXTENSION_OPTIONS = dict(
    EXTENSION_OPTIONS,
    protected_settings_fingerprint=dict(type="bool", default=True, no_log=False),
    tags=dict(type="dict"),
    location=dict(type="str"),
    check_vm_agent=dict(type="bool", default=True),
    ignore_failed_extensions=dict(type="bool", default=False),
)


def read_vm(azure, resource_group, vm_name):
    """The VM with $expand=instanceView: its agent, and every extension with its instance view, in one read."""
    try:
        return as_rest(azure.connection.compute.virtual_machines.get(resource_group, vm_name, expand="instanceView"))
    except HttpResponseError as exc:
        if exc.status_code == 404:
            azure.fail("virtual machine %r not found in resource group %r (%s)" % (
                vm_name, resource_group, error_code(exc) or "NotFound"), error_code="NotFound")
        azure.fail_azure(exc, "reading", resource_id(azure.connection.subscription_id, resource_group,
                                                     "virtualMachines", vm_name))


class VmExtension(object):
    """One run of the module: read, compare, write, wait, report."""

    def __init__(self, azure, vm=None):
        """azure: an AzureModule (or anything with its params/connection/check_mode/fail/fail_azure/warn).

        vm: the VM as already read with $expand=instanceView, to skip reading it again.
        """
        self.azure = azure
        self._vm = vm
        self.params = azure.params
        self.group = self.params["resource_group"]
        self.vm_name = self.params["vm_name"]
        self.name = self.params["name"]
        self.compute = azure.connection.compute
        sub = azure.connection.subscription_id
        self.vm_id = resource_id(sub, self.group, "virtualMachines", self.vm_name)
        self.ext_id = resource_id(sub, self.group, "virtualMachines", self.vm_name, "extensions", self.name)
        self.timeout = self.params["timeout"] or default_timeout(self.params["type"])
        self.deadline = time.time() + self.timeout

    # ---- reads -------------------------------------------------------------------------------------------------
    def read_vm(self):
        return self._vm if self._vm is not None else read_vm(self.azure, self.group, self.vm_name)

    def extension_in(self, vm):
        """This extension from the VM read (ARM lists a VM's extensions in full), or None."""
        for ext in extensions_from_vm(vm):
            if (ext.get("name") or "").lower() == self.name.lower():
                return ext
        return None

    def read_extension(self):
        try:
            return as_rest(self.compute.virtual_machine_extensions.get(self.group, self.vm_name, self.name,
                                                                       expand="instanceView"))
        except HttpResponseError as exc:
            if exc.status_code == 404:
                return None
            self.azure.fail_azure(exc, "reading", self.ext_id)

    # ---- checks before any write -------------------------------------------------------------------------------
    def check_vm_ready(self, vm):
        view = (vm.get("properties") or {}).get("instanceView") or {}
        if self.params["check_vm_agent"]:
            agent = vm_agent_result(view)
            if not agent["ready"]:
                self.azure.fail(
                    "the VM agent on %s is not Ready (status: %s, message: %s), so Azure cannot run extension "
                    "handlers there. Install or repair the agent (role azure_vm.extensions.waagent), or set "
                    "check_vm_agent=false to try anyway." % (self.vm_name, agent["status"], agent["message"]),
                    vm_agent=agent)
        if not self.params["ignore_failed_extensions"]:
            failed = [ext for ext in view.get("extensions") or []
                      if ext.get("name") != self.name and handler_state(ext.get("statuses")) == "failed"]
            if failed:
                self.azure.fail(
                    "extension %s on VM %s is in a failed state, and Azure fails new extension installs on a VM "
                    "with a failed extension. Fix or remove it first (or set ignore_failed_extensions=true):\n%s" % (
                        ", ".join(ext["name"] for ext in failed), self.vm_name,
                        "\n".join("%s: %s" % (ext["name"], status_messages(ext)) for ext in failed)),
                    failed_extensions=[ext["name"] for ext in failed])

    # ---- writes and waits --------------------------------------------------------------------------------------
    def wait_for_handler(self, poller):
        """Follow the LRO, then the instance view, until the handler reports a terminal state."""
        try:
            if not wait_for_poller(poller, self.deadline - time.time()):
                self.fail_timeout()
            poller.result()
        except HttpResponseError as exc:
            current = self.read_extension() or {}
            view = extension_result(current).get("instance_view") if current else None
            if view and view["state"] == "failed":
                self.fail_handler(current, view)
            self.azure.fail_azure(exc, "applying", self.ext_id, extension=extension_result(current) if current else {})
        while True:
            current = self.read_extension()
            view = extension_result(current).get("instance_view") or instance_view_result({})
            if view["state"] in ("succeeded", "failed") or time.time() >= self.deadline:
                break
            time.sleep(min(self.azure.connection.polling_interval, max(self.deadline - time.time(), 0)))
        if view["state"] == "failed":
            if self.params["suppress_failures"]:
                self.azure.warn("extension %s on %s failed (suppress_failures is on): %s" % (
                    self.name, self.vm_name, status_messages(view)))
            else:
                self.fail_handler(current, view)
        elif view["state"] != "succeeded":
            self.fail_timeout(current)
        return current, view

    def fail_handler(self, current, view):
        self.azure.fail("extension %s on VM %s failed: %s" % (self.name, self.vm_name, status_messages(view)),
                        extension=extension_result(current), instance_view=view, changed=True)

    def fail_timeout(self, current=None):
        current = current or self.read_extension() or {}
        view = extension_result(current).get("instance_view") if current else None
        self.azure.fail("timed out after %ds waiting for extension %s on VM %s; last status: %s" % (
            self.timeout, self.name, self.vm_name,
            (status_messages(view) or view["state"]) if view else (current.get("properties") or {}).get(
                "provisioningState", "unknown")),
            extension=extension_result(current) if current else {}, instance_view=view, changed=True)

    def submit(self, begin):
        try:
            return submit_with_retry(begin, self.deadline, min(self.azure.connection.polling_interval, 5))
        except HttpResponseError as exc:
            self.azure.fail_azure(exc, "writing", self.ext_id)

    # ---- states ------------------------------------------------------------------------------------------------
    def absent(self):
        current = self.extension_in(self.read_vm())  # a missing VM is an error, not "already absent"
        if current is None:
            return dict(changed=False, changes=[], extension={})
        diff = dict(before=extension_result(current), after={})
        if self.azure.check_mode:
            return dict(changed=True, changes=["state"], extension=extension_result(current), diff=diff)
        poller = self.submit(lambda: self.compute.virtual_machine_extensions.begin_delete(
            self.group, self.vm_name, self.name, polling=self.params["wait"]))
        if self.params["wait"]:
            try:
                if not wait_for_poller(poller, self.deadline - time.time()):
                    self.fail_timeout()
                poller.result()
            except HttpResponseError as exc:
                self.azure.fail_azure(exc, "deleting", self.ext_id)
        return dict(changed=True, changes=["state"], extension={}, diff=diff)

    def present(self):
        params = self.params
        vm = self.read_vm()
        location = params["location"] or vm.get("location")
        current = self.extension_in(vm)
        desired = desired_definition(self.azure, current, location, "VM %s" % self.vm_name, self.ext_id)
        use_fingerprint = params["protected_settings_fingerprint"]
        changes = ["state"] if current is None else changed_properties(desired, current, use_fingerprint)
        if current is not None and not changes:
            view = extension_result(current).get("instance_view") or instance_view_result({})
            if view["state"] == "failed" and not params["suppress_failures"]:
                self.azure.fail("extension %s on VM %s matches the declared definition but its handler failed: %s. "
                                "Set rerun=true to run it again." % (self.name, self.vm_name, status_messages(view)),
                                extension=extension_result(current), instance_view=view)
            return dict(changed=False, changes=[], extension=extension_result(current), instance_view=view)
        self.check_vm_ready(vm)
        body = build_body(desired, location, current, use_fingerprint)
        diff = write_diff(current, body, self.ext_id, self.name, params["protected_settings"])
        if self.azure.check_mode:
            return dict(changed=True, changes=changes, extension=diff["after"], diff=diff)
        poller = self.submit(lambda: self.compute.virtual_machine_extensions.begin_create_or_update(
            self.group, self.vm_name, self.name, body, polling=params["wait"]))
        if not params["wait"]:
            return dict(changed=True, changes=changes, extension=extension_result(as_rest(poller.result())),
                        diff=diff)
        current, view = self.wait_for_handler(poller)
        return dict(changed=True, changes=changes, extension=extension_result(current), instance_view=view,
                    diff=diff)
