"""Unit tests of the connection layer's pure parts: clouds, auth-source detection, error messages."""
import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.core.pipeline.transport import RequestsTransportResponse

from ansible_collections.azure_vm.extensions.plugins.module_utils import auth as ac
from ansible_collections.azure_vm.extensions.plugins.module_utils import errors


@pytest.fixture(autouse=True)
def no_token_requests(monkeypatch):
    """These tests build connections for real clouds: no token may be asked for (nothing leaves this machine)."""
    from ansible_collections.azure_vm.extensions.plugins.module_utils import client

    monkeypatch.setattr(client, "prefetch_token", lambda credential, scope, source: None)


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
    assert ac.resolve_cloud(name).arm_endpoint == arm
    assert ac.resolve_cloud(name).custom is False


def test_unknown_cloud_names_the_allowed_values():
    with pytest.raises(ac.AzureAuthError, match="AzureChinaCloud, AzureCloud, AzureUSGovernment or an https://"):
        ac.resolve_cloud("AzureMoon")


def test_auto_source_order(monkeypatch, tmp_path):
    options = dict(client_id=None, secret=None, x509_certificate_path=None)
    assert ac.detect_source(options) == "cli"
    monkeypatch.setenv("IDENTITY_ENDPOINT", "https://127.0.0.1:1/msi/token")
    assert ac.detect_source(options) == "msi"
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(tmp_path / "token"))
    assert ac.detect_source(options) == "workload_identity"
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\nclient_id=a\n")
    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", str(credentials))
    assert ac.detect_source(options) == "credential_file"
    monkeypatch.setenv("AZURE_CLIENT_ID", "a")
    monkeypatch.setenv("AZURE_SECRET", "b")
    assert ac.detect_source(options) == "env"
    assert ac.detect_source(dict(options, client_id="x", secret="y")) == "options"


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
    text = errors.describe_azure_error(exc, "writing", "/subscriptions/s/resourceGroups/rg/providers/x")
    assert text == ("writing /subscriptions/s/resourceGroups/rg/providers/x failed: Conflict: another operation is "
                    "in progress (HTTP 409, x-ms-request-id: req-1, x-ms-correlation-request-id: corr-2)")


def test_validate_auth_options_is_ansible_cores_validation():
    with pytest.raises(ac.AzureAuthError, match="disable_instance_discovery"):
        ac.validate_auth_options({"disable_instance_discovery": "ture"}, "azure_vms")
    params = ac.validate_auth_options({"disable_instance_discovery": "yes", "ignored_key": 1})
    assert params["disable_instance_discovery"] is True and "ignored_key" not in params


def test_token_prefetch_only_for_credentials_that_cache_tokens():
    calls = []

    class Credential(object):
        def get_token(self, scope):
            calls.append(scope)

    assert ac.prefetch_token(Credential(), "s/.default", "cli") is None  # `az` runs for every token anyway
    thread = ac.prefetch_token(Credential(), "s/.default", "env")
    thread.join(5)
    assert calls == ["s/.default"]


def test_a_connection_for_another_subscription_shares_the_credential(monkeypatch):
    from ansible_collections.azure_vm.extensions.plugins.module_utils.client import AzureConnection

    monkeypatch.setenv("AZURE_CREDENTIAL_FILE", "/nonexistent")
    connection = AzureConnection(dict(auth_source="options", client_id="c", secret="s", tenant="t",
                                      subscription_id="sub-a", cloud_environment="AzureCloud"), pacing=True)
    other = connection.for_subscription("sub-b")
    assert other.subscription_id == "sub-b" and connection.subscription_id == "sub-a"
    assert other.credential is connection.credential and other.scheduler is connection.scheduler
    assert connection.for_subscription("sub-a") is connection and connection.for_subscription("SUB-A") is connection
    assert connection.for_subscription("sub-b") is other and other.for_subscription("SUB-B") is other  # kept
    assert other.for_subscription("sub-a") is connection
    assert AzureConnection(dict(auth_source="options", client_id="c", secret="s", tenant="t",
                                subscription_id="sub-a")).scheduler is None  # single tasks: azure-core's policies


def test_the_fleets_session_reads_the_environment_once_per_host_and_answers_as_requests(monkeypatch):
    """SteadyEnvironmentSession: the proxies, no_proxy and CA bundle requests would use, read once per host."""
    import requests

    from ansible_collections.azure_vm.extensions.plugins.module_utils.client import SteadyEnvironmentSession

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "management.usgovcloudapi.net,.internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/private-ca.pem")
    reads = []
    original = requests.sessions.get_environ_proxies

    def counted(url, no_proxy=None):
        reads.append(url)
        return original(url, no_proxy=no_proxy)

    urls = ["https://management.azure.com/subscriptions/s/a?api-version=1",
            "https://management.azure.com/subscriptions/s/b?api-version=1",
            "https://management.usgovcloudapi.net/subscriptions/s/a",
            "https://arm.internal.example/subscriptions/s/a"]
    expected = [requests.Session().merge_environment_settings(url, {}, None, verify, None)
                for url in urls for verify in (True, "/tmp/ca.pem")]
    monkeypatch.setattr(requests.sessions, "get_environ_proxies", counted)
    session = SteadyEnvironmentSession()
    for dummy in range(3):
        got = [session.merge_environment_settings(url, {}, None, verify, None)
               for url in urls for verify in (True, "/tmp/ca.pem")]
        assert got == expected
    assert expected[0]["proxies"]["https"] == "http://proxy.example:3128"
    assert expected[0]["verify"] == "/etc/ssl/private-ca.pem" and expected[1]["verify"] == "/tmp/ca.pem"
    assert "https" not in expected[4]["proxies"] and "https" not in expected[6]["proxies"]  # NO_PROXY
    # once per host and verify setting, where requests reads the environment at every request
    assert len(reads) == 3 * 2
