# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What Azure reports about an extension and the VM it runs on, and how results and diffs show it: the result
shape of an extension, its handler's state and messages, the one rule for a failed extension, the VM agent's
readiness and the VM's power state.

Works on ARM's REST shape (camelCase dicts), so it needs no SDK and no connection. Used by the modules, the
fleet, the inventory plugin and the event source alike.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    FINGERPRINT_TAG,
    MASK,
    mask_secrets,
)

TERMINAL_STATES = ("succeeded", "failed", "canceled")


def extension_failed(provisioning_state, handler_state_value):
    """The one definition of a failed extension: what the modules, the fleet, the inventory's azure_ext_failed
    group and the event source all mean by "failed".

    provisioning_state: ARM's properties.provisioningState of the extension resource (None when not read);
    handler_state_value: 'succeeded', 'failed', 'transitioning' or 'unknown' (handler_state()).

    Failed when the handler reports failed, or when ARM's provisioning state is Failed (or Canceled); either alone
    is enough. ARM marks an extension Failed when its operation failed, also when the handler outlived Azure's
    handler timeout (20 minutes, 90 for CustomScript, Chef and DSC; the VM extension docs say it is "marked as
    timed out") while the handler may still report transitioning; Azure refuses new extension installs on such a
    VM and retries the extension on later VM operations. An operator repairing a fleet needs it targeted: a rerun
    (delete and reapply) repairs it.
    """
    return (handler_state_value or "").lower() == "failed" or \
        (provisioning_state or "").lower() in ("failed", "canceled")


# ARM provisioning states of an extension whose operation is still running.
TRANSITIONING_PROVISIONING = ("creating", "updating", "deleting", "migrating")


def extension_state(handler_state_value, provisioning_state):
    """One word for an extension as lists show it (the inventory's state hostvar, the event source's transitions):
    'failed' by extension_failed(); otherwise the handler's state from its instance view; when the handler has not
    reported, 'transitioning' while ARM's provisioning state says the operation runs, else 'unknown'."""
    if extension_failed(provisioning_state, handler_state_value):
        return "failed"
    if handler_state_value not in (None, "unknown"):
        return handler_state_value
    if (provisioning_state or "").lower() in TRANSITIONING_PROVISIONING:
        return "transitioning"
    return "unknown"


def result_failed(ext):
    """extension_failed() of an extension in extension_result() shape."""
    return extension_failed(ext.get("provisioning_state"), (ext.get("instance_view") or {}).get("state"))


def masked_tags(tags):
    """Tags as results and diffs show them: the fingerprint tag's value hidden (it is offline-guessing material)."""
    tags = dict(tags or {})
    if FINGERPRINT_TAG in tags:
        tags[FINGERPRINT_TAG] = MASK
    return tags


# ---- diffs -------------------------------------------------------------------------------------------------------
def write_diff(current, body, target_id, name, protected_settings, changes,
               omit=("instance_view", "provisioning_state")):
    """Before/after of a write as diff mode shows it: the fingerprint tag masked, the omitted fields left out, and
    protected settings only when they are part of the change (masked on both sides: ARM never returns them)."""
    after = extension_result(body)
    after.update(id=target_id, name=name)
    before = extension_result(current) if current else {}
    if protected_settings is not None and ("protected_settings" in changes or "state" in changes):
        after["protected_settings"] = mask_secrets(protected_settings)
        if current:
            before["protected_settings"] = MASK
    diff = dict(before=before, after=after)
    for side in diff.values():
        for key in omit:
            side.pop(key, None)
    return diff


# ---- results and status ------------------------------------------------------------------------------------------
def extension_result(ext):
    """The documented, snake_case view of an extension (never protected settings)."""
    props = ext.get("properties") or {}
    result = {
        "id": ext.get("id"),
        "name": ext.get("name"),
        "location": ext.get("location"),
        "publisher": props.get("publisher"),
        "type": props.get("type"),
        "type_handler_version": props.get("typeHandlerVersion"),
        "settings": props.get("settings"),
        "auto_upgrade_minor_version": props.get("autoUpgradeMinorVersion"),
        "enable_automatic_upgrade": props.get("enableAutomaticUpgrade"),
        "suppress_failures": props.get("suppressFailures"),
        "force_update_tag": props.get("forceUpdateTag"),
        "provision_after_extensions": props.get("provisionAfterExtensions"),
        "protected_settings_from_key_vault": props.get("protectedSettingsFromKeyVault"),
        "provisioning_state": props.get("provisioningState"),
        "tags": masked_tags(ext.get("tags")),
    }
    if "instanceView" in props:
        result["instance_view"] = instance_view_result(props.get("instanceView"))
    return result


def _status_list(statuses):
    return [{"code": status.get("code"), "level": status.get("level"), "display_status": status.get("displayStatus"),
             "message": status.get("message"), "time": status.get("time")}
            for status in statuses or []]


def instance_view_result(view):
    """Statuses, substatuses and a one-word state from an extension's instance view."""
    view = view or {}
    statuses = _status_list(view.get("statuses"))
    substatuses = _status_list(view.get("substatuses"))
    return {
        "name": view.get("name"),
        "type": view.get("type"),
        "type_handler_version": view.get("typeHandlerVersion"),
        "state": handler_state(statuses),
        "statuses": statuses,
        "substatuses": substatuses,
    }


