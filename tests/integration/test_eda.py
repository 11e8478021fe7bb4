"""Self-healing with Event-Driven Ansible: the real ansible-rulebook runs the collection's self_heal rulebook (the
extension_state event source and the self_heal playbook) against the emulator.

* a handler failure is rerun on exactly that VM, in its subscription, once; the recovery is logged; a restart of
  ansible-rulebook on the same state file reports nothing again and writes nothing;
* a handler that always fails is rerun max_attempts times, then escalated (journal and notification), then left
  alone, also after a restart;
* agent not ready / back, a deallocated VM and a hung handler are reported and nothing is written;
* 1,000 VMs polled once per 30 s (simulated, the published throttling limits) cost ceil(1000 / page size) reads
  per poll and nothing else.

The tests that run ansible-rulebook skip, with the reason, where it cannot start (no Java 17 runtime).
"""
import http.server
import json
import math
import threading
import time

import pytest
import yaml
from azure.core.exceptions import HttpResponseError

from eda.rulebook_run import Rulebook, rulebook_unavailable
from emulator_clients import RG, compute
from harness import REPO_ROOT

WRITE_METHODS = ("PUT", "PATCH", "POST", "DELETE")
COLLECTION_AGENT = "azure_vm.extensions/"
UNAVAILABLE = rulebook_unavailable()
# The tests that run ansible-rulebook; where it cannot start (no Java 17 runtime) they skip and say why.
needs_rulebook = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


def ext_path(sub, vm, name):
    return "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s/extensions/%s" % (
        sub, RG, vm, name)


def ours(emulator, since):
    """The ARM requests the rulebook sent (the collection's user agent) from `since` (epoch seconds) on."""
    return [r for r in emulator.arm_requests() if COLLECTION_AGENT in (r.get("user_agent") or "")
            and r["time"] >= since]


def writes(requests):
    return [r for r in requests if r["method"] in WRITE_METHODS]


def break_handler(emulator, vm, name, times=1, **fault):
    """An operator's change (a new forceUpdateTag, through the SDK) whose handler run fails: the failure the
    rulebook has to notice. `times` None: every later run of that handler fails too."""
    rule = {"extension": dict(fault, vm=vm, name=name, outcome="failed")}
    if times is not None:
        rule["times"] = times
    emulator.faults([rule])
    client = compute(emulator)
    ext = client.virtual_machine_extensions.get(RG, vm, name)
    ext.force_update_tag = "operator-change-%d" % time.time_ns()
    with pytest.raises(HttpResponseError, match="VMExtensionProvisioningError"):
        client.virtual_machine_extensions.begin_create_or_update(RG, vm, name, ext).result()


def summary(journal):
    return [(entry["transition"], entry["action"], entry["outcome"], entry.get("attempt")) for entry in journal]


@pytest.fixture
def rulebook(emulator, tmp_path):
    started = []

    def start(variables, **kwargs):
        values = {"self_heal_interval": 1, "self_heal_retry_after": 600}
        values.update(variables)
        run = Rulebook(tmp_path / "rulebook", emulator, values, **kwargs).start()
        started.append(run)
        return run

    yield start
    for run in started:
        run.stop()


