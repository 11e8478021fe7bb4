"""Real SDK clients pointed at a running emulator, authenticated the way a custom cloud is (test helper)."""
import json
import ssl
import urllib.request

from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.resource.features import FeatureClient
from azure.mgmt.resource.resources import ResourceManagementClient

RG = "rg-demo"
LOCATION = "westeurope"


def metadata(emu):
    """The authority and audience, discovered from the metadata endpoint like a custom-cloud client does."""
    context = ssl.create_default_context(cafile=emu.ca_bundle)
    with urllib.request.urlopen(f"{emu.base_url}/metadata/endpoints?api-version=2022-09-01", context=context) as r:
        cloud = json.loads(r.read())[0]
    return cloud["authentication"]["loginEndpoint"].rstrip("/"), cloud["authentication"]["audiences"][0]


def credential(emu, secret=None):
    authority, dummy = metadata(emu)
    env = emu.env
    return ClientSecretCredential(env["AZURE_TENANT"], env["AZURE_CLIENT_ID"], secret or env["AZURE_SECRET"],
                                  authority=authority, disable_instance_discovery=True,
                                  connection_verify=emu.ca_bundle)


def _kwargs(emu, cred):
    dummy, audience = metadata(emu)
    return dict(base_url=emu.base_url, credential_scopes=[audience + ".default"], connection_verify=emu.ca_bundle,
                polling_interval=0.05, retry_backoff_factor=0.01)


def compute(emu, cred=None):
    cred = cred or credential(emu)
    return ComputeManagementClient(cred, emu.env["AZURE_SUBSCRIPTION_ID"], **_kwargs(emu, cred))


def features(emu):
    cred = credential(emu)
    return FeatureClient(cred, emu.env["AZURE_SUBSCRIPTION_ID"], **_kwargs(emu, cred))


def resources(emu):
    cred = credential(emu)
    return ResourceManagementClient(cred, emu.env["AZURE_SUBSCRIPTION_ID"], **_kwargs(emu, cred))


def raw(emu, method, path, body=None, token=True, query="api-version=2026-04-01", headers=None):
    """(status, headers, json body) of a direct HTTPS call, with a real token unless token=False."""
    context = ssl.create_default_context(cafile=emu.ca_bundle)
    all_headers = {"Content-Type": "application/json"}
    if token:
        dummy, audience = metadata(emu)
        all_headers["Authorization"] = "Bearer " + credential(emu).get_token(audience + ".default").token
    all_headers.update(headers or {})
    url = f"{emu.base_url}{path}" + (f"?{query}" if query else "")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, context=context) as response:
            payload = response.read()
            return response.status, dict(response.headers), json.loads(payload) if payload else None
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        return exc.code, dict(exc.headers), json.loads(payload) if payload else None


def vm_path(emu, vm, rest=""):
    return (f"/subscriptions/{emu.env['AZURE_SUBSCRIPTION_ID']}/resourceGroups/{RG}/providers/"
            f"Microsoft.Compute/virtualMachines/{vm}{rest}")
