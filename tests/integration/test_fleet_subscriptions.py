"""Issue 23: the extensions role and the fleet module write to the VM the inventory named, in its own subscription.

Two subscriptions with a VM of the same resource group and name (tests/integration/data/two-subscriptions-seed.yml):
A's rg-alpha/web-001 is healthy, B's has a failed customScript. Here AZURE_SUBSCRIPTION_ID names B, the trap a task
without the host's subscription falls into for A's web-001. The hosts carry azure_subscription_id as the azure_vms
inventory gives it.
"""
import json
import subprocess

import pytest
import yaml

from harness import REPO_ROOT, VENV_BIN

SEED = REPO_ROOT / "tests" / "integration" / "data" / "two-subscriptions-seed.yml"
A = "2b7e0c5a-0000-4000-8000-00000000000a"
B = "2b7e0c5a-0000-4000-8000-00000000000b"
MONITOR = {"name": "monitor", "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent",
           "type_handler_version": "1.33"}


@pytest.fixture(scope="module")
def two_subscriptions(tmp_path_factory):
    from emulator_control import Emulator

    emu = Emulator.start(str(tmp_path_factory.mktemp("fleet-two-subscriptions")), seed=str(SEED), timeout=180)
    yield emu
    emu.stop()


@pytest.fixture
def world(two_subscriptions):
    two_subscriptions.reset()
    return two_subscriptions


def writes_in(emulator, subscription, since=0):
    return [(w["method"], w["path"].split("/providers/", 1)[1]) for w in emulator.writes()[since:]
            if w["path"].lower().startswith("/subscriptions/%s/" % subscription)]


def run_role(emulator, ansible_env, tmp_path, hosts):
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"fleet": {"hosts": hosts, "vars": {"ansible_connection": "local"}}}))
    env = dict(ansible_env, **emulator.env)
    env.update(AZURE_SUBSCRIPTION_ID=B, AZURE_POLLING_INTERVAL="0.2", ANSIBLE_STDOUT_CALLBACK="json_results")
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(REPO_ROOT / "playbooks" / "fleet.yml"), "-i",
                           str(inventory)], env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_the_role_writes_each_hosts_vm_in_its_own_subscription(world, ansible_env, tmp_path):
    hosts = {
        "a-web-001": {"azure_subscription_id": A, "azure_resource_group": "rg-alpha", "azure_vm_name": "web-001",
                      "azure_vm_extensions": [MONITOR]},
        "b-web-003": {"azure_subscription_id": B, "azure_resource_group": "rg-beta", "azure_vm_name": "web-003",
                      "azure_vm_extensions": [MONITOR]},
    }
    results = run_role(world, ansible_env, tmp_path, hosts)
    assert writes_in(world, A) == [("PUT", "Microsoft.Compute/virtualMachines/web-001/extensions/monitor")]
    assert writes_in(world, B) == [("PUT", "Microsoft.Compute/virtualMachines/web-003/extensions/monitor")]
    fleet = next(task["hosts"][host] for play in results["plays"] for task in play["tasks"]
                 for host in task["hosts"]
                 if task["task"]["name"] == "Converge the VM extensions of every host in the batch")
    assert fleet["hosts"]["a-web-001"]["subscription_id"] == A
    assert fleet["hosts"]["b-web-003"]["subscription_id"] == B

    # Second run: every VM matches, no write anywhere; one read per VM, each in its own subscription.
    start = len(world.writes())
    reads = len(world.arm_requests())
    run_role(world, ansible_env, tmp_path, hosts)
    assert world.writes()[start:] == []
    paths = [r["path"].lower() for r in world.arm_requests()[reads:] if "/virtualmachines/" in r["path"].lower()]
    assert sorted(paths) == sorted([
        "/subscriptions/%s/resourcegroups/rg-alpha/providers/microsoft.compute/virtualmachines/web-001" % A,
        "/subscriptions/%s/resourcegroups/rg-beta/providers/microsoft.compute/virtualmachines/web-003" % B])
