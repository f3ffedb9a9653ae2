#!/usr/bin/env bash
# scripts/deploy-rehearsal.sh: runs the steps of docs/deploy.md on this one machine,
# loopback ports standing in for the hosts: a 3-node ZooKeeper ensemble, digest
# credentials, two masters and three workers started as their systemd units start
# them (the environment file, then ExecStart), cluster settings, losing one
# ZooKeeper node, a rolling upgrade of every worker and both masters while 30 tasks
# run (it fails unless each ran exactly once and exited 0), a backup of the cluster
# settings and its restore, the monitoring reads, and zkmw over TLS.
#
# It prints each command ("$ ...") and what it printed: the guide's transcripts are
# taken from it. Its files are in ${ZKMW_REHEARSAL_DIR:-/tmp/zkmw-rehearsal} (made
# anew); ZooKeeper on client ports 2381-2383 (peer 2981-2983, election 3981-3983)
# and a TLS server on 2391/2392. Everything it started is stopped when it exits.
# shellcheck disable=SC2016  # conditions in single quotes expand when tried, on purpose
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
D="${ZKMW_REHEARSAL_DIR:-/tmp/zkmw-rehearsal}"
rm -rf "$D"
mkdir -p "$D/bin" "$D/etc" "$D/log" "$D/backup" "$D/man"
export ZKMW_ZK_DIR="$D/zk"
export ZKMW_ENSEMBLE_PORTS=2381,2382,2383 ZKMW_ENSEMBLE_PEER_PORTS=2981,2982,2983
export ZKMW_ENSEMBLE_ELECTION_PORTS=3981,3982,3983
export ZKMW_TLS_PLAIN_PORT=2391 ZKMW_TLS_PORT=2392
declare -A PID=()

# Print a command, then run it (one string: the shell reads it as typed).
run() {
  printf '\n$ %s\n' "$*"
  eval "$*"
}

# Start a service in the background, as its unit does: ExecStart with the env file.
start() { # name zkmw-arguments...
  local name="$1"
  shift
  printf '\n$ %s  # ExecStart of its unit, in the background\n' "zkmw $*"
  "$D/bin/zkmw" "$@" 2>"$D/log/$name.log" &
  PID[$name]=$!
}

# Stop a service as systemctl stop does (SIGTERM to the main process), and wait for it.
stop() { # name
  local began=$SECONDS rc=0
  printf '\n$ kill -TERM %s  # systemctl stop: SIGTERM, then wait\n' "${PID[$1]}"
  kill -TERM "${PID[$1]}"
  wait "${PID[$1]}" || rc=$?
  unset "PID[$1]"
  echo "$1 exited $rc after $((SECONDS - began)) s"
}

# Wait until CONDITION (a shell command, expanded when tried) holds; fail after 60 s.
await() { # description condition
  local deadline=$((SECONDS + 60))
  until eval "$2" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "rehearsal: never $1" >&2; exit 1; }
    sleep 0.5
  done
}

live_workers() { "$D/bin/zkmw" status --json | jq -c '[.workers[] | select(.state == "live") | .id]'; }

cleanup() {
  local rc=$? name
  trap - EXIT
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  scripts/zk.sh ensemble-stop >/dev/null 2>&1 || true
  scripts/zk.sh tls-stop >/dev/null 2>&1 || true
  echo "rehearsal: exit code $rc (files in $D)"
  exit "$rc"
}
trap cleanup EXIT

echo "## 1. The ZooKeeper ensemble"
run scripts/zk.sh ensemble-start
run "grep -v '^#' $D/zk/ensemble-1/zoo.cfg"
run "cat $D/zk/ensemble-1/data/myid"

echo "## 2. Installing zkmw"
run cargo build --release --bin zkmw
run install -m 0755 target/release/zkmw "$D/bin/zkmw"
run "$D/bin/zkmw man > $D/man/zkmw.1"
run "for c in master worker submit wait cancel status tasks purge config; do $D/bin/zkmw man \$c > $D/man/zkmw-\$c.1; done"
run "$D/bin/zkmw completions bash > $D/etc/zkmw.bash"
run "ls $D/man"
run scripts/verify-units.sh

echo "## 3. Credentials and the environment file"
run "umask 077; printf 'zkmw:%s\n' \"\$(openssl rand -hex 16)\" > $D/etc/auth"
run "cat > $D/etc/zkmw.env <<EOF
ZKMW_ZK=127.0.0.1:2381,127.0.0.1:2382,127.0.0.1:2383
ZKMW_ROOT=/prod
ZKMW_AUTH_FILE=$D/etc/auth
RUST_LOG=info
EOF"
run "set -a; . $D/etc/zkmw.env; set +a"

