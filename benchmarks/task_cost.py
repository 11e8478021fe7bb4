"""Per-task cost of a single-VM module, next to ansible.builtin.ping and azure.azcollection, same machine, same run.

    .venv/bin/python benchmarks/task_cost.py --tasks 15

Three playbooks on localhost, each with --tasks tasks: ansible.builtin.ping; azure_vm.extensions.vm_extension_info
on one VM; azure.azcollection.azure_rm_virtualmachineextension_info on the same VM (from .build/incumbent, see
fleet_bench.py). Both Azure collections reach the emulator as AzureCloud (a known cloud: no metadata fetch)
through tests/emulator/public_cloud_proxy.py. Per-task cost = playbook wall time / tasks; the cost above ping =
(wall(module) - wall(ping)) / tasks, so the playbook's own start-up cancels out. The three are interleaved over
--repeat rounds and the median is reported, because the machine may be shared. Prints JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import fleet_bench  # noqa: E402
from fleet_bench import BUILD, VENV_BIN, Emulator, log  # noqa: E402

RG, VM = "rg-demo", "vm-web-01"


def playbook(path, task, count):
    path.write_text(yaml.safe_dump([{"name": "per-task cost", "hosts": "localhost", "gather_facts": False,
                                     "tasks": [dict(task, name="task %d" % i) for i in range(count)]}]))
    return path


def timed(cmd, env):
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError("%s failed: %s" % (cmd, proc.stdout[-2000:] + proc.stderr[-2000:]))
    return wall


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=15)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-incumbent", action="store_true")
    parser.add_argument("--json", help="also write the JSON report here")
    parser.add_argument("--markdown", help="update this markdown report (section 'Per-task cost')")
    args = parser.parse_args(argv)
    BUILD.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="task-cost-", dir=str(BUILD)))
    emu = Emulator.start(str(work / "emulator"), seed=str(fleet_bench.DEFAULT_SEED), public_cloud=True)
    proxy = None
    try:
        emu.settings(throttle_model="off")
        proxy, port = fleet_bench.start_proxy(int(emu.base_url.rsplit(":", 1)[1]), work)
        inventory = work / "inventory.yml"
        inventory.write_text("localhost ansible_connection=local\n")
        proxied = {
            "AZURE_SUBSCRIPTION_ID": emu.env["AZURE_SUBSCRIPTION_ID"], "AZURE_CLIENT_ID": emu.env["AZURE_CLIENT_ID"],
            "AZURE_SECRET": emu.env["AZURE_SECRET"], "AZURE_TENANT": emu.env["AZURE_TENANT"],
            "HTTPS_PROXY": "http://127.0.0.1:%d" % port, "https_proxy": "http://127.0.0.1:%d" % port,
            "NO_PROXY": "", "no_proxy": "", "REQUESTS_CA_BUNDLE": emu.ca_bundle, "SSL_CERT_FILE": emu.ca_bundle,
        }
        base = fleet_bench.base_env()
        base["ANSIBLE_STDOUT_CALLBACK"] = "default"
        ours_env = dict(base, **proxied)
        runs = {
            "ping": (playbook(work / "ping.yml", {"ansible.builtin.ping": {}}, args.tasks), dict(base)),
            "azure_vm.extensions.vm_extension_info": (playbook(work / "ours.yml", {
                "azure_vm.extensions.vm_extension_info": {"resource_group": RG, "vm_name": VM}}, args.tasks),
                ours_env),
        }
        if not args.skip_incumbent:
            collections, python, version = fleet_bench.ensure_incumbent()
            inc_env = dict(base, **proxied)
            inc_env["ANSIBLE_COLLECTIONS_PATH"] = "%s:%s" % (collections, base["ANSIBLE_COLLECTIONS_PATH"])
            inc_env["ANSIBLE_PYTHON_INTERPRETER"] = str(python)
            runs["azure.azcollection %s azure_rm_virtualmachineextension_info" % version] = (playbook(
                work / "incumbent.yml", {"azure.azcollection.azure_rm_virtualmachineextension_info": {
                    "resource_group": RG, "virtual_machine_name": VM}}, args.tasks), inc_env)
            # ping under the incumbent's interpreter too, so its baseline is its own
            runs["ping (incumbent's python)"] = (runs["ping"][0], dict(base, ANSIBLE_PYTHON_INTERPRETER=str(python)))
        walls = dict((name, []) for name in runs)
        for _repeat in range(args.repeat):
            for name, (path, env) in runs.items():
                walls[name].append(timed([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(path)], env))
                log("  %-60s %6.1f s" % (name, walls[name][-1]))
        per_task = dict((name, round(statistics.median(values) / args.tasks, 3)) for name, values in walls.items())
        report = {"tasks_per_playbook": args.tasks, "repeat": args.repeat, "load_average": os.getloadavg(),
                  "per_task_s": per_task, "walls_s": walls}
        above = {"azure_vm.extensions": round(per_task["azure_vm.extensions.vm_extension_info"] - per_task["ping"], 3)}
        for name in per_task:
            if name.startswith("azure.azcollection"):
                above["azure.azcollection"] = round(per_task[name] - per_task["ping (incumbent's python)"], 3)
        report["above_ping_s"] = above
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        emu.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    if args.markdown:
        write_markdown(report, Path(args.markdown))
    return 0


def write_markdown(report, path):
    from benchmark_report import replace_section  # docs/benchmarks.md is shared, one section each

    begin, end = "<!-- bench-task-cost: begin -->", "<!-- bench-task-cost: end -->"
    lines = [begin, "## Per-task cost (`make bench-task-cost`)", "",
             "Generated by `benchmarks/task_cost.py`: three playbooks of %d tasks each on localhost, interleaved over %d "
             "rounds, median wall time; load average at the end %s. Per-task cost = wall / tasks; the cost above "
             "ping = (wall(module) - wall(ping)) / tasks, each collection against ping under its own Python, so "
             "ansible-playbook's start-up cancels out. Both collections reach the emulator as AzureCloud through "
             "the same proxy." % (report["tasks_per_playbook"], report["repeat"],
                                  ", ".join("%.1f" % v for v in report["load_average"])), "",
             "| playbook | per task (s) | walls (s) |", "|---|---:|---|"]
    for name, value in report["per_task_s"].items():
        lines.append("| %s | %.3f | %s |" % (name, value, ", ".join("%.1f" % w for w in report["walls_s"][name])))
    lines += ["", "| collection | cost above ping per task (s) | target |", "|---|---:|---|"]
    for name, value in report["above_ping_s"].items():
        target = ""
        if name == "azure_vm.extensions":
            target = "<= 0.8 s: **%s**" % ("met" if value <= 0.8 else "not met")
        lines.append("| %s | %.3f | %s |" % (name, value, target))
    lines.append(end)
    replace_section(path, lines, begin, end)


if __name__ == "__main__":
    sys.exit(main())
