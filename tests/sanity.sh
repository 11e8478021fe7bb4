#!/usr/bin/env bash
# ansible-test sanity on a copy of the collection laid out as ansible_collections/azure_vm/extensions.
# ansible-test installs its pinned linters (--requirements) into a virtualenv of its own under .build, so no
# docker is needed and the project venv's versions (ansible-lint, yamllint) are not disturbed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# SANITY_VENV: a virtualenv that already has another ansible-core (make sanity-lowest / sanity-newest pass the
# matrix's venvs); sanity then runs on that venv's Python. By default: python3 with tests/requirements.txt's pin.
if [ -n "${SANITY_VENV:-}" ]; then
  sanity_venv=$SANITY_VENV
  if [ ! -x "$sanity_venv/bin/ansible-test" ]; then
    echo "SANITY_VENV=$sanity_venv has no ansible-test (build it with make sanity-lowest or sanity-newest)" >&2
    exit 1
  fi
else
  ansible_core=$(grep -E '^ansible-core==' "$root/tests/requirements.txt")
  sanity_venv=$root/.build/sanity-venv
  if [ ! -x "$sanity_venv/bin/ansible-test" ] || [ "ansible-core==$("$sanity_venv/bin/python" -c \
       'from ansible.release import __version__; print(__version__)' 2>/dev/null)" != "$ansible_core" ]; then
    python3 -m venv "$sanity_venv"
    "$sanity_venv/bin/pip" install -q "$ansible_core"
  fi
fi
python_version=$("$sanity_venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# ansible-test bootstraps pip in its sanity venvs with a script it downloads; give it the offline stand-in.
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',\$/\1/p" "$("$sanity_venv/bin/python" -c 'import ansible_test,os;print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py")
mkdir -p ~/.ansible/test/cache
cp "$root/tests/sanity/get_pip_offline.py" ~/.ansible/test/cache/get_pip_"${pip_version//./_}".py
sanity_copy=${SANITY_VENV:+$SANITY_VENV/collection}
dest=${sanity_copy:-$root/.build/sanity}/ansible_collections/azure_vm/extensions
rm -rf "$dest"
mkdir -p "$dest"
# Only what git tracks or would track: the same files a clean clone has.
(cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dest")
cd "$dest"
git init -q && git add -A  # ansible-test lists the collection's files through git
PATH=$sanity_venv/bin:$PATH "$sanity_venv/bin/ansible-test" sanity --requirements --python "$python_version" --color no "$@"
