"""The extensions role over a small inventory: converge, no-change, exclusive, and an emulated write budget."""
import json
import re
import subprocess

import pytest
import yaml

from harness import REPO_ROOT, VENV_BIN

RG = "rg-fleet"
HOSTS = ["fleet-%03d" % i for i in range(1, 7)]
EXTENSIONS = [
    {"name": "monitor", "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent",
     "type_handler_version": "1.33"},
    {"name": "bootstrap", "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
     "type_handler_version": "2.1", "settings": {"commandToExecute": "echo bootstrap"},
     "protected_settings": {"token": "fleet-protected-token"}},
]
PLAYBOOK = REPO_ROOT / "playbooks" / "fleet.yml"
FLEET_TASK = "Converge the VM extensions of every host in the batch"
REPORT_TASK = "Report the result of this host's VM"
FLEET_SEED = REPO_ROOT / "tests" / "emulator" / "fleet-seed.yml"


class FleetRun:
    def __init__(self, rc, stdout, stderr, results, log):
        self.rc, self.stdout, self.stderr, self.results, self.log = rc, stdout, stderr, results, log
        self.stats = results.get("stats", {})

    def task(self, name, host):
        for play in self.results.get("plays", []):
            for task in play["tasks"]:
                if task["task"]["name"] == name and host in task["hosts"]:
                    return task["hosts"][host]
        raise KeyError(name)


@pytest.fixture(scope="module")
def fleet_emulator(tmp_path_factory):
    from emulator_control import Emulator

    emu = Emulator.start(str(tmp_path_factory.mktemp("fleet-emulator")), seed=str(FLEET_SEED))
    yield emu
    emu.stop()


@pytest.fixture
def fleet(fleet_emulator, ansible_env, tmp_path):
    """Run playbooks/fleet.yml over an inventory of `hosts` (host -> extra host vars)."""
    import json
    import subprocess

    fleet_emulator.reset()
    fleet_emulator.settings(handler_duration_s=0.5, delete_duration_s=0.3)

    def run(hosts=None, group_vars=None, extra_vars=None, forks=5, options=(), playbook=PLAYBOOK):
        hosts = hosts or {name: {} for name in HOSTS}
        inventory = tmp_path / "inventory.yml"
        group = {"ansible_connection": "local", "azure_resource_group": RG, "azure_vm_extensions": EXTENSIONS}
        group.update(group_vars or {})
        inventory.write_text(yaml.safe_dump({"fleet": {"hosts": hosts, "vars": group}}))
        env = dict(ansible_env)
        env.update(fleet_emulator.env)
        env["ANSIBLE_STDOUT_CALLBACK"] = "json_results"
        env["AZURE_POLLING_INTERVAL"] = "0.2"
        variables = {"extensions_polling_interval": 0.2}
        variables.update(extra_vars or {})
        variables = dict((key, value) for key, value in variables.items() if value is not None)
        cmd = [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(inventory), "-f", str(forks),
               "-e", json.dumps(variables)] + list(options)
        if "-vvvv" in options:
            env["ANSIBLE_STDOUT_CALLBACK"] = "default"
        before = len(fleet_emulator.requests())
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
        results = json.loads(proc.stdout[proc.stdout.index("{"):]) if env["ANSIBLE_STDOUT_CALLBACK"] != "default" \
            and "{" in proc.stdout else {}
        return FleetRun(proc.returncode, proc.stdout, proc.stderr, results, fleet_emulator.requests()[before:])

    run.emulator = fleet_emulator
    return run


def arm(log):
    return [e for e in log if e["path"].startswith(("/subscriptions", "/providers"))]


def writes(log):
    return [e for e in arm(log) if e["method"] in ("PUT", "PATCH", "POST", "DELETE")]


def failures(run):
    return sum(s["failures"] + s["unreachable"] for s in run.stats.values())


def vm_extensions(emu, vm):
    for sub in emu.state()["subscriptions"]:
        for found in sub["vms"]:
            if found["name"] == vm:
                return {ext["name"]: ext for ext in found["extensions"]}
    raise KeyError(vm)


