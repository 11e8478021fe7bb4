# -*- coding: utf-8 -*-
# Copyright: azure_vm.extensions contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Client-side token buckets that keep one process (or several sharing a principal) within Azure's published
throttling limits, so requests are spaced before Azure has to refuse them.

Limits (from Microsoft Learn, "Understand how Azure Resource Manager throttles requests" and "Compute throttling
limits"; see the collection's docs/scheduler.md):

* Azure Resource Manager, per subscription and principal: reads 250 + 25/s, writes 200 + 10/s, deletes 200 + 10/s
  (the same per tenant for requests outside a subscription);
* Microsoft.Compute, per policy, a bucket per resource (one VM) and one per subscription, refilled per minute:
  Update VM (extension writes and deletes) 12 + 4/min per VM, 1,500 + 500/min per subscription; Low Cost Get
  (VM and extension reads) 36 + 12/min per VM, 24,000 + 8,000/min; High Cost Get (VM lists, statusOnly) 900 +
  300/min per subscription; Get Operation (LRO polls) 45 + 15/min, 15,000 + 5,000/min.

How it keeps to them:

* every request first takes a token from each bucket that applies (Scheduler.acquire). Tokens may go below
  zero: each caller then owns a distinct future slot, one refill interval (plus jitter) after the previous one,
  so callers that were held are released one by one at the refill pace, never all at once;
* every response corrects the buckets from its x-ms-ratelimit-remaining-subscription-{reads,writes,deletes}
  and x-ms-ratelimit-remaining-resource ("Microsoft.Compute/<Policy>(SubscriptionMaximum|Resource);<n>")
  headers: the server's count minus what this process has in flight is the truth;
* a bucket starts with one token until the first header has been seen (a probe), so several processes that
  start together do not each spend a full bucket;
* other processes with the same principal (AWX job slices) show up as the server's count falling faster than
  this process spends: the bucket's share of the refill rate becomes (rate - others' measured rate) / rate,
  at least 1/16, so the slices together stay at the published rate;
* a 429 sets the bucket it names (ARM's SubscriptionRequestsThrottled for reads/writes/deletes, Compute's
  TooManyRequests detail target for a policy) to empty until Retry-After has passed; azure-core's RetryPolicy
  then retries the request after Retry-After, and every other request on that bucket waits for its own slot
  after that time. Retry-After is always honoured.

`scale` multiplies the published rates, for an emulator whose clock runs faster than real time (environment
variable AZURE_VM_EXTENSIONS_RATE_SCALE, default 1; never set it against Azure).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import random
import re
import threading
import time

# ARM, per subscription (or tenant) and principal: (bucket size, refill per second).
ARM_LIMITS = {"reads": (250, 25.0), "writes": (200, 10.0), "deletes": (200, 10.0)}
# Microsoft.Compute: policy -> (resource bucket, resource refill per minute, subscription bucket, per minute).
COMPUTE_LIMITS = {
    "UpdateVM": (12, 4, 1500, 500),
    "LowCostGet": (36, 12, 24000, 8000),
    "HighCostGet": (None, None, 900, 300),
    "GetOperation": (45, 15, 15000, 5000),
}
MIN_SHARE = 1.0 / 16
OTHERS_MARGIN = 1.15
JITTER = 0.25           # a slot moves later by up to this fraction of one refill interval
SHARE_WINDOW = 1.0      # refill intervals x 10 between two measurements of the others' spending

_SUB = re.compile(r"^/subscriptions/([^/]+)", re.I)
_OPERATION = re.compile(r"^/subscriptions/[^/]+/providers/microsoft\.compute/locations/[^/]+/operations/", re.I)
_VM_LIST = re.compile(r"^/subscriptions/[^/]+(/resourcegroups/[^/]+)?/providers/microsoft\.compute"
                      r"(/locations/[^/]+)?/virtualmachines/?$", re.I)
_VM = re.compile(r"^/subscriptions/[^/]+/resourcegroups/([^/]+)/providers/microsoft\.compute/virtualmachines/"
                 r"([^/]+)(/.*)?$", re.I)
_REMAINING_RESOURCE = re.compile(r"Microsoft\.Compute/([A-Za-z]+?)(SubscriptionMaximum|Resource);(\d+)")


def arm_kind(method):
    method = method.upper()
    if method in ("GET", "HEAD"):
        return "reads"
    if method == "DELETE":
        return "deletes"
    return "writes"


