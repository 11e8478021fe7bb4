"""Protected settings on PUT and PATCH of VM and scale-set extensions, as Azure keeps them (issue 25).

A PUT that omits protectedSettings (or settings) keeps the stored value, an explicit value (even {}) replaces
it, a PATCH keeps what it does not name: tests/data/reference/issue-25.md (Azure/WALinuxAgent PR #3427 and the
Azure CLI's --force-update). The handler-runs admin API shows which protected settings each handler run had, as a
keyed digest (POST fingerprint gives the same digest for a candidate value); never the value itself.
"""
import json

import pytest

from emulator_clients import LOCATION, RG, compute, raw, vm_path

SECRET = {"storageAccountKey": "ps-s3cret-value", "commandToExecute": "echo from protected"}
ROTATED = {"storageAccountKey": "ps-rotated-value"}
PUBLIC = {"fileUris": ["https://example.invalid/run.sh"]}
DEFINITION = {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
              "autoUpgradeMinorVersion": True}


def _vm_body(**props):
    return {"location": LOCATION, "properties": dict(DEFINITION, **props)}


def _put(client, body, vm="vm-web-02", name="cs"):
    return client.virtual_machine_extensions.begin_create_or_update(RG, vm, name, body).result()


def _runs(emu, target="vm-web-02", name="cs"):
    return [r for r in emu.handler_runs() if r["target"] == target and r["extension"] == name]


def _no_secret_anywhere(emu):
    text = json.dumps([emu.requests(), emu.state(), emu.handler_runs()])
    return "ps-s3cret-value" not in text and "ps-rotated-value" not in text


@pytest.fixture
def quick(emulator):
    emulator.settings(handler_duration_s=0.05, delete_duration_s=0.05)
    return emulator


# --- VM extensions ---------------------------------------------------------------------------------------------
def test_put_without_protected_settings_keeps_them_and_force_update_tag_reruns_with_them(quick):
    client = compute(quick)
    _put(client, _vm_body(settings=PUBLIC, protectedSettings=SECRET))
    secret = quick.fingerprint(SECRET)
    assert secret is not None and secret != quick.fingerprint(ROTATED) and quick.fingerprint(None) is None
    assert [(r["kind"], r["protected_settings"]) for r in _runs(quick)] == [("Creating", secret)]

    # What a rerun sends: the definition read back from ARM (no protectedSettings) with a new forceUpdateTag.
    read_back = client.virtual_machine_extensions.get(RG, "vm-web-02", "cs").as_dict()
    assert "protectedSettings" not in read_back["properties"]
    body = {"location": LOCATION, "properties": {k: v for k, v in read_back["properties"].items()
                                                 if k != "provisioningState"}}
    body["properties"]["forceUpdateTag"] = "rerun-1"
    _put(client, body)
    assert [(r["kind"], r["outcome"], r["protected_settings"]) for r in _runs(quick)] == [
        ("Creating", "succeeded", secret), ("Updating", "succeeded", secret)]

    # The same PUT again changes nothing: no handler run, the definition as it was.
    writes = len(quick.writes())
    _put(client, body)
    assert len(_runs(quick)) == 2 and len(quick.writes()) == writes + 1
    again = client.virtual_machine_extensions.get(RG, "vm-web-02", "cs").as_dict()["properties"]
    assert again["settings"] == PUBLIC and again["forceUpdateTag"] == "rerun-1"
    assert _no_secret_anywhere(quick)


def test_put_omitting_protected_settings_is_no_change(quick):
    """The stored protected settings are part of the definition: leaving them out of an otherwise identical PUT
    is no change, so the handler does not run again (it did on the emulator that dropped them)."""
    client = compute(quick)
    _put(client, _vm_body(settings=PUBLIC, protectedSettings=SECRET))
    status, dummy, body = raw(quick, "PUT", vm_path(quick, "vm-web-02", "/extensions/cs"), _vm_body(settings=PUBLIC))
    assert status == 200 and body["properties"]["provisioningState"] == "Updating"  # the no-op answer
    assert "protectedSettings" not in body["properties"]
    assert len(_runs(quick)) == 1


def test_explicit_protected_settings_replace_the_stored_ones(quick):
    client = compute(quick)
    _put(client, _vm_body(settings=PUBLIC, protectedSettings=SECRET))
    _put(client, _vm_body(settings=PUBLIC, protectedSettings=ROTATED))
    _put(client, _vm_body(settings=PUBLIC, protectedSettings={}))  # {} resets them (WALinuxAgent#3427)
    _put(client, _vm_body(settings=PUBLIC, forceUpdateTag="after-reset"))
    assert [r["protected_settings"] for r in _runs(quick)] == [
        quick.fingerprint(SECRET), quick.fingerprint(ROTATED), quick.fingerprint({}), quick.fingerprint({})]
    assert _no_secret_anywhere(quick)


def test_put_without_settings_keeps_them_and_empty_settings_clear_them(quick):
    client = compute(quick)
    _put(client, _vm_body(settings=PUBLIC, protectedSettings=SECRET))
    kept = _put(client, _vm_body(protectedSettings=ROTATED))
    assert kept.settings == PUBLIC
    assert client.virtual_machine_extensions.get(RG, "vm-web-02", "cs").settings == PUBLIC
    cleared = _put(client, _vm_body(settings={}))
    assert cleared.settings == {}
    assert [r["protected_settings"] for r in _runs(quick)] == [
        quick.fingerprint(SECRET), quick.fingerprint(ROTATED), quick.fingerprint(ROTATED)]