@needs_rulebook
def test_a_failed_handler_is_rerun_on_exactly_that_vm_once_and_its_recovery_logged(emulator, rulebook):
    sub = emulator.env["AZURE_SUBSCRIPTION_ID"]
    emulator.settings(handler_duration_s=0.5)
    run = rulebook({})
    run.wait(lambda: run.polls() >= 1, 240, "the baseline poll")
    # The baseline reports nothing, not even vm-failed-ext's extension that was already failed.
    run.wait_polls(2)
    assert run.journal() == []
    assert writes(ours(emulator, 0)) == []

    since = time.time()
    # The handler's stderr holds a Jinja expression: it must reach the playbook as text, never be evaluated.
    break_handler(emulator, "vm-web-01", "customScript", stderr="{{ lookup('env', 'HOME') }}: not found\n")
    run.wait(lambda: [e["transition"] for e in run.journal()] == ["failed", "recovered"], 240,
             "the rerun and the recovery in the journal")
    journal = run.journal()
    assert summary(journal) == [("failed", "rerun", "submitted", 1), ("recovered", "record", "recorded", None)]
    failed, recovered = journal
    for entry in journal:
        assert (entry["target"], entry["vm_name"], entry["resource_group"], entry["subscription_id"],
                entry["extension"]) == ("vm", "vm-web-01", RG, sub, "customScript")
        assert entry["vm_id"] == ext_path(sub, "vm-web-01", "x").rsplit("/extensions/", 1)[0]
    assert failed["state"] == "failed" and failed["max_attempts"] == 3
    assert "{ { lookup('env', 'HOME') }}: not found" in failed["handler_message"]
    assert "settings" not in json.dumps(journal) and "commandToExecute" not in json.dumps(journal)
    assert recovered["state"] == "succeeded" and recovered["reported_before"] == "failed"

    sent = ours(emulator, since)
    assert [(r["method"], r["path"]) for r in writes(sent)] == [("PUT", ext_path(sub, "vm-web-01", "customScript"))]
    tag = writes(sent)[0]["body"]["properties"]["forceUpdateTag"]
    assert tag and not tag.startswith("operator-change")
    # Every request that names a VM names that one; the rest are the source's subscription-wide list pages.
    vm_paths = [r["path"] for r in sent if "/virtualMachines/" in r["path"]]
    assert vm_paths and all("/virtualMachines/vm-web-01" in path for path in vm_paths)
    assert {r["path"] for r in sent if "/virtualMachines/" not in r["path"]} == {
        "/subscriptions/%s/providers/Microsoft.Compute/virtualMachines" % sub}
    assert not any("vm-failed-ext" in r["path"] for r in emulator.arm_requests())

    # Again: ansible-rulebook restarted on the same state file reports nothing already reported and writes nothing.
    run.stop()
    before = time.time()
    run.start()
    run.wait_polls(4, timeout=240)
    assert run.journal() == journal
    assert writes(ours(emulator, before)) == []


class Notifications(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 - BaseHTTPRequestHandler's name
        length = int(self.headers.get("Content-Length") or 0)
        Notifications.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def notifications():
    Notifications.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Notifications)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/escalations" % server.server_address[1], Notifications.received
    server.shutdown()
    server.server_close()


@needs_rulebook
def test_a_handler_that_always_fails_is_rerun_max_attempts_times_then_escalated_once(emulator, rulebook,
                                                                                     notifications):
    sub = emulator.env["AZURE_SUBSCRIPTION_ID"]
    url, received = notifications
    # Handlers run 4 s, so the 1 s polls see each rerun transition and fail: one failed event per rerun.
    emulator.settings(handler_duration_s=4)
    # retry_after 30: should a poll miss a rerun's transition, the next attempt still comes (and no sooner than a rerun).
    run = rulebook({"self_heal_max_attempts": 2, "self_heal_notify_url": url, "self_heal_retry_after": 30})
    run.wait(lambda: run.polls() >= 1, 240, "the baseline poll")

    since = time.time()
    break_handler(emulator, "vm-web-01", "customScript", times=None, stderr="setup.sh: exit 3\n")
    run.wait(lambda: "escalated" in [e["transition"] for e in run.journal()], 300, "the escalation")
    run.wait_polls(6)  # the extension stays failed: nothing more may happen
    journal = run.journal()
    assert summary(journal) == [("failed", "rerun", "submitted", 1), ("failed", "rerun", "submitted", 2),
                                ("escalated", "escalate", "recorded", 2)]
    reruns = writes(ours(emulator, since))
    assert [(r["method"], r["path"]) for r in reruns] == [("PUT", ext_path(sub, "vm-web-01", "customScript"))] * 2
    assert len({r["body"]["properties"]["forceUpdateTag"] for r in reruns}) == 2
    (note,) = received
    assert (note["transition"], note["vm_name"], note["extension"], note["attempt"], note["max_attempts"]) == (
        "escalated", "vm-web-01", "customScript", 2, 2)
    assert "setup.sh: exit 3" in note["handler_message"]
    assert emulator.env["AZURE_SECRET"] not in json.dumps(note) + json.dumps(journal) + run.output()

    # A restart keeps the count: still failed, still nothing.
    run.stop()
    before = time.time()
    run.start()
    run.wait_polls(4, timeout=240)
    assert run.journal() == journal and len(received) == 1
    assert writes(ours(emulator, before)) == []


