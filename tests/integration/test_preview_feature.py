"""preview_feature, preview_feature_info, resource_provider and the automatic-upgrade playbook, with the real
ansible-playbook against the emulator."""
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import REPO_ROOT, VENV_BIN, playbook

NS, AEU = "Microsoft.Compute", "AutomaticExtensionUpgradePreview"
FEATURE_PATH = "/providers/Microsoft.Features/providers/Microsoft.Compute/features/AutomaticExtensionUpgradePreview"
PLAYBOOK = REPO_ROOT / "playbooks" / "enable_automatic_extension_upgrade.yml"
INVENTORY = REPO_ROOT / "playbooks" / "inventory" / "automatic_extension_upgrade.yml"


def feature_task(title="feature", **options):
    args = dict(namespace=NS, name=AEU)
    args.update(options)
    return {"name": title, "azure_vm.extensions.preview_feature": args, "register": "out"}


def info_task(title="info", **options):
    return {"name": title, "azure_vm.extensions.preview_feature_info": options, "register": "info"}


def provider_task(title="provider", **options):
    args = dict(namespace=NS)
    args.update(options)
    return {"name": title, "azure_vm.extensions.resource_provider": args, "register": "out"}


def writes_paths(writes):
    return [(r["method"], r["path"]) for r in writes]


# ---- preview_feature ------------------------------------------------------------------------------------------
def test_register_waits_propagates_then_is_idempotent(run_playbook, emulator):
    # Held in Registering until the module has polled it once after its POST, whatever the machine's speed.
    emulator.settings(feature_registration_s=0.1, provider_registration_s=0.5, hold_registrations=True)
    release = threading.Thread(target=release_after_poll, args=(emulator,), daemon=True)
    release.start()
    first = run_playbook(playbook(feature_task()), diff=True, expect_rc=0)
    release.join(60)
    result = first.task("feature")
    assert result["changed"] is True
    assert result["state_before"] == "NotRegistered"
    assert result["state"] == "Registered"
    assert result["provider_state"] == "Registered"
    assert result["propagated"] is True
    assert result["diff"] == {"before": {"state": "NotRegistered"}, "after": {"state": "Registered"}}
    paths = writes_paths(emulator.writes())
    assert [p for p in paths if p[1].endswith(FEATURE_PATH + "/register")], paths
    assert ("POST", "/subscriptions/6f3a8c1e-0000-4000-8000-000000000001/providers/Microsoft.Compute/register") \
        in paths
    # The provider is re-registered only after the feature was seen Registered (it was Registering in between).
    log = emulator.arm_requests()
    feature_post = next(i for i, r in enumerate(log) if r["path"].endswith(FEATURE_PATH + "/register"))
    provider_post = next(i for i, r in enumerate(log) if r["path"].endswith("/providers/Microsoft.Compute/register"))
    polls = [r for r in log[feature_post + 1:provider_post] if r["method"] == "GET" and r["path"].endswith(FEATURE_PATH)]
    assert len(polls) >= 2, "expected to poll through Registering"
    assert all(method == "POST" and path.endswith("/register") for method, path in paths), paths
    assert len(paths) == 2

    before = len(emulator.writes())
    second = run_playbook(playbook(feature_task()), expect_rc=0)
    again = second.task("feature")
    assert again["changed"] is False
    assert again["state_before"] == again["state"] == "Registered"
    assert again["provider_state"] == "Registered"
    assert again["propagated"] is False
    assert emulator.writes()[before:] == []


