#!/usr/bin/env bash
# Print the path of a CPython X.Y for the version-matrix virtualenvs (`make ci-extra`): the newest X.Y.* pyenv has
# installed (under `pyenv root`), else pythonX.Y on PATH. Missing: one line naming what to install, and exit 1.
#
#   bash tests/smoke/find_python.sh 3.13
set -euo pipefail
want=${1:?usage: find_python.sh X.Y}
works() {  # a real interpreter of that version (a pyenv shim for a version not selected fails here)
  "$1" -c "import sys, venv; sys.exit(sys.version_info[:2] != tuple(int(n) for n in '$want'.split('.')))" \
    >/dev/null 2>&1
}
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  while IFS= read -r dir; do
    if works "$dir/bin/python$want"; then echo "$dir/bin/python$want"; exit 0; fi
  done < <(compgen -G "$root/versions/$want.[0-9]*" | sort -V -r)
fi
if found=$(command -v "python$want") && works "$found"; then echo "$found"; exit 0; fi
echo "Python $want is missing: install it (pyenv install $want, or a python$want on PATH) for make ci-extra" >&2
exit 1
