"""Self-healing benchmark: the self_heal rulebook (real ansible-rulebook) watching N VMs, a handler failure at a time.

    .venv/bin/python benchmarks/eda_bench.py --vms 1000 --page-size 50 --interval 30 --failures 3

On an emulator whose subscription holds N alike Linux VMs with a CustomScript extension (the `azure` throttle model:
Azure's published limits, in real time), ansible-rulebook runs `azure_vm.extensions.self_heal` with a poll every
--interval seconds. After the baseline poll, one VM at a time gets a handler failure (an operator's change whose
handler run fails once, through the SDK) and the benchmark waits until the rulebook has rerun it and the source
has seen it succeed. Measured from the emulator's request log and the rulebook's journal:
  * reads per poll (the List All statusOnly pages; nothing else may be read while nothing fails);
  * per failure: failure -> `failed` event (detection, up to one interval), failure -> the rerun's write, failure
    -> `recovered` event (repaired: the handler's run succeeded and a poll saw it).
Prints one JSON document; --markdown FILE rewrites the section between its markers in FILE.
"""
import argparse
import datetime
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))
from azure.core.exceptions import HttpResponseError  # noqa: E402
from eda.rulebook_run import Rulebook, rulebook_unavailable  # noqa: E402
from emulator_clients import compute  # noqa: E402
from emulator_control import Emulator  # noqa: E402

DEFAULT_SEED = ROOT / "tests" / "emulator" / "default-seed.yml"
RG = "rg-fleet"
HEADING = "## Self-healing with Event-Driven Ansible (`make bench-eda`)"
SECTION_BEGIN = "<!-- bench-eda: begin -->"
SECTION_END = "<!-- bench-eda: end -->"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def write_seed(path, vms):
    seed = yaml.safe_load(DEFAULT_SEED.read_text())
    subscription = seed["subscriptions"][0]
    subscription["resource_groups"] = []
    subscription["vm_sets"] = [{
        "prefix": "vm-", "count": vms, "resource_group": RG, "location": "westeurope", "os_type": "Linux",
        "extensions": [{"name": "customScript", "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
                        "type_handler_version": "2.1", "settings": {"commandToExecute": "echo bench"}}]}]
    path.write_text(yaml.safe_dump(seed, sort_keys=False))


def epoch(text):
    return datetime.datetime.fromisoformat(text).timestamp()


def fail_once(emu, vm):
    """An operator's change whose handler run fails: returns when the failure is visible (the operation failed)."""
    emu.faults([{"extension": {"vm": vm, "name": "customScript", "outcome": "failed",
                               "stderr": "bench: injected failure\n"}, "times": 1}])
    client = compute(emu)
    ext = client.virtual_machine_extensions.get(RG, vm, "customScript")
    ext.force_update_tag = "bench-%d" % time.time_ns()
    since = time.time()
    try:
        client.virtual_machine_extensions.begin_create_or_update(RG, vm, "customScript", ext).result()
    except HttpResponseError:
        # The handler failed when its run ended: the write's arrival plus the handler's duration (the emulator's
        # clock runs at real time here). The SDK's own LRO polls notice it later.
        accepted = [r for r in emu.arm_requests() if r["method"] == "PUT" and r["time"] >= since
                    and r["status"] in (200, 201) and "/virtualMachines/%s/" % vm in r["path"]]
        if len(accepted) != 1:
            raise SystemExit("expected one accepted write on %s, the request log has: %s" % (vm, [
                (r["method"], r["status"], r["path"]) for r in emu.arm_requests() if r["time"] >= since]))
        return accepted[0]["time"] + emu.settings()["handler_duration_s"]
    raise SystemExit("the injected failure did not fail %s" % vm)


def reads_per_poll(requests, listing):
    polls = []
    for request in sorted(requests, key=lambda r: r["time"]):
        if request["method"] == "GET" and request["path"] == listing:
            if "$skiptoken" not in request["query"]:
                polls.append(0)
            polls[-1] += 1
    return polls


