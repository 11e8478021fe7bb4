# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One VM extension driven to its declared state: read, check, compare, write, wait, report.

Used by the vm_extension module for one extension, and by the fleet engine (module_utils/fleet.py) for many VMs at
once, which hands it the VM it already read so that a VM costs one ARM read however many extensions it declares.
Raises AzureOperationError; never ends the process.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    AzureOperationError,
    HttpResponseError,
    arm_errors,
    is_not_found,
    not_found_error,
    resource_id,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTIONS,
    build_body,
    changed_properties,
    default_timeout,
    desired_definition,
    extension_result,
    extensions_from_vm,
    handler_settled,
    handler_state,
    handler_state_text,
    instance_view_result,
    not_running_reason,
    status_messages,
    vm_agent_result,
    write_diff,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import (
    Deadline,
    WaitTimeout,
    Waiter,
    submit_with_retry,
    wait_for_poller,
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


def read_vm(connection, resource_group, vm_name):
    """The VM with $expand=instanceView: its agent, and every extension with its instance view, in one read."""
    try:
        return connection.compute.virtual_machines.get(resource_group, vm_name, expand="instanceView").as_dict()
    except HttpResponseError as exc:
        if is_not_found(exc):
            raise not_found_error(exc, connection.subscription_id, resource_group, resource=("vm", vm_name))
        with arm_errors("reading", resource_id(connection.subscription_id, resource_group, "virtualMachines",
                                               vm_name)):
            raise


def check_vm_running(vm, vm_name):
    """Fail fast, before any write, on a VM that Azure will not run extension operations on."""
    reason = not_running_reason((vm.get("properties") or {}).get("instanceView"), "VM %s" % vm_name)
    if reason:
        raise AzureOperationError(reason, error_code="VMNotRunning", changed=False)


class VmExtension(object):
    """One extension on one VM: present() or absent() return the result dict, failures raise."""

    def __init__(self, params, connection, check_mode=False, vm=None, deadline=None, progress=None):
        """params: vm_extension's options (validated). vm: the VM as already read with $expand=instanceView, to
        skip reading it again. deadline: a waiter.Deadline shared by the whole task (default: params timeout or
        the handler type's). progress: the waiter's progress hook."""
        self.params = params
        self.connection = connection
        self.check_mode = check_mode
        self._vm = vm
        self.progress = progress
        self.warnings = []
        self.group = params["resource_group"]
        self.vm_name = params["vm_name"]
        self.name = params["name"]
        self.compute = connection.compute
        sub = connection.subscription_id
        self.vm_id = resource_id(sub, self.group, "virtualMachines", self.vm_name)
        self.ext_id = resource_id(sub, self.group, "virtualMachines", self.vm_name, "extensions", self.name)
        self.timeout = params.get("timeout") or default_timeout(params.get("type"))
        self.deadline = deadline or Deadline(self.timeout)

    @property
    def interval(self):
        return self.connection.polling_interval

    # ---- reads -------------------------------------------------------------------------------------------------
    def read_vm(self):
        return self._vm if self._vm is not None else read_vm(self.connection, self.group, self.vm_name)

    def extension_in(self, vm):
        """This extension from the VM read (ARM lists a VM's extensions in full), or None."""
        for ext in extensions_from_vm(vm):
            if (ext.get("name") or "").lower() == self.name.lower():
                return ext
        return None

    def read_extension(self):
        try:
            return self.compute.virtual_machine_extensions.get(self.group, self.vm_name, self.name,
                                                               expand="instanceView").as_dict()
        except HttpResponseError as exc:
            if is_not_found(exc):
                return None
            with arm_errors("reading", self.ext_id):
                raise

    # ---- checks before any write -------------------------------------------------------------------------------
    def check_vm_ready(self, vm):
        check_vm_running(vm, self.vm_name)
        view = (vm.get("properties") or {}).get("instanceView") or {}
        if self.params["check_vm_agent"]:
            agent = vm_agent_result(view)
            if not agent["ready"]:
                raise AzureOperationError(
                    "the VM agent on %s is not Ready (status: %s, message: %s), so Azure cannot run extension "
                    "handlers there. Install or repair the agent (role azure_vm.extensions.waagent), or set "
                    "check_vm_agent=false to try anyway." % (self.vm_name, agent["status"], agent["message"]),
                    vm_agent=agent, changed=False)
        if not self.params["ignore_failed_extensions"]:
            failed = [ext for ext in view.get("extensions") or []
                      if ext.get("name") != self.name and handler_state(ext.get("statuses")) == "failed"]
            if failed:
                raise AzureOperationError(
                    "extension %s on VM %s is in a failed state, and Azure fails new extension installs on a VM "
                    "with a failed extension. Fix or remove it first (or set ignore_failed_extensions=true):\n%s" % (
                        ", ".join(ext["name"] for ext in failed), self.vm_name,
                        "\n".join("%s: %s" % (ext["name"], status_messages(ext)) for ext in failed)),
                    failed_extensions=[ext["name"] for ext in failed], changed=False)

    # ---- writes and waits --------------------------------------------------------------------------------------
    def submit(self, begin, operation="writing"):
        return submit_with_retry(begin, self.deadline, min(self.interval, 5), operation, self.ext_id,
                                 progress=self.progress)

    def wait_for_handler(self, changed):
        """Poll the extension until its handler is terminal; fail with its own words if it failed."""
        waiter = Waiter(self.deadline, self.interval, progress=self.progress)

        def fetch():
            current = self.read_extension()
            return extension_result(current) if current else {"provisioning_state": None}

        try:
            ext = waiter.until(fetch, handler_settled, "extension %s on VM %s" % (self.name, self.vm_name),
                               describe=handler_state_text)
        except WaitTimeout as exc:
            raise AzureOperationError(
                "timed out after %ds waiting for extension %s on VM %s; last status: %s" % (
                    self.timeout, self.name, self.vm_name, handler_state_text(exc.last)),
                extension=exc.last, instance_view=exc.last.get("instance_view"), changed=changed)
        view = ext.get("instance_view") or instance_view_result({})
        if view["state"] == "failed" or (ext.get("provisioning_state") or "").lower() in ("failed", "canceled"):
            if self.params["suppress_failures"]:
                self.warnings.append("extension %s on VM %s failed (suppress_failures is on): %s" % (
                    self.name, self.vm_name, status_messages(view)))
            else:
                raise AzureOperationError(
                    "extension %s on VM %s failed: %s" % (self.name, self.vm_name,
                                                          status_messages(view) or handler_state_text(ext)),
                    extension=ext, instance_view=view, changed=changed)
        return ext, view

    def wait_for_operation(self, poller, operation):
        """Follow the write's LRO; a handler failure ends it with an error, which the instance view explains."""
        try:
            wait_for_poller(poller, self.deadline, "%s of extension %s on VM %s" % (operation, self.name,
                                                                                    self.vm_name),
                            operation, self.ext_id, progress=self.progress, changed=True)
        except WaitTimeout:
            return  # the handler wait below reports what did not finish, with the handler's status
        except AzureOperationError:
            current = self.read_extension()
            if current is None or extension_result(current).get("instance_view", {}).get("state") != "failed":
                raise

    # ---- states ------------------------------------------------------------------------------------------------
    def absent(self):
        vm = self.read_vm()
        current = self.extension_in(vm)  # a missing VM is an error, not "already absent"
        if current is None:
            return dict(changed=False, changes=[], extension={})
        check_vm_running(vm, self.vm_name)
        diff = dict(before=extension_result(current), after={})
        if self.check_mode:
            return dict(changed=True, changes=["state"], extension=extension_result(current), diff=diff)
        poller = self.submit(lambda: self.compute.virtual_machine_extensions.begin_delete(
            self.group, self.vm_name, self.name, polling=self.params["wait"]), "deleting")
        if self.params["wait"]:
            try:
                wait_for_poller(poller, self.deadline, "removal of extension %s from VM %s" % (self.name,
                                                                                               self.vm_name),
                                "deleting", self.ext_id, progress=self.progress, changed=True)
            except WaitTimeout:
                raise AzureOperationError("timed out after %ds waiting for the removal of extension %s from VM %s" % (
                    self.timeout, self.name, self.vm_name), changed=True)
        return dict(changed=True, changes=["state"], extension={}, diff=diff)

    def present(self):
        params = self.params
        vm = self.read_vm()
        location = params["location"] or vm.get("location")
        current = self.extension_in(vm)
        desired = desired_definition(params, self.connection, current, location, "VM %s" % self.vm_name,
                                     self.ext_id)
        use_fingerprint = params["protected_settings_fingerprint"]
        changes = ["state"] if current is None else changed_properties(desired, current, use_fingerprint)
        if current is not None and not changes:
            return self.unchanged(extension_result(current))
        self.check_vm_ready(vm)
        body = build_body(desired, location, current, use_fingerprint)
        diff = write_diff(current, body, self.ext_id, self.name, params["protected_settings"], changes)
        if self.check_mode:
            return dict(changed=True, changes=changes, extension=diff["after"], diff=diff,
                        summary=change_summary(self.name, current, body, changes))
        poller = self.submit(lambda: self.compute.virtual_machine_extensions.begin_create_or_update(
            self.group, self.vm_name, self.name, body, polling=params["wait"]))
        summary = change_summary(self.name, current, body, changes)
        if not params["wait"]:
            return dict(changed=True, changes=changes, extension=extension_result(poller.result().as_dict()),
                        diff=diff, summary=summary)
        self.wait_for_operation(poller, "the write")
        ext, view = self.wait_for_handler(changed=True)
        return dict(changed=True, changes=changes, extension=ext, instance_view=view, diff=diff, summary=summary)

    def unchanged(self, ext):
        """The definition matches. Success means terminal: with wait=true a handler still transitioning (an
        earlier run was interrupted after its write, or wait=false) is waited for, and a failed one fails."""
        view = ext.get("instance_view") or instance_view_result({})
        result = dict(changed=False, changes=[], extension=ext, instance_view=view)
        if self.params["wait"] and not handler_settled(ext):
            ext, view = self.wait_for_handler(changed=False)
            result.update(extension=ext, instance_view=view)
            return result
        if view["state"] == "failed" and not self.params["suppress_failures"]:
            raise AzureOperationError(
                "extension %s on VM %s matches the declared definition but its handler failed: %s. Set rerun=true to "
                "run it again." % (self.name, self.vm_name, status_messages(view)),
                extension=ext, instance_view=view, changed=False)
        return result


def change_summary(name, current, body, changes):
    """What changed, in plain words: 'customScript: created at version 2.1' or
    'customScript: version 2.0 -> 2.1; settings, protected_settings changed'."""
    new_version = (body.get("properties") or {}).get("typeHandlerVersion")
    if current is None:
        return "%s: created at version %s" % (name, new_version)
    old_version = (current.get("properties") or {}).get("typeHandlerVersion")
    parts = []
    if "type_handler_version" in changes:
        parts.append("version %s -> %s" % (old_version, new_version))
    others = [change for change in changes if change != "type_handler_version"]
    if others:
        parts.append("%s changed" % ", ".join(others))
    return "%s (version %s): %s" % (name, new_version, "; ".join(parts)) if "type_handler_version" not in changes \
        else "%s: %s" % (name, "; ".join(parts))
