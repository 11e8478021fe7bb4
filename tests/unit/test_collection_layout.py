"""The collection's metadata stays complete as modules are added."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GUEST_SIDE = {"waagent_config"}  # runs on the guests, takes no Azure auth


def test_action_group_lists_every_azure_module():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    modules = {path.stem for path in (ROOT / "plugins" / "modules").glob("*.py")} - GUEST_SIDE
    assert set(runtime["action_groups"]["azure"]) == modules
    # One supported ansible-core range: requirements.txt states it, meta/runtime.yml repeats it exactly.
    core = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("ansible-core")]
    assert core == ["ansible-core" + runtime["requires_ansible"]]
    for meta in (ROOT / "roles").glob("*/meta/main.yml"):
        minimum = yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"]
        assert runtime["requires_ansible"].startswith(">=%s." % minimum), meta


def test_every_azure_module_uses_the_auth_fragment():
    for path in (ROOT / "plugins" / "modules").glob("*.py"):
        if path.stem not in GUEST_SIDE:
            assert "azure_vm.extensions.azure" in path.read_text(), path.name


@pytest.mark.parametrize("module", sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py")))
def test_ansible_doc_renders_every_module(ansible_env, module):
    doc = Path(sys.executable).parent / "ansible-doc"
    out = subprocess.run([str(doc), "azure_vm.extensions." + module], env=ansible_env, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "EXAMPLES" in out.stdout and "RETURN VALUES" in out.stdout
    assert "[WARNING]" not in out.stderr, out.stderr