def test_converge_then_no_change(fleet):
    first = fleet()
    assert first.rc == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert failures(first) == 0
    assert {host: s["changed"] for host, s in first.stats.items()} == {host: 1 for host in HOSTS}
    puts = [e for e in writes(first.log) if e["method"] == "PUT"]
    assert len(puts) == len(HOSTS) * len(EXTENSIONS)
    # Submitted everywhere before any wait: the first extension of every VM goes out before any second one.
    order = [e["path"].rsplit("/", 1)[1] for e in puts]
    assert order[:len(HOSTS)] == ["monitor"] * len(HOSTS)
    for host in HOSTS:
        extensions = vm_extensions(fleet.emulator, host)
        assert set(extensions) == {"monitor", "bootstrap"}
        assert all(ext["properties"]["provisioningState"] == "Succeeded" for ext in extensions.values())
    assert "fleet-protected-token" not in first.stdout
    assert all("fleet-protected-token" not in str(e.get("body")) for e in first.log)

    # One task per host and no more (a task per host costs the controller a worker process each): the batch's
    # validation and the fleet task run once, on the first host; every other host runs its report only.
    for host in HOSTS:
        tasks = [task["task"]["name"] for play in first.results["plays"] for task in play["tasks"]
                 if host in task["hosts"]]
        once = ["Validate the role's options once for the batch", FLEET_TASK] if host == HOSTS[0] else []
        assert tasks == once + [REPORT_TASK], (host, tasks)
    assert first.task(REPORT_TASK, HOSTS[1])["msg"].startswith("changed: ")

    second = fleet()
    assert second.rc == 0, second.stdout[-4000:]
    assert sum(s["changed"] for s in second.stats.values()) == 0
    assert second.task(REPORT_TASK, HOSTS[1])["msg"] == "all declared extensions are in place"
    assert writes(second.log) == []
    reads = [e for e in arm(second.log) if e["method"] == "GET"]
    assert len(reads) <= len(HOSTS)
    assert len({e["path"] for e in reads}) == len(reads)  # one read per VM, no VM twice


def test_exclusive_removes_undeclared(fleet):
    assert fleet().rc == 0
    # Only "monitor" is declared now for fleet-001, exclusively; fleet-002 keeps both (not exclusive).
    hosts = {name: {} for name in HOSTS[:2]}
    hosts["fleet-001"] = {"azure_vm_extensions": EXTENSIONS[:1], "azure_vm_extensions_exclusive": True}
    hosts["fleet-002"] = {"azure_vm_extensions": EXTENSIONS[:1]}
    run = fleet(hosts=hosts)
    assert run.rc == 0, run.stdout[-4000:]
    assert run.stats["fleet-001"]["changed"] == 1 and run.stats["fleet-002"]["changed"] == 0
    deletes = [e for e in writes(run.log) if e["method"] == "DELETE"]
    assert [e["path"].rsplit("/", 3)[-3:] for e in deletes] == [["fleet-001", "extensions", "bootstrap"]]
    assert set(vm_extensions(fleet.emulator, "fleet-001")) == {"monitor"}
    assert set(vm_extensions(fleet.emulator, "fleet-002")) == {"monitor", "bootstrap"}
    report = run.task("Report the result of this host's VM", host="fleet-001")
    assert report["removed"] == ["bootstrap"]


def test_throttled_budget_completes_without_failures(fleet):
    # 6 VMs x 2 extensions = 12 PUTs against a budget of 5 writes per 2 s window: ARM answers 429 + Retry-After.
    fleet.emulator.settings(throttle={"writes": 5, "reads": 400, "window_s": 2})
    run = fleet()
    assert run.rc == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert failures(run) == 0
    assert sum(s["changed"] for s in run.stats.values()) == len(HOSTS)
    throttled = [e for e in arm(run.log) if e["status"] == 429]
    assert throttled, "the write budget should have been exhausted"
    # Honoured: every request after a 429 waited for the window to reopen instead of hammering.
    accepted = [e for e in writes(run.log) if e["status"] in (200, 201)]
    assert len(accepted) == len(HOSTS) * len(EXTENSIONS)
    assert len(throttled) <= 2 * len(accepted)


def test_check_mode_sends_no_write_and_secrets_never_show_at_vvvv(fleet):
    checked = fleet(options=["--check"])
    assert checked.rc == 0, checked.stdout[-3000:]
    assert {host: s["changed"] for host, s in checked.stats.items()} == {host: 1 for host in HOSTS}
    assert writes(checked.log) == []
    verbose = fleet(options=["-vvvv"])
    assert verbose.rc == 0, verbose.stdout[-3000:]
    assert "fleet-protected-token" not in verbose.stdout + verbose.stderr
    assert "fleet-protected-token" not in str(fleet.emulator.requests())
    assert "changed=1" in verbose.stdout


def test_one_failing_vm_does_not_stop_the_others(fleet):
    fleet.emulator.faults([{"extension": {"vm": "fleet-002", "name": "monitor", "outcome": "failed",
                                          "message": "agent package download failed"}}])
    run = fleet()
    assert run.rc != 0
    failed = run.task("Report the result of this host's VM", "fleet-002")
    assert failed["failed"] is True and "agent package download failed" in failed["msg"]
    assert run.stats["fleet-002"]["failures"] == 1
    assert all(run.stats[host]["failures"] == 0 and run.stats[host]["changed"] == 1
               for host in HOSTS if host != "fleet-002")
    assert set(vm_extensions(fleet.emulator, "fleet-003")) == {"monitor", "bootstrap"}


