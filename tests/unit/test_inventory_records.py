"""Unit tests of the azure_vms inventory plugin's record building, its definition of a failed extension, host
naming, option checks and auth parameters."""
import itertools
import json

import pytest

from ansible_collections.azure_vm.extensions.plugins.inventory import azure_vms
from ansible_collections.azure_vm.extensions.plugins.module_utils import errors as ac
from ansible_collections.azure_vm.extensions.plugins.module_utils.auth import validate_auth_options
from ansible_collections.azure_vm.extensions.plugins.module_utils.extension_status import extension_failed

VM_ID = "/subscriptions/s1/resourceGroups/RG-A/providers/Microsoft.Compute/virtualMachines/vm1"


def status(code, message=None):
    return {"code": code, "message": message}


@pytest.mark.parametrize("provisioning, handler, failed", [
    ("Failed", "transitioning", True),  # ARM's timeout while the handler still runs (issue 23)
    ("Failed", "succeeded", True),  # the handler finished after ARM gave up: ARM still holds it Failed
    ("Failed", "unknown", True),
    ("failed", "unknown", True),  # ARM spells states in either case
    ("Succeeded", "failed", True),
    (None, "failed", True),  # list_model=false: the handler alone decides
    ("Succeeded", "succeeded", False),
    ("Creating", "transitioning", False),
    ("Updating", "succeeded", False),
    (None, "transitioning", False),
    ("Canceled", "unknown", True),  # the operation did not finish: the modules fail on it too
    (None, "unknown", False),
])
def test_extension_failed_is_provisioning_failed_or_handler_failed(provisioning, handler, failed):
    assert extension_failed(provisioning, handler) is failed


@pytest.mark.parametrize("handler, provisioning, state", [
    ("failed", "Succeeded", "failed"),
    ("succeeded", "Failed", "failed"),
    ("transitioning", "Failed", "failed"),
    ("unknown", "Failed", "failed"),
    ("transitioning", "Creating", "transitioning"),
    ("succeeded", "Updating", "succeeded"),
    ("unknown", "Creating", "transitioning"),
    ("unknown", "Succeeded", "unknown"),
    ("unknown", None, "unknown"),
])
def test_extension_state_is_failed_exactly_when_extension_failed(handler, provisioning, state):
    assert azure_vms.extension_state(handler, provisioning) == state
    assert (state == "failed") is extension_failed(provisioning, handler)


def test_a_record_with_arm_failed_and_a_transitioning_handler_is_in_the_failed_list():
    resources = [{"name": "long", "properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
                                                 "provisioningState": "Failed"}}]
    view = {"extensions": [{"name": "long", "statuses": [status("ProvisioningState/transitioning")]}]}
    status_vm = {"id": VM_ID, "name": "vm1", "properties": {"instanceView": view}}
    record = azure_vms.host_record(status_vm, {"id": VM_ID, "name": "vm1", "resources": resources}, "s1")
    ext = record["azure_extensions"]["long"]
    assert (ext["provisioning_state"], ext["handler_state"], ext["state"]) == ("Failed", "transitioning", "failed")
    assert record["azure_failed_extensions"] == ["long"]


def test_extension_records_join_model_and_view_and_never_carry_settings_or_tags():
    resources = [{"name": "cs", "tags": {"azure_vm.extensions.protected_settings": "pbkdf2-sha256$1$a$b"},
                  "properties": {"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
                                 "typeHandlerVersion": "2.1", "provisioningState": "Creating",
                                 "autoUpgradeMinorVersion": True, "enableAutomaticUpgrade": False,
                                 "settings": {"commandToExecute": "echo secret-ish"}}}]
    view = {"extensions": [
        {"name": "cs", "type": "Microsoft.Azure.Extensions.CustomScript", "typeHandlerVersion": "2.1.10",
         "statuses": [status("ProvisioningState/transitioning", "Enable in progress")]},
        {"name": "onlyInView", "type": "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
         "statuses": [status("ProvisioningState/failed/-1", "boom")]}]}
    records = azure_vms.extension_records(resources, view)
    assert records["cs"] == {
        "name": "cs", "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
        "type_handler_version": "2.1", "handler_version": "2.1.10", "provisioning_state": "Creating",
        "handler_state": "transitioning", "state": "transitioning",
        "message": "[ProvisioningState/transitioning] Enable in progress", "auto_upgrade_minor_version": True,
        "enable_automatic_upgrade": False, "protected_settings_fingerprint": True}
    only = records["onlyInView"]
    assert (only["publisher"], only["type"], only["state"], only["type_handler_version"]) == (
        "Microsoft.Azure.Monitor", "AzureMonitorLinuxAgent", "failed", None)
    assert "secret-ish" not in repr(records) and "pbkdf2" not in repr(records)


