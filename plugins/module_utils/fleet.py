# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A whole fleet's VM extensions in one controller process (the vm_extension_fleet module, the extensions role).

Per VM it does exactly what the vm_extension module does (the same VmExtension logic, on a VM read it is handed),
but for every VM at once, on a thread pool:

* one VM read (GET ...?$expand=instanceView) per VM answers for every declared extension; a VM whose
  extensions all match (and whose handlers are terminal) costs that one read and nothing else;
* Azure serializes operations on one VM, so each VM's operations (removals of undeclared extensions with
  exclusive first, then declared extensions in order) go one after another (wait=false, then wait for the
  handler), and every VM moves on as soon as its own operation is over (module_utils/fleet_pipeline.py). Total
  time is about (operations per VM) x (handler time), or Azure's write budget when that is tighter. A declared
  extension that matches but whose handler is still transitioning (an interrupted earlier run) is waited for too;
* waiting uses single GETs while few VMs are pending and List All statusOnly=true sweeps when many are
  (fleet_pipeline.py states the crossover rule), and every request goes through the connection's throttling
  scheduler (module_utils/scheduler.py: published limits, corrected by the headers, 429 Retry-After honoured);
* one deadline (the module's timeout) covers the whole run;
* a VM's failure is an AzureOperationError caught for that VM only; the others go on.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ansible_collections.azure_vm.extensions.plugins.module_utils.auth import AZURE_AUTH_ARGSPEC
from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    AzureOperationError,
    HttpResponseError,
    azure_error,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import (
    EXTENSION_OPTION_RULES,
    default_timeout,
    validate_extension_options,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import (
    extension_result,
    extensions_from_vm,
    handler_settled,
    handler_state_text,
    result_failed,
    status_messages,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.fleet_pipeline import (
    FleetDriver,
    Operation,
    Pipeline,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.vm_extension_state import (
    VM_EXTENSION_OPTIONS,
    VmExtension,
    extension_in,
    read_vm,
)
from ansible_collections.azure_vm.extensions.plugins.module_utils.waiter import Deadline

# One declared extension: vm_extension's options, but the VM comes from its target, the fleet does the waiting,
# and the fleet's timeout is the whole task.
FLEET_EXTENSION_OPTIONS = dict((key, spec) for key, spec in VM_EXTENSION_OPTIONS.items()
                               if key not in ("resource_group", "wait", "timeout"))
REMOVAL_TIMEOUT = 20 * 60

# The vm_extension_fleet module's argument spec.
FLEET_TASK_OPTIONS = dict(
    targets=dict(type="list", elements="dict", required=True, options=dict(
        host=dict(type="str"),
        vm_name=dict(type="str"),
        resource_group=dict(type="str", required=True),
        subscription_id=dict(type="str"),
        extensions=dict(type="list", elements="dict", default=[], options=FLEET_EXTENSION_OPTIONS,
                        **EXTENSION_OPTION_RULES),
        exclusive=dict(type="bool", default=False),
    ), required_one_of=[("host", "vm_name")]),
    polling_interval=dict(AZURE_AUTH_ARGSPEC["polling_interval"], default=5, aliases=["poll_interval"]),
    progress_file=dict(type="path"),
    max_workers=dict(type="int", default=32),
    ignore_vm_failures=dict(type="bool", default=False),
    timeout=dict(type="int"),
)


def removal_params(name):
    """The options of an undeclared extension removed with exclusive: every option at its default."""
    params = dict((key, spec.get("default")) for key, spec in FLEET_EXTENSION_OPTIONS.items())
    params.update(name=name, state="absent")
    return params


class Target(object):
    """One inventory host: its VM, declared extensions and what happened to it."""

    def __init__(self, host, vm_name, resource_group, extensions, exclusive, subscription_id=None):
        self.host = host
        self.vm_name = vm_name or host
        self.group = resource_group
        self.subscription_id = subscription_id  # None: the connection's (subscription_id, AZURE_SUBSCRIPTION_ID)
        self.declared = list(extensions or [])
        self.exclusive = exclusive
        self.vm = None
        self.pending = []         # operations not yet submitted: (state, extension options)
        self.submitted = None     # the fleet_pipeline.Operation being waited for
        self.operations = 0       # operations submitted (the most of any VM is the module's `rounds`)
        self.failed = None
        self.failed_result = {}
        self.changed = False
        self.changes = {}
        self.summary = []
        self.removed = []
        self.warnings = []

    def fail(self, exc):
        self.failed = exc.msg
        self.failed_result = exc.fields()
        self.pending = []
        self.submitted = None

    def result(self):
        """What the module returns for this host: plain words first (msg, summary), then the details."""
        if self.failed:
            msg = self.failed
            if self.summary:
                msg += " (before that: %s)" % "; ".join(self.summary)
        elif self.changed:
            msg = "changed: %s" % "; ".join(self.summary)
        else:
            msg = "all declared extensions are in place"
        result = {
            "changed": self.changed,
            "failed": bool(self.failed),
            "msg": msg,
            "vm_name": self.vm_name,
            "resource_group": self.group,
            "subscription_id": self.subscription_id,
            "changes": self.changes,
            "summary": self.summary,
            "removed": self.removed,
            "warnings": self.warnings,
            "extensions": [dict((key, value) for key, value in extension_result(ext).items() if key != "id")
                           for ext in extensions_from_vm(self.vm or {})],
        }
        if self.failed:
            result["error"] = self.failed_result
        return result


def default_fleet_timeout(targets):
    """The whole run's default: the VM with the most work, at Azure's handler timeout for each of its operations."""
    longest = 0
    for target in targets:
        total = sum(default_timeout(spec.get("type")) for spec in target.declared if spec.get("state") != "absent")
        total += REMOVAL_TIMEOUT * len([spec for spec in target.declared if spec.get("state") == "absent"])
        longest = max(longest, total)
    return longest or REMOVAL_TIMEOUT


class Fleet(FleetDriver):
    """The fleet_pipeline.FleetDriver of the vm_extension_fleet module: VmExtension on every target's VM."""

    def __init__(self, connection, targets, check_mode, polling_interval, workers, timeout, progress=None):
        self.connection = connection
        self.targets = targets
        self.check_mode = check_mode
        self.polling_interval = polling_interval
        self.workers = workers
        self.timeout = timeout or default_fleet_timeout(targets)
        self.deadline = Deadline(self.timeout)
        self.progress = progress
        self.pipeline = None
        self.reads = 0
        self._lock = threading.Lock()

    @staticmethod
    def _guard(func, target):
        """A target's failure is its own: AzureOperationError (and an SDK error that escaped) mark it failed."""
        try:
            func(target)
        except AzureOperationError as exc:
            target.fail(exc)
        except HttpResponseError as exc:
            target.fail(azure_error(exc, "converging the extensions of VM %s" % target.vm_name))

    # ---- reads -------------------------------------------------------------------------------------------
    def connection_of(self, target):
        """The connection for the target's own subscription (one credential for all of them)."""
        return self.connection.for_subscription(target.subscription_id or self.connection.subscription_id)

    def read_vm(self, target):
        with self._lock:
            self.reads += 1
        return read_vm(self.connection_of(target), target.group, target.vm_name)

    def plan(self, target):
        """First read of a VM, the last checks of its declarations, and its list of operations."""
        declared = []
        for params in target.declared:
            params = dict(params)
            validate_extension_options(params, "extension %s: " % params.get("name"))
            declared.append(params)
        names = [params["name"].lower() for params in declared]
        duplicates = sorted(set(name for name in names if names.count(name) > 1))
        if duplicates:
            raise AzureOperationError("extension %s is declared twice for %s" % (", ".join(duplicates), target.host))
        target.vm = self.read_vm(target)
        existing = [ext.get("name") for ext in extensions_from_vm(target.vm)]
        if target.exclusive:
            target.pending += [("absent", removal_params(name)) for name in existing if name.lower() not in names]
        target.pending += [(params["state"], params) for params in declared]

    # ---- one round: submit the next operation that needs a write (or a wait), on every VM -------------------
    def submit_next(self, target):
        target.submitted = None
        while target.pending:
            state, params = target.pending.pop(0)
            run = VmExtension(self.connection_of(target), target.group, target.vm_name, params["name"],
                              self.deadline, self.check_mode, vm=target.vm)
            try:
                result = run.present(params, wait=False) if state == "present" else run.absent(wait=False)
            finally:
                target.warnings.extend(run.warnings)
            if not result.get("changed"):
                if state == "present" and not self.check_mode and not handler_settled(result["extension"]):
                    # Matches, but an earlier run's handler is still at work: success means terminal.
                    target.submitted = Operation(params["name"], state, False)
                    return
                continue
            target.changed = True
            if state == "absent":
                target.removed.append(params["name"])
                target.summary.append("%s: removed" % params["name"])
            else:
                target.summary.append(result.get("summary") or params["name"])
            target.changes[params["name"]] = result.get("changes") or ["state"]
            if self.check_mode:
                continue
            target.submitted = Operation(params["name"], state, True)
            target.operations += 1
            return

    def settled(self, target):
        """Read the VM (the read is kept as the cache for the next round); True when the submitted operation is
        over. A handler that ended failed raises for this target."""
        name, state, changed = target.submitted
        target.vm = self.read_vm(target)
        current = extension_in(target.vm, name)
        if state == "absent":
            done = current is None
        else:
            ext = extension_result(current) if current else {}
            done = current is not None and handler_settled(ext)
            view = ext.get("instance_view") or {}
            if done and result_failed(ext):
                if ext.get("suppress_failures"):
                    target.warnings.append("extension %s on %s failed (suppress_failures is on): %s" % (
                        name, target.vm_name, status_messages(view)))
                else:
                    raise AzureOperationError("extension %s on VM %s failed: %s" % (
                        name, target.vm_name, status_messages(view) or handler_state_text(ext)),
                        extension=ext, instance_view=view, changed=changed)
        if done:
            target.submitted = None
        return done

    def describe(self, target):
        if target.submitted is None:
            return "done"
        name, state, dummy = target.submitted
        if state == "absent":
            return "removal of %s" % name
        current = extension_in(target.vm or {}, name)
        if current is not None:
            return "%s: %s" % (name, handler_state_text(extension_result(current)))
        return "%s: not yet listed" % name

    # ---- scheduling and waiting: module_utils/fleet_pipeline.py -------------------------------------------------
    def run_guarded(self, func, target):
        self._guard(func, target)

    def expired(self, target):
        """True when the task's deadline has passed while the target still waits."""
        return target.submitted is not None and self.deadline.expired()

    def time_out(self, target):
        """Read the VM once more; if its operation is still not over, fail it with its last status."""
        if target.submitted is None or self.settled(target):
            return
        name, dummy, changed = target.submitted
        raise AzureOperationError("timed out after %ds (the task's timeout) waiting for extension %s on VM %s; "
                                  "last status: %s" % (self.timeout, name, target.vm_name, self.describe(target)),
                                  changed=changed)

    def count_reads(self, count):
        with self._lock:
            self.reads += count

    def run(self):
        for target in self.targets:
            target.subscription_id = target.subscription_id or self.connection.subscription_id
        # One token up front, so the worker threads do not all race to fetch their own.
        self.connection.get_token()
        # The workers and the watcher (its sweeps, module_utils/fleet_pipeline.py) send at once: a kept HTTPS
        # connection for each.
        self.connection.use_threads(max(1, self.workers) + 1)
        self.pipeline = Pipeline(self, self.polling_interval, self.workers, progress=self.progress)
        self.pipeline.run()
        return max([target.operations for target in self.targets] or [0])


def fleet_task(azure):
    """The vm_extension_fleet module: validate, converge every target, report per host; raises when a VM failed
    (unless ignore_vm_failures)."""
    params = azure.params
    for option, low in (("polling_interval", 0.05), ("max_workers", 1), ("timeout", 1)):
        if params[option] is not None and params[option] < low:
            raise AzureOperationError("%s must be at least %s; got %r" % (option, low, params[option]))
    targets = [Target(item["host"] or item["vm_name"], item["vm_name"], item["resource_group"], item["extensions"],
                      item["exclusive"], item["subscription_id"]) for item in params["targets"]]
    hosts = [target.host for target in targets]
    duplicates = sorted(set(host for host in hosts if hosts.count(host) > 1))
    if duplicates:
        raise AzureOperationError("targets: host %s is listed twice" % ", ".join(duplicates))
    started = time.time()
    progress_file = params["progress_file"]

    def progress(line):
        azure.progress(line)
        if progress_file:
            with open(progress_file, "a") as handle:
                handle.write("%s %s\n" % (time.strftime("%H:%M:%S"), line))

    fleet = Fleet(azure.connection, targets, azure.check_mode, params["polling_interval"], params["max_workers"],
                  params["timeout"], progress=progress)
    rounds = fleet.run()
    hosts = dict((target.host, target.result()) for target in targets)
    pipeline = fleet.pipeline
    result = dict(changed=any(target.changed for target in targets), hosts=hosts, rounds=rounds,
                  vm_reads=fleet.reads, elapsed_s=round(time.time() - started, 3), timeout=fleet.timeout,
                  waiting={"list_sweeps": pipeline.sweeps if pipeline else 0,
                           "list_pages": pipeline.list_reads if pipeline else 0,
                           "single_reads": pipeline.single_reads if pipeline else 0},
                  throttling=azure.connection.scheduler.snapshot())
    failed = [host for host, outcome in hosts.items() if outcome["failed"]]
    if failed and not params["ignore_vm_failures"]:
        raise AzureOperationError("%d of %d VMs failed: %s" % (len(failed), len(hosts), "; ".join(
            "%s: %s" % (host, hosts[host]["msg"]) for host in failed)), **result)
    return result