def rate_scale():
    try:
        value = float(os.environ.get("AZURE_VM_EXTENSIONS_RATE_SCALE") or 1)
    except ValueError:
        return 1.0
    return value if value > 0 else 1.0


class TokenBucket(object):
    """One bucket as this process sees it. Not thread safe by itself: Scheduler holds a lock around it.

    tokens = what the bucket holds for this process less the reservations not sent yet (promised); negative when
    callers own slots in the future. in_flight counts requests sent and not answered. share is this process's part
    of the refill rate (1 when alone). epoch changes when slots already handed out became wrong (a 429's hold, or
    the server reporting more tokens than thought), so sleepers re-reserve.
    """

    def __init__(self, size, rate, now, probe=True):
        self.size = float(size)
        self.rate = float(rate)
        self.tokens = 1.0 if probe else float(size)
        self.updated = now
        self.share = 1.0
        self.in_flight = 0
        self.promised = 0
        self.seen_header = not probe
        self.epoch = 0
        self.hold_until = 0.0
        self.throttled = 0
        self.lowest = None
        # share measurement: server count, time and our own answered requests at the last measurement
        self._mark = None
        self._answered = 0
        self._others_rate = 0.0

    def effective_rate(self):
        return self.rate * self.share

    def refill(self, now):
        if now > self.updated:
            start = max(self.updated, self.hold_until)
            if now > start:
                self.tokens = min(self.size - self.promised, self.tokens + (now - start) * self.effective_rate())
            self.updated = now

    def reserve(self, now, rand=random.random):
        """Take one token; return the time at which the caller may send (now when a token was there)."""
        self.refill(now)
        self.tokens -= 1
        self.promised += 1
        if self.tokens >= 0 and now >= self.hold_until:
            return now
        start = max(now, self.hold_until)
        interval = 1.0 / self.effective_rate()
        return start + (-self.tokens) * interval + rand() * JITTER * interval

    def release(self):
        """A reservation given back unused (the caller re-reserves after an epoch change)."""
        self.promised = max(self.promised - 1, 0)
        self.tokens = min(self.size - self.promised, self.tokens + 1)

    def sent(self):
        """A reservation used: its request is on the wire."""
        self.promised = max(self.promised - 1, 0)
        self.in_flight += 1

    def answered(self):
        self.in_flight = max(self.in_flight - 1, 0)
        self._answered += 1

    def void_promises(self):
        """Every slot handed out is wrong now (a 429's hold, or more tokens than thought): the sleepers reserve
        again, one after the other, each taking the next slot (giving each slot back and taking the last one
        again would put them all on the same slot: a herd)."""
        self.tokens = min(self.size, self.tokens + self.promised)
        self.promised = 0
        self.epoch += 1

    def observe_remaining(self, remaining, now):
        """The server's count after one of our requests: the truth, less what we still have in flight."""
        self.refill(now)
        self.seen_header = True
        self.lowest = remaining if self.lowest is None else min(self.lowest, remaining)
        # Processes sharing the budget all see the same count: each may spend its share of it. The requests still
        # in flight will take from it, and the slots promised to sleepers stay promised. (Deriving the promised
        # slots from the negative token count instead counted the in-flight requests again at every response:
        # with 30 in flight and the server at 0, the slots moved tens of seconds ahead.)
        tokens = min(self.size, float(remaining) * self.share - self.in_flight) - self.promised
        if tokens > self.tokens + 1 and self.promised:
            self.void_promises()          # more than we thought: sleepers may go earlier
            tokens = min(self.size, float(remaining) * self.share - self.in_flight)
        self.tokens = tokens
        self._measure_share(remaining, now)

    def _measure_share(self, remaining, now):
        # Our part of what the server counted between two measurements is what was answered in between: a request
        # sent but not answered may or may not have reached the server's count. That uncertainty (the requests in
        # flight) must be small beside the refill of the window, or our own in-flight requests look like another
        # process's spending (32 in flight at the first measurement took a lone process to 1/16 and stalled it).
        if self._mark is None:
            self._mark = (remaining, now, self._answered)
            return
        count0, time0, answered0 = self._mark
        elapsed = now - time0
        if elapsed * self.rate < SHARE_WINDOW * 10 + 4 * self.in_flight:   # about 10 refills, and 4 x in flight
            return
        self._mark = (remaining, now, self._answered)
        if count0 + elapsed * self.rate >= self.size:
            # The bucket may have been full in between: the refill is unknown, so nothing can be concluded,
            # and a full bucket means nobody is short: decay the others' rate.
            self._others_rate *= 0.5
        else:
            spent_by_all = count0 + elapsed * self.rate - remaining
            others = max(spent_by_all - (self._answered - answered0), 0.0) / elapsed
            self._others_rate = 0.3 * self._others_rate + 0.7 * others
        # A margin on the others' part keeps the slices' sum below the rate (4 equal slices settle at 0.23 each);
        # alone, the share is 1.
        # Growth is at most 25% per measurement, so a share halved by a 429 comes back gradually.
        measured = (self.rate - OTHERS_MARGIN * self._others_rate) / self.rate
        self.share = min(1.0, self.share * 1.25, max(MIN_SHARE, measured))

    def hold(self, seconds, now):
        """429: no token until now + seconds (Retry-After), then this process's share of the refill; every slot
        handed out before is void, so the callers re-reserve one by one, a refill interval apart, after that."""
        self.refill(now)
        self.throttled += 1
        # Requests already on the wire when the bucket ran dry are refused together: one event, one halving.
        first_of_burst = now >= self.hold_until
        self.hold_until = max(self.hold_until, now + seconds)
        self.void_promises()
        self.tokens = min(self.tokens, 0.0)
        self.updated = now
        self._answered -= 1               # the refused request took no token at the server
        # Someone else spends this budget too (or the server is stricter than published): halve this process's
        # share at once; the next measurement sets it from what the others really spend.
        if first_of_burst:
            self.share = max(MIN_SHARE, self.share * 0.5)

    def no_header(self):
        """A response without this bucket's header: trust the published size (nothing better is known)."""
        if not self.seen_header:
            self.seen_header = True
            self.tokens = self.size - self.in_flight - self.promised