def test_host_record_of_a_vm_and_of_a_scale_set_instance_drops_fingerprint_tags():
    status_vm = {"id": VM_ID, "name": "vm1", "location": "westeurope", "properties": {"instanceView": {
        "statuses": [status("PowerState/deallocated")],
        "vmAgent": {"vmAgentVersion": "2.9", "statuses": [{"displayStatus": "Not Ready"}]}}}}
    model_vm = {"id": VM_ID.lower(), "name": "vm1", "tags": {"env": "prod"},
                "properties": {"storageProfile": {"osDisk": {"osType": "Linux"}}}}
    record = azure_vms.host_record(status_vm, model_vm, "s1")
    assert (record["azure_vm_name"], record["azure_resource_group"], record["azure_power_state"]) == (
        "vm1", "RG-A", "deallocated")
    assert record["azure_vm_agent"]["ready"] is False and record["azure_tags"] == {"env": "prod"}
    assert record["rerun_extension_vm_name"] == "vm1" and record["rerun_extension_resource_group"] == "RG-A"

    scale_set = {"name": "ss", "tags": {"azure_vm.extensions.protected_settings.cs": "pbkdf2-sha256$1$a$b",
                                        "team": "web"}}
    instance = {"id": "/subscriptions/s1/resourceGroups/RG-A/providers/Microsoft.Compute/virtualMachineScaleSets/ss/"
                      "virtualMachines/3", "instanceId": "3", "name": "ss_3",
                "resources": [{"name": "cs", "properties": {"publisher": "P", "type": "T"}}],
                "properties": {"instanceView": {}}}
    record = azure_vms.host_record(instance, instance, "s1", scale_set=scale_set)
    assert record["azure_tags"] == {"team": "web"}
    assert record["azure_extensions"]["cs"]["protected_settings_fingerprint"] is True
    assert (record["azure_vmss_name"], record["azure_vmss_instance_id"]) == ("ss", "3")
    assert "azure_vm_name" not in record and record["azure_power_state"] == "unknown"


def vm(subscription, group, name):
    return {"azure_id": "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachines/%s" % (
        subscription, group, name), "azure_subscription_id": subscription, "azure_resource_group": group,
        "azure_vm_name": name}


def instance(subscription, group, scale_set, instance_id):
    return {"azure_id": "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Compute/virtualMachineScaleSets/%s/"
                        "virtualMachines/%s" % (subscription, group, scale_set, instance_id),
            "azure_subscription_id": subscription, "azure_resource_group": group, "azure_vmss_name": scale_set,
            "azure_vmss_instance_id": instance_id}


FLEET = [vm("sub-a", "rg-alpha", "web-001"), vm("sub-b", "RG-Alpha", "web-001"), vm("sub-a", "rg-alpha", "web-002"),
         vm("sub-b", "rg-beta", "web-002"), vm("sub-b", "rg-beta", "web-003"),
         instance("sub-a", "rg-alpha", "ss", "0"), instance("sub-b", "rg-alpha", "ss", "0")]


@pytest.mark.parametrize("mode, expected", [
    ("name", ["sub-a_rg-alpha_web-001", "sub-b_rg-alpha_web-001", "rg-alpha_web-002", "rg-beta_web-002", "web-003",
              "sub-a_rg-alpha_ss_0", "sub-b_rg-alpha_ss_0"]),
    ("resource_group_name", ["sub-a_rg-alpha_web-001", "sub-b_rg-alpha_web-001", "rg-alpha_web-002",
                             "rg-beta_web-002", "rg-beta_web-003", "sub-a_rg-alpha_ss_0", "sub-b_rg-alpha_ss_0"]),
])
def test_host_names_unique_deterministic_and_none_keeps_a_shared_name(mode, expected):
    names, renamed = azure_vms.host_names(FLEET, mode)
    assert names == expected
    for order in itertools.permutations(range(len(FLEET))):  # the same names whatever the order of the lists
        shuffled, dummy = azure_vms.host_names([FLEET[index] for index in order], mode)
        assert dict(zip(order, shuffled)) == dict(enumerate(expected))
    shared = dict(renamed)
    first = "web-001" if mode == "name" else "rg-alpha_web-001"
    assert shared[first] == [(FLEET[0]["azure_id"], expected[0]), (FLEET[1]["azure_id"], expected[1])]
    if mode == "name":
        assert sorted(shared) == ["ss_0", "web-001", "web-002"]
    else:
        assert sorted(shared) == ["rg-alpha_ss_0", "rg-alpha_web-001"]


def test_host_names_without_clashes_are_the_short_form():
    names, renamed = azure_vms.host_names([vm("s", "RG", "a"), vm("s", "RG", "b")], "name")
    assert (names, renamed) == (["a", "b"], [])
    names, renamed = azure_vms.host_names([vm("s", "RG", "a")], "resource_group_name")
    assert (names, renamed) == (["rg_a"], [])


