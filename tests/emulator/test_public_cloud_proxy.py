"""public_cloud_proxy.py: public-cloud names reach the emulator through CONNECT, everything else is refused, and
--log-file records both (the Azure CLI witness reads it: benchmarks/witness_cli.py)."""
import http.client
import json
import ssl
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from emulator_control import Emulator

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    work = tmp_path_factory.mktemp("proxy")
    emu = Emulator.start(str(work / "emu"), public_cloud=True)
    ready, log = work / "proxy.json", work / "proxy.log"
    proc = subprocess.Popen([sys.executable, str(HERE / "public_cloud_proxy.py"), "--emulator-port",
                             emu.base_url.rsplit(":", 1)[1], "--ready-file", str(ready), "--log-file", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # bounds a hung start only
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists(), "the proxy did not start"
        yield emu, json.loads(ready.read_text())["port"], log
    finally:
        proc.terminate()
        proc.wait()
        emu.stop()


def _via_proxy(port, host, ca_bundle, path, method="GET", body=None, headers=None, with_headers=False):
    """What a client with HTTPS_PROXY does: CONNECT host:443 through the proxy, then TLS with host as SNI."""
    context = ssl.create_default_context(cafile=ca_bundle)
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=60)
    conn.set_tunnel(host, 443)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        answer = response.status, response.read()
        return answer + (dict(response.getheaders()),) if with_headers else answer
    finally:
        conn.close()


def test_public_cloud_names_are_tunnelled_to_the_emulator_and_others_refused(proxied):
    emu, port, log = proxied
    before = len(log.read_text().splitlines()) if log.exists() else 0
    status, body = _via_proxy(port, "management.azure.com", emu.ca_bundle,
                              "/metadata/endpoints?api-version=2022-09-01")
    assert status == 200 and json.loads(body)[0]["name"] == "AzureEmulator"
    status, body = _via_proxy(port, "login.microsoftonline.com", emu.ca_bundle, "/common/discovery/instance")
    assert status == 200 and json.loads(body)["metadata"][0]["aliases"] == ["login.microsoftonline.com"]
    with pytest.raises(OSError, match="403"):
        _via_proxy(port, "example.com", emu.ca_bundle, "/")
    entries = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert entries == [{"request": "CONNECT management.azure.com:443 HTTP/1.0", "tunnelled": True},
                       {"request": "CONNECT login.microsoftonline.com:443 HTTP/1.0", "tunnelled": True},
                       {"request": "CONNECT example.com:443 HTTP/1.0", "tunnelled": False}]


def test_urls_in_arm_answers_name_the_public_host(proxied):
    """Azure's Azure-AsyncOperation, Location and nextLink URLs name management.azure.com (the recordings in
    tests/data/recordings); through the proxy the emulator writes the host the client asked for, not 127.0.0.1."""
    emu, port, dummy = proxied
    env = emu.env
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": env["AZURE_CLIENT_ID"],
                                   "client_secret": env["AZURE_SECRET"],
                                   "scope": "https://management.azure.com/.default"})
    status, body = _via_proxy(port, "login.microsoftonline.com", emu.ca_bundle,
                              f"/{env['AZURE_TENANT']}/oauth2/v2.0/token", "POST", form,
                              {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200
    auth = {"Authorization": "Bearer " + json.loads(body)["access_token"], "Content-Type": "application/json"}
    sub = f"/subscriptions/{env['AZURE_SUBSCRIPTION_ID']}"
    path = f"{sub}/resourceGroups/rg-demo/providers/Microsoft.Compute/virtualMachines/vm-web-01/extensions/" \
           "customScript?api-version=2024-07-01"
    status, dummy, headers = _via_proxy(port, "management.azure.com", emu.ca_bundle, path, "DELETE",
                                        headers=auth, with_headers=True)
    assert status == 202
    for name in ("Azure-AsyncOperation", "Location"):
        assert headers[name].startswith(f"https://management.azure.com{sub}/providers/Microsoft.Compute/locations/"
                                        "westeurope/operations/"), headers[name]
    emu.settings(page_size=1)
    status, body = _via_proxy(port, "management.azure.com", emu.ca_bundle,
                              f"{sub}/providers/Microsoft.Features/features?api-version=2021-07-01", headers=auth)
    assert status == 200 and json.loads(body)["nextLink"].startswith(
        f"https://management.azure.com{sub}/providers/Microsoft.Features/features?")