@needs_rulebook
def test_agent_deallocation_and_hung_handler_are_reported_without_a_write(emulator, rulebook):
    run = rulebook({"self_heal_agent_grace": 0, "self_heal_transitioning_timeout": 3})
    run.wait(lambda: run.polls() >= 1, 240, "the baseline poll")
    since = time.time()

    def reported(transition, vm):
        line = "azure_vm.extensions: %s on /subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/" \
               "virtualMachines/%s" % (transition, emulator.env["AZURE_SUBSCRIPTION_ID"], RG, vm)
        run.wait(lambda: line in run.output(), 120, transition + " of " + vm)

    emulator.set_vm(RG, "vm-web-02", agent_status="NotReady")
    reported("agent_not_ready", "vm-web-02")
    emulator.set_vm(RG, "vm-web-02", agent_status="Ready")
    reported("agent_ready", "vm-web-02")
    emulator.set_vm(RG, "vm-win-01", power_state="deallocated")
    reported("deallocated", "vm-win-01")
    # A handler that never finishes (the operator's write is accepted, its handler hangs).
    emulator.faults([{"extension": {"vm": "vm-web-01", "name": "customScript", "outcome": "timeout"}, "times": 1}])
    client = compute(emulator)
    ext = client.virtual_machine_extensions.get(RG, "vm-web-01", "customScript")
    ext.force_update_tag = "operator-change"
    # polling=False: the handler never finishes, and an SDK poller would go on polling from this test process
    # into later tests on the same emulator (a stray operation GET in their request logs).
    client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-01", "customScript", ext, polling=False)
    reported("transitioning_too_long", "vm-web-01")
    run.wait_polls(2)
    for transition in ("agent_not_ready", "agent_ready", "deallocated", "transitioning_too_long"):
        assert run.output().count("azure_vm.extensions: %s on" % transition) == 1, transition
    assert run.journal() == []
    assert writes(ours(emulator, since)) == []


@pytest.fixture
def thousand_vms(tmp_path):
    """An emulator whose subscription holds exactly 1,000 VMs (each with a CustomScript extension)."""
    from emulator_control import Emulator

    seed = yaml.safe_load((REPO_ROOT / "tests" / "emulator" / "default-seed.yml").read_text())
    subscription = seed["subscriptions"][0]
    subscription["resource_groups"] = []
    subscription["vm_sets"] = [{"prefix": "vm-", "count": 1000, "resource_group": "rg-fleet", "location": "westeurope",
                                "extensions": [{"name": "customScript", "publisher": "Microsoft.Azure.Extensions",
                                                "type": "CustomScript", "type_handler_version": "2.1"}]}]
    path = tmp_path / "thousand.yml"
    path.write_text(yaml.safe_dump(seed))
    emu = Emulator.start(str(tmp_path / "thousand-emulator"), seed=str(path))
    yield emu
    emu.stop()


@needs_rulebook
def test_a_thousand_vms_cost_ceil_1000_over_page_size_reads_per_poll(thousand_vms, tmp_path):
    emu = thousand_vms
    page_size, scale = 50, 15.0
    # The published limits (throttle model azure) on a clock 15 x real time: a poll every 2 s is one every 30 s.
    emu.settings(page_size=page_size, throttle_model="azure", time_scale=scale)
    run = Rulebook(tmp_path / "rulebook", emu, {"self_heal_interval": 30 / scale},
                   env={"AZURE_VM_EXTENSIONS_RATE_SCALE": str(scale)}).start()
    try:
        run.wait(lambda: run.polls() >= 1, 240, "the baseline poll")
        run.wait_polls(5, timeout=240)
    finally:
        run.stop()
    sub = emu.env["AZURE_SUBSCRIPTION_ID"]
    requests = emu.arm_requests()
    listing = "/subscriptions/%s/providers/Microsoft.Compute/virtualMachines" % sub
    assert {(r["method"], r["path"]) for r in requests} == {("GET", listing)}  # nothing but the List All pages
    assert all(r["query"]["statusOnly"] == "true" and r["status"] == 200 for r in requests)
    polls = []
    for request in sorted(requests, key=lambda r: r["time"]):
        if "$skiptoken" not in request["query"]:
            polls.append(0)
        polls[-1] += 1
    saved = run.polls()  # polls saved in the state file; one more may have been under way at the stop
    assert saved >= 6 and len(polls) in (saved, saved + 1)
    assert set(polls[:saved]) == {math.ceil(1000 / page_size)} and max(polls) == math.ceil(1000 / page_size)
    assert run.journal() == []


