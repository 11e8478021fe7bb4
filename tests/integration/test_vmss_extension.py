"""vmss_extension and vmss_extension_info with the real ansible-playbook against the emulator."""
import json
import subprocess

from harness import VENV_BIN, playbook
from emulator_clients import compute

RG = "rg-demo"
CS = dict(publisher="Microsoft.Azure.Extensions", type="CustomScript", type_handler_version="2.1")
NO_WRITE = ("PUT", "PATCH", "POST", "DELETE")


def ext_task(title="apply", vmss="vmss-manual", ext="customScript", **options):
    args = dict(resource_group=RG, vmss_name=vmss, name=ext)
    if options.get("state") != "absent":
        args.update(CS)
    args.update(options)
    return {"name": title, "azure_vm.extensions.vmss_extension": args, "register": "out"}


def info_task(title="info", vmss="vmss-manual", **options):
    args = dict(resource_group=RG, vmss_name=vmss)
    args.update(options)
    return {"name": title, "azure_vm.extensions.vmss_extension_info": args, "register": "info"}


def scale_set_writes(emulator, vmss="vmss-manual"):
    return [r for r in emulator.writes() if "/virtualMachineScaleSets/%s/" % vmss in r["path"]]


def manual_upgrades(emulator, vmss="vmss-manual"):
    return [r for r in scale_set_writes(emulator, vmss) if r["path"].endswith("/manualupgrade")]


def writes_since(emulator, count):
    return [r for r in emulator.arm_requests()[count:] if r["method"] in NO_WRITE]


def model_extensions(emulator, vmss):
    for ss in emulator.state()["subscriptions"][0]["scale_sets"]:
        if ss["name"] == vmss:
            return [e["name"] for e in ss["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]]
    raise KeyError(vmss)


def test_manual_rollout_in_batches_then_idempotent(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    settings = {"commandToExecute": "echo one"}
    run = run_playbook(playbook(ext_task(settings=settings), ext_task("again", settings=settings),
                                info_task(name="customScript")), expect_rc=0)
    result = run.task("apply")
    assert result["changed"] is True and result["changes"] == ["state"]
    rollout = result["rollout"]
    assert rollout["policy"] == "Manual" and rollout["instances_total"] == 5
    assert rollout["batches"] == [["0"], ["1"], ["2"], ["3"], ["4"]]
    assert rollout["succeeded"] == ["0", "1", "2", "3", "4"] and rollout["failed"] == [] and not rollout["stopped"]
    assert {i["state"] for i in result["instances"]} == {"succeeded"}
    assert all(i["latest_model_applied"] for i in result["instances"])
    assert result["extension"]["provisioning_state"] == "Succeeded"
    # 20% of 5 instances: every manualupgrade carries exactly one instance id, never more.
    upgrades = manual_upgrades(emulator)
    assert [len(r["body"]["instanceIds"]) for r in upgrades] == [1, 1, 1, 1, 1]
    # The write went to the extension child resource, never to the scale set model itself.
    puts = [r for r in scale_set_writes(emulator) if r["method"] in ("PUT", "PATCH")]
    assert [r["path"].rsplit("/", 2)[-2:] for r in puts] == [["extensions", "customScript"]]
    assert not [r for r in emulator.writes() if r["path"].endswith("/virtualMachineScaleSets/vmss-manual")]
    # The second task sent nothing: the only writes are the first task's PUT and its five upgrades.
    assert run.task("again")["changed"] is False
    assert len(emulator.writes()) == 6

    info = run.task("info")
    (ext,) = info["extensions"]
    assert info["scale_set"]["upgrade_policy"] == "Manual" and info["scale_set"]["capacity"] == 5
    assert ext["instances"]["counts"] == {"succeeded": 5}
    assert ext["instances"]["failed"] == [] and ext["instances"]["not_latest_model"] == []


def test_failing_instance_stops_the_rollout(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    emulator.faults([{"extension": {"vm": "vmss-manual/2", "name": "customScript", "outcome": "failed",
                                    "message": "Enable failed: disk full on instance two"}}])
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "./setup.sh"})))
    assert run.rc != 0
    result = run.task("apply")
    assert result["failed"] is True and result["changed"] is True
    assert "disk full on instance two" in result["msg"] and "2: " in result["msg"]
    assert "stopped" in result["msg"]
    rollout = result["rollout"]
    assert rollout["stopped"] is True
    assert [item["instance_id"] for item in rollout["failed"]] == ["2"]
    assert "disk full on instance two" in rollout["failed"][0]["message"]
    assert rollout["succeeded"] == ["0", "1"] and rollout["pending"] == ["3", "4"]
    # No batch after the failing one was sent.
    assert [r["body"]["instanceIds"] for r in manual_upgrades(emulator)] == [["0"], ["1"], ["2"]]

    info = run_playbook(playbook(info_task()), expect_rc=0).task("info")
    (ext,) = info["extensions"]
    assert ext["instances"]["counts"] == {"succeeded": 2, "failed": 1, "absent": 2}
    assert ext["instances"]["failed"][0]["instance_id"] == "2"
    assert sorted(ext["instances"]["not_latest_model"]) == ["3", "4"]


