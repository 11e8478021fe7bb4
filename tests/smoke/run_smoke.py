"""Smoke run of every Azure module in a given virtualenv against the emulator (run by `make test-lowest`,
`make test-newest` and `make test-azcollection`; see the Makefile).

    .venv/bin/python tests/smoke/run_smoke.py --venv .build/lowest
    .venv/bin/python tests/smoke/run_smoke.py --venv .build/azcollection/venv \
        --azcollection .build/azcollection/collections

The emulator runs in this (the project's) Python; ansible-playbook and the modules run with --venv's. The smoke
playbook runs twice: the first run must succeed, the second must report no change and send no ARM write. With
--azcollection, azure.azcollection's azure_rm_virtualmachineextension_info runs in the same virtualenv too
(through tests/emulator/public_cloud_proxy.py, as it only knows the public cloud), proving both collections'
requirements work side by side. Then the extensions role (playbooks/fleet.yml over playbooks/inventory/fleet, on
the emulator's fleet world) converges and runs again with no change and no write: the role's tasks, its report
action plugin and the fleet's List All sweeps on this virtualenv's ansible-core and SDKs. Exits non-zero with the
reason on any failure.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

from harness import base_ansible_env  # noqa: E402
from emulator_control import Emulator  # noqa: E402

SMOKE = Path(__file__).resolve().parent / "smoke.yml"
FLEET_SEED = ROOT / "tests" / "emulator" / "fleet-seed.yml"
AZCOLLECTION_PLAY = """
- name: azure.azcollection in the same virtualenv
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Read a VM's extensions with azure.azcollection
      azure.azcollection.azure_rm_virtualmachineextension_info:
        resource_group: rg-demo
        virtual_machine_name: vm-web-01
      register: incumbent
    - name: Check azure.azcollection saw the seeded extension
      ansible.builtin.assert:
        that: "'customScript' in (incumbent.extensions | map(attribute='name') | list)"
