"""The rerun_extension role and the modules' rerun (module_utils/extension_rerun.py), with the real ansible-playbook
against the emulator."""
import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from harness import REPO_ROOT, VENV_BIN, playbook

RG = "rg-demo"
SUB = "6f3a8c1e-0000-4000-8000-000000000001"
SECRET = "tok-R3run-Sup3rSecret-9f1c"
FINGERPRINT_TAG = "azure_vm.extensions.protected_settings"
PLAYBOOK = REPO_ROOT / "playbooks" / "rerun_extension.yml"
VAULT_ID = "/subscriptions/%s/resourceGroups/rg-demo/providers/Microsoft.KeyVault/vaults/kv-demo" % SUB
KEY_VAULT = {"secret_url": "https://kv-demo.vault.azure.net/secrets/cs-protected/0123456789abcdef",
             "source_vault_id": VAULT_ID}
# The properties a rerun must put back unchanged (what vm_extension_info / vmss_extension_info report).
DEFINITION = ("publisher", "type", "type_handler_version", "settings", "auto_upgrade_minor_version",
              "enable_automatic_upgrade", "suppress_failures", "force_update_tag", "provision_after_extensions",
              "protected_settings_from_key_vault", "tags", "location")


@pytest.fixture(autouse=True)
def fast(emulator):
    emulator.settings(handler_duration_s=0.3, delete_duration_s=0.2)


def role_play(**variables):
    """A one-play playbook that runs the role on localhost with the given variables."""
    return playbook({"name": "rerun", "ansible.builtin.include_role": {"name": "azure_vm.extensions.rerun_extension"},
                     "vars": variables})


def role_vars(tmp_path, **extra):
    values = dict(rerun_extension_resource_group=RG, rerun_extension_vm_name="vm-web-01",
                  rerun_extension_name="customScript", rerun_extension_backup_dir=str(tmp_path / "backups"))
    values.update(extra)
    return values


def vmss_vars(tmp_path, **extra):
    # One batch unless a test asks for batches (test_scale_set_delete_and_reapply_each_roll_out): the role's 20 %
    # batches on 5 instances cost 10 manual upgrades, close to the scale set's Update budget (12 + 4/min), and
    # the 0.2 s polls of the tests then wait on Get Operation's refill (throttling.md).
    extra.setdefault("rerun_extension_vmss_batch_percent", 100)
    return role_vars(tmp_path, rerun_extension_vm_name="", rerun_extension_vmss_name="vmss-manual", **extra)


def ext_requests(emulator, path_part):
    """The ARM requests that touch the VM or scale set (operation polls excluded)."""
    return [r for r in emulator.arm_requests() if path_part in r["path"]]


def methods(requests):
    return [r["method"] for r in requests]


def backups(tmp_path):
    folder = tmp_path / "backups"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def summary_of(run, host="localhost"):
    return run.task("Summary", host)["msg"]


def result_of(run, host="localhost"):
    return run.task("Record the outcome", host)["ansible_facts"]["rerun_extension_result"]


def install_vm(run_playbook, vm, **options):
    spec = dict(resource_group=RG, vm_name=vm, name="customScript", publisher="Microsoft.Azure.Extensions",
                type="CustomScript", type_handler_version="2.1", settings={})
    spec.update(options)
    return run_playbook(playbook({"name": "install", "azure_vm.extensions.vm_extension": spec}), expect_rc=0)


def install_vmss(run_playbook, **options):
    spec = dict(resource_group=RG, vmss_name="vmss-manual", name="customScript",
                publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1",
                settings={"commandToExecute": "echo scale"}, batch_percent=100)
    spec.update(options)
    return run_playbook(playbook({"name": "install", "azure_vm.extensions.vmss_extension": spec}), expect_rc=0)


def vm_extension_now(run_playbook, vm, name="customScript"):
    run = run_playbook(playbook({"name": "info", "azure_vm.extensions.vm_extension_info": {
        "resource_group": RG, "vm_name": vm, "name": name}}), expect_rc=0)
    found = run.task("info")["extensions"]
    return found[0] if found else None


def vmss_extension_now(run_playbook, name="customScript"):
    run = run_playbook(playbook({"name": "info", "azure_vm.extensions.vmss_extension_info": {
        "resource_group": RG, "vmss_name": "vmss-manual", "name": name}}), expect_rc=0)
    found = run.task("info")["extensions"]
    return found[0] if found else None


def definition(ext):
    return dict((key, ext.get(key)) for key in DEFINITION if key in ext)


