"""Requests per second the emulator answers on ONE kept-alive connection, with the real SDK (not a timed test).

    .venv/bin/python benchmarks/emulator_rps.py [--seconds 3]

One ComputeManagementClient (one requests session, so one TLS connection) sends sequential requests for
`--seconds` per scenario: GET VM, GET VM ?$expand=instanceView, GET extension. Throttling is switched off for the
measurement (`throttle_model: "off"`; on an emulator that predates it, a window too large to matter), because the
published per-VM buckets would answer 429 long before the connection is the limit. Prints one line per scenario
and a JSON summary; tests/emulator/README.md quotes the numbers.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "emulator"))
from emulator_clients import RG, compute  # noqa: E402
from emulator_control import Emulator, EmulatorError  # noqa: E402


def measure(label, call, seconds):
    call()  # warm: token, TLS handshake, connection in the pool
    latencies = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        before = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - before)
    wall = time.perf_counter() - started
    result = {"scenario": label, "requests": len(latencies), "requests_per_s": round(len(latencies) / wall, 1),
              "median_ms": round(statistics.median(latencies) * 1000, 2)}
    print("%-32s %6d requests  %8.1f req/s  median %7.2f ms" % (
        label, result["requests"], result["requests_per_s"], result["median_ms"]), file=sys.stderr)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="emulator-rps-") as state_dir:
        emu = Emulator.start(state_dir)
        try:
            try:
                emu.settings(throttle_model="off")
            except EmulatorError:
                emu.settings(throttle={"reads": 10 ** 9, "writes": 10 ** 9, "window_s": 3600})
            client = compute(emu)
            vms, exts = client.virtual_machines, client.virtual_machine_extensions
            results = [
                measure("GET VM", lambda: vms.get(RG, "vm-web-01"), args.seconds),
                measure("GET VM $expand=instanceView", lambda: vms.get(RG, "vm-web-01", expand="instanceView"),
                        args.seconds),
                measure("GET extension", lambda: exts.get(RG, "vm-web-01", "customScript"), args.seconds),
            ]
        finally:
            emu.stop()
    print(json.dumps({"cpus": os.cpu_count(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
