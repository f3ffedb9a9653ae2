#!/usr/bin/env bash
# scripts/tolerance.sh: how long a ZooKeeper outage zkmw rides out without
# killing a job, and how long each failover takes, with the settings in the
# environment (ZKMW_SESSION_TIMEOUT, ZKMW_TICK; the defaults otherwise).
# Builds the release binary, runs a ZooKeeper of its own on a free port in a
# folder of its own (stopped and removed at the end), and prints one line
# per figure (about 6 minutes). The figures in README come from it.
#
#   scripts/tolerance.sh [--outages 6,8,10,12,14,16]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="$(mktemp -d "${TMPDIR:-/tmp}/zkmw-tolerance-XXXXXX")"
PORT="$(scripts/zk.sh free-ports 1)"
export ZKMW_ZK_DIR="$RUN/zk" ZKMW_ZK_PORT="$PORT"
cleanup() {
  scripts/zk.sh stop-all >/dev/null 2>&1 || true
  rm -rf "$RUN"
}
trap cleanup EXIT

cargo build --release --quiet --bin zkmw
scripts/zk.sh start >/dev/null
mkdir -p "$RUN/logs"
python3 scripts/tolerance.py --zk "127.0.0.1:$PORT" --zk-port "$PORT" --zk-dir "$ZKMW_ZK_DIR" \
  --log-dir "$RUN/logs" "$@"
