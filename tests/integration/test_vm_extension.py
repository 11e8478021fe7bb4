"""vm_extension and vm_extension_info with the real ansible-playbook against the emulator."""
import json

from harness import playbook

RG = "rg-demo"
CS = dict(publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1")


def ext_task(title="apply", vm="vm-web-02", ext="customScript", **options):
    args = dict(resource_group=RG, vm_name=vm, name=ext)
    if options.get("state") != "absent":
        args.update(CS)
    args.update(options)
    return {"name": title, "azure_vm.extensions.vm_extension": args, "register": "out"}


def info_task(title="info", vm="vm-web-02", **options):
    args = dict(resource_group=RG, vm_name=vm)
    args.update(options)
    return {"name": title, "azure_vm.extensions.vm_extension_info": args, "register": "info"}


def extension_writes(emulator, vm="vm-web-02"):
    return [r for r in emulator.writes() if "/virtualMachines/%s/extensions" % vm in r["path"]]


def test_create_then_idempotent_then_settings_change(run_playbook, emulator):
    first = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo one"})), expect_rc=0)
    result = first.task("apply")
    assert result["changed"] is True and result["changes"] == ["state"]
    assert result["extension"]["provisioning_state"] == "Succeeded"
    assert result["instance_view"]["state"] == "succeeded"
    puts = extension_writes(emulator)
    assert [r["method"] for r in puts] == ["PUT"]

    before = len(emulator.requests())
    second = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo one"})), expect_rc=0)
    assert second.task("apply")["changed"] is False
    new = [r for r in emulator.requests()[before:] if r["path"].startswith("/subscriptions")]
    # No write, and one ARM read answers for the VM, its agent and the extension.
    assert [(r["method"], r["path"].rsplit("/", 1)[-1]) for r in new] == [("GET", "vm-web-02")], new

    third = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo two"})), expect_rc=0)
    assert third.task("apply")["changed"] is True
    assert third.task("apply")["changes"] == ["settings"]
    assert extension_writes(emulator)[-1]["body"]["properties"]["settings"] == {"commandToExecute": "echo two"}


def test_protected_settings_change_alone_is_applied_and_never_leaks(run_playbook, emulator):
    secret_one, secret_two = "s3cr3t-token-AAA", "s3cr3t-token-BBB"

    def task(secret):
        return ext_task(settings={"fileUris": []}, protected_settings={"commandToExecute": "run " + secret})

    run_playbook(playbook(task(secret_one)), expect_rc=0)
    again = run_playbook(playbook(task(secret_one)), expect_rc=0)
    assert again.task("apply")["changed"] is False
    writes_before = len(extension_writes(emulator))
    rotated = run_playbook(playbook(task(secret_two)), verbosity=4, diff=True, expect_rc=0)
    assert "changed=1" in rotated.stdout
    assert len(extension_writes(emulator)) == writes_before + 1
    for text in (rotated.stdout, rotated.stderr, json.dumps(emulator.requests()), json.dumps(emulator.state())):
        assert secret_one not in text and secret_two not in text
    # The fingerprint tag holds no recoverable form of the secret.
    tag = extension_writes(emulator)[-1]["body"]["tags"]["azure_vm.extensions.protected_settings"]
    assert tag.startswith("v2$pbkdf2-sha256$") and "s3cr3t" not in tag
    assert extension_writes(emulator)[-1]["body"]["properties"]["protectedSettings"] == {"commandToExecute": "***"}


def test_rerun_sends_a_new_tag_each_time(run_playbook, emulator):
    run_playbook(playbook(ext_task(settings={"commandToExecute": "date"})), expect_rc=0)
    tags = []
    for dummy in range(2):
        run = run_playbook(playbook(ext_task(settings={"commandToExecute": "date"}, rerun=True)), expect_rc=0)
        assert run.task("apply")["changed"] is True
        tags.append(extension_writes(emulator)[-1]["body"]["properties"]["forceUpdateTag"])
    assert tags[0] and tags[1] and tags[0] != tags[1]


def test_check_mode_sends_no_write_and_diff_masks_protected(run_playbook, emulator):
    run = run_playbook(playbook(ext_task(protected_settings={"password": "pw-check-mode-123"})), check=True,
                       diff=True, expect_rc=0)
    result = run.task("apply")
    assert result["changed"] is True
    assert emulator.writes() == []
    after = result["diff"]["after"]
    assert after["protected_settings"] == {"password": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}
    assert "pw-check-mode-123" not in run.stdout


def test_failing_handler_fails_the_task_with_its_message(run_playbook, emulator):
    emulator.faults([{"extension": {"vm": "vm-web-02", "name": "customScript", "outcome": "failed",
                                    "message": "script exited 3", "stdout": "partial output",
                                    "stderr": "disk full"}}])
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "./setup.sh"})))
    assert run.rc != 0
    result = run.task("apply")
    assert result["failed"] is True
    assert "disk full" in result["msg"] and "partial output" in result["msg"]
    assert result["instance_view"]["state"] == "failed"


