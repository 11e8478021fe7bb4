"""What the connection does to keep the fleet's CPU per request small, against the emulator with the real SDKs:

* a VM read is the REST JSON Azure sent, not SDK models turned back into JSON (TypeSpec-generated SDKs hand the
  body over with stream=True), and it is the same JSON the models gave;
* a 429 answered to such a read still holds the Compute bucket its body names (the body of a streamed response is
  read before the throttling policy looks at it);
* a connection sized for N threads keeps N HTTPS connections: N threads reading at once open no more than N.
"""
import os
import threading
from importlib.metadata import version

import pytest

from ansible_collections.azure_vm.extensions.plugins.module_utils import auth, client
from ansible_collections.azure_vm.extensions.plugins.module_utils.vm_extension_state import read_vm

RG = "rg-demo"
VM = "vm-failed-ext"  # default seed: a VM with an extension whose handler failed (instance view with substatuses)


@pytest.fixture
def connection(emulator, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_")):
            monkeypatch.delenv(key)
    for key, value in emulator.env.items():
        monkeypatch.setenv(key, value)
    return client.AzureConnection(auth.validate_auth_options({}), pacing=True)


def without_live_times(vm):
    """The VM agent's status time is the emulator's clock at each read; everything else is stored state."""
    for status in vm["properties"]["instanceView"]["vmAgent"]["statuses"]:
        status.pop("time", None)
    return vm


def test_a_vm_read_is_the_json_azure_sent_without_sdk_models(connection, monkeypatch):
    from azure.mgmt.compute import models

    typespec = int(version("azure-mgmt-compute").split(".")[0]) >= 38
    assert client._streams_json("compute") is typespec
    through_models = client.as_rest(connection.compute.virtual_machines.get(RG, VM, expand="instanceView"))
    built = []
    original = models.VirtualMachine.__init__

    def counted(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(models.VirtualMachine, "__init__", counted)
    vm = read_vm(connection, RG, VM)
    assert without_live_times(vm) == without_live_times(through_models)
    assert vm["properties"]["instanceView"]["extensions"], "the seed's VM has an extension with its instance view"
    assert len(built) == (0 if typespec else 1)


def test_a_429_on_a_vm_read_holds_the_compute_bucket_it_names(connection, emulator):
    # The body Compute sends (tests/emulator/azure_emulator/throttling.py, from ../shared/reference/throttling.md)
    emulator.faults([{"match": {"method": "GET", "path": "(?i)/virtualMachines/%s$" % VM},
                      "respond": {"status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {
                          "code": "OperationNotAllowed",
                          "message": "The server rejected the request because too many requests have been received "
                                     "for this subscription.",
                          "details": [{"code": "TooManyRequests", "target": "LowCostGetResource"}]}}},
                      "times": 1}])
    vm = read_vm(connection, RG, VM)
    assert vm["name"] == VM
    reads = [e for e in emulator.arm_requests() if e["method"] == "GET" and e["path"].endswith("/" + VM)]
    assert [e["status"] for e in reads] == [429, 200], [(e["status"], e.get("time"), e.get("connection"), e.get("query")) for e in reads]
    held = dict((key, bucket.throttled) for key, bucket in connection.scheduler.buckets.items())
    vm_bucket = [key for key in held if key[0] == "compute" and key[2] == "LowCostGet" and len(key) == 5]
    assert len(vm_bucket) == 1 and vm_bucket[0][-1] == VM.lower()
    assert held[vm_bucket[0]] == 1
    assert all(count == 0 for key, count in held.items() if key != vm_bucket[0]), held


def test_n_threads_reading_at_once_keep_n_connections(connection, emulator):
    threads = 16   # more than requests' default pool of 10
    connection.use_threads(threads)
    names = ["vm-web-01", "vm-web-02", "vm-win-01", "vm-agent-down", "vm-failed-ext"]
    barrier = threading.Barrier(threads)
    errors = []

    def reader(index):
        try:
            for round_ in range(5):
                barrier.wait(30)          # every thread sends at the same moment, round after round
                read_vm(connection, RG, names[(index + round_) % len(names)])
        except Exception as exc:  # pylint: disable=broad-except  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=reader, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not errors, errors
    reads = [e for e in emulator.arm_requests() if e["method"] == "GET"]
    assert len(reads) == threads * 5
    assert len(set(e["connection"] for e in reads)) <= threads
