"""The rerun_extension role with the real ansible-playbook against the emulator."""
import json
import stat

import pytest

from harness import REPO_ROOT, playbook

RG = "rg-demo"
SECRET = "tok-R3run-Sup3rSecret-9f1c"
FINGERPRINT_TAG = "azure_vm.extensions.protected_settings"
PLAYBOOK = REPO_ROOT / "playbooks" / "rerun_extension.yml"


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


def ext_requests(emulator, path_part):
    """(method, status, request) of the ARM requests that touch the VM or scale set (operation polls excluded)."""
    return [r for r in emulator.arm_requests() if path_part in r["path"]]


def methods(requests):
    return [r["method"] for r in requests]


def backups(tmp_path):
    folder = tmp_path / "backups"
    return sorted(folder.glob("*.json")) if folder.exists() else []


def summary_of(run, host="localhost"):
    return run.task("Summary", host)["msg"]


def test_delete_reapply_reads_deletes_then_puts_the_same_definition(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "storageAccountKey": SECRET})), expect_rc=0)
    requests = ext_requests(emulator, "/virtualMachines/vm-web-01")
    sequence = methods(requests)
    assert "DELETE" in sequence and "PUT" in sequence
    first_delete, first_put = sequence.index("DELETE"), sequence.index("PUT")
    assert sequence[0] == "GET" and first_delete < first_put
    assert sequence.count("DELETE") == 1 and sequence.count("PUT") == 1
    assert requests[first_delete]["path"].endswith("/extensions/customScript")
    put = requests[first_put]["body"]
    assert put["properties"]["publisher"] == "Microsoft.Azure.Extensions"
    assert put["properties"]["type"] == "CustomScript"
    assert put["properties"]["typeHandlerVersion"] == "2.1"
    assert put["properties"]["settings"] == {"commandToExecute": "echo hello"}
    assert put["properties"]["protectedSettings"] == {"storageAccountKey": "***"}
    assert put["tags"][FINGERPRINT_TAG].startswith("pbkdf2-sha256$")

    result = run.task("Record the outcome")["ansible_facts"]["rerun_extension_result"]
    assert result["outcome"] == "succeeded" and result["method"] == "delete_reapply"
    assert "Enable succeeded" in result["handler_message"]
    line = summary_of(run)
    for part in ("host=localhost", "vm=vm-web-01", "extension=customScript", "method=delete_reapply",
                 "outcome=succeeded", "backup=" + result["backup_file"]):
        assert part in line, line
    # The extension ends succeeded in Azure.
    final = run_playbook(playbook({"name": "info", "azure_vm.extensions.vm_extension_info": {
        "resource_group": RG, "vm_name": "vm-web-01", "name": "customScript"}}), expect_rc=0)
    ext = final.task("info")["extensions"][0]
    assert ext["provisioning_state"] == "Succeeded" and ext["instance_view"]["state"] == "succeeded"
    assert ext["settings"] == {"commandToExecute": "echo hello"}

    files = backups(tmp_path)
    assert [str(f) for f in files] == [result["backup_file"]]
    assert files[0].name.startswith("rg-demo_vm-web-01_customScript_")
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    saved = json.loads(files[0].read_text())
    assert saved["extension"]["settings"] == {"commandToExecute": "echo hello"}
    assert saved["extension"]["publisher"] == "Microsoft.Azure.Extensions"
    assert saved["target"] == {"kind": "virtual_machine", "resource_group": RG, "name": "vm-web-01"}
    assert SECRET not in files[0].read_text()


def test_without_protected_settings_fails_before_any_delete(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path)))
    assert run.rc != 0
    msg = run.task("Refuse to delete an extension whose protected settings would be lost")["msg"]
    assert "nothing was deleted" in msg
    assert "rerun_extension_protected_settings" in msg and "rerun_extension_no_protected_settings=true" in msg
    assert "commandToExecute" in msg  # what CustomScript typically keeps there
    assert emulator.writes() == []
    assert backups(tmp_path) == []


def test_opt_out_is_refused_when_the_fingerprint_tag_proves_protected_settings(run_playbook, emulator, tmp_path):
    run_playbook(playbook({"name": "install", "azure_vm.extensions.vm_extension": {
        "resource_group": RG, "vm_name": "vm-web-02", "name": "customScript",
        "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "type_handler_version": "2.1",
        "settings": {}, "protected_settings": {"commandToExecute": "echo " + SECRET}}}), expect_rc=0)
    writes_before = len(emulator.writes())
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="vm-web-02",
                                             rerun_extension_no_protected_settings=True)))
    assert run.rc != 0
    msg = run.task("Refuse to delete an extension whose protected settings would be lost")["msg"]
    assert FINGERPRINT_TAG in msg and "cannot be right" in msg
    assert len(emulator.writes()) == writes_before


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
    assert "outcome=succeeded" in summary_of(run)
    saved = json.loads(backups(tmp_path)[0].read_text())
    assert saved["extension"]["type_handler_version"] == "2.2"
    assert saved["reapplied_definition"]["type_handler_version"] == "2.1"


