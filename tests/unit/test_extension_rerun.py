"""Unit tests of module_utils/extension_rerun.py: the protected-settings rule, the definition read, backups."""
import json
import os
import stat

import pytest
import yaml

from ansible_collections.azure_vm.extensions.plugins.module_utils.errors import AzureOperationError
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import EXTENSION_OPTION_RULES
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_model import fingerprint
from ansible_collections.azure_vm.extensions.plugins.module_utils import extension_rerun as rr

SECRETS = {"commandToExecute": "echo s3cret"}
KV_REST = {"secretUrl": "https://kv.vault.azure.net/secrets/a/1", "sourceVault": {"id": "/subscriptions/x/kv"}}


@pytest.mark.parametrize("definition, supplied, stored, asserted, expected", [
    ({}, SECRETS, None, False, ("supplied", None)),
    ({}, SECRETS, "stored-matches", False, ("supplied", None)),
    ({}, {"commandToExecute": "other"}, "stored-matches", False, ("supplied", "mismatch")),
    ({"protected_settings_from_key_vault": {"secret_url": "u", "source_vault_id": "v"}}, None, None, False,
     ("key_vault", None)),
    ({}, None, "stored-empty", False, ("none_proven", None)),
    ({}, None, "stored-matches", True, ("fingerprint", "asserted")),
    ({}, None, "stored-matches", False, ("fingerprint", "missing")),
    ({}, None, None, True, ("none_asserted", None)),
    ({}, None, None, False, ("unknown", "unknown")),
])
def test_protected_settings_rule(definition, supplied, stored, asserted, expected):
    tags = {"stored-matches": fingerprint(SECRETS), "stored-empty": fingerprint({}), None: None}
    assert rr.protected_settings_evidence(definition, supplied, tags[stored], asserted) == expected


def test_definition_of_keeps_every_property_with_its_type_and_drops_the_fingerprint():
    ext = {"id": "x", "name": "cs", "location": "westeurope",
           "tags": {"owner": "a", "azure_vm.extensions.protected_settings": "v2$..."},
           "properties": {"publisher": "P", "type": "T", "typeHandlerVersion": "2.0", "settings": {"n": 3},
                          "autoUpgradeMinorVersion": False, "enableAutomaticUpgrade": False,
                          "suppressFailures": False, "forceUpdateTag": "7", "provisionAfterExtensions": ["a"],
                          "protectedSettingsFromKeyVault": KV_REST, "provisioningState": "Succeeded"}}
    vm = rr.definition_of(ext, "vm")
    assert vm == {"publisher": "P", "type": "T", "type_handler_version": "2.0", "settings": {"n": 3},
                  "auto_upgrade_minor_version": False, "enable_automatic_upgrade": False,
                  "suppress_failures": False, "force_update_tag": "7", "provision_after_extensions": ["a"],
                  "protected_settings_from_key_vault": {"secret_url": KV_REST["secretUrl"],
                                                        "source_vault_id": "/subscriptions/x/kv"},
                  "tags": {"owner": "a"}, "location": "westeurope"}
    assert vm["auto_upgrade_minor_version"] is False
    vmss = rr.definition_of(dict(ext, tags=None), "vmss")
    assert "tags" not in vmss and "location" not in vmss and vmss["suppress_failures"] is False


def test_stored_fingerprint_is_the_extension_tag_on_a_vm_and_the_scale_set_tag_on_a_scale_set():
    ext = {"tags": {"azure_vm.extensions.protected_settings": "on-ext"}}
    vmss = {"tags": {"azure_vm.extensions.protected_settings.cs": "on-vmss",
                     "azure_vm.extensions.protected_settings.other": "x"}}
    assert rr.stored_fingerprint("vm", "cs", ext, None) == "on-ext"
    assert rr.stored_fingerprint("vmss", "cs", {}, vmss) == "on-vmss"
    assert rr.stored_fingerprint("vmss", "nope", {}, vmss) is None