SECOND_SUB = "6f3a8c1e-0000-4000-8000-000000000002"


@pytest.fixture
def two_subscriptions(tmp_path):
    """The default world, plus a second subscription (same tenant and service principal) that holds a VM of the
    same name, vm-web-01, and a Manual scale set of the same name, vmss-manual."""
    from emulator_control import Emulator

    seed = yaml.safe_load((REPO_ROOT / "tests" / "emulator" / "default-seed.yml").read_text())
    first = seed["subscriptions"][0]
    second = {"id": SECOND_SUB, "tenant": first["tenant"], "name": "Second",
              "service_principals": first["service_principals"], "resource_groups": [{
                  "name": RG, "location": "westeurope",
                  "vms": [vm for vm in first["resource_groups"][0]["vms"] if vm["name"] == "vm-web-01"],
                  "scale_sets": [{"name": "vmss-manual", "os_type": "Linux", "capacity": 5,
                                  "upgrade_policy": "Manual"}]}]}
    seed["subscriptions"].append(second)
    path = tmp_path / "two.yml"
    path.write_text(yaml.safe_dump(seed))
    emu = Emulator.start(str(tmp_path / "two-emulator"), seed=str(path))
    yield emu
    emu.stop()


@needs_rulebook
def test_repairs_land_in_the_event_subscription_on_the_vm_or_scale_set_instance_it_names(two_subscriptions, tmp_path):
    from azure.mgmt.compute import ComputeManagementClient
    from emulator_clients import _kwargs, credential

    emu = two_subscriptions
    first = emu.env["AZURE_SUBSCRIPTION_ID"]
    emu.settings(handler_duration_s=0.5)
    run = Rulebook(tmp_path / "rulebook", emu, {"self_heal_interval": 1, "self_heal_retry_after": 600,
                                                "self_heal_subscriptions": [first, SECOND_SUB],
                                                "self_heal_include_vmss_instances": True}).start()
    try:
        run.wait(lambda: run.polls() >= 1, 240, "the baseline poll")
        since = time.time()
        cred = credential(emu)
        client = ComputeManagementClient(cred, SECOND_SUB, **_kwargs(emu, cred))
        # In the second subscription: vm-web-01's handler fails, and a new scale-set extension fails on instance 2.
        emu.faults([{"extension": {"vm": "vm-web-01", "name": "customScript", "outcome": "failed"}, "times": 1},
                    {"extension": {"vm": "vmss-manual/2", "name": "mon", "outcome": "failed"}, "times": 1}])
        ext = client.virtual_machine_extensions.get(RG, "vm-web-01", "customScript")
        ext.force_update_tag = "operator-change"
        with pytest.raises(HttpResponseError):
            client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-01", "customScript", ext).result()
        # REST JSON bodies: the SDK generation of tests/constraints.txt takes them as they go on the wire.
        client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-manual", "mon", {"properties": {
            "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent",
            "typeHandlerVersion": "1.33"}}).result()
        with pytest.raises(HttpResponseError, match="VMExtensionProvisioningError"):  # instance 2's handler
            client.virtual_machine_scale_sets.begin_update_instances(
                RG, "vmss-manual", {"instanceIds": ["0", "1", "2", "3", "4"]}).result()
        expected = ["failed", "failed", "recovered", "recovered"]
        run.wait(lambda: sorted(e["transition"] for e in run.journal()) == expected, 300,
                 "two reruns and two recoveries")
        journal = run.journal()
        assert sorted((e["transition"], e["action"], e["outcome"]) for e in journal) == [
            ("failed", "rerun", "submitted")] * 2 + [("recovered", "record", "recorded")] * 2
        assert {(e["subscription_id"], e["target"], e.get("vm_name"), e.get("vmss_name"), e.get("instance_id"),
                 e["extension"]) for e in journal} == {
            (SECOND_SUB, "vm", "vm-web-01", None, None, "customScript"),
            (SECOND_SUB, "vmss_instance", None, "vmss-manual", "2", "mon")}
        second_rg = "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute" % (SECOND_SUB, RG)
        sent = writes(ours(emu, since))
        assert sorted((r["method"], r["path"]) for r in sent) == [
            ("POST", second_rg + "/virtualMachineScaleSets/vmss-manual/manualupgrade"),
            ("PUT", second_rg + "/virtualMachineScaleSets/vmss-manual/extensions/mon"),
            ("PUT", second_rg + "/virtualMachines/vm-web-01/extensions/customScript")]
        (upgrade,) = [r for r in sent if r["method"] == "POST"]
        assert upgrade["body"] == {"instanceIds": ["2"]}
        assert not [r for r in ours(emu, since) if "/subscriptions/%s/" % first in r["path"] and
                    r["path"] != "/subscriptions/%s/providers/Microsoft.Compute/virtualMachines" % first
                    and "virtualMachineScaleSets" not in r["path"]]
        assert not writes([r for r in emu.arm_requests() if "/subscriptions/%s/" % first in r["path"]])
    finally:
        run.stop()


