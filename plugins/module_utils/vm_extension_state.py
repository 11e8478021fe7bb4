# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One VM extension driven to its declared state: read, check, compare, write, wait, report; and the reads of
vm_extension_info.

VmExtension is used by the vm_extension module (module_utils/extension_task.py), by the rerun (it hands over the
definition it reads and its own deadline) and by the fleet (module_utils/fleet.py), which hands over the VM it
already read so that a VM costs one ARM read however many extensions it declares. Raises AzureOperationError;
never ends the process.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import (
    as_rest,
    read_or_absent,
    resource_id,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    AzureOperationError,
    WaitTimeout,
    not_found_error,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_images import resolve_version
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTIONS,
    build_body,
    changed_properties,
    default_timeout,
    desired_definition,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import (
    extension_result,
    extensions_from_vm,
    handler_settled,
    handler_state_text,
    instance_view_result,
    named,
    not_running_reason,
    result_failed,
    status_messages,
    vm_agent_result,
    write_diff,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import (
    Deadline,
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
    return read_or_absent(
        lambda: connection.call_json("compute", "virtual_machines", "get", resource_group, vm_name,
                                     expand="instanceView"),
        resource_id(connection.subscription_id, resource_group, "virtualMachines", vm_name),
        missing=lambda exc: not_found_error(exc, connection.subscription_id, resource_group, resource=("vm", vm_name)))


def extension_in(vm, name):
    """The named extension from a VM read (ARM lists a VM's extensions in full), or None; names are
    case-insensitive."""
    return named(extensions_from_vm(vm), name)


def check_vm_running(vm, vm_name):
    """Fail fast, before any write, on a VM that Azure will not run extension operations on."""
    reason = not_running_reason((vm.get("properties") or {}).get("instanceView"), "VM %s" % vm_name)
    if reason:
        raise AzureOperationError(reason, error_code="VMNotRunning", changed=False)


class ExtensionState(object):
    """What VmExtension and VmssExtension share: the extension's address (connection, resource group, parent,
    name), the task's deadline, check mode, the progress hook, and the warnings for the task's output."""

    kind = None
    parent_type = None  # the ARM type segment of the parent: virtualMachines, virtualMachineScaleSets
    parent_words = None

    def __init__(self, connection, resource_group, parent_name, name, deadline, check_mode, progress):
        self.connection = connection
        self.group = resource_group
        self.name = name
        self.deadline = deadline
        self.check_mode = check_mode
        self.progress = progress
        self.warnings = []
        self.compute = connection.compute
        self.where = "%s %s" % (self.parent_words, parent_name)
        self.parent_id = resource_id(connection.subscription_id, resource_group, self.parent_type, parent_name)
        self.ext_id = "%s/extensions/%s" % (self.parent_id, name)


class VmExtension(ExtensionState):
    """One extension on one VM: present(definition) or absent() return the result dict, failures raise.

    deadline: the waiter.Deadline every wait of the task shares. vm: the VM as already read with
    $expand=instanceView, to skip reading it again. progress: the waits' progress hook."""

    kind = "vm"
    parent_type = "virtualMachines"
    parent_words = "VM"

    def __init__(self, connection, resource_group, vm_name, name, deadline, check_mode=False, progress=None,
                 vm=None):
        super(VmExtension, self).__init__(connection, resource_group, vm_name, name, deadline, check_mode, progress)
        self.vm_name = vm_name
        self._vm = vm

    @property
    def interval(self):
        return self.connection.polling_interval

    # ---- reads -------------------------------------------------------------------------------------------------
    def read_vm(self):
        return self._vm if self._vm is not None else read_vm(self.connection, self.group, self.vm_name)

    def read(self):
        """(this extension or None, the VM), both as Azure has them now."""
        vm = self.read_vm()
        return extension_in(vm, self.name), vm

    def read_extension(self):
        return read_or_absent(lambda: self.compute.virtual_machine_extensions.get(
            self.group, self.vm_name, self.name, expand="instanceView"), self.ext_id)

    # ---- checks before any write -------------------------------------------------------------------------------
    def check_ready(self, vm, check_vm_agent=True, ignore_failed_extensions=False):
        """The VM runs, its agent is Ready, and no other extension has failed (Azure fails new installs then)."""
        check_vm_running(vm, self.vm_name)
        view = (vm.get("properties") or {}).get("instanceView") or {}
        if check_vm_agent:
            agent = vm_agent_result(view)
            if not agent["ready"]:
                raise AzureOperationError(
                    "the VM agent on %s is not Ready (status: %s, message: %s), so Azure cannot run extension "
                    "handlers there. Install or repair the agent (role azure_vm.extensions.waagent), or set "
                    "check_vm_agent=false to try anyway." % (self.vm_name, agent["status"], agent["message"]),
                    vm_agent=agent, changed=False)
        if not ignore_failed_extensions:
            failed = [ext for ext in (extension_result(item) for item in extensions_from_vm(vm))
                      if (ext["name"] or "").lower() != self.name.lower() and result_failed(ext)]
            if failed:
                raise AzureOperationError(
                    "extension %s on VM %s is in a failed state, and Azure fails new extension installs on a VM "
                    "with a failed extension. Fix or remove it first (or set ignore_failed_extensions=true):\n%s" % (
                        ", ".join(ext["name"] for ext in failed), self.vm_name,
                        "\n".join("%s: %s" % (ext["name"], status_messages(ext.get("instance_view")) or
                                              handler_state_text(ext)) for ext in failed)),
                    failed_extensions=[ext["name"] for ext in failed], changed=False)

    # ---- writes and waits --------------------------------------------------------------------------------------
    def submit(self, begin, operation="writing"):
        return submit_with_retry(begin, self.deadline, min(self.interval, 5), operation, self.ext_id,
                                 progress=self.progress)

    def wait_for_handler(self, changed, suppress_failures):
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
                    self.deadline.seconds, self.name, self.vm_name, handler_state_text(exc.last)),
                extension=exc.last, instance_view=exc.last.get("instance_view"), changed=changed)
        view = ext.get("instance_view") or instance_view_result({})
        if result_failed(ext):
            if suppress_failures:
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
    def absent(self, wait=True):
        vm = self.read_vm()
        current = extension_in(vm, self.name)  # a missing VM is an error, not "already absent"
        if current is None:
            return dict(changed=False, changes=[], extension={})
        check_vm_running(vm, self.vm_name)
        diff = dict(before=extension_result(current), after={})
        if self.check_mode:
            return dict(changed=True, changes=["state"], extension=extension_result(current), diff=diff)
        poller = self.submit(lambda: self.compute.virtual_machine_extensions.begin_delete(
            self.group, self.vm_name, self.name, polling=wait), "deleting")
        if wait:
            try:
                wait_for_poller(poller, self.deadline, "removal of extension %s from VM %s" % (self.name,
                                                                                               self.vm_name),
                                "deleting", self.ext_id, progress=self.progress, changed=True)
            except WaitTimeout:
                raise AzureOperationError("timed out after %ds waiting for the removal of extension %s from VM %s" % (
                    self.deadline.seconds, self.name, self.vm_name), changed=True)
        return dict(changed=True, changes=["state"], extension={}, diff=diff)

    def present(self, definition, wait=True):
        """definition: vm_extension's definition options (validated; see VM_EXTENSION_OPTIONS)."""
        vm = self.read_vm()
        location = definition.get("location") or vm.get("location")
        current = extension_in(vm, self.name)
        desired = desired_definition(definition, self.name, current, self.where,
                                     resolve_version(definition, self.connection, location, self.ext_id))
        use_fingerprint = definition.get("protected_settings_fingerprint", True)
        changes = ["state"] if current is None else changed_properties(desired, current, use_fingerprint)
        if current is not None and not changes:
            return self.unchanged(extension_result(current), wait, definition.get("suppress_failures"))
        self.check_ready(vm, definition.get("check_vm_agent", True), definition.get("ignore_failed_extensions", False))
        body = build_body(desired, location, current, use_fingerprint)
        diff = write_diff(current, body, self.ext_id, self.name, definition.get("protected_settings"), changes)
        summary = change_summary(self.name, current, body, changes)
        if self.check_mode:
            return dict(changed=True, changes=changes, extension=diff["after"], diff=diff, summary=summary)
        poller = self.submit(lambda: self.compute.virtual_machine_extensions.begin_create_or_update(
            self.group, self.vm_name, self.name, body, polling=wait))
        if not wait:
            return dict(changed=True, changes=changes, extension=extension_result(as_rest(poller.result())),
                        diff=diff, summary=summary)
        self.wait_for_operation(poller, "the write")
        ext, view = self.wait_for_handler(True, definition.get("suppress_failures"))
        return dict(changed=True, changes=changes, extension=ext, instance_view=view, diff=diff, summary=summary)

    def unchanged(self, ext, wait, suppress_failures):
        """The definition matches. Success means terminal: with wait=true a handler still transitioning (an
        earlier run was interrupted after its write, or wait=false) is waited for, and a failed one fails."""
        view = ext.get("instance_view") or instance_view_result({})
        result = dict(changed=False, changes=[], extension=ext, instance_view=view)
        if wait and not handler_settled(ext):
            ext, view = self.wait_for_handler(False, suppress_failures)
            result.update(extension=ext, instance_view=view)
            return result
        if result_failed(ext) and not suppress_failures:
            raise AzureOperationError(
                "extension %s on VM %s matches the declared definition but its handler failed: %s. Set rerun=true to "
                "run it again." % (self.name, self.vm_name, status_messages(view) or handler_state_text(ext)),
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


# ---- vm_extension_info -----------------------------------------------------------------------------------------
def select_extensions(vm, name=None):
    """The VM's extensions (or the named one) in extension_result() shape."""
    return [extension_result(ext) for ext in extensions_from_vm(vm)
            if not name or (ext.get("name") or "").lower() == name.lower()]


def vm_extension_info(azure):
    """vm_extension_info: a VM's extensions with their instance views and its agent, optionally waited for until
    none is transitioning (one VM read per poll); with wait, a failed one fails the task."""
    params = azure.params
    if params["timeout"] is not None and params["timeout"] <= 0:
        raise AzureOperationError("timeout must be a positive number of seconds; got %r" % params["timeout"])
    group, vm_name, name = params["resource_group"], params["vm_name"], params["name"]
    connection = azure.connection

    def pending(vm):
        return [ext for ext in select_extensions(vm, name) if not handler_settled(ext)]

    def describe(vm):
        return "; ".join("%s: %s" % (ext["name"], handler_state_text(ext)) for ext in pending(vm)) or "done"

    vm = read_vm(connection, group, vm_name)
    if params["wait"] and pending(vm):
        timeout = params["timeout"] or max(default_timeout(ext["type"]) for ext in select_extensions(vm, name))
        waiter = Waiter(Deadline(timeout), connection.polling_interval, progress=azure.progress)
        try:
            vm = waiter.until(lambda: read_vm(connection, group, vm_name), lambda read: not pending(read),
                              "extension(s) on VM %s to finish" % vm_name, describe=describe)
        except WaitTimeout as exc:
            raise AzureOperationError("timed out after %ds waiting for extension(s) %s on VM %s to finish; last "
                                      "status: %s" % (timeout, ", ".join(ext["name"] for ext in pending(exc.last)),
                                                      vm_name, describe(exc.last)),
                                      extensions=select_extensions(exc.last, name))
    extensions = select_extensions(vm, name)
    result = dict(changed=False, extensions=extensions,
                  vm_agent=vm_agent_result((vm.get("properties") or {}).get("instanceView")))
    failed = [ext for ext in extensions if result_failed(ext)]
    if params["wait"] and failed:
        raise AzureOperationError("extension(s) failed on VM %s:\n%s" % (vm_name, "\n".join(
            "%s: %s" % (ext["name"], status_messages(ext.get("instance_view")) or handler_state_text(ext))
            for ext in failed)), **result)
    return result