def test_timeout_fails_at_the_timeout_with_last_status(run_playbook, emulator):
    emulator.faults([{"extension": {"vm": "vm-web-02", "name": "customScript", "outcome": "timeout"}}])
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "sleep 1d"}, timeout=4)))
    result = run.task("apply")
    assert result["failed"] is True
    assert "timed out after 4s" in result["msg"]
    assert "last status" in result["msg"]


def test_conflict_is_retried_then_succeeds(run_playbook, emulator):
    emulator.faults([{"match": {"method": "PUT", "path": "/virtualMachines/vm-web-02/extensions/customScript$"},
                      "respond": {"status": 409, "body": {"error": {
                          "code": "Conflict", "message": "Operation 'PUT' is not allowed on VM 'vm-web-02' since "
                                                         "another operation is in progress."}}},
                      "times": 2}])
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "echo retry"})), expect_rc=0)
    assert run.task("apply")["changed"] is True
    statuses = [r["status"] for r in extension_writes(emulator) if r["method"] == "PUT"]
    assert statuses == [409, 409, 201]


def test_failed_sibling_blocks_install_before_any_write(run_playbook, emulator):
    run = run_playbook(playbook(ext_task(vm="vm-failed-ext", ext="monitor", settings={})))
    result = run.task("apply")
    assert result["failed"] is True
    assert "installApp" in result["msg"] and "ech: not found" in result["msg"]
    assert emulator.writes() == []


def test_agent_not_ready_fails_and_points_at_the_waagent_role(run_playbook, emulator):
    run = run_playbook(playbook(ext_task(vm="vm-agent-down", settings={})))
    result = run.task("apply")
    assert result["failed"] is True
    assert "not Ready" in result["msg"] and "azure_vm.extensions.waagent" in result["msg"]
    assert emulator.writes() == []


def test_missing_vm_and_bad_input_give_clear_errors_before_any_write(run_playbook, emulator):
    missing = run_playbook(playbook(ext_task(vm="no-such-vm", settings={})))
    assert "virtual machine 'no-such-vm' not found in resource group 'rg-demo'" in missing.task("apply")["msg"]
    requests_before = len(emulator.arm_requests())
    bad = run_playbook(playbook(ext_task(type_handler_version="two")))
    assert "type_handler_version must be major.minor such as '2.1'" in bad.task("apply")["msg"]
    bad_state = run_playbook(playbook(ext_task(state="gone")))
    assert "state" in bad_state.task("apply")["msg"] and "present, absent" in bad_state.task("apply")["msg"]
    assert len(emulator.arm_requests()) == requests_before  # refused before talking to Azure
    assert emulator.writes() == []


def test_publisher_change_is_refused_with_guidance(run_playbook, emulator):
    run = run_playbook(playbook(ext_task(vm="vm-web-01", ext="customScript", publisher="Microsoft.OSTCExtensions",
                                         type="CustomScriptForLinux")))
    msg = run.task("apply")["msg"]
    assert "cannot change in place" in msg and "rerun_extension" in msg
    assert emulator.writes() == []


def test_casing_normalized_by_azure_is_not_a_change(run_playbook, emulator):
    run = run_playbook(playbook(ext_task(vm="vm-web-01", ext="customScript", publisher="microsoft.azure.extensions",
                                         type="customscript", settings={"commandToExecute": "echo hello"})),
                       expect_rc=0)
    assert run.task("apply")["changed"] is False
    assert emulator.writes() == []


def test_latest_version_resolves_numerically(run_playbook, emulator):
    # The catalogue has 2.0.2, 2.0.3, 2.1.6, 2.1.10: the newest is 2.1.10 (string order would say 2.1.6), sent as
    # 2.1 (Azure takes major.minor only), and the handler runs 2.1.10.
    run = run_playbook(playbook(ext_task(type_handler_version="latest", auto_upgrade_minor_version=False,
                                         settings={})), expect_rc=0)
    assert run.task("apply")["extension"]["type_handler_version"] == "2.1"
    assert run.task("apply")["instance_view"]["type_handler_version"] == "2.1.10"
    put = [r for r in emulator.writes() if r["method"] == "PUT"][-1]
    assert put["body"]["properties"]["typeHandlerVersion"] == "2.1"


