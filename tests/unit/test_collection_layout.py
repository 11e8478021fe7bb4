"""The collection's metadata stays complete as modules are added."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GUEST_SIDE = {"waagent_config"}  # runs on the guests, takes no Azure auth
# Action plugins that read task variables on the controller and send nothing to Azure: a documentation-only module
# file (ansible-doc's page) and the code in plugins/action/.
CONTROLLER_ACTIONS = {"vm_extension_fleet_report"}
NOT_AZURE = GUEST_SIDE | CONTROLLER_ACTIONS


def test_action_group_lists_every_azure_module():
    runtime = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())
    modules = {path.stem for path in (ROOT / "plugins" / "modules").glob("*.py")} - NOT_AZURE
    assert set(runtime["action_groups"]["azure"]) == modules
    # One supported ansible-core range: requirements.txt states it, meta/runtime.yml repeats it exactly.
    core = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if line.startswith("ansible-core")]
    assert core == ["ansible-core" + runtime["requires_ansible"]]
    for meta in (ROOT / "roles").glob("*/meta/main.yml"):
        minimum = yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"]
        assert runtime["requires_ansible"].startswith(">=%s." % minimum), meta


def test_every_azure_module_uses_the_auth_fragment():
    for path in (ROOT / "plugins" / "modules").glob("*.py"):
        if path.stem not in NOT_AZURE:
            assert "azure_vm.extensions.azure" in path.read_text(), path.name


def test_controller_actions_are_documentation_and_an_action_plugin():
    actions = {path.stem for path in (ROOT / "plugins" / "action").glob("*.py")}
    assert actions == CONTROLLER_ACTIONS
    for name in CONTROLLER_ACTIONS:
        text = (ROOT / "plugins" / "modules" / (name + ".py")).read_text()
        assert not [line for line in text.splitlines() if line.startswith(("def ", "class ", "import ", "from "))
                    and "__future__" not in line], name
        action = (ROOT / "plugins" / "action" / (name + ".py")).read_text().splitlines()
        imports = [line for line in action if line.startswith(("import ", "from "))]
        # Sends nothing to Azure: no SDK and no module_utils of this collection.
        assert not [line for line in imports if "azure" in line or "ansible_collections" in line], imports


@pytest.mark.parametrize("module", sorted(path.stem for path in (ROOT / "plugins" / "modules").glob("*.py")))
def test_ansible_doc_renders_every_module(ansible_env, module):
    doc = Path(sys.executable).parent / "ansible-doc"
    out = subprocess.run([str(doc), "azure_vm.extensions." + module], env=ansible_env, capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "EXAMPLES" in out.stdout and "RETURN VALUES" in out.stdout
    assert "[WARNING]" not in out.stderr, out.stderr


# docs/architecture.md: every module_util has a layer, and imports only from its own layer or a lower one.
LAYERS = {
    "errors": 0, "arm": 0, "waiter": 0, "extension_model": 0, "extension_status": 0, "vmss_rollout": 0,
    "scheduler": 0, "query": 0,
    "auth": 1, "client": 1, "module": 1,
    "vm_extension_state": 2, "vmss_extension_state": 2, "extension_images": 2, "registration": 2,
    "extension_rerun": 3, "fleet": 3, "fleet_pipeline": 3,
    "extension_task": 4,
}
# Pure layer-0 files that must not reach for an SDK or a connection.
NO_SDK = {"extension_model", "extension_status", "vmss_rollout", "scheduler", "query", "waiter", "arm"}


def module_util_imports(path):
    import ast

    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if ".plugins.module_utils." in node.module:
                found.add(node.module.rsplit(".", 1)[1])
            elif node.module.endswith(".plugins.module_utils"):
                found.update(alias.name for alias in node.names)
            if node.module.startswith("azure"):
                found.add("SDK:" + node.module)
        elif isinstance(node, ast.Import):
            found.update("SDK:" + alias.name for alias in node.names if alias.name.startswith("azure"))
    return found


def test_module_utils_import_only_downwards():
    utils = ROOT / "plugins" / "module_utils"
    assert {path.stem for path in utils.glob("*.py")} == set(LAYERS), "give every module_util a layer (and a row " \
        "in docs/architecture.md)"
    for path in utils.glob("*.py"):
        imports = module_util_imports(path)
        upward = [name for name in imports if not name.startswith("SDK:") and LAYERS[name] > LAYERS[path.stem]]
        assert not upward, "%s (layer %d) imports %s from above" % (path.stem, LAYERS[path.stem], upward)
        if path.stem in NO_SDK:
            sdk = [name for name in imports if name.startswith("SDK:") or name in ("client", "auth", "module")]
            assert not sdk, "%s must not import an SDK or the connection: %s" % (path.stem, sdk)
        assert path.stem in (ROOT / "docs" / "architecture.md").read_text()


def test_modules_are_a_spec_documentation_and_one_call():
    for path in (ROOT / "plugins" / "modules").glob("*.py"):
        if path.stem in NOT_AZURE:
            continue
        imports = module_util_imports(path)
        assert "module" in imports, path.name
        assert len(imports - {"module"}) == 1, (path.name, imports)
        functions = [line for line in path.read_text().splitlines() if line.startswith(("def ", "class "))]
        assert functions == ["def main():"], (path.name, functions)
