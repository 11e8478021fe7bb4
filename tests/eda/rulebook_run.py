"""The real ansible-rulebook against the emulator, for tests/integration/test_eda.py and benchmarks/eda_bench.py.

    rulebook = Rulebook(tmp_path, emulator, {"self_heal_interval": 1}).start()
    rulebook.wait(lambda: rulebook.polls() >= 1, 120, "the baseline poll")
    ...
    rulebook.stop()

The collection is found the way ansible-rulebook finds any collection (`ansible-galaxy collection list` on
ANSIBLE_COLLECTIONS_PATH, here the checkout's .build/collections link); its playbooks run through ansible-runner
on localhost with this virtualenv's Python. Only the emulator's environment reaches Azure code.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import VENV_BIN, base_ansible_env

RULEBOOK = "azure_vm.extensions.self_heal"
ANSIBLE_RULEBOOK = VENV_BIN / "ansible-rulebook"


def rulebook_unavailable():
    """Why ansible-rulebook cannot run here (no Java 17 runtime, not installed), or None when it can."""
    if not ANSIBLE_RULEBOOK.exists():
        return "ansible-rulebook is not installed in %s (tests/requirements.txt installs it)" % VENV_BIN
    try:
        out = subprocess.run([str(ANSIBLE_RULEBOOK), "--version"], capture_output=True, text=True, timeout=300,
                             check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "ansible-rulebook --version failed: %s" % exc
    if out.returncode != 0 or "Java version" not in out.stdout:
        return ("ansible-rulebook needs a Java 17 runtime (tests/eda/system-packages.txt: openjdk-17-jre-headless, "
                "installed by `make test` as root): %s" % (out.stderr or out.stdout).strip()[-500:])
    return None


class Rulebook:
    """One ansible-rulebook process with the given rulebook variables; its state file, journal and output."""

    def __init__(self, workdir, emulator, variables=None, rulebook=RULEBOOK, env=None, verbose=True):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.emulator = emulator
        self.rulebook = rulebook
        self.variables = {
            "self_heal_state_file": str(self.workdir / "extension_state.json"),
            "self_heal_journal": str(self.workdir / "journal.jsonl"),
            "self_heal_backup_dir": str(self.workdir / "backups"),
        }
        self.variables.update(variables or {})
        self.env = dict(base_ansible_env(), **emulator.env)
        self.env["AZURE_POLLING_INTERVAL"] = "0.2"
        self.env.update(env or {})
        self.verbose = verbose
        self.process = None
        self.log_path = None
        self.runs = 0

    def start(self):
        self.runs += 1
        inventory = self.workdir / "inventory.yml"
        inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                             "      ansible_python_interpreter: %s\n" % sys.executable)
        variables = self.workdir / "vars.yml"
        variables.write_text(json.dumps(self.variables))
        self.log_path = self.workdir / ("ansible-rulebook.%d.log" % self.runs)
        cmd = [str(ANSIBLE_RULEBOOK), "-r", self.rulebook, "-i", str(inventory), "--vars", str(variables)]
        if self.verbose:
            cmd.append("-v")
        with open(self.log_path, "wb") as log:
            # Its own process group: stop() ends ansible-rulebook and the playbooks it started, nothing else.
            self.process = subprocess.Popen(cmd, env=self.env, cwd=str(self.workdir), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def output(self):
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def state(self):
        path = Path(self.variables["self_heal_state_file"])
        return json.loads(path.read_text()) if path.exists() else None

    def polls(self):
        return (self.state() or {}).get("polls", 0)

    def journal(self):
        path = Path(self.variables["self_heal_journal"])
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait(self, predicate, timeout, what):
        """Until predicate() is true; fails with the rulebook's output when it exits or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            if self.process.poll() is not None:
                raise AssertionError("ansible-rulebook exited (rc %s) while waiting for %s:\n%s" % (
                    self.process.returncode, what, self.output()[-8000:]))
            if time.monotonic() > deadline:
                raise AssertionError("no %s within %s s:\n%s" % (what, timeout, self.output()[-8000:]))
            time.sleep(0.25)

    def wait_polls(self, count, timeout=120):
        """Until `count` more polls than now have been saved."""
        target = self.polls() + count
        self.wait(lambda: self.polls() >= target, timeout, "%d more polls" % count)

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        group = self.process.pid  # the session leader: its pid is the group id
        os.killpg(group, signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(30)
        try:
            os.killpg(group, signal.SIGKILL)  # a playbook run it started and left behind
        except ProcessLookupError:
            pass
