# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The fleet's schedule: every VM moves on as soon as its own operation is over, and waiting costs the fewest
reads the API allows.

* Pipelined VMs: a VM is read, its first pending operation submitted, and when that one is over its next one is
  submitted at once, without waiting for other VMs (Azure serializes operations per VM, not across VMs). The
  writes then reach ARM at its bucket's pace (module_utils/scheduler.py), which is what the floor assumes.
* Waiting with the fewest reads. A single GET (VM with $expand=instanceView; ARM read + Compute Low Cost Get)
  tells about one VM; one page of List All with statusOnly=true (ARM read + Compute High Cost Get) tells about
  every VM on the page, with the extensions' instance views. The crossover rule: while the VMs that are
  waited for are fewer than the pages of one List All sweep (ceil(VMs in the subscription / page size), both
  learned from the last sweep, before any sweep the fleet's own VMs and 10 per page), each is read with its
  own GET, at most once per polling interval; otherwise one sweep per polling interval (or twice the last
  sweep's duration, when that is longer) reads them all.
  A VM the sweep shows as settled is read once more with a GET (the cache for its next operation and for its
  result, and the check of the extension's provisioning state, which statusOnly does not carry): one read
  per completed operation plus the sweeps.
* At the task's deadline each VM still waiting is read once more and fails with its last status.
* Progress (VMs submitted, succeeded, failed, waiting) goes to the progress callback while the fleet waits.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
from collections import namedtuple
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.azure_vm.extensions.plugins.module_utils.arm import parse_resource_id
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import (
    TERMINAL_STATES,
    handler_state,
    named,
)

ASSUMED_PAGE_SIZE = 10
# The sweep's own REST call (Virtual Machines - List All with statusOnly=true), at a published Compute api-version
# that has statusOnly, whichever SDK generation is installed.
SWEEP_API_VERSION = "2024-07-01"
PROGRESS_EVERY = 10.0   # seconds between two progress lines while waiting


def crossover(waiting, vms_in_scope, page_size):
    """True when one List All sweep costs fewer reads than one GET per waiting VM."""
    pages = -(-max(vms_in_scope, 1) // max(page_size, 1))
    return waiting > pages


# What a VM waits for: the extension `name` to be 'present' (its handler finished) or 'absent' (removed); changed
# says whether a write was sent for it (False: an earlier run's handler was still at work).
Operation = namedtuple("Operation", ["name", "state", "changed"])


class FleetDriver(object):
    """What the pipeline schedules; module_utils/fleet.Fleet implements it.

    targets: the VMs, each with .group, .vm_name, .subscription_id, .failed and .submitted (the Operation it waits
    for, or None). connection: an AzureConnection; its for_subscription() reads each target's subscription.
    Every method but count_reads runs on the pool, through run_guarded, which turns a failure into the target's own.
    """

    targets = ()
    connection = None

    def run_guarded(self, func, target):
        """func(target); an AzureOperationError marks the target failed instead of escaping."""
        raise NotImplementedError

    def plan(self, target):
        """First read of the VM and its list of operations."""
        raise NotImplementedError

    def submit_next(self, target):
        """Submit the next operation that needs a write or a wait; sets target.submitted (None: the VM is done)."""
        raise NotImplementedError

    def settled(self, target):
        """Read the VM; True when target.submitted is over (and clears it); a failed handler raises."""
        raise NotImplementedError

    def expired(self, target):
        """True when the task's deadline passed while the target still waits."""
        raise NotImplementedError

    def time_out(self, target):
        """The last read of a target whose deadline passed: raises unless its operation is over after all."""
        raise NotImplementedError

    def count_reads(self, count):
        """Account for list-page reads done by the pipeline."""
        raise NotImplementedError


def looks_settled(operation, status_entry):
    """From a statusOnly list entry: does the awaited operation look over (to be confirmed with a GET)?"""
    view = named(((status_entry.get("properties") or {}).get("instanceView") or {}).get("extensions"),
                 operation.name)
    if operation.state == "absent":
        return view is None
    return view is not None and handler_state(view.get("statuses")) in TERMINAL_STATES


class SweepScope(object):
    """What the crossover rule knows of one subscription: how many VMs a List All sweep reads and in how many per
    page (learned from the last sweep; before any sweep the fleet's own VMs there, ASSUMED_PAGE_SIZE per page), and
    when the next sweep may start."""

    def __init__(self):
        self.vms = 0
        self.page_size = ASSUMED_PAGE_SIZE
        self.next_sweep = 0.0

    def sweeps_pay(self, waiting):
        return crossover(waiting, self.vms, self.page_size)


class Pipeline(object):
    """Schedules a FleetDriver's targets on a thread pool and waits for them (this module's docstring)."""

    def __init__(self, fleet, polling_interval, workers, progress=None, clock=time.time, sleep=time.sleep):
        self.fleet = fleet
        self.interval = polling_interval
        self.workers = workers
        self.progress = progress
        self.clock = clock
        self.sleep = sleep
        self.lock = threading.Condition()
        self.waiting = {}          # target -> time of its last GET (or of its submission)
        self.busy = 0              # jobs on the pool
        self.scopes = {}           # subscription -> SweepScope
        for target in fleet.targets:
            self.scope(target.subscription_id).vms += 1
        self.counts = {"submitted": 0, "succeeded": 0, "failed": 0}
        self.sweeps = 0
        self.list_reads = 0
        self.single_reads = 0
        self._last_progress = 0.0

    # ---- jobs (on the pool) ------------------------------------------------------------------------------------
    def _run(self, func, target):
        self.fleet.run_guarded(func, target)
        with self.lock:
            self.busy -= 1
            if target.failed:
                self.counts["failed"] += 1
            elif target.submitted is not None:
                self.waiting[target] = self.clock()
            self.lock.notify_all()

    def _start(self, target):
        self.fleet.plan(target)
        self._advance(target)

    def _advance(self, target):
        self.fleet.submit_next(target)
        if target.submitted is not None:
            with self.lock:
                self.counts["submitted"] += 1

    def _confirm(self, target):
        with self.lock:
            self.single_reads += 1
        if self.fleet.settled(target):
            with self.lock:
                self.counts["succeeded"] += 1
            self._advance(target)

    def _expire(self, target):
        self.fleet.time_out(target)     # raises (the target fails) unless the operation is over after all
        with self.lock:
            self.counts["succeeded"] += 1
        self._advance(target)

    def _queue(self, pool, func, targets):
        with self.lock:
            for target in targets:
                self.waiting.pop(target, None)
                self.busy += 1
        for target in targets:
            pool.submit(self._run, func, target)

    def scope(self, subscription_id):
        return self.scopes.setdefault((subscription_id or "").lower(), SweepScope())

    # ---- the watcher (this thread) -----------------------------------------------------------------------------
    def run(self):
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            self._queue(pool, self._start, [t for t in self.fleet.targets if not t.failed])
            while True:
                with self.lock:
                    if not self.waiting and not self.busy:
                        break
                    waiting = list(self.waiting.items())
                now = self.clock()
                self._report(now)
                expired = [target for target, dummy in waiting if self.fleet.expired(target)]
                if expired:
                    self._queue(pool, self._expire, expired)
                    continue
                by_subscription = {}
                for target, last in waiting:
                    by_subscription.setdefault((target.subscription_id or "").lower(), []).append((target, last))
                swept = False
                for subscription, items in by_subscription.items():
                    scope = self.scope(subscription)
                    if now >= scope.next_sweep and scope.sweeps_pay(len(items)):
                        found = self._sweep(items[0][0].subscription_id, dict(items))
                        # At most half of the time in sweeps: a sweep of many pages also costs this process CPU.
                        scope.next_sweep = now + max(self.interval, 2 * (self.clock() - now))
                        self._queue(pool, self._confirm, found)
                        swept = True
                if swept:
                    continue
                due = [target for subscription, items in by_subscription.items()
                       if not self.scope(subscription).sweeps_pay(len(items))
                       for target, last in items if now - last >= self.interval]
                if due:
                    self._queue(pool, self._confirm, due)
                    continue
                next_sweep = min([self.scope(sub).next_sweep for sub in by_subscription] or [now])
                with self.lock:
                    self.lock.wait(min(self.interval, max(next_sweep - now, 0.0)) or self.interval / 4.0)
        self._report(self.clock(), final=True)

    def _sweep(self, subscription_id, waiting):
        """One List All statusOnly=true sweep of a subscription; returns the waiting targets (all of that
        subscription) whose operation looks over."""
        by_id = {}
        for target in waiting:
            by_id[("%s/%s" % (target.group, target.vm_name)).lower()] = target
        found, pages, seen = [], 0, 0
        connection = self.fleet.connection.for_subscription(subscription_id)
        paged = connection.list_pages("compute", "/subscriptions/%s/providers/Microsoft.Compute/virtualMachines" % (
            subscription_id), {"api-version": SWEEP_API_VERSION, "statusOnly": "true"})
        for page in paged:
            pages += 1
            for entry in page:
                seen += 1
                ids = parse_resource_id(entry.get("id"))
                target = by_id.get(("%s/%s" % (ids.get("resourcegroups"), ids.get("virtualmachines"))).lower())
                if target is not None and looks_settled(target.submitted, entry):
                    found.append(target)
        scope = self.scope(subscription_id)
        with self.lock:
            self.sweeps += 1
            self.list_reads += pages
            self.fleet.count_reads(pages)
            scope.vms = max(seen, 1)
            if pages > 1:
                scope.page_size = max(-(-seen // pages), 1)
            elif pages == 1:
                scope.page_size = max(seen, 1)
        return found

    def _report(self, now, final=False):
        if self.progress is None or (not final and now - self._last_progress < PROGRESS_EVERY):
            return
        self._last_progress = now
        with self.lock:
            waiting = {}
            for target in self.waiting:
                key = (target.subscription_id or "").lower()
                waiting[key] = waiting.get(key, 0) + 1
            sweeping = any(self.scope(sub).sweeps_pay(count) for sub, count in waiting.items())
            self.progress("VM extensions: %d submitted, %d succeeded, %d failed, %d waiting (%s)" % (
                self.counts["submitted"], self.counts["succeeded"], self.counts["failed"], len(self.waiting),
                "list sweeps" if sweeping else "single reads"))
