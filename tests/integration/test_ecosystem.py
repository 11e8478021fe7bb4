"""Issue 15 ("fits the ecosystem"): the seed-001 playbook under --check, feature states in one spelling, make
emulator's exports, the collection tarball's contents and the execution environment's build context."""
import json
import os
import subprocess
import sys
import tarfile

import yaml

from harness import REPO_ROOT, VENV_BIN, base_ansible_env

PLAYBOOK = REPO_ROOT / "playbooks" / "enable_automatic_extension_upgrade.yml"
INVENTORY = REPO_ROOT / "playbooks" / "inventory" / "automatic_extension_upgrade.yml"
FEATURES_PATH = "/providers/Microsoft.Features/providers/Microsoft.Compute/features"


def test_automatic_upgrade_playbook_passes_under_check_and_writes_nothing(run_playbook, emulator):
    emulator.settings(feature_registration_s=1, provider_registration_s=0.5)
    run = run_playbook(str(PLAYBOOK), inventory=str(INVENTORY), check=True, diff=True, expect_rc=0)
    assert emulator.writes() == []
    feature = run.task("Register the automatic extension upgrade preview feature")
    assert feature["changed"] is True
    assert run.task("Fail if a listed extension does not upgrade automatically").get("skipped") is True
    vm_results = run.task("Turn on automatic upgrade for the VM extensions")["results"]
    assert [item["changed"] for item in vm_results] == [True, True]
    # The real run afterwards still does the work, and passes its final check.
    real = run_playbook(str(PLAYBOOK), inventory=str(INVENTORY), expect_rc=0)
    assert real.task("Fail if a listed extension does not upgrade automatically").get("failed") is not True
    assert emulator.writes()


def test_feature_info_spells_states_one_way(run_playbook, emulator):
    # ARM has answered some features' states in lower case; replay such a list and query it the documented way.
    sub = emulator.env["AZURE_SUBSCRIPTION_ID"]
    listed = {"value": [
        {"id": "/subscriptions/%s%s/%s" % (sub, FEATURES_PATH, name), "name": "Microsoft.Compute/" + name,
         "type": "Microsoft.Features/providers/features", "properties": {"state": state}}
        for name, state in (("LowerCase", "registered"), ("UpperCase", "Registered"), ("Other", "notregistered"))]}
    emulator.faults([{"match": {"method": "GET", "path": "^/subscriptions/%s%s$" % (sub, FEATURES_PATH)},
                      "respond": {"status": 200, "body": listed}, "times": 1}])
    run = run_playbook("""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: info
      azure_vm.extensions.preview_feature_info:
        namespace: Microsoft.Compute
        query: "features[?state=='Registered'].name"
""", expect_rc=0)
    info = run.task("info")
    assert info["query_result"] == ["LowerCase", "UpperCase"]
    assert [f["state"] for f in info["features"]] == ["Registered", "Registered", "NotRegistered"]


def test_make_emulator_exports_let_a_playbook_run(tmp_path):
    """tests/run_emulator.py (make emulator): the printed export lines are all a playbook of one's own needs."""
    state = tmp_path / "emulator"
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "tests" / "run_emulator.py"), "--state-dir", str(state),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("# Admin API"):
                break
        exports = [line for line in lines if line.startswith("export ")]
        names = [line.split("=", 1)[0][len("export "):] for line in exports]
        assert {"AZURE_CLOUD_ENVIRONMENT", "AZURE_SUBSCRIPTION_ID", "AZURE_CLIENT_ID", "AZURE_SECRET", "AZURE_TENANT",
                "REQUESTS_CA_BUNDLE", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_PYTHON_INTERPRETER"} <= set(names)
        playbook = tmp_path / "mine.yml"
        playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "read", "register": "r",
             "azure_vm.extensions.vm_extension_info": {"resource_group": "rg-demo", "vm_name": "vm-web-01"}},
            {"name": "show", "ansible.builtin.debug": {"msg": "{{ r.extensions | map(attribute='name') | list }}"}},
        ]}]))
        # A plain shell: only PATH and HOME, then the printed lines, as a user would paste them.
        script = "\n".join(exports + ["exec %s -i localhost, -c local %s" % (VENV_BIN / "ansible-playbook", playbook)])
        run = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                             capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert '"msg": [\n        "customScript"\n    ]' in run.stdout
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def test_collection_tarball_holds_what_works_outside_a_checkout(tmp_path):
    out = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path),
                          str(REPO_ROOT)], env=base_ansible_env(), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    tarball = next(tmp_path.glob("azure_vm-extensions-*.tar.gz"))
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
        manifest = json.loads(archive.extractfile("MANIFEST.json").read())
    for wanted in ("README.md", "requirements.txt", "meta/runtime.yml", "CHANGELOG.rst", "COPYING",
                   "plugins/modules/vm_extension.py", "plugins/module_utils/client.py",
                   "roles/waagent/tasks/main.yml", "playbooks/enable_automatic_extension_upgrade.yml",
                   "playbooks/inventory/automatic_extension_upgrade.yml", "docs/emulator.md", "docs/awx.md",
                   "execution-environment.yml", "bindep.txt", "playbooks/fleet.yml"):
        assert wanted in names, wanted
    for unwanted in ("benchmarks", ".gitignore", "tests", ".ci", "Makefile", "playbooks/inventory/fleet", ".venv", ".build", "changelogs/fragments"):
        assert unwanted not in names and not any(n.startswith(unwanted + "/") for n in names), unwanted
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert manifest["collection_info"]["version"] == yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["version"]


def test_ansible_builder_context_includes_the_collection(tmp_path):
    context = tmp_path / "context"
    proc = subprocess.run([str(VENV_BIN / "python"), str(REPO_ROOT / "tests" / "ee" / "create_context.py"),
                           "--context", str(context)], cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=600, check=False, env=dict(os.environ, PATH="%s:%s" % (VENV_BIN, os.environ["PATH"])))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    build = context / "_build"
    requirements = yaml.safe_load((build / "requirements.yml").read_text())
    collection = [c for c in requirements["collections"] if "azure_vm-extensions" in c["name"]]
    assert len(collection) == 1, requirements
    assert collection[0]["type"] == "file"
    tarball = build / collection[0]["name"]
    assert tarball.is_file(), sorted(p.name for p in build.rglob("*"))
    with tarfile.open(tarball) as archive:
        assert "plugins/modules/vm_extension.py" in archive.getnames()
    containerfile = (context / "Containerfile").read_text()
    assert "ansible-galaxy collection install" in containerfile
    assert "quay.io/centos/centos:stream9" in containerfile
    # What the image build does next, run here: install the context's galaxy requirements, then ansible-builder's
    # own introspection, which must find this collection's Python requirements and system packages.
    installed = tmp_path / "installed"
    # An image has no other copy of the collection: only the install directory is on the collections path.
    env = dict(base_ansible_env(), ANSIBLE_COLLECTIONS_PATH=str(installed))
    proc = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "install", "-r", "requirements.yml", "-p",
                           str(installed)], cwd=str(build), env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (installed / "ansible_collections" / "azure_vm" / "extensions" / "plugins" / "modules").is_dir()
    proc = subprocess.run([sys.executable, str(build / "scripts" / "introspect.py"), "introspect", str(installed)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    found = yaml.safe_load(proc.stdout)
    ours = [line.split("#")[0].strip() for line in found["python"] if "from collection azure_vm.extensions" in line]
    wanted = [line.strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#") and not line.startswith("ansible-core")]
    assert ours == wanted
    assert "azure-cli" not in proc.stdout
    assert any(line.startswith("ca-certificates") for line in found["system"])
