#!/usr/bin/env bash
# ansible-test units | integration [args...] from a checkout, as contributors run it in any collection:
# ansible-test needs the collection at ansible_collections/azure_vm/extensions, so this copies what git tracks (the
# files a clean clone has) to .build/ansible-test-<command>/ansible_collections/azure_vm/extensions and runs it there with the
# project venv's ansible-test (--local: .venv has the collection's requirements and tests/requirements.txt, which
# include pytest-xdist and pytest-mock for ansible-test units). Integration targets (tests/integration/targets)
# start the Azure emulator themselves (setup_emulator). Results are copied back to tests/output/.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$root/.venv}
command=$1
shift
dest=$root/.build/ansible-test-$command/ansible_collections/azure_vm/extensions
rm -rf "$dest"
mkdir -p "$dest"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dest")
cd "$dest"
git init -q && git add -A  # ansible-test lists the collection's files through git
set +e
PATH=$venv/bin:$PATH "$venv/bin/ansible-test" "$command" --local --python 3.11 --color no "$@"
rc=$?
set -e
mkdir -p "$root/tests/output"
cp -r "$dest/tests/output/." "$root/tests/output/" 2>/dev/null || true
exit $rc
