# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A whole fleet's VM extensions in one controller process (the vm_extension_fleet module, the extensions role).

Per VM it does exactly what the vm_extension module does (the same VmExtension logic, on a VM read it is handed),
but for every VM at once, on a thread pool:

* one VM read (GET ...?$expand=instanceView) per VM answers for every declared extension; a VM whose
  extensions all match costs that one read and nothing else;
* Azure serializes operations on one VM, so each VM's operations (removals of undeclared extensions with
  exclusive first, then declared extensions in order) go one after another (wait=false, then wait for the
  handler), and every VM moves on as soon as its own operation is over (module_utils/fleet_pipeline.py). Total
  time is about (operations per VM) x (handler time), or Azure's write budget when that is tighter;
* waiting uses single GETs while few VMs are pending and List All statusOnly=true sweeps when many are
  (fleet_pipeline.py states the crossover rule), and every request goes through the connection's throttling
  scheduler (module_utils/scheduler.py: published limits, corrected by the headers, 429 Retry-After honoured).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.azure_vm.extensions.plugins.module_utils.azure_connection import (
    describe_azure_error,
    error_code,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTION_RULES,
    TERMINAL_STATES,
    default_timeout,
    extension_result,
    extensions_from_vm,
    status_messages,
    validate_extension_options,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.fleet_pipeline import Pipeline
from ansible_collections.azure_vm.extensions.plugins.module_utils.vm_extension_state import (
    VM_EXTENSION_OPTIONS,
    VmExtension,
    read_vm,
)

# One declared extension: vm_extension's options, but the VM comes from its target and the fleet does the waiting.
FLEET_EXTENSION_OPTIONS = dict((key, spec) for key, spec in VM_EXTENSION_OPTIONS.items()
                               if key not in ("resource_group", "wait"))
EXTENSION_VALIDATOR = ArgumentSpecValidator(FLEET_EXTENSION_OPTIONS, **EXTENSION_OPTION_RULES)


class TargetFailed(Exception):
    """One target (VM) failed; the others go on."""

    def __init__(self, msg, result=None):
        super(TargetFailed, self).__init__(msg)
        self.msg = msg
        self.result = result or {}


class TargetModule(object):
    """What VmExtension expects of an AzureModule, for one VM and one extension: failures raise TargetFailed."""

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


class Target(object):
    """One inventory host: its VM, declared extensions and what happened to it."""

    def __init__(self, host, vm_name, resource_group, extensions, exclusive):
        self.host = host
        self.vm_name = vm_name or host
        self.group = resource_group
        self.declared = list(extensions or [])
        self.exclusive = exclusive
        self.vm = None
        self.pending = []         # operations not yet submitted: ("absent", name) / (state, params)
        self.submitted = None     # (name, deadline, state) being waited for
        self.failed = None
        self.failed_result = {}
        self.changed = False
        self.changes = {}
        self.removed = []
        self.warnings = []
        self.skipped_unchanged = []
        self.operations = 0       # operations submitted (the rounds this VM needed)

    def result(self):
        """What the module returns for this host."""
        result = {
            "changed": self.changed,
            "failed": bool(self.failed),
            "msg": self.failed or ("changed: %s" % ", ".join(sorted(self.changes)) if self.changed
                                   else "all declared extensions are in place"),
            "vm_name": self.vm_name,
            "resource_group": self.group,
            "changes": self.changes,
            "removed": self.removed,
            "warnings": self.warnings,
            "extensions": [dict((key, value) for key, value in extension_result(ext).items() if key != "id")
                           for ext in extensions_from_vm(self.vm or {})],
        }
        if self.failed:
            result["error"] = self.failed_result
        return result


def validate_extension(spec, target, no_log_values):
    """One declared extension checked against vm_extension's options; its protected values go to no_log_values."""
    if not isinstance(spec, dict):
        raise TargetFailed("%s: every declared extension must be a dict, got %s" % (target.host, type(spec).__name__))
    if spec.get("type_handler_version") is not None:
        spec = dict(spec, type_handler_version=str(spec["type_handler_version"]))  # YAML reads 2.1 as a number
    validated = EXTENSION_VALIDATOR.validate(spec)
    if validated.error_messages:
        raise TargetFailed("%s: extension %s: %s" % (target.host, spec.get("name"),
                                                     "; ".join(validated.error_messages)))
    no_log_values.update(validated._no_log_values)  # pylint: disable=protected-access
    return validated.validated_parameters


class Fleet(object):
    def __init__(self, connection, targets, check_mode, poll_interval, workers, timeout, progress=None):
        self.no_log_values = set()  # protected values met in the declarations, for the module to mask
        self.connection = connection
        self.targets = targets
        self.check_mode = check_mode
        self.poll_interval = poll_interval
        self.workers = workers
        self.timeout = timeout
        self.compute = connection.compute
        self.reads = 0
        self.progress = progress
        self.pipeline = None
        self._lock = threading.Lock()

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
        return read_vm(TargetModule({}, self.connection, self.check_mode), target.group, target.vm_name)

    def plan(self, target):
        """First read of a VM, validation of its declarations, and its list of operations."""
        if not target.group:
            raise TargetFailed("%s: no resource group (set azure_resource_group)" % target.host)
        declared = [validate_extension(spec, target, self.no_log_values) for spec in target.declared]
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
                item = validate_extension({"name": item, "state": "absent"}, target, self.no_log_values)
            params = dict(item)
            params.update(resource_group=target.group, vm_name=target.vm_name, wait=False)
            if params.get("timeout") is None and self.timeout:
                params["timeout"] = self.timeout
            shim = TargetModule(params, self.connection, self.check_mode)
            validate_extension_options(shim)
            run = VmExtension(shim, target.vm)
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
            target.operations += 1
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

    # ---- scheduling and waiting: module_utils/fleet_pipeline.py -------------------------------------------------
    def run_guarded(self, func, target):
        self._guard(func, target)

    def expired(self, target):
        """True when the operation a target waits for is past its deadline (its next read fails it)."""
        return target.submitted is not None and time.time() > target.submitted[1]

    def count_reads(self, count):
        with self._lock:
            self.reads += count

    def run(self):
        # One token up front, so the worker threads do not all race to fetch their own.
        self.connection.credential.get_token(self.connection.audience.rstrip("/") + "/.default")
        self.pipeline = Pipeline(self, self.poll_interval, self.workers, progress=self.progress)
        self.pipeline.run()
        return max([target.operations for target in self.targets] or [0])
