"""The waagent role, run with the real ansible-playbook over SSH against two Debian bookworm guests at once.

The agent's own configuration loader (azurelinuxagent.common.conf, installed in each guest by the role) judges what
the role wrote. The agent daemon is never started: service handling is off, policy-rc.d refuses starts, and the
guests have no route beyond their own veth pair.
"""
import hashlib
import json

import pytest

HOSTS = ("guest1", "guest2")

PLAYBOOK = """\
- name: Apply the waagent role
  hosts: guests
  gather_facts: true
  roles:
    - role: azure_vm.extensions.waagent
"""

ROLE_VARS = {
    "waagent_manage_service": False,
    "waagent_http_proxy_host": "proxy.test.invalid",
    "waagent_http_proxy_port": 3128,
    "waagent_config": {
        "Logs.Verbose": True,                       # boolean, written as y
        "ResourceDisk.SwapSizeMB": 2048,            # integer
        "ResourceDisk.MountPoint": "/mnt/test-resource",   # string
        "Provisioning.Agent": "waagent",            # enumeration
        "Provisioning.SshHostKeyPairType": "ed25519",
        "OS.EnableFirewall": "no",                  # Ansible spelling of a boolean
        "Provisioning.PasswordCryptId": 5,
    },
}

AGENT_READBACK = r"""
import json
from azurelinuxagent.common import conf
conf.load_conf_from_file("/etc/waagent.conf")
print(json.dumps({
    "verbose": conf.get_logs_verbose(),
    "swap_mb": conf.get_resourcedisk_swap_size_mb(),
    "mountpoint": conf.get_resourcedisk_mountpoint(),
    "provisioning_agent": conf.get_provisioning_agent(),
    "keypair_type": conf.get_ssh_host_keypair_type(),
    "firewall": conf.enable_firewall(),
    "autoupdate": conf.get_autoupdate_enabled(),
    "crypt_id": conf.get_password_cryptid(),
    "proxy_host": conf.get_httpproxy_host(),
    "proxy_port": conf.get_httpproxy_port(),
}))
"""


