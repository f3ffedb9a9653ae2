#!/usr/bin/env bash
# scripts/bench.sh: zkmw's benchmark. Builds release binaries, starts a
# fresh ZooKeeper of its own on 127.0.0.1:${ZKMW_BENCH_PORT:-2381} (empty data
# folder; stopped and wiped at the end), and runs scripts/bench.py, which
# prints every figure next to a baseline measured in the same run, then one
# summary line. Loopback only; every process it starts is stopped.
#
#   scripts/bench.sh           full run (about 5-10 minutes on 2 cores)
#   scripts/bench.sh --short   a small smoke run, as CI does
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${ZKMW_BENCH_PORT:-2381}"
LOG_DIR=".zk/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$LOG_DIR"

echo "== bench: building release binaries"
cargo build --release --quiet --bin zkmw --example ceiling --example await_results --example round_trips

# A fresh server for every run: the figures must not depend on what earlier
# runs left behind (a grown tree slows ZooKeeper down, and can fill its heap).
ZK_DATA=".zk/standalone-$PORT/data"
ZKMW_ZK_PORT="$PORT" scripts/zk.sh stop >/dev/null 2>&1 || true
rm -rf "$ZK_DATA"
ZKMW_ZK_PORT="$PORT" scripts/zk.sh start >/dev/null
cleanup() {
  ZKMW_ZK_PORT="$PORT" scripts/zk.sh stop >/dev/null 2>&1 || true
  rm -rf "$ZK_DATA"
}
trap cleanup EXIT

echo "== bench: logs in $LOG_DIR"
python3 scripts/bench.py --zk "127.0.0.1:$PORT" --port "$PORT" --log-dir "$LOG_DIR" \
  --zk-pid "$(cat ".zk/standalone-$PORT/zookeeper.pid")" "$@"