def process_tree(pid):
    """pid and all its descendants (ansible-playbook runs its workers in sessions of their own)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in (Path("/proc") / str(current) / "task").glob("*/children"):
            try:
                todo.extend(int(child) for child in children.read_text().split())
            except OSError:
                continue
    return found


def kill_tree(pid):
    for each in process_tree(pid):
        try:
            os.kill(each, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---- the happy paths ----------------------------------------------------------------------------------------------
def test_delete_reapply_reads_deletes_then_puts_the_same_definition(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "storageAccountKey": SECRET})), expect_rc=0)
    requests = ext_requests(emulator, "/virtualMachines/vm-web-01")
    sequence = methods(requests)
    assert sequence[0] == "GET" and sequence.index("DELETE") < sequence.index("PUT")
    assert sequence.count("DELETE") == 1 and sequence.count("PUT") == 1
    assert requests[sequence.index("DELETE")]["path"].endswith("/extensions/customScript")
    put = requests[sequence.index("PUT")]["body"]
    assert put["properties"]["publisher"] == "Microsoft.Azure.Extensions"
    assert put["properties"]["type"] == "CustomScript"
    assert put["properties"]["typeHandlerVersion"] == "2.1"
    assert put["properties"]["autoUpgradeMinorVersion"] is True  # as the seed has it
    assert put["properties"]["settings"] == {"commandToExecute": "echo hello"}
    assert put["properties"]["protectedSettings"] == {"storageAccountKey": "***"}
    # The seeded extension carries no fingerprint tag (written without one): the reapply keeps it that way.
    assert FINGERPRINT_TAG not in (put.get("tags") or {})

    result = result_of(run)
    assert result["outcome"] == "succeeded" and result["method"] == "delete_reapply"
    assert "Enable succeeded" in result["handler_message"]
    line = summary_of(run)
    for part in ("rerun_extension: host=localhost", "vm=vm-web-01", "extension=customScript",
                 "method=delete_reapply", "outcome=succeeded", "backup=" + result["backup_file"]):
        assert part in line, line
    assert "\n" not in line
    ext = vm_extension_now(run_playbook, "vm-web-01")
    assert ext["provisioning_state"] == "Succeeded" and ext["instance_view"]["state"] == "succeeded"
    assert ext["settings"] == {"commandToExecute": "echo hello"}

    files = backups(tmp_path)
    assert [str(f) for f in files] == [result["backup_file"]]
    assert files[0].name.startswith("rg-demo_vm-web-01_customScript_")
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    saved = json.loads(files[0].read_text())
    assert saved["stage"] == "reapplied"
    assert saved["extension_definition"]["settings"] == {"commandToExecute": "echo hello"}
    assert saved["definition"]["publisher"] == "Microsoft.Azure.Extensions"
    assert saved["target"] == {"kind": "vm", "subscription_id": SUB, "resource_group": RG, "name": "vm-web-01",
                               "extension": "customScript"}
    assert saved["protected_settings"]["evidence"] == "supplied" and saved["protected_settings"]["saved"] is False
    assert SECRET not in files[0].read_text()


@pytest.mark.parametrize("kind", ["vm", "vmss"])
def test_definition_is_equal_field_by_field_after_a_rerun(run_playbook, emulator, tmp_path, kind):
    """Defect 1: false flags became true (and the handler moved from 2.0.x to 2.1.10). Every property survives:
    version, both upgrade flags false, suppressFailures, provisionAfterExtensions, settings, tags, Key Vault."""
    options = dict(type_handler_version="2.0", auto_upgrade_minor_version=False, enable_automatic_upgrade=False,
                   suppress_failures=False, provision_after_extensions=["BGInfo"],
                   settings={"commandToExecute": "echo kv", "retries": 3, "verbose": False},
                   protected_settings_from_key_vault=KEY_VAULT)
    if kind == "vm":
        install_vm(run_playbook, "vm-web-02", tags={"owner": "team-a", "cost-center": "0042"}, **options)
        before = vm_extension_now(run_playbook, "vm-web-02")
        variables = role_vars(tmp_path, rerun_extension_vm_name="vm-web-02")
        path = "/virtualMachines/vm-web-02/extensions/customScript"
    else:
        install_vmss(run_playbook, **options)
        before = vmss_extension_now(run_playbook)
        variables = vmss_vars(tmp_path)
        path = "/virtualMachineScaleSets/vmss-manual/extensions/customScript"
    assert before["auto_upgrade_minor_version"] is False and before["enable_automatic_upgrade"] is False
    start = len(emulator.arm_requests())
    run = run_playbook(role_play(**variables), expect_rc=0)  # no secrets needed: they come from Key Vault
    assert "outcome=succeeded" in summary_of(run)
    writes = [r for r in emulator.arm_requests()[start:] if r["path"].endswith(path) and r["method"] != "GET"]
    assert methods(writes) == ["DELETE", "PUT"]
    props = writes[1]["body"]["properties"]
    assert props["autoUpgradeMinorVersion"] is False and props["enableAutomaticUpgrade"] is False
    assert props["suppressFailures"] is False
    assert props["protectedSettingsFromKeyVault"] == {"secretUrl": KEY_VAULT["secret_url"],
                                                      "sourceVault": {"id": VAULT_ID}}
    after = vm_extension_now(run_playbook, "vm-web-02") if kind == "vm" else vmss_extension_now(run_playbook)
    assert definition(after) == definition(before)
    for key in DEFINITION:  # the same, key by key, with the types ARM stores
        if key in before:
            assert type(after[key]) is type(before[key]) and after[key] == before[key], key
    if kind == "vm":
        assert after["tags"] == {"owner": "team-a", "cost-center": "0042"}
        # the installed handler stays on 2.0.x (autoUpgradeMinorVersion=false), it did not move to 2.1.10
        assert before["instance_view"]["type_handler_version"] == after["instance_view"]["type_handler_version"]
        assert after["instance_view"]["type_handler_version"].startswith("2.0.")
    saved = json.loads(backups(tmp_path)[0].read_text())
    assert saved["protected_settings"]["evidence"] == "key_vault"
    assert saved["definition"]["auto_upgrade_minor_version"] is False


def test_opt_out_reapplies_an_extension_without_protected_settings(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="vm-win-01",
                                             rerun_extension_name="BGInfo",
                                             rerun_extension_no_protected_settings=True,
                                             rerun_extension_overrides={"type_handler_version": "2.1"})),
                       expect_rc=0)
    writes = ext_requests(emulator, "/virtualMachines/vm-win-01/extensions/BGInfo")
    assert [r["method"] for r in writes if r["method"] != "GET"] == ["DELETE", "PUT"]
    put = [r for r in writes if r["method"] == "PUT"][0]["body"]
    assert put["properties"]["typeHandlerVersion"] == "2.1"  # the override
    assert "protectedSettings" not in put["properties"]
    assert "tags" not in put  # no fingerprint invented for an extension that had none and got no secrets
    assert "outcome=succeeded" in summary_of(run)
    saved = json.loads(backups(tmp_path)[0].read_text())
    assert saved["extension_definition"]["type_handler_version"] == "2.2"
    assert saved["definition"]["type_handler_version"] == "2.1"
    assert saved["protected_settings"]["evidence"] == "none_asserted"


def test_force_update_tag_reruns_with_a_new_tag_and_no_delete(run_playbook, emulator, tmp_path):
    tags = []
    for dummy in range(2):
        run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_method="force_update_tag")), expect_rc=0)
        puts = [r for r in ext_requests(emulator, "/virtualMachines/vm-web-01/extensions/customScript")
                if r["method"] == "PUT"]
        tags.append(puts[-1]["body"]["properties"]["forceUpdateTag"])
        assert puts[-1]["body"]["properties"]["settings"] == {"commandToExecute": "echo hello"}
        assert "outcome=succeeded" in summary_of(run) and "method=force_update_tag" in summary_of(run)
    assert tags[0] and tags[1] and tags[0] != tags[1]
    assert [r for r in emulator.writes() if r["method"] == "DELETE"] == []
    assert len(backups(tmp_path)) == 2


def test_scale_set_delete_and_reapply_each_roll_out(run_playbook, emulator, tmp_path):
    install_vmss(run_playbook)
    start = len(emulator.arm_requests())
    run = run_playbook(role_play(**vmss_vars(tmp_path, rerun_extension_protected_settings={"storageAccountKey": SECRET},
                                             rerun_extension_vmss_batch_percent=40)), expect_rc=0)
    new = [r for r in emulator.arm_requests()[start:] if "/virtualMachineScaleSets/vmss-manual" in r["path"]]
    writes = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in new if r["method"] != "GET"]
    # delete, then its rollout in batches of 2; reapply, then its rollout in batches of 2. The extension was
    # installed without protected settings, so the scale set has no fingerprint tag, and the rerun adds none.
    assert writes == [("DELETE", "customScript")] + [("POST", "manualupgrade")] * 3 + \
        [("PUT", "customScript")] + [("POST", "manualupgrade")] * 3, writes
    assert new[0]["method"] == "GET"
    put = [r for r in new if r["method"] == "PUT"][0]["body"]
    assert put["properties"]["settings"] == {"commandToExecute": "echo scale"}
    assert put["properties"]["protectedSettings"] == {"storageAccountKey": "***"}
    result = result_of(run)
    assert result["outcome"] == "succeeded"
    assert result["handler_message"].startswith("5/5 instances succeeded")
    assert "vmss=vmss-manual" in summary_of(run)
    saved = json.loads(backups(tmp_path)[0].read_text())
    assert saved["target"]["kind"] == "vmss"
    assert SECRET not in backups(tmp_path)[0].read_text()


def test_playbook_over_an_inventory_reports_one_line_per_host_in_at_most_six_tasks(
        run_playbook, emulator, tmp_path):
    """Defect 5: 24-28 tasks per host. The role is now a thin loop: count the tasks each host runs."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {
        "vars": {"ansible_connection": "local", "rerun_extension_resource_group": RG,
                 "rerun_extension_name": "customScript", "rerun_extension_no_protected_settings": True,
                 "rerun_extension_backup_dir": str(tmp_path / "backups")},
        "hosts": {"vm-web-01": {}, "windows": {"rerun_extension_vm_name": "vm-win-01",
                                               "rerun_extension_name": "BGInfo"}}}}))
    run = run_playbook(str(PLAYBOOK), inventory=str(inventory), expect_rc=0)
    web, win = summary_of(run, "vm-web-01"), summary_of(run, "windows")
    assert "host=vm-web-01 vm=vm-web-01 extension=customScript method=delete_reapply outcome=succeeded" in web
    assert "host=windows vm=vm-win-01 extension=BGInfo method=delete_reapply outcome=succeeded" in win
    assert {f.name.split("_2")[0] for f in backups(tmp_path)} == {"rg-demo_vm-web-01_customScript",
                                                                  "rg-demo_vm-win-01_BGInfo"}
    deletes = sorted(r["path"].rsplit("/", 3)[-3] for r in emulator.writes() if r["method"] == "DELETE")
    assert deletes == ["vm-web-01", "vm-win-01"]
    for host in ("vm-web-01", "windows"):
        tasks = [task["task"]["name"] for play in run.results["plays"] for task in play["tasks"]
                 if host in task["hosts"]]
        # argument validation, the VM or the scale-set rerun (one of them skipped), the record, the artifact of a
        # failed rerun's backup (skipped unless one failed after its backup), the summary line: nothing else
        assert 0 < len(tasks) <= 6, tasks


