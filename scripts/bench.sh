#!/usr/bin/env bash
# scripts/bench.sh: zkmw's benchmark. Builds release binaries, starts a
# ZooKeeper of its own on 127.0.0.1:${ZKMW_BENCH_PORT:-2381} (stopped again
# at the end if this script started it), and runs scripts/bench.py, which
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

started=0
if ! ZKMW_ZK_PORT="$PORT" scripts/zk.sh status >/dev/null 2>&1; then
  ZKMW_ZK_PORT="$PORT" scripts/zk.sh start >/dev/null
  started=1
fi
cleanup() {
  if [ "$started" = 1 ]; then ZKMW_ZK_PORT="$PORT" scripts/zk.sh stop >/dev/null || true; fi
}
trap cleanup EXIT

echo "== bench: logs in $LOG_DIR"
python3 scripts/bench.py --zk "127.0.0.1:$PORT" --port "$PORT" --log-dir "$LOG_DIR" \
  --zk-pid "$(cat ".zk/standalone-$PORT/zookeeper.pid")" "$@"
