"""The azure_vm.extensions.azure_vms inventory plugin with the real ansible-inventory and ansible-playbook against
the emulator: hosts, host variables and groups; request counts from the emulator's request log; the cache; a
failed extension repaired through its group; the extensions role over the plugin's inventory; bad configuration;
no secret in host variables or cache files."""
import json
import math
import re
import subprocess

import pytest
import yaml
from azure.core.exceptions import HttpResponseError

from emulator_clients import RG, compute
from harness import REPO_ROOT, VENV_BIN, plain, playbook

SEED_VMS = ["vm-agent-down", "vm-failed-ext", "vm-web-01", "vm-web-02", "vm-win-01"]
SCALE_SETS = {"vmss-manual": 5, "vmss-auto": 3, "vmss-rolling": 3}  # default-seed.yml: name -> capacity
SUB = "6f3a8c1e-0000-4000-8000-000000000001"
SECRET = "inv-Pr0tected-S3cret-5b2e"
FINGERPRINT_TAG = "azure_vm.extensions.protected_settings"
CUSTOM_SCRIPT = {"location": "westeurope", "properties": {
    "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
    "autoUpgradeMinorVersion": True, "settings": {"commandToExecute": "echo check"}}}


@pytest.fixture(autouse=True)
def fast(emulator):
    emulator.settings(handler_duration_s=0.2, delete_duration_s=0.2)


def write_inventory(folder, config=None, **files):
    """An inventory directory: the plugin's file (config added to `plugin:`) and other files (path -> data)."""
    folder.mkdir(parents=True, exist_ok=True)
    body = {"plugin": "azure_vm.extensions.azure_vms"}
    body.update(config or {})
    (folder / "emulator.azure_vms.yml").write_text(yaml.safe_dump(body))
    for name, data in files.items():
        path = folder / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(folder)


@pytest.fixture
def inventory(ansible_env, emulator, tmp_path):
    """Run ansible-inventory over an inventory source; a source that fails to parse is an error (rc != 0)."""

    def run(source, *args, env=None, expect_rc=0):
        run_env = dict(ansible_env)
        run_env.update(emulator.env)
        run_env["ANSIBLE_INVENTORY_UNPARSED_FAILED"] = "true"
        run_env["AZURE_CREDENTIAL_FILE"] = str(tmp_path / "no-credentials-file")
        run_env.update(env or {})
        proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", source] + list(args), env=run_env,
                              capture_output=True, text=True, timeout=600, check=False)
        if expect_rc is not None:
            assert proc.returncode == expect_rc, f"rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        return proc

    return run


def listed(inventory, source, *args, **kwargs):
    return plain(json.loads(inventory(source, "--list", *args, **kwargs).stdout))


def group_hosts(data, group):
    return sorted(data.get(group, {}).get("hosts", []))


def list_requests(emulator):
    """The ARM GETs the emulator logged (an inventory run sends nothing else)."""
    return [r for r in emulator.arm_requests() if r["method"] == "GET"]


def token_requests(emulator):
    return [r for r in emulator.requests() if r["path"].endswith("/oauth2/v2.0/token")]


