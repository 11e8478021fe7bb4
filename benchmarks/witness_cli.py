"""A second witness we did not write: the Azure CLI, unmodified, runs the requirement documents' own commands against
the emulator (`make witness-cli`).

    .venv/bin/python benchmarks/witness_cli.py [--az .build/azure-cli/venv/bin/az] [--markdown docs/witness.md]

The seeds (../shared/seeds, Microsoft docs) describe the work with `az vm extension set/show/list/delete`,
`az vm extension image list`, `az vm get-instance-view`, `az vmss extension set`, `az feature register/show` and
`az provider register`. This runs each of them (names adapted to the emulator's default world: rg-demo, vm-web-02,
vmss-manual, westeurope) with the Azure CLI from PyPI in its own virtualenv (.build/azure-cli, `make witness-cli`
creates it; this script does too when it is missing), logged in as the seed's service principal, and checks each
answer and the requests the emulator logged for it, not just the exit code.

The CLI only knows AzureCloud: the emulator runs with --public-cloud and every request goes through
tests/emulator/public_cloud_proxy.py (HTTPS_PROXY and HTTP_PROXY, NO_PROXY empty). The CLI never resolves
management.azure.com or login.microsoftonline.com itself: it asks the proxy to CONNECT to them, and the proxy
tunnels those names to the emulator's 127.0.0.1 port and refuses anything else; its log (--log-file) shows every
name asked for, and the run fails if anything unexpected was refused (EXPECTED_REFUSALS). AZURE_CONFIG_DIR and
HOME point at a temporary directory (nothing touches ~/.azure), telemetry is off (AZURE_CORE_COLLECT_TELEMETRY=no,
the environment form of `az config set core.collect_telemetry=no`), and the CLI may not install extensions on its
own.

The emulator runs with its defaults (throttle model "azure", time_scale 1, handlers 1 s). The CLI polls long-running
operations every 30 s (the emulator sends no Retry-After, as the recorded Azure answers), so every write takes
about half a minute: the run takes 5 to 10 minutes. Prints one JSON document; exits 1 when any command does not
behave as it would on Azure.
"""
import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fleet_bench  # noqa: E402  (paths and the emulator controller, shared with `make bench`)
from fleet_bench import ROOT, Emulator  # noqa: E402
from witness import write_section  # noqa: E402

CLI_VERSION = "2.91.0"
CLI_DIR = fleet_bench.BUILD / "azure-cli"
RG, VM, VMSS, LOCATION = "rg-demo", "vm-web-02", "vmss-manual", "westeurope"
# A secret for the protected-settings commands: it must never show in the CLI's output, the emulator's log or state.
PROTECTED = {"commandToExecute": "echo witness-cli-s3cret"}
CUSTOM_SCRIPT_SETTINGS = {"fileUris": ["https://raw.githubusercontent.com/me/project/hello.sh"],
                          "commandToExecute": "./hello.sh"}
# Seed 001's example extension; the default catalogue lacks it, the witness world adds it.
DEPENDENCY_AGENT = ("Microsoft.Azure.Monitoring.DependencyAgent", "DependencyAgentLinux")
DEPENDENCY_AGENT_VERSIONS = ["9.5.0.1", "9.5.3.5", "9.10.18.1"]
# Requests the CLI makes on its own that the proxy refuses, and why they are expected: on its first run in a new
# AZURE_CONFIG_DIR the CLI checks for a newer version of itself (azure.cli.core.util.handle_version_update ->
# get_cached_latest_versions -> check_connectivity, a HEAD to azcliprod.blob.core.windows.net/cli). It gets a 403
# from the proxy, treats it as no connectivity and goes on. Anything else refused fails the run.
EXPECTED_REFUSALS = {"CONNECT azcliprod.blob.core.windows.net:443 HTTP/1.0": "the CLI's first-run version check"}


def ensure_cli(az):
    """The Azure CLI in its own virtualenv; created here when `make witness-cli` has not done it."""
    if not az.exists():
        venv = az.parent.parent
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                        f"azure-cli=={CLI_VERSION}"], check=True)
    return az


