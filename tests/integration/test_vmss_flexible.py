"""Issue 26: vmss_extension, vmss_extension_info and the rerun on Flexible orchestration scale sets, with the real
ansible-playbook against the emulator's Flexible world (tests/emulator/flexible-seed.yml; the facts and their
sources: tests/data/flexible-scale-sets.md).

On a Flexible scale set the instances are VMs: the module lists them with the VM List's scale-set filter, upgrades
them with manualupgrade by VM name (Manual policy), compares each VM's extension with the model's (a Flexible VM
has no latestModelApplied), and never calls the Uniform-only scale-set instance view or VMSS VM APIs.
"""
import json
import subprocess
import time

import pytest

from harness import REPO_ROOT, VENV_BIN, playbook
from test_rerun_extension import kill_tree

SEED = REPO_ROOT / "tests" / "emulator" / "flexible-seed.yml"
RG = "rg-flex"
CS = dict(publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1")
WRITES = ("PUT", "PATCH", "POST", "DELETE")


@pytest.fixture(scope="module")
def flexible_world(tmp_path_factory):
    from emulator_control import Emulator

    emu = Emulator.start(str(tmp_path_factory.mktemp("flexible")), seed=str(SEED), timeout=180)
    yield emu
    emu.stop()


@pytest.fixture
def emulator(flexible_world):
    """Overrides conftest's emulator, so that run_playbook talks to the Flexible world."""
    flexible_world.reset()
    flexible_world.settings(handler_duration_s=0.3, delete_duration_s=0.2)
    return flexible_world


def ext_task(title="apply", vmss="vmss-flex", ext="script", **options):
    args = dict(resource_group=RG, vmss_name=vmss, name=ext)
    if options.get("state") != "absent" and not options.get("rerun"):
        args.update(CS)
    args.update(options)
    return {"name": title, "azure_vm.extensions.vmss_extension": args}


def info_task(title="info", vmss="vmss-flex", **options):
    return {"name": title, "azure_vm.extensions.vmss_extension_info": dict(resource_group=RG, vmss_name=vmss,
                                                                           **options)}


def writes_since(emulator, count):
    return [(r["method"], r["path"].rsplit("/", 1)[-1], (r.get("body") or {}).get("instanceIds"))
            for r in emulator.arm_requests()[count:] if r["method"] in WRITES]


def vm_names(emulator, vmss="vmss-flex"):
    """The scale set's VMs, as the VM List with its filter names them (what the module lists)."""
    for sub in emulator.state()["subscriptions"]:
        names = sorted(vm["name"] for vm in sub.get("vms") or []
                       if ((vm.get("properties") or {}).get("virtualMachineScaleSet") or {}).get("id", "")
                       .lower().endswith("/virtualmachinescalesets/" + vmss))
        if names:
            return names
    raise KeyError(vmss)


def uniform_only_calls(emulator, since=0):
    """Requests to the scale set's instance view or the VMSS VM APIs (refused on Flexible)."""
    return [r["path"] for r in emulator.arm_requests()[since:]
            if r["path"].endswith("/instanceView") and "/virtualMachineScaleSets/" in r["path"]
            or "/virtualMachineScaleSets/vmss-flex/virtualMachines/" in r["path"]]


def test_converge_in_batches_by_vm_name_then_no_change(run_playbook, emulator):
    names = vm_names(emulator)
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo flex"}, batch_percent=34),
                                info_task(name="script")), expect_rc=0)
    result = run.task("apply")
    assert result["changed"] is True and result["rollout"]["policy"] == "Manual"
    assert result["rollout"]["batches"] == [names[:2], names[2:]]
    assert result["rollout"]["succeeded"] == names and not result["rollout"]["stopped"]
    assert [(i["instance_id"], i["state"], i["latest_model_applied"]) for i in result["instances"]] == \
        [(name, "succeeded", True) for name in names]
    assert writes_since(emulator, 0) == [("PUT", "script", None), ("POST", "manualupgrade", names[:2]),
                                         ("POST", "manualupgrade", names[2:])]
    info = run.task("info")
    assert info["scale_set"]["orchestration_mode"] == "Flexible"
    assert info["extensions"][0]["instances"]["counts"] == {"succeeded": 3}
    assert info["extensions"][0]["instances"]["not_latest_model"] == []
    assert uniform_only_calls(emulator) == []

    start = len(emulator.arm_requests())
    again = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo flex"}, batch_percent=34)),
                         expect_rc=0)
    assert again.task("apply")["changed"] is False
    assert writes_since(emulator, start) == []


