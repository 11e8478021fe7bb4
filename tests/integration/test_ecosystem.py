"""Issue 15 ("fits the ecosystem"): the seed-001 playbook under --check, feature states in one spelling, make
emulator's exports, the collection tarball's contents and the execution environment's build context.
Issue 24 (current with the ecosystem): the README's emulator steps in a fresh shell, a busy port, the tarball without
.ansible/, the README's paths and links against the tarball, and the README's version matrix against CI's."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile

import pytest
import yaml

from harness import REPO_ROOT, VENV_BIN, base_ansible_env

PLAYBOOK = REPO_ROOT / "playbooks" / "enable_automatic_extension_upgrade.yml"
INVENTORY = REPO_ROOT / "playbooks" / "inventory" / "automatic_extension_upgrade.yml"
FEATURES_PATH = "/providers/Microsoft.Features/providers/Microsoft.Compute/features"
README = REPO_ROOT / "README.md"
# What a checkout accumulates that must never reach the tarball: ansible-lint's cache (it installs the collection
# there when run online), the virtualenvs and build output, Python caches.
CHECKOUT_DEBRIS = (".ansible/collections/ansible_collections/azure_vm/extensions/README.md", ".venv/bin/python",
                   ".build/dist/azure_vm-extensions-0.0.1.tar.gz", ".pytest_cache/README.md",
                   "plugins/modules/__pycache__/vm_extension.cpython-311.pyc", ".cache/pip/x")


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
        # A plain shell: only PATH and HOME, then the printed lines, as a user would paste them; ansible-playbook is
        # found through them (the venv is not on this PATH), and so is the file the README sources instead.
        assert exports[-1].startswith("export PATH=")
        script = "\n".join(exports + ["exec ansible-playbook -i localhost, -c local %s" % playbook])
        run = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                             capture_output=True, text=True, timeout=600, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert '"msg": [\n        "customScript"\n    ]' in run.stdout
        assert (state / "exports.sh").read_text().splitlines() == exports
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0


def readme_emulator_steps():
    """The shell lines of the README's emulator section: the `make emulator` block, then the second shell's block."""
    section = README.read_text().split("## Develop playbooks without Azure (from a checkout)\n", 1)[1].split("\n## ")[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [[line.split("  #")[0].strip() for line in block.splitlines() if line.strip()] for block in blocks]


def test_readme_emulator_section_works_in_a_fresh_shell(tmp_path):
    """The README's emulator steps as written: `make emulator` in one shell, the other block in a fresh one."""
    first, second = readme_emulator_steps()
    assert first == ["make emulator"]
    with socket.socket() as probe:  # a free port, passed as the README says one passes another port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    state = tmp_path / "state"
    # `make emulator` is `$(PY) tests/run_emulator.py --state-dir .build/emulator --port $(PORT)`; run that recipe with
    # make itself, but with its state in tmp_path so that a developer's running emulator is not disturbed.
    make = subprocess.run(["make", "-n", "emulator", "PORT=%d" % port], cwd=str(REPO_ROOT), capture_output=True,
                          text=True, check=True).stdout.splitlines()
    recipe = [line.strip() for line in make if "tests/run_emulator.py" in line]
    assert len(recipe) == 1 and re.fullmatch(r"\S+/bin/python tests/run_emulator\.py --state-dir \.build/emulator "
                                             r"--port %d" % port, recipe[0]), make
    proc = subprocess.Popen([sys.executable, "tests/run_emulator.py", "--state-dir", str(state), "--port", str(port)],
                            cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("# Admin API"):
                break
        # The second block, with the exports file where this emulator wrote it; a shell with PATH and HOME only.
        assert second[0] == ". .build/emulator/exports.sh"
        script = "\n".join([". %s" % (state / "exports.sh")] + second[1:])
        run = subprocess.run(["bash", "-ec", script], cwd=str(REPO_ROOT), capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=600, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "VM agent" in run.stdout and "customScript" in run.stdout, run.stdout
    finally:
        proc.terminate()
        proc.wait(30)


def test_make_emulator_on_a_busy_port_says_port_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "run_emulator.py"), "--state-dir",
                              str(tmp_path / "state"), "--port", str(port)], capture_output=True, text=True,
                             timeout=300, check=False)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    match = re.fullmatch(r"make emulator: port %d on 127\.0\.0\.1 is in use; choose another with PORT=(\d+) "
                         r"\(make emulator PORT=\1, or --port\)" % port, lines[0])
    assert match, lines[0]
    assert int(match.group(1)) != port


