"""Start, steer and stop the Azure emulator from Python (standard library only).

    emu = Emulator.start("/tmp/emu")
    emu.faults([{"extension": {"vm": "vm-web-02", "name": "cs", "outcome": "failed"}, "times": 1}])
    ... run code with emu.env ...
    emu.writes()        # what was sent to ARM
    emu.stop()
"""
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "azure-emulator")
ARM_PREFIXES = ("/subscriptions", "/providers")
WRITE_METHODS = ("PUT", "PATCH", "POST", "DELETE")


class EmulatorError(RuntimeError):
    pass


class Emulator:
    def __init__(self, process, state_dir, info):
        self.process = process
        self.state_dir = state_dir
        self.base_url = info["base_url"]
        self.ca_bundle = info["ca_bundle"]
        self.env = dict(info["env"])
        self.msi_endpoint = info.get("msi_endpoint")
        self.msi_header = info.get("msi_header")
        self.audience = info.get("audience")
        self._context = ssl.create_default_context(cafile=self.ca_bundle)

    @classmethod
    def start(cls, state_dir, seed=None, port=0, timeout=300, public_cloud=False):
        """Spawn the emulator and wait for its endpoint.json; raise with its stderr if it dies first.

        The timeouts here (start, admin calls) only bound a hung emulator: they are generous so that a loaded
        machine, where starting it (TLS keys, the SDK models) can take tens of seconds, does not fail a test."""
        state_dir = os.path.abspath(state_dir)
        os.makedirs(state_dir, exist_ok=True)
        endpoint = os.path.join(state_dir, "endpoint.json")
        if os.path.exists(endpoint):
            os.unlink(endpoint)
        cmd = [sys.executable, SCRIPT, "--state-dir", state_dir, "--port", str(port)]
        if seed:
            cmd += ["--seed", os.path.abspath(seed)]
        if public_cloud:  # also answer as AzureCloud behind public_cloud_proxy.py (see README)
            cmd.append("--public-cloud")
        stderr_path = os.path.join(state_dir, "emulator.stderr")
        with open(stderr_path, "wb") as stderr:
            process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while not os.path.exists(endpoint):
            if process.poll() is not None:
                with open(stderr_path, encoding="utf-8", errors="replace") as handle:
                    raise EmulatorError(f"emulator exited with {process.returncode}:\n{handle.read()}")
            if time.monotonic() > deadline:
                process.kill()
                raise EmulatorError(f"emulator did not start within {timeout} s")
            time.sleep(0.05)
        with open(endpoint, encoding="utf-8") as handle:
            return cls(process, state_dir, json.load(handle))

    def stop(self, timeout=10):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _call(self, method, action, payload=None):
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(f"{self.base_url}/_emulator/{action}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=300) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise EmulatorError(f"{method} /_emulator/{action}: {exc.code} {exc.read().decode()}") from None

    def reset(self):
        """Back to the seed: state, faults, settings, throttling and the request log."""
        return self._call("POST", "reset")

    def requests(self):
        """The request log, oldest first (query is a dict of str -> str; bodies masked)."""
        return self._call("GET", "requests")

    def arm_requests(self):
        return [r for r in self.requests() if r["path"].startswith(ARM_PREFIXES)]

    def writes(self):
        return [r for r in self.arm_requests() if r["method"] in WRITE_METHODS]

    def faults(self, rules):
        return self._call("POST", "faults", list(rules))

    def settings(self, **values):
        return self._call("POST", "settings", values)

    def state(self):
        return self._call("GET", "state")

    def set_vm(self, resource_group, name, **changes):
        """A VM's power_state ("running", "stopped", "deallocated") or agent_status ("Ready", "NotReady") changed
        outside ARM's API (POST /_emulator/vm)."""
        return self._call("POST", "vm", dict(changes, resource_group=resource_group, name=name))

    def handler_runs(self):
        """Every handler run, oldest first: target ("vm" or "vmss/instanceId"), extension, kind, start, outcome and
        protected_settings (the keyed digest of the protected settings it ran with, or None)."""
        return self._call("GET", "handler-runs")

    def fingerprint(self, protected_settings):
        """The digest handler_runs() shows for these protected settings (None for none)."""
        return self._call("POST", "fingerprint", {"protectedSettings": protected_settings})["fingerprint"]