def test_patch_with_only_force_update_tag_reruns_with_the_stored_protected_settings(quick):
    client = compute(quick)
    _put(client, _vm_body(settings=PUBLIC, protectedSettings=SECRET))
    updated = client.virtual_machine_extensions.begin_update(
        RG, "vm-web-02", "cs", {"properties": {"forceUpdateTag": "patch-1"}}).result()
    assert updated.settings == PUBLIC and updated.force_update_tag == "patch-1"
    assert [(r["kind"], r["protected_settings"]) for r in _runs(quick)] == [
        ("Creating", quick.fingerprint(SECRET)), ("Updating", quick.fingerprint(SECRET))]
    client.virtual_machine_extensions.begin_update(
        RG, "vm-web-02", "cs", {"properties": {"forceUpdateTag": "patch-1"}}).result()  # the same tag: no rerun
    assert len(_runs(quick)) == 2
    client.virtual_machine_extensions.begin_update(
        RG, "vm-web-02", "cs", {"properties": {"protectedSettings": ROTATED}}).result()
    assert _runs(quick)[-1]["protected_settings"] == quick.fingerprint(ROTATED)
    assert _no_secret_anywhere(quick)


def test_a_new_extension_without_protected_settings_has_none(quick):
    client = compute(quick)
    _put(client, _vm_body(settings=PUBLIC))
    assert [r["protected_settings"] for r in _runs(quick)] == [None]


# --- scale-set extensions --------------------------------------------------------------------------------------
def test_scale_set_put_without_protected_settings_keeps_them_for_the_instances(quick):
    client = compute(quick)
    ops = client.virtual_machine_scale_set_extensions
    ops.begin_create_or_update(RG, "vmss-auto", "cs", {"properties": dict(
        DEFINITION, settings=PUBLIC, protectedSettings=SECRET)}).result()  # Automatic: rolled out at once
    secret = quick.fingerprint(SECRET)
    first = [r for r in quick.handler_runs() if r["extension"] == "cs"]
    assert sorted(r["target"] for r in first) == ["vmss-auto/0", "vmss-auto/1", "vmss-auto/2"]
    assert {r["protected_settings"] for r in first} == {secret}

    read_back = ops.get(RG, "vmss-auto", "cs").as_dict()["properties"]
    assert "protectedSettings" not in read_back
    body = {"properties": {k: v for k, v in read_back.items() if k != "provisioningState"}}
    body["properties"]["forceUpdateTag"] = "vmss-rerun"
    ops.begin_create_or_update(RG, "vmss-auto", "cs", body).result()
    runs = [r for r in quick.handler_runs() if r["extension"] == "cs"]
    assert len(runs) == 6 and {(r["kind"], r["protected_settings"]) for r in runs[3:]} == {("Updating", secret)}

    ops.begin_create_or_update(RG, "vmss-auto", "cs", body).result()  # again: nothing changes, nothing runs
    assert len([r for r in quick.handler_runs() if r["extension"] == "cs"]) == 6

    ops.begin_update(RG, "vmss-auto", "cs", {"properties": {"forceUpdateTag": "vmss-patch"}}).result()
    runs = [r for r in quick.handler_runs() if r["extension"] == "cs"]
    assert len(runs) == 9 and {r["protected_settings"] for r in runs[6:]} == {secret}
    assert _no_secret_anywhere(quick)


def test_scale_set_model_put_keeps_protected_settings_of_extensions_given_without_them(quick):
    """`az vmss extension set` PUTs the whole scale set with the other extensions as the GET shows them."""
    client = compute(quick)
    client.virtual_machine_scale_set_extensions.begin_create_or_update(RG, "vmss-auto", "cs", {"properties": dict(
        DEFINITION, settings=PUBLIC, protectedSettings=SECRET)}).result()
    model = client.virtual_machine_scale_sets.get(RG, "vmss-auto").as_dict()
    extensions = model["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
    extensions[0]["properties"]["forceUpdateTag"] = "model-rerun"
    extensions[0]["properties"].pop("provisioningState", None)
    client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-auto", model).result()
    runs = [r for r in quick.handler_runs() if r["extension"] == "cs"]
    assert len(runs) == 6 and {r["protected_settings"] for r in runs} == {quick.fingerprint(SECRET)}


# --- the admin API itself --------------------------------------------------------------------------------------
def test_fingerprint_takes_only_protected_settings(emulator):
    status, dummy, body = raw(emulator, "POST", "/_emulator/fingerprint", {"value": SECRET}, token=False, query="")
    assert status == 400 and "protectedSettings" in body["error"]
    # key order does not matter (the canonical JSON is hashed), values do
    assert emulator.fingerprint({"b": 1, "a": "x"}) == emulator.fingerprint({"a": "x", "b": 1})
    assert emulator.fingerprint({"a": "x"}) != emulator.fingerprint({"a": "y"})
    assert len(emulator.fingerprint(SECRET)) == 64 and "ps-s3cret-value" not in emulator.fingerprint(SECRET)