def test_check_mode_sends_no_write(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "storageAccountKey": SECRET})), check=True, expect_rc=0)
    assert emulator.writes() == []
    assert "method=delete_reapply outcome=planned" in summary_of(run)
    assert backups(tmp_path) == []
    assert SECRET not in run.stdout


# ---- refusals before anything is written --------------------------------------------------------------------------
def test_without_protected_settings_fails_before_any_delete(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path)))
    assert run.rc != 0
    msg = summary_of(run)
    assert "outcome=refused" in msg.splitlines()[0]
    assert "nothing was deleted" in msg
    assert "protected_settings" in msg and "no_protected_settings=true" in msg
    assert "commandToExecute" in msg  # what CustomScript typically keeps there
    assert emulator.writes() == []
    assert backups(tmp_path) == []


def test_opt_out_is_refused_when_the_fingerprint_tag_proves_protected_settings(run_playbook, emulator, tmp_path):
    install_vm(run_playbook, "vm-web-02", protected_settings={"commandToExecute": "echo " + SECRET})
    writes_before = len(emulator.writes())
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="vm-web-02",
                                             rerun_extension_no_protected_settings=True)))
    assert run.rc != 0
    msg = summary_of(run)
    assert FINGERPRINT_TAG in msg and "cannot be right" in msg and "nothing was deleted" in msg
    assert len(emulator.writes()) == writes_before