def write_seed(path):
    seed = yaml.safe_load(fleet_bench.DEFAULT_SEED.read_text())
    publisher, ext_type = DEPENDENCY_AGENT
    seed["extension_images"][LOCATION][publisher] = {ext_type: {"os": "Linux", "versions": DEPENDENCY_AGENT_VERSIONS}}
    path.write_text(yaml.safe_dump(seed, sort_keys=False))
    return seed


def start_proxy(emulator_port, work):
    ready, log = work / "proxy.json", work / "proxy.log"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "emulator" / "public_cloud_proxy.py"),
                             "--emulator-port", str(emulator_port), "--ready-file", str(ready), "--log-file", str(log)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300  # only bounds a proxy that hangs on a loaded machine
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError("public_cloud_proxy did not start")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["port"], log


def cli_env(emu, proxy_port, home):
    """A clean environment: nothing of the caller's Azure settings, the proxy for every URL, state in `home`."""
    proxy = f"http://127.0.0.1:{proxy_port}"
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
        "AZURE_CONFIG_DIR": str(home / "azure-config"),
        "AZURE_CORE_COLLECT_TELEMETRY": "no", "AZURE_CORE_SURVEY_MESSAGE": "no", "AZURE_CORE_NO_COLOR": "yes",
        "AZURE_EXTENSION_USE_DYNAMIC_INSTALL": "no", "AZURE_CORE_OUTPUT": "json",
        "HTTPS_PROXY": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy, "http_proxy": proxy,
        "NO_PROXY": "", "no_proxy": "",
        "REQUESTS_CA_BUNDLE": emu.ca_bundle, "SSL_CERT_FILE": emu.ca_bundle,
    }


class Run:
    """One az invocation: exit code, parsed JSON output (None if none), stderr, and the emulator's log for it."""

    def __init__(self, rc, stdout, stderr, log, runs, wall, proxied):
        self.rc, self.stdout, self.stderr, self.log, self.runs, self.wall = rc, stdout, stderr, log, runs, wall
        self.refused = [e["request"] for e in proxied if not e["tunnelled"]]  # what it tried to reach elsewhere
        try:
            self.out = json.loads(stdout) if stdout.strip() else None
        except ValueError:
            self.out = None

    def calls(self, method=None, contains=""):
        return [f"{e['method']} {e['status']}" for e in self.log
                if (method is None or e["method"] == method) and contains.lower() in e["path"].lower()]

    def writes(self):
        return [e for e in self.log if e["method"] in ("PUT", "PATCH", "POST", "DELETE")]


def _ext(name, publisher, settings=None, version=None, extra=()):
    args = ["vm", "extension", "set", "--resource-group", RG, "--vm-name", VM, "--name", name,
            "--publisher", publisher]
    if version:
        args += ["--version", version]
    if settings is not None:
        args += ["--settings", json.dumps(settings)]
    return args + list(extra)


def _catalogue_rows(seed, publisher=None, name=None):
    rows = []
    for pub, types in seed["extension_images"][LOCATION].items():
        for ext_type, entry in types.items():
            if (publisher is None or publisher.lower() in pub.lower()) and (name is None or name.lower()
                                                                            in ext_type.lower()):
                rows += [(pub, ext_type, str(v)) for v in entry["versions"]]
    return sorted(rows)


def _rows(out):
    return sorted((r["publisher"], r["name"], r["version"]) for r in out or [])


