"""A witness we did not write: unmodified azure.azcollection 3.21.0 modules against the emulator (`make witness`).

    .venv/bin/python benchmarks/witness.py [--markdown docs/witness.md]

The incumbent comes from the ansible 14.5.0 wheel into its own virtualenv under .build/incumbent (the same set-up
as `make bench`, benchmarks/fleet_bench.py; the first run downloads it). It only knows AzureCloud, so the emulator
runs with --public-cloud and every request goes through tests/emulator/public_cloud_proxy.py, which tunnels
management.azure.com and login.microsoftonline.com to the emulator and refuses everything else.

The emulator runs as configured by default: throttle_model "azure" (the published limits), time_scale 1. Each
call is its own ansible-playbook run, so the emulator's request log can be attributed to it: a repeat must send no
write. Prints one JSON document; exits 1 when any call does not behave as Azure would make it behave.
"""
import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet_bench  # noqa: E402  (incumbent venv, proxy and ansible environment, shared with `make bench`)
from fleet_bench import VENV_BIN, Emulator  # noqa: E402

RG = "rg-demo"
VM = "vm-web-02"
VMSS = "vmss-manual"
WRITES = ("PUT", "PATCH", "POST", "DELETE")
VM_EXTENSION = {"resource_group": RG, "virtual_machine_name": VM, "name": "witness-cs",
                "publisher": "Microsoft.Azure.Extensions", "virtual_machine_extension_type": "CustomScript",
                "type_handler_version": "2.1", "auto_upgrade_minor_version": True,
                "settings": {"commandToExecute": "echo witness"}}
VMSS_EXTENSION = {"resource_group": RG, "vmss_name": VMSS, "name": "witness-vmss",
                  "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "type_handler_version": "2.1",
                  "auto_upgrade_minor_version": True, "settings": {"commandToExecute": "echo witness"}}
VM_RESOURCE = {"resource_group": RG, "provider": "Compute", "resource_type": "virtualMachines", "resource_name": "vm-web-01",
               "method": "GET"}
# The api-version azure-mgmt-compute 33.0.0 (the incumbent's) sends for virtualMachines.
INCUMBENT_COMPUTE_API = "2024-07-01"
BOGUS_API = "1999-01-01"


def _writes(log):
    return [e for e in log if e["method"] in WRITES]


def _ok(result):
    return not result.get("failed") and not result.get("unreachable")


def _text(result):
    return json.dumps(result, default=str)


