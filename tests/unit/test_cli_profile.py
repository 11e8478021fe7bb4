"""auth_source=cli without subscription_id: the Azure CLI's default subscription, read from its profile file.

The profile is what `az login` / `az account set` write: $AZURE_CONFIG_DIR (default ~/.azure)/azureProfile.json,
UTF-8 with a byte-order mark, the chosen subscription marked "isDefault": true (azure-cli's
azure/cli/core/_session.py and _profile.py). No `az` process is started for it.
"""
import json
import subprocess

import pytest

from ansible_collections.azure_vm.extensions.plugins.module_utils import auth as ac
from ansible_collections.azure_vm.extensions.plugins.module_utils import client

AUTH_VARIABLES = ("AZURE_CLIENT_ID", "AZURE_SECRET", "AZURE_TENANT", "AZURE_CERT_PATH", "AZURE_FEDERATED_TOKEN_FILE",
                  "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_SUBSCRIPTION_ID", "AZURE_TENANT_ID", "AZURE_CONFIG_DIR")

# The shape azure-cli stores (keys from its _profile.py), two logins of one user, the second chosen.
PROFILE = {
    "installationId": "5c4d1f2e-0000-11ef-9f3b-000000000001",
    "subscriptions": [
        {"id": "11111111-1111-1111-1111-111111111111", "name": "dev", "state": "Enabled",
         "user": {"name": "someone@example.com", "type": "user"}, "isDefault": False,
         "tenantId": "22222222-2222-2222-2222-222222222222", "environmentName": "AzureCloud"},
        {"id": "33333333-3333-3333-3333-333333333333", "name": "prod", "state": "Enabled",
         "user": {"name": "someone@example.com", "type": "user"}, "isDefault": True,
         "tenantId": "22222222-2222-2222-2222-222222222222", "environmentName": "AzureCloud"},
    ],
}


@pytest.fixture
def cli_only(monkeypatch, tmp_path):
    """No Azure variable, no credential file, HOME in tmp_path, and `az` may not be started."""
    for key in AUTH_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    popen = subprocess.Popen

    def no_az(args, *more, **kwargs):
        # Other processes may run (Python's platform module starts `uname -p` once); the Azure CLI may not.
        if not isinstance(args, (str, bytes)) and str(args[0]).rsplit("/", 1)[-1] == "az":
            raise AssertionError("the Azure CLI was started: %r" % (args,))
        return popen(args, *more, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", no_az)
    # A connection requests its token in the background at once (through `az` here): nothing may leave the machine.
    monkeypatch.setattr(client, "prefetch_token", lambda credential, scope, source: None)
    return tmp_path


def write_profile(directory, data, encoding="utf-8-sig"):
    directory.mkdir(parents=True, exist_ok=True)
    text = data if isinstance(data, str) else json.dumps(data)
    (directory / "azureProfile.json").write_bytes(text.encode(encoding))
    return directory / "azureProfile.json"


def connect(**params):
    base = dict(auth_source="cli", cloud_environment="AzureCloud", subscription_id=None, client_id=None,
                secret=None, tenant=None, x509_certificate_path=None, cert_password=None)
    base.update(params)
    return client.AzureConnection(base)


def test_default_subscription_from_azure_config_dir_with_bom(cli_only, monkeypatch):
    path = write_profile(cli_only / "az-config", PROFILE)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # as azure-cli writes it
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(cli_only / "az-config"))
    connection = connect()
    assert connection.auth_source == "cli"
    assert connection.subscription_id == "33333333-3333-3333-3333-333333333333"


def test_default_directory_is_dot_azure_in_home_and_no_bom_reads_too(cli_only):
    write_profile(cli_only / "home" / ".azure", PROFILE, encoding="utf-8")
    assert connect().subscription_id == "33333333-3333-3333-3333-333333333333"


def test_explicit_subscription_wins_without_reading_the_profile(cli_only):
    assert connect(subscription_id="44444444-4444-4444-4444-444444444444").subscription_id == \
        "44444444-4444-4444-4444-444444444444"


def test_missing_profile_names_the_file_and_the_remedy(cli_only, monkeypatch):
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(cli_only / "nowhere"))
    with pytest.raises(ac.AzureAuthError) as caught:
        connect()
    assert str(caught.value) == (
        "auth_source=cli: no subscription_id given and the Azure CLI profile %s does not exist: run `az login`, or "
        "give subscription_id (option or AZURE_SUBSCRIPTION_ID)" % (cli_only / "nowhere" / "azureProfile.json"))


def test_profile_without_a_default_subscription(cli_only, monkeypatch):
    profile = dict(PROFILE, subscriptions=[dict(sub, isDefault=False) for sub in PROFILE["subscriptions"]])
    path = write_profile(cli_only / "az-config", profile)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(cli_only / "az-config"))
    with pytest.raises(ac.AzureAuthError) as caught:
        connect()
    assert str(caught.value) == (
        "auth_source=cli: no subscription_id given and the Azure CLI profile %s has no default subscription "
        "(isDefault): run `az account set --subscription ID`, or give subscription_id (option or "
        "AZURE_SUBSCRIPTION_ID)" % path)


@pytest.mark.parametrize("content", ["", "{not json", "[]", '{"subscriptions": {}}'])
def test_unusable_profile_is_a_clear_error(cli_only, monkeypatch, content):
    path = write_profile(cli_only / "az-config", content)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(cli_only / "az-config"))
    with pytest.raises(ac.AzureAuthError) as caught:
        connect()
    message = str(caught.value)
    assert message.startswith("auth_source=cli: no subscription_id given and the Azure CLI profile %s " % path)
    assert message.endswith("give subscription_id (option or AZURE_SUBSCRIPTION_ID)")


def test_auto_falls_back_to_the_cli_profile(cli_only, monkeypatch):
    # auto picks the CLI only when `az` is on PATH (AzureCliCredential runs it for tokens, later, not here).
    fake_az = cli_only / "bin" / "az"
    fake_az.parent.mkdir()
    fake_az.write_text("#!/bin/sh\nexit 1\n")
    fake_az.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake_az.parent))
    write_profile(cli_only / "az-config", PROFILE)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(cli_only / "az-config"))
    connection = connect(auth_source="auto")
    assert (connection.auth_source, connection.subscription_id) == ("cli", "33333333-3333-3333-3333-333333333333")