def test_scale_set_opt_out_is_refused_when_the_scale_set_fingerprint_proves_protected_settings(
        run_playbook, emulator, tmp_path):
    """Defect 2: on a scale set the role deleted, reapplied without the secrets and reported success."""
    install_vmss(run_playbook, protected_settings={"storageAccountKey": SECRET})
    before = vmss_extension_now(run_playbook)
    writes_before = len(emulator.writes())
    run = run_playbook(role_play(**vmss_vars(tmp_path, rerun_extension_no_protected_settings=True)))
    assert run.rc != 0
    msg = summary_of(run)
    assert "%s.customScript" % FINGERPRINT_TAG in msg and "cannot be right" in msg
    assert "nothing was deleted" in msg
    assert len(emulator.writes()) == writes_before  # no DELETE, no PUT, no tag change
    assert definition(vmss_extension_now(run_playbook)) == definition(before)
    # Supplying secrets other than the ones Azure holds is refused as well: the rerun must not change them.
    other = run_playbook(role_play(**vmss_vars(tmp_path, rerun_extension_protected_settings={
        "storageAccountKey": "something-else"})))
    assert other.rc != 0 and "differ from those Azure holds" in summary_of(other)
    assert len(emulator.writes()) == writes_before
    # With the right ones it goes through.
    run_playbook(role_play(**vmss_vars(tmp_path, rerun_extension_protected_settings={"storageAccountKey": SECRET})),
                 expect_rc=0)


def test_missing_extension_and_failed_sibling_fail_before_any_write(run_playbook, emulator, tmp_path):
    missing = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="vm-web-02",
                                                 rerun_extension_no_protected_settings=True)))
    assert missing.rc != 0
    assert "extension customScript not found on VM vm-web-02" in summary_of(missing)
    # A failed sibling would make Azure refuse the reapply after the delete: refused up front.
    emulator.faults([{"extension": {"vm": "vm-web-01", "name": "monitor", "outcome": "failed",
                                    "message": "monitor agent crashed"}, "times": 1}])
    seeded = run_playbook(playbook({"name": "seed", "azure_vm.extensions.vm_extension": {
        "resource_group": RG, "vm_name": "vm-web-01", "name": "monitor", "publisher": "Microsoft.Azure.Monitor",
        "type": "AzureMonitorLinuxAgent", "type_handler_version": "1.33"}}))
    assert seeded.rc != 0
    writes_before = len(emulator.writes())
    blocked = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_no_protected_settings=True)))
    assert blocked.rc != 0
    msg = summary_of(blocked)
    assert "monitor" in msg and "outcome=refused" in msg
    assert len(emulator.writes()) == writes_before
    assert backups(tmp_path) == []


# ---- failures after the delete, and recovery ----------------------------------------------------------------------
def restore_task_from(msg):
    """The YAML task the failure message gives, as a list of one task."""
    text = msg[msg.index("- name: Restore extension"):]
    return yaml.safe_load(text)


def test_handler_failure_after_reapply_fails_with_its_message_and_the_restore_task(run_playbook, emulator,
                                                                                   tmp_path):
    emulator.faults([{"extension": {"vm": "vm-web-01", "name": "customScript", "outcome": "failed",
                                    "message": "Enable failed: script exited 3: disk full"}, "times": 1}])
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "commandToExecute": "./setup.sh --token " + SECRET})))
    assert run.rc != 0
    assert methods([r for r in ext_requests(emulator, "/virtualMachines/vm-web-01/extensions/customScript")
                    if r["method"] != "GET"]) == ["DELETE", "PUT"]
    msg = summary_of(run)
    files = backups(tmp_path)
    assert len(files) == 1
    assert "disk full" in msg and str(files[0]) in msg and "definition_from_backup" in msg
    assert "putting it back failed" in msg
    recorded = result_of(run)
    assert recorded["outcome"] == "failed" and recorded["backup_file"] == str(files[0])
    text = files[0].read_text()
    assert SECRET not in text and "setup.sh" not in text
    assert json.loads(text)["stage"] == "reapply_failed"
    assert json.loads(text)["extension_definition"]["settings"] == {"commandToExecute": "echo hello"}
    for blob in (run.stdout, run.stderr, json.dumps(emulator.requests()), json.dumps(emulator.state())):
        assert SECRET not in blob


