"""Shared pytest fixtures: the collection on ANSIBLE_COLLECTIONS_PATH, the emulator, and ansible-playbook runs.

Every test that touches Azure talks to the emulator in tests/emulator/ through the collection's normal auth
code, with exactly the environment the emulator publishes in its endpoint.json.
"""
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "emulator"))

from harness import VENV_BIN, base_ansible_env, collections_path  # noqa: E402


# Unit tests import module_utils as ansible_collections.azure_vm.extensions.plugins.module_utils.*
sys.path.insert(0, collections_path())


@pytest.fixture(scope="session")
def ansible_env():
    """Environment for ansible-playbook/ansible-doc with this collection installed; no Azure variables."""
    return base_ansible_env()


@pytest.fixture(scope="session")
def emulator_process(tmp_path_factory):
    from emulator_control import Emulator  # tests/emulator/emulator_control.py

    emu = Emulator.start(state_dir=str(tmp_path_factory.mktemp("emulator")))
    yield emu
    emu.stop()


@pytest.fixture
def emulator(emulator_process):
    """The running emulator, reset to its seed (state, faults, settings and request log) for each test."""
    emulator_process.reset()
    return emulator_process


@dataclass
class PlaybookRun:
    rc: int
    stdout: str
    stderr: str
    results: dict

    def task(self, name, host="localhost"):
        """The result of the named task on host, from the json callback."""
        for play in self.results.get("plays", []):
            for task in play["tasks"]:
                if task["task"]["name"] == name and host in task["hosts"]:
                    return task["hosts"][host]
        raise KeyError(f"task {name!r} not found for {host}")

    @property
    def stats(self):
        return self.results.get("stats", {})


@pytest.fixture
def run_playbook(ansible_env, emulator, tmp_path):
    """Run a playbook with the real ansible-playbook against the emulator.

    `playbook` is a path or YAML text. Results are parsed from the json stdout callback unless a
    verbosity is asked for (then the default callback prints what a user would see).
    """

    def run(playbook, extra_vars=None, check=False, diff=False, verbosity=0, inventory=None, env=None,
            expect_rc=None):
        path = Path(playbook) if "\n" not in str(playbook) else None
        if path is None:
            path = tmp_path / "playbook.yml"
            path.write_text(playbook)
        cmd = [str(VENV_BIN / "ansible-playbook"), str(path), "-i", inventory or "localhost,"]
        if inventory is None:
            cmd += ["-c", "local"]
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        if verbosity:
            cmd.append("-" + "v" * verbosity)
        run_env = dict(ansible_env)
        run_env.update(emulator.env)
        run_env["ANSIBLE_STDOUT_CALLBACK"] = "default" if verbosity else "json_results"
        run_env.setdefault("AZURE_POLLING_INTERVAL", "0.2")  # the emulator's handlers take about a second
        if env:
            run_env.update(env)
        proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=1800, check=False)
        results = {}
        if not verbosity:
            try:
                results = json.loads(proc.stdout[proc.stdout.index("{"):])
            except ValueError:
                results = {}
        outcome = PlaybookRun(proc.returncode, proc.stdout, proc.stderr, results)
        if expect_rc is not None:
            assert proc.returncode == expect_rc, f"rc={proc.returncode}\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        return outcome

    return run
