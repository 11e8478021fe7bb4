"""Stand-in for ansible-test's get-pip bootstrap script, which it downloads from a host this network cannot reach.

ansible-test runs the script to put pip into each sanity virtualenv, passing pip-install arguments (the pinned
pip version among them). This does the same from the interpreter's bundled pip (ensurepip), then lets that pip
install what ansible-test asked for from the package index.
"""
import ensurepip
import runpy
import sys

import os

config_file = os.environ.get("PIP_CONFIG_FILE")
ensurepip.bootstrap()
# ensurepip points PIP_CONFIG_FILE at /dev/null; the install below must see the machine's pip config (index, CA).
if config_file is None:
    os.environ.pop("PIP_CONFIG_FILE", None)
else:
    os.environ["PIP_CONFIG_FILE"] = config_file
# get-pip's own flags (it would otherwise also install setuptools and wheel); pip install does not know them.
sys.argv = ["pip", "install"] + [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