# (label, module, args, expected (text), check(result, log) -> bool)
CALLS = [
    ("VM extension create", "azure_rm_virtualmachineextension", VM_EXTENSION,
     "ok, changed, one PUT", lambda r, log: _ok(r) and r.get("changed") is True
     and [e["method"] for e in _writes(log)] == ["PUT"]),
    ("VM extension repeat (no change)", "azure_rm_virtualmachineextension", VM_EXTENSION,
     "ok, not changed, no write", lambda r, log: _ok(r) and r.get("changed") is False and not _writes(log)),
    ("VM extension info", "azure_rm_virtualmachineextension_info",
     {"resource_group": RG, "virtual_machine_name": VM, "name": "witness-cs"},
     "ok, lists witness-cs Succeeded", lambda r, log: _ok(r) and [
         (e.get("name"), e.get("provisioning_state")) for e in r.get("extensions", [])] == [("witness-cs", "Succeeded")]),
    ("VM extension delete", "azure_rm_virtualmachineextension", dict(VM_EXTENSION, state="absent"),
     "ok, changed, one DELETE", lambda r, log: _ok(r) and r.get("changed") is True
     and [e["method"] for e in _writes(log)] == ["DELETE"]),
    ("VM extension delete again", "azure_rm_virtualmachineextension", dict(VM_EXTENSION, state="absent"),
     "ok, not changed, no write", lambda r, log: _ok(r) and r.get("changed") is False and not _writes(log)),
    ("scale-set extension create", "azure_rm_virtualmachinescalesetextension", VMSS_EXTENSION,
     "ok, changed, one PUT", lambda r, log: _ok(r) and r.get("changed") is True
     and [e["method"] for e in _writes(log)] == ["PUT"]),
    ("scale-set extension info", "azure_rm_virtualmachinescalesetextension_info",
     {"resource_group": RG, "vmss_name": VMSS, "name": "witness-vmss"},
     "ok, lists witness-vmss", lambda r, log: _ok(r) and [
         e.get("name") for e in r.get("extensions", [])] == ["witness-vmss"]),
    ("scale-set extension delete", "azure_rm_virtualmachinescalesetextension", dict(VMSS_EXTENSION, state="absent"),
     "ok, changed, one DELETE", lambda r, log: _ok(r) and r.get("changed") is True
     and [e["method"] for e in _writes(log)] == ["DELETE"]),
    ("azure_rm_resource GET VM, api-version from the provider", "azure_rm_resource", VM_RESOURCE,
     "ok, the VM's body", lambda r, log: _ok(r) and (r.get("response") or {}).get("name") == "vm-web-01"),
    (f"azure_rm_resource GET VM, api-version {INCUMBENT_COMPUTE_API}", "azure_rm_resource",
     dict(VM_RESOURCE, api_version=INCUMBENT_COMPUTE_API),
     "ok, the VM's body", lambda r, log: _ok(r) and (r.get("response") or {}).get("name") == "vm-web-01"),
    (f"azure_rm_resource GET VM, api-version {BOGUS_API}", "azure_rm_resource", dict(VM_RESOURCE, api_version=BOGUS_API),
     "fails: 400 NoRegisteredProviderFound (ARM's answer to a well-formed version the type does not have)",
     lambda r, log: bool(r.get("failed")) and "NoRegisteredProviderFound" in _text(r) and [
         e["status"] for e in log if e["method"] == "GET" and e["path"].lower().endswith("/vm-web-01")] == [400]),
    ("azure_rm_virtualmachine_info", "azure_rm_virtualmachine_info", {"resource_group": RG, "name": "vm-web-01"},
     "ok, vm-web-01 with its disks and NICs", lambda r, log: _ok(r) and [v.get("name") for v in r.get("vms", [])]
     == ["vm-web-01"] and "data_disks" in r["vms"][0] and "network_interface_names" in r["vms"][0]),
]


def run_call(emu, env, work, index, label, module, args):
    playbook = work / f"call{index:02d}.yml"
    playbook.write_text(yaml.safe_dump([{"name": label, "hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": label, f"azure.azcollection.{module}": args}]}], sort_keys=False))
    before = len(emu.requests())
    started = time.time()
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), str(playbook), "-i", "localhost,", "-c", "local"],
                          env=env, capture_output=True, text=True, check=False)
    wall = time.time() - started
    log = [e for e in emu.requests()[before:] if e["path"].startswith(("/subscriptions", "/providers"))]
    try:
        doc = json.loads(proc.stdout[proc.stdout.index("{"):])
        result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        result = {"failed": True, "msg": "no result", "stdout": proc.stdout[-2000:], "stderr": proc.stderr[-2000:]}
    return result, log, wall


