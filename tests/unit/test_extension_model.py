"""Unit tests of the extension model: comparison, fingerprint, versions, status summaries."""
import time

import pytest

from ansible_collections.azure_vm.extensions.plugins.module_utils import extension_model as em
from ansible_collections.azure_vm.extensions.plugins.module_utils import extension_status as st


def ext(props=None, tags=None):
    base = {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
            "autoUpgradeMinorVersion": True, "settings": {"commandToExecute": "echo 1", "n": 3},
            "provisioningState": "Succeeded"}
    base.update(props or {})
    return {"id": "/x", "name": "cs", "location": "westeurope", "properties": base, "tags": tags or {}}


def desired(**kw):
    base = dict(publisher="microsoft.azure.extensions", type="customscript", type_handler_version="2.1",
                auto_upgrade_minor_version=True, settings={"n": "3", "commandToExecute": "echo 1"})
    base.update(kw)
    return base


def test_same_definition_is_no_change_despite_casing_key_order_and_string_numbers():
    assert em.changed_properties(desired(), ext()) == []
    assert em.identity_conflicts(desired(), ext()) == []


@pytest.mark.parametrize("change, expected", [
    (dict(settings={"commandToExecute": "echo 2", "n": 3}), ["settings"]),
    (dict(type_handler_version="2.0"), ["type_handler_version"]),
    (dict(auto_upgrade_minor_version=False), ["auto_upgrade_minor_version"]),
    (dict(enable_automatic_upgrade=True), ["enable_automatic_upgrade"]),
    (dict(suppress_failures=True), ["suppress_failures"]),
    (dict(force_update_tag="abc"), ["force_update_tag"]),
    (dict(tags={"env": "prod"}), ["tags"]),
    (dict(provision_after_extensions=["other"]), ["provision_after_extensions"]),
])
def test_each_property_change_is_detected(change, expected):
    assert em.changed_properties(desired(**change), ext()) == expected


def test_unmanaged_false_flags_equal_absent():
    # enable_automatic_upgrade=false against an extension where ARM omits the flag is no change.
    assert em.changed_properties(desired(enable_automatic_upgrade=False), ext()) == []


def test_version_trailing_zero_is_same_version():
    assert em.changed_properties(desired(type_handler_version="2.1.0"), ext()) == []


def test_publisher_or_type_change_is_a_conflict_not_an_update():
    assert em.identity_conflicts(desired(type="OtherType"), ext()) == ["type 'CustomScript' -> 'OtherType'"]


def test_protected_settings_change_alone_is_detected_through_the_fingerprint():
    secret = {"commandToExecute": "run --token s3cr3t"}
    body = em.build_body(desired(protected_settings=secret), "westeurope", ext())
    stored = body["tags"][em.FINGERPRINT_TAG]
    assert "s3cr3t" not in stored
    current = ext(tags={em.FINGERPRINT_TAG: stored})
    assert em.changed_properties(desired(protected_settings=secret), current) == []
    rotated = {"commandToExecute": "run --token n3w"}
    assert em.changed_properties(desired(protected_settings=rotated), current) == ["protected_settings"]
    # Without a fingerprint tag the module cannot know, so it must apply them.
    assert em.changed_properties(desired(protected_settings=secret), ext()) == ["protected_settings"]
    # Turned off: never compared.
    assert em.changed_properties(desired(protected_settings=rotated), current, use_fingerprint=False) == []


def test_fingerprint_is_salted_and_slow():
    secret = {"password": "hunter2"}
    first, second = em.fingerprint(secret), em.fingerprint(secret)
    assert first != second  # random salt: equal secrets do not give equal tags
    assert em.fingerprint_matches(secret, first) and em.fingerprint_matches(secret, second)
    assert not em.fingerprint_matches({"password": "hunter3"}, first)
    assert not em.fingerprint_matches(secret, "garbage")
    assert first.split("$")[:3] == ["v2", "pbkdf2-sha256", str(em.FINGERPRINT_ITERATIONS)]
    assert first.split("$")[2] == str(em.FINGERPRINT_ITERATIONS) and em.FINGERPRINT_ITERATIONS >= 100000
    started = time.perf_counter()
    em.fingerprint(secret)
    assert time.perf_counter() - started > 0.01  # deliberately slow: PBKDF2 with many iterations
    assert len(first) < 256  # fits in an ARM tag value