def test_list_and_graph_show_hosts_hostvars_and_groups(inventory, emulator, tmp_path):
    source = write_inventory(tmp_path / "inv")
    data = listed(inventory, source)
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == SEED_VMS
    assert group_hosts(data, "azure_vms") == SEED_VMS
    assert group_hosts(data, "azure_ext_failed") == ["vm-failed-ext"]
    assert group_hosts(data, "azure_ext_installapp_failed") == ["vm-failed-ext"]
    assert group_hosts(data, "azure_ext_customscript_succeeded") == ["vm-web-01"]
    assert group_hosts(data, "azure_ext_bginfo_succeeded") == ["vm-win-01"]
    assert group_hosts(data, "azure_agent_not_ready") == ["vm-agent-down"]
    assert group_hosts(data, "azure_power_running") == SEED_VMS
    assert group_hosts(data, "azure_location_westeurope") == SEED_VMS
    failed = hostvars["vm-failed-ext"]
    message = ("[ProvisioningState/failed/0] Enable failed: failed to execute command: command terminated with exit "
               "status=127\n[stdout]\n\n[stderr]\n/bin/sh: 1: ech: not found")
    assert failed["azure_extensions"] == {"installApp": {
        "name": "installApp", "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
        "type_handler_version": "2.1", "handler_version": "2.1.10", "provisioning_state": "Failed",
        "handler_state": "failed", "state": "failed", "message": message, "auto_upgrade_minor_version": True,
        "enable_automatic_upgrade": None, "protected_settings_fingerprint": False}}
    assert failed["azure_failed_extensions"] == ["installApp"]
    for key, value in {"azure_vm_name": "vm-failed-ext", "azure_resource_group": RG, "azure_subscription_id": SUB,
                       "azure_location": "westeurope", "azure_os_type": "Linux", "azure_power_state": "running",
                       "azure_provisioning_state": "Succeeded", "azure_tags": {},
                       "rerun_extension_vm_name": "vm-failed-ext", "rerun_extension_resource_group": RG,
                       "azure_vm_agent": {"version": "2.9.1.1", "status": "Ready", "message": "Guest Agent is running",
                                          "ready": True}}.items():
        assert failed[key] == value, key
    assert failed["azure_id"] == f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/" \
                                 "virtualMachines/vm-failed-ext"
    down = hostvars["vm-agent-down"]
    assert down["azure_vm_agent"] == {"version": "Unknown", "status": "Not Ready",
                                      "message": "VM Agent is unresponsive.", "ready": False}
    assert down["azure_extensions"] == {} and down["azure_failed_extensions"] == []
    assert hostvars["vm-win-01"]["azure_os_type"] == "Windows"
    assert hostvars["vm-web-01"]["azure_extensions"]["customScript"]["message"] == \
        "[ProvisioningState/succeeded] Enable succeeded: \n[stdout]\nhello\n\n[stderr]"
    # One page of each list (10 a page, 5 VMs), nothing per VM, nothing written.
    lists = f"/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines"
    assert sorted((r["path"], r["query"].get("statusOnly", "")) for r in list_requests(emulator)) == [
        (lists, ""), (lists, "true")]
    assert emulator.writes() == []

    graph = inventory(source, "--graph").stdout
    assert "@azure_ext_installapp_failed:\n  |  |--vm-failed-ext\n" in graph
    assert "@azure_agent_not_ready:\n  |  |--vm-agent-down\n" in graph
    assert inventory(source, "--graph", "azure_ext_failed").stdout == "@azure_ext_failed:\n  |--vm-failed-ext\n"


