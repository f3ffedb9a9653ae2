#!/usr/bin/env bash
# scripts/bench.sh: zkmw's benchmark. Builds release binaries, starts a
# fresh ZooKeeper of its own on 127.0.0.1:${ZKMW_BENCH_PORT:-2381} (empty data
# folder; stopped and wiped at the end) and a three-node ensemble on free
# loopback ports (files in the run's log folder, stopped and its data wiped
# at the end), and runs scripts/bench.py, which prints every figure next to
# a baseline measured in the same run, then one summary line. Loopback
# only; every process it starts is stopped. ZKMW_BENCH_ZKMW=PATH measures
# another build of zkmw (an older commit's, say) with this bench;
# ZKMW_BENCH_AGAINST=PATH also measures the bulk throughput of that build
# and of this one taking turns (four rounds, medians).
#
#   scripts/bench.sh           full run (about 10-15 minutes on 2 cores)
#   scripts/bench.sh --short   a small smoke run, as CI does
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PORT="${ZKMW_BENCH_PORT:-2381}"
LOG_DIR=".zk/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$LOG_DIR"

echo "== bench: building release binaries"
cargo build --release --quiet --bin zkmw --example ceiling --example await_results --example round_trips \
  --example group_cost

# A fresh server for every run: the figures must not depend on what earlier
# runs left behind (a grown tree slows ZooKeeper down, and can fill its heap).
ZK_DATA=".zk/standalone-$PORT/data"
ZKMW_ZK_PORT="$PORT" scripts/zk.sh stop >/dev/null 2>&1 || true
rm -rf "$ZK_DATA"
# The ensemble: 9 free ports (client, peer, election), its files in the log folder.
read -r -a FREE <<<"$(scripts/zk.sh free-ports 9)"
export ZKMW_ZK_DIR="$PWD/$LOG_DIR/ensemble"
export ZKMW_ENSEMBLE_PORTS="${FREE[0]},${FREE[1]},${FREE[2]}"
export ZKMW_ENSEMBLE_PEER_PORTS="${FREE[3]},${FREE[4]},${FREE[5]}"
export ZKMW_ENSEMBLE_ELECTION_PORTS="${FREE[6]},${FREE[7]},${FREE[8]}"
cleanup() {
  ZKMW_ZK_DIR= ZKMW_ZK_PORT="$PORT" scripts/zk.sh stop >/dev/null 2>&1 || true
  rm -rf "$ZK_DATA"
  scripts/zk.sh ensemble-stop >/dev/null 2>&1 || true
  rm -rf "$ZKMW_ZK_DIR"/ensemble-*/data
}
trap cleanup EXIT
ZKMW_ZK_DIR= ZKMW_ZK_PORT="$PORT" scripts/zk.sh start >/dev/null
ENSEMBLE="$(scripts/zk.sh ensemble-start | tail -n 1)"
ENSEMBLE_PIDS="$(cat "$ZKMW_ZK_DIR"/ensemble-{1,2,3}/zookeeper.pid | paste -sd,)"

echo "== bench: logs in $LOG_DIR"
python3 scripts/bench.py --zk "127.0.0.1:$PORT" --port "$PORT" --log-dir "$LOG_DIR" \
  --zk-pid "$(cat ".zk/standalone-$PORT/zookeeper.pid")" \
  --ensemble "$ENSEMBLE" --ensemble-pids "$ENSEMBLE_PIDS" "$@"