def test_an_unhealthy_batch_stops_the_rollout(run_playbook, emulator):
    names = vm_names(emulator)
    emulator.faults([{"extension": {"vm": names[0], "name": "script", "outcome": "failed",
                                    "message": "Enable failed: flex boom"}, "times": 1}])
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo stop"}, batch_percent=1,
                                         max_unhealthy_percent=0)))
    assert run.rc != 0
    result = run.task("apply")
    assert result["rollout"]["stopped"] is True and result["rollout"]["pending"] == names[1:]
    assert "flex boom" in result["msg"] and names[0] in result["msg"]
    assert [w for w in writes_since(emulator, 0) if w[1] == "manualupgrade"] == [("POST", "manualupgrade",
                                                                                  names[:1])]
    # Run again: the failed instance fails the task again, nothing more is sent than the rest of the rollout.
    info = run_playbook(playbook(info_task(name="script")), expect_rc=0).task("info")
    assert info["extensions"][0]["instances"]["counts"] == {"failed": 1, "absent": 2}
    assert sorted(info["extensions"][0]["instances"]["not_latest_model"]) == names[1:]


def test_killed_mid_rollout_then_resumed_then_no_change(run_playbook, emulator, ansible_env, tmp_path):
    names = vm_names(emulator)
    emulator.settings(handler_duration_s=4)
    path = tmp_path / "rollout.yml"
    task = ext_task(settings={"commandToExecute": "echo resume"}, batch_percent=1)
    path.write_text(playbook(task))
    env = dict(ansible_env, **emulator.env)
    env.update(AZURE_POLLING_INTERVAL="0.2", ANSIBLE_STDOUT_CALLBACK="json_results")
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), str(path), "-i", "localhost,", "-c", "local"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not [w for w in writes_since(emulator, 0) if w[1] == "manualupgrade"]:
            assert proc.poll() is None, "the run ended before its first batch"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        kill_tree(proc.pid)
        proc.wait()
    assert [w[2] for w in writes_since(emulator, 0) if w[1] == "manualupgrade"] == [names[:1]]
    emulator.settings(handler_duration_s=0.3)
    start = len(emulator.arm_requests())
    resumed = run_playbook(playbook(task), expect_rc=0).task("apply")
    assert resumed["changed"] is True and resumed["changes"] == ["instances"]
    assert "rollout resumed on instance(s) %s" % ", ".join(names[1:]) in resumed["summary"]
    assert writes_since(emulator, start) == [("POST", "manualupgrade", [name]) for name in names[1:]]
    start = len(emulator.arm_requests())
    assert run_playbook(playbook(task), expect_rc=0).task("apply")["changed"] is False
    assert writes_since(emulator, start) == []


def test_rerun_deletes_and_reapplies_on_every_vm_then_no_change(run_playbook, emulator, tmp_path):
    names = vm_names(emulator)
    rerun = ext_task("rerun", ext="monitor", rerun=True, rerun_method="delete_reapply", no_protected_settings=True,
                     batch_percent=100, backup_dir=str(tmp_path / "backups"))
    result = run_playbook(playbook(rerun), expect_rc=0).task("rerun")
    assert result["rerun"]["outcome"] == "succeeded" and result["rerun"]["method"] == "delete_reapply"
    assert writes_since(emulator, 0) == [("DELETE", "monitor", None), ("POST", "manualupgrade", names),
                                         ("PUT", "monitor", None), ("POST", "manualupgrade", names)]
    assert [i["state"] for i in result["instances"]] == ["succeeded"] * 3
    start = len(emulator.arm_requests())
    same = ext_task("same", ext="monitor", publisher="Microsoft.Azure.Monitor", type="AzureMonitorLinuxAgent",
                    type_handler_version="1.33")
    assert run_playbook(playbook(same), expect_rc=0).task("same")["changed"] is False
    assert writes_since(emulator, start) == []
    assert uniform_only_calls(emulator) == []