def test_max_unhealthy_percent_lets_the_rollout_continue_then_fails(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    emulator.faults([{"extension": {"vm": "vmss-manual/3", "name": "customScript", "outcome": "failed",
                                    "message": "Enable failed: instance three"}}])
    run = run_playbook(playbook(ext_task(settings={"commandToExecute": "x"}, max_unhealthy_percent=50,
                                         batch_percent=40)))
    result = run.task("apply")
    assert result["failed"] is True and "instance three" in result["msg"]
    assert result["rollout"]["batches"] == [["0", "1"], ["2", "3"], ["4"]]
    assert result["rollout"]["stopped"] is False and result["rollout"]["succeeded"] == ["0", "1", "2", "4"]


def test_upgrade_instances_canary_then_all_then_none(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    run = run_playbook(playbook(
        ext_task("canary", settings={"a": 1}, upgrade_instances=["4", "1"]),
        # Same definition, the canary's instances again: they run the latest model, so nothing is sent.
        ext_task("quiet", settings={"a": 1}, upgrade_instances=["1", "4"]),
        # Same definition, upgrade_instances omitted (= all): the rest of the fleet follows the canary.
        ext_task("rest", settings={"a": 1}),
        ext_task("model only", settings={"a": 2}, upgrade_instances=[]),
        # upgrade_instances: [] leaves lagging instances alone.
        ext_task("still none", settings={"a": 2}, upgrade_instances=[])), expect_rc=0)
    canary = run.task("canary")
    assert canary["rollout"]["batches"] == [["1"], ["4"]]
    states = {i["instance_id"]: i["state"] for i in canary["instances"]}
    assert states == {"0": "absent", "1": "succeeded", "2": "absent", "3": "absent", "4": "succeeded"}
    quiet = run.task("quiet")
    assert quiet["changed"] is False and quiet["rollout"]["batches"] == []
    rest = run.task("rest")
    assert rest["changed"] is True and rest["changes"] == ["instances"]
    assert rest["rollout"]["batches"] == [["0"], ["2"], ["3"]]
    assert {i["state"] for i in rest["instances"]} == {"succeeded"}
    assert run.task("model only")["rollout"]["batches"] == []
    assert run.task("still none")["changed"] is False
    assert [r["method"] for r in scale_set_writes(emulator) if "/extensions/" in r["path"]] == ["PUT", "PUT"]
    assert len(manual_upgrades(emulator)) == 5


def test_automatic_policy_waits_for_latest_model(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    task = ext_task(vmss="vmss-auto", settings={"commandToExecute": "echo auto"})
    run = run_playbook(playbook(task, dict(task, name="again")), expect_rc=0)
    result = run.task("apply")
    assert result["changed"] is True
    assert result["rollout"]["policy"] == "Automatic" and result["rollout"]["batches"] == []
    assert result["rollout"]["succeeded"] == ["0", "1", "2"]
    assert all(i["latest_model_applied"] and i["state"] == "succeeded" for i in result["instances"])
    assert manual_upgrades(emulator, "vmss-auto") == []
    assert run.task("again")["changed"] is False
    assert len(emulator.writes()) == 1


def test_automatic_policy_reports_failed_instance(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    emulator.faults([{"extension": {"vm": "vmss-auto/1", "name": "customScript", "outcome": "failed",
                                    "message": "Enable failed: auto one"}}])
    run = run_playbook(playbook(ext_task(vmss="vmss-auto", settings={"commandToExecute": "x"})))
    result = run.task("apply")
    assert result["failed"] is True and "auto one" in result["msg"]
    assert [item["instance_id"] for item in result["rollout"]["failed"]] == ["1"]


def test_rolling_policy_with_extension_rolling_upgrade(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    run = run_playbook(playbook(
        ext_task(vmss="vmss-rolling", settings={"commandToExecute": "echo roll"}, rolling_upgrade=True),
        # Without rolling_upgrade, no extension rolling upgrade is started.
        ext_task("plain", vmss="vmss-rolling", settings={"commandToExecute": "echo two"})), expect_rc=0)
    result = run.task("apply")
    assert result["rollout"]["policy"] == "Rolling"
    assert result["rollout"]["succeeded"] == ["0", "1", "2"]
    assert all(i["latest_model_applied"] and i["state"] == "succeeded" for i in result["instances"])
    assert run.task("plain")["changed"] is True
    assert {i["state"] for i in run.task("plain")["instances"]} == {"succeeded"}
    rolling = [r for r in scale_set_writes(emulator, "vmss-rolling") if r["path"].endswith("/extensionRollingUpgrade")]
    assert len(rolling) == 1


def test_other_extension_added_between_runs_survives(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    run_playbook(playbook(ext_task(vmss="vmss-auto", settings={"v": 1})), expect_rc=0)
    # Someone else adds an extension to the scale set's model, straight through the SDK.
    compute(emulator).virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-auto", "healthProbe", {
        "properties": {"publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux",
                       "typeHandlerVersion": "1.0", "settings": {"protocol": "tcp", "port": 22}}}).result()
    run = run_playbook(playbook(ext_task(vmss="vmss-auto", settings={"v": 2},
                                         provision_after_extensions=["healthProbe"])), expect_rc=0)
    assert sorted(run.task("apply")["changes"]) == ["provision_after_extensions", "settings"]
    put = [r for r in scale_set_writes(emulator, "vmss-auto") if r["method"] == "PUT"][-1]
    assert put["body"]["properties"]["provisionAfterExtensions"] == ["healthProbe"]
    assert sorted(model_extensions(emulator, "vmss-auto")) == ["customScript", "healthProbe"]
    info = run_playbook(playbook(info_task(vmss="vmss-auto", query="extensions[].name")), expect_rc=0).task("info")
    assert sorted(info["query_result"]) == ["customScript", "healthProbe"]


def test_absent_twice_rolls_the_removal_out(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    run = run_playbook(playbook(ext_task("create", settings={"x": 1}), ext_task(state="absent"),
                                ext_task("absent again", state="absent")), expect_rc=0)
    first = run.task("apply")
    assert first["changed"] is True and first["extension"] == {}
    assert {i["state"] for i in first["instances"]} == {"absent"}
    assert first["rollout"]["succeeded"] == ["0", "1", "2", "3", "4"]
    second = run.task("absent again")
    assert second["changed"] is False and second["extension"] == {}
    # create: PUT + 5 upgrades; absent: DELETE + 5 upgrades; absent again: nothing.
    assert [r["method"] for r in scale_set_writes(emulator) if "/extensions/" in r["path"]] == ["PUT", "DELETE"]
    assert len(manual_upgrades(emulator)) == 10 and len(emulator.writes()) == 12
    assert model_extensions(emulator, "vmss-manual") == []


def test_check_mode_diff_and_secrets_never_leak(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    secret = "vmss-s3cr3t-token-42"
    task = ext_task(settings={"fileUris": []}, protected_settings={"commandToExecute": "run " + secret})
    check = run_playbook(playbook(task), check=True, diff=True, expect_rc=0)
    planned = check.task("apply")
    assert planned["changed"] is True and emulator.writes() == []
    assert planned["diff"]["after"]["protected_settings"] == {"commandToExecute": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"}
    assert planned["rollout"]["batches"] == [["0"], ["1"], ["2"], ["3"], ["4"]]
    args = task["azure_vm.extensions.vmss_extension"]
    real = run_playbook(playbook(task, dict(task, name="again"),
                                 {"name": "rerun", "azure_vm.extensions.vmss_extension": dict(args, rerun=True)}),
                        verbosity=4, diff=True, expect_rc=0)
    # apply and rerun changed, again did not.
    assert "changed=2" in real.stdout
    put = [r for r in scale_set_writes(emulator) if r["method"] == "PUT"]
    assert len(put) == 2 and put[-1]["body"]["properties"]["protectedSettings"] == {"commandToExecute": "***"}
    assert put[-1]["body"]["properties"]["forceUpdateTag"]
    for text in (check.stdout, check.stderr, real.stdout, real.stderr, json.dumps(emulator.requests()),
                 json.dumps(emulator.state())):
        assert secret not in text


def test_wait_false_submits_one_unbatched_upgrade(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.3)
    run = run_playbook(playbook(ext_task(settings={"w": 1}, wait=False)), expect_rc=0)
    result = run.task("apply")
    assert result["changed"] is True and result["rollout"]["batches"] == [["0", "1", "2", "3", "4"]]
    assert [r["body"]["instanceIds"] for r in manual_upgrades(emulator)] == [["0", "1", "2", "3", "4"]]


def test_bad_input_fails_before_any_request(run_playbook, emulator):
    tasks = [ext_task("unknown instance", settings={}, upgrade_instances=["7"]),
             ext_task("bad percent", settings={}, batch_percent=0),
             ext_task("missing scale set", vmss="vmss-nope", settings={})]
    for task in tasks:
        task["ignore_errors"] = True
    run = run_playbook(playbook(*tasks))
    assert "instance id(s) 7 not in scale set vmss-manual" in run.task("unknown instance")["msg"]
    assert "batch_percent must be between 1 and 100" in run.task("bad percent")["msg"]
    assert "'vmss-nope' not found" in run.task("missing scale set")["msg"]
    assert emulator.writes() == []


def test_ansible_doc_renders_both_modules(ansible_env):
    for module in ("vmss_extension", "vmss_extension_info"):
        proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "azure_vm.extensions." + module], env=ansible_env,
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        assert "resource_group" in proc.stdout and "vmss_name" in proc.stdout
        assert "WARNING" not in proc.stderr, proc.stderr


def scale_set_tags(emulator, vmss):
    for ss in emulator.state()["subscriptions"][0]["scale_sets"]:
        if ss["name"] == vmss:
            return ss.get("tags") or {}
    raise KeyError(vmss)


def test_protected_settings_change_alone_is_detected_through_the_scale_set_tag(run_playbook, emulator):
    emulator.settings(handler_duration_s=0.2)
    tag = "azure_vm.extensions.protected_settings.customScript"

    def task(title, secret, **options):
        return ext_task(title, vmss="vmss-auto", settings={"fileUris": []},
                        protected_settings={"commandToExecute": "run " + secret}, **options)

    run = run_playbook(playbook(task("first", "vmss-secret-one"), task("same", "vmss-secret-one")), expect_rc=0)
    assert run.task("first")["changed"] is True and run.task("same")["changed"] is False
    stored = scale_set_tags(emulator, "vmss-auto")[tag]
    assert stored.startswith("v2$pbkdf2-sha256$") and "vmss-secret-one" not in stored
    # The tag went through the Tags API (Merge), never a write of the scale set's model.
    tag_writes = [r for r in scale_set_writes(emulator, "vmss-auto") if r["path"].endswith("/tags/default")]
    assert [(r["method"], r["body"]["operation"]) for r in tag_writes] == [("PATCH", "Merge")]
    # Someone else's tag on the scale set survives our writes.
    from emulator_clients import resources

    resources(emulator).tags.begin_update_at_scope(
        tag_writes[0]["path"].split("/providers/Microsoft.Resources")[0],
        {"operation": "Merge", "properties": {"tags": {"owner": "ops"}}}).result()
    count = len(emulator.arm_requests())
    rotated = run_playbook(playbook(task("rotate", "vmss-secret-two")), verbosity=4, expect_rc=0)
    assert "changed=1" in rotated.stdout
    assert [r["method"] for r in writes_since(emulator, count) if "/extensions/" in r["path"]] == ["PUT"]
    assert scale_set_tags(emulator, "vmss-auto")["owner"] == "ops"
    assert scale_set_tags(emulator, "vmss-auto")[tag] != stored
    assert "vmss-secret-two" not in rotated.stdout + rotated.stderr + json.dumps(emulator.requests())
    # Removing the extension removes its fingerprint, and only that tag.
    gone = run_playbook(playbook(ext_task("absent", vmss="vmss-auto", state="absent")), expect_rc=0)
    assert gone.task("absent")["changed"] is True
    assert scale_set_tags(emulator, "vmss-auto") == {"owner": "ops"}