def test_request_count_for_n_vms_and_scale_set_instances(inventory, emulator, tmp_path):
    page = 2
    emulator.settings(page_size=page)
    source = write_inventory(tmp_path / "inv", {"include_vmss_instances": True})
    data = listed(inventory, source)
    instances = sorted("%s_%d" % (name, i) for name, count in SCALE_SETS.items() for i in range(count))
    assert group_hosts(data, "azure_vmss_instances") == instances
    assert group_hosts(data, "azure_vmss_vmss_manual") == ["vmss-manual_%d" % i for i in range(5)]
    assert sorted(data["_meta"]["hostvars"]) == sorted(SEED_VMS + instances)
    one = data["_meta"]["hostvars"]["vmss-auto_1"]
    assert (one["azure_vmss_name"], one["azure_vmss_instance_id"], one["azure_os_type"]) == ("vmss-auto", "1", "Linux")
    assert "azure_vm_name" not in one and "rerun_extension_vm_name" not in one

    requests = list_requests(emulator)
    n = len(SEED_VMS)
    vm_lists = [r for r in requests if r["path"].endswith("/providers/Microsoft.Compute/virtualMachines")]
    assert sum(1 for r in vm_lists if r["query"].get("statusOnly") == "true") == math.ceil(n / page)
    assert sum(1 for r in vm_lists if "statusOnly" not in r["query"]) == math.ceil(n / page)
    set_lists = [r for r in requests if r["path"].endswith("/providers/Microsoft.Compute/virtualMachineScaleSets")]
    assert len(set_lists) == math.ceil(len(SCALE_SETS) / page)
    for name, count in SCALE_SETS.items():
        pages = [r for r in requests if r["path"].endswith("/virtualMachineScaleSets/%s/virtualMachines" % name)]
        assert len(pages) == math.ceil(count / page) and all(r["query"]["$expand"] == "instanceView" for r in pages)
    expected = 2 * math.ceil(n / page) + math.ceil(len(SCALE_SETS) / page) + sum(
        math.ceil(count / page) for count in SCALE_SETS.values())
    assert len(requests) == expected  # no other ARM request (no read per VM)
    assert len(token_requests(emulator)) == 1  # one token for all the parallel lists

    # Without the model list: one list of N VMs costs ceil(N / page size) requests.
    emulator.reset()
    emulator.settings(page_size=page)
    data = listed(inventory, write_inventory(tmp_path / "status-only", {"list_model": False}))
    assert len(list_requests(emulator)) == math.ceil(n / page)
    ext = data["_meta"]["hostvars"]["vm-failed-ext"]["azure_extensions"]["installApp"]
    assert (ext["publisher"], ext["type"], ext["state"], ext["provisioning_state"]) == (
        "Microsoft.Azure.Extensions", "CustomScript", "failed", None)
    assert group_hosts(data, "azure_ext_installapp_failed") == ["vm-failed-ext"]


def test_filters_compose_groups_keyed_groups(inventory, emulator, tmp_path):
    source = write_inventory(tmp_path / "inv", {
        "resource_groups": ["RG-DEMO"], "locations": ["westeurope"], "include_vmss_instances": True,
        "keyed_groups": [{"key": "azure_os_type", "prefix": "os"}],
        "groups": {"needs_rerun": "azure_failed_extensions | length > 0"},
        "compose": {"agent_version": "azure_vm_agent.version"}})
    data = listed(inventory, source)
    assert group_hosts(data, "os_Windows") == ["vm-win-01"]
    assert group_hosts(data, "needs_rerun") == ["vm-failed-ext"]
    assert data["_meta"]["hostvars"]["vm-web-01"]["agent_version"] == "2.9.1.1"

    assert listed(inventory, write_inventory(tmp_path / "other-rg", {"resource_groups": ["rg-other"]})).get(
        "_meta", {}).get("hostvars", {}) == {}
    assert listed(inventory, write_inventory(tmp_path / "tag", {"tags": {"environment": None}})).get(
        "_meta", {}).get("hostvars", {}) == {}