def test_build_body_keeps_unmanaged_fields_and_user_tags_with_fingerprint():
    current = ext({"suppressFailures": True, "instanceView": {"statuses": []}}, tags={"owner": "ops"})
    body = em.build_body(desired(protected_settings={"k": "v"}, tags={"env": "prod"}), "westeurope", current)
    props = body["properties"]
    assert props["suppressFailures"] is True and "instanceView" not in props and "provisioningState" not in props
    assert props["protectedSettings"] == {"k": "v"}
    assert set(body["tags"]) == {"env", em.FINGERPRINT_TAG}
    off = em.build_body(desired(), "westeurope", ext(tags={em.FINGERPRINT_TAG: "x"}), use_fingerprint=False)
    assert "tags" not in off


def test_latest_version_is_numeric_not_string_order():
    versions = ["2.0.2", "2.1.6", "2.1.10", "2.0.3"]
    assert sorted(versions)[-1] == "2.1.6"  # what string order would pick
    assert em.latest_version(versions) == "2.1.10"
    assert em.latest_version(versions, prefix="2.0") == "2.0.3"
    assert em.latest_version(versions, prefix="3") is None
    assert em.handler_version("2.1.10") == "2.1"


def test_default_timeouts_follow_the_seeds():
    assert em.default_timeout("CustomScript") == 90 * 60
    assert em.default_timeout("CustomScriptExtension") == 90 * 60
    assert em.default_timeout("DSC") == 90 * 60
    assert em.default_timeout("LinuxDiagnostic") == 20 * 60


def test_instance_view_summary_and_messages():
    view = {"name": "cs", "statuses": [{"code": "ProvisioningState/failed/-196608", "level": "Error",
                                        "displayStatus": "Provisioning failed", "message": "boom"}],
            "substatuses": [{"code": "ComponentStatus/StdErr/succeeded", "message": "oops"}]}
    result = st.instance_view_result(view)
    assert result["state"] == "failed"
    assert result["statuses"][0]["display_status"] == "Provisioning failed"
    assert st.status_messages(result) == "[ProvisioningState/failed/-196608] boom\n[ComponentStatus/StdErr/succeeded] oops"
    assert st.handler_state([{"code": "ProvisioningState/transitioning"}]) == "transitioning"
    assert st.handler_state([]) == "unknown"


def test_vm_agent_readiness():
    ready = {"vmAgent": {"vmAgentVersion": "2.9.1.1", "statuses": [{"displayStatus": "Ready", "message": "ok"}]}}
    assert st.vm_agent_result(ready) == {"version": "2.9.1.1", "status": "Ready", "message": "ok", "ready": True}
    assert st.vm_agent_result({})["ready"] is False


def test_mask_secrets_keeps_keys_only():
    assert em.mask_secrets({"a": "x", "b": {"c": 1}, "d": ["y"]}) == {
        "a": em.MASK, "b": {"c": em.MASK}, "d": [em.MASK]}


def test_extensions_from_one_vm_read_carry_their_instance_views():
    vm = {"resources": [{"name": "a", "properties": {"publisher": "P"}}, {"name": "b", "properties": {}}],
          "properties": {"instanceView": {"extensions": [
              {"name": "a", "statuses": [{"code": "ProvisioningState/succeeded"}]}]}}}
    found = st.extensions_from_vm(vm)
    assert [e["name"] for e in found] == ["a", "b"]
    assert found[0]["properties"]["instanceView"]["statuses"][0]["code"] == "ProvisioningState/succeeded"
    assert "instanceView" not in found[1]["properties"]
    assert st.extensions_from_vm({}) == []


def test_versions_matching_a_prefix_in_numeric_order():
    versions = ["2.1.10", "2.10.1", "2.1.6", "2.1", "1.9"]
    assert em.versions_matching(versions, "2.1") == ["2.1", "2.1.6", "2.1.10"]
    assert em.versions_matching(versions) == ["1.9", "2.1", "2.1.6", "2.1.10", "2.10.1"]


