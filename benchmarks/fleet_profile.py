"""Where the vm_extension_fleet module's CPU goes: the module's own main() run in this process (its real argument
spec, AzureModule, connection and pacing; only the AnsiballZ wrapper is left out), against the emulator with the
world of bench_scale.py (N VMs x K extensions, throttle_model azure, time_scale), profiled across all its threads.

    .venv/bin/python benchmarks/fleet_profile.py --vms 2000 --extensions 2 --time-scale 10 [--profiler yappi]

Prints the module's CPU seconds (user + sys of this process while main() ran), per completed extension, the
requests it sent, and with --profiler the top functions by CPU time (yappi's CPU clock, every thread: cProfile
sees only the thread that starts it, and the fleet's work runs on a thread pool). A converge run, then a no-change
run of the same targets. yappi is not a requirement of the collection: `pip install yappi` first.
"""
import argparse
import io
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import bench_scale  # noqa: E402
import fleet_bench  # noqa: E402
from fleet_bench import BUILD, Emulator, log  # noqa: E402


def targets(vms, extensions):
    """What the extensions role passes for the bench inventory (fleet_bench.write_inventory)."""
    specs = fleet_bench.extension_specs(extensions)
    return [{"host": name, "vm_name": name, "resource_group": fleet_bench.RESOURCE_GROUP, "subscription_id": None,
             "extensions": specs, "exclusive": False} for name in fleet_bench.vm_names(vms)]


def run_module(args):
    """main() of plugins/modules/vm_extension_fleet.py with these module args; returns its JSON result."""
    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes
    from ansible_collections.azure_vm.extensions.plugins.modules import vm_extension_fleet

    basic._ANSIBLE_ARGS = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    basic._ANSIBLE_PROFILE = "legacy"  # what ansible-core sends modules by default
    out, saved = io.StringIO(), sys.stdout
    sys.stdout = out
    try:
        vm_extension_fleet.main()
    except SystemExit:
        pass
    finally:
        sys.stdout = saved
    return json.loads(out.getvalue())


class ConnectionCount(object):
    """New HTTPS connections (each a TLS handshake) opened by urllib3's pools in this process."""

    def __init__(self):
        from urllib3.connectionpool import HTTPSConnectionPool

        self.count = 0
        original = HTTPSConnectionPool._new_conn
        counter = self

        def counted(pool):
            counter.count += 1
            return original(pool)

        HTTPSConnectionPool._new_conn = counted


def cpu_now():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--extensions", type=int, default=2)
    parser.add_argument("--handler-sim-s", type=float, default=300.0)
    parser.add_argument("--time-scale", type=float, default=10.0)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--poll-sim-s", type=float, default=5.0)
    parser.add_argument("--max-workers", type=int, default=32)
    parser.add_argument("--profiler", choices=("none", "yappi"), default="none")
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT / "tests"))
    import harness  # tests/harness.py: ansible_collections/azure_vm/extensions -> this checkout

    sys.path.insert(0, harness.collections_path())
    BUILD.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fleet-profile-", dir=str(BUILD)))
    bench_scale.write_seed(work / "seed.yml", args.vms)
    emu = Emulator.start(str(work / "emulator"), seed=str(work / "seed.yml"), public_cloud=True, timeout=120)
    report = {"parameters": vars(args), "runs": {}}
    try:
        emu.reset()
        emu.settings(throttle_model="azure", time_scale=args.time_scale, handler_duration_s=args.handler_sim_s,
                     delete_duration_s=30.0, page_size=args.page_size)
        for key in list(os.environ):
            if key.startswith(("AZURE_", "IDENTITY_", "MSI_")):
                del os.environ[key]
        os.environ.update(emu.env)
        os.environ["AZURE_VM_EXTENSIONS_RATE_SCALE"] = str(args.time_scale)
        module_args = {"targets": targets(args.vms, args.extensions),
                       "polling_interval": args.poll_sim_s / args.time_scale, "max_workers": args.max_workers,
                       "ignore_vm_failures": False}
        connections = ConnectionCount()
        for label in ("converge", "no_change"):
            before = len(emu.requests())
            opened = connections.count
            if args.profiler == "yappi":
                import yappi
                yappi.set_clock_type("cpu")
                yappi.clear_stats()
                yappi.start(builtins=True)
            cpu0, wall0 = cpu_now(), time.time()
            result = run_module(module_args)
            cpu, wall = cpu_now() - cpu0, time.time() - wall0
            if args.profiler == "yappi":
                yappi.stop()
            entries = [e for e in emu.requests()[before:] if e["path"].startswith(("/subscriptions", "/providers"))]
            puts = sum(1 for e in entries if e["method"] == "PUT" and e["status"] in (200, 201))
            reads = sum(1 for e in entries if e["method"] == "GET" and e["status"] != 429)
            run = {"cpu_s": round(cpu, 2), "wall_s": round(wall, 1), "requests": len(entries), "reads": reads,
                   "extension_puts": puts, "throttled_429": sum(1 for e in entries if e["status"] == 429),
                   "failed": bool(result.get("failed")), "msg": (result.get("msg") or "")[:300],
                   "cpu_ms_per_extension": round(1000 * cpu / puts, 2) if puts else None,
                   "cpu_ms_per_vm": round(1000 * cpu / args.vms, 2), "waiting": result.get("waiting"),
                   "https_connections_opened": connections.count - opened}
            report["runs"][label] = run
            log("%-10s cpu %.2f s (%s ms per completed extension, %s ms per VM)  wall %.1f s  requests %d  reads %d"
                "  puts %d  429 %d  failed %s  connections opened %d  waiting %s" % (
                    label, cpu, run["cpu_ms_per_extension"], run["cpu_ms_per_vm"], wall, len(entries), reads, puts,
                    run["throttled_429"], run["failed"], run["https_connections_opened"], run["waiting"]))
            if args.profiler == "yappi":
                stats = yappi.get_func_stats()
                stats.sort("ttot")
                print("== %s: top %d functions by inclusive CPU time (all threads): total, own, calls" % (
                    label, args.top))
                for stat in list(stats)[:args.top]:
                    print("%8.2f %8.2f %9d  %s:%s %s" % (stat.ttot, stat.tsub, stat.ncall,
                                                         stat.module.replace(str(ROOT), "."), stat.lineno,
                                                         stat.name))
                stats.sort("tsub")
                print("== %s: top %d functions by own CPU time" % (label, args.top))
                for stat in list(stats)[:args.top]:
                    print("%8.2f %8.2f %9d  %s:%s %s" % (stat.ttot, stat.tsub, stat.ncall,
                                                         stat.module.replace(str(ROOT), "."), stat.lineno,
                                                         stat.name))
                sys.stdout.flush()
    finally:
        emu.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
