"""The throttling scheduler's buckets on a fake clock: published limits, header corrections, 429 holds without a
herd, and processes that share one principal's budget (module_utils/scheduler.py)."""
import random

import pytest

from ansible_collections.azure_vm.extensions.plugins.module_utils.scheduler import (
    Scheduler,
    TokenBucket,
    retry_after_seconds,
)

SUB = "/subscriptions/00000000-0000-0000-0000-000000000001"
# A write that only ARM's bucket counts (no Compute policy): the tests of many requests on one bucket.
ARM_ONLY = SUB + "/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/store1"
VM = SUB + "/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm-1"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds


class ServerBucket:
    """Azure's side of one bucket, as throttling.md describes it: full at start, a request takes a token, a refused
    one takes none; 429 with Retry-After = whole seconds to the next token, rounded up."""

    def __init__(self, size, rate, clock):
        self.size, self.rate, self.clock = size, rate, clock
        self.tokens, self.updated = float(size), clock()
        self.throttled = self.accepted = 0

    def request(self):
        now = self.clock()
        self.tokens = min(self.size, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            self.throttled += 1
            wait = (1 - self.tokens) / self.rate
            return 429, {"Retry-After": str(max(1, int(-(-wait // 1))))}
        self.tokens -= 1
        self.accepted += 1
        return 200, {"x-ms-ratelimit-remaining-subscription-writes": str(int(self.tokens))}


def send(scheduler, server, method="PUT", path=VM + "/extensions/ext"):
    """One request through the scheduler, retried after Retry-After as azure-core's RetryPolicy does."""
    while True:
        keys = scheduler.keys_for(method, path)
        buckets = scheduler.acquire(keys)
        status, headers = server.request()
        scheduler.complete(buckets, keys, status, headers)
        if status != 429:
            return
        scheduler.sleep(retry_after_seconds(headers))


def test_published_limits_by_request_kind():
    sched = Scheduler(clock=FakeClock(), scale=1)
    keys = dict((key, (size, rate)) for key, size, rate in sched.keys_for("PUT", VM + "/extensions/x"))
    assert keys[("arm", "subscription", SUB.split("/")[2], "writes")] == (200, 10.0)
    assert keys[("compute", SUB.split("/")[2], "UpdateVM")] == (1500, 500 / 60.0)
    assert keys[("compute", SUB.split("/")[2], "UpdateVM", "rg", "vm-1")] == (12, 4 / 60.0)
    reads = dict((key[-1] if key[0] == "arm" else key[2] + ("/vm" if len(key) > 3 else ""), (size, rate))
                 for key, size, rate in sched.keys_for("GET", VM))
    assert reads == {"reads": (250, 25.0), "LowCostGet": (24000, 8000 / 60.0), "LowCostGet/vm": (36, 12 / 60.0)}
    listing = [key for key, size, rate in sched.keys_for("GET", SUB + "/providers/Microsoft.Compute/virtualMachines")]
    assert [key[2] for key in listing if key[0] == "compute"] == ["HighCostGet"]
    deletes = [key for key, size, rate in sched.keys_for("DELETE", VM + "/extensions/x")]
    assert ("arm", "subscription", SUB.split("/")[2], "deletes") in deletes
    poll = SUB + "/providers/Microsoft.Compute/locations/westeurope/operations/abc"
    assert [key[2] for key, s, r in sched.keys_for("GET", poll) if key[0] == "compute"] == ["GetOperation"]
    tenant = sched.keys_for("GET", "/providers/Microsoft.Compute/operations")
    assert [key for key, s, r in tenant] == [("arm", "tenant", "reads")]


def test_bucket_admits_its_size_then_one_per_refill_interval():
    clock = FakeClock()
    bucket = TokenBucket(200, 10.0, clock(), probe=False)
    slots = [bucket.reserve(clock(), rand=lambda: 0.0) for _step in range(230)]
    assert slots[:200] == [clock()] * 200
    assert slots[200:] == pytest.approx([clock() + 0.1 * n for n in range(1, 31)])


def test_a_429_holds_the_bucket_and_releases_waiters_one_by_one():
    clock = FakeClock()
    bucket = TokenBucket(200, 10.0, clock(), probe=False)
    for _step in range(200):
        bucket.reserve(clock())
    bucket.hold(3.0, clock())
    rng = random.Random(7)
    slots = [bucket.reserve(clock(), rand=rng.random) for _step in range(50)]
    assert min(slots) >= clock() + 3.0
    interval = 1 / bucket.effective_rate()
    assert interval == pytest.approx(0.2)      # the 429 halved this process's share of the refill
    gaps = [later - earlier for earlier, later in zip(slots, slots[1:])]
    # distinct slots at the refill pace (jitter moves each by at most a quarter interval): no herd
    assert all(gap >= interval * 0.75 - 1e-9 for gap in gaps)
    assert slots[-1] - slots[0] == pytest.approx(49 * interval, abs=interval)


def test_headers_correct_the_estimate_both_ways():
    clock = FakeClock()
    bucket = TokenBucket(200, 10.0, clock(), probe=False)
    bucket.reserve(clock())
    bucket.sent()
    bucket.answered()
    bucket.observe_remaining(20, clock())          # someone else spent most of it
    assert bucket.tokens == 20
    slots = [bucket.reserve(clock(), rand=lambda: 0) for _step in range(21)]
    assert slots[:20] == [clock()] * 20 and slots[-1] == pytest.approx(clock() + 0.1)
    for _step in range(20):
        bucket.sent()                              # the 20 go; the 21st sleeps until its slot
    bucket.observe_remaining(150, clock())          # the server has more than thought: sleepers may go earlier
    assert bucket.epoch >= 1 and bucket.promised == 0
    assert bucket.tokens == 150 - 20               # less the 20 on the wire, which the server has not counted yet


def test_responses_while_the_server_is_empty_do_not_push_the_slots_ahead():
    """30 requests in flight when the server's count reaches 0: every response says 0. The slots promised to
    sleepers are still theirs and the 30 are counted once; counting them again at every response had moved the
    next slot about 30 + 29 + ... + 1 = 465 tokens ahead (23 s of writes, seen at 2,000 VMs)."""
    clock = FakeClock()
    bucket = TokenBucket(200, 10.0, clock(), probe=False)
    for _step in range(200):
        bucket.reserve(clock())
        bucket.sent()
    for _step in range(170):
        bucket.answered()                          # 170 answered, 30 still on the wire
    sleepers = [bucket.reserve(clock(), rand=lambda: 0) for _step in range(5)]
    assert sleepers[-1] == pytest.approx(clock() + 0.5)
    for _step in range(30):
        bucket.answered()
        bucket.observe_remaining(0, clock())
    # the server holds 0 and nothing is in flight: 5 promised slots, the next one after them
    assert bucket.tokens == -5
    assert bucket.reserve(clock(), rand=lambda: 0) == pytest.approx(clock() + 0.6)


def test_sleepers_woken_by_a_429_take_distinct_slots():
    """After a 429 every promised slot is void; the sleepers reserve again one after the other and get successive
    slots after Retry-After, not all the last one (which would send them together: a herd)."""
    clock = FakeClock()
    sched = Scheduler(clock=clock, sleep=clock.sleep, scale=1, rand=lambda: 0.0, probe=False)
    keys = sched.keys_for("PUT", ARM_ONLY)
    assert len(keys) == 1
    arm = sched.reserve(keys)[0][0]
    arm.tokens = 0.0
    reservations = [sched.reserve(keys) for _step in range(20)]
    sched.complete([arm], keys[:1], 429, {"Retry-After": "2"})
    again = []
    for buckets, ready, epochs in reservations:
        assert not sched.start(buckets, epochs, ready)   # its slot is void: reserve again
        again.append(sched.reserve(keys)[1])
    interval = 1 / arm.effective_rate()
    assert again[0] >= clock() + 2.0
    assert all(later - earlier == pytest.approx(interval) for earlier, later in zip(again, again[1:]))


@pytest.mark.parametrize("scale,latency,probe", [(1.0, 0.05, False), (2.5, 0.3, True)])
def test_many_workers_in_flight_keep_to_the_bucket_near_the_floor(scale, latency, probe):
    """32 workers, each request `latency` seconds on the wire, 2,000 writes through ARM's write bucket of 200 + 10/s
    (x scale, as on the emulator's faster clock): the floor is (2000 - 200) / (10 x scale). The client finishes near
    it with few 429s and no gap longer than a few refill intervals between accepted writes (stalls of 19-23 s were
    seen at 2,000 VMs: in-flight requests counted again at every response, and, with the process starting on a
    probe, the requests in flight at the first share measurement taken for another process's spending)."""
    clock = FakeClock()
    rate = 10.0 * scale
    server = ServerBucket(200, rate, clock)
    sched = Scheduler(clock=clock, sleep=clock.sleep, scale=scale, rand=random.Random(5).random, probe=probe)
    total = 2000
    left = [total]
    events = [(clock(), n, "reserve", None) for n in range(32)]
    order = 32
    accepted_at = []
    while events:
        events.sort(key=lambda event: (event[0], event[1]))
        when, _n, step, data = events.pop(0)
        clock.now = max(clock.now, when)
        order += 1
        keys = sched.keys_for("PUT", ARM_ONLY)
        if step == "reserve":
            if not left[0] and data is None:
                continue
            if data is None:
                left[0] -= 1
            buckets, ready, epochs = sched.reserve(keys)
            events.append((ready if ready is not None else clock() + 0.05, order, "start",
                           (buckets, ready, epochs) if ready is not None else None))
        elif step == "start":
            if data is None:
                events.append((clock(), order, "reserve", "retry"))
                continue
            buckets, ready, epochs = data
            if not sched.start(buckets, epochs, ready):
                events.append((clock(), order, "reserve", "retry"))
                continue
            status, headers = server.request()          # counted on arrival, answered after the latency
            events.append((clock() + latency, order, "answer", (buckets, keys, status, headers)))
        else:
            buckets, keys, status, headers = data
            sched.complete(buckets, keys, status, headers)
            if status == 429:
                events.append((clock() + retry_after_seconds(headers), order, "reserve", "retry"))
            else:
                accepted_at.append(clock())
                events.append((clock(), order, "reserve", None))
    assert server.accepted == total
    assert server.throttled <= 0.01 * total
    gaps = [later - earlier for earlier, later in zip(accepted_at, accepted_at[1:])]
    assert max(gaps) <= 30.0 / rate
    assert clock() - 1000.0 <= (total - 200) / rate * 1.1
    # alone: its whole refill
    assert min(b.share for key, b in sched.buckets.items() if key[0] == "arm" and key[-1] == "writes") >= 0.9


def test_probe_first_then_trust_the_header():
    clock = FakeClock()
    sched = Scheduler(clock=clock, sleep=clock.sleep, scale=1)
    keys = sched.keys_for("PUT", VM + "/extensions/x")
    buckets = sched.acquire(keys)
    arm = buckets[0]
    assert arm.tokens == 0 and not arm.seen_header
    sched.complete(buckets, keys, 200, {"x-ms-ratelimit-remaining-subscription-writes": "42"})
    assert arm.seen_header and arm.tokens == 42


def test_one_process_never_meets_a_429_at_the_published_rate():
    clock = FakeClock()
    server = ServerBucket(200, 10.0, clock)
    sched = Scheduler(clock=clock, sleep=clock.sleep, scale=1, rand=random.Random(1).random)
    start = clock()
    for i in range(600):
        send(sched, server, path=VM.replace("vm-1", "vm-%d" % i) + "/extensions/x")
    assert server.throttled == 0 and server.accepted == 600
    # 200 at once, then 10 per second: 40 s is the floor; jitter and probing cost at most a few percent
    assert 40.0 <= clock() - start <= 40.0 * 1.05


def test_retry_after_is_honoured_when_the_server_is_stricter_than_published():
    clock = FakeClock()
    server = ServerBucket(20, 2.0, clock)          # a stricter server than the published numbers
    sched = Scheduler(clock=clock, sleep=clock.sleep, scale=1, rand=random.Random(2).random)
    times = []
    for i in range(100):
        send(sched, server, path=VM.replace("vm-1", "vm-%d" % i) + "/extensions/x")
        times.append(clock())
    assert server.accepted == 100
    # the headers teach the client the real count: 429s stay rare, at most one per refill of a token
    assert server.throttled <= (clock() - 1000.0) * 2.0
    assert server.throttled <= 10


def test_slices_sharing_one_principal_stay_at_the_published_rate():
    """Four processes (AWX job slices) with one principal, simulated as events on one clock: each learns from the
    headers that others spend the same budget, so together they keep to it with few 429s, and finish near the
    floor of (1000 - 200) / 10 = 80 s."""
    clock = FakeClock()
    server = ServerBucket(200, 10.0, clock)
    rng = random.Random(3)
    slices = [Scheduler(clock=clock, sleep=clock.sleep, scale=1, rand=rng.random) for _step in range(4)]
    left = {i: 250 for i in range(4)}
    events = [(clock(), i, None) for i in range(4)]     # (time, slice, reservation or None)
    while events:
        events.sort(key=lambda event: event[0])
        when, i, reservation = events.pop(0)
        clock.now = max(clock.now, when)
        sched = slices[i]
        keys = sched.keys_for("PUT", VM.replace("vm-1", "vm-%d-%d" % (i, left[i])) + "/extensions/x")
        if reservation is None:
            buckets, ready, epochs = sched.reserve(keys)
            events.append((ready if ready is not None else clock() + 0.05, i,
                           (buckets, ready, epochs) if ready is not None else None))
            continue
        buckets, ready, epochs = reservation
        if not sched.start(buckets, epochs, ready):
            events.append((clock(), i, None))
            continue
        status, headers = server.request()
        sched.complete(buckets, keys, status, headers)
        if status == 429:
            events.append((clock() + retry_after_seconds(headers), i, None))
            continue
        left[i] -= 1
        if left[i]:
            events.append((clock(), i, None))
    assert server.accepted == 1000
    # no herd: fewer than 3% of the requests meet a 429, fewer than one per second, and the run ends near the floor
    assert server.throttled <= 0.03 * server.accepted
    assert server.throttled <= clock() - 1000.0
    assert clock() - 1000.0 <= 80.0 * 1.05


def test_429s_of_one_burst_halve_the_share_once():
    """Requests in flight when the bucket ran dry come back refused together: one event. Halving the share for each
    of them (15 at once were seen at 2,000 VMs) left the process at a sixteenth of the refill and stalled it."""
    clock = FakeClock()
    bucket = TokenBucket(200, 10.0, clock(), probe=False)
    for _step in range(15):
        bucket.hold(1.0, clock())
    assert bucket.share == pytest.approx(0.5)
    clock.now += 1.5                           # after the hold: a new refusal is new evidence
    bucket.hold(1.0, clock())
    assert bucket.share == pytest.approx(0.25)
