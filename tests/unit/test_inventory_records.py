"""Unit tests of the azure_vms inventory plugin's record building and of validate_auth_options."""
import pytest

from ansible_collections.azure_vm.extensions.plugins.inventory import azure_vms
from ansible_collections.azure_vm.extensions.plugins.module_utils import auth

VM_ID = "/subscriptions/s1/resourceGroups/RG-A/providers/Microsoft.Compute/virtualMachines/vm1"


def status(code, message=None):
    return {"code": code, "message": message}


@pytest.mark.parametrize("handler, provisioning, state", [
    ("failed", "Succeeded", "failed"),
    ("succeeded", "Failed", "succeeded"),  # the handler's own report wins
    ("unknown", "Failed", "failed"),
    ("unknown", "Creating", "transitioning"),
    ("unknown", "Succeeded", "unknown"),
    ("unknown", None, "unknown"),
])
def test_extension_state(handler, provisioning, state):
    assert azure_vms.extension_state(handler, provisioning) == state


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


def test_validate_auth_options_applies_env_fallbacks_defaults_and_choices(monkeypatch, tmp_path):
    for key in ("AZURE_SUBSCRIPTION_ID", "AZURE_CLOUD_ENVIRONMENT", "AZURE_POLLING_INTERVAL", "AZURE_CA_BUNDLE",
                "REQUESTS_CA_BUNDLE", "ANSIBLE_AZURE_AUTH_SOURCE", "AZURE_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub-from-env")
    monkeypatch.setenv("AZURE_POLLING_INTERVAL", "0.5")
    seen = auth.validate_auth_options({"cloud_environment": None, "tenant": "t"})
    assert seen["subscription_id"] == "sub-from-env" and seen["polling_interval"] == 0.5
    assert seen["cloud_environment"] == "AzureCloud" and seen["auth_source"] == "auto" and seen["tenant"] == "t"
    assert auth.validate_auth_options({"subscription_id": "given"})["subscription_id"] == "given"
    with pytest.raises(auth.AzureAuthError, match="auth_source must be one of: auto, credential_file"):
        auth.validate_auth_options({"auth_source": "magic"})
    monkeypatch.setenv("AZURE_POLLING_INTERVAL", "often")
    with pytest.raises(auth.AzureAuthError, match="polling_interval"):
        auth.validate_auth_options({})
