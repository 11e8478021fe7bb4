#!/usr/bin/env bash
# Installs the Debian packages listed in tests/*/system-packages.txt that are not installed yet.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
wanted=$(cat "$root"/tests/*/system-packages.txt 2>/dev/null | sed 's/#.*//' | tr -s ' \n' '\n' | sort -u)
[ -n "$wanted" ] || exit 0
missing=()
for pkg in $wanted; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "not root: cannot install ${missing[*]}; the tests that need them will skip and say so" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