def test_handler_failure_after_reapply_fails_with_its_message_and_keeps_the_backup(
        run_playbook, emulator, tmp_path):
    emulator.faults([{"extension": {"vm": "vm-web-01", "name": "customScript", "outcome": "failed",
                                    "message": "Enable failed: script exited 3: disk full"}, "times": 1}])
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "commandToExecute": "./setup.sh --token " + SECRET})))
    assert run.rc != 0
    assert methods([r for r in ext_requests(emulator, "/virtualMachines/vm-web-01/extensions/customScript")
                    if r["method"] != "GET"]) == ["DELETE", "PUT"]
    msg = run.task("Fail with the handler's message and the backup file")["msg"]
    files = backups(tmp_path)
    assert len(files) == 1
    assert "disk full" in msg and str(files[0]) in msg
    assert "deleted and its reapply failed" in msg
    recorded = run.task("Record the failure")["ansible_facts"]["rerun_extension_result"]
    assert recorded["outcome"] == "failed" and recorded["backup_file"] == str(files[0])
    text = files[0].read_text()
    assert SECRET not in text and "setup.sh" not in text
    assert json.loads(text)["extension"]["settings"] == {"commandToExecute": "echo hello"}
    for blob in (run.stdout, run.stderr, json.dumps(emulator.requests()), json.dumps(emulator.state())):
        assert SECRET not in blob


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


def test_secret_never_appears_in_verbose_output_backup_or_emulator_log(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "commandToExecute": "curl -H 'Authorization: Bearer %s' https://example.test" % SECRET})),
        verbosity=4, expect_rc=0)
    assert "outcome=succeeded" in run.stdout
    assert "<localhost> EXEC" in run.stdout or "ESTABLISH" in run.stdout  # really verbose
    files = backups(tmp_path)
    assert len(files) == 1
    for blob in (run.stdout, run.stderr, files[0].read_text(), json.dumps(emulator.requests()),
                 json.dumps(emulator.state())):
        assert SECRET not in blob
    put = [r for r in emulator.writes() if r["method"] == "PUT"][0]
    assert put["body"]["properties"]["protectedSettings"] == {"commandToExecute": "***"}


def test_scale_set_delete_and_reapply_each_roll_out(run_playbook, emulator, tmp_path):
    run_playbook(playbook({"name": "install", "azure_vm.extensions.vmss_extension": {
        "resource_group": RG, "vmss_name": "vmss-manual", "name": "customScript",
        "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "type_handler_version": "2.1",
        "settings": {"commandToExecute": "echo scale"}, "batch_percent": 100}}), expect_rc=0)
    start = len(emulator.arm_requests())
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="",
                                             rerun_extension_vmss_name="vmss-manual",
                                             rerun_extension_protected_settings={"storageAccountKey": SECRET},
                                             rerun_extension_vmss_batch_percent=40)), expect_rc=0)
    new = [r for r in emulator.arm_requests()[start:] if "/virtualMachineScaleSets/vmss-manual" in r["path"]]
    writes = [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in new if r["method"] != "GET"]
    # delete, then its rollout in batches of 2; reapply (and store the protected-settings fingerprint in the
    # scale set's tags), then its rollout in batches of 2
    assert writes == [("DELETE", "customScript")] + [("POST", "manualupgrade")] * 3 + \
        [("PUT", "customScript"), ("PATCH", "default")] + [("POST", "manualupgrade")] * 3, writes
    assert new[0]["method"] == "GET"
    put = [r for r in new if r["method"] == "PUT"][0]["body"]
    assert put["properties"]["settings"] == {"commandToExecute": "echo scale"}
    assert put["properties"]["protectedSettings"] == {"storageAccountKey": "***"}
    result = run.task("Record the outcome")["ansible_facts"]["rerun_extension_result"]
    assert result["outcome"] == "succeeded"
    assert result["handler_message"].startswith("5/5 instances succeeded")
    assert "vmss=vmss-manual" in summary_of(run)
    saved = json.loads(backups(tmp_path)[0].read_text())
    assert saved["target"]["kind"] == "virtual_machine_scale_set"
    assert SECRET not in backups(tmp_path)[0].read_text()


def test_playbook_over_an_inventory_reports_one_line_per_host(run_playbook, emulator, tmp_path):
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


def test_missing_extension_and_failed_sibling_fail_before_any_write(run_playbook, emulator, tmp_path):
    missing = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_vm_name="vm-web-02",
                                                 rerun_extension_no_protected_settings=True)))
    assert missing.rc != 0
    assert "extension customScript not found on VM vm-web-02" in \
        missing.task("Fail when the extension does not exist")["msg"]
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
    msg = blocked.task("Refuse to delete when the reapply would fail (VM agent, failed extensions)")["msg"]
    assert "monitor" in msg and "Nothing was deleted" in msg
    assert len(emulator.writes()) == writes_before


def test_check_mode_sends_no_write(run_playbook, emulator, tmp_path):
    run = run_playbook(role_play(**role_vars(tmp_path, rerun_extension_protected_settings={
        "storageAccountKey": SECRET})), check=True, expect_rc=0)
    assert emulator.writes() == []
    assert "method=delete_reapply" in summary_of(run)
    assert SECRET not in run.stdout