def test_failed_extension_group_then_rerun_role_with_limit_repairs_it(inventory, emulator, tmp_path, ansible_env):
    emulator.faults([{"extension": {"vm": "vm-web-02", "name": "healthCheck", "outcome": "failed",
                                    "message": "Enable failed: health check exited 3"}, "times": 1}])
    with pytest.raises(HttpResponseError, match="health check exited 3"):
        compute(emulator).virtual_machine_extensions.begin_create_or_update(
            RG, "vm-web-02", "healthCheck", CUSTOM_SCRIPT).result()
    source = write_inventory(tmp_path / "inv")
    data = listed(inventory, source)
    assert group_hosts(data, "azure_ext_healthcheck_failed") == ["vm-web-02"], json.dumps(data)[-3000:]
    assert group_hosts(data, "azure_ext_failed") == ["vm-failed-ext", "vm-web-02"]
    assert "health check exited 3" in data["_meta"]["hostvars"]["vm-web-02"]["azure_extensions"]["healthCheck"][
        "message"]

    def rerun():
        env = dict(ansible_env)
        env.update(emulator.env)
        env.update({"AZURE_POLLING_INTERVAL": "0.2", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"})
        cmd = [str(VENV_BIN / "ansible-playbook"), str(REPO_ROOT / "playbooks" / "rerun_extension.yml"),
               "-i", source, "--limit", "azure_ext_healthcheck_failed",
               "-e", "rerun_extension_name=healthCheck", "-e", "rerun_extension_no_protected_settings=true",
               "-e", "rerun_extension_backup_dir=%s" % (tmp_path / "backups")]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)

    before = len(emulator.writes())
    first = rerun()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    writes = emulator.writes()[before:]
    assert [(w["method"], w["path"].rsplit("/", 3)[-3:]) for w in writes] == [
        ("DELETE", ["vm-web-02", "extensions", "healthCheck"]), ("PUT", ["vm-web-02", "extensions", "healthCheck"])]
    data = listed(inventory, source)
    assert group_hosts(data, "azure_ext_healthcheck_succeeded") == ["vm-web-02"]
    assert group_hosts(data, "azure_ext_healthcheck_failed") == []
    assert group_hosts(data, "azure_ext_failed") == ["vm-failed-ext"]

    # The same command again: the group is empty now, so nothing is targeted and nothing is written.
    before = len(emulator.writes())
    second = rerun()
    assert second.returncode != 0 and "no hosts" in (second.stdout + second.stderr).lower()
    assert emulator.writes()[before:] == []


def test_extensions_role_runs_over_the_plugin_inventory_with_no_extra_variables(
        inventory, emulator, tmp_path, run_playbook):
    monitor = {"name": "monitor", "publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorLinuxAgent",
               "type_handler_version": "1.33"}
    source = write_inventory(tmp_path / "inv", {"keyed_groups": [{"key": "azure_os_type", "prefix": "os",
                                                                  "separator": "_"}]},
                             group_vars__os_Linux__extensions={"azure_vm_extensions": [monitor]})
    play = yaml.safe_dump([{"name": "Converge", "hosts": "azure_vms:&os_Linux:!azure_agent_not_ready:!azure_ext_failed",
                            "gather_facts": False, "roles": [{"role": "azure_vm.extensions.extensions"}]}])
    first = run_playbook(play, inventory=source, expect_rc=0)
    assert sorted(host for host, stats in first.stats.items() if stats["changed"]) == ["vm-web-01", "vm-web-02"]
    puts = [w for w in emulator.writes() if w["method"] == "PUT"]
    assert sorted(w["path"].split("/")[-3] for w in puts) == ["vm-web-01", "vm-web-02"]
    data = listed(inventory, source)
    assert group_hosts(data, "azure_ext_monitor_succeeded") == ["vm-web-01", "vm-web-02"]
    ext = data["_meta"]["hostvars"]["vm-web-02"]["azure_extensions"]["monitor"]
    assert (ext["publisher"], ext["type"], ext["type_handler_version"]) == (
        "Microsoft.Azure.Monitor", "AzureMonitorLinuxAgent", "1.33")

    before = len(emulator.writes())
    second = run_playbook(play, inventory=source, expect_rc=0)
    assert all(stats["changed"] == 0 for stats in second.stats.values())
    assert sorted(second.stats) == ["vm-web-01", "vm-web-02"]
    assert emulator.writes()[before:] == []


def test_cache_warm_sends_no_request_and_no_secret_in_hostvars_or_cache(
        inventory, emulator, tmp_path, run_playbook):
    # A VM extension and a scale-set extension with protected settings: both get the collection's fingerprint tag.
    run_playbook(playbook(
        {"name": "vm", "azure_vm.extensions.vm_extension": {
            "resource_group": RG, "vm_name": "vm-web-02", "name": "secretScript", "publisher":
            "Microsoft.Azure.Extensions", "type": "CustomScript", "type_handler_version": "2.1",
            "settings": {"commandToExecute": "echo public"}, "protected_settings": {"token": SECRET}}},
        {"name": "vmss", "azure_vm.extensions.vmss_extension": {
            "resource_group": RG, "vmss_name": "vmss-auto", "name": "secretScript", "publisher":
            "Microsoft.Azure.Extensions", "type": "CustomScript", "type_handler_version": "2.1",
            "protected_settings": {"token": SECRET}}}), expect_rc=0)
    client = compute(emulator)
    vm_tag = client.virtual_machine_extensions.get(RG, "vm-web-02", "secretScript").tags[FINGERPRINT_TAG]
    vmss_tags = client.virtual_machine_scale_sets.get(RG, "vmss-auto").tags
    vmss_tag = vmss_tags[FINGERPRINT_TAG + ".secretScript"]
    assert vm_tag.startswith("v2$pbkdf2-sha256$") and vmss_tag.startswith("v2$pbkdf2-sha256$")

    cache_dir = tmp_path / "cache"
    client_secret = emulator.env["AZURE_SECRET"]
    source = write_inventory(tmp_path / "inv", {
        "include_vmss_instances": True, "cache": True, "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(cache_dir), "cache_timeout": 600,
        # The client secret as an option in the file: it must reach neither the cache nor the output.
        "auth_source": "options", "client_id": emulator.env["AZURE_CLIENT_ID"], "secret": client_secret,
        "tenant": emulator.env["AZURE_TENANT"]})
    no_env = {"AZURE_CLIENT_ID": "", "AZURE_SECRET": "", "AZURE_TENANT": ""}
    log_start = len(emulator.requests())
    cold = inventory(source, "--list", "-vvvv", env=no_env)
    cold_requests = emulator.requests()[log_start:]
    assert any(r["path"].endswith("/virtualMachines") for r in cold_requests)
    data = plain(json.loads(cold.stdout[cold.stdout.index("{"):]))
    hostvars = data["_meta"]["hostvars"]
    assert hostvars["vm-web-02"]["azure_extensions"]["secretScript"]["protected_settings_fingerprint"] is True
    assert hostvars["vmss-auto_0"]["azure_extensions"]["secretScript"]["protected_settings_fingerprint"] is True
    assert hostvars["vm-web-01"]["azure_extensions"]["customScript"]["protected_settings_fingerprint"] is False
    assert hostvars["vmss-auto_0"]["azure_tags"] == {}  # the scale set's only tag is the fingerprint: dropped
    cache_files = [path for path in cache_dir.rglob("*") if path.is_file()]
    assert cache_files
    texts = [cold.stdout, cold.stderr] + [path.read_text() for path in cache_files]
    for text in texts:
        for secret in (SECRET, client_secret, vm_tag, vmss_tag, vm_tag.split("$")[-1], vmss_tag.split("$")[-1]):
            assert secret not in text
        assert FINGERPRINT_TAG + "." not in text

    # Warm: the same inventory from the cache, without a single request (not even a token).
    log_start = len(emulator.requests())
    warm = inventory(source, "--list", env=no_env)
    assert emulator.requests()[log_start:] == []
    assert plain(json.loads(warm.stdout))["_meta"] == data["_meta"]


@pytest.mark.parametrize("config, env, message", [
    ({"bogus_option": 1}, {}, "unknown option bogus_option for azure_vm.extensions.azure_vms; valid options: "),
    ({"resource_groups": ["rg/demo"]}, {}, "resource_groups must be a list of resource group names"),
    ({"locations": ["west-europe!"]}, {}, "locations must be a list of Azure location names"),
    ({"subscriptions": ["not-a-guid"]}, {}, "subscriptions must be a list of subscription ids (GUIDs)"),
    ({"tags": {"env": ["a", "b"]}}, {}, "tags must map tag names to a value (a string) or null (any value)"),
    ({"list_model": False, "tags": {"env": "prod"}}, {}, "tags filters need list_model=true"),
    ({"hostnames": "fqdn"}, {}, "Valid values are: name, resource_group_name"),
    ({"auth_source": "env"}, {"AZURE_CLIENT_ID": "", "AZURE_SECRET": "", "AZURE_TENANT": ""},
     "auth_source=env needs client_id and tenant for a service principal"),
    ({}, {"AZURE_SECRET": "wrong-secret"}, "no usable Azure credentials (auth_source=env)"),
])
def test_bad_configuration_is_a_clear_error_before_any_arm_request(inventory, emulator, tmp_path, config, env,
                                                                   message):
    proc = inventory(write_inventory(tmp_path / "inv", config), "--list", env=env, expect_rc=None)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert "wrong-secret" not in proc.stdout + proc.stderr
    assert emulator.arm_requests() == []


def test_ansible_doc_renders_the_plugin(ansible_env):
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "-t", "inventory", "azure_vm.extensions.azure_vms"],
                          env=ansible_env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    for text in ("include_vmss_instances", "statusOnly", "keyed_groups", "cache_plugin", "auth_source", "EXAMPLES"):
        assert text in proc.stdout, text

    def words(text):  # without markup (ANSI bold, `code', **bold**) and line breaks
        return " ".join(re.sub(r"\x1b\[[0-9;]*m|[`'*]", "", text).split())

    # One definition of "failed": ansible-doc and docs/inventory.md say the same.
    definition = "An extension is failed when ARMs provisioning state is Failed or its handler reports failed"
    assert definition in words(proc.stdout)
    assert definition in words((REPO_ROOT / "docs" / "inventory.md").read_text())


