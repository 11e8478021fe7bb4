"""Fixtures for tests on real Debian guests (see guestlib.py): two guests reachable over SSH, and playbook runs.

The guests skip (with the reason) only when this machine cannot create network namespaces (not root, `ip netns add`
fails) or the host tools (debootstrap, ...) are missing and cannot be installed.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import guestlib  # noqa: E402  pylint: disable=wrong-import-position

VENV_BIN = Path(sys.executable).parent
GUEST_NAMES = ("guest1", "guest2")


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (`--dist loadgroup`) every guest test runs in one worker: the guests use fixed
    addresses of the test subnet, so two workers must not create them at once."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("guests"))


@pytest.fixture(scope="session")
def guest_host_ready():
    reason = guestlib.can_create_namespaces()
    if reason:
        pytest.skip(reason)
    reason = guestlib.ensure_host_tools()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def guest_image(guest_host_ready):
    started = time.time()
    image = guestlib.build_image()
    sys.stderr.write("[guests] image ready in %.1fs: %s\n" % (time.time() - started, image))
    return image


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ssh")
    key = directory / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "guest-tests", "-f", str(key)],
                   check=True)
    return key


@pytest.fixture(scope="session")
def guests(guest_image, ssh_key, tmp_path_factory):
    """Both guests, running; torn down (sshd killed, mounts, namespaces and copies removed) even on failure."""
    workdir = tmp_path_factory.mktemp("guests")
    tag = "%05d" % (os.getpid() % 100000)
    public_key = Path(str(ssh_key) + ".pub").read_text()
    created = []
    try:
        for index, name in enumerate(GUEST_NAMES):
            guest = guestlib.Guest(name, index, workdir, tag)
            created.append(guest)
            guest.create(guest_image, public_key)
        yield {guest.name: guest for guest in created}
    finally:
        leftovers = {}
        for guest in created:
            agent = {pid: cmd for pid, cmd in guest.process_commands().items() if "waagent" in cmd}
            if agent:
                leftovers[guest.name] = agent
        errors = []
        for guest in reversed(created):
            try:
                guest.destroy()
            except Exception as exc:  # pylint: disable=broad-except
                errors.append("%s: %s" % (guest.name, exc))
        assert not leftovers, "waagent processes were running in the guests: %s" % leftovers
        assert not errors, "guest teardown failed: %s" % errors


@pytest.fixture(scope="session")
def guest_inventory(guests, ssh_key, tmp_path_factory):
    directory = tmp_path_factory.mktemp("inventory")
    hosts = {}
    for name, guest in guests.items():
        hosts[name] = {
            "ansible_host": guest.address,
            "ansible_user": "root",
            "ansible_connection": "ssh",
            "ansible_ssh_private_key_file": str(ssh_key),
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "
                                       "-o ConnectTimeout=10",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_become": False,
        }
    inventory = directory / "hosts.json"
    inventory.write_text(json.dumps({"all": {"children": {"guests": {"hosts": hosts}}}}, indent=2))
    return inventory


class GuestRun:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        try:
            self.results = json.loads(proc.stdout[proc.stdout.index("{"):])
        except ValueError:
            self.results = {}

    @property
    def stats(self):
        return self.results.get("stats", {})

    def task(self, name, host):
        for play in self.results.get("plays", []):
            for task in play["tasks"]:
                if task["task"]["name"] == name and host in task["hosts"]:
                    return task["hosts"][host]
        raise KeyError("task %r not found for %s" % (name, host))

    def explain(self):
        return "rc=%s\nstdout:\n%s\nstderr:\n%s" % (self.rc, self.stdout[-8000:], self.stderr[-3000:])


@pytest.fixture(scope="session")
def run_guest_playbook(ansible_env, guest_inventory, tmp_path_factory):
    """Run the REAL ansible-playbook over SSH against both guests at once; results from the json callback."""
    directory = tmp_path_factory.mktemp("playbooks")
    counter = [0]

    def run(playbook_text, extra_vars=None, check=False, diff=False, limit=None):
        counter[0] += 1
        playbook = directory / ("playbook-%d.yml" % counter[0])
        playbook.write_text(playbook_text)
        cmd = [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(guest_inventory)]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if limit:
            cmd += ["--limit", limit]
        env = dict(ansible_env)
        env.update({
            # ansible_env already points ANSIBLE_CALLBACK_PLUGINS at tests/callback_plugins.
            "ANSIBLE_STDOUT_CALLBACK": "json_results",
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(directory / "cp"),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_FORKS": "5",
        })
        started = time.time()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=900, check=False)
        sys.stderr.write("[guests] ansible-playbook %s: rc=%s in %.1fs\n"
                         % (playbook.name, proc.returncode, time.time() - started))
        return GuestRun(proc)

    return run
