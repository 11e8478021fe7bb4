"""Helpers shared by the tests, the demo and the benchmarks: the collection on ANSIBLE_COLLECTIONS_PATH, the
environment ansible-playbook runs with, and playbooks built from data.

(A module of its own, not conftest.py: tests/guests has a conftest too, and `import conftest` would be ambiguous.)
"""
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO_ROOT / ".build"
COLLECTIONS_DIR = BUILD_DIR / "collections"
VENV_BIN = Path(sys.executable).parent


def collections_path():
    """Expose the repository as ansible_collections/azure_vm/extensions (a symlink, so edits are live)."""
    link = COLLECTIONS_DIR / "ansible_collections" / "azure_vm" / "extensions"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        try:
            link.symlink_to(REPO_ROOT, target_is_directory=True)
        except FileExistsError:  # another pytest-xdist worker made it first
            pass
    return str(COLLECTIONS_DIR)


def base_ansible_env():
    env = dict(os.environ)
    # Only the emulator's variables reach Azure code: drop anything the developer's shell may carry.
    for key in list(env):
        if key.startswith(("AZURE_", "IDENTITY_", "MSI_", "ANSIBLE_")):
            del env[key]
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_LOCAL_TEMP": str(BUILD_DIR / "ansible-tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
        # ansible-core ships no json stdout callback (ansible.posix does); the tests bring a minimal one.
        "ANSIBLE_CALLBACK_PLUGINS": str(REPO_ROOT / "tests" / "callback_plugins"),
        "PATH": str(VENV_BIN) + os.pathsep + env.get("PATH", ""),
    })
    return env


def playbook(*tasks, hosts="localhost", gather_facts=False, **play):
    """YAML text of a one-play playbook with the given task dicts (tests build playbooks from data)."""
    import yaml

    body = dict(name="test", hosts=hosts, gather_facts=gather_facts, tasks=list(tasks))
    body.update(play)
    return yaml.safe_dump([body], sort_keys=False)


def plain(value):
    """ansible-inventory --list marks strings that came from an inventory plugin {"__ansible_unsafe": ...} (never
    templated, since they are Azure's data); their values, to compare."""
    if isinstance(value, dict):
        if list(value) == ["__ansible_unsafe"]:
            return value["__ansible_unsafe"]
        return dict((key, plain(item)) for key, item in value.items())
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
