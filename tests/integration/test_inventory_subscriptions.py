"""Issue 23: the azure_vms inventory over two subscriptions whose VMs collide by name, resource group and name, and
scale set (tests/integration/data/two-subscriptions-seed.yml), with the real ansible-inventory and ansible-playbook.

- The documented repair (azure_vm.extensions.rerun_extension --limit azure_ext_failed) writes only to the VM the
  inventory named, in its own subscription, although AZURE_SUBSCRIPTION_ID names the other one.
- Host names are unique across subscriptions in every `hostnames` mode, with a warning; no two VMs merge.
- Subscriptions listed twice in different letter case are read once.
- The cache key follows the subscription of the authentication when `subscriptions` is empty.
"""
import json
import subprocess

import pytest

from harness import REPO_ROOT, VENV_BIN
# inventory is a fixture; imported here, it runs against this module's emulator.
from test_inventory import group_hosts, inventory, listed, write_inventory  # noqa: F401 pylint: disable=unused-import

SEED = REPO_ROOT / "tests" / "integration" / "data" / "two-subscriptions-seed.yml"
A = "2b7e0c5a-0000-4000-8000-00000000000a"
B = "2b7e0c5a-0000-4000-8000-00000000000b"
VM_IDS = {
    "a-web-001": f"/subscriptions/{A}/resourceGroups/rg-alpha/providers/Microsoft.Compute/virtualMachines/web-001",
    "a-web-002": f"/subscriptions/{A}/resourceGroups/rg-alpha/providers/Microsoft.Compute/virtualMachines/web-002",
    "b-web-001": f"/subscriptions/{B}/resourceGroups/rg-alpha/providers/Microsoft.Compute/virtualMachines/web-001",
    "b-web-002": f"/subscriptions/{B}/resourceGroups/rg-beta/providers/Microsoft.Compute/virtualMachines/web-002",
    "b-web-003": f"/subscriptions/{B}/resourceGroups/rg-beta/providers/Microsoft.Compute/virtualMachines/web-003",
}
# What each VM (and scale-set instance) is named; every clash resolves by resource group, then subscription.
NAMES = {
    "name": {"a-web-001": f"{A}_rg-alpha_web-001", "a-web-002": "rg-alpha_web-002",
             "b-web-001": f"{B}_rg-alpha_web-001", "b-web-002": "rg-beta_web-002", "b-web-003": "web-003",
             "a-vmss": f"{A}_rg-alpha_vmss-web_0", "b-vmss": f"{B}_rg-alpha_vmss-web_0"},
    "resource_group_name": {"a-web-001": f"{A}_rg-alpha_web-001", "a-web-002": "rg-alpha_web-002",
                            "b-web-001": f"{B}_rg-alpha_web-001", "b-web-002": "rg-beta_web-002",
                            "b-web-003": "rg-beta_web-003",
                            "a-vmss": f"{A}_rg-alpha_vmss-web_0", "b-vmss": f"{B}_rg-alpha_vmss-web_0"},
}


@pytest.fixture(scope="module")
def two_subscriptions(tmp_path_factory):
    from emulator_control import Emulator

    emu = Emulator.start(str(tmp_path_factory.mktemp("two-subscriptions")), seed=str(SEED), timeout=180)
    yield emu
    emu.stop()


@pytest.fixture
def emulator(two_subscriptions):
    """Overrides conftest's emulator, so that the inventory fixture talks to this world."""
    two_subscriptions.reset()
    return two_subscriptions


def writes_in(emulator, subscription, since=0):
    return [(w["method"], w["path"]) for w in emulator.writes()[since:]
            if w["path"].lower().startswith(f"/subscriptions/{subscription}/")]


def requests_in(emulator, subscription):
    return [r for r in emulator.arm_requests() if r["path"].lower().startswith(f"/subscriptions/{subscription}/")]


