"""auth_source=auto: when no credential works, the error names every source tried and why it did not apply."""
import json

import pytest

from ansible_collections.azure_vm.extensions.plugins.module_utils import auth as ac
from ansible_collections.azure_vm.extensions.plugins.module_utils.client import AzureConnection

AUTH_VARIABLES = ("AZURE_CLIENT_ID", "AZURE_SECRET", "AZURE_TENANT", "AZURE_CERT_PATH", "AZURE_FEDERATED_TOKEN_FILE",
                  "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID")


@pytest.fixture(autouse=True)
def no_token_requests(monkeypatch):
    """These tests build connections for real clouds: no token may be asked for (nothing leaves this machine)."""
    from ansible_collections.azure_vm.extensions.plugins.module_utils import client

    monkeypatch.setattr(client, "prefetch_token", lambda credential, scope, source: None)


@pytest.fixture
def no_auth(monkeypatch, tmp_path):
    """No Azure variable, no credential file, no Azure CLI profile, and a PATH without `az`."""
    for key in AUTH_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure-cli"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tmp_path


def connect(**params):
    base = dict(auth_source="auto", cloud_environment="AzureCloud", subscription_id=None, client_id=None,
                secret=None, tenant=None, x509_certificate_path=None, cert_password=None)
    base.update(params)
    return AzureConnection(base)


def test_nothing_configured_lists_every_source(no_auth):
    with pytest.raises(ac.AzureAuthError) as caught:
        connect()
    message = str(caught.value)
    assert message.startswith("no Azure credential found. auth_source=auto tried, in order: ")
    expected = ["options: no client_id given",
                "env: AZURE_CLIENT_ID is not set",
                "credential_file: %s does not exist" % (no_auth / "credentials"),
                "workload_identity: AZURE_FEDERATED_TOKEN_FILE is not set",
                "msi: neither IDENTITY_ENDPOINT nor MSI_ENDPOINT is set",
                "cli: the Azure CLI (az) is not on PATH"]
    positions = [message.index(text) for text in expected]
    assert positions == sorted(positions)


def test_client_id_without_secret_does_not_fall_back_to_the_cli(no_auth, monkeypatch):
    # `az` is present and would be used: the half-configured service principal must still be reported.
    fake_az = no_auth / "bin" / "az"
    fake_az.parent.mkdir()
    fake_az.write_text("#!/bin/sh\necho '{\"id\": \"sub-from-cli\"}'\n")
    fake_az.chmod(0o755)
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-0000000000c1")
    monkeypatch.setenv("AZURE_TENANT", "tenant")
    with pytest.raises(ac.AzureAuthError) as caught:
        connect()
    message = str(caught.value)
    assert "env: AZURE_CLIENT_ID is set but neither AZURE_SECRET nor AZURE_CERT_PATH" in message
    assert "cli: not tried, because a client_id is set for a service principal" in message


def test_client_id_option_without_secret_is_named(no_auth):
    with pytest.raises(ac.AzureAuthError, match="options: client_id is set but neither secret nor "
                                                "x509_certificate_path"):
        connect(client_id="00000000-0000-0000-0000-0000000000c1", subscription_id="sub")


def fake_az(no_auth):
    """An `az` on PATH that must never be run: the subscription comes from the CLI's profile file."""
    path = no_auth / "bin" / "az"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\necho ran >> %s\nexit 1\n" % (no_auth / "az-ran"))
    path.chmod(0o755)


def test_failed_cli_subscription_lookup_keeps_the_list(no_auth):
    fake_az(no_auth)
    with pytest.raises(ac.AzureAuthError) as caught:
        connect()
    message = str(caught.value)
    assert "env: AZURE_CLIENT_ID is not set" in message
    assert "cli: no subscription_id given and the Azure CLI profile %s does not exist: run `az login`" % (
        no_auth / "azure-cli" / "azureProfile.json") in message
    assert not (no_auth / "az-ran").exists()


def test_cli_is_used_when_it_works(no_auth):
    fake_az(no_auth)
    profile = no_auth / "azure-cli" / "azureProfile.json"
    profile.parent.mkdir()
    # As the CLI writes it: a byte order mark, several subscriptions, one of them the default.
    profile.write_bytes(b"\xef\xbb\xbf" + json.dumps({"installationId": "x", "subscriptions": [
        {"id": "sub-other", "isDefault": False}, {"id": "sub-from-cli", "isDefault": True}]}).encode())
    connection = connect()
    assert connection.auth_source == "cli"
    assert connection.subscription_id == "sub-from-cli"
    assert not (no_auth / "az-ran").exists()


def test_cli_profile_without_a_default_is_named(no_auth):
    fake_az(no_auth)
    profile = no_auth / "azure-cli" / "azureProfile.json"
    profile.parent.mkdir()
    profile.write_text(json.dumps({"subscriptions": [{"id": "sub-other", "isDefault": False}]}))
    with pytest.raises(ac.AzureAuthError, match="has no default subscription"):
        connect()


def test_explicit_complete_env_is_chosen(no_auth, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", "id")
    monkeypatch.setenv("AZURE_SECRET", "s3cret")
    monkeypatch.setenv("AZURE_TENANT", "tenant")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub")
    connection = connect()
    assert connection.auth_source == "env"
    assert "s3cret" not in repr(vars(connection))