class Scheduler(object):
    """The buckets of one process, keyed by scope. Thread safe; `clock` and `sleep` are injectable for tests."""

    def __init__(self, clock=time.time, sleep=time.sleep, scale=None, rand=random.random, probe=True):
        self.clock = clock
        self.sleep = sleep
        self.scale = rate_scale() if scale is None else float(scale)
        self.rand = rand
        self.probe = probe
        self.buckets = {}
        self.lock = threading.Condition()
        self.throttled = 0
        self.requests = 0

    # ---- which buckets a request takes from ------------------------------------------------------------------
    def keys_for(self, method, path):
        """[(key, size, rate per second)] for a request; path without the query string."""
        kind = arm_kind(method)
        size, rate = ARM_LIMITS[kind]
        match = _SUB.match(path)
        scope = ("subscription", match.group(1).lower()) if match else ("tenant",)
        keys = [(("arm",) + scope + (kind,), size, rate)]
        if not match:
            return keys
        sub = match.group(1).lower()
        policy, resource = None, None
        if _OPERATION.match(path):
            policy = "GetOperation" if kind == "reads" else None
        elif _VM_LIST.match(path):
            policy = "HighCostGet" if kind == "reads" else None
        else:
            vm = _VM.match(path)
            if vm and not (vm.group(3) or "").lower().startswith("/providers/"):
                resource = (vm.group(1).lower(), vm.group(2).lower())
                rest = (vm.group(3) or "").lower()
                if kind == "reads":
                    policy = "LowCostGet"
                elif rest.startswith("/extensions/"):
                    policy = "UpdateVM"
        if policy:
            res_size, res_rate, sub_size, sub_rate = COMPUTE_LIMITS[policy]
            keys.append((("compute", sub, policy), sub_size, sub_rate / 60.0))
            if resource is not None and res_size is not None:
                keys.append((("compute", sub, policy) + resource, res_size, res_rate / 60.0))
        return keys

    def _bucket(self, key, size, rate, now):
        bucket = self.buckets.get(key)
        if bucket is None:
            # Per-resource buckets are never shared with other processes' work on the same VM: no probe.
            probe = self.probe and len(key) <= 4
            bucket = self.buckets[key] = TokenBucket(size, rate * self.scale, now, probe=probe)
        return bucket

    # ---- before a request --------------------------------------------------------------------------------------
    def acquire(self, keys):
        """Wait until every bucket in keys (from keys_for) has a slot for this request; count it in flight."""
        while True:
            buckets, ready, epochs = self.reserve(keys)
            if ready is None:
                with self.lock:
                    self.lock.wait(0.05)
                continue
            while True:
                now = self.clock()
                if now >= ready:
                    break
                self.sleep(min(ready - now, 0.25 / max(self.scale, 1.0)))
                if self.moved(buckets, epochs):
                    break
            if self.start(buckets, epochs, ready):
                return buckets

    def reserve(self, keys):
        """(buckets, time the request may go, their epochs); time None while a probe is out (ask again)."""
        with self.lock:
            now = self.clock()
            buckets = [self._bucket(key, size, rate, now) for key, size, rate in keys]
            # A bucket that never answered a header yet admits one probe at a time.
            if any(not b.seen_header and b.in_flight > 0 and b.tokens < 1 for b in buckets):
                return buckets, None, None
            ready = max(bucket.reserve(now, self.rand) for bucket in buckets)
            return buckets, ready, [bucket.epoch for bucket in buckets]

    def moved(self, buckets, epochs):
        with self.lock:
            return [bucket.epoch for bucket in buckets] != epochs

    def start(self, buckets, epochs, ready):
        """Send now (True, counted in flight), or, when a bucket voided its slots since the reservation, give back
        the others' and return False (reserve again)."""
        with self.lock:
            if [bucket.epoch for bucket in buckets] != epochs:
                for bucket, epoch in zip(buckets, epochs):
                    if bucket.epoch == epoch:
                        bucket.release()
                return False
            self.requests += 1
            for bucket in buckets:
                bucket.sent()
            return True

    # ---- after a response -------------------------------------------------------------------------------------
    def complete(self, buckets, keys, status, headers, body=None):
        """Correct the buckets from the response's headers; a 429 holds the bucket it names for Retry-After."""
        with self.lock:
            now = self.clock()
            for bucket in buckets:
                bucket.answered()
            by_key = dict((key, bucket) for (key, dummy, dummy2), bucket in zip(keys, buckets))
            for key, bucket in by_key.items():
                remaining = self._remaining_for(key, headers)
                if remaining is not None:
                    bucket.observe_remaining(remaining, now)
                else:
                    bucket.no_header()
            if status == 429:
                self.throttled += 1
                retry = retry_after_seconds(headers)
                for key in self._throttled_keys(by_key, body):
                    by_key[key].hold(retry, now)
            self.lock.notify_all()

    @staticmethod
    def _remaining_for(key, headers):
        if key[0] == "arm":
            value = headers.get("x-ms-ratelimit-remaining-%s-%s" % (
                "subscription" if key[1] == "subscription" else "tenant", key[-1]))
            return int(value) if value is not None and str(value).strip().isdigit() else None
        text = headers.get("x-ms-ratelimit-remaining-resource")
        if not text:
            return None
        policy = key[2]
        wanted = "SubscriptionMaximum" if len(key) == 3 else "Resource"
        for name, scope, count in _REMAINING_RESOURCE.findall(text):
            if name == policy and scope == wanted:
                return int(count)
        return None

    @staticmethod
    def _throttled_keys(by_key, body):
        """The buckets a 429 names: Compute's TooManyRequests target, else ARM's bucket of this request."""
        target = None
        try:
            error = (json.loads(body) if body else {}).get("error") or {}
            for detail in error.get("details") or []:
                if (detail.get("code") or "").lower() == "toomanyrequests":
                    target = detail.get("target")
        except (ValueError, AttributeError):
            target = None
        if target:
            named = []
            for key in by_key:
                if key[0] != "compute":
                    continue
                scope = "SubscriptionMaximum" if len(key) == 3 else "Resource"
                if target in (key[2] + scope, key[2]):
                    named.append(key)
            if named:
                return named
            return [key for key in by_key if key[0] == "compute"] or list(by_key)
        return [key for key in by_key if key[0] == "arm"] or list(by_key)

    def snapshot(self):
        """429s and the lowest remaining count per ARM kind, for results."""
        with self.lock:
            lowest = {}
            for key, bucket in self.buckets.items():
                if key[0] == "arm" and bucket.lowest is not None:
                    lowest[key[-1]] = min(bucket.lowest, lowest.get(key[-1], bucket.lowest))
            return {"throttled_429": self.throttled, "lowest_remaining": lowest, "requests": self.requests}


def retry_after_seconds(headers):
    """Retry-After in seconds (Azure sends whole seconds; a fraction or an HTTP date are accepted); at least 0."""
    value = headers.get("Retry-After") or headers.get("retry-after")
    if value is None:
        return 1.0
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return 1.0