# ---- exact comparison (issue 11, defect 1): every pair from the issue, and the allowed templating coercion ----------
EQUAL = [
    ("30", 30),                       # templating turns numbers into strings: exactly the JSON text is equal
    ("true", True),
    ("false", False),
    ("1.5", 1.5),
    ("1.0", 1.0),
    ("-7", -7),
    ("123456789012345678", 123456789012345678),
    ("1.10", "1.10"),
    (float("nan"), float("nan")),     # NaN is itself (it used to differ from itself: a change on every run)
    ({"a": [1, {"b": "x"}]}, {"a": ["1", {"b": "x"}]}),
    ({"b": 1, "a": 2}, {"a": 2, "b": 1}),   # key order never matters
    (None, None),
]
UNEQUAL = [
    ("1.10", "1.1"),                  # appVersion: "1.10" -> "1.1" must be a change
    ("1.10", 1.1),
    ("0042", "42"),
    ("0042", 42),
    ("1e3", "1000"),
    ("1e3", 1000),
    ("123456789012345678", "123456789012345679"),   # 18-digit ids differing in the last digit
    (123456789012345678, 123456789012345679),
    ("123456789012345679", 123456789012345678),
    (" 30", 30),                      # no stripping
    ("30.0", 30),
    ("True", True),                   # no case folding
    ("TRUE", True),
    (" true", True),
    ("1", True),                      # booleans are not numbers
    (1, True),
    (0, False),
    (1, 1.0),                         # JSON text 1 vs 1.0
    ("nan", float("nan")),
    ("null", None),
    ("", None),
    ({"Key": 1}, {"key": 1}),         # keys are exact
    ({"a": 1}, {"a": 1, "b": 2}),
    ([1, 2], [2, 1]),
    ({"a": "x"}, {"a": "X"}),
    ("abc", "ABC"),
]


@pytest.mark.parametrize("left, right", EQUAL)
def test_equal_pairs(left, right):
    assert em.values_equal(left, right) and em.values_equal(right, left)


@pytest.mark.parametrize("left, right", UNEQUAL)
def test_unequal_pairs(left, right):
    assert not em.values_equal(left, right) and not em.values_equal(right, left)


@pytest.mark.parametrize("old, new", [("1.10", "1.1"), ("0042", "42"), ("1e3", "1000"),
                                      ("123456789012345678", "123456789012345679")])
def test_a_settings_change_the_old_normalization_hid_is_detected(old, new):
    assert em.changed_properties(desired(settings={"appVersion": new}), ext({"settings": {"appVersion": old}})) == [
        "settings"]


def test_nan_setting_is_stable():
    assert em.changed_properties(desired(settings={"x": float("nan")}), ext({"settings": {"x": float("nan")}})) == []


def test_rotating_a_pin_from_0042_to_42_is_a_protected_settings_change():
    stored = em.fingerprint({"pin": "0042"}, iterations=1000)
    assert em.fingerprint_matches({"pin": "0042"}, stored)
    assert not em.fingerprint_matches({"pin": "42"}, stored)
    assert not em.fingerprint_matches({"pin": 42}, stored)
    assert em.changed_properties(desired(protected_settings={"pin": "42"}),
                                 ext(tags={em.FINGERPRINT_TAG: stored})) == ["protected_settings"]


def test_fingerprint_hashes_canonical_json_without_coercion():
    assert em.canonical_json({"b": "1", "a": True}) == b'{"a":true,"b":"1"}'
    salt = b"0" * 16
    assert em.fingerprint({"a": "1"}, salt, 1000) != em.fingerprint({"a": 1}, salt, 1000)
    assert em.fingerprint({"a": 1, "b": 2}, salt, 1000) == em.fingerprint({"b": 2, "a": 1}, salt, 1000)