echo "## 4. Two masters, three workers"
start m1 master --id m1
start m2 master --id m2
for w in w1 w2 w3; do start "$w" worker --id "$w"; done
await "three workers live" '[ "$(live_workers)" = "[\"w1\",\"w2\",\"w3\"]" ]'
run "$D/bin/zkmw" status
run "env -u ZKMW_AUTH_FILE $D/bin/zkmw status || echo exit code \$?"

echo "## 5. Cluster settings"
run "$D/bin/zkmw" config set drain-timeout 20s
run "$D/bin/zkmw" config set keep-results 10000
run "$D/bin/zkmw" config list
run "grep -h 'settings changed' $D/log/*.log"

echo "## 6. One ZooKeeper node down"
run scripts/zk.sh node-stop 1
run "$D/bin/zkmw submit --wait 'echo still served'"
run scripts/zk.sh node-start 1

echo "## 7. A rolling upgrade while tasks run"
ledger="$D/ledger"
: >"$ledger"
run "for i in \$(seq 30); do echo \"sleep 1; echo \\\$ZKMW_TASK_ID >> $ledger\"; done | $D/bin/zkmw submit --stdin > $D/tasks.txt"
run "wc -l < $D/tasks.txt"
run install -m 0755 target/release/zkmw "$D/bin/zkmw"  # the new version, on every host
for w in w1 w2 w3; do
  stop "$w"
  start "$w" worker --id "$w"
  await "$w live again" "live_workers | grep -q '\"$w\"'"
  run "$D/bin/zkmw" status
done
stop m2
start m2 master --id m2
await "m2 a standby again" '[ "$("$D/bin/zkmw" status --json | jq ".standbys | length")" = 1 ]'
stop m1
await "m2 active" '[ "$("$D/bin/zkmw" status --json | jq -r .master.id)" = m2 ]'
start m1 master --id m1
run "for t in \$(cat $D/tasks.txt); do $D/bin/zkmw wait \$t --wait-timeout 60s || echo \"\$t: exit \$?\"; done; echo all waited"
run "$D/bin/zkmw tasks --limit 30 --json | jq -r '.[] | \"\\(.state) \\(.exit_code)\"' | sort | uniq -c"
run "sort $ledger | uniq -c | awk '{print \$1}' | sort | uniq -c"
if [ "$(sort -u "$ledger" | wc -l)" != 30 ] || [ "$(wc -l <"$ledger")" != 30 ]; then
  echo "rehearsal: the upgrade lost or re-ran a task" >&2
  exit 1
fi
run "$D/bin/zkmw" status

echo "## 8. Backing up"
run "$D/bin/zkmw config list --json > $D/backup/config.json"
run "jq -r 'to_entries[] | select(.value.cluster != null) | \"\\(.key) \\(.value.cluster)\"' $D/backup/config.json"
run "ls $D/zk/ensemble-2/data/version-2"
run "tar -C $D/zk/ensemble-2/data -czf $D/backup/zk-node2.tgz version-2 && tar -tzf $D/backup/zk-node2.tgz"
run "jq -r 'to_entries[] | select(.value.cluster != null) | \"\\(.key) \\(.value.cluster)\"' $D/backup/config.json | while read -r key value; do $D/bin/zkmw --root /restored config set \"\$key\" \"\$value\"; done"
run "$D/bin/zkmw --root /restored config list | grep cluster"

echo "## 9. Monitoring"
run "$D/bin/zkmw status --json | jq -c '{master: .master.id, standbys: (.standbys | length), not_live: [.workers[] | select(.state != \"live\") | .id], pending: .tasks.pending}'"
run "exec 3<>/dev/tcp/127.0.0.1/2382; printf mntr >&3; grep -E 'zk_server_state|zk_synced_followers|zk_avg_latency|zk_num_alive_connections' <&3; exec 3<&-"

echo "## 10. TLS"
run scripts/zk.sh tls-start
run "grep -i secure $D/zk/tls/server-2392/zoo.cfg"
run "env -u ZKMW_AUTH_FILE $D/bin/zkmw --zk 127.0.0.1:2392 --root /tls --tls-ca $D/zk/tls/ca.pem status"
run "env -u ZKMW_AUTH_FILE $D/bin/zkmw --zk 127.0.0.1:2392 --root /tls --connect-timeout 3s status || echo exit code \$?"