def observed(result, log):
    parts = ["failed" if result.get("failed") else "ok"]
    if "changed" in result:
        parts.append("changed" if result["changed"] else "not changed")
    calls = ", ".join(f"{e['method']} {e['status']}" for e in log if e["method"] in WRITES)
    parts.append("writes: " + (calls or "none"))
    parts.append(f"{sum(1 for e in log if e['method'] == 'GET')} GETs")
    throttled = [e for e in log if e["status"] == 429]
    if throttled:
        parts.append(f"{len(throttled)} x 429 ({', '.join(sorted({e['throttled_by'] for e in throttled}))})")
    if result.get("failed"):
        text = result.get("msg") or ""
        for code in ("InvalidApiVersionParameter", "NoRegisteredProviderFound"):
            if code in _text(result):
                text = code + ": " + text
        parts.append("msg: " + " ".join(str(text).split())[:160])
    return "; ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", help="write the result table to this markdown file")
    args = parser.parse_args(argv)
    collections, python, version = fleet_bench.ensure_incumbent()
    work = Path(tempfile.mkdtemp(prefix="witness-", dir=str(fleet_bench.BUILD)))
    emu = Emulator.start(str(work / "emulator"), public_cloud=True)
    proxy = None
    rows = []
    try:
        proxy, proxy_port = fleet_bench.start_proxy(int(emu.base_url.rsplit(":", 1)[1]), work)
        env = fleet_bench.incumbent_env(emu, proxy_port, collections, python)
        settings = emu.settings()
        for index, (label, module, module_args, expected, check) in enumerate(CALLS, 1):
            result, log, wall = run_call(emu, env, work, index, label, module, module_args)
            passed = bool(check(result, log))
            rows.append({"call": label, "module": f"azure.azcollection.{module}", "expected": expected,
                         "observed": observed(result, log), "passed": passed, "wall_s": round(wall, 1),
                         "requests": len(log)})
            print("%-4s %-60s %s" % ("PASS" if passed else "FAIL", label, rows[-1]["observed"]), file=sys.stderr,
                  flush=True)
            if not passed:
                rows[-1]["result"] = result
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        emu.stop()
    report = {"incumbent": f"azure.azcollection {version} (ansible {fleet_bench.INCUMBENT_VERSION}), unmodified",
              "emulator_settings": {k: settings[k] for k in ("throttle_model", "time_scale", "handler_duration_s")},
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
              "passed": sum(r["passed"] for r in rows), "calls": len(rows), "rows": rows}
    print(json.dumps(report, indent=2, default=str))
    if args.markdown:
        write_markdown(report, Path(args.markdown))
    return 0 if report["passed"] == report["calls"] else 1


DOC_TITLE = "# Witnesses: clients we did not write, unmodified, against the emulator"


def write_section(path, name, lines):
    """Replace this witness's section of docs/witness.md (between <!-- witness:NAME --> markers) and keep the
    other witness's: `make witness` and `make witness-cli` each rewrite their own."""
    begin, end = f"<!-- witness:{name} -->", f"<!-- /witness:{name} -->"
    text = path.read_text() if path.exists() else ""
    if not text.startswith(DOC_TITLE):
        text = DOC_TITLE + "\n\n"  # the single-witness layout before issue 25 is replaced
    block = "\n".join([begin] + lines + [end])
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def write_markdown(report, path):
    lines = [
        "## azure.azcollection (`make witness`)",
        "",
        "`make witness` (benchmarks/witness.py; not part of `make test`, it downloads the incumbent like `make bench`)",
        f"runs {report['incumbent']} against the emulator, each call as its own ansible-playbook run, reaching it as",
        "AzureCloud through tests/emulator/public_cloud_proxy.py. The emulator runs with its defaults:",
        f"`throttle_model: {report['emulator_settings']['throttle_model']}` (the published limits), `time_scale: "
        f"{report['emulator_settings']['time_scale']:g}`, handlers take "
        f"{report['emulator_settings']['handler_duration_s']:g} s. \"Writes\" and GETs are what the emulator's request",
        "log recorded during the call. Result of the last run "
        f"({report['date']}): **{report['passed']} of {report['calls']} calls behave as Azure would make them behave.**",
        "",
        "| # | call | module | expected | observed | result |",
        "|---|---|---|---|---|---|",
    ]
    for index, row in enumerate(report["rows"], 1):
        lines.append(f"| {index} | {row['call']} | `{row['module']}` | {row['expected']} | "
                     f"{row['observed'].replace('|', '/')} | {'pass' if row['passed'] else '**FAIL**'} |")
    lines += ["", "The incumbent waits for long-running operations with the SDK's default poll interval (30 s), so",
              "each create and delete takes about half a minute of wall time."]
    write_section(path, "azcollection", lines)


if __name__ == "__main__":
    sys.exit(main())