def test_unregister_waits_through_unregistering(run_playbook, emulator):
    emulator.settings(feature_registration_s=1, provider_registration_s=0.5)
    run = run_playbook(playbook(feature_task(name="EncryptionAtHost", state="unregistered")), expect_rc=0)
    result = run.task("feature")
    assert result["changed"] is True
    assert (result["state_before"], result["state"]) == ("Registered", "Unregistered")
    assert result["propagated"] is True and result["provider_state"] == "Registered"
    paths = writes_paths(emulator.writes())
    assert [m for m, p in paths] == ["POST", "POST"]
    assert paths[0][1].endswith("/features/EncryptionAtHost/unregister")
    assert paths[1][1].endswith("/providers/Microsoft.Compute/register")

    before = len(emulator.writes())
    again = run_playbook(playbook(feature_task(name="EncryptionAtHost", state="unregistered")), expect_rc=0)
    assert again.task("feature")["changed"] is False
    assert emulator.writes()[before:] == []
    # A feature that was never registered is already unregistered.
    never = run_playbook(playbook(feature_task(state="unregistered")), expect_rc=0)
    assert never.task("feature")["changed"] is False
    assert never.task("feature")["state"] == "NotRegistered"
    assert emulator.writes()[before:] == []


def test_check_mode_sends_nothing(run_playbook, emulator):
    run = run_playbook(playbook(feature_task(), feature_task("off", name="EncryptionAtHost", state="unregistered")),
                       check=True, diff=True, expect_rc=0)
    result = run.task("feature")
    assert result["changed"] is True
    assert (result["state_before"], result["state"]) == ("NotRegistered", "Registered")
    assert result["propagated"] is True
    assert run.task("off")["changed"] is True
    assert run.task("off")["state"] == "Unregistered"
    assert emulator.writes() == []
    check = run_playbook(playbook(info_task(namespace=NS, name=AEU)), expect_rc=0)
    assert check.task("info")["features"][0]["state"] == "NotRegistered"


def test_unknown_feature_fails_clearly_before_any_post(run_playbook, emulator):
    run = run_playbook(playbook(feature_task(name="NoSuchPreview")))
    assert run.rc != 0
    result = run.task("feature")
    assert result["failed"] is True
    assert "Microsoft.Compute/NoSuchPreview" in result["msg"] and "FeatureNotFound" in result["msg"]
    assert result["error_code"] == "FeatureNotFound"
    assert emulator.writes() == []


@pytest.mark.parametrize("options, message", [
    (dict(namespace="Microsoft Compute"), "namespace must be a resource provider namespace"),
    (dict(name="Microsoft.Compute/AutomaticExtensionUpgradePreview"), "name must be the feature name alone"),
    (dict(timeout=0), "timeout must be a positive number"),
])
def test_bad_options_fail_before_azure_is_contacted(run_playbook, emulator, options, message):
    run = run_playbook(playbook(feature_task(**options)))
    assert run.rc != 0
    assert message in run.task("feature")["msg"]
    assert emulator.arm_requests() == []


def test_timeout_fails_with_last_state(run_playbook, emulator):
    emulator.settings(feature_registration_s=0, hold_registrations=True)  # never finishes while held
    run = run_playbook(playbook(feature_task(timeout=2)))
    result = run.task("feature")
    assert result["failed"] is True
    assert "timed out after 2s" in result["msg"] and "last state: Registering" in result["msg"]
    assert result["state"] == "Registering" and result["changed"] is True
    # Nothing was propagated; the feature registration request went out once.
    paths = writes_paths(emulator.writes())
    assert len(paths) == 1 and paths[0][1].endswith(FEATURE_PATH + "/register")


def test_no_wait_returns_registering_and_a_later_run_completes(run_playbook, emulator):
    # The registration is held in Registering (admin setting) instead of racing a timer: it is released only
    # once the second run has read the feature, whatever the speed of the machine.
    emulator.settings(feature_registration_s=0.1, hold_registrations=True)
    run = run_playbook(playbook(feature_task(wait=False)), expect_rc=0)
    result = run.task("feature")
    assert result["changed"] is True and result["state"] == "Registering" and result["propagated"] is False
    assert len(emulator.writes()) == 1
    reads_before = len(feature_reads(emulator))
    release = threading.Thread(target=release_after_read, args=(emulator, reads_before), daemon=True)
    release.start()
    # Still Registering: the next run waits for it (no second register POST) and then propagates.
    later = run_playbook(playbook(feature_task()), expect_rc=0).task("feature")
    release.join(60)
    assert later["state_before"] == "Registering" and later["state"] == "Registered"
    assert later["propagated"] is True
    paths = writes_paths(emulator.writes())
    assert len(paths) == 2 and paths[1][1].endswith("/providers/Microsoft.Compute/register")