"""


def run(cmd, env, label):
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=1200)
    print("%-48s rc=%d %6.1f s" % (label, proc.returncode, time.time() - started), flush=True)
    results = {}
    try:
        results = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        pass
    return proc, results


def warnings(proc):
    """Ansible's warnings and deprecations in a run's output ([WARNING]: ..., [DEPRECATION WARNING]: ...)."""
    return [line.strip() for line in (proc.stdout + proc.stderr).splitlines()
            if "[WARNING]" in line or "[DEPRECATION WARNING]" in line]


def failed(proc, why):
    sys.stderr.write("%s\n--- stdout ---\n%s\n--- stderr ---\n%s\n" % (why, proc.stdout[-6000:], proc.stderr[-3000:]))
    return 1


def venv_env(emu, venv, python):
    """The environment of ansible-playbook from --venv against the emulator emu: its Python runs the modules."""
    env = base_ansible_env()
    env.update(emu.env)
    env.update({"ANSIBLE_PYTHON_INTERPRETER": str(python), "ANSIBLE_STDOUT_CALLBACK": "json_results",
                "AZURE_POLLING_INTERVAL": "0.2", "PATH": "%s%s%s" % (venv / "bin", os.pathsep, env["PATH"])})
    return env


def versions(python):
    code = ("import importlib.metadata as m\n"
            "for p in ('ansible-core','azure-core','azure-identity','azure-mgmt-core','azure-mgmt-compute',"
            "'azure-mgmt-resource','azure-mgmt-resource-features','jmespath'):\n"
            "    print('%s==%s' % (p, m.version(p)))")
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.split()


def start_proxy(emu, work):
    """tests/emulator/public_cloud_proxy.py in front of the emulator; (process, port)."""
    ready = Path(work) / "proxy.json"
    port = int(emu.base_url.rsplit(":", 1)[1].split("/")[0])
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "emulator" / "public_cloud_proxy.py"),
                             "--emulator-port", str(port), "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120  # generous: CI machines can be loaded
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("public_cloud_proxy.py did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["port"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--venv", required=True, help="virtualenv with ansible-core and requirements.txt")
    parser.add_argument("--azcollection", help="collections path holding azure.azcollection (run it too)")
    args = parser.parse_args(argv)
    venv = Path(args.venv).resolve()
    python = venv / "bin" / "python"
    print("smoke in %s: %s" % (venv, " ".join(versions(python))), flush=True)
    with tempfile.TemporaryDirectory(prefix="azure-vm-smoke-") as work:
        emu = Emulator.start(os.path.join(work, "emulator"), public_cloud=bool(args.azcollection), timeout=120)
        proxy = None
        try:
            env = venv_env(emu, venv, python)
            playbook = [str(venv / "bin" / "ansible-playbook"), str(SMOKE), "-i", "localhost,"]
            proc, results = run(playbook, env, "smoke playbook, first run")
            if proc.returncode != 0:
                return failed(proc, "the smoke playbook failed")
            if warnings(proc):
                return failed(proc, "the smoke playbook printed warnings:\n%s" % "\n".join(warnings(proc)))
            before = len(emu.writes())
            proc, results = run(playbook, env, "smoke playbook, second run")
            if proc.returncode != 0:
                return failed(proc, "the second smoke run failed")
            if warnings(proc):
                return failed(proc, "the second smoke run printed warnings:\n%s" % "\n".join(warnings(proc)))
            changed = results.get("stats", {}).get("localhost", {}).get("changed")
            if changed != 0 or len(emu.writes()) != before:
                return failed(proc, "the second run changed %s task(s) and sent %d write(s)"
                              % (changed, len(emu.writes()) - before))
            if args.azcollection:
                proxy, proxy_port = start_proxy(emu, work)
                az_env = dict(env, **{
                    "ANSIBLE_COLLECTIONS_PATH": "%s%s%s" % (Path(args.azcollection).resolve(), os.pathsep,
                                                            env["ANSIBLE_COLLECTIONS_PATH"]),
                    # azure.azcollection knows only AzureCloud: the proxy tunnels its names to the emulator.
                    "AZURE_CLOUD_ENVIRONMENT": "AzureCloud",
                    "HTTPS_PROXY": "http://127.0.0.1:%d" % proxy_port, "https_proxy": "http://127.0.0.1:%d" % proxy_port,
                    "NO_PROXY": "", "no_proxy": "", "SSL_CERT_FILE": emu.ca_bundle,
                })
                play = Path(work) / "azcollection.yml"
                play.write_text(AZCOLLECTION_PLAY)
                proc, results = run([str(venv / "bin" / "ansible-playbook"), str(play), "-i", "localhost,"], az_env,
                                    "azure.azcollection module, same venv")
                if proc.returncode != 0:
                    return failed(proc, "azure.azcollection's module failed in the shared virtualenv")
        finally:
            if proxy is not None:
                proxy.terminate()
            emu.stop()
        outcome = smoke_fleet_role(venv, python, work)
        if outcome:
            return outcome
    print("smoke passed", flush=True)
    return 0


def smoke_fleet_role(venv, python, work):
    """playbooks/fleet.yml twice on the emulator's fleet world: converged with no warning, then nothing to do."""
    emu = Emulator.start(os.path.join(work, "fleet-emulator"), seed=str(FLEET_SEED), timeout=120)
    try:
        emu.settings(handler_duration_s=0.5, delete_duration_s=0.3)
        env = venv_env(emu, venv, python)
        playbook = [str(venv / "bin" / "ansible-playbook"), str(ROOT / "playbooks" / "fleet.yml"),
                    "-i", str(ROOT / "playbooks" / "inventory" / "fleet")]
        proc, results = run(playbook, env, "extensions role over the fleet, first run")
        stats = results.get("stats", {})
        if proc.returncode != 0 or not stats or not all(s.get("changed") for s in stats.values()):
            return failed(proc, "the extensions role did not converge every host: %s" % stats)
        if warnings(proc):
            return failed(proc, "the extensions role printed warnings:\n%s" % "\n".join(warnings(proc)))
        before = len(emu.writes())
        proc, results = run(playbook, env, "extensions role over the fleet, second run")
        changed = sum(s.get("changed", 0) for s in results.get("stats", {}).values())
        if proc.returncode != 0 or changed or len(emu.writes()) != before:
            return failed(proc, "the extensions role's second run changed %s host(s) and sent %d write(s)"
                          % (changed, len(emu.writes()) - before))
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