def test_reapply_refused_by_azure_then_the_advice_in_the_message_restores_it(run_playbook, emulator, tmp_path):
    """Defect 3: after a refused reapply the advice led nowhere. A 403 on the PUT (the extension already deleted);
    the message names the backup and gives a task; that task, with the protected settings, restores the extension
    exactly, and running it again changes nothing."""
    before = vm_extension_now(run_playbook, "vm-web-01")
    emulator.faults([{"match": {"method": "PUT", "path": "/virtualMachines/vm-web-01/extensions/customScript$"},
                      "respond": {"status": 403, "body": {"error": {
                          "code": "AuthorizationFailed",
                          "message": "The client 'ops-bot' does not have authorization to perform action "
                                     "'Microsoft.Compute/virtualMachines/extensions/write'."}}},
                      "times": 1}])
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "storageAccountKey": SECRET})))
    assert run.rc != 0
    msg = summary_of(run)
    assert "AuthorizationFailed" in msg and "403" in msg
    assert vm_extension_now(run_playbook, "vm-web-01") is None  # the delete went through
    backup = backups(tmp_path)[0]
    assert str(backup) in msg and json.loads(backup.read_text())["stage"] == "reapply_failed"
    tasks = restore_task_from(msg)
    assert len(tasks) == 1
    module_args = tasks[0]["azure_vm.extensions.vm_extension"]
    assert module_args["definition_from_backup"] == str(backup)
    assert "protected_settings" in module_args  # the message says they are needed, and where they go
    module_args["protected_settings"] = {"storageAccountKey": SECRET}
    restore = yaml.safe_dump([{"name": "restore", "hosts": "localhost", "gather_facts": False, "tasks": tasks}])
    first = run_playbook(restore, expect_rc=0)
    assert first.task(tasks[0]["name"])["changed"] is True
    assert definition(vm_extension_now(run_playbook, "vm-web-01")) == definition(before)  # no tag added either
    assert json.loads(backup.read_text())["stage"] == "restored"
    writes = len(emulator.writes())
    second = run_playbook(restore, expect_rc=0)
    assert second.task(tasks[0]["name"])["changed"] is False
    assert len(emulator.writes()) == writes


def test_run_killed_between_delete_and_put_is_restored_by_the_next_run(
        run_playbook, emulator, tmp_path, ansible_env):
    """Kill ansible-playbook while the delete is in progress (before any PUT): the extension is lost, the backup
    says so. The next run of the same rerun restores it from the backup, and the documented restore task then
    reports no change."""
    install_vm(run_playbook, "vm-web-02", auto_upgrade_minor_version=False, suppress_failures=True,
               settings={"commandToExecute": "echo restore-me"}, tags={"team": "ops"},
               protected_settings={"commandToExecute": "echo " + SECRET})
    before = vm_extension_now(run_playbook, "vm-web-02")
    emulator.settings(delete_duration_s=5)  # holds the delete long enough to stop the run inside it
    variables = role_vars(tmp_path, rerun_extension_vm_name="vm-web-02",
                          rerun_extension_protected_settings={"commandToExecute": "echo " + SECRET})
    path = tmp_path / "rerun.yml"
    path.write_text(role_play(**variables))
    env = dict(ansible_env, **emulator.env)
    env.update(AZURE_POLLING_INTERVAL="0.2", ANSIBLE_STDOUT_CALLBACK="json_results")
    proc = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), str(path), "-i", "localhost,", "-c", "local"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not [r for r in emulator.writes() if r["method"] == "DELETE"]:
            assert proc.poll() is None, "the run ended before its DELETE"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        kill_tree(proc.pid)  # the playbook, its worker and the module: the run stops dead
        proc.wait()
    assert [r["method"] for r in emulator.writes()][-1] == "DELETE"  # killed before the PUT
    while vm_extension_now(run_playbook, "vm-web-02") is not None:  # the delete finishes in Azure
        time.sleep(0.5)
    assert [r["method"] for r in emulator.writes()][-1] == "DELETE"  # and nothing of the run survived to PUT
    files = backups(tmp_path)
    assert len(files) == 1 and json.loads(files[0].read_text())["stage"] in ("saved", "deleted")
    assert SECRET not in files[0].read_text()

    emulator.settings(delete_duration_s=0.2)
    again = run_playbook(role_play(**variables), expect_rc=0)
    line = summary_of(again)
    assert "outcome=restored" in line and "backup=" + str(files[0]) in line
    after = vm_extension_now(run_playbook, "vm-web-02")
    assert dict(definition(after), tags=None) == dict(definition(before), tags=None)
    assert set(after["tags"]) == set(before["tags"]) == {"team", FINGERPRINT_TAG}
    assert after["auto_upgrade_minor_version"] is False and after["suppress_failures"] is True
    assert json.loads(files[0].read_text())["stage"] == "restored"
    assert len(backups(tmp_path)) == 1

    # The restore task from the backup file itself (what the module docs and the README give) is idempotent now.
    task = yaml.safe_load(json.loads(files[0].read_text())["restore_task"])
    task[0]["azure_vm.extensions.vm_extension"]["protected_settings"] = {"commandToExecute": "echo " + SECRET}
    writes = len(emulator.writes())
    restore = run_playbook(yaml.safe_dump([{"name": "restore", "hosts": "localhost", "gather_facts": False,
                                            "tasks": task}]), expect_rc=0)
    assert restore.task(task[0]["name"])["changed"] is False
    assert len(emulator.writes()) == writes