def run(args, work):
    write_seed(work / "seed.yml", args.vms)
    log("starting the emulator with %d VMs" % args.vms)
    emu = Emulator.start(str(work / "emulator"), seed=str(work / "seed.yml"), timeout=300)
    try:
        emu.settings(page_size=args.page_size, throttle_model="azure", handler_duration_s=args.handler_s)
        sub = emu.env["AZURE_SUBSCRIPTION_ID"]
        listing = "/subscriptions/%s/providers/Microsoft.Compute/virtualMachines" % sub
        variables = {"self_heal_interval": args.interval, "self_heal_retry_after": 900}
        rulebook = Rulebook(work / "rulebook", emu, variables).start()
        try:
            started = time.time()
            rulebook.wait(lambda: rulebook.polls() >= 1, 600, "the baseline poll")
            log("baseline after %.1f s (ansible-rulebook and the JVM start included)" % (time.time() - started))
            rulebook.wait_polls(2, timeout=10 * args.interval)
            quiet = reads_per_poll(emu.arm_requests(), listing)
            quiet_other = [r for r in emu.arm_requests() if r["path"] != listing]
            rng = random.Random(28)
            failures = []
            for number, index in enumerate(rng.sample(range(1, args.vms + 1), args.failures), 1):
                vm = "vm-%0*d" % (max(3, len(str(args.vms))), index)
                # A failure at a random moment of the poll cycle, as a real one would come.
                time.sleep(rng.uniform(0, args.interval))
                failed_at = fail_once(emu, vm)
                log("failure %d on %s" % (number, vm))

                def entries(transition, name=vm):
                    return [e for e in rulebook.journal() if e["transition"] == transition and e["vm_name"] == name]

                rulebook.wait(lambda: entries("recovered"), 10 * args.interval + 300, "the repair of " + vm)
                (failed,) = entries("failed")
                (recovered,) = entries("recovered")
                writes = [r for r in emu.arm_requests() if r["method"] == "PUT" and "azure_vm.extensions/" in (
                    r.get("user_agent") or "") and "/virtualMachines/%s/" % vm in r["path"]]
                failures.append({
                    "vm": vm,
                    "detected_s": round(epoch(failed["observed_at"]) - failed_at, 1),
                    "rerun_sent_s": round(writes[0]["time"] - failed_at, 1),
                    "repaired_s": round(epoch(recovered["observed_at"]) - failed_at, 1),
                    "reruns": len(writes),
                })
                log("  %s" % failures[-1])
        finally:
            rulebook.stop()
        saved = rulebook.polls()  # complete polls; one more may have been under way at the stop
        requests = emu.arm_requests()
        polls = reads_per_poll(requests, listing)[:saved]
        ours = [r for r in requests if "azure_vm.extensions/" in (r.get("user_agent") or "")]
        return {
            "vms": args.vms, "page_size": args.page_size, "interval_s": args.interval, "handler_s": args.handler_s,
            "cpus": os.cpu_count(), "load_average": [round(x, 1) for x in os.getloadavg()],
            "polls": len(polls), "reads_per_poll": sorted(set(polls)), "reads_per_poll_quiet": sorted(set(quiet)),
            "reads_per_poll_bound": math.ceil(args.vms / args.page_size),
            "other_reads_while_quiet": len(quiet_other),
            # The rulebook's requests only: the benchmark's own SDK client polls its operator writes fast.
            "throttled_429": sum(1 for r in ours if r["status"] == 429),
            "writes": sum(1 for r in ours if r["method"] != "GET"),
            "failures": failures,
        }
    finally:
        emu.stop()


def markdown(result):
    rows = result["failures"]
    keys = ("detected_s", "rerun_sent_s", "repaired_s")
    mean = {key: round(sum(row[key] for row in rows) / len(rows), 1) for key in keys}
    lines = [HEADING, "",
             "Generated by `benchmarks/eda_bench.py`: ansible-rulebook runs `azure_vm.extensions.self_heal` against "
             "the emulator, whose subscription holds **%d VMs** with a CustomScript extension, list pages of %d, the "
             "published throttling limits (`azure` model) in real time; a poll every **%d s**; handler runs take %s s. "
             "%d CPUs, load average at the end %s." % (
                 result["vms"], result["page_size"], result["interval_s"], result["handler_s"], result["cpus"],
                 ", ".join(str(x) for x in result["load_average"])), "",
             "| VMs watched | reads per poll | bound ceil(VMs / page) | other reads while nothing failed "
             "| 429s (rulebook) |",
             "|---:|---:|---:|---:|---:|",
             "| %d | %s (in each of the %d polls) | %d | %d | %d |" % (
                 result["vms"], " or ".join(str(x) for x in result["reads_per_poll"]), result["polls"],
                 result["reads_per_poll_bound"], result["other_reads_while_quiet"], result["throttled_429"]),
             "",
             "| failure | VM | failure -> `failed` event (s) | failure -> rerun sent (s) | failure -> repaired, "
             "`recovered` event (s) | reruns |",
             "|---:|---|---:|---:|---:|---:|"]
    for number, row in enumerate(rows, 1):
        lines.append("| %d | %s | %.1f | %.1f | %.1f | %d |" % (
            number, row["vm"], row["detected_s"], row["rerun_sent_s"], row["repaired_s"], row["reruns"]))
    lines.append("| mean | | %.1f | %.1f | %.1f | |" % (mean["detected_s"], mean["rerun_sent_s"], mean["repaired_s"]))
    lines += ["",
              "* The failure time is when the failing handler run ended: the operator's write reached the emulator, "
              "plus the handler's duration (the emulator's clock runs at real time). Detection waits for the next "
              "poll: between 0 and one interval, %d s here. The rerun is then one playbook run "
              "(ansible-runner start-up and `vm_extension` with `rerun: true`, which submits and returns). Repaired "
              "means the handler's new run succeeded and a later poll saw it: add the handler's own time and up to "
              "one more interval." % result["interval_s"],
              "* Reads: only the List All `statusOnly=true` pages, one request per page per poll, whatever the number "
              "of VMs that fail; the repairs add reads on the failing VM only (the rerun reads its extension).",
              ""]
    return "\n".join(lines)


def write_markdown(path, text):
    from benchmark_report import replace_section  # benchmarks/: docs/benchmarks.md is shared, one section each

    replace_section(Path(path), [SECTION_BEGIN, text.rstrip("\n"), SECTION_END], SECTION_BEGIN, SECTION_END)


def rewrite(json_file, markdown_file):
    """Write the markdown section again from a saved JSON result (the first '{' line on) without re-running."""
    text = Path(json_file).read_text()
    write_markdown(markdown_file, markdown(json.loads(text[text.index("{"):])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--page-size", type=int, default=50)
    parser.add_argument("--interval", type=int, default=30)
    parser.add_argument("--handler-s", type=float, default=5.0)
    parser.add_argument("--failures", type=int, default=3)
    parser.add_argument("--markdown", help="write the results under '%s' in this file" % HEADING)
    args = parser.parse_args()
    reason = rulebook_unavailable()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory(prefix="eda-bench-") as tmp:
        result = run(args, Path(tmp))
    print(json.dumps(result, indent=2))
    if args.markdown:
        write_markdown(args.markdown, markdown(result))


if __name__ == "__main__":
    main()