def test_one_task_mode_has_no_task_per_host_then_no_change_then_names_a_failed_vm(fleet):
    """playbooks/fleet_one_task.yml: a play on localhost with extensions_hosts, so no task runs per inventory host
    (neither the argument validation nor the report); the one task is changed, then not, then fails naming the VM."""
    one_task = REPO_ROOT / "playbooks" / "fleet_one_task.yml"
    first = fleet(playbook=one_task)
    assert first.rc == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert list(first.stats) == ["localhost"] and first.stats["localhost"]["changed"] == 1
    tasks = [task for play in first.results["plays"] for task in play["tasks"]]
    assert all(list(task["hosts"]) == ["localhost"] for task in tasks), [t["task"]["name"] for t in tasks]
    assert first.task(REPORT_TASK, "localhost")["skipped"] is True  # localhost is not one of the fleet's targets
    result = first.task(FLEET_TASK, "localhost")
    assert sorted(result["hosts"]) == HOSTS and all(h["changed"] for h in result["hosts"].values())
    assert len([e for e in writes(first.log) if e["method"] == "PUT"]) == len(HOSTS) * len(EXTENSIONS)

    again = fleet(playbook=one_task)
    assert again.rc == 0 and again.stats["localhost"]["changed"] == 0
    assert writes(again.log) == []

    fleet.emulator.reset()   # a fresh world, with one VM whose handler fails
    fleet.emulator.settings(handler_duration_s=0.5, delete_duration_s=0.3)
    fleet.emulator.faults([{"extension": {"vm": "fleet-004", "name": "monitor", "outcome": "failed",
                                          "message": "agent package download failed"}}])
    failed = fleet(playbook=one_task)
    assert failed.rc != 0 and failed.stats["localhost"]["failures"] == 1
    result = failed.task(FLEET_TASK, "localhost")
    assert "1 of 6 VMs failed" in result["msg"] and "fleet-004" in result["msg"]
    assert "agent package download failed" in result["msg"]
    assert result["hosts"]["fleet-004"]["failed"] and not result["hosts"]["fleet-001"]["failed"]


def test_bad_declaration_names_the_option_before_any_write(fleet):
    # The declarations are the module's argument spec now: a bad one stops the batch before anything is sent.
    bad = dict(EXTENSIONS[0], state="installed")
    run = fleet(hosts={"fleet-001": {"azure_vm_extensions": [bad]}})
    assert run.rc != 0
    result = run.task(FLEET_TASK, "fleet-001")
    assert "state" in result["msg"] and "present, absent" in result["msg"] and "installed" in result["msg"]
    assert writes(run.log) == []


def test_bad_play_option_names_the_option_before_any_write(fleet):
    # playbooks/fleet.yml imports the role without Ansible's per-host validation: the role validates its options
    # once for the batch, with the same argument spec.
    run = fleet(extra_vars={"extensions_max_workers": "many"})
    assert run.rc != 0
    result = run.task("Validate the role's options once for the batch", HOSTS[0])
    assert "extensions_max_workers" in result["msg"] and "int" in result["msg"], result["msg"]
    assert arm(run.log) == []


def test_role_listed_under_roles_converges_too(fleet, tmp_path):
    # `roles: [azure_vm.extensions.extensions]` keeps Ansible's own validation task per host, and works the same.
    playbook = tmp_path / "roles.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Fleet", "hosts": "fleet", "gather_facts": False,
                                         "roles": ["azure_vm.extensions.extensions"]}]))
    first = fleet(hosts={"fleet-001": {}, "fleet-002": {}}, playbook=playbook)
    assert first.rc == 0, first.stdout[-3000:]
    assert {host: s["changed"] for host, s in first.stats.items()} == {"fleet-001": 1, "fleet-002": 1}
    again = fleet(hosts={"fleet-001": {}, "fleet-002": {}}, playbook=playbook)
    assert again.rc == 0 and sum(s["changed"] for s in again.stats.values()) == 0
    assert writes(again.log) == []


def test_old_option_names_still_work(fleet):
    run = fleet(hosts={"fleet-001": {}}, extra_vars={"extensions_poll_interval": 0.3,
                                                     "extensions_polling_interval": None})
    assert run.rc == 0, run.stdout[-3000:]
    module = run.task("Converge the VM extensions of every host in the batch", "fleet-001")
    assert module["invocation"]["module_args"]["polling_interval"] == 0.3


