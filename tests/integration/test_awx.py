"""AWX: the fleet playbook runs under ansible-runner (what AWX uses) with only the environment variables AWX's
Azure credential injects. (The execution environment's build context: test_ecosystem.py.)"""
import os
import shutil
from pathlib import Path

import pytest

from harness import REPO_ROOT, base_ansible_env

FLEET_SEED = REPO_ROOT / "tests" / "emulator" / "fleet-seed.yml"


def test_fleet_playbook_under_ansible_runner(tmp_path):
    ansible_runner = pytest.importorskip("ansible_runner")
    from emulator_control import Emulator

    emu = Emulator.start(str(tmp_path / "emulator"), seed=str(FLEET_SEED))
    try:
        emu.settings(handler_duration_s=0.3)
        private = tmp_path / "private"
        (private / "project").mkdir(parents=True)
        shutil.copy(REPO_ROOT / "playbooks" / "fleet.yml", private / "project" / "fleet.yml")
        # What AWX's Azure credential injects (plus the cloud and CA of the emulator), and nothing else Azure.
        credential_env = {key: emu.env[key] for key in ("AZURE_SUBSCRIPTION_ID", "AZURE_CLIENT_ID", "AZURE_SECRET",
                                                        "AZURE_TENANT", "AZURE_CLOUD_ENVIRONMENT")}
        credential_env["REQUESTS_CA_BUNDLE"] = emu.ca_bundle
        ansible = base_ansible_env()
        envvars = dict(credential_env,
                       ANSIBLE_COLLECTIONS_PATH=ansible["ANSIBLE_COLLECTIONS_PATH"],
                       ANSIBLE_LOCAL_TEMP=ansible["ANSIBLE_LOCAL_TEMP"],
                       ANSIBLE_PYTHON_INTERPRETER=ansible["ANSIBLE_PYTHON_INTERPRETER"],
                       AZURE_POLLING_INTERVAL="0.2",
                       PATH=ansible["PATH"])
        saved = {key: os.environ.pop(key) for key in list(os.environ) if key.startswith(("AZURE_", "ANSIBLE_"))}
        try:
            result = ansible_runner.run(private_data_dir=str(private), playbook="fleet.yml",
                                        inventory=str(REPO_ROOT / "playbooks" / "inventory" / "fleet"),
                                        envvars=envvars, extravars={"extensions_poll_interval": 0.2},
                                        quiet=True, timeout=300,
                                        # as AWX runs jobs: no artifact may hold the environment (credentials)
                                        suppress_env_files=True)
        finally:
            os.environ.update(saved)
        stdout = result.stdout.read()
        assert result.status == "successful", stdout[-4000:]
        assert result.rc == 0
        stats = result.stats
        hosts = ["fleet-001", "fleet-002", "fleet-003", "fleet-004", "web-01", "web-02"]
        assert sorted(stats["changed"]) == hosts
        assert not stats["failures"] and not stats["dark"]
        puts = [e for e in emu.writes() if e["method"] == "PUT"]
        assert len(puts) == 12
        secret = credential_env["AZURE_SECRET"]
        assert secret not in stdout
        checked = 0
        for path in Path(result.config.artifact_dir).rglob("*"):
            # `command` is ansible-runner's own record of the process environment (mode 0600, never part of the
            # job output; AWX deletes the private data dir). Everything the job produced is checked.
            if path.is_file() and path.name != "command":
                assert secret not in path.read_text(errors="replace"), path
                checked += 1
        assert checked > 10  # stdout, status, rc and the job events
    finally:
        emu.stop()