def test_addresses_from_another_source_in_the_same_inventory_directory(inventory, emulator, tmp_path):
    """docs/inventory.md: this plugin and a source that resolves addresses, side by side in one directory; hosts of
    the same name are merged, and a constructed file (parsed last) groups on variables from both."""
    source = write_inventory(tmp_path / "inv", None, **{
        "addresses.yml": {"all": {"hosts": {"vm-web-01": {"ansible_host": "10.1.0.4"},
                                            "vm-failed-ext": {"ansible_host": "10.1.0.7"}}}},
        "zz-reachable.constructed.yml": {"plugin": "ansible.builtin.constructed", "strict": False,
                                         "groups": {"repair_over_ssh": "ansible_host is defined and "
                                                                       "azure_failed_extensions | length > 0"}}})
    data = listed(inventory, source)
    hostvars = data["_meta"]["hostvars"]
    assert sorted(hostvars) == SEED_VMS  # merged by name, no extra host
    assert hostvars["vm-web-01"]["ansible_host"] == "10.1.0.4"
    assert hostvars["vm-web-01"]["azure_extensions"]["customScript"]["state"] == "succeeded"
    assert "ansible_host" not in hostvars["vm-web-02"]
    assert group_hosts(data, "azure_ext_failed") == ["vm-failed-ext"]
    assert group_hosts(data, "repair_over_ssh") == ["vm-failed-ext"]


