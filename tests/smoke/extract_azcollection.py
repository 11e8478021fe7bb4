"""Take azure.azcollection out of a downloaded ansible wheel: extract_azcollection.py WHEEL_DIR COLLECTIONS_DIR.

The ansible package pins the released azure.azcollection (and its requirements.txt) that users get with it.
"""
import sys
import zipfile
from pathlib import Path


def main(wheel_dir, dest):
    wheel = next(Path(wheel_dir).glob("ansible-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        members = [name for name in archive.namelist() if name.startswith("ansible_collections/azure/azcollection/")]
        if not members:
            raise SystemExit("%s has no azure.azcollection" % wheel)
        archive.extractall(dest, members=members)
    print("azure.azcollection from %s in %s" % (wheel.name, dest))


if __name__ == "__main__":
    main(*sys.argv[1:3])
