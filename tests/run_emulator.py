"""`make emulator`: the Azure emulator in the foreground for your own playbooks, until Ctrl-C.

    .venv/bin/python tests/run_emulator.py --state-dir .build/emulator [--port 8443] [--seed FILE]

Prints the shell lines that point Ansible (this collection, and any Azure SDK client) at it. See docs/emulator.md.
"""
import argparse
import errno
import os
import shlex
import signal
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

from harness import collections_path  # noqa: E402
from emulator_control import Emulator, EmulatorError  # noqa: E402


def export_lines(emu):
    values = dict(emu.env)
    values["ANSIBLE_COLLECTIONS_PATH"] = collections_path()
    # Localhost tasks must run with the Python that has the Azure SDKs (interpreter discovery may pick another).
    values["ANSIBLE_PYTHON_INTERPRETER"] = sys.executable
    values["AZURE_POLLING_INTERVAL"] = "1"
    lines = ["export %s=%s" % (key, shlex.quote(str(value))) for key, value in sorted(values.items())]
    # ansible-playbook and the SDKs live in this virtualenv: a fresh shell finds them after the exports alone.
    return lines + ['export PATH=%s:"$PATH"' % shlex.quote(os.path.dirname(sys.executable))]


def port_in_use(port):
    """Whether 127.0.0.1:port is taken (bound as the emulator binds it, so a TIME_WAIT socket does not count)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind(("127.0.0.1", port))
    except OSError as exc:
        return exc.errno == errno.EADDRINUSE
    finally:
        probe.close()
    return False


def busy_port_message(port):
    free = next((p for p in range(port + 1, min(port + 100, 65536)) if not port_in_use(p)), None)
    return ("make emulator: port %d on 127.0.0.1 is in use; choose another with PORT=%s (make emulator PORT=%s, "
            "or --port)" % (port, free or "N", free or "N"))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Run the Azure emulator in the foreground.")
    parser.add_argument("--state-dir", default=str(ROOT / ".build" / "emulator"))
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--seed", help="seed file (default: tests/emulator/default-seed.yml)")
    args = parser.parse_args(argv)
    if args.port and port_in_use(args.port):
        print(busy_port_message(args.port), file=sys.stderr)
        return 2
    try:
        emu = Emulator.start(args.state_dir, seed=args.seed, port=args.port, timeout=120)
    except EmulatorError as exc:
        if "Address already in use" not in str(exc):  # taken between the check above and the emulator's bind
            raise
        print(busy_port_message(args.port), file=sys.stderr)
        return 2
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    try:
        print("# Azure emulator at %s (seed: %s). In another shell, run:" % (
            emu.base_url, args.seed or "tests/emulator/default-seed.yml"))
        print("\n".join(export_lines(emu)))
        print("# (or: . %s), then e.g.: ansible-playbook -i localhost, -c local your-playbook.yml"
              % shlex.quote(os.path.join(args.state_dir, "exports.sh")))
        print("# Admin API: %s/_emulator/{reset,requests,faults,settings,state}; Ctrl-C stops." % emu.base_url,
              flush=True)
        with open(os.path.join(args.state_dir, "exports.sh"), "w", encoding="utf-8") as handle:
            handle.write("\n".join(export_lines(emu)) + "\n")
        while not stop and emu.process.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0 if stop or emu.process.returncode in (0, -signal.SIGTERM) else 1


if __name__ == "__main__":
    sys.exit(main())