def test_delete_twice(run_playbook, emulator):
    first = run_playbook(playbook(ext_task(vm="vm-web-01", state="absent")), expect_rc=0)
    assert first.task("apply")["changed"] is True
    assert [r["method"] for r in extension_writes(emulator, "vm-web-01")] == ["DELETE"]
    second = run_playbook(playbook(ext_task(vm="vm-web-01", state="absent")), expect_rc=0)
    assert second.task("apply")["changed"] is False
    assert len(extension_writes(emulator, "vm-web-01")) == 1


def test_submit_without_waiting_then_wait_with_info(run_playbook, emulator):
    emulator.settings(handler_duration_s=2.0)
    run = run_playbook(playbook(
        ext_task(settings={"commandToExecute": "echo later"}, wait=False),
        info_task(name="customScript", wait=True),
    ), expect_rc=0)
    submitted = run.task("apply")
    assert submitted["changed"] is True
    assert submitted["extension"]["provisioning_state"] in ("Creating", "Updating")
    waited = run.task("info")
    assert waited["extensions"][0]["instance_view"]["state"] == "succeeded"
    assert waited["extensions"][0]["provisioning_state"] == "Succeeded"


# The incumbent's own integration scenarios (azure.azcollection tests/integration/targets/azure_rm_virtualmachineextension)
def test_incumbent_scenarios(run_playbook, emulator, tmp_path):
    public = tmp_path / "public.json"
    public.write_text(json.dumps({"ladCfg": {"diagnosticMonitorConfiguration": {"eventVolume": "Medium"}},
                                  "StorageAccount": "diagstore"}))
    protected = tmp_path / "protected.json"
    protected.write_text(json.dumps({"storageAccountName": "diagstore", "storageAccountSasToken": "sv=2026&sig=SAS-SECRET"}))
    create = ext_task("create", settings={"commandToExecute": "hostname"})
    lad = {"name": "lad", "register": "lad", "azure_vm.extensions.vm_extension": dict(
        resource_group=RG, vm_name="vm-web-02", name="LinuxDiagnostic", publisher="Microsoft.Azure.Diagnostics",
        type="LinuxDiagnostic", type_handler_version="4.0",
        settings="{{ lookup('ansible.builtin.file', '%s') | from_json }}" % public,
        protected_settings="{{ lookup('ansible.builtin.file', '%s') | from_json }}" % protected)}
    run = run_playbook(playbook(
        create,
        info_task("by_name", name="customScript"),
        ext_task("repeat", settings={"commandToExecute": "hostname"}),
        ext_task("forced", settings={"commandToExecute": "hostname"}, rerun=True),
        lad,
        info_task("list"),
        ext_task("delete", state="absent"),
        ext_task("delete_again", state="absent"),
    ), expect_rc=0)
    assert run.task("create")["changed"] is True
    by_name = run.task("by_name")["extensions"]
    assert [e["name"] for e in by_name] == ["customScript"]
    assert by_name[0]["settings"] == {"commandToExecute": "hostname"}
    assert run.task("repeat")["changed"] is False
    assert run.task("forced")["changed"] is True
    assert run.task("lad")["changed"] is True
    listed = sorted(e["name"] for e in run.task("list")["extensions"])
    assert listed == ["LinuxDiagnostic", "customScript"]
    assert run.task("delete")["changed"] is True
    assert run.task("delete_again")["changed"] is False
    assert "SAS-SECRET" not in run.stdout and "SAS-SECRET" not in json.dumps(emulator.requests())


def test_info_query_and_agent(run_playbook, emulator):
    run = run_playbook(playbook(info_task(vm="vm-failed-ext",
                                          query="extensions[?instance_view.state=='failed'].name")), expect_rc=0)
    info = run.task("info")
    assert info["query_result"] == ["installApp"]
    assert info["vm_agent"]["ready"] is True and info["vm_agent"]["version"]
    down = run_playbook(playbook(info_task(vm="vm-agent-down")), expect_rc=0)
    assert down.task("info")["vm_agent"]["ready"] is False
    bad = run_playbook(playbook(info_task(query="extensions[?")))
    assert "query: invalid JMESPath expression" in bad.task("info")["msg"]