# ---- issue 23 ---------------------------------------------------------------------------------------------------
def advance(emulator, seconds):
    emulator._call("POST", "clock", {"advance_s": seconds})  # pylint: disable=protected-access


def rerun_playbook(ansible_env, emulator, source, tmp_path, limit, name):
    env = dict(ansible_env)
    env.update(emulator.env)
    env.update({"AZURE_POLLING_INTERVAL": "0.2", "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true"})
    cmd = [str(VENV_BIN / "ansible-playbook"), "azure_vm.extensions.rerun_extension", "-i", source, "--flush-cache",
           "--limit", limit, "-e", "rerun_extension_name=%s" % name, "-e", "rerun_extension_no_protected_settings=true",
           "-e", "rerun_extension_backup_dir=%s" % (tmp_path / "backups")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_provisioning_failed_while_the_handler_still_transitions_is_failed_and_repaired(
        inventory, emulator, tmp_path, ansible_env):
    """ARM marks an extension Failed when its handler outlives Azure's timeout (90 minutes for CustomScript) while
    the handler still reports transitioning: it is failed (azure_ext_failed, azure_ext_<name>_failed), and the
    documented repair targets and repairs it."""
    emulator.faults([{"extension": {"vm": "vm-web-02", "name": "longScript", "outcome": "timeout"}, "times": 1}])
    compute(emulator).virtual_machine_extensions.begin_create_or_update(  # no poller left running after the test
        RG, "vm-web-02", "longScript", CUSTOM_SCRIPT, polling=False)
    advance(emulator, 90 * 60 + 60)
    source = write_inventory(tmp_path / "inv")
    data = listed(inventory, source)
    ext = data["_meta"]["hostvars"]["vm-web-02"]["azure_extensions"]["longScript"]
    assert (ext["provisioning_state"], ext["handler_state"], ext["state"]) == ("Failed", "transitioning", "failed")
    assert data["_meta"]["hostvars"]["vm-web-02"]["azure_failed_extensions"] == ["longScript"]
    assert group_hosts(data, "azure_ext_failed") == ["vm-failed-ext", "vm-web-02"]
    assert group_hosts(data, "azure_ext_longscript_failed") == ["vm-web-02"]
    assert group_hosts(data, "azure_ext_transitioning") == []
    # Without the model list the provisioning state is unknown: the handler alone decides (documented).
    status_only = listed(inventory, write_inventory(tmp_path / "status-only", {"list_model": False}))
    assert status_only["_meta"]["hostvars"]["vm-web-02"]["azure_extensions"]["longScript"]["state"] == "transitioning"

    before = len(emulator.writes())
    first = rerun_playbook(ansible_env, emulator, source, tmp_path, "azure_ext_longscript_failed", "longScript")
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-3000:]
    path = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/vm-web-02/" \
           "extensions/longScript"
    assert [(w["method"], w["path"]) for w in emulator.writes()[before:]] == [("DELETE", path), ("PUT", path)]
    assert f"subscription={SUB} vm=vm-web-02 extension=longScript" in first.stdout
    data = listed(inventory, source)
    assert group_hosts(data, "azure_ext_longscript_succeeded") == ["vm-web-02"]
    assert group_hosts(data, "azure_ext_failed") == ["vm-failed-ext"]

    before = len(emulator.writes())
    second = rerun_playbook(ansible_env, emulator, source, tmp_path, "azure_ext_longscript_failed", "longScript")
    assert second.returncode != 0 and "no hosts" in (second.stdout + second.stderr).lower()
    assert emulator.writes()[before:] == []