def test_automatic_policy_waits_until_every_vm_carries_the_model(run_playbook, emulator):
    names = vm_names(emulator, "vmss-flex-auto")
    task = ext_task(vmss="vmss-flex-auto", settings={"commandToExecute": "echo auto"})
    result = run_playbook(playbook(task), expect_rc=0).task("apply")
    assert result["rollout"]["policy"] == "Automatic"
    assert [(i["instance_id"], i["state"], i["latest_model_applied"]) for i in result["instances"]] == \
        [(name, "succeeded", True) for name in names]
    assert writes_since(emulator, 0) == [("PUT", "script", None)]  # Azure rolls it out: no manualupgrade
    start = len(emulator.arm_requests())
    assert run_playbook(playbook(task), expect_rc=0).task("apply")["changed"] is False
    assert writes_since(emulator, start) == []


def test_a_uniform_instance_id_on_a_flexible_scale_set_is_refused_naming_the_mode(run_playbook, emulator):
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo x"}, upgrade_instances=["0"])))
    assert run.rc != 0
    msg = run.task("apply")["msg"]
    assert "Flexible orchestration mode" in msg and "named by their VM names" in msg
    assert writes_since(emulator, 0) == []
    uniform = run_playbook(playbook(ext_task(vmss="vmss-uniform", settings={"commandToExecute": "echo x"},
                                             upgrade_instances=["vmss-flex_0"])))
    assert uniform.rc != 0 and "Uniform orchestration mode" in uniform.task("apply")["msg"]
    assert writes_since(emulator, 0) == []


def test_info_reports_each_extension_against_its_own_model(run_playbook, emulator):
    info = run_playbook(playbook(info_task(vmss="vmss-flex-rolling")), expect_rc=0).task("info")
    assert info["scale_set"]["orchestration_mode"] == "Flexible" and info["scale_set"]["upgrade_policy"] == "Rolling"
    health = [ext for ext in info["extensions"] if ext["name"] == "health"][0]
    assert health["instances"]["total"] == 3 and health["instances"]["counts"] == {"succeeded": 3}
    assert health["instances"]["not_latest_model"] == []
    assert uniform_only_calls(emulator) == []


def test_inventory_puts_flexible_instances_in_their_scale_sets_group(emulator, ansible_env, tmp_path):
    from test_inventory import group_hosts, plain, write_inventory

    def listed(config):
        source = write_inventory(tmp_path / ("inv-%d" % len(config)), config)
        env = dict(ansible_env, **emulator.env)
        env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "true"
        proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", source, "--list"], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        return plain(json.loads(proc.stdout))

    flex, auto = vm_names(emulator), vm_names(emulator, "vmss-flex-auto")
    # With the scale sets listed: the VM List with each Flexible scale set's filter names its VMs.
    data = listed({"include_vmss_instances": True, "list_model": False})
    assert group_hosts(data, "azure_vmss_vmss_flex") == flex
    assert group_hosts(data, "azure_vmss_vmss_flex_auto") == auto
    assert set(flex + auto) <= set(group_hosts(data, "azure_vms")) & set(group_hosts(data, "azure_vmss_instances"))
    assert "vm-solo" in group_hosts(data, "azure_vms") and "vm-solo" not in group_hosts(data, "azure_vmss_instances")
    assert sorted(group_hosts(data, "azure_vmss_vmss_uniform")) == ["vmss-uniform_0", "vmss-uniform_1"]
    host = data["_meta"]["hostvars"][flex[0]]
    assert host["azure_vmss_name"] == "vmss-flex" and host["azure_vmss_orchestration_mode"] == "Flexible"
    assert host["azure_vm_name"] == flex[0] and host["rerun_extension_vm_name"] == flex[0]  # the VM APIs address it
    assert host["azure_extensions"]["monitor"]["state"] == "succeeded"
    listed_with_filter = [r for r in emulator.arm_requests() if r["query"].get("$filter")]
    assert {r["query"]["$filter"].rsplit("/", 1)[-1] for r in listed_with_filter} == {
        "vmss-flex'", "vmss-flex-auto'", "vmss-flex-rolling'"}
    # Without listing the scale sets, the model list names a VM's scale set just the same.
    data = listed({"list_model": True})
    assert group_hosts(data, "azure_vmss_vmss_flex") == flex
    assert "azure_vmss_vmss_uniform" not in data
