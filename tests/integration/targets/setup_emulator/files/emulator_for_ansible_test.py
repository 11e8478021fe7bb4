"""Start the Azure emulator once per ansible-test run, or reuse it; print its endpoint.json.

    python emulator_for_ansible_test.py COLLECTION_ROOT

The emulator (COLLECTION_ROOT/tests/emulator) runs detached and stops by itself when the ansible-test process
that started it (the nearest ancestor running ansible-test; else the calling ansible-playbook)
exits. Its state directory is COLLECTION_ROOT/tests/output/.tmp/azure-emulator-<that pid>, so every target of
the run finds the same emulator.
"""
import json
import os
import sys
import time


def ancestors():
    pid = os.getppid()
    while pid > 1:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                cmdline = handle.read().decode("utf-8", "replace").split("\0")
            with open("/proc/%d/stat" % pid) as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return
        yield pid, cmdline
        pid = parent


def runs(cmdline, program):
    """True when the process runs `program` (as the executable or as the script its interpreter runs)."""
    return any(os.path.basename(arg) == program for arg in cmdline[:2])


def owner_pid():
    chain = list(ancestors())
    for program in ("ansible-test", "ansible-playbook"):
        for pid, cmdline in chain:
            if runs(cmdline, program):
                return pid
    return os.getppid()


def alive(pid):
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def serve(root, state_dir, owner):
    """The detached child: run the emulator while the owner lives."""
    sys.path.insert(0, os.path.join(root, "tests", "emulator"))
    from emulator_control import Emulator

    emu = Emulator.start(state_dir, timeout=120)
    try:
        while alive(owner) and emu.process.poll() is None:
            time.sleep(1)
    finally:
        emu.stop()


def main(root):
    root = os.path.abspath(root)
    owner = owner_pid()
    state_dir = os.path.join(root, "tests", "output", ".tmp", "azure-emulator-%d" % owner)
    endpoint = os.path.join(state_dir, "endpoint.json")
    if os.path.exists(endpoint):
        with open(endpoint) as handle:
            info = json.load(handle)
        if alive(info.get("pid", 0)):
            print(json.dumps(info))
            return 0
        os.unlink(endpoint)
    os.makedirs(state_dir, exist_ok=True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            try:
                serve(root, state_dir, owner)
            finally:
                os._exit(0)
        os._exit(0)
    deadline = time.time() + 150
    while not os.path.exists(endpoint):
        if time.time() > deadline:
            sys.stderr.write("the emulator did not start within 150 s (state in %s)\n" % state_dir)
            return 1
        time.sleep(0.1)
    time.sleep(0.1)  # endpoint.json is written once complete; let the writer close it
    with open(endpoint) as handle:
        print(json.dumps(json.load(handle)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