@pytest.mark.parametrize("config, env, message", [
    ({"include_vmss_instances": "ture"}, {}, "argument 'include_vmss_instances' is of type str and we were unable "
                                             "to convert to bool: The value 'ture' is not a valid boolean. Valid "
                                             "booleans include: "),
    ({"list_model": "flase"}, {}, "argument 'list_model' is of type str and we were unable to convert to bool"),
    ({"strict": "maybe"}, {}, "argument 'strict' is of type str and we were unable to convert to bool"),
    ({"cache": "ture"}, {}, "argument 'cache' is of type str and we were unable to convert to bool"),
    ({"disable_instance_discovery": "nope"}, {},
     "argument 'disable_instance_discovery' is of type str and we were unable to convert to bool"),
    # ansible-core's configuration itself refuses a value outside choices, naming the values allowed.
    ({"auth_source": "magic"}, {}, ("Invalid value 'magic' for config 'auth_source'",
                                    "Valid values are: auto, credential_file, env, options, msi, cli, "
                                    "workload_identity")),
    # The environment fallbacks of the auth options are checked as a module checks them.
    ({}, {"ANSIBLE_AZURE_AUTH_SOURCE": "magic"},
     "value of auth_source must be one of: auto, credential_file, env, options, msi, cli, workload_identity, "
     "got: magic"),
    ({}, {"AZURE_POLLING_INTERVAL": "often"},
     "argument 'polling_interval' is of type str and we were unable to convert to float"),
])
def test_options_with_a_fixed_set_of_values_refuse_anything_else_before_any_request(
        inventory, emulator, tmp_path, config, env, message):
    proc = inventory(write_inventory(tmp_path / "inv", config), "--list", env=env, expect_rc=None)
    assert proc.returncode != 0
    for part in (message,) if isinstance(message, str) else message:
        assert part in " ".join(proc.stderr.split()), proc.stderr[-3000:]
    assert emulator.requests() == []  # not even a token


