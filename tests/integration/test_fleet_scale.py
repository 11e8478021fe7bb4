"""The fleet against Azure's published throttling limits (the emulator's `azure` throttle model on a simulated clock
running faster than real time; the client is told the clock's speed with AZURE_VM_EXTENSIONS_RATE_SCALE):

* one VM polled as fast as asked stays within its Compute read budget (Low Cost Get, 36 + 12/min per VM);
* a fleet whose writes exceed ARM's write bucket converges with at most one 429 per bucket refill, waits with
  List All statusOnly=true sweeps, keeps its HTTPS connections (one per thread), and a second run sends no write
  and about one read per VM;
* four AWX job slices (ansible-runner, one principal) share the budget without herding, and every 429's
  Retry-After is honoured (the retry of a request, same x-ms-client-request-id, comes after it).
"""
import json
import os
import shutil
import subprocess
import threading
from collections import defaultdict

import pytest
import yaml

from harness import REPO_ROOT, VENV_BIN, base_ansible_env

FLEET_SEED = REPO_ROOT / "tests" / "emulator" / "fleet-seed.yml"
PLAYBOOK = REPO_ROOT / "playbooks" / "fleet.yml"
RG = "rg-fleet"
SCALE = 20.0
EXTENSIONS = [
    {"name": "monitor", "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent",
     "type_handler_version": "1.33"},
    {"name": "bootstrap", "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
     "type_handler_version": "2.1", "settings": {"commandToExecute": "echo bootstrap"}},
]
# Refill intervals of the buckets, in simulated seconds (throttling.md): a 429 from one bucket may come at most
# once per interval.
REFILL_SIM_S = {"ARM/subscription-writes": 0.1, "ARM/subscription-reads": 0.04, "ARM/subscription-deletes": 0.1,
                "Microsoft.Compute/LowCostGetResource": 5.0, "Microsoft.Compute/UpdateVMResource": 15.0,
                "Microsoft.Compute/HighCostGetSubscriptionMaximum": 0.2}


@pytest.fixture(scope="module")
def scale_emulator(tmp_path_factory):
    from emulator_control import Emulator

    emu = Emulator.start(str(tmp_path_factory.mktemp("scale-emulator")), seed=str(FLEET_SEED))
    yield emu
    emu.stop()


@pytest.fixture
def world(scale_emulator):
    scale_emulator.reset()
    scale_emulator.settings(throttle_model="azure", time_scale=SCALE, handler_duration_s=60.0,
                            delete_duration_s=20.0)
    return scale_emulator


def hosts(count, start=1):
    return ["fleet-%03d" % i for i in range(start, start + count)]


def inventory(path, names, extensions=None):
    path.write_text(yaml.safe_dump({"fleet": {"hosts": {name: {} for name in names}, "vars": {
        "ansible_connection": "local", "azure_resource_group": RG,
        "azure_vm_extensions": EXTENSIONS if extensions is None else extensions}}}))
    return path


def client_env(emu):
    env = dict(base_ansible_env())
    env.update(emu.env)
    env["ANSIBLE_STDOUT_CALLBACK"] = "json_results"
    env["AZURE_VM_EXTENSIONS_RATE_SCALE"] = str(SCALE)
    env["AZURE_POLLING_INTERVAL"] = "0.1"
    return env


def play(emu, inv, extra=None, forks=20):
    before = len(emu.requests())
    variables = {"extensions_poll_interval": 5.0 / SCALE}
    variables.update(extra or {})
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(PLAYBOOK), "-i", str(inv), "-f", str(forks),
                           "-e", json.dumps(variables)], env=client_env(emu), capture_output=True, text=True,
                          timeout=900, check=False)
    results = json.loads(proc.stdout[proc.stdout.index("{"):]) if "{" in proc.stdout else {}
    return proc, results, arm(emu.requests()[before:])


def arm(log):
    return [e for e in log if e["path"].startswith(("/subscriptions", "/providers"))]


def fleet_result(results):
    for p in results.get("plays", []):
        for task in p["tasks"]:
            if task["task"]["name"] == "Converge the VM extensions of every host in the batch":
                return next(iter(task["hosts"].values()))
    raise KeyError("fleet task")