def test_backup_files_are_private_found_by_target_and_updated_in_place(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir(mode=0o755)
    path = str(folder / "rg_vm-1_cs_20260101T000000000000Z.json")
    data = {"format": rr.BACKUP_FORMAT, "created": "2026-01-01T00:00:00.000000Z", "stage": "saved",
            "target": {"kind": "vm", "resource_group": "rg", "name": "vm-1", "extension": "cs"}}
    rr.write_json_0600(path, data, create=True)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(OSError):  # a backup is never overwritten by a new one
        rr.write_json_0600(path, data, create=True)
    rr.write_json_0600(path, dict(data, stage="deleted"), create=False)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(open(path).read())["stage"] == "deleted"
    assert [b["path"] for b in rr.find_backups(str(folder), "vm", "RG", "vm-1", "CS")] == [path]
    assert rr.find_backups(str(folder), "vmss", "rg", "vm-1", "cs") == []
    assert os.listdir(str(folder)) == [os.path.basename(path)]  # no temporary file left


def test_load_backup_refuses_other_files(tmp_path):
    other = tmp_path / "x.json"
    other.write_text('{"a": 1}')
    with pytest.raises(AzureOperationError, match="not a backup written by an extension rerun"):
        rr.load_backup(str(other))
    with pytest.raises(AzureOperationError, match="cannot read"):
        rr.load_backup(str(tmp_path / "missing.json"))


def test_restore_task_is_valid_yaml_naming_the_backup():
    text = rr.restore_task("vmss", "rg-demo", "vmss-web", "cs", "/home/u/b/rg_x.json", True)
    task = yaml.safe_load(text)[0]
    assert task["azure_vm.extensions.vmss_extension"] == {
        "resource_group": "rg-demo", "vmss_name": "vmss-web", "name": "cs",
        "definition_from_backup": "/home/u/b/rg_x.json", "protected_settings": "{{ vault_protected_settings }}"}
    plain = yaml.safe_load(rr.restore_task("vm", "rg", "vm-1", "cs", "/b.json", False))[0]
    assert "protected_settings" not in plain["azure_vm.extensions.vm_extension"]
    named = yaml.safe_load(rr.restore_task("vm", "rg", "vm-1", "cs", "/b.json", False, "sub-b"))[0]
    assert named["azure_vm.extensions.vm_extension"]["subscription_id"] == "sub-b"  # never the default's


def test_backups_of_the_same_names_in_another_subscription_are_not_this_extensions(tmp_path):
    for number, subscription in enumerate(("sub-a", "sub-b")):
        rr.write_json_0600(str(tmp_path / ("b%d.json" % number)), {
            "format": rr.BACKUP_FORMAT, "created": "2026-01-0%dT00:00:00Z" % (number + 1), "stage": "deleted",
            "target": {"kind": "vm", "subscription_id": subscription, "resource_group": "rg", "name": "vm-1",
                       "extension": "cs"}}, create=True)
    found = rr.find_backups(str(tmp_path), "vm", "RG", "vm-1", "cs", "SUB-A")
    assert [b["target"]["subscription_id"] for b in found] == ["sub-a"]
    assert len(rr.find_backups(str(tmp_path), "vm", "rg", "vm-1", "cs")) == 2


def test_one_rerun_of_an_extension_at_a_time(tmp_path):
    first = rr.RerunLock(str(tmp_path), "vm", "sub-a", "rg", "vm-1", "cs")
    second = rr.RerunLock(str(tmp_path), "vm", "SUB-A", "RG", "vm-1", "CS")  # Azure's names: case-insensitive
    other = rr.RerunLock(str(tmp_path), "vm", "sub-b", "rg", "vm-1", "cs")
    assert first.acquire() and not second.acquire() and other.acquire()
    assert second.holder()["pid"] == os.getpid()
    first.release()
    assert second.acquire()
    second.release()
    other.release()


def test_a_backup_returned_in_a_task_result_is_a_backup(tmp_path):
    data = {"format": rr.BACKUP_FORMAT, "target": {"kind": "vm"}, "definition": {}}
    assert rr.load_backup(data)["path"] == "(the backup given in definition_from_backup)"
    with pytest.raises(AzureOperationError, match="not a backup written by an extension rerun"):
        rr.load_backup({"format": "something else"})


def test_default_backup_dir_is_under_the_users_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert rr.backup_dir({"backup_dir": None}) == str(tmp_path / ".ansible" / "azure_vm_extensions" / "backups")
    assert rr.backup_dir({"backup_dir": str(tmp_path / "x")}) == str(tmp_path / "x")


def test_rules_stop_requiring_the_definition_only_for_the_rerun():
    rules = rr.rerun_option_rules(EXTENSION_OPTION_RULES)
    assert not [rule for rule in rules["required_if"] if tuple(rule[:2]) == ("state", "present")]
    assert ("definition_from_backup", "rerun") in rules["mutually_exclusive"]
    assert EXTENSION_OPTION_RULES["required_if"]  # the shared rules are not changed in place


class FakeModule(object):
    def __init__(self, **params):
        self.params = dict(resource_group="rg", vm_name="vm-1", name="cs", state="present", rerun=False, rerun_method="force_update_tag", rerun_overrides=None,
                           definition_from_backup=None, publisher=None, type=None, type_handler_version=None)
        self.params.update(params)


@pytest.mark.parametrize("params, expected", [
    (dict(publisher="P", type="T", type_handler_version="1.0"), None),
    (dict(publisher="P", type="T", type_handler_version="1.0", rerun=True), None),  # the classic forceUpdateTag rerun
    (dict(rerun=True), "rerun"),
    (dict(rerun=True, rerun_method="delete_reapply", publisher="P", type="T", type_handler_version="1"), "rerun"),
    (dict(definition_from_backup="/b.json"), "rerun"),
])
def test_which_tasks_the_rerun_handles(params, expected):
    found = rr.extension_rerun(FakeModule(**params), "vm", object, None)
    assert (found is not None) == (expected == "rerun")


@pytest.mark.parametrize("params, message", [
    (dict(), "state is present but all of the following are missing: publisher, type, type_handler_version"),
    (dict(rerun=True, publisher="P"), "declare all of publisher, type and type_handler_version"),
    (dict(rerun_overrides={"settings": {}}, publisher="P", type="T", type_handler_version="1"),
     "rerun_overrides needs rerun=true"),
    (dict(state="absent", definition_from_backup="/b"), "definition_from_backup needs state=present"),
])
def test_bad_input_is_refused_naming_the_option(params, message):
    with pytest.raises(AzureOperationError) as err:
        rr.extension_rerun(FakeModule(**params), "vm", object, None)
    assert message in err.value.msg