def test_results_are_readable_at_vvvv_and_hide_only_protected_values(fleet):
    # Defect 3: targets used to be one no_log option, so every declared string was masked wherever it appeared.
    public = "assignment-web-42"
    declared = [dict(EXTENSIONS[0], type_handler_version="1.33", settings={"assignment": public}), EXTENSIONS[1]]
    fleet.emulator.faults([{"extension": {"vm": "fleet-002", "name": "monitor", "outcome": "failed",
                                          "message": "guest configuration assignment '%s' failed" % public}}])
    hosts = {"fleet-001": {}, "fleet-002": {}}
    run = fleet(hosts=hosts, group_vars={"azure_vm_extensions": declared}, options=["-vvvv"],
                extra_vars={"extensions_polling_interval": 1.0})
    assert run.rc != 0
    out = run.stdout + run.stderr
    assert "monitor: created at version 1.33" in out and "bootstrap: created at version 2.1" in out
    assert "guest configuration assignment '%s' failed" % public in out
    assert '"polling_interval": 1.0' in out and '"type_handler_version": "1.33"' in out
    assert not re.search(r"(?<!\*)\*{8}(?!\*)", out)  # Ansible's mask of a no_log value (banners are longer runs)
    assert "fleet-protected-token" not in out
    assert "fleet-protected-token" not in json.dumps(fleet.emulator.requests())
    assert "fleet-protected-token" not in json.dumps(fleet.emulator.state())


def test_unchanged_declaration_with_a_transitioning_handler_is_waited_for(fleet, ansible_env, tmp_path):
    # An earlier run wrote the extension and stopped waiting (wait=false, or a killed play). The fleet must wait
    # for the handler and report its real outcome, without writing again.
    # The emulator holds the handler in transitioning (it never finishes), so the outcome cannot race a clock.
    fleet.emulator.faults([{"extension": {"vm": "fleet-001", "name": "monitor", "outcome": "timeout"}}])
    submit = tmp_path / "submit.yml"
    submit.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "azure_vm.extensions.vm_extension": dict(EXTENSIONS[0], resource_group=RG, vm_name="fleet-001", wait=False)}]}]))
    env = dict(ansible_env)
    env.update(fleet.emulator.env)
    subprocess.run([str(VENV_BIN / "ansible-playbook"), str(submit), "-i", "localhost,", "-c", "local"], env=env,
                   check=True, capture_output=True)
    before = len(fleet.emulator.requests())
    run = fleet(hosts={"fleet-001": {"azure_vm_extensions": EXTENSIONS[:1]}}, extra_vars={"extensions_timeout": 5})
    report = run.task("Report the result of this host's VM", "fleet-001")
    assert report["failed"] is True, report
    assert report["msg"].startswith("timed out after 5s (the task's timeout) waiting for extension monitor")
    assert "handler transitioning" in report["msg"] and report["changed"] is False
    assert writes(fleet.emulator.requests()[before:]) == []


def test_report_names_what_is_wrong_with_its_input(fleet, tmp_path):
    # The report reads the registered fleet result by name: a wrong name is an error that says so; a host that is
    # not among the fleet's targets is skipped, saying so (localhost in the one-task form).
    playbook = tmp_path / "report.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Report", "hosts": "fleet", "gather_facts": False, "tasks": [
        {"name": "A result that lists fleet-001 only", "ansible.builtin.set_fact": {
            "fake_fleet": {"changed": True, "hosts": {"fleet-001": {
                "changed": True, "failed": False, "msg": "changed: monitor installed", "extensions": [{"x": 1}]}}}}},
        {"name": "Wrong name", "azure_vm.extensions.vm_extension_fleet_report": {"fleet_var": "no_such_var"},
         "ignore_errors": True, "register": "wrong"},
        {"name": REPORT_TASK, "azure_vm.extensions.vm_extension_fleet_report": {"fleet_var": "fake_fleet"}}]}]))
    run = fleet(hosts={"fleet-001": {}, "fleet-002": {}}, playbook=playbook)
    wrong = run.task("Wrong name", "fleet-001")
    assert wrong["failed"] and "fleet_var" in wrong["msg"] and "no_such_var" in wrong["msg"], wrong
    ok = run.task(REPORT_TASK, "fleet-001")
    assert ok["changed"] is True and ok["msg"] == "changed: monitor installed" and "extensions" not in ok
    missing = run.task(REPORT_TASK, "fleet-002")
    assert missing["skipped"] and "fleet-002 is not among the fleet task's targets (1 hosts: fleet-001)" in \
        missing["msg"], missing
    assert run.stats["fleet-002"]["skipped"] == 1 and run.stats["fleet-002"]["failures"] == 0
    assert run.stats["fleet-001"]["changed"] == 1
    assert arm(run.log) == []