def test_host_names_a_name_that_equals_another_hosts_longer_form_moves_too():
    # A scale-set instance's short name <scale set>_<id> can equal a VM's <resource group>_<name>: each host that
    # meets another's name at any form moves on, until all differ.
    records = [vm("s1", "ss", "0"), instance("s2", "rg", "ss", "0"), vm("s3", "rg", "ss_0")]
    names, dummy = azure_vms.host_names(records, "name")
    assert len(set(names)) == 3


def test_host_names_records_alike_down_to_the_subscription_are_numbered_in_id_order():
    names, dummy = azure_vms.host_names([vm("s", "rg", "a"), vm("s", "rg", "a")], "name")
    assert names == ["s_rg_a", "s_rg_a_2"]


def test_unique_subscriptions_lower_case_first_listed_order():
    assert azure_vms.unique_subscriptions(["B-1", "a-2", "b-1", "A-2", "c"]) == ["b-1", "a-2", "c"]
    assert azure_vms.unique_subscriptions(None) == []


def test_strict_option_spec_covers_booleans_and_choices_given():
    definitions = {"include_vmss_instances": {"type": "bool"}, "hostnames": {"type": "str", "choices": ["a", "b"]},
                   "strict": {"type": "boolean"}, "resource_groups": {"type": "list"}}
    spec = azure_vms.strict_option_spec(definitions, {"include_vmss_instances": "ture", "hostnames": "a",
                                                      "resource_groups": ["x"], "plugin": "p"})
    assert spec == {"include_vmss_instances": {"type": "bool"}, "hostnames": {"type": "str", "choices": ["a", "b"]}}


def test_validate_auth_options_apply_env_fallbacks_defaults_types_and_choices(monkeypatch):
    for key in ("AZURE_SUBSCRIPTION_ID", "AZURE_CLOUD_ENVIRONMENT", "AZURE_POLLING_INTERVAL", "AZURE_CA_BUNDLE",
                "REQUESTS_CA_BUNDLE", "ANSIBLE_AZURE_AUTH_SOURCE", "AZURE_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-from-env")
    monkeypatch.setenv("AZURE_POLLING_INTERVAL", "0.5")
    params = validate_auth_options({"tenant": "t"})
    assert params["subscription_id"] == "sub-from-env" and params["polling_interval"] == 0.5
    assert params["cloud_environment"] == "AzureCloud" and params["auth_source"] == "auto" and params["tenant"] == "t"
    assert params["disable_instance_discovery"] is False and params["secret"] is None
    assert validate_auth_options({"subscription_id": "given"})["subscription_id"] == "given"
    assert validate_auth_options({"disable_instance_discovery": "yes"})["disable_instance_discovery"] is True
    with pytest.raises(ac.AzureAuthError, match="value of auth_source must be one of: auto, credential_file"):
        validate_auth_options({"auth_source": "magic"})
    with pytest.raises(ac.AzureAuthError, match="'disable_instance_discovery' is of type str and we were unable to "
                                                "convert to bool: The value 'ture' is not a valid boolean"):
        validate_auth_options({"disable_instance_discovery": "ture"})
    monkeypatch.setenv("AZURE_POLLING_INTERVAL", "often")
    with pytest.raises(ac.AzureAuthError, match="'polling_interval' is of type str and we were unable to convert "
                                                "to float"):
        validate_auth_options({})


def test_validate_auth_options_errors_never_show_a_secret():
    with pytest.raises(ac.AzureAuthError) as failure:
        validate_auth_options({"secret": ["not", "a", "string", "s3cr3t-value"], "auth_source": "bogus"})
    assert "s3cr3t-value" not in failure.value.msg


def test_cached_records_reads_the_json_document_and_an_earlier_versions_records():
    records = [{"azure_id": VM_ID, "azure_tags": {"a": "1"}, "azure_extensions": {}, "azure_os_type": None}]
    assert azure_vms.cached_records(json.dumps(records)) == records
    assert azure_vms.cached_records(records) is records  # filled by an earlier version: the records themselves
    with pytest.raises(KeyError):
        azure_vms.cached_records("{not json")  # unreadable: read afresh, as for a missing entry


def test_plugin_groups_in_the_order_the_plugin_adds_them():
    record = {"azure_vm_name": "vm1", "azure_vmss_name": "flex", "azure_failed_extensions": ["a"],
              "azure_extensions": {"a": {"state": "failed"}, "b": {"state": "transitioning"}},
              "azure_vm_agent": {"ready": False}, "azure_power_state": "running", "azure_location": "west europe"}
    assert azure_vms.plugin_groups(record) == [
        "vms", "vmss_instances", "vmss_flex", "ext_failed", "ext_a", "ext_a_failed", "ext_b", "ext_b_transitioning",
        "ext_transitioning", "agent_not_ready", "power_running", "location_westeurope"]
    instance = {"azure_vmss_name": "uni", "azure_failed_extensions": [], "azure_extensions": {},
                "azure_vm_agent": {"ready": True}, "azure_power_state": "stopped", "azure_location": None}
    assert azure_vms.plugin_groups(instance) == ["vmss_instances", "vmss_uni", "power_stopped"]