def test_restore_needs_the_protected_settings_the_backup_says_it_had(run_playbook, emulator, tmp_path):
    emulator.faults([{"match": {"method": "PUT", "path": "/virtualMachines/vm-web-01/extensions/customScript$"},
                      "respond": {"status": 403, "body": {"error": {"code": "AuthorizationFailed",
                                                                    "message": "no write permission"}}},
                      "times": 1}])
    run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={"storageAccountKey": SECRET})),
                 expect_rc=2)
    writes = len(emulator.writes())
    run = run_playbook(playbook({"name": "restore", "azure_vm.extensions.vm_extension": {
        "resource_group": RG, "vm_name": "vm-web-01", "name": "customScript",
        "definition_from_backup": str(backups(tmp_path)[0])}}))
    assert run.rc != 0
    assert "Pass them in protected_settings" in run.task("restore")["msg"]
    assert len(emulator.writes()) == writes
    wrong = run_playbook(playbook({"name": "restore", "azure_vm.extensions.vm_extension": {
        "resource_group": RG, "vm_name": "vm-web-02", "name": "customScript",
        "protected_settings": {"storageAccountKey": SECRET},
        "definition_from_backup": str(backups(tmp_path)[0])}}))
    assert wrong.rc != 0 and "not of this task's" in wrong.task("restore")["msg"]
    assert len(emulator.writes()) == writes


# ---- backups and secrets ------------------------------------------------------------------------------------------
def test_backups_default_to_the_users_home_outside_the_collection(run_playbook, emulator, tmp_path):
    """Defect 4: the default was {{ playbook_dir }}, i.e. the installed collection's playbooks/ directory."""
    home = tmp_path / "home"
    home.mkdir()
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"vars": {
        "ansible_connection": "local", "rerun_extension_resource_group": RG, "rerun_extension_name": "BGInfo",
        "rerun_extension_no_protected_settings": True}, "hosts": {"vm-win-01": {}}}}))
    inside_before = sorted(p for p in REPO_ROOT.rglob("*_BGInfo_*.json") if ".build" not in p.parts)
    run = run_playbook(str(PLAYBOOK), inventory=str(inventory), env={"HOME": str(home)}, expect_rc=0)
    folder = home / ".ansible" / "azure_vm_extensions" / "backups"
    files = sorted(folder.glob("rg-demo_vm-win-01_BGInfo_*.json"))
    assert len(files) == 1 and "backup=%s" % files[0] in summary_of(run, "vm-win-01")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert sorted(p for p in REPO_ROOT.rglob("*_BGInfo_*.json") if ".build" not in p.parts) == inside_before


def test_secret_never_appears_in_verbose_output_backup_or_emulator_log(run_playbook, emulator, tmp_path):
    secrets = {"commandToExecute": "curl -H 'Authorization: Bearer %s' https://example.test" % SECRET}
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings=secrets)),
                       verbosity=4, expect_rc=0)
    assert "outcome=succeeded" in run.stdout
    assert "<localhost> EXEC" in run.stdout or "ESTABLISH" in run.stdout  # really verbose
    # and on the scale-set path, including a failing reapply whose message carries the restore task
    install_vmss(run_playbook)
    emulator.faults([{"match": {"method": "PUT", "path": "/virtualMachineScaleSets/vmss-manual/extensions/"},
                      "respond": {"status": 403, "body": {"error": {"code": "AuthorizationFailed",
                                                                    "message": "no write permission"}}},
                      "times": 1}])
    failed = run_playbook(role_play(**vmss_vars(tmp_path, rerun_extension_protected_settings=secrets)), verbosity=4)
    assert failed.rc != 0 and "definition_from_backup" in failed.stdout
    files = backups(tmp_path)
    assert len(files) == 2
    for blob in [run.stdout, run.stderr, failed.stdout, failed.stderr, json.dumps(emulator.requests()),
                 json.dumps(emulator.state())] + [f.read_text() for f in files]:
        assert SECRET not in blob
    put = [r for r in emulator.writes() if r["method"] == "PUT"][0]
    assert put["body"]["properties"]["protectedSettings"] == {"commandToExecute": "***"}
    assert "outcome=succeeded" in run.stdout and "handler=" in run.stdout  # not a result full of ********


# ---- the module option directly -----------------------------------------------------------------------------------
def test_module_rerun_with_a_declared_definition_and_bad_input(run_playbook, emulator, tmp_path):
    base = {"resource_group": RG, "vm_name": "vm-web-01", "name": "customScript", "rerun": True,
            "rerun_method": "delete_reapply", "backup_dir": str(tmp_path / "backups"),
            "protected_settings": {"storageAccountKey": SECRET}}
    partial = run_playbook(playbook({"name": "rerun", "azure_vm.extensions.vm_extension": dict(
        base, publisher="Microsoft.Azure.Extensions")}))
    assert partial.rc != 0 and "declare all of publisher, type and type_handler_version" in \
        partial.task("rerun")["msg"]
    bad = run_playbook(playbook({"name": "rerun", "azure_vm.extensions.vm_extension": dict(
        base, rerun_method="recreate")}))
    assert bad.rc != 0 and "rerun_method" in bad.task("rerun")["msg"] and "delete_reapply" in bad.task("rerun")["msg"]
    assert emulator.writes() == []
    declared = run_playbook(playbook({"name": "rerun", "azure_vm.extensions.vm_extension": dict(
        base, publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1",
        settings={"commandToExecute": "echo declared"})}), expect_rc=0)
    result = declared.task("rerun")
    assert result["changed"] is True and result["rerun"]["outcome"] == "succeeded"
    assert result["before"]["settings"] == {"commandToExecute": "echo hello"}
    assert result["extension"]["settings"] == {"commandToExecute": "echo declared"}
    assert methods(list(emulator.writes())) == ["DELETE", "PUT"]


