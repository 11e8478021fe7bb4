# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Controller-side engine of the azure_vm.extensions.extensions role: a whole fleet in one process.

Run by the role on the controller with ansible-playbook's own Python (a collection-hosted role cannot carry
action plugins): JSON request on stdin, JSON result on stdout. The collection is imported from the path this
file sits in (ansible_collections/azure_vm/extensions/roles/extensions/files/fleet_engine.py).

Per VM it does exactly what the vm_extension module does (the module's own VmExtension class runs here, on a
cached VM read), but for every VM of the play at once, on a thread pool:

* one VM read (GET ...?$expand=instanceView) per VM answers for every declared extension; a VM whose
  extensions all match costs that one read and nothing else;
* Azure serializes operations on one VM, so the work is done in rounds: round r submits each VM's r-th pending
  operation (removals of undeclared extensions with exclusive first, then declared extensions in order) on
  all VMs (wait=false), then waits until every submitted handler is terminal. Total time is about
  (operations per VM) x (handler time), whatever the number of VMs and forks;
* the waits poll each pending VM, paced against ARM's read budget, and every request goes through the
  connection's ArmThrottlePacingPolicy (429 Retry-After holds off all threads, not just the throttled one).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import yaml

# .../ansible_collections/azure_vm/extensions/roles/extensions/files/fleet_engine.py -> the dir holding ansible_collections
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 6)))

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # noqa: E402
from ansible.module_utils.six import string_types  # noqa: E402

