"""`make ee-context`: build this checkout's collection tarball and the execution environment's build context.

    .venv/bin/python tests/ee/create_context.py [--context .build/ee/context]

1. `ansible-galaxy collection build` into .build/ee, copied to .build/ee/azure_vm-extensions.tar.gz (the name
   execution-environment.yml's additional_build_files and galaxy requirements expect);
2. `ansible-builder create` with execution-environment.yml. Build the image from the context with podman or docker.
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--context", default=str(ROOT / ".build" / "ee" / "context"))
    # decision-environment.yml (EDA controller, docs/eda.md) takes the same tarball.
    parser.add_argument("--file", default=str(ROOT / "execution-environment.yml"))
    args = parser.parse_args(argv)
    out = ROOT / ".build" / "ee"
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("azure_vm-extensions-*.tar.gz"):
        old.unlink()
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out),
                    str(ROOT)], check=True)
    built = next(out.glob("azure_vm-extensions-*.tar.gz"))
    shutil.copyfile(built, out / "azure_vm-extensions.tar.gz")
    subprocess.run([str(BIN / "ansible-builder"), "create", "-f", os.path.abspath(args.file),
                    "-c", os.path.abspath(args.context), "--output-filename", "Containerfile"],
                   cwd=str(ROOT), check=True)
    print("context in %s (from %s)" % (args.context, built.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