def feature_reads(emulator):
    return [r for r in emulator.requests() if r["method"] == "GET" and r["path"].endswith(FEATURE_PATH)]


def release_after_poll(emulator, deadline_s=120):
    """Lift hold_registrations once the feature has been read after its register POST."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        log = [r for r in emulator.requests() if r["path"].endswith(FEATURE_PATH) or
               r["path"].endswith(FEATURE_PATH + "/register")]
        posts = [i for i, r in enumerate(log) if r["method"] == "POST"]
        if posts and any(r["method"] == "GET" for r in log[posts[0] + 1:]):
            break
        time.sleep(0.05)
    emulator.settings(hold_registrations=False)


def release_after_read(emulator, reads_before, deadline_s=120):
    """Lift hold_registrations as soon as the feature has been read once more (by the second run)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and len(feature_reads(emulator)) <= reads_before:
        time.sleep(0.05)
    emulator.settings(hold_registrations=False)


def test_propagate_false_sends_only_the_feature_post(run_playbook, emulator):
    emulator.settings(feature_registration_s=0.5)
    result = run_playbook(playbook(feature_task(propagate=False)), expect_rc=0).task("feature")
    assert result["changed"] is True and result["state"] == "Registered" and result["propagated"] is False
    assert len(emulator.writes()) == 1


# ---- preview_feature_info -------------------------------------------------------------------------------------
def test_info_one_namespace_all_and_query(run_playbook, emulator):
    run = run_playbook(playbook(
        info_task("one", namespace=NS, name=AEU),
        info_task("namespace", namespace=NS),
        info_task("all"),
        info_task("query", query="features[?state=='Registered'].name"),
        info_task("missing", namespace=NS, name="NoSuchPreview"),
    ), expect_rc=0)
    one = run.task("one")["features"]
    assert one == [{"id": "/subscriptions/6f3a8c1e-0000-4000-8000-000000000001" + FEATURE_PATH,
                    "namespace": NS, "name": AEU, "state": "NotRegistered"}]
    assert {f["name"] for f in run.task("namespace")["features"]} == {AEU, "EncryptionAtHost"}
    assert {(f["namespace"], f["name"]) for f in run.task("all")["features"]} == {
        (NS, AEU), (NS, "EncryptionAtHost"), ("Microsoft.Network", "AllowBastionPreview")}
    assert run.task("query")["query_result"] == ["EncryptionAtHost"]
    assert run.task("missing")["features"] == []
    assert emulator.writes() == []


def test_info_name_needs_namespace_and_bad_query_fails(run_playbook, emulator):
    run = run_playbook(playbook(info_task(name=AEU)))
    assert run.rc != 0 and "namespace" in run.task("info")["msg"]
    bad = run_playbook(playbook(info_task(query="features[?")))
    assert bad.rc != 0 and "invalid JMESPath" in bad.task("info")["msg"]


# ---- resource_provider ----------------------------------------------------------------------------------------
def test_provider_unregister_register_idempotent_and_check_mode(run_playbook, emulator):
    emulator.settings(provider_registration_s=0.5)
    net = dict(namespace="Microsoft.Network")
    off = run_playbook(playbook(provider_task(state="unregistered", **net)), diff=True, expect_rc=0).task("provider")
    assert off["changed"] is True and (off["state_before"], off["state"]) == ("Registered", "Unregistered")
    assert off["diff"]["after"] == {"state": "Unregistered"}
    assert writes_paths(emulator.writes())[-1][1].endswith("/providers/Microsoft.Network/unregister")

    before = len(emulator.writes())
    check = run_playbook(playbook(provider_task(**net)), check=True, expect_rc=0).task("provider")
    assert check["changed"] is True and check["state"] == "Registered"
    assert emulator.writes()[before:] == []

    on = run_playbook(playbook(provider_task(**net)), expect_rc=0).task("provider")
    assert on["changed"] is True and (on["state_before"], on["state"]) == ("Unregistered", "Registered")
    assert on["registration_policy"] == "RegistrationRequired"
    before = len(emulator.writes())
    again = run_playbook(playbook(provider_task(**net)), expect_rc=0).task("provider")
    assert again["changed"] is False and again["state"] == "Registered"
    assert emulator.writes()[before:] == []


