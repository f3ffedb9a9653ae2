#!/usr/bin/env bash
# scripts/verify-units.sh: checks the systemd units of contrib/systemd/ with
# `systemd-analyze verify`, failing on any complaint (verify exits 0 on some,
# e.g. an unknown Type=).
#
# The units name /usr/local/bin/zkmw, which verify requires to be executable,
# and a man page (Documentation=man:zkmw(1)). So that this passes in a fresh
# container, it verifies copies in a temporary folder with the binary path
# replaced by this checkout's build (target/debug/zkmw, built if missing),
# with --man=no. The zkmw user need not exist: verify does not look it up.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v systemd-analyze >/dev/null || {
  echo "verify-units.sh: systemd-analyze not found (Debian package: systemd)" >&2
  exit 1
}
[ -x target/debug/zkmw ] || cargo build --bin zkmw
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
for unit in contrib/systemd/*.service; do
  sed "s|/usr/local/bin/zkmw|$PWD/target/debug/zkmw|g" "$unit" >"$tmp/$(basename "$unit")"
done
said="$(cd "$tmp" && systemd-analyze verify --man=no ./*.service 2>&1)" || {
  echo "$said" >&2
  exit 1
}
if [ -n "$said" ]; then
  echo "$said" >&2
  echo "verify-units.sh: systemd-analyze verify complained (above)" >&2
  exit 1
fi
echo "verify-units.sh: $(cd contrib/systemd && echo ./*.service) pass systemd-analyze verify"
