"""auth_source=auto: when no credential works, the error names every source tried and why it did not apply."""
import pytest

from ansible_collections.azure_vm.extensions.plugins.module_utils import azure_connection as ac

AUTH_VARIABLES = ("AZURE_CLIENT_ID", "AZURE_SECRET", "AZURE_TENANT", "AZURE_CERT_PATH", "AZURE_FEDERATED_TOKEN_FILE",
                  "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID")
# The CLI's default subscription comes from its profile file (tests/unit/test_cli_profile.py), not from `az`.
PROFILE = '{"subscriptions": [{"id": "sub-from-cli", "isDefault": true}]}'


@pytest.fixture
def no_auth(monkeypatch, tmp_path):
    """No Azure variable, no credential file, no Azure CLI profile, and a PATH without `az`."""
    for key in AUTH_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "azure-cli"))
    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    # A connection requests its token in the background at once; here that would go to login.microsoftonline.com.
    monkeypatch.setattr(ac.TokenPrefetch, "_fetch", lambda self: None)
    return tmp_path


def connect(**params):
    base = dict(auth_source="auto", cloud_environment="AzureCloud", subscription_id=None, client_id=None,
                secret=None, tenant=None, x509_certificate_path=None, cert_password=None)
    base.update(params)
    return ac.AzureConnection(base)


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


def test_failed_cli_subscription_lookup_keeps_the_list(no_auth):
    fake_az = no_auth / "bin" / "az"
    fake_az.parent.mkdir()
    fake_az.write_text("#!/bin/sh\necho 'Please run az login' >&2\nexit 1\n")
    fake_az.chmod(0o755)
    with pytest.raises(ac.AzureAuthError) as caught:
        connect()
    message = str(caught.value)
    assert "env: AZURE_CLIENT_ID is not set" in message
    assert "cli: no subscription_id given and the Azure CLI profile %s does not exist" % (
        no_auth / "azure-cli" / "azureProfile.json") in message


def test_cli_is_used_when_it_works(no_auth):
    fake_az = no_auth / "bin" / "az"
    fake_az.parent.mkdir()
    fake_az.write_text("#!/bin/sh\nexit 1\n")
    fake_az.chmod(0o755)
    (no_auth / "azure-cli").mkdir()
    (no_auth / "azure-cli" / "azureProfile.json").write_text(PROFILE)
    connection = connect()
    assert connection.auth_source == "cli"
    assert connection.subscription_id == "sub-from-cli"


def test_explicit_complete_env_is_chosen(no_auth, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", "id")
    monkeypatch.setenv("AZURE_SECRET", "s3cret")
    monkeypatch.setenv("AZURE_TENANT", "tenant")
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "sub")
    connection = connect()
    assert connection.auth_source == "env"
    assert "s3cret" not in repr(vars(connection))