def handler_state(statuses):
    """'succeeded', 'failed', 'transitioning' or 'unknown', from the ProvisioningState/... status code."""
    for status in statuses or []:
        code = (status.get("code") or "").lower()
        if code.startswith("provisioningstate/"):
            state = code.split("/")[1]
            if state in TERMINAL_STATES:
                return state
            return "transitioning"
    return "unknown"


def handler_settled(ext):
    """Whether an extension (extension_result shape) is terminal: ARM's provisioning state ended and the handler
    is not transitioning. What every wait for a handler waits for."""
    view = ext.get("instance_view") or {}
    return (ext.get("provisioning_state") or "").lower() in TERMINAL_STATES and view.get("state") != "transitioning"


def handler_state_text(ext):
    """One line: provisioning state, handler state and its messages (for progress and failure messages)."""
    view = ext.get("instance_view") or {}
    text = "provisioning %s, handler %s" % (ext.get("provisioning_state") or "unknown", view.get("state", "unknown"))
    messages = status_messages(view)
    return text + (": " + messages if messages else "")


def power_state(vm_instance_view):
    """'running', 'stopped', 'deallocated', ... from a VM instance view's PowerState/... status; 'unknown' when
    absent."""
    return vm_states(vm_instance_view)[0] or "unknown"


def vm_states(vm_instance_view):
    """(power state, provisioning state) of a VM or scale-set instance from its instance view, lower case:
    ('running', 'succeeded'), ('deallocated', 'succeeded'), (None, None) when the view has no such status."""
    power = provisioning = None
    for status in (vm_instance_view or {}).get("statuses") or []:
        code = (status.get("code") or "").lower()
        if code.startswith("powerstate/"):
            power = code.split("/", 1)[1]
        elif code.startswith("provisioningstate/"):
            provisioning = code.split("/")[1]
    return power, provisioning


# Power states in which Azure refuses extension operations (409 OperationNotAllowed "... when the VM is not
# running"), and what to do about each.
NOT_RUNNING_ADVICE = {
    "stopped": "start it (az vm start, or azure.azcollection.azure_rm_virtualmachine started=true)",
    "stopping": "wait until it has stopped, then start it",
    "deallocated": "start it (az vm start) - a deallocated VM runs no extension handler",
    "deallocating": "wait until it is deallocated, then start it",
}


def not_running_reason(vm_instance_view, what):
    """Why extension operations cannot run on this VM/instance now, or None. what: e.g. "VM vm-web-01"."""
    power, provisioning = vm_states(vm_instance_view)
    if power in NOT_RUNNING_ADVICE:
        return ("%s is %s (PowerState/%s), and Azure cannot modify extensions on a VM that is not running; %s, "
                "then run the task again." % (what, power, power, NOT_RUNNING_ADVICE[power]))
    if provisioning == "deleting":
        return "%s is being deleted (ProvisioningState/deleting)." % what
    # ProvisioningState/failed is not refused: a failed extension makes the VM's provisioning fail, and writing
    # the extension again is how that is repaired.
    return None


def status_messages(view):
    """The handler's own words: status and substatus messages (a CustomScript's stdout/stderr), one text."""
    lines = []
    view = view or {}
    for status in (view.get("statuses") or []) + (view.get("substatuses") or []):
        if status.get("message"):
            lines.append("[%s] %s" % (status.get("code"), status["message"].strip()))
    return "\n".join(lines)


def vm_agent_result(vm_instance_view):
    """The VM agent's version and readiness from a VM instance view (REST shape)."""
    agent = (vm_instance_view or {}).get("vmAgent") or {}
    statuses = agent.get("statuses") or []
    first = statuses[0] if statuses else {}
    ready = (first.get("displayStatus") or "").lower() == "ready"
    return {
        "version": agent.get("vmAgentVersion"),
        "status": first.get("displayStatus") or "Unknown",
        "message": first.get("message"),
        "ready": ready,
    }


def named(items, name):
    """The item (an extension, its instance view, a resource) whose name is name, or None. Azure's names are
    case-insensitive."""
    for item in items or []:
        if (item.get("name") or "").lower() == name.lower():
            return item
    return None


def extension_views_by_name(vm_instance_view):
    """Map extension name -> its instance view, from a VM instance view."""
    return dict((view.get("name"), view) for view in (vm_instance_view or {}).get("extensions") or [])


def extensions_from_vm(vm):
    """The extensions of a VM read with $expand=instanceView, each with its handler's instance view attached.

    ARM returns a VM's extension child resources in full under ``resources`` and their instance views under
    ``properties.instanceView.extensions``: one read answers for the VM, its agent and all its extensions.
    """
    views = extension_views_by_name((vm.get("properties") or {}).get("instanceView"))
    extensions = []
    for resource in vm.get("resources") or []:
        props = dict(resource.get("properties") or {})
        if resource.get("name") in views:
            props["instanceView"] = views[resource.get("name")]
        extensions.append(dict(resource, properties=props))
    return extensions
