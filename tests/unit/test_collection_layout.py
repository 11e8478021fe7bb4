"""The collection's metadata stays complete as modules are added."""
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
GUEST_SIDE = {"waagent_config"}  # runs on the guests, takes no Azure auth


def test_action_group_lists_every_azure_module():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    modules = {path.stem for path in (ROOT / "plugins" / "modules").glob("*.py")} - GUEST_SIDE
    assert set(runtime["action_groups"]["azure"]) == modules
    assert runtime["requires_ansible"] == ">=2.16.0"


def test_every_azure_module_uses_the_auth_fragment():
    for path in (ROOT / "plugins" / "modules").glob("*.py"):
        if path.stem not in GUEST_SIDE:
            assert "azure_vm.extensions.azure" in path.read_text(), path.name
