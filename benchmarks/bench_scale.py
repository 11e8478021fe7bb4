"""Fleet at Azure's scale: N VMs x K extensions, handler time T (simulated), against the emulator with the
published throttling limits (throttle_model azure) on a simulated clock running `time_scale` times real time.

    .venv/bin/python benchmarks/bench_scale.py --vms 2000 --extensions 2 --handler-sim-s 300 --time-scale 5

Floor (the earliest any client could finish): each VM runs its K operations one after another and writes are
admitted at each write bucket's pace, so floor = max over buckets and j = 1..K of (K - j + 1) T + (j N - B) / r;
with ARM's writes (B 200, r 10/s), N 2,000, K 2, T 300 s: 2 x 300 + 1,800 / 10 = 780 s.

Run time = the Azure phase (first to last ARM request, real seconds) x time_scale, plus ansible-playbook's wall
time outside it, unscaled. The client is told the clock's speed with AZURE_VM_EXTENSIONS_RATE_SCALE (its token
buckets refill time_scale times faster); polling intervals are simulated seconds / time_scale.

Scenarios: ours from one task (playbooks/fleet_one_task.yml, a play on localhost) converge and no-change; ours
through the role over the inventory (playbooks/fleet.yml: `hosts: fleet`, the extensions role, one report task per
host, ansible's default forks unless --role-forks) converge and no-change; ours converge again at half the time
scale (the result must not change: the machine's CPU is not the bottleneck), then azure.azcollection and ours on a
200-VM part of the same world.
The emulator's seed is generated here (a vm_set of N VMs), never committed. Prints one JSON document; --markdown
adds the numbers and a plot to docs/benchmarks.md (section "Fleet at Azure's scale").
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import fleet_bench  # noqa: E402  (the 20-VM benchmark's set-up and runners)
from fleet_bench import BUILD, VENV_BIN, Emulator, log  # noqa: E402

ARM_WRITES = (200, 10.0)


def floor_s(n, k, t, buckets=(ARM_WRITES, (1500, 500 / 60.0))):
    """max over write buckets (B, r per second) and j = 1..K of (K - j + 1) T + (j N - B) / r."""
    return max((k - j + 1) * t + max(j * n - b, 0) / r for b, r in buckets for j in range(1, k + 1))


def write_seed(path, vms):
    seed = yaml.safe_load(fleet_bench.DEFAULT_SEED.read_text())
    seed["subscriptions"][0]["vm_sets"] = [{"prefix": "bench-", "count": vms, "resource_group":
                                            fleet_bench.RESOURCE_GROUP, "location": "westeurope", "os_type": "Linux"}]
    path.write_text(yaml.safe_dump(seed, sort_keys=False))


def timeline(arm, scale, points=60):
    """[(simulated seconds since the first request, extension writes accepted so far, 429s so far)]."""
    if not arm:
        return []
    start = min(e["time"] for e in arm)
    puts = sorted((e["time"] - start) * scale for e in arm
                  if e["method"] == "PUT" and "/extensions/" in e["path"] and e["status"] in (200, 201))
    throttled = sorted((e["time"] - start) * scale for e in arm if e["status"] == 429)
    end = (max(e["time"] for e in arm) - start) * scale
    series = []
    for i in range(points + 1):
        t = end * i / points
        series.append((round(t, 1), sum(1 for x in puts if x <= t), sum(1 for x in throttled if x <= t)))
    return series


def fleet_vms(results):
    """{host: result} of the fleet task, from the json callback's output (either playbook's form)."""
    for play in results.get("plays", []):
        for task in play["tasks"]:
            if task["task"]["name"] == "Converge the VM extensions of every host in the batch":
                for host_result in task["hosts"].values():
                    return host_result.get("hosts") or {}
    return {}


def measure(emu, before, proc_wall, scale, rc, stats, label, ansible_extra=None, entries=None, vms=None,
            cpu=None):
    """cpu: {"client_cpu_s": user+sys of ansible-playbook and everything it ran, "module_cpu_s": of the module
    processes alone (None when not measured)}; per completed extension (an extension PUT accepted) as well."""
    entries = emu.requests()[before:] if entries is None else entries
    arm = [e for e in entries if e["path"].startswith(("/subscriptions", "/providers"))]
    phase = (max(e["time"] for e in arm) - min(e["time"] for e in arm)) if arm else 0.0
    ok = [e for e in arm if e["status"] != 429]
    reads = [e for e in ok if e["method"] == "GET"]
    puts = [e for e in ok if e["method"] == "PUT" and "/extensions/" in e["path"] and e["status"] in (200, 201)]
    lists = [e for e in reads if e["path"].lower().endswith("/virtualmachines")]
    throttled = [e for e in arm if e["status"] == 429]
    run_time = phase * scale + max(proc_wall - phase, 0.0)
    metrics = {
        "label": label, "rc": rc, "wall_s": round(proc_wall, 1), "azure_phase_real_s": round(phase, 1),
        "time_scale": scale, "run_time_s": round(run_time, 1),
        "ansible_outside_phase_s": round(max(proc_wall - phase, 0.0), 1),
        "arm_requests": len(arm), "reads": len(reads), "list_pages": len(lists), "extension_puts": len(puts),
        "throttled_429": len(throttled), "throttled_share": round(len(throttled) / max(len(arm), 1), 4),
        "throttled_by": sorted(set(e.get("throttled_by") or "?" for e in throttled)),
        "reads_per_completed_extension": round(len(reads) / len(puts), 2) if puts else None,
        "hosts_failed": sum(1 for s in stats.values() if s.get("failures") or s.get("unreachable")),
        "hosts_changed": sum(1 for s in stats.values() if s.get("changed")),
        # VMs as the fleet task reports them (one-task mode has no task per host, so stats hold localhost only)
        "vms_failed": sum(1 for v in (vms or {}).values() if v.get("failed")),
        "vms_changed": sum(1 for v in (vms or {}).values() if v.get("changed")),
        "timeline": timeline(arm, scale),
    }
    # Client CPU: CPU-seconds do not depend on time_scale or on the other work on the machine the way wall times
    # do; per completed extension it is the cost that binds once the simulated clock runs fast.
    for key, value in (cpu or {}).items():
        metrics[key] = None if value is None else round(value, 2)
        per = key.replace("_cpu_s", "_cpu_ms_per_extension")
        metrics[per] = round(1000.0 * value / len(puts), 2) if puts and value is not None else None
    metrics.update(ansible_extra or {})
    if cpu:
        log("  %-34s client cpu %s s (%s ms per completed extension), module processes %s s (%s ms)" % (
            label, metrics.get("client_cpu_s"), metrics.get("client_cpu_ms_per_extension"),
            metrics.get("module_cpu_s"), metrics.get("module_cpu_ms_per_extension")))
    log("  %-34s run %7.1f s (phase %6.1f real x %g + %5.1f)  reqs=%-6d reads=%-6d puts=%-5d 429=%d failed=%d"
        " vms failed=%d" % (label, run_time, phase, scale, metrics["ansible_outside_phase_s"], len(arm), len(reads),
                            len(puts), len(throttled), metrics["hosts_failed"], metrics["vms_failed"]))
    return metrics


def run(cmd, env, emu, scale, label):
    import subprocess

    import resource

    before = len(emu.requests())
    # The module processes' own CPU: the interpreter that runs them is wrapped in GNU time, which appends
    # "user sys" per module process to a file (ansible-playbook's children are reaped by it, so RUSAGE_CHILDREN
    # below counts them too, inside the client's total). An extra var, because implicit localhost takes
    # ansible_playbook_python over ANSIBLE_PYTHON_INTERPRETER.
    module_times = None
    interpreter = env.get("ANSIBLE_PYTHON_INTERPRETER")
    if interpreter and os.path.exists("/usr/bin/time"):
        wrap_dir = Path(tempfile.mkdtemp(prefix="bench-cpu-", dir=str(BUILD)))
        module_times = wrap_dir / "times"
        wrapper = wrap_dir / "python"
        wrapper.write_text("#!/bin/sh\nexec /usr/bin/time -a -o %s -f '%%U %%S' %s \"$@\"\n" % (
            module_times, interpreter))
        wrapper.chmod(0o755)
        cmd = list(cmd) + ["-e", json.dumps({"ansible_python_interpreter": str(wrapper)})]
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = {"client_cpu_s": (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime),
           "module_cpu_s": None}
    if module_times is not None:
        if module_times.exists():
            cpu["module_cpu_s"] = sum(float(x) for line in module_times.read_text().splitlines()
                                      for x in line.split()[:2] if x.replace(".", "", 1).isdigit())
        shutil.rmtree(module_times.parent, ignore_errors=True)
    try:
        results = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        results = {}
    metrics = measure(emu, before, wall, scale, proc.returncode, results.get("stats", {}), label,
                      vms=fleet_vms(results), cpu=cpu)
    if os.environ.get("BENCH_SCALE_DUMP"):
        Path(os.environ["BENCH_SCALE_DUMP"] + "-" + label.replace(" ", "_") + ".json").write_text(
            json.dumps(emu.requests()[before:]))
    if proc.returncode != 0:
        metrics["stderr_tail"] = proc.stderr[-1500:]
        metrics["stdout_tail"] = proc.stdout[-800:]
    return metrics


def ours(emu, inventory, scale, poll_sim_s, label, forks, playbook="fleet_one_task.yml"):
    env = fleet_bench.base_env()
    env.update(emu.env)
    env["AZURE_VM_EXTENSIONS_RATE_SCALE"] = str(scale)
    env["AZURE_POLLING_INTERVAL"] = str(poll_sim_s / scale)
    cmd = [str(VENV_BIN / "ansible-playbook"), str(ROOT / "playbooks" / playbook), "-i", str(inventory),
           "-f", str(forks), "-e", json.dumps({"extensions_poll_interval": poll_sim_s / scale})]
    return run(cmd, env, emu, scale, label)


def incumbent_async_playbook(path, extensions, poll_real_s, fan_out=True):
    """What an expert would write with azure.azcollection: per extension, fan out with async/poll: 0 on every
    host, then wait for all jobs with async_status. fan_out=False: one plain task per extension, so at most
    `forks` module processes run at once (each waits for its VM's handler)."""
    tasks = []
    for spec in fleet_bench.extension_specs(extensions):
        args = {"resource_group": "{{ azure_resource_group }}", "virtual_machine_name": "{{ inventory_hostname }}",
                "name": spec["name"], "publisher": spec["publisher"], "virtual_machine_extension_type": spec["type"],
                "type_handler_version": spec["type_handler_version"], "auto_upgrade_minor_version": True}
        if spec.get("settings"):
            args["settings"] = spec["settings"]
        if not fan_out:
            tasks.append({"name": "Extension %s" % spec["name"],
                          "azure.azcollection.azure_rm_virtualmachineextension": args})
            continue
        tasks.append({"name": "Extension %s (fan out)" % spec["name"],
                      "azure.azcollection.azure_rm_virtualmachineextension": args,
                      "async": 7200, "poll": 0, "register": "job"})
        tasks.append({"name": "Extension %s (wait)" % spec["name"],
                      "ansible.builtin.async_status": {"jid": "{{ job.ansible_job_id }}"},
                      "register": "result", "until": "result.finished", "retries": 2000, "delay": poll_real_s})
    path.write_text(yaml.safe_dump([{"name": "Incumbent fleet", "hosts": "fleet", "gather_facts": False,
                                     "tasks": tasks}], sort_keys=False))
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--extensions", type=int, default=2)
    parser.add_argument("--handler-sim-s", type=float, default=300.0)
    parser.add_argument("--time-scale", type=float, default=5.0)
    parser.add_argument("--page-size", type=int, default=50,
                        help="VMs per page of the emulator's list answers (an assumption: Azure does not publish it)")
    parser.add_argument("--poll-sim-s", type=float, default=5.0, help="polling interval, simulated seconds")
    parser.add_argument("--forks", type=int, default=50)
    parser.add_argument("--role-forks", type=int, default=5, help="forks of the role path (ansible's default: 5)")
    parser.add_argument("--skip-role", action="store_true", help="no run through the role over the inventory")
    parser.add_argument("--skip-half-scale", action="store_true")
    parser.add_argument("--part-vms", type=int, default=200, help="the part run with azure.azcollection; 0 skips")
    parser.add_argument("--skip-incumbent", action="store_true")
    parser.add_argument("--incumbent-mode", choices=("async", "forks"), default="async",
                        help="async: async/poll 0 fan-out on every host; forks: plain tasks, `--forks` at once")
    parser.add_argument("--part-only", action="store_true", help="only the part runs (ours and azure.azcollection)")
    parser.add_argument("--incumbent-from", help="take the azure.azcollection part run from this earlier JSON report "
                        "(same parameters) instead of running it again: it does not depend on this collection")
    parser.add_argument("--json", help="also write the JSON report here")
    parser.add_argument("--markdown", help="update this markdown report (section 'Fleet at Azure's scale')")
    args = parser.parse_args(argv)

    n, k, t, scale = args.vms, args.extensions, args.handler_sim_s, args.time_scale
    floor = floor_s(n, k, t)
    BUILD.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=str(BUILD)))
    write_seed(work / "seed.yml", n)
    inventory = fleet_bench.write_inventory(work / "inventory", n, k, n)
    report = {"parameters": {"vms": n, "extensions": k, "handler_sim_s": t, "time_scale": scale,
                             "page_size": args.page_size, "poll_sim_s": args.poll_sim_s, "forks": args.forks,
                             "role_forks": args.role_forks,
                             "machine": {"cpus": os.cpu_count(), "load_at_start": os.getloadavg()}},
              "floor_s": floor, "runs": {}}
    emu = Emulator.start(str(work / "emulator"), seed=str(work / "seed.yml"), public_cloud=True, timeout=120)
    proxy = None

    def world(ts):
        emu.reset()
        emu.settings(throttle_model="azure", time_scale=ts, handler_duration_s=t, delete_duration_s=30.0,
                     page_size=args.page_size)

    try:
        log("scale benchmark: %d VMs x %d extensions, T %g s simulated, time_scale %g, floor %.0f s" % (
            n, k, t, scale, floor))
        world(scale)
        if not args.part_only:
            report["runs"]["converge"] = ours(emu, inventory, scale, args.poll_sim_s, "ours converge", args.forks)
            report["runs"]["no_change"] = ours(emu, inventory, scale, args.poll_sim_s, "ours no-change", args.forks)
        if not args.part_only and not args.skip_role:
            world(scale)
            report["runs"]["role_converge"] = ours(emu, inventory, scale, args.poll_sim_s, "ours role converge",
                                                   args.role_forks, playbook="fleet.yml")
            report["runs"]["role_no_change"] = ours(emu, inventory, scale, args.poll_sim_s, "ours role no-change",
                                                    args.role_forks, playbook="fleet.yml")
        if not args.skip_half_scale and not args.part_only:
            world(scale / 2)
            report["runs"]["converge_half_scale"] = ours(emu, inventory, scale / 2, args.poll_sim_s,
                                                         "ours converge at half scale", args.forks)
        if args.part_vms:
            part = fleet_bench.write_inventory(work / "inventory-part", args.part_vms, k, n)
            part_floor = floor_s(args.part_vms, k, t)
            report["part"] = {"vms": args.part_vms, "floor_s": part_floor}
            world(scale)
            report["runs"]["part_ours"] = ours(emu, part, scale, args.poll_sim_s, "ours %d VMs" % args.part_vms,
                                               args.forks)
            if args.incumbent_from:
                earlier = json.loads(Path(args.incumbent_from).read_text())
                assert earlier["parameters"]["vms"] == n and earlier["part"]["vms"] == args.part_vms
                report["parameters"]["incumbent"] = earlier["parameters"]["incumbent"]
                report["runs"]["part_incumbent"] = dict(earlier["runs"]["part_incumbent"],
                                                        measured_in=args.incumbent_from)
            elif not args.skip_incumbent:
                collections, python, version = fleet_bench.ensure_incumbent()
                report["parameters"]["incumbent"] = "azure.azcollection %s" % version
                proxy, proxy_port = fleet_bench.start_proxy(int(emu.base_url.rsplit(":", 1)[1]), work)
                playbook = incumbent_async_playbook(work / "incumbent.yml", k, max(args.poll_sim_s / scale, 1.0),
                                                    fan_out=args.incumbent_mode == "async")
                report["parameters"]["incumbent_mode"] = args.incumbent_mode
                world(scale)
                env = fleet_bench.base_env()
                env.update({
                    "ANSIBLE_COLLECTIONS_PATH": "%s:%s" % (collections, env["ANSIBLE_COLLECTIONS_PATH"]),
                    "ANSIBLE_PYTHON_INTERPRETER": str(python),
                    "AZURE_SUBSCRIPTION_ID": emu.env["AZURE_SUBSCRIPTION_ID"],
                    "AZURE_CLIENT_ID": emu.env["AZURE_CLIENT_ID"], "AZURE_SECRET": emu.env["AZURE_SECRET"],
                    "AZURE_TENANT": emu.env["AZURE_TENANT"],
                    "HTTPS_PROXY": "http://127.0.0.1:%d" % proxy_port, "https_proxy": "http://127.0.0.1:%d" % proxy_port,
                    "NO_PROXY": "", "no_proxy": "", "REQUESTS_CA_BUNDLE": emu.ca_bundle, "SSL_CERT_FILE": emu.ca_bundle,
                })
                cmd = [str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", str(part), "-f", str(args.forks)]
                report["runs"]["part_incumbent"] = run(cmd, env, emu, scale, "azure.azcollection %d VMs forks %d %s"
                                                       % (args.part_vms, args.forks, args.incumbent_mode))
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        emu.stop()
    report["results"] = summarize(report)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    if args.markdown:
        from scale_report import render  # benchmarks/scale_report.py
        render(report, Path(args.markdown))
    shutil.rmtree(work, ignore_errors=True)
    return 0


def summarize(report):
    runs, floor, n = report["runs"], report["floor_s"], report["parameters"]["vms"]
    result = {}
    # The one-task path's keys bare, the role path's with "role_" (the same targets for both).
    for prefix, converge, unchanged in (("", runs.get("converge"), runs.get("no_change")),
                                        ("role_", runs.get("role_converge"), runs.get("role_no_change"))):
        if converge:
            result[prefix + "converge_s"] = converge["run_time_s"]
            result[prefix + "ratio_to_floor"] = round(converge["run_time_s"] / floor, 3)
            result[prefix + "ratio_within_1.15"] = result[prefix + "ratio_to_floor"] <= 1.15
            result[prefix + "throttled_share"] = converge["throttled_share"]
            result[prefix + "throttled_within_1pct"] = converge["throttled_share"] <= 0.01
            result[prefix + "reads_per_completed_extension"] = converge["reads_per_completed_extension"]
            result[prefix + "hosts_failed"] = converge["hosts_failed"]
        if unchanged:
            result[prefix + "no_change_reads"] = unchanged["reads"]
            result[prefix + "no_change_reads_within_n_plus_10"] = unchanged["reads"] <= n + 10
            result[prefix + "no_change_run_time_s"] = unchanged["run_time_s"]
            result[prefix + "no_change_writes"] = unchanged["extension_puts"]
    role = runs.get("role_converge")
    if role:
        # The role's own target: ansible-playbook's time outside the Azure phase for a task per host.
        result["role_ansible_outside_phase_s"] = role["ansible_outside_phase_s"]
        result["role_outside_within_60s"] = role["ansible_outside_phase_s"] <= 60
        result["role_hosts_changed"] = role["hosts_changed"]
    half = runs.get("converge_half_scale")
    if half and converge:
        result["ratio_to_floor_half_scale"] = round(half["run_time_s"] / floor, 3)
    part_ours, part_inc = runs.get("part_ours"), runs.get("part_incumbent")
    if part_ours:
        result["part_ours_s"] = part_ours["run_time_s"]
    if part_ours and part_inc:
        result["part_incumbent_s"] = part_inc["run_time_s"]
        result["part_incumbent_over_ours"] = round(part_inc["run_time_s"] / max(part_ours["run_time_s"], 0.1), 2)
    return result


if __name__ == "__main__":
    sys.exit(main())
