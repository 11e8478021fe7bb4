"""Fleet benchmark: N VMs x K extensions with an emulated handler time T, against the local ARM emulator.

    .venv/bin/python benchmarks/fleet_bench.py --vms 20 --extensions 2 --handler-seconds 10

Scenarios (each on a freshly reset emulator, numbers from the emulator's request log):
  * azure_vm.extensions (role `extensions`, playbooks/fleet.yml) at ansible's default forks (5): first converge,
    then a no-change run;
  * azure.azcollection 3.21.0 (from the `ansible` 14.5.0 wheel, unmodified, its own virtualenv under .build/) with
    azure_rm_virtualmachineextension, one task per extension, at forks 5 and at forks N: converge + no-change;
  * a 200-VM run of the role under a small emulated write budget (429 + Retry-After), which must end with no
    failed task.
The incumbent reaches the emulator as AzureCloud: the emulator runs with --public-cloud and every request goes
through tests/emulator/public_cloud_proxy.py (HTTPS_PROXY), which tunnels only to the emulator.
Prints one JSON document; --markdown writes docs/benchmarks.md and a PNG plot (matplotlib from a separate
virtualenv, .build/bench-venv, created on first use).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))
from emulator_control import Emulator  # noqa: E402

BUILD = ROOT / ".build"
VENV_BIN = Path(sys.executable).parent
INCUMBENT_DIR = BUILD / "incumbent"
INCUMBENT_VERSION = "14.5.0"
DEFAULT_SEED = ROOT / "tests" / "emulator" / "default-seed.yml"
# Distinct Linux handler types from the emulator's catalogue (a VM has at most one extension per handler type).
EXTENSION_TYPES = [
    ("Microsoft.Azure.Extensions", "CustomScript", "2.1", {"commandToExecute": "echo fleet"}),
    ("Microsoft.Azure.Monitor", "AzureMonitorLinuxAgent", "1.33", None),
    ("Microsoft.Azure.Diagnostics", "LinuxDiagnostic", "4.0", None),
    ("Microsoft.OSTCExtensions", "VMAccessForLinux", "1.5", None),
]
RESOURCE_GROUP = "rg-bench"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---- set-up ------------------------------------------------------------------------------------------------
def write_seed(path, vms):
    seed = yaml.safe_load(DEFAULT_SEED.read_text())
    seed["subscriptions"][0]["vm_sets"] = [{"prefix": "bench-", "count": vms, "resource_group": RESOURCE_GROUP,
                                            "location": "westeurope", "os_type": "Linux"}]
    path.write_text(yaml.safe_dump(seed, sort_keys=False))


def vm_names(count):
    width = max(3, len(str(count)))
    return ["bench-%0*d" % (width, i) for i in range(1, count + 1)]


def extension_specs(count):
    specs = []
    for index in range(count):
        publisher, ext_type, version, settings = EXTENSION_TYPES[index % len(EXTENSION_TYPES)]
        spec = {"name": "ext%d" % (index + 1), "publisher": publisher, "type": ext_type,
                "type_handler_version": version}
        if settings:
            spec["settings"] = settings
        specs.append(spec)
    return specs


def write_inventory(directory, vms, extensions, seed_vms):
    names = vm_names(seed_vms)[:vms]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(yaml.safe_dump({"fleet": {
        "hosts": {name: None for name in names},
        "vars": {"ansible_connection": "local", "azure_resource_group": RESOURCE_GROUP,
                 "azure_vm_extensions": extension_specs(extensions)}}}, sort_keys=False))
    return directory


def incumbent_playbook(path, extensions):
    tasks = []
    for spec in extension_specs(extensions):
        args = {"resource_group": "{{ azure_resource_group }}", "virtual_machine_name": "{{ inventory_hostname }}",
                "name": spec["name"], "publisher": spec["publisher"], "virtual_machine_extension_type": spec["type"],
                "type_handler_version": spec["type_handler_version"], "auto_upgrade_minor_version": True}
        if spec.get("settings"):
            args["settings"] = spec["settings"]
        tasks.append({"name": "Extension %s" % spec["name"], "azure.azcollection.azure_rm_virtualmachineextension": args})
    path.write_text(yaml.safe_dump([{"name": "Incumbent fleet", "hosts": "fleet", "gather_facts": False,
                                     "tasks": tasks}], sort_keys=False))
    return path


def ensure_incumbent():
    """azure.azcollection from the ansible wheel, and its requirements in .build/incumbent/venv (never .venv)."""
    collection = INCUMBENT_DIR / "collections" / "ansible_collections" / "azure" / "azcollection"
    venv = INCUMBENT_DIR / "venv"
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    if not collection.exists():
        wheel_dir = INCUMBENT_DIR / "dl"
        # ansible >= 13 declares Python >= 3.12; the wheel is pure Python, only the collection is taken from it.
        subprocess.run([str(VENV_BIN / "pip"), "download", "--no-deps", "--only-binary=:all:", "--python-version",
                        "3.12", "ansible==" + INCUMBENT_VERSION, "-d", str(wheel_dir)], check=True, env=pip_env)
        import zipfile
        wheel = next(wheel_dir.glob("ansible-%s-*.whl" % INCUMBENT_VERSION))
        with zipfile.ZipFile(wheel) as archive:
            members = [n for n in archive.namelist() if n.startswith("ansible_collections/azure/azcollection/")]
            archive.extractall(INCUMBENT_DIR / "collections", members=members)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-r", str(collection / "requirements.txt"),
                        "ansible-core==2.19.14"], check=True, env=pip_env)
    version = json.loads((collection / "MANIFEST.json").read_text())["collection_info"]["version"]
    return INCUMBENT_DIR / "collections", venv / "bin" / "python", version


def start_proxy(emulator_port, state_dir):
    ready = Path(state_dir) / "proxy.json"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "emulator" / "public_cloud_proxy.py"),
                             "--emulator-port", str(emulator_port), "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # only bounds a proxy that hangs; a loaded machine may need long to start one
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("public_cloud_proxy did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["port"]


# ---- runs --------------------------------------------------------------------------------------------------
def base_env():
    import harness  # tests/harness.py: the same clean ansible environment the tests use

    env = harness.base_ansible_env()
    env["ANSIBLE_STDOUT_CALLBACK"] = "json_results"
    env["ANSIBLE_LOCAL_TEMP"] = str(BUILD / "ansible-tmp")
    return env


def run_playbook(cmd, env, emu, label):
    before = len(emu.requests())
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - started
    entries = emu.requests()[before:]
    arm = [e for e in entries if e["path"].startswith(("/subscriptions", "/providers"))]
    try:
        results = json.loads(proc.stdout[proc.stdout.index("{"):])
        stats = results.get("stats", {})
    except ValueError:
        stats = {}
    metrics = {
        "label": label,
        "wall_s": round(wall, 2),
        "rc": proc.returncode,
        "arm_reads": sum(1 for e in arm if e["method"] == "GET" and e["status"] != 429),
        "arm_writes": sum(1 for e in arm if e["method"] in ("PUT", "PATCH", "POST", "DELETE") and e["status"] != 429),
        "arm_requests": len(arm),
        "throttled_429": sum(1 for e in arm if e["status"] == 429),
        "extension_puts": sum(1 for e in arm if e["method"] == "PUT" and "/extensions/" in e["path"]
                              and e["status"] in (200, 201)),
        "token_requests": sum(1 for e in entries if e["path"].endswith("/token")),
        "hosts_changed": sum(1 for s in stats.values() if s.get("changed")),
        "tasks_changed": sum(s.get("changed", 0) for s in stats.values()),
        "tasks_failed": sum(s.get("failures", 0) + s.get("unreachable", 0) for s in stats.values()),
    }
    if proc.returncode != 0 or metrics["tasks_failed"]:
        metrics["stderr_tail"] = proc.stderr[-1500:]
        metrics["stdout_tail"] = proc.stdout[-1500:]
    log("  %-40s %7.1f s  reads=%-5d writes=%-4d 429=%-3d changed_hosts=%-4d failed=%d" % (
        label, wall, metrics["arm_reads"], metrics["arm_writes"], metrics["throttled_429"],
        metrics["hosts_changed"], metrics["tasks_failed"]))
    return metrics


def ours(emu, inventory, forks, handler_s, label, extra=None):
    env = base_env()
    env.update(emu.env)
    env["AZURE_POLLING_INTERVAL"] = str(max(0.5, handler_s / 10))
    poll = max(0.5, handler_s / 10)
    cmd = [str(VENV_BIN / "ansible-playbook"), str(ROOT / "playbooks" / "fleet.yml"), "-i", str(inventory),
           "-f", str(forks), "-e", json.dumps(dict({"extensions_poll_interval": poll}, **(extra or {})))]
    return run_playbook(cmd, env, emu, label)


def incumbent(emu, inventory, playbook, forks, proxy_port, collections, python, label):
    env = incumbent_env(emu, proxy_port, collections, python)
    cmd = [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(inventory), "-f", str(forks)]
    return run_playbook(cmd, env, emu, label)


def incumbent_env(emu, proxy_port, collections, python):
    """The environment of an unmodified azure.azcollection run: AzureCloud through the proxy (also witness.py)."""
    env = base_env()
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": "%s:%s" % (collections, env["ANSIBLE_COLLECTIONS_PATH"]),
        "ANSIBLE_PYTHON_INTERPRETER": str(python),
        "AZURE_SUBSCRIPTION_ID": emu.env["AZURE_SUBSCRIPTION_ID"],
        "AZURE_CLIENT_ID": emu.env["AZURE_CLIENT_ID"],
        "AZURE_SECRET": emu.env["AZURE_SECRET"],
        "AZURE_TENANT": emu.env["AZURE_TENANT"],
        # AzureCloud as shipped; the proxy tunnels management.azure.com / login.microsoftonline.com to the emulator.
        "HTTPS_PROXY": "http://127.0.0.1:%d" % proxy_port,
        "https_proxy": "http://127.0.0.1:%d" % proxy_port,
        "NO_PROXY": "", "no_proxy": "",
        "REQUESTS_CA_BUNDLE": emu.ca_bundle,
        "SSL_CERT_FILE": emu.ca_bundle,
    })
    return env


def scenario(name, emu, handler_s, converge, unchanged):
    emu.reset()
    emu.settings(handler_duration_s=handler_s)
    first = converge()
    second = unchanged()
    return {"name": name, "converge": first, "no_change": second}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--extensions", type=int, default=2)
    parser.add_argument("--handler-seconds", type=float, default=10.0)
    parser.add_argument("--forks", type=int, default=5, help="ansible forks for our role (default: ansible's 5)")
    parser.add_argument("--skip-incumbent", action="store_true")
    parser.add_argument("--throttle-vms", type=int, default=200, help="0 skips the throttled large run")
    parser.add_argument("--throttle-writes", type=int, default=100)
    parser.add_argument("--throttle-reads", type=int, default=1000)
    parser.add_argument("--throttle-window", type=float, default=10.0)
    parser.add_argument("--throttle-handler-seconds", type=float, default=3.0)
    parser.add_argument("--markdown", help="write this markdown report (and a PNG plot next to it)")
    args = parser.parse_args(argv)

    n, k, t = args.vms, args.extensions, args.handler_seconds
    limit = k * t
    work = Path(tempfile.mkdtemp(prefix="fleet-bench-", dir=str(BUILD) if BUILD.exists() else None))
    seed_vms = max(n, args.throttle_vms)
    write_seed(work / "seed.yml", seed_vms)
    inventory = write_inventory(work / "inventory", n, k, seed_vms)
    report = {"parameters": {"vms": n, "extensions": k, "handler_seconds": t, "forks_ours": args.forks,
                             "machine": {"cpus": os.cpu_count()}},
              "physical_limit_s": limit, "scenarios": []}
    proxy = None
    emu = Emulator.start(str(work / "emulator"), seed=str(work / "seed.yml"), public_cloud=True)
    try:
        log("fleet benchmark: %d VMs x %d extensions, handler %.1f s (physical limit %.1f s)" % (n, k, t, limit))

        def run(label):
            return ours(emu, inventory, args.forks, t, label)

        report["scenarios"].append(scenario("azure_vm.extensions (role extensions, forks %d)" % args.forks, emu, t,
                                            lambda: run("ours converge"), lambda: run("ours no-change")))
        if not args.skip_incumbent:
            collections, python, version = ensure_incumbent()
            report["parameters"]["incumbent"] = "azure.azcollection %s (ansible %s)" % (version, INCUMBENT_VERSION)
            proxy, proxy_port = start_proxy(int(emu.base_url.rsplit(":", 1)[1]), work)
            playbook = incumbent_playbook(work / "incumbent.yml", k)
            for forks in sorted({5, n}):
                def inc(label, f=forks):
                    return incumbent(emu, inventory, playbook, f, proxy_port, collections, python, label)

                report["scenarios"].append(scenario(
                    "azure.azcollection %s (forks %d)" % (version, forks), emu, t,
                    lambda f=forks: inc("incumbent forks %d converge" % f),
                    lambda f=forks: inc("incumbent forks %d no-change" % f)))
        if args.throttle_vms:
            big = write_inventory(work / "inventory-big", args.throttle_vms, k, seed_vms)
            emu.reset()
            emu.settings(handler_duration_s=args.throttle_handler_seconds,
                         throttle={"writes": args.throttle_writes, "reads": args.throttle_reads,
                                   "window_s": args.throttle_window})
            label = "ours %d VMs, %d writes+%d reads/%gs" % (args.throttle_vms, args.throttle_writes,
                                                             args.throttle_reads, args.throttle_window)
            big_run = ours(emu, big, args.forks, args.throttle_handler_seconds, label)
            report["throttled_run"] = dict(big_run, vms=args.throttle_vms, extensions=k,
                                           handler_seconds=args.throttle_handler_seconds,
                                           throttle={"writes": args.throttle_writes, "reads": args.throttle_reads,
                                                     "window_s": args.throttle_window})
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        emu.stop()
    report["targets"] = targets(report, n)
    print(json.dumps(report, indent=2))
    if args.markdown:
        write_markdown(report, Path(args.markdown))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def targets(report, n):
    limit = report["physical_limit_s"]
    ours_run = report["scenarios"][0]
    result = {
        "converge_ratio_to_physical_limit": round(ours_run["converge"]["wall_s"] / limit, 2),
        "converge_within_1.3x": ours_run["converge"]["wall_s"] <= 1.3 * limit and not ours_run["converge"]["tasks_failed"],
        "no_change_writes": ours_run["no_change"]["arm_writes"],
        "no_change_reads_per_vm": round(ours_run["no_change"]["arm_reads"] / n, 2),
        "no_change_no_write_and_at_most_one_read_per_vm": ours_run["no_change"]["arm_writes"] == 0
        and ours_run["no_change"]["arm_reads"] <= n,
    }
    inc5 = [s for s in report["scenarios"] if s["name"].endswith("(forks 5)") and "azcollection" in s["name"]]
    if inc5:
        speedup = inc5[0]["converge"]["wall_s"] / ours_run["converge"]["wall_s"]
        result["speedup_vs_incumbent_forks5"] = round(speedup, 2)
        result["at_least_3x_faster_than_incumbent_forks5"] = speedup >= 3 and not inc5[0]["converge"]["tasks_failed"]
    big = report.get("throttled_run")
    if big:
        result["throttled_run_no_failed_task"] = big["rc"] == 0 and big["tasks_failed"] == 0
    return result


def write_markdown(report, path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from benchmark_report import render  # benchmarks/benchmark_report.py

    render(report, path)


if __name__ == "__main__":
    sys.exit(main())
