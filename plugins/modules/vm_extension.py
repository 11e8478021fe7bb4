#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: vm_extension
short_description: Install, update, rerun or remove an extension on an Azure VM, and report its real status
version_added: 0.1.0
description:
  - Keeps a VM extension at the declared publisher, type, version, settings, protected settings, upgrade flags
    and tags. Detects a change of the protected settings alone (see O(protected_settings_fingerprint)).
  - Success means the handler on the VM reported C(ProvisioningState/succeeded), not only that ARM accepted the
    write. A failing handler fails the task with its status and substatus messages (a CustomScript's stdout and
    stderr).
  - Before writing, checks that the VM exists, that its VM agent reports Ready, and that no other extension on
    the VM is in a failed state (Azure would fail the new install anyway).
  - A 409 "another operation is in progress" (Azure serializes the operations on one VM) is retried with
    backoff until O(timeout).
  - "Fleet pattern: submit every VM's change with O(wait=false) (the task returns once Azure accepted the write),
    then wait with M(azure_vm.extensions.vm_extension_info) and O(azure_vm.extensions.vm_extension_info#module:wait=true)."
author:
  - azure_vm.extensions maintainers (@azure-vm)
options:
  resource_group:
    description: Resource group of the virtual machine.
    type: str
    required: true
  vm_name:
    description: Name of the virtual machine.
    type: str
    required: true
  name:
    description: Name of the extension on the VM.
    type: str
    required: true
  state:
    description: Whether the extension should exist.
    type: str
    default: present
    choices: [present, absent]
  publisher:
    description:
      - Extension publisher, for example C(Microsoft.Azure.Extensions). Required with O(state=present).
      - Cannot change on an existing extension; delete it first or use the C(rerun_extension) role.
    type: str
  type:
    description:
      - Extension type, for example C(CustomScript). Required with O(state=present). Casing differences that
        Azure normalizes are not changes.
    type: str
  type_handler_version:
    description:
      - Handler version, for example C(2.1). Required with O(state=present).
      - V(latest) picks the highest version in the VM's region from the extension image catalogue (numeric
        order); with O(auto_upgrade_minor_version=true) its major.minor is used.
    type: str
  settings:
    description: Public settings (JSON object). Compared deeply; key order and "1" versus 1 do not count as changes.
    type: dict
  protected_settings:
    description:
      - Protected settings, encrypted by Azure and never returned by it. Never logged, shown masked in diffs.
      - Mutually exclusive with O(protected_settings_from_key_vault).
    type: dict
  protected_settings_from_key_vault:
    description: Protected settings held in Key Vault, referenced instead of passed.
    type: dict
    suboptions:
      secret_url:
        description: URL of the Key Vault secret.
        type: str
        required: true
      source_vault_id:
        description: Resource id of the Key Vault.
        type: str
        required: true
  protected_settings_fingerprint:
    description:
      - ARM never returns protected settings, so a change to them alone is invisible. With this on, the module
        stores a salted, deliberately slow PBKDF2-SHA256 fingerprint (200,000 iterations, random salt; never the
        secret) in the extension's tag C(azure_vm.extensions.protected_settings) and compares against it.
      - "Trade-off: anyone who can read the extension's tags can test guesses against the fingerprint at about
        0.1 s a guess. Strong secrets stay safe; a short password could be guessed. Turn this off to store
        nothing; then protected settings are only sent when something else changes, on creation, or with O(rerun)."
    type: bool
    default: true
  auto_upgrade_minor_version:
    description: Let Azure use the newest minor version of O(type_handler_version) at deployment (recommended).
    type: bool
    default: true
  enable_automatic_upgrade:
    description:
      - Let the platform upgrade the extension automatically when a new version is published (automatic
        extension upgrade). Not managed when omitted.
    type: bool
  suppress_failures:
    description: Suppress handler failures (the VM's provisioning does not fail). Not managed when omitted.
    type: bool
  force_update_tag:
    description: A string that, when changed, makes Azure run the handler again even if nothing else changed.
    type: str
  rerun:
    description:
      - Run the handler again now, by sending a new unique O(force_update_tag). Always reports a change.
      - Mutually exclusive with O(force_update_tag).
    type: bool
    default: false
  provision_after_extensions:
    description: Extensions that must be provisioned before this one.
    type: list
    elements: str
  tags:
    description: Tags of the extension resource (the fingerprint tag is managed separately).
    type: dict
  location:
    description: Region of the extension. Defaults to the VM's region.
    type: str
  check_vm_agent:
    description:
      - Fail before writing when the VM agent does not report Ready (the extension could not be installed).
        Install or repair the agent with the C(azure_vm.extensions.waagent) role.
    type: bool
    default: true
  ignore_failed_extensions:
    description:
      - Go ahead even when another extension on the VM is in a failed state. Azure fails new installs on such a
        VM, so by default the task fails first and names the failed extension.
    type: bool
    default: false
  wait:
    description:
      - Wait until the handler has finished and check its status. With V(false) the task returns as soon as
        Azure accepted the write.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait, including retries of 409 conflicts. Defaults to 90 minutes for CustomScript,
        CustomScriptExtension, Chef and DSC handlers and to 20 minutes for others, as Azure's handler timeouts.
    type: int
extends_documentation_fragment:
  - azure_vm.extensions.azure
attributes:
  check_mode:
    support: full
    description: Reports what would change and sends no write.
  diff_mode:
    support: full
    description: Shows the extension before and after; protected values are masked.
"""

EXAMPLES = r"""
- name: Run a script with CustomScript; a changed secret alone is applied
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    settings:
      fileUris: ["https://example.blob.core.windows.net/scripts/setup.sh"]
    protected_settings:
      commandToExecute: "./setup.sh --token {{ vault_token }}"

- name: Opt an extension into automatic upgrade, at the newest version in the region
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
    name: AzureMonitorLinuxAgent
    publisher: Microsoft.Azure.Monitor
    type: AzureMonitorLinuxAgent
    type_handler_version: latest
    enable_automatic_upgrade: true

- name: Run the script again (new force_update_tag every time)
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    rerun: true

- name: Fleet, step 1 - submit on every VM without waiting
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: "{{ inventory_hostname }}"
    name: customScript
    publisher: Microsoft.Azure.Extensions
    type: CustomScript
    type_handler_version: "2.1"
    settings: {commandToExecute: "echo hello"}
    wait: false
  delegate_to: localhost

- name: Fleet, step 2 - wait for every VM's handler
  azure_vm.extensions.vm_extension_info:
    resource_group: rg-demo
    vm_name: "{{ inventory_hostname }}"
    name: customScript
    wait: true
  delegate_to: localhost

- name: Remove an extension
  azure_vm.extensions.vm_extension:
    resource_group: rg-demo
    vm_name: vm-web-01
    name: customScript
    state: absent
"""

RETURN = r"""
changes:
  description: The options whose declared value differed from Azure (empty when nothing changed).
  returned: always
  type: list
  elements: str
  sample: [settings, protected_settings]
extension:
  description: The extension as Azure reports it after the run (empty after a removal). Never holds protected settings.
  returned: always
  type: dict
  contains:
    id:
      description: ARM resource id.
      type: str
    name:
      description: Extension name.
      type: str
    publisher:
      description: Publisher.
      type: str
    type:
      description: Type.
      type: str
    type_handler_version:
      description: Handler version.
      type: str
    settings:
      description: Public settings.
      type: dict
    auto_upgrade_minor_version:
      description: Minor-version auto upgrade flag.
      type: bool
    enable_automatic_upgrade:
      description: Automatic upgrade flag.
      type: bool
    suppress_failures:
      description: Failure suppression flag.
      type: bool
    force_update_tag:
      description: The force-update tag last sent.
      type: str
    provisioning_state:
      description: ARM provisioning state, for example V(Succeeded), V(Creating) (with O(wait=false)) or V(Failed).
      type: str
    tags:
      description: Tags, including the protected-settings fingerprint tag when used.
      type: dict
instance_view:
  description: What the handler reports on the VM.
  returned: when the extension exists and O(wait=true)
  type: dict
  contains:
    state:
      description: V(succeeded), V(failed), V(transitioning) or V(unknown).
      type: str
    statuses:
      description: Statuses (code, level, display_status, message, time).
      type: list
      elements: dict
    substatuses:
      description: Substatuses (for example StdOut and StdErr).
      type: list
      elements: dict
"""

import time
import uuid

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    AzureModule,
    HttpResponseError,
    resource_id,
    submit_with_retry,
    wait_for_poller,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTION_RULES,
    EXTENSION_OPTIONS,
    build_body,
    changed_properties,
    default_timeout,
    extension_result,
    extensions_from_vm,
    handler_state,
    identity_conflicts,
    instance_view_result,
    resolve_type_handler_version,
    validate_extension_options,
    mask_secrets,
    status_messages,
    vm_agent_result,
)


class VmExtension(object):
    """One run of the module: read, compare, write, wait, report."""

    def __init__(self, azure):
        self.azure = azure
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
        try:
            return self.compute.virtual_machines.get(self.group, self.vm_name, expand="instanceView").as_dict()
        except HttpResponseError as exc:
            if exc.status_code == 404:
                self.azure.fail("virtual machine %r not found in resource group %r (%s)" % (
                    self.vm_name, self.group, exc.error.code if exc.error else "NotFound"), error_code="NotFound")
            self.azure.fail_azure(exc, "reading", self.vm_id)

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

    def resolve_version(self, location):
        return resolve_type_handler_version(self.azure, location, self.ext_id)

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
        if current is not None:
            conflicts = identity_conflicts(params, current)
            if conflicts:
                self.azure.fail(
                    "extension %s on VM %s: %s cannot change in place. Delete the extension first (state=absent) "
                    "or use the azure_vm.extensions.rerun_extension role." % (self.name, self.vm_name,
                                                                              ", ".join(conflicts)))
        desired = dict(params)
        desired["type_handler_version"] = self.resolve_version(location)
        if params["rerun"]:
            desired["force_update_tag"] = str(uuid.uuid4())
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
        after = extension_result(body)
        after.update(id=self.ext_id, name=self.name)
        if params["protected_settings"] is not None:
            after["protected_settings"] = mask_secrets(params["protected_settings"])
        diff = dict(before=extension_result(current) if current else {}, after=after)
        for side in diff.values():
            side.pop("instance_view", None)
            side.pop("provisioning_state", None)
        if self.azure.check_mode:
            return dict(changed=True, changes=changes, extension=diff["after"], diff=diff)
        poller = self.submit(lambda: self.compute.virtual_machine_extensions.begin_create_or_update(
            self.group, self.vm_name, self.name, body, polling=params["wait"]))
        if not params["wait"]:
            return dict(changed=True, changes=changes, extension=extension_result(poller.result().as_dict()),
                        diff=diff)
        current, view = self.wait_for_handler(poller)
        return dict(changed=True, changes=changes, extension=extension_result(current), instance_view=view,
                    diff=diff)


def main():
    azure = AzureModule(
        argument_spec=dict(
            EXTENSION_OPTIONS,
            vm_name=dict(type="str", required=True),
            protected_settings_fingerprint=dict(type="bool", default=True, no_log=False),
            tags=dict(type="dict"),
            location=dict(type="str"),
            check_vm_agent=dict(type="bool", default=True),
            ignore_failed_extensions=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
        **EXTENSION_OPTION_RULES
    )
    validate_extension_options(azure)
    run = VmExtension(azure)
    result = run.present() if azure.params["state"] == "present" else run.absent()
    azure.exit(**result)


if __name__ == "__main__":
    main()