def commands(emu, sub, tenant, client_id, secret, seed):
    """(label, az arguments, what the documentation/Azure leads to expect, check(run) -> bool, options)."""
    secret_fp = emu.fingerprint(PROTECTED)
    dep_pub, dep_type = DEPENDENCY_AGENT
    newest_cs = max(seed["extension_images"][LOCATION]["Microsoft.Azure.Extensions"]["CustomScript"]["versions"],
                    key=lambda v: tuple(int(p) for p in v.split(".")))

    def runs_since(run, name, target=VM):
        return [r for r in run.runs if r["extension"] == name and r["target"].startswith(target)]

    return [
        ("az login --service-principal", ["login", "--service-principal", "--username", client_id, "--password",
                                          secret, "--tenant", tenant],
         "the principal's subscription listed (GET /subscriptions 200)",
         lambda r: r.rc == 0 and [(s["id"], s["tenantId"], s["state"], s["user"]["type"]) for s in r.out or []]
         == [(sub, tenant, "Enabled", "servicePrincipal")] and r.calls("GET", "/subscriptions") == ["GET 200"], {}),
        ("az account show", ["account", "show"], "the subscription logged in, no request",
         lambda r: r.rc == 0 and (r.out or {}).get("id") == sub and r.log == [], {}),
        # --- seed 001: preview feature and provider ---
        ("az feature register", ["feature", "register", "--namespace", "Microsoft.Compute", "--name",
                                 "AutomaticExtensionUpgradePreview"],
         "state Registering (one POST register)",
         lambda r: r.rc == 0 and (r.out or {}).get("properties", {}).get("state") == "Registering"
         and r.calls("POST") == ["POST 200"], {}),
        ("az feature show (until Registered)", ["feature", "show", "--namespace", "Microsoft.Compute", "--name",
                                                "AutomaticExtensionUpgradePreview"],
         "state Registering, then Registered (the docs: poll until it is)",
         lambda r: r.rc == 0 and (r.out or {}).get("properties", {}).get("state") == "Registered"
         and (r.out or {}).get("name") == "Microsoft.Compute/AutomaticExtensionUpgradePreview" and not r.writes(),
         {"until": 60}),
        ("az provider register", ["provider", "register", "--namespace", "Microsoft.Compute"],
         "ok (POST register, Microsoft.Resources 2024-11-01)",
         lambda r: r.rc == 0 and [(e["method"], e["status"], e["query"].get("api-version")) for e in r.writes()]
         == [("POST", 200, "2024-11-01")], {}),
        ("az provider show", ["provider", "show", "--namespace", "Microsoft.Compute"], "registrationState Registered",
         lambda r: r.rc == 0 and (r.out or {}).get("registrationState") == "Registered"
         and (r.out or {}).get("namespace") == "Microsoft.Compute", {}),
        # --- seeds 002/004: discover extensions ---
        ("az vm extension image list --location (table)", ["vm", "extension", "image", "list", "--location",
                                                           LOCATION, "--output", "table"],
         "a table of every type and version of the region",
         lambda r: r.rc == 0 and r.stdout.split()[:3] == ["Name", "Publisher", "Version"]
         and all(f"{t} " in r.stdout and f" {v}" in r.stdout for dummy, t, v in _catalogue_rows(seed))
         and [e["status"] for e in r.log if e["path"].lower().endswith("/publishers")] == [200], {"raw": True}),
        ("az vm extension image list --location", ["vm", "extension", "image", "list", "--location", LOCATION],
         "exactly the region's catalogue", lambda r: r.rc == 0 and _rows(r.out) == _catalogue_rows(seed), {}),
        ("... --publisher", ["vm", "extension", "image", "list", "--location", LOCATION, "--publisher",
                             "Microsoft.Azure.Extensions"],
         "the publisher's types and versions",
         lambda r: r.rc == 0 and _rows(r.out) == _catalogue_rows(seed, "Microsoft.Azure.Extensions"), {}),
        ("... --name (partial match)", ["vm", "extension", "image", "list", "--location", LOCATION, "--name",
                                        "CustomScript"],
         "CustomScript and CustomScriptExtension, every version",
         lambda r: r.rc == 0 and _rows(r.out) == _catalogue_rows(seed, name="CustomScript"), {}),
        ("... --publisher --name --latest", ["vm", "extension", "image", "list", "--location", LOCATION,
                                             "--publisher", "Microsoft.Azure.Extensions", "--name", "CustomScript",
                                             "--latest"],
         f"one row, version {newest_cs} (numeric order)",
         lambda r: r.rc == 0 and _rows(r.out) == [("Microsoft.Azure.Extensions", "CustomScript", newest_cs)], {}),
        # --- seeds 002/004: run an extension, read its state ---
        ("az vm extension set (no --version)", _ext("customScript", "Microsoft.Azure.Extensions",
                                                    CUSTOM_SCRIPT_SETTINGS),
         "the newest version trimmed to major.minor (2.1), one PUT 201, the handler runs once",
         lambda r: r.rc == 0 and (r.out or {}).get("typeHandlerVersion") == "2.1"
         and (r.out or {}).get("provisioningState") == "Succeeded" and r.out.get("settings") == CUSTOM_SCRIPT_SETTINGS
         and r.calls("PUT") == ["PUT 201"] and any(e["path"].lower().endswith("/publishers") for e in r.log)
         and [x["kind"] for x in runs_since(r, "customScript")] == ["Creating"], {}),
        ("az vm extension set (the same again)", _ext("customScript", "Microsoft.Azure.Extensions",
                                                      CUSTOM_SCRIPT_SETTINGS),
         "unchanged: PUT 200, the handler does not run again",
         lambda r: r.rc == 0 and (r.out or {}).get("provisioningState") == "Succeeded"
         and r.calls("PUT") == ["PUT 200"] and runs_since(r, "customScript") == [], {}),
        ("az vm extension show", ["vm", "extension", "show", "--resource-group", RG, "--vm-name", VM, "--name",
                                  "customScript"],
         "the definition, no protected settings",
         lambda r: r.rc == 0 and (r.out or {}).get("settings") == CUSTOM_SCRIPT_SETTINGS
         and r.out.get("typePropertiesType") == "CustomScript" and "protectedSettings" not in json.dumps(r.out), {}),
        ("az vm extension list", ["vm", "extension", "list", "--resource-group", RG, "--vm-name", VM],
         "[customScript]", lambda r: r.rc == 0 and [e.get("name") for e in r.out or []] == ["customScript"], {}),
        ("az vm get-instance-view --query instanceView.extensions",
         ["vm", "get-instance-view", "--resource-group", RG, "--name", VM, "--query", "instanceView.extensions"],
         f"customScript succeeded at {newest_cs}",
         lambda r: r.rc == 0 and [(e["name"], e["type"], e["typeHandlerVersion"], e["statuses"][0]["code"])
                                  for e in r.out or []]
         == [("customScript", "Microsoft.Azure.Extensions.CustomScript", newest_cs, "ProvisioningState/succeeded")],
         {}),
        ("az vm get-instance-view (a failed handler)",
         ["vm", "get-instance-view", "--resource-group", RG, "--name", "vm-failed-ext", "--query",
          "instanceView.extensions"],
         "the documentation's failure: ProvisioningState/failed/0, 'ech: not found'",
         lambda r: r.rc == 0 and [(e["statuses"][0]["code"], e["statuses"][0]["level"],
                                   e["statuses"][0]["displayStatus"]) for e in r.out or []]
         == [("ProvisioningState/failed/0", "Error", "Provisioning failed")]
         and "/bin/sh: 1: ech: not found" in r.out[0]["statuses"][0]["message"], {}),
        # --- protected settings, and the CLI's rerun ---
        ("az vm extension set --protected-settings", _ext("customScript", "Microsoft.Azure.Extensions",
                                                          CUSTOM_SCRIPT_SETTINGS, "2.1",
                                                          ["--protected-settings", json.dumps(PROTECTED)]),
         "PUT 200 with the protected settings masked in the log; the handler runs with them",
         lambda r: r.rc == 0 and r.calls("PUT") == ["PUT 200"]
         and [w["body"]["properties"]["protectedSettings"] for w in r.writes()] == [{"commandToExecute": "***"}]
         and [x["protected_settings"] for x in runs_since(r, "customScript")] == [secret_fp], {}),
        ("az vm extension set --force-update", _ext("customScript", "Microsoft.Azure.Extensions",
                                                    CUSTOM_SCRIPT_SETTINGS, "2.1", ["--force-update"]),
         "a PUT without protectedSettings and a new forceUpdateTag: the handler reruns with the stored ones",
         lambda r: r.rc == 0 and [("protectedSettings" in w["body"]["properties"], bool(
             w["body"]["properties"].get("forceUpdateTag"))) for w in r.writes()] == [(False, True)]
         and [(x["kind"], x["protected_settings"]) for x in runs_since(r, "customScript")]
         == [("Updating", secret_fp)], {}),
        ("az vm extension set --version abc", _ext("customScript", "Microsoft.Azure.Extensions",
                                                   CUSTOM_SCRIPT_SETTINGS, "abc"),
         "refused: 400 InvalidParameter, typeHandlerVersion invalid; nothing runs",
         lambda r: r.rc != 0 and "The value of parameter typeHandlerVersion is invalid" in r.stderr
         and r.calls("PUT") == ["PUT 400"] and r.runs == [], {}),
        (f"az vm extension set {dep_type} --version 9.5 --enable-auto-upgrade",
         _ext(dep_type, dep_pub, None, "9.5", ["--enable-auto-upgrade", "true"]),
         "created with enableAutomaticUpgrade true at 9.5",
         lambda r: r.rc == 0 and (r.out or {}).get("enableAutomaticUpgrade") is True
         and r.out.get("typeHandlerVersion") == "9.5" and r.calls("PUT") == ["PUT 201"], {}),
        ("az vm extension delete", ["vm", "extension", "delete", "--resource-group", RG, "--vm-name", VM, "--name",
                                    "customScript"],
         "DELETE 202, then gone",
         lambda r: r.rc == 0 and r.calls("DELETE") == ["DELETE 202"], {}),
        ("az vm extension list (after the delete)", ["vm", "extension", "list", "--resource-group", RG,
                                                     "--vm-name", VM],
         f"[{dep_type}] only", lambda r: r.rc == 0 and [e.get("name") for e in r.out or []] == [dep_type], {}),
        ("az vm extension delete (again)", ["vm", "extension", "delete", "--resource-group", RG, "--vm-name", VM,
                                            "--name", "customScript"],
         "ok, DELETE 204 (nothing to delete)", lambda r: r.rc == 0 and r.calls("DELETE") == ["DELETE 204"], {}),
        # --- seed 001: scale sets ---
        (f"az vmss extension set {dep_type} --version 9.5 --enable-auto-upgrade",
         ["vmss", "extension", "set", "--resource-group", RG, "--vmss-name", VMSS, "--name", dep_type,
          "--publisher", dep_pub, "--version", "9.5", "--enable-auto-upgrade", "true"],
         "the scale-set model holds it (one scale-set PUT); Manual: no instance changes",
         lambda r: r.rc == 0 and [(e["name"], e.get("enableAutomaticUpgrade"), e.get("typeHandlerVersion"))
                                  for e in (r.out or {}).get("virtualMachineProfile", {}).get(
                                      "extensionProfile", {}).get("extensions", [])] == [(dep_type, True, "9.5")]
         and r.calls("PUT") == ["PUT 200"] and r.runs == [], {}),
        ("az vmss extension show", ["vmss", "extension", "show", "--resource-group", RG, "--vmss-name", VMSS,
                                    "--name", dep_type],
         "the model's extension", lambda r: r.rc == 0 and (r.out or {}).get("name") == dep_type
         and r.out.get("enableAutomaticUpgrade") is True, {}),
        ("az vmss extension list", ["vmss", "extension", "list", "--resource-group", RG, "--vmss-name", VMSS],
         f"[{dep_type}]", lambda r: r.rc == 0 and [e.get("name") for e in r.out or []] == [dep_type], {}),
        ("az vmss get-instance-view --instance-id '*' (before)", ["vmss", "get-instance-view", "--resource-group",
                                                                  RG, "--name", VMSS, "--instance-id", "*"],
         "5 instance views, none runs the new extension yet (Manual)",
         lambda r: r.rc == 0 and len(r.out or []) == 5 and all(not v.get("extensions") for v in r.out)
         and r.calls("GET", "/virtualMachines") == ["GET 200"]
         and [e["query"].get("$select") for e in r.log] == ["instanceView"], {}),
        ("az vmss update-instances --instance-ids '*'", ["vmss", "update-instances", "--resource-group", RG,
                                                         "--name", VMSS, "--instance-ids", "*"],
         "every instance upgraded: the handler runs on all 5",
         lambda r: r.rc == 0 and [w["body"] for w in r.writes()] == [{"instanceIds": ["*"]}]
         and sorted(x["target"] for x in runs_since(r, dep_type, VMSS))
         == [f"{VMSS}/{i}" for i in range(5)], {}),
        ("az vmss get-instance-view --instance-id '*'", ["vmss", "get-instance-view", "--resource-group", RG,
                                                         "--name", VMSS, "--instance-id", "*"],
         f"5 instance views, {dep_type} succeeded on each",
         lambda r: r.rc == 0 and [[(e["name"], e["statuses"][0]["code"]) for e in v.get("extensions", [])]
                                  for v in r.out or []] == [[(dep_type, "ProvisioningState/succeeded")]] * 5, {}),
        ("az vmss get-instance-view", ["vmss", "get-instance-view", "--resource-group", RG, "--name", VMSS],
         "the scale set's counts: 5 instances, 5 extensions succeeded",
         lambda r: r.rc == 0 and (r.out or {}).get("extensions") == [{"name": dep_type, "statusesSummary": [
             {"code": "ProvisioningState/succeeded", "count": 5}]}], {}),
        ("az vmss get-instance-view --instance-id 0", ["vmss", "get-instance-view", "--resource-group", RG,
                                                       "--name", VMSS, "--instance-id", "0"],
         "instance 0's view", lambda r: r.rc == 0 and [e["name"] for e in (r.out or {}).get("extensions", [])]
         == [dep_type], {}),
        ("az vmss extension set --protected-settings", ["vmss", "extension", "set", "--resource-group", RG,
                                                        "--vmss-name", VMSS, "--name", "CustomScript",
                                                        "--publisher", "Microsoft.Azure.Extensions", "--version",
                                                        "2.1", "--settings", json.dumps({"fileUris": []}),
                                                        "--protected-settings", json.dumps(PROTECTED)],
         "a second extension in the model, its protected settings masked in the log",
         lambda r: r.rc == 0 and r.calls("PUT") == ["PUT 200"] and sorted(
             e["name"] for e in r.writes()[0]["body"]["properties"]["virtualMachineProfile"]["extensionProfile"][
                 "extensions"]) == ["CustomScript", dep_type]
         and "witness-cli-s3cret" not in json.dumps(r.log), {}),
        ("az vmss extension set --force-update", ["vmss", "extension", "set", "--resource-group", RG,
                                                  "--vmss-name", VMSS, "--name", "CustomScript", "--publisher",
                                                  "Microsoft.Azure.Extensions", "--version", "2.1", "--settings",
                                                  json.dumps({"fileUris": []}), "--force-update"],
         "the scale set PUT without protected settings; after update-instances the handlers run with the stored ones",
         lambda r: r.rc == 0 and r.calls("PUT") == ["PUT 200"], {"then": ["vmss", "update-instances",
                                                                          "--resource-group", RG, "--name", VMSS,
                                                                          "--instance-ids", "*"],
                                                                 "then_check": lambda r: r.rc == 0 and sorted(
             (x["target"], x["protected_settings"]) for x in runs_since(r, "CustomScript", VMSS))
             == [(f"{VMSS}/{i}", secret_fp) for i in range(5)]}),
        ("az vmss extension delete", ["vmss", "extension", "delete", "--resource-group", RG, "--vmss-name", VMSS,
                                      "--name", dep_type],
         "removed from the model: the CLI PUTs the scale set without it (no DELETE), the other one stays",
         lambda r: r.rc == 0 and r.calls("PUT") == ["PUT 200"] and not r.calls("DELETE")
         and [e["name"] for e in (r.out or {}).get("virtualMachineProfile", {}).get("extensionProfile", {}).get(
             "extensions", [])] == ["CustomScript"], {}),
    ]