# ---- issue 23: recovery without gaps ------------------------------------------------------------------------------
def interrupted_rerun(run_playbook, emulator, tmp_path, vm="vm-web-02"):
    """vm's customScript with protected settings (and so a fingerprint tag), then a rerun whose reapply Azure
    refuses once: the extension is deleted and its backup unfinished, as after a kill between DELETE and PUT."""
    install_vm(run_playbook, vm, settings={"commandToExecute": "echo restore-me"},
               protected_settings={"commandToExecute": "echo " + SECRET})
    emulator.faults([{"match": {"method": "PUT", "path": "/virtualMachines/%s/extensions/customScript$" % vm},
                      "respond": {"status": 403, "body": {"error": {"code": "RequestDisallowedByPolicy",
                                                                    "message": "denied by policy"}}},
                      "times": 1}])
    variables = role_vars(tmp_path, rerun_extension_vm_name=vm,
                          rerun_extension_protected_settings={"commandToExecute": "echo " + SECRET})
    failed = run_playbook(role_play(**variables))
    assert failed.rc != 0 and "RequestDisallowedByPolicy" in summary_of(failed)
    assert vm_extension_now(run_playbook, vm) is None
    assert json.loads(backups(tmp_path)[0].read_text())["stage"] == "reapply_failed"
    return variables, failed


def test_recovery_refuses_protected_settings_other_than_those_it_deleted(run_playbook, emulator, tmp_path):
    variables, dummy = interrupted_rerun(run_playbook, emulator, tmp_path)
    saved = json.loads(backups(tmp_path)[0].read_text())["protected_settings"]
    assert saved["fingerprint"].startswith("v2$") and SECRET not in json.dumps(saved)
    writes = len(emulator.writes())
    wrong = run_playbook(role_play(**dict(variables, rerun_extension_protected_settings={
        "commandToExecute": "echo a-different-secret"})))
    assert wrong.rc != 0
    assert "differ from those it had" in summary_of(wrong) and "outcome=refused" in summary_of(wrong)
    assert len(emulator.writes()) == writes and vm_extension_now(run_playbook, "vm-web-02") is None
    right = run_playbook(role_play(**variables), expect_rc=0)
    assert "outcome=restored" in summary_of(right)
    assert vm_extension_now(run_playbook, "vm-web-02")["settings"] == {"commandToExecute": "echo restore-me"}
    writes = len(emulator.writes())
    again = run_playbook(role_play(**dict(variables, rerun_extension_method="force_update_tag")), expect_rc=0)
    assert "outcome=succeeded" in summary_of(again)  # an ordinary rerun now; the backup is finished
    assert [w["method"] for w in emulator.writes()[writes:]] == ["PUT"]


def test_check_mode_over_an_interrupted_rerun_plans_and_writes_nothing(run_playbook, emulator, tmp_path):
    variables, dummy = interrupted_rerun(run_playbook, emulator, tmp_path)
    writes = len(emulator.writes())
    run = run_playbook(role_play(**variables), check=True, verbosity=1)
    assert run.rc == 0, run.stdout[-3000:]
    assert "outcome=planned" in run.stdout and "outcome=restored" not in run.stdout
    assert "restored it from" not in run.stdout + run.stderr
    assert len(emulator.writes()) == writes and vm_extension_now(run_playbook, "vm-web-02") is None
    assert json.loads(backups(tmp_path)[0].read_text())["stage"] == "reapply_failed"


def test_a_rerun_keeps_the_fingerprint_opt_out(run_playbook, emulator, tmp_path):
    install_vm(run_playbook, "vm-web-02", protected_settings={"commandToExecute": "echo " + SECRET},
               protected_settings_fingerprint=False)
    assert FINGERPRINT_TAG not in (vm_extension_now(run_playbook, "vm-web-02")["tags"] or {})
    start = len(emulator.writes())
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="vm-web-02",
                                             rerun_extension_protected_settings={
                                                 "commandToExecute": "echo " + SECRET})), expect_rc=0)
    assert "outcome=succeeded" in summary_of(run)
    puts = [w for w in emulator.writes()[start:] if w["method"] == "PUT"]
    assert len(puts) == 1 and FINGERPRINT_TAG not in (puts[0]["body"].get("tags") or {})
    assert FINGERPRINT_TAG not in (vm_extension_now(run_playbook, "vm-web-02")["tags"] or {})
    assert json.loads(backups(tmp_path)[0].read_text())["protected_settings"]["fingerprint_tag"] is False


