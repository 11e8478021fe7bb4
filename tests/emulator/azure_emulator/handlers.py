"""Extension handler simulation: how long a run takes, how it ends, and the statuses the guest agent reports.

A run's outcome is decided when it starts (from the extension fault rules, else success), so every later read
sees the same story; only the clock decides whether it is still transitioning.
"""
import datetime

from .state import HandlerRun

LINUX_CUSTOM_SCRIPT = ("microsoft.azure.extensions", "customscript")
WINDOWS_CUSTOM_SCRIPT = ("microsoft.compute", "customscriptextension")
DEFAULT_FAILURE = "Enable failed: failed to execute command: command terminated with exit status=1"


# Handlers that accept several extensions of their type on one VM. CustomScript is not one of them: a second one
# fails with "Multiple VMExtensions per handler not supported" (see compute.check_one_per_handler).
MULTIPLE_EXTENSION_TYPES = ("runcommandhandlerlinux", "runcommandhandlerwindows")


def supports_multiple_extensions(type_name):
    return type_name.lower() in MULTIPLE_EXTENSION_TYPES


def iso(ts):
    """ARM's timestamp format in operation bodies: 2023-12-28T06:14:28.5433128+00:00."""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="microseconds")


def _ident(props):
    return (props.get("publisher", "").lower(), props.get("type", "").lower())


def _with_newline(text):
    return text if not text or text.endswith("\n") else text + "\n"


def status_message(props, os_type, outcome, message, stdout, stderr):
    """The status message the handler writes, in the shape each real handler uses."""
    if _ident(props) == LINUX_CUSTOM_SCRIPT:
        head = "Enable succeeded: " if outcome == "succeeded" else (message or DEFAULT_FAILURE)
        return f"{head}\n[stdout]\n{_with_newline(stdout)}\n[stderr]\n{_with_newline(stderr)}"
    if outcome == "succeeded":
        if _ident(props) == WINDOWS_CUSTOM_SCRIPT:
            return message or "Command execution finished"
        return message or "Enable succeeded"
    return message or DEFAULT_FAILURE


def start_run(state, target, name, props, os_type, kind, now, agent_ready=True, protected=None):
    """Start a handler run for extension `name` on `target` ("vm" or "vmss/instanceId"). `protected` is the
    extension's protected-settings digest (State.protected_digest); the run is recorded with it in
    state.handler_runs (admin GET handler-runs), so tests see which protected settings each run had, never the
    values."""
    fault = state.take_extension_fault(target, name) or {}
    outcome = fault.get("outcome", "succeeded")
    duration = float(fault.get("duration_s", state.settings["handler_duration_s"]))
    stdout, stderr = fault.get("stdout", ""), fault.get("stderr", "")
    if not agent_ready:
        # No agent to run the handler: ARM gives up after the handler time with the agent error.
        return HandlerRun(now, now + duration, "failed", AGENT_NOT_READY_MESSAGE, kind)
    state.handler_runs.append({"target": target, "extension": name, "kind": kind, "start": now,
                               "outcome": outcome, "protected_settings": protected})
    end = None if outcome == "timeout" else now + duration
    message = status_message(props, os_type, outcome, fault.get("message"), stdout, stderr)
    return HandlerRun(now, end, "failed" if outcome == "failed" else "succeeded", message, kind, stdout, stderr)


# Azure's handler timeouts (seed 000 in Japanese, 002 in French: "Extensions have 20 minutes to run (except
# CustomScript, Chef and DSC: 90 minutes). If the deployment exceeds this time, it is marked as timed out."). ARM
# then ends the operation with VMExtensionProvisioningTimeout and the extension's provisioningState is Failed, while
# the guest agent may still report the handler transitioning (the error's wording is the one ARM returns, as quoted
# on Microsoft Q&A; tests/data/reference/handler-timeout.md).
LONG_RUNNING_TYPES = ("customscript", "customscriptextension", "chefclient", "linuxchefclient", "dsc", "dscforlinux")
SHORT_TIMEOUT_S = 20 * 60
LONG_TIMEOUT_S = 90 * 60


def handler_timeout_s(props):
    return LONG_TIMEOUT_S if props.get("type", "").lower() in LONG_RUNNING_TYPES else SHORT_TIMEOUT_S


def timeout_error(name):
    return {"code": "VMExtensionProvisioningTimeout",
            "message": (f"Provisioning of VM extension {name} has timed out. Extension provisioning has taken too "
                        "long to complete. The extension did not report a message.")}


def operation_end_and_error(name, props, run, now):
    """(end, error) of the operation that tracks a VM extension's run: its end and failure, or for a handler that
    never finishes, ARM's timeout at the run's deadline."""
    if run.end is None and run.deadline is not None:
        return max(now, run.deadline), timeout_error(name)
    end = now if run.finished(now) else run.end
    return end, provisioning_error(name, props, run) if run.outcome == "failed" else None