def _proxy_entries(proxy_log):
    return [json.loads(line) for line in proxy_log.read_text().splitlines()] if proxy_log.exists() else []


def run_az(az, env, emu, proxy_log, args, raw=False):
    before, runs_before, proxied = len(emu.requests()), len(emu.handler_runs()), len(_proxy_entries(proxy_log))
    started = time.time()
    argv = [str(az)] + list(args) + ([] if raw else ["--output", "json"])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=1200)
    wall = time.time() - started
    log = [e for e in emu.requests()[before:] if e["path"].startswith(("/subscriptions", "/providers"))]
    return Run(proc.returncode, proc.stdout, proc.stderr, log, emu.handler_runs()[runs_before:], wall,
               _proxy_entries(proxy_log)[proxied:])


def shown(args, secrets):
    text = " ".join(shlex.quote(a) for a in ["az"] + list(args))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def observed(run):
    parts = [f"rc {run.rc}"]
    writes = ", ".join(f"{e['method']} {e['status']}" for e in run.writes())
    parts.append("writes: " + (writes or "none"))
    parts.append(f"{sum(1 for e in run.log if e['method'] == 'GET')} GETs")
    if run.runs:
        parts.append(f"{len(run.runs)} handler run(s)")
    if run.refused:
        parts.append("refused by the proxy: " + ", ".join(run.refused))
    if run.rc and run.stderr:
        parts.append("stderr: " + " ".join(run.stderr.split())[:140])
    return "; ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--az", default=str(CLI_DIR / "venv" / "bin" / "az"), help="the az executable to witness")
    parser.add_argument("--markdown", help="write the result section into this markdown file (docs/witness.md)")
    args = parser.parse_args(argv)
    az = ensure_cli(Path(args.az).resolve())
    work = Path(tempfile.mkdtemp(prefix="witness-cli-", dir=str(fleet_bench.BUILD)))
    seed = write_seed(work / "seed.yml")
    emu = Emulator.start(str(work / "emulator"), seed=str(work / "seed.yml"), public_cloud=True)
    proxy, rows = None, []
    secret_values = [emu.env["AZURE_SECRET"], PROTECTED["commandToExecute"]]
    try:
        proxy, proxy_port, proxy_log = start_proxy(int(emu.base_url.rsplit(":", 1)[1]), work)
        env = cli_env(emu, proxy_port, work / "home")
        (work / "home").mkdir()
        # From the package metadata: `az version` would ask azcliprod.blob.core.windows.net for the newest version.
        version = subprocess.run([str(az.parent / "python"), "-c", "import importlib.metadata as m; "
                                  "print(m.version('azure-cli'))"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        settings = emu.settings()
        cmds = commands(emu, emu.env["AZURE_SUBSCRIPTION_ID"], emu.env["AZURE_TENANT"], emu.env["AZURE_CLIENT_ID"],
                        emu.env["AZURE_SECRET"], seed)
        for label, cli_args, expected, check, options in cmds:
            deadline = time.time() + options.get("until", 0)
            attempts = 0
            while True:
                attempts += 1
                run = run_az(az, env, emu, proxy_log, cli_args, raw=options.get("raw", False))
                passed = bool(check(run))
                if passed or time.time() >= deadline:
                    break
                time.sleep(1)
            note = observed(run) + (f"; {attempts} runs" if attempts > 1 else "")
            if passed and "then" in options:
                then = run_az(az, env, emu, proxy_log, options["then"])
                passed = bool(options["then_check"](then))
                note += f"; then `{shown(options['then'], [])}`: {observed(then)}"
            leaked = [s for s in secret_values if s in run.stdout + run.stderr]
            if leaked:
                passed, note = False, note + "; a secret appeared in the CLI's output"
            if any(r not in EXPECTED_REFUSALS for r in run.refused):
                passed = False
            rows.append({"command": shown(cli_args, secret_values), "label": label, "expected": expected,
                         "observed": note, "passed": passed, "wall_s": round(run.wall, 1)})
            print("%-4s %-55s %s" % ("PASS" if passed else "FAIL", label, note), file=sys.stderr, flush=True)
            if not passed:
                rows[-1]["stdout"] = run.stdout[-1500:]
                rows[-1]["stderr"] = run.stderr[-1500:]
        proxy_entries = _proxy_entries(proxy_log)
        state_text = json.dumps([emu.requests(), emu.state(), emu.handler_runs()])
    finally:
        if proxy is not None:
            proxy.terminate()
            proxy.wait()
        emu.stop()
    hosts = {}
    for entry in proxy_entries:
        if entry["tunnelled"]:
            hosts[entry["request"].split()[1]] = hosts.get(entry["request"].split()[1], 0) + 1
    refused = [e["request"] for e in proxy_entries if not e["tunnelled"]]
    unexpected = [r for r in refused if r not in EXPECTED_REFUSALS]
    secrets_kept = not any(s in state_text for s in secret_values[1:])
    report = {"client": f"Azure CLI {version} (PyPI azure-cli), unmodified", "date": datetime.datetime.now(
        datetime.timezone.utc).strftime("%Y-%m-%d"),
        "emulator_settings": {k: settings[k] for k in ("throttle_model", "time_scale", "handler_duration_s")},
        "passed": sum(r["passed"] for r in rows), "commands": len(rows), "proxy_tunnels": hosts,
        "proxy_refused": {r: EXPECTED_REFUSALS.get(r, "UNEXPECTED") for r in refused},
        "protected_settings_never_in_emulator_log_or_state": secrets_kept, "rows": rows}
    print(json.dumps(report, indent=2, default=str))
    if args.markdown:
        write_markdown(report, Path(args.markdown))
    return 0 if report["passed"] == report["commands"] and not unexpected and secrets_kept else 1


def write_markdown(report, path):
    tunnels = ", ".join(f"`{host}` {count}" for host, count in sorted(report["proxy_tunnels"].items()))
    lines = [
        "## The Azure CLI (`make witness-cli`)",
        "",
        "`make witness-cli` (benchmarks/witness_cli.py; not part of `make test`, part of `make ci-extra`) runs",
        f"{report['client']}, from its own virtualenv (.build/azure-cli), logged in as the seed's service principal,",
        "with the requirement documents' own commands (seeds 001, 002, 004; names adapted to the emulator's world).",
        "It reaches the emulator as AzureCloud through tests/emulator/public_cloud_proxy.py: the CLI asks the proxy",
        "to CONNECT to the public names and never resolves them; the proxy tunnels those to the emulator and refuses",
        "anything else. AZURE_CONFIG_DIR and HOME are a temporary directory, telemetry is off. Each command's answer",
        "and the requests the emulator logged for it are checked, not only the exit code. Emulator defaults:",
        f"`throttle_model: {report['emulator_settings']['throttle_model']}`, `time_scale: "
        f"{report['emulator_settings']['time_scale']:g}`, handlers take "
        f"{report['emulator_settings']['handler_duration_s']:g} s.",
        "",
        f"Result of the last run ({report['date']}): **{report['passed']} of {report['commands']} commands behave as "
        "on Azure.** Proxy tunnels: " + (tunnels or "none") + "; refused (nothing left the machine): "
        + (", ".join(f"`{r}` ({why})" for r, why in report["proxy_refused"].items()) or "none")
        + ". The protected settings given to the "
        "CLI appear " + ("nowhere" if report["protected_settings_never_in_emulator_log_or_state"] else
                         "**in the emulator's log or state**") + " in the emulator's request log, state or "
        "handler-runs (they are masked and kept as a keyed digest).",
        "",
        "| # | command | expected | observed | result |",
        "|---|---|---|---|---|",
    ]
    for index, row in enumerate(report["rows"], 1):
        lines.append(f"| {index} | `{row['command'].replace('|', '/')}` | {row['expected']} | "
                     f"{row['observed'].replace('|', '/')} | {'pass' if row['passed'] else '**FAIL**'} |")
    lines += ["", "The CLI polls long-running operations every 30 s (Azure's recorded answers carry no Retry-After),",
              "so each write takes about half a minute of wall time."]
    write_section(path, "cli", lines)


if __name__ == "__main__":
    sys.exit(main())