def assert_one_429_per_refill(log, scale=SCALE):
    """No bucket refused twice within one of its refill intervals (real seconds = simulated / scale)."""
    by_bucket = defaultdict(list)
    for entry in log:
        if entry["status"] == 429:
            by_bucket[entry["throttled_by"]].append(entry["time"])
    for bucket, times in by_bucket.items():
        interval = REFILL_SIM_S.get(bucket, 0.1) / scale
        times.sort()
        close = [(a, b) for a, b in zip(times, times[1:]) if b - a < interval * 0.9]
        assert not close, "%s refused %d times within one refill interval" % (bucket, len(close) + 1)


def assert_retry_after_honoured(log):
    """The retry of a throttled request (same x-ms-client-request-id) comes no earlier than its Retry-After."""
    by_id = defaultdict(list)
    for entry in log:
        if entry.get("client_request_id"):
            by_id[entry["client_request_id"]].append(entry)
    checked = 0
    for entries in by_id.values():
        entries.sort(key=lambda e: e["time"])
        for first, second in zip(entries, entries[1:]):
            if first["status"] == 429:
                waited = second["time"] - (first["time"] + first["duration_ms"] / 1000.0)
                assert waited >= first["retry_after"] - 0.05, (first, second)
                checked += 1
    return checked


def test_one_vm_polled_fast_stays_within_its_read_budget(world, tmp_path):
    """Polling every 0.05 s (1 simulated second) would read the VM far more often than Low Cost Get's 36 + 12/min allow; the scheduler
    spaces the reads so that the VM's bucket never refuses (or at most once per refill), and the handler's end
    is still seen."""
    inv = inventory(tmp_path / "one.yml", ["fleet-001"], EXTENSIONS[:1])
    world.settings(handler_duration_s=300.0)      # 15 s real at 20x: ~96 reads budgeted, 300 asked for
    proc, results, log = play(world, inv, {"extensions_poll_interval": 0.05})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert results["stats"]["fleet-001"]["changed"] == 1
    vm_reads = [e for e in log if e["method"] == "GET" and e["path"].lower().endswith("/virtualmachines/fleet-001")]
    span_sim = (log[-1]["time"] - log[0]["time"]) * SCALE
    # 36 at once, then 12 per simulated minute: the most the VM's bucket can give in this span
    assert len(vm_reads) <= 36 + span_sim * 12 / 60.0 + 2
    assert len([e for e in log if e["status"] == 429]) <= 1
    assert_one_429_per_refill(log)