AGENT_NOT_READY_MESSAGE = (
    "VM has not reported status for VM agent or extensions. Verify that the OS is up and healthy, the VM has a "
    "running VM agent, and that it can establish outbound connections to Azure storage.")


def provisioning_error(name, props, run):
    """The ARM error an extension operation ends with when its handler failed."""
    if run.message == AGENT_NOT_READY_MESSAGE:
        return {"code": "VMAgentStatusCommunicationError", "message": run.message}
    return {
        "code": "VMExtensionProvisioningError",
        "message": (f"VM has reported a failure when processing extension '{name}' (publisher "
                    f"'{props.get('publisher')}' and type '{props.get('type')}'). Error message: '{run.message}'."),
    }


def failed_code(props, os_type):
    """A failed handler's status code as the agents report it (../shared/reference/arm-protocol.md, "Failure
    shape", from seeds 000/002/004): Linux `ProvisioningState/failed/0`; the Windows CustomScriptExtension
    `ProvisioningState/failed/-196608`; other Windows handlers keep `/1` (no real sample)."""
    if os_type != "Windows":
        return "ProvisioningState/failed/0"
    if _ident(props) == WINDOWS_CUSTOM_SCRIPT:
        return "ProvisioningState/failed/-196608"
    return "ProvisioningState/failed/1"


def extension_statuses(ext, os_type, now):
    """(statuses, substatuses) of an extension's instance view."""
    run = ext.run
    if not run.finished(now):
        return [{"code": "ProvisioningState/transitioning", "level": "Info", "displayStatus": "Transitioning",
                 "message": "Enable in progress"}], None
    if run.outcome == "succeeded":
        statuses = [{"code": "ProvisioningState/succeeded", "level": "Info",
                     "displayStatus": "Provisioning succeeded", "message": run.message}]
    else:
        statuses = [{"code": failed_code(ext.props, os_type), "level": "Error",
                     "displayStatus": "Provisioning failed", "message": run.message}]
    substatuses = None
    if _ident(ext.props) == WINDOWS_CUSTOM_SCRIPT:
        substatuses = [
            {"code": "ComponentStatus/StdOut/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
             "message": run.stdout},
            {"code": "ComponentStatus/StdErr/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
             "message": run.stderr},
        ]
    return statuses, substatuses


def handler_version(state, location, props):
    """The full handler version the agent installs: the newest catalogue version the request allows."""
    wanted = props.get("typeHandlerVersion", "")
    entry = find_image(state, location, props.get("publisher", ""), props.get("type", ""))
    if not entry:
        return wanted
    parts = wanted.split(".")
    prefix = parts[:1] if props.get("autoUpgradeMinorVersion") else parts[:2]
    candidates = [v for v in entry["versions"] if v.split(".")[:len(prefix)] == prefix]
    if not candidates:
        return wanted
    return max(candidates, key=lambda v: tuple(int(p) if p.isdigit() else 0 for p in v.split(".")))


def find_image(state, location, publisher, type_name):
    return state.images.get((location or "").lower(), {}).get(publisher.lower(), {}).get(type_name.lower())


def extension_instance_view(state, ext, os_type, location, now):
    statuses, substatuses = extension_statuses(ext, os_type, now)
    view = {
        "name": ext.name,
        "type": f"{ext.props.get('publisher')}.{ext.props.get('type')}",
        "typeHandlerVersion": ext.run.version or handler_version(state, location, ext.props),
        "statuses": statuses,
    }
    if substatuses is not None:
        view["substatuses"] = substatuses
    return view


def vm_agent_view(state, agent_status, agent_version, extensions, location, now):
    """The vmAgent block: agent health plus one extensionHandlers entry per installed handler type."""
    if agent_status == "Ready":
        status = {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
                  "message": "Guest Agent is running", "time": iso(now)}
    else:
        status = {"code": "ProvisioningState/Unavailable", "level": "Warning", "displayStatus": "Not Ready",
                  "message": "VM Agent is unresponsive.", "time": iso(now)}
    handlers = []
    if agent_status == "Ready":
        for ext in extensions:
            ok = ext.run.finished(now) and ext.run.outcome == "succeeded"
            handlers.append({
                "type": f"{ext.props.get('publisher')}.{ext.props.get('type')}",
                "typeHandlerVersion": ext.run.version or handler_version(state, location, ext.props),
                "status": {"code": "ProvisioningState/succeeded" if ok else "ProvisioningState/Unavailable",
                           "level": "Info" if ok else "Warning",
                           "displayStatus": "Ready" if ok else "Not Ready"},
            })
    return {"vmAgentVersion": agent_version if agent_status == "Ready" else "Unknown",
            "statuses": [status], "extensionHandlers": handlers}
