#!/usr/bin/env bash
# scripts/quickstart.sh: zkmw on this machine in one command.
#
#   scripts/quickstart.sh        start ZooKeeper, one master and two workers (in the
#                                background), submit a few jobs, show the status
#   scripts/quickstart.sh stop   stop the master, the workers and ZooKeeper
#
# Services log to .zk/quickstart/*.log; their pids are in .zk/quickstart/*.pid.
# The binary is built in release mode at target/release/zkmw.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN_DIR=.zk/quickstart
BIN=target/release/zkmw
export ZKMW_ZK="127.0.0.1:${ZKMW_ZK_PORT:-2181}"
export ZKMW_ROOT="${ZKMW_ROOT:-/zkmw}"

stop_services() {
  for pidfile in "$RUN_DIR"/*.pid; do
    [ -e "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      # A worker drains its running jobs first; wait for it, bounded.
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      echo "stopped $(basename "$pidfile" .pid) (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

if [ "${1:-}" = "stop" ]; then
  stop_services
  scripts/zk.sh stop
  exit 0
fi

echo "== 1. ZooKeeper"
scripts/zk.sh start

echo "== 2. Build zkmw (release)"
cargo build --release --quiet

echo "== 3. One master and two workers, in the background (logs in $RUN_DIR/)"
mkdir -p "$RUN_DIR"
stop_services
start() {
  local name=$1; shift
  nohup "$BIN" "$@" >"$RUN_DIR/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
  echo "started $name (pid $!): zkmw $*"
}
start master master --id m1
start w1 worker --id w1 --threads 4
start w2 worker --id w2 --threads 4

echo "== 4. Submit jobs"
for i in 1 2 3; do
  "$BIN" submit "echo job $i ran on \$(hostname) as \$ZKMW_TASK_ID"
done
echo "\$ zkmw submit --wait 'uname -sr; exit 3'"
set +e
"$BIN" submit --wait --wait-timeout 30s 'uname -sr; exit 3'
echo "(exit code $?: the job's own)"
set -e

echo "== 5. Status"
# The three jobs above were not waited for: give them a moment, bounded.
for _ in $(seq 1 50); do
  finished=$("$BIN" status --json | sed -n 's/.*"finished":\([0-9]*\).*/\1/p')
  [ "${finished:-0}" -ge 4 ] && break
  sleep 0.1
done
"$BIN" status
echo
echo "zkmw is running: try  $BIN submit --wait 'echo hi'  or  $BIN status --json"
echo "stop everything with: scripts/quickstart.sh stop"
