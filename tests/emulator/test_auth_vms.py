"""Tokens, metadata, VMs and instance views, through azure-identity and the real compute client."""
import base64
import json
import ssl
import urllib.request

import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.identity import ManagedIdentityCredential

from emulator_clients import RG, compute, credential, metadata, raw, vm_path


def test_metadata_both_forms(emulator):
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    for version, check in (("2022-09-01", lambda d: d[0]["resourceManager"] == emulator.base_url + "/"),
                           ("1.0", lambda d: "galleryEndpoint" in d and d["authentication"]["audiences"])):
        url = f"{emulator.base_url}/metadata/endpoints?api-version={version}"
        with urllib.request.urlopen(url, context=context) as response:
            assert check(json.loads(response.read()))


def test_token_claims_and_bad_secret(emulator):
    dummy, audience = metadata(emulator)
    token = credential(emulator).get_token(audience + ".default").token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["aud"] == audience and claims["tid"] == emulator.env["AZURE_TENANT"]
    assert claims["appid"] == emulator.env["AZURE_CLIENT_ID"]
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        credential(emulator, secret="wrong").get_token(audience + ".default")
    assert not [r for r in emulator.requests() if r["body"] is not None]  # form bodies are never logged


def test_managed_identity(emulator, monkeypatch):
    dummy, audience = metadata(emulator)
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.msi_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emulator.msi_header)
    token = ManagedIdentityCredential(connection_verify=emulator.ca_bundle).get_token(audience + ".default").token
    client = compute(emulator, cred=ManagedIdentityCredential(connection_verify=emulator.ca_bundle))
    assert client.virtual_machines.get(RG, "vm-web-02").name == "vm-web-02"
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["appid"] == "6f3a8c1e-0000-4000-8000-0000000000d1"


def test_arm_requires_token_and_api_version(emulator):
    status, dummy, body = raw(emulator, "GET", vm_path(emulator, "vm-web-01"), token=False)
    assert status == 401 and body["error"]["code"] == "AuthenticationFailed"
    status, dummy, body = raw(emulator, "GET", vm_path(emulator, "vm-web-01"), token=False,
                              headers={"Authorization": "Bearer not.a.token"})
    assert status == 401 and body["error"]["code"] == "InvalidAuthenticationToken"
    status, dummy, body = raw(emulator, "GET", vm_path(emulator, "vm-web-01"), query="")
    assert status == 400 and body["error"]["code"] == "MissingApiVersionParameter"


def test_vm_instance_view(emulator):
    client = compute(emulator)
    vm = client.virtual_machines.get(RG, "vm-web-01", expand="instanceView")
    agent = vm.instance_view.vm_agent
    assert agent.vm_agent_version == "2.9.1.1" and agent.statuses[0].display_status == "Ready"
    (ext,) = vm.instance_view.extensions
    assert ext.name == "customScript" and ext.type == "Microsoft.Azure.Extensions.CustomScript"
    assert ext.statuses[0].message == "Enable succeeded: \n[stdout]\nhello\n\n[stderr]\n"
    down = client.virtual_machines.instance_view(RG, "vm-agent-down").vm_agent.statuses[0]
    assert (down.level, down.display_status, down.message) == ("Warning", "Not Ready", "VM Agent is unresponsive.")
    failed = client.virtual_machines.instance_view(RG, "vm-failed-ext").extensions[0].statuses[0]
    assert failed.code.startswith("ProvisioningState/failed") and "ech: not found" in failed.message
    assert {v.name for v in client.virtual_machines.list(RG)} >= {"vm-web-01", "vm-win-01"}


def test_not_found_shapes(emulator):
    client = compute(emulator)
    with pytest.raises(ResourceNotFoundError) as exc:
        client.virtual_machines.get(RG, "nope")
    assert exc.value.error.code == "ResourceNotFound"
    assert "The Resource 'Microsoft.Compute/virtualMachines/nope' under resource group 'rg-demo' was not found" \
        in exc.value.error.message
    with pytest.raises(ResourceNotFoundError) as exc:
        client.virtual_machines.get("rg-missing", "vm-web-01")
    assert exc.value.error.code == "ResourceGroupNotFound"
    with pytest.raises(ResourceNotFoundError) as exc:
        client.virtual_machine_extensions.get(RG, "vm-web-01", "missing")
    assert exc.value.error.code == "ResourceNotFound"


def _assertion(iss, sub):
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=").decode()
    claims = base64.urlsafe_b64encode(json.dumps({"iss": iss, "sub": sub, "aud": "x"}).encode()).rstrip(b"=").decode()
    return f"{header}.{claims}.c2ln"


def test_client_assertion(emulator):
    from azure.identity import ClientAssertionCredential

    authority, audience = metadata(emulator)
    client_id = emulator.env["AZURE_CLIENT_ID"]
    for iss, sub in ((client_id, client_id), ("https://oidc.example", "system:serviceaccount:ns:sa")):
        cred = ClientAssertionCredential(emulator.env["AZURE_TENANT"], client_id, lambda: _assertion(iss, sub),
                                         authority=authority, disable_instance_discovery=True,
                                         connection_verify=emulator.ca_bundle)
        assert cred.get_token(audience + ".default").token.count(".") == 2
