"""Issue 11, "desired state you can trust": stopped VMs fail fast, not-found names the missing level, tracebacks at
-vvv, info results round-trip, masking, and interrupted plays or rollouts that the next run waits for or resumes.

Runs against its own emulator world (tests/integration/data/trust-seed.yml): VMs that are stopped or deallocated.
"""
import json
import os
import signal
import subprocess
import time

import pytest

from harness import REPO_ROOT, VENV_BIN, playbook

RG = "rg-trust"
CS = dict(publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1")
SEED = REPO_ROOT / "tests" / "integration" / "data" / "trust-seed.yml"
FINGERPRINT = "azure_vm.extensions.protected_settings"
MASK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"


@pytest.fixture(scope="module")
def trust_emulator(tmp_path_factory):
    from emulator_control import Emulator

    emu = Emulator.start(str(tmp_path_factory.mktemp("trust-emulator")), seed=str(SEED), timeout=180)
    yield emu
    emu.stop()


@pytest.fixture
def emulator(trust_emulator):
    """Overrides conftest's emulator, so that run_playbook talks to this world."""
    trust_emulator.reset()
    return trust_emulator


def vm_task(title="apply", vm="vm-ok", name="customScript", **options):
    args = dict(resource_group=RG, vm_name=vm, name=name)
    if options.get("state") != "absent":
        args.update(CS)
    args.update(options)
    return {"name": title, "azure_vm.extensions.vm_extension": args, "register": "out"}


def vmss_task(title="apply", **options):
    args = dict(resource_group=RG, vmss_name="vmss-manual", name="customScript", **CS)
    args.update(options)
    return {"name": title, "azure_vm.extensions.vmss_extension": args, "register": "out"}


def arm_writes(emulator, since=0):
    return [r for r in emulator.requests()[since:] if r["path"].startswith("/subscriptions")
            and r["method"] in ("PUT", "PATCH", "POST", "DELETE")]


# ---- a VM that is not running: fail in seconds, before any write (defect 2) ---------------------------------------
def test_stopped_vm_fails_before_any_write(run_playbook, emulator):
    run = run_playbook(playbook(vm_task(vm="vm-stopped", settings={"commandToExecute": "echo 1"}, timeout=5)))
    result = run.task("apply")
    assert run.rc != 0 and result["failed"] is True
    assert "VM vm-stopped is stopped (PowerState/stopped)" in result["msg"] and "az vm start" in result["msg"]
    assert result["error_code"] == "VMNotRunning" and result["changed"] is False
    assert arm_writes(emulator) == []  # the old code sent a PUT, got 409 OperationNotAllowed and retried it
    reads = [r for r in emulator.requests() if r["path"].startswith("/subscriptions")]
    assert len(reads) == 1


def test_deallocated_vm_removal_fails_before_any_write(run_playbook, emulator):
    run = run_playbook(playbook(vm_task(vm="vm-deallocated", state="absent", timeout=5)))
    result = run.task("apply")
    assert run.rc != 0 and "deallocated (PowerState/deallocated)" in result["msg"]
    assert arm_writes(emulator) == []


# ---- not found: which level is missing, with ARM's code (defect 6) -------------------------------------------------
@pytest.mark.parametrize("task, expected, code", [
    (vm_task(vm="vm-nope"), "virtual machine 'vm-nope' not found in resource group 'rg-trust'", "ResourceNotFound"),
    (vm_task(resource_group="rg-nope"), "resource group 'rg-nope' not found in subscription", "ResourceGroupNotFound"),
    ({"name": "apply", "azure_vm.extensions.vm_extension_info": {"resource_group": "rg-nope", "vm_name": "vm-ok"}},
     "resource group 'rg-nope' not found in subscription", "ResourceGroupNotFound"),
    ({"name": "apply", "azure_vm.extensions.vmss_extension_info": {"resource_group": RG, "vmss_name": "ss-nope"}},
     "virtual machine scale set 'ss-nope' not found in resource group 'rg-trust'", "ResourceNotFound"),
    (vmss_task(vmss_name="ss-nope"), "virtual machine scale set 'ss-nope' not found", "ResourceNotFound"),
    ({"name": "apply", "azure_vm.extensions.vm_extension_info": {
        "resource_group": RG, "vm_name": "vm-ok", "subscription_id": "00000000-0000-4000-8000-00000000dead"}},
     "subscription 00000000-0000-4000-8000-00000000dead not found", "SubscriptionNotFound"),
])
def test_not_found_names_the_missing_resource(run_playbook, emulator, task, expected, code):
    result = run_playbook(playbook(task)).task("apply")
    assert result["failed"] is True
    assert result["msg"].startswith(expected), result["msg"]
    assert result["error_code"] == code and "(%s: " % code in result["msg"]
    assert result["status_code"] == 404 and result.get("request_id")


def test_traceback_at_vvv_on_an_arm_error(run_playbook, emulator):
    quiet = run_playbook(playbook(vm_task(vm="vm-nope")))
    assert "traceback" not in quiet.task("apply")
    loud = run_playbook(playbook(vm_task(vm="vm-nope")), verbosity=3)
    assert loud.rc != 0
    assert "Traceback (most recent call last)" in loud.stdout and "read_vm" in loud.stdout


# ---- round trip: an info entry fed back to the write module changes nothing (defect 7) ----------------------------
def test_vm_info_entries_round_trip_unchanged(run_playbook, emulator):
    vault = {"secret_url": "https://kv-trust.vault.azure.net/secrets/cs/0123", "source_vault_id":
             "/subscriptions/7a1b2c3d-0000-4000-8000-000000000011/resourceGroups/rg-trust/providers/"
             "Microsoft.KeyVault/vaults/kv-trust"}
    setup = playbook(
        vm_task("kv", settings={"a": "1.10", "n": 7}, protected_settings_from_key_vault=vault, tags={"env": "test"}),
        vm_task("fp", name="monitor", publisher="Microsoft.Azure.Monitor", type="AzureMonitorLinuxAgent",
                type_handler_version="1.33", protected_settings={"key": "round-trip-secret"}))
    run_playbook(setup, expect_rc=0)
    before = len(emulator.requests())
    feed_back = playbook(
        {"name": "info", "azure_vm.extensions.vm_extension_info": {"resource_group": RG, "vm_name": "vm-ok"},
         "register": "info"},
        {"name": "again", "azure_vm.extensions.vm_extension": {},
         "args": "{{ item | combine({'resource_group': '%s', 'vm_name': 'vm-ok'}) }}" % RG,
         "loop": "{{ info.extensions }}", "loop_control": {"label": "{{ item.name }}"}, "register": "again"},
        {"name": "fleet", "azure_vm.extensions.vm_extension_fleet": {"targets": [
            {"vm_name": "vm-ok", "resource_group": RG, "extensions": "{{ info.extensions }}"}]}})
    run = run_playbook(feed_back, expect_rc=0)
    info = run.task("info")["extensions"]
    kv = [e for e in info if e["name"] == "customScript"][0]
    assert kv["protected_settings_from_key_vault"]["secretUrl"] == vault["secret_url"]
    assert [e for e in info if e["name"] == "monitor"][0]["tags"][FINGERPRINT] == MASK  # never the PBKDF2 value
    again = run.task("again")
    assert [item["changed"] for item in again["results"]] == [False, False]
    assert run.task("fleet")["changed"] is False
    assert arm_writes(emulator, before) == []


def test_vmss_info_entry_round_trips_unchanged(run_playbook, emulator):
    run_playbook(playbook(vmss_task(settings={"x": "0042"})), expect_rc=0)
    before = len(emulator.requests())
    run = run_playbook(playbook(
        {"name": "info", "register": "info",
         "azure_vm.extensions.vmss_extension_info": {"resource_group": RG, "vmss_name": "vmss-manual"}},
        {"name": "again", "azure_vm.extensions.vmss_extension": {},
         "args": "{{ info.extensions[0] | combine({'resource_group': '%s', 'vmss_name': 'vmss-manual'}) }}" % RG}),
        expect_rc=0)
    assert run.task("again")["changed"] is False
    assert arm_writes(emulator, before) == []


# ---- masking: protected settings in the diff only when they change; the fingerprint never (defect 9) -------------
def test_diff_shows_protected_settings_only_when_they_change(run_playbook, emulator):
    secret = {"commandToExecute": "run --token mask-one"}
    run_playbook(playbook(vm_task(settings={"v": 1}, protected_settings=secret)), expect_rc=0)
    other = run_playbook(playbook(vm_task(settings={"v": 2}, protected_settings=secret)), diff=True, expect_rc=0)
    result = other.task("apply")
    assert result["changes"] == ["settings"]
    assert "protected_settings" not in result["diff"]["after"] and "protected_settings" not in result["diff"]["before"]
    assert result["extension"]["tags"][FINGERPRINT] == MASK
    for side in ("before", "after"):
        assert result["diff"][side]["tags"][FINGERPRINT] == MASK
    assert "pbkdf2" not in json.dumps(result)
    rotated = run_playbook(playbook(vm_task(settings={"v": 2}, protected_settings={"commandToExecute": "x"})),
                           diff=True, expect_rc=0).task("apply")
    assert rotated["changes"] == ["protected_settings"]
    assert rotated["diff"]["after"]["protected_settings"] == {"commandToExecute": MASK}
    assert "pbkdf2" not in json.dumps(rotated) and "mask-one" not in json.dumps(rotated)


# ---- success means terminal: a play killed after its write, run again (defect 8) -----------------------------------
def start_playbook(ansible_env, emulator, tmp_path, text):
    path = tmp_path / "killed.yml"
    path.write_text(text)
    env = dict(ansible_env)
    env.update(emulator.env)
    env.update(ANSIBLE_STDOUT_CALLBACK="json_results", AZURE_POLLING_INTERVAL="0.2")
    return subprocess.Popen([str(VENV_BIN / "ansible-playbook"), str(path), "-i", "localhost,", "-c", "local"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_when(process, emulator, condition, limit=300):
    """Kill the playbook's whole process group as soon as the emulator's log satisfies condition(log)."""
    deadline = time.monotonic() + limit
    while not condition(emulator.requests()):
        assert process.poll() is None, "the playbook ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Like Ctrl-C in a terminal that then closes: the playbook and everything it started (the module process may
    # run in a session of its own), found by parent id and killed by id.
    for pid in [process.pid] + descendants(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def extension_puts(log, vm="vm-ok"):
    return [r for r in log if r["method"] == "PUT" and "/virtualMachines/%s/extensions/" % vm in r["path"]]


def test_rerun_after_a_killed_play_waits_for_a_handler_still_at_work(run_playbook, emulator, ansible_env, tmp_path):
    # The handler never finishes (held by the emulator), so the rerun can only end at its timeout, with the
    # handler's status; the old code answered ok/changed=false at once.
    emulator.faults([{"extension": {"vm": "vm-ok", "name": "customScript", "outcome": "timeout"}}])
    task = vm_task(settings={"commandToExecute": "./long.sh"})
    kill_when(start_playbook(ansible_env, emulator, tmp_path, playbook(task)), emulator,
              lambda log: extension_puts(log))
    before = len(emulator.requests())
    rerun = run_playbook(playbook(dict(task, **{"azure_vm.extensions.vm_extension": dict(
        task["azure_vm.extensions.vm_extension"], timeout=4)})))
    result = rerun.task("apply")
    assert rerun.rc != 0 and result["changed"] is False
    assert result["msg"].startswith("timed out after 4s waiting for extension customScript on VM vm-ok")
    assert "handler transitioning" in result["msg"]
    assert extension_puts(emulator.requests()[before:]) == []  # waited, never written again


def test_rerun_after_a_killed_play_reports_the_handler_failure(run_playbook, emulator, ansible_env, tmp_path):
    emulator.faults([{"extension": {"vm": "vm-ok", "name": "customScript", "outcome": "failed", "duration_s": 6,
                                    "message": "late failure: exit 7"}}])
    task = vm_task(settings={"commandToExecute": "./late.sh"})
    kill_when(start_playbook(ansible_env, emulator, tmp_path, playbook(task)), emulator,
              lambda log: extension_puts(log))
    before = len(emulator.requests())
    rerun = run_playbook(playbook(task))
    result = rerun.task("apply")
    assert rerun.rc != 0 and "late failure: exit 7" in result["msg"]
    assert result["instance_view"]["state"] == "failed"
    assert extension_puts(emulator.requests()[before:]) == []


def test_killed_manual_rollout_is_resumed_by_the_next_run(run_playbook, emulator, ansible_env, tmp_path):
    emulator.settings(handler_duration_s=2)
    task = vmss_task(settings={"commandToExecute": "./roll.sh"}, batch_percent=20)

    def upgrades(log):
        return [r for r in log if r["method"] == "POST" and r["path"].endswith("/manualupgrade")]

    kill_when(start_playbook(ansible_env, emulator, tmp_path, playbook(task)), emulator,
              lambda log: len(upgrades(log)) >= 2)
    info = {"name": "info", "azure_vm.extensions.vmss_extension_info": {
        "resource_group": RG, "vmss_name": "vmss-manual", "name": "customScript"}, "register": "info"}
    stale = run_playbook(playbook(info), expect_rc=0).task("info")["extensions"][0]["instances"]["not_latest_model"]
    assert stale, "the kill should have left instances off the latest model"
    before = len(emulator.requests())
    resumed = run_playbook(playbook(task), expect_rc=0).task("apply")
    assert resumed["changed"] is True and resumed["changes"] == ["instances"]
    sent = [body_ids for r in upgrades(emulator.requests()[before:]) for body_ids in r["body"]["instanceIds"]]
    # Only instances the killed run did not finish, in batches of one; the first batch had finished.
    assert {"2", "3", "4"} <= set(sent) <= set(stale) and "0" not in sent
    assert all(len(r["body"]["instanceIds"]) == 1 for r in upgrades(emulator.requests()[before:]))
    assert not [r for r in emulator.requests()[before:] if r["method"] == "PUT"]  # the model was not written again
    after = run_playbook(playbook(info), expect_rc=0).task("info")["extensions"][0]["instances"]
    assert after["not_latest_model"] == [] and after["counts"] == {"succeeded": 5}
    before = len(emulator.requests())
    third = run_playbook(playbook(task), expect_rc=0).task("apply")
    assert third["changed"] is False and arm_writes(emulator, before) == []