def legacy_tag(value, salt=b"s" * 16, iterations=1000):
    """A format-1 tag as the collection wrote it before the tag format was versioned."""
    import base64
    import hashlib
    import json

    data = json.dumps(em._legacy_normalize(value), sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.pbkdf2_hmac("sha256", data, salt, iterations)
    return "pbkdf2-sha256$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def test_format_1_tags_are_recognised_unless_the_old_normalization_was_ambiguous():
    plain = {"commandToExecute": "run --token abc", "retries": 3, "debug": False}
    assert em.fingerprint_matches(plain, legacy_tag(plain))              # no re-send after the upgrade
    assert not em.fingerprint_matches({"commandToExecute": "other", "retries": 3, "debug": False},
                                      legacy_tag(plain))
    # A value format 1 normalized: the old tag cannot prove which one was sent, so it is sent once.
    assert not em.fingerprint_matches({"pin": "0042"}, legacy_tag({"pin": "0042"}))
    assert not em.fingerprint_matches({"pin": "42"}, legacy_tag({"pin": "0042"}))


def test_not_running_reason_names_the_power_state_and_what_to_do():
    view = {"statuses": [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/deallocated"}]}
    assert st.vm_states(view) == ("deallocated", "succeeded")
    reason = st.not_running_reason(view, "VM vm-1")
    assert reason.startswith("VM vm-1 is deallocated (PowerState/deallocated)") and "az vm start" in reason
    assert st.not_running_reason({"statuses": [{"code": "PowerState/running"}]}, "VM vm-1") is None
    assert st.not_running_reason({}, "VM vm-1") is None
    # A failed provisioning state is what a failed extension leaves behind; writing it again is the repair.
    assert st.not_running_reason({"statuses": [{"code": "ProvisioningState/failed/x"},
                                               {"code": "PowerState/running"}]}, "VM vm-1") is None


def test_key_vault_reference_accepts_the_module_shape_and_arms_shape():
    arm = {"secretUrl": "https://kv/secrets/s/1", "sourceVault": {"id": "/sub/kv"}}
    assert em.key_vault_reference({"secret_url": "https://kv/secrets/s/1", "source_vault_id": "/sub/kv"}) == arm
    assert em.key_vault_reference(arm) == arm
    with pytest.raises(em.AzureOperationError, match="protected_settings_from_key_vault needs secret_url"):
        em.key_vault_reference({"secretUrl": "x"})


def test_fingerprint_tag_is_masked_in_results_and_ignored_when_fed_back():
    stored = em.fingerprint({"k": "v"}, iterations=1000)
    current = ext(tags={em.FINGERPRINT_TAG: stored, "env": "prod"})
    result = st.extension_result(current)
    assert result["tags"] == {em.FINGERPRINT_TAG: em.MASK, "env": "prod"}
    assert em.changed_properties(desired(tags=result["tags"]), current) == []
    body = em.build_body(desired(tags=result["tags"]), "westeurope", current)
    assert body["tags"][em.FINGERPRINT_TAG] == stored  # the masked value is never written back


def test_diff_shows_protected_settings_only_when_they_change():
    current = ext(tags={em.FINGERPRINT_TAG: em.fingerprint({"k": "v"}, iterations=1000)})
    body = em.build_body(desired(protected_settings={"k": "v"}, settings={"n": 4}), "westeurope", current)
    diff = st.write_diff(current, body, "/x", "cs", {"k": "v"}, ["settings"])
    assert "protected_settings" not in diff["after"] and "protected_settings" not in diff["before"]
    assert diff["before"]["tags"][em.FINGERPRINT_TAG] == em.MASK and diff["after"]["tags"][em.FINGERPRINT_TAG] == em.MASK
    diff = st.write_diff(current, body, "/x", "cs", {"k": "w"}, ["protected_settings"])
    assert diff["after"]["protected_settings"] == {"k": em.MASK} and diff["before"]["protected_settings"] == em.MASK


def test_change_summary_in_plain_words():
    from ansible_collections.azure_vm.extensions.plugins.module_utils.vm_extension_state import change_summary

    body = {"properties": {"typeHandlerVersion": "2.1"}}
    assert change_summary("cs", None, body, ["state"]) == "cs: created at version 2.1"
    old = ext({"typeHandlerVersion": "2.0"})
    assert change_summary("cs", old, body, ["type_handler_version", "settings"]) == \
        "cs: version 2.0 -> 2.1; settings changed"
    assert change_summary("cs", ext(), body, ["settings", "protected_settings"]) == \
        "cs (version 2.1): settings, protected_settings changed"


def _declaration(version):
    params = dict((key, spec.get("default")) for key, spec in em.EXTENSION_OPTIONS.items())
    params.update(resource_group="rg", name="cs", publisher="Microsoft.Azure.Extensions", type="CustomScript",
                  type_handler_version=version)
    return params


@pytest.mark.parametrize("number", [2.1, 2.10, 1.0, True])
def test_unquoted_yaml_number_as_version_is_refused_naming_the_option(number):
    # YAML reads an unquoted 2.10 as the float 2.1: refused, never silently sent as '2.1'.
    with pytest.raises(em.AzureOperationError, match=r"type_handler_version must be quoted, for example '2.10'"):
        em.validate_extension_options(_declaration(number))


@pytest.mark.parametrize("value, expected", [("2.10", "2.10"), ("2.1", "2.1"), ("latest", "latest")])
def test_string_versions_are_kept_exactly(value, expected):
    params = _declaration(value)
    em.validate_extension_options(params)
    assert params["type_handler_version"] == expected


@pytest.mark.parametrize("value", ["2", "2.1.6", "1.9.5.1", "abc", "2.x"])
def test_a_version_azure_refuses_is_refused_naming_the_option_and_the_form(value):
    with pytest.raises(em.AzureOperationError, match=r"type_handler_version must be major.minor such as '2.1'"):
        em.validate_extension_options(_declaration(value))


@pytest.mark.parametrize("value", [["2.1"], {"v": "2.1"}, 2])
def test_version_of_another_type_is_refused_naming_the_option(value):
    with pytest.raises(em.AzureOperationError, match=r"type_handler_version must be a string such as '2.1'"):
        em.validate_extension_options(_declaration(value))