def repair(ansible_env, emulator, source, tmp_path, target=("--limit", "azure_ext_failed")):
    """The documented repair: the collection's rerun playbook, limited to the failed group, from a fresh read."""
    env = dict(ansible_env)
    env.update(emulator.env)  # AZURE_SUBSCRIPTION_ID is A's
    env.update({"AZURE_POLLING_INTERVAL": "0.2", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"})
    cmd = [str(VENV_BIN / "ansible-playbook"), "azure_vm.extensions.rerun_extension", "-i", source,
           "--flush-cache", *target, "-e", "rerun_extension_name=customScript",
           "-e", "rerun_extension_no_protected_settings=true",
           "-e", "rerun_extension_backup_dir=%s" % (tmp_path / "backups")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_repair_writes_only_to_the_failed_vm_in_its_own_subscription(inventory, emulator, tmp_path, ansible_env):
    assert emulator.env["AZURE_SUBSCRIPTION_ID"] == A
    source = write_inventory(tmp_path / "inv", {"subscriptions": [A, B]})

    first = repair(ansible_env, emulator, source, tmp_path)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    b_path = VM_IDS["b-web-001"] + "/extensions/customScript"
    assert writes_in(emulator, A) == []  # the healthy VM of the same resource group and name: not one write
    assert [w for w in requests_in(emulator, A) if w["method"] != "GET"] == []
    assert writes_in(emulator, B) == [("DELETE", b_path), ("PUT", b_path)]
    assert f"rerun_extension: host={B}_rg-alpha_web-001 subscription={B} vm=web-001" in first.stdout
    assert "outcome=succeeded" in first.stdout and "PLAY RECAP" in first.stdout

    data = listed(inventory, source)
    hostvars = data["_meta"]["hostvars"]
    assert group_hosts(data, "azure_ext_failed") == []
    assert hostvars[f"{B}_rg-alpha_web-001"]["azure_extensions"]["customScript"]["state"] == "succeeded"
    assert hostvars[f"{A}_rg-alpha_web-001"]["azure_extensions"]["customScript"]["state"] == "succeeded"

    # Again: nothing is failed any more, so nothing is targeted and nothing is written.
    before = len(emulator.writes())
    second = repair(ansible_env, emulator, source, tmp_path)
    assert second.returncode != 0 and "no hosts" in (second.stdout + second.stderr).lower()
    assert emulator.writes()[before:] == []
    # The form for scheduled jobs (docs/inventory.md): the group as the play's hosts, a success with nothing to do.
    third = repair(ansible_env, emulator, source, tmp_path, target=("-e", "rerun_extension_hosts=azure_ext_failed"))
    assert third.returncode == 0 and "skipping: no hosts matched" in third.stdout, third.stdout[-3000:]
    assert emulator.writes()[before:] == []


@pytest.mark.parametrize("mode", ["name", "resource_group_name"])
def test_host_names_are_unique_across_subscriptions_in_every_mode(inventory, emulator, tmp_path, mode):
    source = write_inventory(tmp_path / "inv", {"subscriptions": [A, B], "hostnames": mode,
                                                "include_vmss_instances": True})
    proc = inventory(source, "--list")
    data = listed(inventory, source)
    hostvars = data["_meta"]["hostvars"]
    names = NAMES[mode]
    assert sorted(hostvars) == sorted(names.values())
    for key, vm_id in VM_IDS.items():
        host = hostvars[names[key]]
        assert host["azure_id"] == vm_id
        assert host["azure_subscription_id"] == vm_id.split("/")[2]
        assert (host["azure_resource_group"], host["azure_vm_name"]) == tuple(vm_id.split("/")[4::4])
        assert host["rerun_extension_vm_name"] == host["azure_vm_name"]
    for key, subscription in (("a-vmss", A), ("b-vmss", B)):
        host = hostvars[names[key]]
        assert (host["azure_subscription_id"], host["azure_vmss_name"], host["azure_vmss_instance_id"]) == (
            subscription, "vmss-web", "0")
    # Each VM keeps its own variables and groups (the old resource_group_name mode merged B's variables with A's
    # groups into one host).
    assert group_hosts(data, "azure_ext_failed") == [names["b-web-001"]]
    assert group_hosts(data, "azure_ext_customscript_failed") == [names["b-web-001"]]
    assert group_hosts(data, "azure_ext_customscript_succeeded") == [names["a-web-001"]]
    assert hostvars[names["b-web-001"]]["azure_failed_extensions"] == ["customScript"]
    assert hostvars[names["a-web-001"]]["azure_failed_extensions"] == []
    assert sorted(group_hosts(data, "azure_vmss_instances")) == sorted([names["a-vmss"], names["b-vmss"]])
    # A warning names what would have collided and what each host is called now.
    warnings = " ".join(proc.stderr.split())
    shared = "web-001" if mode == "name" else "rg-alpha_web-001"
    assert f"2 hosts would share the host name {shared}" in warnings
    assert f"{VM_IDS['a-web-001']} -> {names['a-web-001']}" in warnings
    assert f"{VM_IDS['b-web-001']} -> {names['b-web-001']}" in warnings


def test_subscriptions_listed_twice_in_another_case_are_read_once(inventory, emulator, tmp_path):
    source = write_inventory(tmp_path / "inv", {"subscriptions": [A, B.upper(), A.upper(), B]})
    data = listed(inventory, source)
    assert sorted(data["_meta"]["hostvars"]) == sorted(
        name for key, name in NAMES["name"].items() if not key.endswith("vmss"))
    status_lists = [r["path"] for r in emulator.arm_requests() if r["query"].get("statusOnly") == "true"]
    assert sorted(status_lists) == [f"/subscriptions/{sub}/providers/Microsoft.Compute/virtualMachines"
                                    for sub in (A, B)]
    assert {host["azure_subscription_id"] for host in data["_meta"]["hostvars"].values()} == {A, B}


def test_cache_key_follows_the_subscription_of_the_authentication(inventory, emulator, tmp_path):
    """With `subscriptions` empty, AZURE_SUBSCRIPTION_ID decides what is read; a warm cache of A must not answer
    for B."""
    source = write_inventory(tmp_path / "inv", {"cache": True, "cache_plugin": "ansible.builtin.jsonfile",
                                                "cache_connection": str(tmp_path / "cache"), "cache_timeout": 600})
    a_hosts = sorted(json.loads(inventory(source, "--list").stdout)["_meta"]["hostvars"])
    assert a_hosts == ["web-001", "web-002"]
    start = len(emulator.requests())
    assert sorted(json.loads(inventory(source, "--list").stdout)["_meta"]["hostvars"]) == a_hosts
    assert emulator.requests()[start:] == []  # warm

    start = len(emulator.requests())
    b_data = listed(inventory, source, env={"AZURE_SUBSCRIPTION_ID": B})
    assert sorted(b_data["_meta"]["hostvars"]) == ["web-001", "web-002", "web-003"]
    assert {host["azure_subscription_id"] for host in b_data["_meta"]["hostvars"].values()} == {B}
    assert [r["path"] for r in emulator.requests()[start:] if r["query"].get("statusOnly") == "true"] == [
        f"/subscriptions/{B}/providers/Microsoft.Compute/virtualMachines"]


def test_role_variable_subscription_wins_over_the_host_variable(inventory, emulator, tmp_path, ansible_env):
    """rerun_extension_subscription_id beats the host's azure_subscription_id (here deliberately A's, the healthy
    VM's) and AZURE_SUBSCRIPTION_ID (A's too)."""
    static = tmp_path / "static.yml"
    static.write_text(json.dumps({"all": {"hosts": {"repair-me": {
        "azure_subscription_id": A, "rerun_extension_vm_name": "web-001",
        "rerun_extension_resource_group": "rg-alpha"}}}}))
    env = dict(ansible_env)
    env.update(emulator.env)
    env["AZURE_POLLING_INTERVAL"] = "0.2"

    def run(*extra):
        cmd = [str(VENV_BIN / "ansible-playbook"), "azure_vm.extensions.rerun_extension", "-i", str(static),
               "-e", "rerun_extension_name=customScript", "-e", "rerun_extension_no_protected_settings=true",
               "-e", "rerun_extension_subscription_id=%s" % B,
               "-e", "rerun_extension_backup_dir=%s" % (tmp_path / "backups")] + list(extra)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)

    first = run()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    path = VM_IDS["b-web-001"] + "/extensions/customScript"
    assert writes_in(emulator, A) == [] and writes_in(emulator, B) == [("DELETE", path), ("PUT", path)]
    assert f"rerun_extension: host=repair-me subscription={B} vm=web-001" in first.stdout
    data = listed(inventory, write_inventory(tmp_path / "inv", {"subscriptions": [A, B]}))
    assert group_hosts(data, "azure_ext_failed") == []

    # A rerun always deletes and reapplies, so its second run is checked in check mode: planned, nothing written.
    before = len(emulator.writes())
    second = run("--check")
    assert second.returncode == 0 and f"subscription={B} vm=web-001" in second.stdout
    assert "outcome=planned" in second.stdout
    assert emulator.writes()[before:] == []


def test_subscriptions_are_listed_at_once_each_within_its_own_budget(inventory, emulator, tmp_path):
    """Issue 29: every subscription's lists run at once. A's first list request is throttled (ARM's 429 with
    Retry-After 3 s): A's budget holds A's lists for those seconds, while B's, another budget, go on, so B is read
    before A is done (read one subscription after the other, B's first request came after A's last). Each
    subscription still costs exactly its own pages, and the inventory is the one read a page at a time."""
    source = write_inventory(tmp_path / "inv", {"subscriptions": [A, B]})
    emulator.settings(page_size=10)
    whole = listed(inventory, source)  # one page per list
    emulator.reset()
    emulator.settings(page_size=1)  # A: 2 pages per list, B: 3
    lists = f"^/subscriptions/{A}/providers/Microsoft.Compute/virtualMachines$"
    emulator.faults([{"match": {"method": "GET", "path": lists},
                      "respond": {"status": 429, "headers": {"Retry-After": "3"}, "body": {"error": {
                          "code": "SubscriptionRequestsThrottled",
                          "message": f"Number of 'read' requests for subscription '{A}' actor 'bench' exceeded. "
                                     "Please try again after '3' seconds after additional tokens are available."}}},
                      "times": 1}])
    assert listed(inventory, source) == whole

    def pages(subscription):
        return sorted((r["query"].get("statusOnly", ""), r["query"].get("$skiptoken", ""), r["status"])
                      for r in requests_in(emulator, subscription))

    # A: its lists' pages (statusOnly and model, 2 VMs at 1 a page) plus the one refused and retried; B: its own.
    a_pages = [(kind, token, 200) for kind in ("", "true") for token in ("", "1")]
    assert [entry for entry in pages(A) if entry[2] == 200] == sorted(a_pages)
    assert [entry for entry in pages(A) if entry[2] == 429] in ([("", "", 429)], [("true", "", 429)])
    assert pages(B) == [(kind, token, 200) for kind in ("", "true") for token in ("", "1", "2")]
    a_times = [r["time"] for r in requests_in(emulator, A)]
    b_times = [r["time"] for r in requests_in(emulator, B)]
    assert min(b_times) < max(a_times), "B was read only after A"
    assert emulator.writes() == []


def test_a_subscription_whose_list_is_refused_fails_the_inventory_naming_it(inventory, emulator, tmp_path):
    """Read at once, a refusal in the second subscription still fails the source with ARM's code and message and
    the subscription it came from (and the other subscription's hosts are not shown as if complete)."""
    source = write_inventory(tmp_path / "inv", {"subscriptions": [A, B]})
    message = f"The client does not have authorization to perform action over scope '/subscriptions/{B}'."
    lists = f"^/subscriptions/{B}/providers/Microsoft.Compute/virtualMachines$"
    emulator.faults([{"match": {"method": "GET", "path": lists},
                      "respond": {"status": 403, "body": {"error": {"code": "AuthorizationFailed",
                                                                    "message": message}}}}])
    proc = inventory(source, "--list", expect_rc=None)
    assert proc.returncode != 0
    text = " ".join(proc.stderr.split())
    assert f"of subscription {B} failed: AuthorizationFailed: {message} (HTTP 403" in text, text[-3000:]
    assert emulator.writes() == []
