#!/usr/bin/env bash
# scripts/packages.sh PKG...: installs the Debian packages among PKG that are
# missing (one `apt-get update`, then one `apt-get install -y`), as root or
# through sudo; does nothing when all are installed. test.sh and .ci/run use it,
# so a fresh machine needs no step by hand.
set -euo pipefail

die() { echo "packages.sh: error: $*" >&2; exit 1; }

missing=()
for pkg in "$@"; do
  if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$pkg")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

command -v apt-get >/dev/null || die "missing Debian packages (${missing[*]}) and no apt-get to install them"
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "missing Debian packages (${missing[*]}); run as root or install sudo"
  sudo=(sudo)
fi
echo "packages.sh: installing ${missing[*]}"
"${sudo[@]}" apt-get update
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