def checkout_copy(dest):
    """The files a clean clone has (tracked, or untracked and not ignored), as sanity.sh copies them."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=str(REPO_ROOT),
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(source), str(dest / name))
    return dest


@pytest.fixture(scope="module")
def tarball_names(tmp_path_factory):
    """The names in the tarball `ansible-galaxy collection build` makes of a checkout that has all CHECKOUT_DEBRIS."""
    work = tmp_path_factory.mktemp("tarball")
    source = checkout_copy(work / "checkout")
    for debris in CHECKOUT_DEBRIS:
        (source / debris).parent.mkdir(parents=True, exist_ok=True)
        (source / debris).write_text("debris\n")
    out = subprocess.run([str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(work / "dist"),
                          str(source)], env=base_ansible_env(), capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    tarball = next((work / "dist").glob("azure_vm-extensions-*.tar.gz"))
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
        manifest = json.loads(archive.extractfile("MANIFEST.json").read())
    return names, manifest


def in_tarball(names, path):
    path = path.rstrip("/")
    return path in names or any(name.startswith(path + "/") for name in names)


def test_collection_tarball_holds_what_works_outside_a_checkout(tarball_names):
    names, manifest = tarball_names
    for wanted in ("README.md", "requirements.txt", "meta/runtime.yml", "CHANGELOG.rst", "COPYING",
                   "plugins/modules/vm_extension.py", "plugins/module_utils/client.py",
                   "roles/waagent/tasks/main.yml", "playbooks/enable_automatic_extension_upgrade.yml",
                   "playbooks/inventory/automatic_extension_upgrade.yml", "docs/emulator.md", "docs/awx.md",
                   "execution-environment.yml", "bindep.txt", "playbooks/fleet.yml"):
        assert wanted in names, wanted
    for unwanted in ("benchmarks", ".gitignore", "tests", ".ci", "Makefile", "playbooks/inventory/fleet", ".venv",
                     ".build", "changelogs/fragments", ".ansible", ".pytest_cache", ".cache"):
        assert not in_tarball(names, unwanted), unwanted
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert manifest["collection_info"]["version"] == yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["version"]


def readme_units():
    """(text that may mark it, code) for every place the README names something: each line of a sh block, and each
    table row, with the paragraph that introduces the block or table; each paragraph or list item with its inline code
    spans. The heading above is part of the text: a section whose heading says "checkout" marks all of it."""
    units, paragraph, heading, fence, intro = [], [], "", None, ""
    lines = README.read_text().splitlines() + [""]

    def flush(context=""):
        if paragraph:
            text = " ".join(paragraph)
            units.append((heading + " " + context + " " + text, re.findall(r"`([^`]+)`", text)))
            paragraph.clear()
            return text
        return None

    for line in lines:
        if fence is not None:
            if line.startswith("```"):
                fence = None
            elif fence == "sh":
                units.append((heading + " " + intro + " " + line, [line.split("  #")[0]]))
            continue
        if line.startswith("```"):
            intro = flush() or intro
            fence = line[3:].strip()
        elif line.startswith("#"):
            flush()
            heading = line
        elif line.startswith("|"):
            intro = flush() or intro
            paragraph.append(line)
            flush(intro)
        elif not line.strip() or line.startswith("- "):
            intro = flush() or intro
            if line.strip():
                paragraph.append(line)
        else:
            paragraph.append(line.strip())
    return units


def repository_paths(code):
    """The paths of this repository a piece of README code names (`make ...` needs the Makefile)."""
    found = []
    words = code.split()
    if words[:1] == ["make"]:
        found.append("Makefile")
    for word in words:
        word = word.strip("\"'(),;:")
        if word.startswith((".build/", ".venv/")):
            found.append(word)  # made by the Makefile in a checkout
        elif "/" in word and not word.startswith(("/", "~", "$", "http")) and "://" not in word:
            if "*" in word and any(REPO_ROOT.glob(word)) or (REPO_ROOT / word.rstrip("/")).exists():
                found.append(word)
        elif word and "/" not in word and (REPO_ROOT / word).is_file():  # a top-level file: requirements.txt, ...
            found.append(word)
    return found


def test_readme_paths_are_in_the_tarball_or_marked_checkout_only(tarball_names):
    """Every repository path the README names (commands to run included) is in the Galaxy tarball, or the README says
    right there that it needs a checkout; links are absolute (relative ones do not resolve on Galaxy's page)."""
    names = tarball_names[0]
    shipped, checkout_only, unmarked = set(), set(), []
    for text, codes in readme_units():
        for code in codes:
            for path in repository_paths(code):
                if "*" not in path and in_tarball(names, path):
                    shipped.add(path)
                elif re.search(r"\bcheckout\b", text, re.I):
                    checkout_only.add(path)
                else:
                    unmarked.append((path, text[:160]))
    assert unmarked == []
    # The parser sees both kinds (a README or parser change that found nothing would pass the check above).
    assert {"playbooks/demo.yml", "requirements.txt", "meta/runtime.yml", "playbooks/fleet_one_task.yml"} <= shipped
    assert {"Makefile", "tests/emulator/README.md", "playbooks/inventory/fleet", ".build/emulator/exports.sh",
            "tests/emulator/azure-emulator", "tests/sanity.sh"} <= checkout_only
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    assert links and [link for link in links if not link.startswith("https://")] == []
    repository = yaml.safe_load((REPO_ROOT / "galaxy.yml").read_text())["repository"]
    for link in links:
        if link.startswith(repository + "/blob/main/"):
            assert (REPO_ROOT / link[len(repository + "/blob/main/"):]).is_file(), link


def makefile_variables():
    return dict(re.findall(r"^([A-Z_]+) :?= *(\S+)$", (REPO_ROOT / "Makefile").read_text(), re.M))


def test_readme_states_the_version_matrix_ci_runs():
    """The README's table of CI runs says what the Makefile and the pins make CI run, and the ranges agree."""
    make = makefile_variables()
    main_core = re.search(r"^ansible-core==(\S+)$", (REPO_ROOT / "tests" / "requirements.txt").read_text(), re.M)
    lowest_core = re.search(r"^ansible-core>=(\S+),<(\S+)$", (REPO_ROOT / "requirements.txt").read_text(), re.M)
    rows = {}
    for line in README.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] in ("main", "lowest", "newest", "azure.azcollection"):
            rows[cells[0]] = cells[1:3]
    assert rows == {
        "main": [main_core.group(1), "%d.%d" % sys.version_info[:2]],
        "lowest": [lowest_core.group(1), make["LOWEST_PYTHON"]],
        "newest": [make["NEWEST_ANSIBLE_CORE"], make["NEWEST_PYTHON"]],
        "azure.azcollection": [make["NEWEST_ANSIBLE_CORE"], make["AZCOLLECTION_PYTHON"]],
    }
    # The newest tested ansible-core is the newest the range allows, and 2.21 is what the ansible package pins.
    newest_minor = tuple(int(n) for n in make["NEWEST_ANSIBLE_CORE"].split(".")[:2])
    assert lowest_core.group(2) == "%d.%d" % (newest_minor[0], newest_minor[1] + 1)
    runtime = yaml.safe_load((REPO_ROOT / "meta" / "runtime.yml").read_text())
    assert runtime["requires_ansible"] == ">=%s,<%s" % (lowest_core.group(1), lowest_core.group(2))
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "make test\nmake ci-extra\n" in ci
    extra = re.search(r"^ci-extra: (.*)$", (REPO_ROOT / "Makefile").read_text(), re.M).group(1).split()
    assert {"test-lowest", "sanity-lowest", "test-newest", "sanity-newest", "test-azcollection",
            "galaxy-importer"} <= set(extra)


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
