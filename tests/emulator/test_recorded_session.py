"""Replay the extension interactions of two real Azure recordings against the emulator.

The requests (method, path shape, body) come from the recordings; the emulator must answer with the same
status codes, the same LRO headers (Azure-AsyncOperation on PUT/PATCH; Azure-AsyncOperation and Location on
DELETE 202; no Retry-After on polls), poll bodies with the same keys, and extension bodies with the same key set
(protectedSettings is never returned, in either).
"""
import json
import ssl
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from emulator_clients import RG, credential, metadata

# Public recordings copied into the repository (sources: tests/data/README.md).
RECORDINGS = Path(__file__).resolve().parents[1] / "data" / "recordings"
YAML_RECORDING = RECORDINGS / "test_mgmt_compute.test_vm_extensions.yaml"
JSON_RECORDING = RECORDINGS / "azure-sdk-assets_test_mgmt_compute_vm.test_compute_vm.extensions-subset.json"


def _json_or_none(text):
    """Bodies of the non-extension setup calls are sometimes stored as repr'd bytes; those are not needed."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _load_yaml():
    entries = []
    for item in yaml.safe_load(YAML_RECORDING.read_text())["interactions"]:
        request, response = item["request"], item["response"]
        body = response["body"]["string"]
        entries.append({
            "method": request["method"], "uri": request["uri"],
            "body": _json_or_none(request.get("body")),
            "status": response["status"]["code"],
            "response": _json_or_none(body),
            "headers": {k.lower() for k in response["headers"]},
        })
    return entries


def _load_json():
    return [{
        "method": e["RequestMethod"], "uri": e["RequestUri"], "body": e.get("RequestBody"),
        "status": int(e["StatusCode"]), "response": e.get("ResponseBody"),
        "headers": {k.lower() for k in e.get("ResponseHeaders", {})},
    } for e in json.loads(JSON_RECORDING.read_text())["Entries"]]


def _is_poll(entry):
    return "/operations/" in entry["uri"]


def _relevant(entries):
    """Extension calls (and their polls) plus instance views; the recordings also hold storage/network setup."""
    keep = []
    for entry in entries:
        path = urlsplit(entry["uri"]).path
        if "/virtualMachines/" in path and ("/extensions" in path or path.endswith("/instanceView")):
            keep.append(entry)
        elif _is_poll(entry) and "Microsoft.Compute" in path and keep:
            keep.append(entry)
    return keep


class Session:
    def __init__(self, emulator):
        self.emu = emulator
        self.context = ssl.create_default_context(cafile=emulator.ca_bundle)
        dummy, audience = metadata(emulator)
        self.token = credential(emulator).get_token(audience + ".default").token

    def call(self, method, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self.context) as response:
                payload = response.read()
                return response.status, response.headers, json.loads(payload) if payload else None
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            return exc.code, exc.headers, json.loads(payload) if payload else None

    def map_uri(self, uri, vm):
        """Swap the recording's subscription/group/VM for the emulator's, keeping the rest of the path."""
        parts = urlsplit(uri).path.split("/")
        parts[2] = self.emu.env["AZURE_SUBSCRIPTION_ID"]
        parts[4] = RG
        parts[8] = vm
        return f"{self.emu.base_url}{'/'.join(parts)}?api-version=2026-04-01"


def _ext_keys(body):
    return set(body) - {"tags"}, set(body["properties"]) - {"protectedSettings"}


def replay(emulator, entries, vm):
    emulator.settings(handler_duration_s=0.3, delete_duration_s=0.2)
    session = Session(emulator)
    relevant = _relevant(entries)
    assert relevant, "no extension interactions found in the recording"
    index = 0
    while index < len(relevant):
        entry = relevant[index]
        index += 1
        recorded_polls = []
        while index < len(relevant) and _is_poll(relevant[index]):
            recorded_polls.append(relevant[index])
            index += 1
        body = entry["body"]
        if isinstance(body, dict) and "location" in body:
            body = dict(body, location="westeurope")
        status, headers, answer = session.call(entry["method"], session.map_uri(entry["uri"], vm), body)
        assert status == entry["status"], (entry["method"], entry["uri"], answer)
        for header in ("azure-asyncoperation", "location", "retry-after"):
            assert (header in {k.lower() for k in headers}) == (header in entry["headers"]), (entry["method"], header)
        recorded = entry["response"]
        if isinstance(recorded, dict) and recorded.get("type") == "Microsoft.Compute/virtualMachines/extensions":
            assert _ext_keys(answer) == _ext_keys(recorded)
            assert "protectedSettings" not in answer["properties"]
            assert answer["properties"]["provisioningState"] == recorded["properties"]["provisioningState"]
        elif isinstance(recorded, dict) and "value" in recorded:
            mine = [e for e in answer["value"] if e["name"] == recorded["value"][-1]["name"]]
            assert mine and _ext_keys(mine[0]) == _ext_keys(recorded["value"][-1])
        elif isinstance(recorded, dict) and "vmAgent" in recorded:
            assert set(answer["vmAgent"]) >= set(recorded["vmAgent"])
        if recorded_polls:
            _follow(session, headers["Azure-AsyncOperation"], recorded_polls)


def _follow(session, url, recorded_polls):
    """Poll like ARMPolling does and compare every body's keys with the recorded poll of the same status."""
    shapes = {poll["response"]["status"]: set(poll["response"]) for poll in recorded_polls}
    for dummy in range(200):
        status, headers, body = session.call("GET", url)
        assert status == 200 and "retry-after" not in {k.lower() for k in headers}
        assert set(body) == shapes.get(body["status"], {"startTime", "status", "name"} | (
            {"endTime"} if body["status"] != "InProgress" else set()))
        if body["status"] != "InProgress":
            assert body["status"] == recorded_polls[-1]["response"]["status"] == "Succeeded"
            return
        time.sleep(0.05)
    pytest.fail("operation never finished")


def test_replay_yaml_recording(emulator):
    replay(emulator, _load_yaml(), "vm-web-02")


def test_replay_json_recording(emulator):
    replay(emulator, _load_json(), "vm-win-01")