def sha256(guest, path="/etc/waagent.conf"):
    return hashlib.sha256((guest.root / path.lstrip("/")).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def converged(run_guest_playbook, guests):
    """The first run of the role on both guests."""
    for guest in guests.values():
        assert guest.chroot("dpkg-query", "-W", "waagent").returncode != 0, "waagent must not be preinstalled"
    return run_guest_playbook(PLAYBOOK, extra_vars=ROLE_VARS)


def test_role_converges_on_both_guests(converged, guests):
    assert converged.rc == 0, converged.explain()
    for host in HOSTS:
        assert converged.stats[host]["failures"] == 0, converged.explain()
        assert converged.stats[host]["unreachable"] == 0, converged.explain()
        assert converged.stats[host]["changed"] > 0, converged.explain()
        installed = guests[host].chroot("dpkg-query", "-W", "-f", "${Status}", "waagent")
        assert installed.stdout == "install ok installed", installed
        write = converged.task("Write waagent.conf", host)
        assert write["changed"] is True
        assert write["path"] == "/etc/waagent.conf"
        assert write["settings"]["Provisioning.Agent"] == "waagent"


def test_second_run_changes_nothing(converged, run_guest_playbook):
    assert converged.rc == 0, converged.explain()
    again = run_guest_playbook(PLAYBOOK, extra_vars=ROLE_VARS)
    assert again.rc == 0, again.explain()
    for host in HOSTS:
        assert again.stats[host]["changed"] == 0, again.explain()
        assert again.stats[host]["failures"] == 0, again.explain()


def test_agent_loader_reads_what_the_role_set(converged, guests):
    assert converged.rc == 0, converged.explain()
    for host in HOSTS:
        result = guests[host].chroot("python3", "-c", AGENT_READBACK)
        assert result.returncode == 0, result.stderr
        values = json.loads(result.stdout)
        assert values == {
            "verbose": True,
            "swap_mb": 2048,
            "mountpoint": "/mnt/test-resource",
            "provisioning_agent": "waagent",
            "keypair_type": "ed25519",
            "firewall": False,
            "autoupdate": True,        # role default, Debian ships n
            "crypt_id": "5",
            "proxy_host": "proxy.test.invalid",
            "proxy_port": 3128,
        }, host
        text = (guests[host].root / "etc/waagent.conf").read_text()
        assert "Logs.Verbose=y\n" in text
        assert "AutoUpdate.Enabled=y\n" in text
        assert text.startswith("#\n# Microsoft Azure Linux Agent Configuration\n#\n"), "comments must be kept"


def test_proxy_reaches_the_unit(converged, guests):
    assert converged.rc == 0, converged.explain()
    for host in HOSTS:
        dropin = guests[host].root / "etc/systemd/system/walinuxagent.service.d/http-proxy.conf"
        text = dropin.read_text()
        assert 'Environment="http_proxy=http://proxy.test.invalid:3128"' in text
        assert 'Environment="https_proxy=http://proxy.test.invalid:3128"' in text
        assert "no_proxy=localhost,127.0.0.1,168.63.129.16,169.254.169.254" in text


def test_version_facts_match_the_package(converged, guests):
    assert converged.rc == 0, converged.explain()
    for host in HOSTS:
        facts = converged.task("Set the agent version facts", host)["ansible_facts"]
        package = guests[host].chroot("dpkg-query", "-W", "-f", "${Version}", "waagent").stdout.strip()
        assert package, "waagent is not installed"
        assert facts["waagent_package_version"] == package
        upstream = package.split("-")[0]
        assert facts["waagent_parent_version"] == upstream
        # no extension handler process runs, so the goal state agent is the installed version
        assert facts["waagent_goal_state_version"] == upstream


def test_invalid_value_fails_before_any_write(converged, guests, run_guest_playbook):
    assert converged.rc == 0, converged.explain()
    before = {host: sha256(guests[host]) for host in HOSTS}
    bad = json.loads(json.dumps(ROLE_VARS))
    bad["waagent_config"]["Provisioning.Agent"] = "systemd-networkd"
    bad["waagent_config"]["Logs.Verbose"] = "maybe"
    bad["waagent_config"]["ResourceDisk.SwapSizeMB"] = 4096   # valid, must not be written either
    run = run_guest_playbook(PLAYBOOK, extra_vars=bad)
    assert run.rc != 0, run.explain()
    for host in HOSTS:
        assert run.stats[host]["failures"] == 1, run.explain()
        msg = run.task("Write waagent.conf", host)["msg"]
        assert "Provisioning.Agent" in msg and "systemd-networkd" in msg, msg
        assert "auto, waagent, cloud-init, disabled" in msg, msg
        assert "Logs.Verbose" in msg and "maybe" in msg and "y or n" in msg, msg
        assert sha256(guests[host]) == before[host], "waagent.conf changed on %s" % host


def test_check_mode_reports_without_writing(converged, guests, run_guest_playbook):
    assert converged.rc == 0, converged.explain()
    before = {host: sha256(guests[host]) for host in HOSTS}
    changed = json.loads(json.dumps(ROLE_VARS))
    changed["waagent_config"]["ResourceDisk.SwapSizeMB"] = 1024
    run = run_guest_playbook(PLAYBOOK, extra_vars=changed, check=True, diff=True)
    assert run.rc == 0, run.explain()
    for host in HOSTS:
        write = run.task("Write waagent.conf", host)
        assert write["changed"] is True
        assert write["settings"]["ResourceDisk.SwapSizeMB"] == "1024"
        assert "ResourceDisk.SwapSizeMB=1024" in write["diff"]["after"]
        assert "ResourceDisk.SwapSizeMB=2048" in write["diff"]["before"]
        assert sha256(guests[host]) == before[host]


def test_no_agent_process_runs(converged, guests):
    assert converged.rc == 0, converged.explain()
    for host in HOSTS:
        running = {pid: cmd for pid, cmd in guests[host].process_commands().items() if "waagent" in cmd}
        assert not running, running
        assert not (guests[host].root / "run/systemd/system").exists()
        assert (guests[host].root / "usr/sbin/policy-rc.d").read_text().strip().endswith("exit 101")