def test_a_second_rerun_of_the_same_extension_is_refused_while_the_first_runs(
        run_playbook, emulator, tmp_path, ansible_env):
    emulator.settings(delete_duration_s=4)  # holds the first rerun inside its delete
    variables = role_vars(tmp_path, rerun_extension_protected_settings={"storageAccountKey": SECRET})
    path = tmp_path / "first.yml"
    path.write_text(role_play(**variables))
    env = dict(ansible_env, **emulator.env)
    env.update(AZURE_POLLING_INTERVAL="0.2", ANSIBLE_STDOUT_CALLBACK="json_results")
    first = subprocess.Popen([str(VENV_BIN / "ansible-playbook"), str(path), "-i", "localhost,", "-c", "local"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not [r for r in emulator.writes() if r["method"] == "DELETE"]:
            assert first.poll() is None, "the first rerun ended before its DELETE"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = run_playbook(role_play(**variables))
        assert second.rc != 0
        line = summary_of(second)
        assert "another rerun of extension customScript on VM vm-web-01" in line and "outcome=refused" in line
        assert "process %d" % first.pid not in line  # the lock names the module's process, not the playbook's
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            kill_tree(first.pid)
    assert first.returncode == 0, out[-3000:] + err[-2000:]
    assert [w["method"] for w in emulator.writes()] == ["DELETE", "PUT"]  # nothing deleted twice
    assert vm_extension_now(run_playbook, "vm-web-01")["provisioning_state"] == "Succeeded"


def test_awx_recovery_from_the_task_result_when_the_backup_file_is_gone(run_playbook, emulator, tmp_path):
    """An AWX job container forgets its disk: the failed rerun's result carries the backup (never a secret), and
    definition_from_backup takes it as it is; a second restore changes nothing."""
    variables, failed = interrupted_rerun(run_playbook, emulator, tmp_path)
    backup = result_of(failed)["backup"]
    assert backup["stage"] == "reapply_failed" and backup["definition"]["publisher"] == "Microsoft.Azure.Extensions"
    assert SECRET not in json.dumps(backup) and SECRET not in failed.stdout
    # Results never carry the salted fingerprint (the file does): masked, like the fingerprint tag in results.
    assert backup["protected_settings"]["fingerprint"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    saved = json.loads(backups(tmp_path)[0].read_text())["protected_settings"]["fingerprint"]
    assert saved.startswith("v2$") and saved not in failed.stdout
    for path in backups(tmp_path):
        path.unlink()  # the next job runs in a fresh container
    restore = playbook({"name": "restore", "azure_vm.extensions.vm_extension": {
        "resource_group": RG, "vm_name": "vm-web-02", "name": "customScript", "definition_from_backup": backup,
        "protected_settings": {"commandToExecute": "echo " + SECRET}, "backup_dir": str(tmp_path / "backups")}})
    first = run_playbook(restore, expect_rc=0)
    assert first.task("restore")["changed"] is True and first.task("restore")["rerun"]["outcome"] == "restored"
    assert any("fingerprint was masked" in warning for warning in first.task("restore").get("warnings", []))
    assert vm_extension_now(run_playbook, "vm-web-02")["settings"] == {"commandToExecute": "echo restore-me"}
    writes = len(emulator.writes())
    second = run_playbook(restore, expect_rc=0)
    assert second.task("restore")["changed"] is False and len(emulator.writes()) == writes


# ---- issue 25: a force_update_tag rerun keeps the protected settings Azure holds --------------------------------
def test_force_update_tag_rerun_runs_the_handler_with_its_stored_secret(run_playbook, emulator, tmp_path):
    """Azure keeps an extension's stored protected settings when a PUT leaves them out (tests/data/reference/
    issue-25.md): the rerun sends none, and the handler runs again with the secret it had. The emulator's handler-runs
    log shows which protected settings each run had, as a keyed digest, never the value."""
    secret = {"commandToExecute": "echo " + SECRET}
    install_vm(run_playbook, "vm-web-02", protected_settings=secret)
    runs = [r for r in emulator.handler_runs() if r["target"] == "vm-web-02" and r["extension"] == "customScript"]
    assert len(runs) == 1 and runs[0]["protected_settings"] == emulator.fingerprint(secret)
    start = len(emulator.writes())
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="vm-web-02",
                                             rerun_extension_method="force_update_tag")), expect_rc=0)
    assert "outcome=succeeded" in summary_of(run)
    puts = [w for w in emulator.writes()[start:] if w["method"] in ("PUT", "PATCH")]
    assert len(puts) == 1 and "protectedSettings" not in puts[0]["body"]["properties"]  # nothing secret was sent
    runs = [r for r in emulator.handler_runs() if r["target"] == "vm-web-02" and r["extension"] == "customScript"]
    assert len(runs) == 2 and runs[-1]["kind"] == "Updating"
    assert runs[-1]["protected_settings"] == emulator.fingerprint(secret) != emulator.fingerprint(None)
    assert SECRET not in json.dumps(emulator.handler_runs()) + run.stdout


def test_scale_set_force_update_tag_rerun_keeps_the_secret_on_every_instance(run_playbook, emulator, tmp_path):
    secret = {"commandToExecute": "echo " + SECRET}
    install_vmss(run_playbook, protected_settings=secret)
    start = len(emulator.handler_runs())
    run = run_playbook(role_play(**vmss_vars(tmp_path, rerun_extension_method="force_update_tag")), expect_rc=0)
    assert "outcome=succeeded" in summary_of(run)
    reran = [r for r in emulator.handler_runs()[start:] if r["extension"] == "customScript"]
    assert sorted(r["target"] for r in reran) == ["vmss-manual/%d" % i for i in range(5)]
    assert {r["protected_settings"] for r in reran} == {emulator.fingerprint(secret)}