from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (  # noqa: E402
    AZURE_AUTH_ARGSPEC,
    AzureAuthError,
    AzureConnection,
    HttpResponseError,
    describe_azure_error,
    error_code,
    resource_id,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (  # noqa: E402
    TERMINAL_STATES,
    default_timeout,
    extension_result,
    extensions_from_vm,
    status_messages,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils import extension_model  # noqa: E402
from ansible_collections.azure_vm.extensions.plugins.modules import vm_extension as vm_extension_module  # noqa: E402

AUTH_KEYS = tuple(AZURE_AUTH_ARGSPEC)
RESERVED = ("resource_group", "vm_name", "wait") + AUTH_KEYS


class TargetFailed(Exception):
    def __init__(self, msg, result=None):
        super(TargetFailed, self).__init__(msg)
        self.msg = msg
        self.result = result or {}


def _spec_from_docs(options):
    """An argument spec from a module's DOCUMENTATION options (types, defaults, choices, suboptions)."""
    spec = {}
    for name, doc in options.items():
        entry = {"type": doc.get("type", "str")}
        for key in ("default", "choices", "elements", "required"):
            if key in doc:
                entry[key] = doc[key]
        if "suboptions" in doc:
            entry["options"] = _spec_from_docs(doc["suboptions"])
        spec[name] = entry
    return spec


EXTENSION_SPEC = dict((k, v) for k, v in _spec_from_docs(
    yaml.safe_load(vm_extension_module.DOCUMENTATION)["options"]).items() if k not in RESERVED)
EXTENSION_SPEC["name"]["required"] = True


class Shim(object):
    """What VmExtension expects of AzureModule, for one VM and one extension, failing by exception."""

    def __init__(self, params, connection, check_mode):
        self.params = params
        self.connection = connection
        self.check_mode = check_mode
        self.warnings = []

    def fail(self, msg, **result):
        raise TargetFailed(msg, result)

    def fail_azure(self, exc, operation, resource=None, **result):
        result["error_code"] = error_code(exc)
        raise TargetFailed(describe_azure_error(exc, operation, resource), result)

    def warn(self, msg):
        self.warnings.append(msg)


class CachedVmExtension(vm_extension_module.VmExtension):
    """The module's logic, reading the VM from the fleet's cache instead of ARM."""

    def __init__(self, azure, vm):
        super(CachedVmExtension, self).__init__(azure)
        self._vm = vm

    def read_vm(self):
        return self._vm


class Target(object):
    """One inventory host: its VM, declared extensions and what happened to it."""

    def __init__(self, data, index):
        self.host = data.get("host") or "target%d" % index
        self.vm_name = data.get("vm_name") or self.host
        self.group = data.get("resource_group")
        self.declared = list(data.get("extensions") or [])
        self.exclusive = bool(data.get("exclusive"))
        self.vm = None
        self.pending = []         # operations not yet submitted: ("absent", name) / ("present", params)
        self.submitted = None     # (name, deadline, state) being waited for
        self.failed = None
        self.changed = False
        self.changes = {}
        self.removed = []
        self.warnings = []
        self.skipped_unchanged = []


def validate_extension(spec, target):
    if not isinstance(spec, dict):
        raise TargetFailed("%s: every item of azure_vm_extensions must be a dict, got %r" % (target.host, spec))
    unknown = sorted(set(spec) - set(EXTENSION_SPEC))
    if unknown:
        raise TargetFailed("%s: extension %s: unsupported option(s) %s" % (
            target.host, spec.get("name"), ", ".join(unknown)))
    if spec.get("type_handler_version") is not None and not isinstance(spec["type_handler_version"], string_types):
        spec = dict(spec, type_handler_version=str(spec["type_handler_version"]))
    result = ArgumentSpecValidator(EXTENSION_SPEC).validate(spec)
    if result.error_messages:
        raise TargetFailed("%s: extension %s: %s" % (target.host, spec.get("name"), "; ".join(result.error_messages)))
    params = result.validated_parameters
    if params["state"] == "present":
        missing = [key for key in ("publisher", "type", "type_handler_version") if not params.get(key)]
        if missing:
            raise TargetFailed("%s: extension %s: state=present needs %s" % (
                target.host, params["name"], ", ".join(missing)))
    if params["protected_settings"] is not None and params["protected_settings_from_key_vault"] is not None:
        raise TargetFailed("%s: extension %s: protected_settings and protected_settings_from_key_vault are "
                           "mutually exclusive" % (target.host, params["name"]))
    return params


def module_validate(shim):
    """The module's own input checks (they also turn protected_settings_from_key_vault into ARM's shape)."""
    if hasattr(extension_model, "validate_extension_options"):
        extension_model.validate_extension_options(shim)
        return
    vm_extension_module.validate(shim)  # older layout: checks in the module, key vault shape done by its main()
    kv = shim.params.get("protected_settings_from_key_vault")
    if kv is not None and "secret_url" in kv:
        shim.params["protected_settings_from_key_vault"] = {"secretUrl": kv["secret_url"],
                                                            "sourceVault": {"id": kv["source_vault_id"]}}


class Fleet(object):
    def __init__(self, connection, auth_params, targets, check_mode, poll_interval, workers, timeout):
        self.connection = connection
        self.auth_params = auth_params
        self.targets = targets
        self.check_mode = check_mode
        self.poll_interval = poll_interval
        self.workers = workers
        self.timeout = timeout
        self.compute = connection.compute
        self.reads = 0
        self._lock = threading.Lock()

    def _map(self, func, items):
        items = list(items)
        if not items:
            return
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            for future in [pool.submit(self._guard, func, item) for item in items]:
                future.result()

    @staticmethod
    def _guard(func, target):
        try:
            func(target)
        except TargetFailed as exc:
            target.failed = exc.msg
            target.failed_result = exc.result
        except Exception as exc:  # pylint: disable=broad-except
            target.failed = "%s: %s" % (type(exc).__name__, exc)
            target.failed_result = {}

    # ---- reads -------------------------------------------------------------------------------------------
    def read_vm(self, target):
        with self._lock:
            self.reads += 1
        try:
            return self.compute.virtual_machines.get(target.group, target.vm_name, expand="instanceView").as_dict()
        except HttpResponseError as exc:
            if exc.status_code == 404:
                raise TargetFailed("virtual machine %r not found in resource group %r (%s)" % (
                    target.vm_name, target.group, error_code(exc) or "NotFound"), {"error_code": "NotFound"})
            raise TargetFailed(describe_azure_error(exc, "reading", resource_id(
                self.connection.subscription_id, target.group, "virtualMachines", target.vm_name)))

    def plan(self, target):
        """First read of a VM, validation of its declarations, and its list of operations."""
        if not target.group:
            raise TargetFailed("%s: no resource group (set azure_resource_group)" % target.host)
        declared = [validate_extension(spec, target) for spec in target.declared]
        names = [params["name"].lower() for params in declared]
        if len(set(names)) != len(names):
            raise TargetFailed("%s: an extension name is declared twice" % target.host)
        target.vm = self.read_vm(target)
        existing = [ext.get("name") for ext in extensions_from_vm(target.vm)]
        if target.exclusive:
            target.pending += [("absent", name) for name in existing if name.lower() not in names]
        target.pending += [(params["state"], params) for params in declared]

    # ---- one round: submit the next operation that needs a write, on every VM ---------------------------------
    def submit_next(self, target):
        target.submitted = None
        while target.pending:
            state, item = target.pending.pop(0)
            if state == "absent" and not isinstance(item, dict):
                item = dict(validate_extension({"name": item, "state": "absent"}, target))
            params = dict(self.auth_params)
            params.update(item)
            params.update(resource_group=target.group, vm_name=target.vm_name, wait=False)
            if params.get("timeout") is None and self.timeout:
                params["timeout"] = self.timeout
            shim = Shim(params, self.connection, self.check_mode)
            run = CachedVmExtension(shim, target.vm)
            module_validate(shim)
            result = run.present() if state == "present" else run.absent()
            target.warnings.extend(shim.warnings)
            if not result.get("changed"):
                target.skipped_unchanged.append(params["name"])
                continue
            target.changed = True
            if state == "absent":
                target.removed.append(params["name"])
            target.changes[params["name"]] = result.get("changes") or ["state"]
            if self.check_mode:
                continue
            timeout = params.get("timeout") or default_timeout(params.get("type"))
            target.submitted = (params["name"], time.time() + timeout, state)
            return

    def settled(self, target):
        """True when the submitted operation is over (the VM read is kept as the cache for the next round)."""
        name, deadline, state = target.submitted
        target.vm = self.read_vm(target)
        current = [ext for ext in extensions_from_vm(target.vm) if (ext.get("name") or "").lower() == name.lower()]
        if state == "absent":
            done = not current
        else:
            ext = extension_result(current[0]) if current else {}
            view = ext.get("instance_view") or {}
            done = bool(current) and view.get("state") != "transitioning" and \
                (ext.get("provisioning_state") or "").lower() in TERMINAL_STATES
            if done and view.get("state") == "failed":
                if ext.get("suppress_failures"):
                    target.warnings.append("extension %s on %s failed (suppress_failures is on): %s" % (
                        name, target.vm_name, status_messages(view)))
                else:
                    target.pending = []
                    raise TargetFailed("extension %s on VM %s failed: %s" % (
                        name, target.vm_name, status_messages(view)), {"extension": ext, "instance_view": view})
        if not done and time.time() > deadline:
            target.pending = []
            raise TargetFailed("timed out waiting for extension %s on VM %s (%s)" % (
                name, target.vm_name, "removal" if state == "absent" else "handler"))
        if done:
            target.submitted = None
        return done

    def wait_round(self, waiting):
        while True:
            waiting = [t for t in waiting if t.submitted is not None and not t.failed]
            if not waiting:
                return
            started = time.time()
            self._map(self.settled, waiting)
            waiting = [t for t in waiting if t.submitted is not None and not t.failed]
            if not waiting:
                return
            time.sleep(max(self.pace(len(waiting)) - (time.time() - started), 0))

    def pace(self, pending):
        """Seconds between polling rounds: the poll interval, stretched when ARM's read budget runs low."""
        remaining = self.connection.pacing.remaining.get("reads")
        if remaining is not None and remaining < pending * 20:
            # Fewer than ~20 rounds of budget left: spread the rest over at least a minute per 20 rounds.
            return max(self.poll_interval, 60.0 * pending / max(remaining, 1))
        return self.poll_interval

    def run(self):
        active = list(self.targets)
        # One token up front, so the worker threads do not all race to fetch their own.
        self.connection.credential.get_token(self.connection.audience.rstrip("/") + "/.default")
        self._map(self.plan, active)
        rounds = 0
        while True:
            active = [t for t in active if not t.failed and t.pending]
            if not active:
                break
            rounds += 1
            self._map(self.submit_next, active)
            self.wait_round([t for t in active if t.submitted is not None and not t.failed])
        return rounds


class RequestError(Exception):
    pass


def run(request):
    targets = [Target(data or {}, index) for index, data in enumerate(request.get("targets") or [])]
    auth = dict((k, v) for k, v in (request.get("auth") or {}).items() if v is not None)
    unknown = sorted(set(auth) - set(AUTH_KEYS))
    if unknown:
        raise RequestError("extensions_auth: unsupported option(s) %s" % ", ".join(unknown))
    validated = ArgumentSpecValidator(AZURE_AUTH_ARGSPEC).validate(auth)
    if validated.error_messages:
        raise RequestError("extensions_auth: %s" % "; ".join(validated.error_messages))
    auth_params = validated.validated_parameters
    started = time.time()
    try:
        connection = AzureConnection(auth_params)
    except AzureAuthError as exc:
        raise RequestError("%s" % exc)
    fleet = Fleet(connection, auth_params, targets, bool(request.get("check_mode")),
                  float(request.get("poll_interval") or 5), int(request.get("max_workers") or 32),
                  int(request.get("timeout") or 0) or None)
    rounds = fleet.run()
    hosts = {}
    for target in targets:
        hosts[target.host] = {
            "changed": target.changed,
            "failed": bool(target.failed),
            "msg": target.failed or ("changed: %s" % ", ".join(sorted(target.changes)) if target.changed
                                     else "all declared extensions are in place"),
            "vm_name": target.vm_name,
            "resource_group": target.group,
            "changes": target.changes,
            "removed": target.removed,
            "warnings": target.warnings,
            "extensions": [dict((k, v) for k, v in extension_result(ext).items() if k != "id")
                           for ext in extensions_from_vm(target.vm or {})],
        }
        if target.failed:
            hosts[target.host]["error"] = getattr(target, "failed_result", {})
    pacing = connection.pacing
    return dict(
        changed=any(target.changed for target in targets),
        failed=False,
        hosts=hosts,
        rounds=rounds,
        vm_reads=fleet.reads,
        elapsed_s=round(time.time() - started, 3),
        throttling={"throttled_429": pacing.throttled, "lowest_remaining": dict(pacing.lowest)},
    )


def main():
    try:
        result = run(json.load(sys.stdin))
    except (RequestError, ValueError) as exc:
        result = dict(failed=True, changed=False, msg="%s" % exc, hosts={})
    json.dump(result, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
