"""Throttling as ../shared/reference/throttling.md describes it, seen through the real SDK: every bucket's published
size and refill, the headers counting down, the 429 bodies and Retry-After, and the same at time_scale 60.

No assertion depends on how fast this machine is. Bucket sizes and refills are measured with the simulated clock
nearly stopped (FROZEN: 0.0036 simulated seconds per real hour, so nothing refills during a test) and moved on
exactly with POST /_emulator/clock; where real time must pass (time_scale 60), assertions are bounds computed from
the time the test itself measured around its requests.
"""
import math
import time
from pathlib import Path

import pytest
import yaml
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resource.features import FeatureClient
from azure.mgmt.resource.resources import ResourceManagementClient

from emulator_clients import metadata, raw
from emulator_control import Emulator

HERE = Path(__file__).resolve().parent
FROZEN = 1e-6
SECOND_PRINCIPAL = ("6f3a8c1e-0000-4000-8000-0000000000c2", "second-client-secret")
FLEET_RG = "rg-fleet"
RG = "rg-demo"
EMPTY_RG = "rg-empty"  # a VM list with nothing in it is still a High Cost Get, and quick to answer
FEATURE = ("Microsoft.Compute", "AutomaticExtensionUpgradePreview")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The fleet seed (200 VMs in rg-fleet, enough resources to spend a subscription's budgets one token per VM)
    plus a second service principal and an empty resource group."""
    seed = yaml.safe_load((HERE / "fleet-seed.yml").read_text())
    seed["subscriptions"][0]["service_principals"].append(
        {"client_id": SECOND_PRINCIPAL[0], "secret": SECOND_PRINCIPAL[1]})
    seed["subscriptions"][0]["resource_groups"].append({"name": EMPTY_RG, "location": "westeurope"})
    directory = tmp_path_factory.mktemp("throttling")
    (directory / "seed.yml").write_text(yaml.safe_dump(seed))
    emu = Emulator.start(str(directory / "emulator"), seed=str(directory / "seed.yml"))
    yield emu
    emu.stop()


@pytest.fixture
def emu(world):
    """Reset (which refills every bucket) and stop the simulated clock."""
    world.reset()
    world.settings(time_scale=FROZEN)
    return world


def _credential(emu, principal=None):
    authority, dummy = metadata(emu)
    client_id, secret = principal or (emu.env["AZURE_CLIENT_ID"], emu.env["AZURE_SECRET"])
    return ClientSecretCredential(emu.env["AZURE_TENANT"], client_id, secret, authority=authority,
                                  disable_instance_discovery=True, connection_verify=emu.ca_bundle)


def _client(cls, emu, principal=None):
    dummy, audience = metadata(emu)
    return cls(_credential(emu, principal), emu.env["AZURE_SUBSCRIPTION_ID"], base_url=emu.base_url,
               credential_scopes=[audience + ".default"], connection_verify=emu.ca_bundle, polling_interval=0.05)


class Recorder:
    """raw_response_hook: the headers of every response the SDK received (including retried 429s)."""

    def __init__(self):
        self.headers = []

    def __call__(self, response):
        self.headers.append(response.http_response.headers)

    def last(self, name):
        return self.headers[-1].get(name)


def refused(call):
    """Run an SDK call that must be throttled (no SDK retry); return the HttpResponseError."""
    with pytest.raises(HttpResponseError) as exc:
        call(retry_total=0)
    assert exc.value.status_code == 429
    return exc.value


def advance(emu, seconds):
    emu._call("POST", "clock", {"advance_s": seconds})


def delete_ext(compute, vm, rec, **kwargs):
    """DELETE of an extension the VM does not have: 204, one ARM delete and one Compute Update VM token."""
    compute.virtual_machine_extensions.begin_delete(FLEET_RG, vm, "absent", polling=False,
                                                    raw_response_hook=rec, **kwargs).result()


def log_429s(emu):
    return [e for e in emu.arm_requests() if e["status"] == 429]


# --- ARM ------------------------------------------------------------------------------------------------------
def test_arm_reads_bucket_per_principal_with_global_bucket_and_refill(emu):
    rec = Recorder()
    groups = _client(ResourceManagementClient, emu).resource_groups
    for dummy in range(250):
        groups.get(RG, raw_response_hook=rec)
    assert [int(h["x-ms-ratelimit-remaining-subscription-reads"]) for h in rec.headers] == list(range(249, -1, -1))
    assert [int(h["x-ms-ratelimit-remaining-subscription-global-reads"]) for h in rec.headers] == \
        list(range(3749, 3499, -1))
    assert "x-ms-ratelimit-remaining-resource" not in rec.headers[0]  # Microsoft.Resources: no Compute policy

    error = refused(lambda **kw: groups.get(RG, **kw))
    assert error.error.code == "SubscriptionRequestsThrottled"
    assert "Number of 'read' requests for subscription" in error.message and "actor" in error.message
    retry = error.response.headers["Retry-After"]
    assert retry.isdigit() and int(retry) >= 1
    assert error.response.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    (entry,) = log_429s(emu)
    assert entry["throttled_by"] == "ARM/subscription-reads" and entry["retry_after"] == int(retry)

    # Another principal has its own bucket; the subscription's global one (15 x 250) is shared.
    other = Recorder()
    _client(ResourceManagementClient, emu, SECOND_PRINCIPAL).resource_groups.get(RG, raw_response_hook=other)
    assert other.last("x-ms-ratelimit-remaining-subscription-reads") == "249"
    assert other.last("x-ms-ratelimit-remaining-subscription-global-reads") == "3499"

    # Refill: 25 per simulated second, up to the bucket size.
    advance(emu, 2)
    rec.headers.clear()
    for dummy in range(50):
        groups.get(RG, raw_response_hook=rec)
    assert [int(h["x-ms-ratelimit-remaining-subscription-reads"]) for h in rec.headers] == list(range(49, -1, -1))
    refused(lambda **kw: groups.get(RG, **kw))
    advance(emu, 3600)
    groups.get(RG, raw_response_hook=rec)
    assert rec.last("x-ms-ratelimit-remaining-subscription-reads") == "249"

    # Outside a subscription the same numbers apply per tenant (and principal).
    status, headers, dummy = raw(emu, "GET", "/providers/Microsoft.Compute/operations")
    assert headers["x-ms-ratelimit-remaining-tenant-reads"] == "249"


def test_arm_writes_and_deletes_are_separate_buckets(emu):
    feats, compute = _client(FeatureClient, emu).features, _client(ComputeManagementClient, emu)
    writes, deletes = Recorder(), Recorder()
    for dummy in range(200):
        feats.register(*FEATURE, raw_response_hook=writes)
    assert [int(h["x-ms-ratelimit-remaining-subscription-writes"]) for h in writes.headers] == \
        list(range(199, -1, -1))
    error = refused(lambda **kw: feats.register(*FEATURE, **kw))
    assert error.error.code == "SubscriptionRequestsThrottled" and "'write' requests" in error.message

    # Deletes are not charged to writes: 200 of their own, here one per VM (so no VM's Compute bucket matters),
    # while Compute's Update VM subscription bucket counts every one of them down from 1500.
    for index in range(1, 201):
        delete_ext(compute, "fleet-%03d" % index, deletes)
    assert [int(h["x-ms-ratelimit-remaining-subscription-deletes"]) for h in deletes.headers] == \
        list(range(199, -1, -1))
    assert [h["x-ms-ratelimit-remaining-resource"] for h in deletes.headers[:2]] == [
        "Microsoft.Compute/UpdateVMSubscriptionMaximum;1499,Microsoft.Compute/UpdateVMResource;11",
        "Microsoft.Compute/UpdateVMSubscriptionMaximum;1498,Microsoft.Compute/UpdateVMResource;11"]
    assert deletes.headers[-1]["x-ms-ratelimit-remaining-resource"].startswith(
        "Microsoft.Compute/UpdateVMSubscriptionMaximum;1300,")
    error = refused(lambda **kw: delete_ext(compute, "fleet-001", Recorder(), **kw))
    assert error.error.code == "SubscriptionRequestsThrottled" and "'delete' requests" in error.message
    assert [e["throttled_by"] for e in log_429s(emu)] == ["ARM/subscription-writes", "ARM/subscription-deletes"]

    # Both refill at 10 per simulated second.
    advance(emu, 1)
    writes.headers.clear()
    for dummy in range(10):
        feats.register(*FEATURE, raw_response_hook=writes)
    assert writes.last("x-ms-ratelimit-remaining-subscription-writes") == "0"
    refused(lambda **kw: feats.register(*FEATURE, **kw))
    delete_ext(compute, "fleet-001", deletes)
    assert deletes.last("x-ms-ratelimit-remaining-subscription-deletes") == "9"


# --- Compute --------------------------------------------------------------------------------------------------
def test_compute_update_vm_bucket_per_vm(emu):
    compute, rec = _client(ComputeManagementClient, emu), Recorder()
    for dummy in range(12):
        delete_ext(compute, "fleet-001", rec)
    assert [h["x-ms-ratelimit-remaining-resource"] for h in rec.headers] == [
        f"Microsoft.Compute/UpdateVMSubscriptionMaximum;{1499 - i},Microsoft.Compute/UpdateVMResource;{11 - i}"
        for i in range(12)]
    assert rec.last("x-ms-request-charge") == "1"

    error = refused(lambda **kw: delete_ext(compute, "fleet-001", Recorder(), **kw))
    assert error.error.code == "OperationNotAllowed"
    assert error.error.message == ("The server rejected the request because too many requests have been received "
                                   "for this subscription.")
    (detail,) = error.error.details
    assert (detail.code, detail.target) == ("TooManyRequests", "UpdateVMResource")
    assert '"operationGroup":"UpdateVMResource"' in detail.message
    headers = error.response.headers
    assert headers["x-ms-ratelimit-remaining-resource"].endswith(",Microsoft.Compute/UpdateVMResource;0")
    # ARM had already passed it on: its delete token is spent (200 - 13).
    assert headers["x-ms-ratelimit-remaining-subscription-deletes"] == "187"
    (entry,) = log_429s(emu)
    assert entry["throttled_by"] == "Microsoft.Compute/UpdateVMResource"
    assert entry["retry_after"] == int(headers["Retry-After"]) >= 1

    # Creates and updates draw on the same bucket; another VM has its own.
    body = {"location": "westeurope", "properties": {"publisher": "Microsoft.Azure.Extensions",
                                                     "type": "CustomScript", "typeHandlerVersion": "2.1"}}
    refused(lambda **kw: compute.virtual_machine_extensions.begin_create_or_update(
        FLEET_RG, "fleet-001", "cs", body, polling=False, **kw))
    delete_ext(compute, "fleet-002", rec)
    assert rec.last("x-ms-ratelimit-remaining-resource").endswith("UpdateVMResource;11")

    # 4 per simulated minute.
    advance(emu, 60)
    for dummy in range(4):
        delete_ext(compute, "fleet-001", rec)
    assert rec.last("x-ms-ratelimit-remaining-resource").endswith("UpdateVMResource;0")
    refused(lambda **kw: delete_ext(compute, "fleet-001", Recorder(), **kw))


def test_compute_low_cost_get_bucket_per_vm(emu):
    vms, rec = _client(ComputeManagementClient, emu).virtual_machines, Recorder()
    for index in range(36):
        # A VM read, with or without its instance view, is one Low Cost Get.
        vms.get(FLEET_RG, "fleet-003", expand="instanceView" if index % 2 else None, raw_response_hook=rec)
    assert [h["x-ms-ratelimit-remaining-resource"] for h in rec.headers] == [
        f"Microsoft.Compute/LowCostGetSubscriptionMaximum;{23999 - i},Microsoft.Compute/LowCostGetResource;{35 - i}"
        for i in range(36)]
    error = refused(lambda **kw: vms.get(FLEET_RG, "fleet-003", **kw))
    assert error.error.details[0].target == "LowCostGetResource"
    advance(emu, 5)  # 12 per minute: one token every 5 s
    vms.get(FLEET_RG, "fleet-003", raw_response_hook=rec)
    assert rec.last("x-ms-ratelimit-remaining-resource").endswith("LowCostGetResource;0")
    refused(lambda **kw: vms.get(FLEET_RG, "fleet-003", **kw))


def test_compute_high_cost_get_bucket_per_subscription(emu):
    """VM lists: 900 per subscription, 300 per minute back (no per-resource bucket). ARM's reads (250 per
    principal) run out first, so the clock moves 10 s after every 250: +250 ARM reads, +50 High Cost Get."""
    vms, rec = _client(ComputeManagementClient, emu).virtual_machines, Recorder()

    def list_page():
        next(iter(vms.list(EMPTY_RG, raw_response_hook=rec).by_page()))

    expected, level = [], 900
    for batch in (250, 250, 250, 250, 100):
        for dummy in range(batch):
            list_page()
            level -= 1
            expected.append(f"Microsoft.Compute/HighCostGetSubscriptionMaximum;{level}")
        if batch == 250:
            advance(emu, 10)
            level += 50
    assert [h["x-ms-ratelimit-remaining-resource"] for h in rec.headers] == expected
    assert level == 0
    error = refused(lambda **kw: next(iter(vms.list(EMPTY_RG, **kw).by_page())))
    assert error.error.code == "OperationNotAllowed"
    assert error.error.details[0].target == "HighCostGetSubscriptionMaximum"
    assert error.response.headers["x-ms-ratelimit-remaining-subscription-reads"] == "149"
    advance(emu, 60)
    list_page()
    assert rec.last("x-ms-ratelimit-remaining-resource") == "Microsoft.Compute/HighCostGetSubscriptionMaximum;299"


def test_lro_polls_count_against_the_resource_of_their_operation(emu):
    emu.settings(time_scale=1, handler_duration_s=3600)
    compute, rec = _client(ComputeManagementClient, emu), Recorder()
    body = {"location": "westeurope", "properties": {"publisher": "Microsoft.Azure.Extensions",
                                                     "type": "CustomScript", "typeHandlerVersion": "2.1"}}
    compute.virtual_machine_extensions.begin_create_or_update(FLEET_RG, "fleet-004", "cs", body, polling=False,
                                                              raw_response_hook=rec)
    poll = rec.last("Azure-AsyncOperation").replace(emu.base_url, "")
    path, query = poll.split("?", 1)
    seen = [raw(emu, "GET", path, query=query)[1]["x-ms-ratelimit-remaining-resource"] for dummy in range(3)]
    assert [s.split(",")[1] for s in seen] == [f"Microsoft.Compute/GetOperationResource;{n}" for n in (44, 43, 42)]
    assert seen[0].startswith("Microsoft.Compute/GetOperationSubscriptionMaximum;14999,")


# --- time_scale -----------------------------------------------------------------------------------------------
def _drain_update_vm(emu, compute, vm):
    for dummy in range(12):
        delete_ext(compute, vm, Recorder())
    refused(lambda **kw: delete_ext(compute, vm, Recorder(), **kw))


def _until_refused(compute, vm, deadline_s=120):
    """Send deletes until one is throttled; (successes, the 429, real seconds from first send to last answer)."""
    successes, started = 0, time.time()
    while time.time() - started < deadline_s:
        try:
            delete_ext(compute, vm, Recorder(), retry_total=0)
            successes += 1
        except HttpResponseError as exc:
            assert exc.status_code == 429
            return successes, exc, time.time() - started
    raise AssertionError("no request was throttled")


def test_time_scale_60_refills_and_retry_after_in_the_callers_seconds(emu):
    compute = _client(ComputeManagementClient, emu)
    _drain_update_vm(emu, compute, "fleet-010")
    # At time_scale 60 a simulated minute is a real second: Update VM gives back 4 tokens per real second.
    before = time.time()
    emu.settings(time_scale=60)
    after = time.time()
    time.sleep(0.5)
    rec = Recorder()
    sent = time.time()
    delete_ext(compute, "fleet-010", rec)
    answered = time.time()
    remaining = int(rec.last("x-ms-ratelimit-remaining-resource").rsplit(";", 1)[1])
    assert max(0, math.floor(4 * (sent - after)) - 1) <= remaining <= min(11, math.ceil(4 * (answered - before)) - 1)

    # A 429 now asks for at most a quarter of a real second (15 simulated seconds), sent as Azure does: whole
    # seconds, rounded up, so 1; and the bucket never gave more than it refilled.
    dummy, error, elapsed = _until_refused(compute, "fleet-010")
    assert error.response.headers["Retry-After"] == "1"
    assert error.error.details[0].target == "UpdateVMResource"

    # With fractional_retry_after the exact wait is sent (azure-core parses it as a float).
    emu.settings(fractional_retry_after=True)
    dummy, error, elapsed = _until_refused(compute, "fleet-010")
    assert 0 < float(error.response.headers["Retry-After"]) <= 0.25
    entry = log_429s(emu)[-1]
    assert entry["retry_after"] == float(error.response.headers["Retry-After"])


def test_time_scale_60_sdk_honours_retry_after(emu):
    """16 Update VM requests on one VM with the SDK's own retry policy: 12 from the bucket, 4 more refill at 4 per
    real second, so it cannot take less than one real second (at time_scale 1 it would take a minute)."""
    emu.settings(time_scale=60)
    compute = _client(ComputeManagementClient, emu)
    rec = Recorder()
    started = time.time()
    for dummy in range(16):
        delete_ext(compute, "fleet-020", rec)
    elapsed = time.time() - started
    assert elapsed >= 1.0 - 0.01
    throttled = log_429s(emu)
    assert sum(1 for h in rec.headers if h.get("Retry-After")) == len(throttled)
    assert {e["throttled_by"] for e in throttled} <= {"Microsoft.Compute/UpdateVMResource"}
    assert all(e["retry_after"] == 1 for e in throttled)
    assert len([e for e in emu.arm_requests() if e["status"] == 204]) == 16


def test_time_scale_scales_handler_delete_and_registration_durations(emu):
    emu.settings(handler_duration_s=120, delete_duration_s=60, feature_registration_s=120)
    compute, feats = _client(ComputeManagementClient, emu), _client(FeatureClient, emu).features
    body = {"location": "westeurope", "properties": {"publisher": "Microsoft.Azure.Extensions",
                                                     "type": "CustomScript", "typeHandlerVersion": "2.1"}}
    poller = compute.virtual_machine_extensions.begin_create_or_update(FLEET_RG, "fleet-030", "cs", body)
    assert feats.register(*FEATURE).properties.state == "Registering"
    time.sleep(0.2)
    assert not poller.done()  # frozen clock: two simulated minutes never pass
    emu.settings(time_scale=60)
    ext = poller.result()  # two simulated minutes pass in two real seconds
    assert ext.provisioning_state == "Succeeded"
    time.sleep(2.1)
    assert feats.get(*FEATURE).properties.state == "Registered"
    compute.virtual_machine_extensions.begin_delete(FLEET_RG, "fleet-030", "cs").result()
    assert [e.name for e in compute.virtual_machine_extensions.list(FLEET_RG, "fleet-030").value] == []
    # The operation's own times are simulated: exactly the configured 120 s apart.
    ops = [e for e in emu.arm_requests() if "/operations/" in e["path"]]
    assert ops
    status, dummy, op = raw(emu, "GET", ops[0]["path"], query="api-version=" + ops[0]["query"]["api-version"])
    from datetime import datetime
    start, end = datetime.fromisoformat(op["startTime"]), datetime.fromisoformat(op["endTime"])
    assert (end - start).total_seconds() == pytest.approx(120, abs=1e-3)


# --- settings -------------------------------------------------------------------------------------------------
def test_throttle_settings(emu):
    assert emu.settings()["throttle_model"] == "azure" and emu.settings()["time_scale"] == FROZEN
    for bad in ({"throttle_model": "fixed"}, {"time_scale": 0}, {"time_scale": "60"},
                {"fractional_retry_after": 1}):
        with pytest.raises(Exception, match="throttle_model|time_scale|fractional_retry_after"):
            emu.settings(**bad)
    with pytest.raises(Exception, match="advance_s"):
        emu._call("POST", "clock", {"advance_s": -1})
    # `throttle` with an explicit model keeps that model.
    assert emu.settings(throttle={"reads": 1}, throttle_model="azure")["throttle_model"] == "azure"
    emu.settings(throttle_model="off")
    rec = Recorder()
    groups = _client(ResourceManagementClient, emu).resource_groups
    for dummy in range(260):
        groups.get(RG, raw_response_hook=rec)
    assert not any(k.lower().startswith("x-ms-ratelimit") for h in rec.headers for k in h)
    assert not log_429s(emu)
    emu.reset()
    assert emu.settings() == emu.settings() and emu.settings()["throttle_model"] == "azure"
    assert emu.settings()["time_scale"] == 1.0
