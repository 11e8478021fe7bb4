"""Unit tests of the connection layer's pure parts: clouds, auth-source detection, error messages."""
import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.core.pipeline.transport import RequestsTransportResponse

from ansible_collections.azure_vm.extensions.plugins.module_utils import azure_connection as ac


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for key in ("AZURE_CLIENT_ID", "AZURE_SECRET", "AZURE_TENANT", "AZURE_CERT_PATH", "AZURE_FEDERATED_TOKEN_FILE",
                "IDENTITY_ENDPOINT", "MSI_ENDPOINT", "AZURE_SUBSCRIPTION_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", str(tmp_path / "none"))


@pytest.mark.parametrize("name, arm", [
    ("AzureCloud", "https://management.azure.com/"),
    ("AZURE_CHINA_CLOUD", "https://management.chinacloudapi.cn/"),
    ("AzureUSGovernment", "https://management.usgovcloudapi.net/"),
])
def test_known_clouds(name, arm):
    assert ac.resolve_cloud(name)[0] == arm
    assert ac.resolve_cloud(name)[3] is False


def test_unknown_cloud_names_the_allowed_values():
    with pytest.raises(ac.AzureAuthError, match="AzureChinaCloud, AzureCloud, AzureUSGovernment or an https://"):
        ac.resolve_cloud("AzureMoon")


def test_auto_source_order(monkeypatch, tmp_path):
    options = dict(client_id=None, secret=None, x509_certificate_path=None)
    assert ac.AzureConnection._detect_source(options) == "cli"
    monkeypatch.setenv("IDENTITY_ENDPOINT", "https://127.0.0.1:1/msi/token")
    assert ac.AzureConnection._detect_source(options) == "msi"
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "token"))
    assert ac.AzureConnection._detect_source(options) == "workload_identity"
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\nclient_id=a\n")
    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", str(credentials))
    assert ac.AzureConnection._detect_source(options) == "credential_file"
    monkeypatch.setenv("AZURE_CLIENT_ID", "a")
    monkeypatch.setenv("AZURE_SECRET", "b")
    assert ac.AzureConnection._detect_source(options) == "env"
    assert ac.AzureConnection._detect_source(dict(options, client_id="x", secret="y")) == "options"


def test_credential_file_profile(monkeypatch, tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\nclient_id=a\n[prod]\nclient_id=p\nsecret=s\ntenant=t\nsubscription_id=sub\n")
    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", str(credentials))
    assert ac.read_credential_file("prod")["subscription_id"] == "sub"
    assert ac.read_credential_file(None)["client_id"] == "a"
    with pytest.raises(ac.AzureAuthError, match="profile 'dev' not found"):
        ac.read_credential_file("dev")


def make_error(status, body, headers):
    import requests

    raw = requests.Response()
    raw.status_code = status
    raw._content = body.encode()
    raw.headers.update(headers)
    raw.headers["Content-Type"] = "application/json"
    response = RequestsTransportResponse(HttpRequest("PUT", "https://x/y"), raw)
    return HttpResponseError(response=response)


def test_error_message_has_operation_resource_code_message_and_ids():
    exc = make_error(409, '{"error": {"code": "Conflict", "message": "another operation is in progress"}}',
                     {"x-ms-request-id": "req-1", "x-ms-correlation-request-id": "corr-2"})
    text = ac.describe_azure_error(exc, "writing", "/subscriptions/s/resourceGroups/rg/providers/x")
    assert text == ("writing /subscriptions/s/resourceGroups/rg/providers/x failed: Conflict: another operation is "
                    "in progress (HTTP 409, x-ms-request-id: req-1, x-ms-correlation-request-id: corr-2)")