def test_fleet_beyond_the_write_bucket_converges_then_no_change(world, tmp_path):
    """150 VMs x 2 extensions = 300 writes, more than ARM's bucket of 200: the writes go at the refill pace, at
    most one 429 per refill, waiting uses List All statusOnly=true sweeps, and nothing fails. The second run
    sends no write and at most one read per VM (+10)."""
    names = hosts(150)
    inv = inventory(tmp_path / "fleet.yml", names)
    # handlers of 15 s real: every VM is waited for at once, however slow this machine submits
    world.settings(handler_duration_s=300.0)
    proc, results, log = play(world, inv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    stats = results["stats"]
    assert sorted(h for h, s in stats.items() if s["changed"]) == sorted(names)
    assert not any(s["failures"] for s in stats.values())
    puts = [e for e in log if e["method"] == "PUT" and e["status"] in (200, 201)]
    assert len(puts) == 300
    sweeps = [e for e in log if e["method"] == "GET" and e["path"].lower().endswith("/virtualmachines")
              and e["query"].get("statusOnly") == "true"]
    assert sweeps, "many waiting VMs are read with List All statusOnly=true"
    throttled = [e for e in log if e["status"] == 429]
    assert len(throttled) <= 0.01 * len(log) + 1
    assert_one_429_per_refill(log)
    assert_retry_after_honoured(log)
    fleet = fleet_result(results)
    assert fleet["waiting"]["list_sweeps"] >= 1
    reads = [e for e in log if e["method"] == "GET" and e["status"] != 429]
    # one read per VM, the sweeps' pages, and single reads (one per completed operation, plus those of the tail
    # of each VM's wait when few are pending): at most two per operation on average, where polling every waiting
    # VM at the polling interval would read each VM about 60 times per 15 s handler
    assert len(reads) <= 150 + fleet["waiting"]["single_reads"] + fleet["waiting"]["list_pages"] + 5
    assert fleet["waiting"]["single_reads"] <= 2 * 300
    # The module's connections are kept: at most one per worker thread (the role's extensions_max_workers, 32) and
    # one for the watcher's sweeps. requests' default pool of 10 closed a connection whenever more than 10 threads
    # had one, and the next request paid a new TLS handshake (hundreds of connections for this run).
    connections = set(e["connection"] for e in log)
    assert len(connections) <= 32 + 1, len(connections)

    proc, results, log = play(world, inv)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not any(s["changed"] for s in results["stats"].values())
    assert not [e for e in log if e["method"] in ("PUT", "PATCH", "DELETE", "POST")]
    assert len([e for e in log if e["method"] == "GET"]) <= 150 + 10


def test_four_job_slices_share_one_principal(world, tmp_path):
    """AWX job slicing: four ansible-runner jobs at once, each with its quarter of the inventory and the same
    service principal. Together their 400 writes exceed ARM's bucket; they must share it without herding."""
    ansible_runner = pytest.importorskip("ansible_runner")
    names = hosts(200)
    slices = [names[i::4] for i in range(4)]       # AWX slices the inventory round robin
    env = client_env(world)
    credential_env = {key: env[key] for key in ("AZURE_SUBSCRIPTION_ID", "AZURE_CLIENT_ID", "AZURE_SECRET",
                                                "AZURE_TENANT", "AZURE_CLOUD_ENVIRONMENT",
                                                "AZURE_VM_EXTENSIONS_RATE_SCALE", "AZURE_POLLING_INTERVAL")}
    credential_env.update(REQUESTS_CA_BUNDLE=world.ca_bundle, ANSIBLE_COLLECTIONS_PATH=env["ANSIBLE_COLLECTIONS_PATH"],
                          ANSIBLE_LOCAL_TEMP=env["ANSIBLE_LOCAL_TEMP"],
                          ANSIBLE_PYTHON_INTERPRETER=env["ANSIBLE_PYTHON_INTERPRETER"], PATH=env["PATH"])
    before = len(world.requests())
    results = [None] * 4

    def run_slice(index):
        private = tmp_path / ("slice%d" % index)
        (private / "project").mkdir(parents=True)
        shutil.copy(PLAYBOOK, private / "project" / "fleet.yml")
        inv = inventory(tmp_path / ("slice%d.yml" % index), slices[index])
        results[index] = ansible_runner.run(private_data_dir=str(private), playbook="fleet.yml", inventory=str(inv),
                                            envvars=credential_env, quiet=True, timeout=900,
                                            extravars={"extensions_poll_interval": 5.0 / SCALE},
                                            suppress_env_files=True)

    saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith(("AZURE_", "ANSIBLE_"))}
    try:
        threads = [threading.Thread(target=run_slice, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        os.environ.update(saved)
    for index, result in enumerate(results):
        assert result is not None and result.status == "successful", result.stdout.read()[-3000:] if result else ""
        assert sorted(result.stats["changed"]) == sorted(slices[index])
        assert not result.stats["failures"]
    log = arm(world.requests()[before:])
    puts = [e for e in log if e["method"] == "PUT" and e["status"] in (200, 201)]
    assert len(puts) == 400
    throttled = [e for e in log if e["status"] == 429]
    # the slices adapt from the headers: few 429s, never a burst of them
    assert len(throttled) <= 0.05 * len(log)
    assert_retry_after_honoured(log)
    burst = max((sum(1 for other in throttled if 0 <= other["time"] - entry["time"] < 0.1)
                 for entry in throttled), default=0)
    assert burst <= 4, "%d 429s within 0.1 s: the slices herd" % burst