def test_the_tarball_carries_the_source_rulebook_and_playbook_and_the_decision_environment_adds_the_engine(
        tmp_path):
    """Galaxy's tarball has the EDA content; installed alone, the source imports the collection's module_utils from
    where it is (ansible-rulebook loads it with runpy, outside Ansible's loader); the decision environment's build
    context adds ansible-rulebook and the Java 17 runtime to the collection's own requirements."""
    import shutil
    import subprocess
    import sys
    import tarfile

    from harness import VENV_BIN, base_ansible_env

    env = base_ansible_env()
    build = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path",
                            str(tmp_path / "dist"), str(REPO_ROOT)], env=env, capture_output=True, text=True,
                           check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next((tmp_path / "dist").glob("azure_vm-extensions-*.tar.gz"))
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
    for wanted in ("extensions/eda/plugins/event_source/extension_state.py", "extensions/eda/rulebooks/self_heal.yml",
                   "playbooks/self_heal.yml", "decision-environment.yml", "docs/eda.md"):
        assert wanted in names, wanted

    installed = tmp_path / "installed"
    install = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p",
                              str(installed)], env=dict(env, ANSIBLE_COLLECTIONS_PATH=str(installed)),
                             capture_output=True, text=True, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    source = (installed / "ansible_collections" / "azure_vm" / "extensions" / "extensions" / "eda" / "plugins"
              / "event_source" / "extension_state.py")
    probe = ("import runpy, sys; plugin = runpy.run_path(sys.argv[1]); "
             "print(sys.modules[plugin['AzureConnection'].__module__].__file__); "
             "print(plugin['validate_options']({'interval': 5})['interval'])")
    clean = {"PATH": env["PATH"], "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", probe, str(source)], env=clean, cwd=str(tmp_path),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    module_file, interval = proc.stdout.split()
    assert module_file.startswith(str(installed)) and interval == "5.0"

    # The decision environment, with its tarball where its additional_build_files expects it.
    definition = tmp_path / "de"
    (definition / ".build" / "ee").mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "decision-environment.yml", definition / "decision-environment.yml")
    shutil.copyfile(tarball, definition / ".build" / "ee" / "azure_vm-extensions.tar.gz")
    context = tmp_path / "context"
    create = subprocess.run([str(VENV_BIN / "ansible-builder"), "create", "-f", "decision-environment.yml", "-c",
                             str(context), "--output-filename", "Containerfile"], cwd=str(definition), env=env,
                            capture_output=True, text=True, check=False)
    assert create.returncode == 0, create.stdout + create.stderr
    assert "ansible-rulebook" in (context / "_build" / "requirements.txt").read_text()
    assert "java-17-openjdk-headless" in (context / "_build" / "bindep.txt").read_text()
    assert (context / "_build" / "collections" / "azure_vm-extensions.tar.gz").is_file()
    assert "ansible-galaxy collection install" in (context / "Containerfile").read_text()