def test_provider_reregister_and_unknown_namespace(run_playbook, emulator):
    result = run_playbook(playbook(provider_task(reregister=True)), expect_rc=0).task("provider")
    assert result["changed"] is True and result["state"] == "Registered"
    assert writes_paths(emulator.writes())[-1][1].endswith("/providers/Microsoft.Compute/register")
    before = len(emulator.writes())
    unknown = run_playbook(playbook(provider_task(namespace="Microsoft.NoSuchThing")))
    assert unknown.rc != 0
    msg = unknown.task("provider")["msg"]
    assert "Microsoft.NoSuchThing" in msg and "InvalidResourceNamespace" in msg
    assert emulator.writes()[before:] == []


# ---- the playbook ---------------------------------------------------------------------------------------------
def automatic_upgrade_flags(emulator):
    """(vm, extension) -> enableAutomaticUpgrade, from what the emulator now holds."""
    run_flags = {}
    for request in emulator.writes():
        if request["method"] == "PUT" and "/virtualMachines/" in request["path"]:
            parts = request["path"].split("/")
            run_flags[(parts[parts.index("virtualMachines") + 1], parts[-1])] = \
                request["body"]["properties"].get("enableAutomaticUpgrade")
    return run_flags


def test_playbook_end_to_end_then_idempotent(run_playbook, emulator):
    emulator.settings(feature_registration_s=1, provider_registration_s=0.5)
    first = run_playbook(str(PLAYBOOK), inventory=str(INVENTORY), expect_rc=0)
    feature = first.task("Register the automatic extension upgrade preview feature")
    assert feature["changed"] is True and feature["state"] == "Registered" and feature["propagated"] is True
    paths = writes_paths(emulator.writes())
    assert paths[0][1].endswith(FEATURE_PATH + "/register")
    assert paths[1][1].endswith("/providers/Microsoft.Compute/register")
    assert all(flag is True for flag in automatic_upgrade_flags(emulator).values())
    assert automatic_upgrade_flags(emulator)
    report = first.task("Report the extensions that now upgrade automatically")
    assert sorted(report["msg"]) == ["VM vm-web-01: AzureMonitorLinuxAgent", "VM vm-web-02: AzureMonitorLinuxAgent",
                                     "scale set vmss-auto: AzureMonitorLinuxAgent"]
    assert not first.task("Fail if a listed extension does not upgrade automatically").get("failed")
    vmss_puts = [r for r in emulator.writes() if r["method"] == "PUT" and "/virtualMachineScaleSets/" in r["path"]]
    assert [r["path"].rsplit("/", 3)[-3:] for r in vmss_puts] == [["vmss-auto", "extensions", "AzureMonitorLinuxAgent"]]
    assert vmss_puts[0]["body"]["properties"]["enableAutomaticUpgrade"] is True

    before = len(emulator.writes())
    second = run_playbook(str(PLAYBOOK), inventory=str(INVENTORY), expect_rc=0)
    assert emulator.writes()[before:] == []
    assert second.stats["localhost"]["changed"] == 0, second.stats


def test_playbook_is_ansible_lint_clean(ansible_env):
    env = dict(ansible_env)
    proc = subprocess.run([str(VENV_BIN / "ansible-lint"), "--offline", str(PLAYBOOK), str(INVENTORY)],
                          cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_modules_render_in_ansible_doc(ansible_env):
    for module in ("preview_feature", "preview_feature_info", "resource_provider"):
        proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "azure_vm.extensions." + module], env=ansible_env,
                              capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 0 and "RETURN VALUES" in proc.stdout and "[WARNING]" not in proc.stderr, \
            proc.stderr
    assert Path(PLAYBOOK).exists()
