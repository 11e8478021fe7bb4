"""`make demo`: start the emulator with its default seed, run playbooks/demo.yml against it, stop it."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "emulator"))

from harness import base_ansible_env  # noqa: E402  (the same environment the tests use)
from emulator_control import Emulator  # noqa: E402


def main():
    with tempfile.TemporaryDirectory(prefix="azure-emulator-") as state_dir:
        emulator = Emulator.start(state_dir=state_dir)
        try:
            print("emulator listening at %s (default seed)" % emulator.base_url, flush=True)
            env = base_ansible_env()
            env.update(emulator.env)
            env.setdefault("AZURE_POLLING_INTERVAL", "1")
            cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(ROOT / "playbooks" / "demo.yml"),
                   "-i", "localhost,", "-c", "local"]
            return subprocess.call(cmd, env=env, cwd=str(ROOT))
        finally:
            emulator.stop()


if __name__ == "__main__":
    sys.exit(main())
