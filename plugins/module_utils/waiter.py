# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one way to wait for anything: a deadline for the whole task, polling with backoff, and a progress hook.

`timeout` means the whole task everywhere: a task makes one Deadline when it starts and hands it to every wait
(the 409 retries, the long-running operation, the handler's instance view, every batch of a rollout, both halves of
a rerun), so the task ends at the deadline however many steps it has.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import (
    HttpResponseError,
    WaitTimeout,
    azure_error,
    error_code,
    error_message,
)


class Deadline(object):
    """A point in time every wait of one task shares. seconds=None: no limit."""

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self.clock = clock
        self.at = None if seconds is None else clock() + seconds

    def remaining(self):
        return float("inf") if self.at is None else max(self.at - self.clock(), 0.0)

    def expired(self):
        return self.remaining() <= 0


def _text(describe, value):
    try:
        return describe(value) if describe else repr(value)
    except Exception:  # pylint: disable=broad-except  # a progress line must never end the wait
        return "unknown"


class Waiter(object):
    """Polls fetch() until done(value) or the deadline.

    interval: seconds before the second fetch; each further pause is the previous one times backoff, at most
    max_interval, never past the deadline. progress: a callable taking one line of text (the module reports it at
    -v), called when the described state changes. sleep: how to pause (a test clock).
    """

    def __init__(self, deadline, interval, backoff=1.0, max_interval=None, progress=None, sleep=time.sleep):
        self.deadline = deadline
        self.interval = max(float(interval), 0.0)
        self.backoff = max(float(backoff), 1.0)
        self.max_interval = max_interval
        self.progress = progress
        self.sleep = sleep

    def until(self, fetch, done, what, describe=None, timeout_result=None):
        """The first value v of fetch() with done(v); raises WaitTimeout at the deadline.

        what: words for messages ("extension customScript on VM vm-1"); describe(v): the state in words.
        timeout_result(v): extra result fields for the WaitTimeout (the last status, for the task's result).
        """
        pause = self.interval
        started = self.deadline.clock()
        last_said = None
        while True:
            value = fetch()
            said = _text(describe, value) if describe else None
            if self.progress and said != last_said:
                self.progress("waiting for %s: %s (%.0fs)" % (what, said, self.deadline.clock() - started))
                last_said = said
            if done(value):
                return value
            remaining = self.deadline.remaining()
            if remaining <= 0:
                extra = timeout_result(value) if timeout_result else {}
                raise WaitTimeout("timed out after %ds waiting for %s; last state: %s" % (
                    round(self.deadline.clock() - started), what, _text(describe, value)), last=value, **extra)
            self.sleep(min(pause, remaining))
            pause = pause * self.backoff
            if self.max_interval is not None:
                pause = min(pause, self.max_interval)


# ---- the two waits every Azure write has ---------------------------------------------------------------------
# ARM answers 409 with these codes while another operation holds the resource (Azure serializes the operations on
# one VM). OperationNotAllowed is NOT among them: ARM also uses it for "the VM is not running", which no retry
# fixes; it counts only when its message says another operation is in progress.
IN_PROGRESS_CODES = ("conflict", "retryableerror", "anotheroperationinprogress", "operationpreempted")
IN_PROGRESS_WORDS = ("another operation", "operation is in progress", "in progress on the resource")


def is_operation_in_progress(exc):
    """True for ARM's 409 'another operation is in progress', false for every other 409 (a stopped VM...)."""
    if getattr(exc, "status_code", None) != 409:
        return False
    code = (error_code(exc) or "conflict").lower()
    if code in IN_PROGRESS_CODES:
        return True
    message = error_message(exc).lower()
    return any(words in message for words in IN_PROGRESS_WORDS)


_RETRY = object()


def submit_with_retry(begin, deadline, interval, operation, resource_id=None, progress=None, **result):
    """Start an LRO with begin(); a 409 'another operation in progress' is retried with exponential backoff
    (interval, doubling, at most 60 s) until the deadline. Any other error raises AzureOperationError at once."""
    last = {}

    def attempt():
        try:
            return begin()
        except HttpResponseError as exc:
            if not is_operation_in_progress(exc) or deadline.expired():
                raise azure_error(exc, operation, resource_id, **result)
            last["error"] = exc
            return _RETRY

    waiter = Waiter(deadline, max(interval, 0.1), backoff=2.0, max_interval=60, progress=progress)
    try:
        return waiter.until(attempt, lambda value: value is not _RETRY, "%s %s" % (operation, resource_id or ""),
                            describe=lambda value: "409 another operation in progress, retrying" if value is _RETRY
                            else "accepted")
    except WaitTimeout:
        raise azure_error(last["error"], operation, resource_id, **result)


def wait_for_poller(poller, deadline, what, operation, resource_id=None, progress=None, **result):
    """Follow a long-running operation with the SDK's own poller (its polling thread honours the interval and
    Retry-After) until it is done or the deadline; return poller.result().

    Raises WaitTimeout at the deadline and AzureOperationError when the operation failed."""
    if progress:
        progress("waiting for %s" % what)
    try:
        poller.wait(None if deadline.at is None else deadline.remaining())
    except HttpResponseError:
        pass  # the operation ended with an error: result() below raises it with ARM's code
    if not poller.done():
        raise WaitTimeout("timed out after %ss waiting for %s" % (deadline.seconds, what), **result)
    try:
        return poller.result()
    except HttpResponseError as exc:
        raise azure_error(exc, operation, resource_id, **result)