def test_accepted_spellings_of_booleans_still_work(inventory, emulator, tmp_path):
    data = listed(inventory, write_inventory(tmp_path / "inv", {"include_vmss_instances": "yes",
                                                                "list_model": "true"}))
    assert len(group_hosts(data, "azure_vmss_instances")) == sum(SCALE_SETS.values())


def test_cache_key_covers_every_option_that_changes_the_result_and_flush_cache_reads_afresh(
        inventory, emulator, tmp_path):
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache"),
             "cache_timeout": 600}

    def hosts_and_requests(config, *args):
        start = len(emulator.requests())
        data = listed(inventory, write_inventory(tmp_path / "inv", dict(cache, **config)), *args)
        return sorted(data.get("_meta", {}).get("hostvars", {})), len(emulator.requests()[start:]), data

    assert hosts_and_requests({"resource_groups": ["rg-demo"]})[:2][1] > 0  # cold
    assert hosts_and_requests({"resource_groups": ["rg-demo"]})[:2] == (SEED_VMS, 0)  # warm
    assert hosts_and_requests({"resource_groups": ["RG-Demo"]})[:2] == (SEED_VMS, 0)  # the same filter
    hosts, requests, dummy = hosts_and_requests({"resource_groups": ["rg-other"]})
    assert (hosts, requests > 0) == ([], True)  # an edited filter: read afresh, not the old group's hosts
    hosts, requests, dummy = hosts_and_requests({"resource_groups": ["rg-demo"], "include_vmss_instances": True})
    assert requests > 0 and len(hosts) == len(SEED_VMS) + sum(SCALE_SETS.values())
    hosts, requests, dummy = hosts_and_requests({"resource_groups": ["rg-demo"], "list_model": False})
    assert requests > 0 and hosts == SEED_VMS
    hosts, requests, dummy = hosts_and_requests({"resource_groups": ["rg-demo"], "locations": ["northeurope"]})
    assert (hosts, requests > 0) == ([], True)
    hosts, requests, dummy = hosts_and_requests({"resource_groups": ["rg-demo"], "tags": {"env": None}})
    assert (hosts, requests > 0) == ([], True)
    # Naming and grouping apply to the cached VMs: no fresh read needed.
    hosts, requests, dummy = hosts_and_requests({"resource_groups": ["rg-demo"], "hostnames": "resource_group_name",
                                                 "group_prefix": "az_"})
    assert (hosts, requests) == (sorted("rg-demo_" + vm for vm in SEED_VMS), 0)

    # A repair makes a warm cache stale; --flush-cache reads afresh and refills it (docs/inventory.md).
    compute(emulator).virtual_machine_extensions.begin_create_or_update(
        RG, "vm-failed-ext", "installApp", CUSTOM_SCRIPT).result()
    hosts, requests, data = hosts_and_requests({"resource_groups": ["rg-demo"]})
    assert requests == 0 and group_hosts(data, "azure_ext_failed") == ["vm-failed-ext"]  # stale, as documented
    hosts, requests, data = hosts_and_requests({"resource_groups": ["rg-demo"]}, "--flush-cache")
    assert requests > 0 and group_hosts(data, "azure_ext_failed") == []
    hosts, requests, data = hosts_and_requests({"resource_groups": ["rg-demo"]})
    assert requests == 0 and group_hosts(data, "azure_ext_failed") == []
