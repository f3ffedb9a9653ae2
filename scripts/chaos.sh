#!/usr/bin/env bash
# scripts/chaos.sh: the fault suite. Runs masters, workers and submitters
# against a 3-node ZooKeeper ensemble on 127.0.0.1 while killing, freezing and
# restarting them (and ZooKeeper nodes), then checks that every acknowledged
# task has exactly one result and every repeated run is one zkmw counted.
#
# Usage: scripts/chaos.sh [--short] [options]
#   --short            CI mode: 300 tasks over 60 s (about 2-3 minutes in all)
#   --tasks N          tasks to submit in total      (env CHAOS_TASKS; 1200, short 300)
#   --load-seconds S   spread the submits over S s   (env CHAOS_LOAD_SECONDS; 300, short 60)
#   --submitters N     parallel submitters           (env CHAOS_SUBMITTERS; 4)
#   --masters N        masters                       (env CHAOS_MASTERS; 3)
#   --workers N        workers                       (env CHAOS_WORKERS; 4)
#   --threads N        threads per worker            (env CHAOS_THREADS; 4)
#   --freeze S         SIGSTOP a worker for S s      (env CHAOS_FREEZE; 5)
#   --wait S           wait at most S s for results  (env CHAOS_WAIT; 120)
#   --zk HOSTS         use this ZooKeeper instead of the ensemble; no ZooKeeper
#                      chaos then                    (env CHAOS_ZK)
#   --seed N           seed of the chaos choices     (env CHAOS_SEED; random)
#   --zk-freeze        also SIGSTOP an ensemble node for 4-7 s at times
#                                                    (env CHAOS_ZK_FREEZE=1)
#   --no-build         do not run cargo build; use target/release/zkmw as is
#   --log LEVEL        RUST_LOG of masters/workers   (env CHAOS_LOG; info)
#
# Everything goes to .zk/chaos-<stamp>/ (git-ignored): role logs, chaos.log
# (every action, with wall and unix time and the pid hit), ledger (one line
# per job start, one "end ..." line per job that was not killed), acked-*.txt,
# submit-failures-*.txt, results.jsonl and report.txt (the details behind the
# summary line).
# The ensemble is this run's own: scripts/zk.sh starts it on free client, peer and
# election ports with its files in zk/ of the run folder, and stops it at the end
# (its data is removed when the run passes), so runs in other checkouts, and their
# tests, neither meet it nor stop its nodes.
# Exit 0 when lost = unexplained = phantom = 0 (and no unacceptable failure,
# odd result, duplicate acknowledgement or anomaly: a role that exited by
# itself, results still missing after --wait), else 1; 2 when the setup failed.
# Only processes this script started are ever signalled (by pid).
set -uo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT" || exit 2

# ---------- parameters ----------
SHORT=0
BUILD=1
TASKS="${CHAOS_TASKS:-}"
LOAD_SECONDS="${CHAOS_LOAD_SECONDS:-}"
SUBMITTERS="${CHAOS_SUBMITTERS:-4}"
MASTERS="${CHAOS_MASTERS:-3}"
WORKERS="${CHAOS_WORKERS:-4}"
THREADS="${CHAOS_THREADS:-4}"
FREEZE="${CHAOS_FREEZE:-5}"
WAIT_RESULTS="${CHAOS_WAIT:-120}"
EXTERNAL_ZK="${CHAOS_ZK:-}"
SEED="${CHAOS_SEED:-}"
ROLE_LOG="${CHAOS_LOG:-info}"
ZK_FREEZE="${CHAOS_ZK_FREEZE:-0}"

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --short) SHORT=1 ;;
    --tasks) TASKS="$2"; shift ;;
    --load-seconds) LOAD_SECONDS="$2"; shift ;;
    --submitters) SUBMITTERS="$2"; shift ;;
    --masters) MASTERS="$2"; shift ;;
    --workers) WORKERS="$2"; shift ;;
    --threads) THREADS="$2"; shift ;;
    --freeze) FREEZE="$2"; shift ;;
    --wait) WAIT_RESULTS="$2"; shift ;;
    --zk) EXTERNAL_ZK="$2"; shift ;;
    --seed) SEED="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --zk-freeze) ZK_FREEZE=1 ;;
    --log) ROLE_LOG="$2"; shift ;;
    -h|--help) usage ;;
    *) echo "chaos: unknown option '$1'" >&2; usage ;;
  esac
  shift
done
if [ "$SHORT" = 1 ]; then
  TASKS="${TASKS:-300}"; LOAD_SECONDS="${LOAD_SECONDS:-60}"
else
  TASKS="${TASKS:-1200}"; LOAD_SECONDS="${LOAD_SECONDS:-300}"
fi
for v in TASKS LOAD_SECONDS SUBMITTERS MASTERS WORKERS THREADS FREEZE WAIT_RESULTS; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || { echo "chaos: $v must be a positive integer, got '${!v}'" >&2; exit 2; }
done
SEED="${SEED:-$$}"
RANDOM="$SEED"

# ---------- run folder, time, logging ----------
START_SECONDS=$SECONDS
STAMP="$(date +%Y%m%d-%H%M%S)-$$"
RUN="$PROJECT/.zk/chaos-$STAMP"
mkdir -p "$RUN/cwd" "$RUN/submit" || exit 2
LEDGER="$RUN/ledger"
: >"$LEDGER"
CHAOS_LOG="$RUN/chaos.log"

now_ms() { local t="${EPOCHREALTIME/[.,]/}"; echo $((t / 1000)); }
# "wall-clock unix-time": both, so logs can be matched against ledger times.
stamp() { local t="$EPOCHREALTIME"; printf '%s %s' "$(date -d "@${t%[.,]*}" +%T).${t#*[.,]}" "${t/,/.}"; }
# Every event (role start/exit, chaos action) goes to chaos.log with its time.
event() { echo "$(stamp) $*" >>"$CHAOS_LOG"; }
say() { echo "chaos: $*"; }
die() { echo "chaos: error: $*" >&2; echo "chaos: run folder: $RUN" >&2; exit 2; }

# True when PID exists and is not a zombie (our dead children stay zombies until reaped).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [ "$(sed -n 's/^.*) \(.\).*/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# The ensemble's files (every zk.sh call of this run gets ZKMW_ZK_DIR; ports below).
export ZKMW_ZK_DIR="$RUN/zk"

# ---------- cleanup: only what this script started ----------
ENSEMBLE_OURS=0   # 1 once this run started the ensemble (stopped at the end)
ZK_JOB_PID=""     # a running `zk.sh node-stop|node-start` of ours
FROZEN_SLOT=""    # worker slot stopped with SIGSTOP
ZK_FROZEN_PID=""  # ensemble node (java) stopped with SIGSTOP
declare -a M_PID W_PID S_PID

# Signal PID and, depth first, its descendants (all started by us).
kill_tree() { # signal pid
  local child
  for child in $(pgrep -P "$2" 2>/dev/null); do kill_tree "$1" "$child"; done
  kill "-$1" "$2" 2>/dev/null
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
  local rc=$? pid deadline n
  trap - EXIT INT TERM
  set +e
  disown -a  # bash still reaps them; we poll with alive
  if [ -n "$FROZEN_SLOT" ] && [ -n "${W_PID[FROZEN_SLOT]:-}" ]; then
    kill -CONT "${W_PID[FROZEN_SLOT]}" 2>/dev/null
  fi
  [ -n "$ZK_FROZEN_PID" ] && kill -CONT "$ZK_FROZEN_PID" 2>/dev/null
  for pid in "${S_PID[@]}"; do [ -n "$pid" ] && kill_tree TERM "$pid"; done
  for pid in "${M_PID[@]}" "${W_PID[@]}"; do
    [ -n "$pid" ] && alive "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  deadline=$((SECONDS + 10))
  for pid in "${M_PID[@]}" "${W_PID[@]}" "${S_PID[@]}"; do
    [ -n "$pid" ] || continue
    while alive "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    alive "$pid" && kill_tree KILL "$pid"
  done
  # A zk.sh node-stop/node-start of ours in flight finishes first (it is bounded).
  deadline=$((SECONDS + 90))
  while [ -n "$ZK_JOB_PID" ] && alive "$ZK_JOB_PID" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  if [ "$ENSEMBLE_OURS" = 1 ]; then
    scripts/zk.sh stop-all >>"$RUN/zk.log" 2>&1 || echo "chaos: zk.sh stop-all failed; see $RUN/zk.log" >&2
    [ "$rc" = 0 ] && rm -rf "$ZKMW_ZK_DIR"/ensemble-*/data
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------- binary and ZooKeeper ----------
node_pid() { cat "$ZKMW_ZK_DIR/ensemble-$1/zookeeper.pid" 2>/dev/null; }
# "SERVING UP": ensemble nodes in leader/follower mode, and nodes answering imok.
ensemble_counts() {
  local out
  out="$(scripts/zk.sh ensemble-status 2>/dev/null)"
  echo "$(grep -c -E 'mode: (leader|follower)' <<<"$out") $(grep -c ': imok' <<<"$out")"
}

if [ "$BUILD" = 1 ]; then
  say "building (cargo build --release)"
  cargo build --release --quiet || die "cargo build --release failed"
fi
[ -x target/release/zkmw ] || die "target/release/zkmw not found (build it, or drop --no-build)"
# Our own copy: a rebuild by someone else during the run must not change the roles we restart.
mkdir -p "$RUN/bin" || die "cannot create $RUN/bin"
cp target/release/zkmw "$RUN/bin/zkmw" || die "cannot copy the binary"
BIN="$RUN/bin/zkmw"
{ # What was tested: others may be editing src/ while this runs.
  echo "git HEAD: $(git rev-parse HEAD 2>/dev/null)"
  echo "binary: $(sha256sum "$BIN" | cut -d' ' -f1) built $(date -r target/release/zkmw '+%F %T')"
  echo "uncommitted changes:"; git status --short 2>/dev/null
} >"$RUN/build-info.txt"

if [ -n "$EXTERNAL_ZK" ]; then
  ZK="$EXTERNAL_ZK"
  ZK_CHAOS=0
else
  ZK_CHAOS=1
  ports="$(scripts/zk.sh free-ports 9)" || die "zk.sh free-ports failed"
  read -r -a ports <<<"$ports"
  export ZKMW_ENSEMBLE_PORTS="${ports[0]},${ports[1]},${ports[2]}"
  export ZKMW_ENSEMBLE_PEER_PORTS="${ports[3]},${ports[4]},${ports[5]}"
  export ZKMW_ENSEMBLE_ELECTION_PORTS="${ports[6]},${ports[7]},${ports[8]}"
  ZK="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
  say "starting this run's ZooKeeper ensemble on $ZK (stopped at the end)"
  ENSEMBLE_OURS=1
  scripts/zk.sh ensemble-start >>"$RUN/zk.log" 2>&1 || die "zk.sh ensemble-start failed; see $RUN/zk.log"
fi

export ZKMW_ZK="$ZK"
ZKMW_ROOT="/chaos-$$-$(date +%s)"
export ZKMW_ROOT
export ZKMW_SESSION_TIMEOUT=3s
export ZKMW_TICK=1s
export LC_ALL=C
say "run folder $RUN; root $ZKMW_ROOT; zk $ZK; seed $SEED"
say "tasks=$TASKS over ${LOAD_SECONDS}s by $SUBMITTERS submitters; masters=$MASTERS workers=$WORKERS x $THREADS threads"
event "run start root=$ZKMW_ROOT zk=$ZK seed=$SEED tasks=$TASKS load=${LOAD_SECONDS}s"

# ---------- roles ----------
# Slots 1..N; *_PID is the live process (empty when down), *_KILLED the pid we
# killed on purpose (so its exit is expected), *_UP_AT when it may restart.
declare -a M_GEN M_KILLED W_KILLED W_UP_AT
for ((i = 1; i <= MASTERS; i++)); do M_PID[i]=""; M_GEN[i]=0; M_KILLED[i]=""; done
for ((i = 1; i <= WORKERS; i++)); do W_PID[i]=""; W_KILLED[i]=""; W_UP_AT[i]=0; done

start_master() { # slot
  local slot=$1 id
  M_GEN[slot]=$((M_GEN[slot] + 1))
  id="m$slot-${M_GEN[slot]}"
  echo "=== $(stamp) chaos.sh starts master $id" >>"$RUN/master-$slot.log"
  RUST_LOG="$ROLE_LOG" "$BIN" master --id "$id" >>"$RUN/master-$slot.log" 2>&1 </dev/null &
  M_PID[slot]=$!
  event "start master $id pid=${M_PID[slot]}"
}

start_worker() { # slot
  local slot=$1
  mkdir -p "$RUN/cwd/w$slot"
  echo "=== $(stamp) chaos.sh starts worker w$slot" >>"$RUN/worker-$slot.log"
  # Its own working directory: jobs write its name into the ledger.
  (cd "$RUN/cwd/w$slot" && RUST_LOG="$ROLE_LOG" exec "$BIN" worker --id "w$slot" \
    --threads "$THREADS" --drain-timeout 2s) >>"$RUN/worker-$slot.log" 2>&1 </dev/null &
  W_PID[slot]=$!
  event "start worker w$slot pid=${W_PID[slot]}"
}

ANOMALIES=0
# Reap dead roles (logging how they ended) and restart those due.
supervise() {
  local i pid rc now
  now=$(now_ms)
  for ((i = 1; i <= MASTERS; i++)); do
    pid="${M_PID[i]}"
    if [ -n "$pid" ] && ! alive "$pid"; then
      if [ "$pid" = "${M_KILLED[i]}" ]; then
        event "master slot $i pid=$pid is gone (killed by chaos)"
      else
        { wait "$pid"; } 2>/dev/null; rc=$?
        event "ANOMALY master slot $i pid=$pid exited by itself rc=$rc (see master-$i.log)"
        ANOMALIES=$((ANOMALIES + 1))
      fi
      M_PID[i]=""
    fi
    [ -z "${M_PID[i]}" ] && start_master "$i"
  done
  for ((i = 1; i <= WORKERS; i++)); do
    pid="${W_PID[i]}"
    if [ -n "$pid" ] && ! alive "$pid"; then
      rc=killed
      if [ "$pid" != "${W_KILLED[i]}" ]; then { wait "$pid"; } 2>/dev/null; rc=$?; fi
      if [ "$rc" = killed ]; then
        event "worker w$i pid=$pid is gone (killed by chaos)"
      elif [ "$rc" = 125 ]; then
        # Restarted before its old session expired: "id already live". Retry soon.
        event "worker w$i pid=$pid exited rc=125 (id still live: old session not expired yet); retrying"
        W_UP_AT[i]=$((now + 1000))
      else
        event "ANOMALY worker w$i pid=$pid exited by itself rc=$rc (see worker-$i.log)"
        ANOMALIES=$((ANOMALIES + 1))
      fi
      W_PID[i]=""
    fi
    if [ -z "${W_PID[i]}" ] && [ "$now" -ge "${W_UP_AT[i]}" ]; then start_worker "$i"; fi
  done
}

# `zkmw status --json` of the cluster, or nothing.
cluster_json() { timeout 20 "$BIN" status --json 2>>"$RUN/status-errors.log"; }
# Print FIELD (a jq path) of the cluster status, or nothing.
cluster_field() { cluster_json | jq -r "$1" 2>/dev/null; }

# ---------- chaos actions ----------
ACTIONS=0
DOWN_WORKERS=0   # workers killed and not restarted yet, or frozen

count_down_workers() {
  local i n=0
  for ((i = 1; i <= WORKERS; i++)); do
    if [ -z "${W_PID[i]}" ] || [ "$i" = "$FROZEN_SLOT" ]; then n=$((n + 1)); fi
  done
  DOWN_WORKERS=$n
}

# A random live worker slot that is not frozen, or nothing.
pick_worker() {
  local tries i
  for tries in 1 2 3 4 5 6 7 8; do
    i=$((RANDOM % WORKERS + 1))
    if [ -n "${W_PID[i]}" ] && [ "$i" != "$FROZEN_SLOT" ] && alive "${W_PID[i]}"; then
      echo "$i"; return 0
    fi
    : "$tries"
  done
  return 1
}

KILLED_MASTERS=" "   # every master pid killed so far
kill_active_master() {
  local pid i
  pid="$(cluster_field '.master.pid // empty')"
  if [ -z "$pid" ]; then event "kill-master: skipped (no active master, or status failed)"; return; fi
  if [[ "$KILLED_MASTERS" == *" $pid "* ]]; then
    # Its ephemeral /master lives on until its session expires.
    event "kill-master: skipped (/master still names killed master pid=$pid: session not expired yet)"
    return
  fi
  for ((i = 1; i <= MASTERS; i++)); do
    if [ "${M_PID[i]}" = "$pid" ]; then
      kill -KILL "$pid"
      disown "$pid"  # no "Killed" notice from bash; its end is expected
      M_KILLED[i]="$pid"
      KILLED_MASTERS="$KILLED_MASTERS$pid "
      ACTIONS=$((ACTIONS + 1))
      event "CHAOS kill -9 active master slot $i pid=$pid (a new one starts in its place)"
      return
    fi
  done
  event "ANOMALY kill-master: active master pid=$pid is not one of ours (${M_PID[*]})"
  ANOMALIES=$((ANOMALIES + 1))
}

kill_worker() {
  local i pid
  i="$(pick_worker)" || { event "kill-worker: skipped (no live worker to pick)"; return; }
  pid="${W_PID[i]}"
  kill -KILL "$pid"
  disown "$pid"
  W_KILLED[i]="$pid"
  W_UP_AT[i]=$(($(now_ms) + 1000 + RANDOM % 3000))
  ACTIONS=$((ACTIONS + 1))
  event "CHAOS kill -9 worker w$i pid=$pid (restart in 1-4 s)"
  echo "killed w$i $pid $(stamp)" >>"$RUN/victims.txt"
}

FROZEN_UNTIL=0
freeze_worker() {
  local i
  i="$(pick_worker)" || { event "freeze-worker: skipped (no live worker to pick)"; return; }
  kill -STOP "${W_PID[i]}"
  FROZEN_SLOT=$i
  FROZEN_UNTIL=$(($(now_ms) + FREEZE * 1000))
  ACTIONS=$((ACTIONS + 1))
  event "CHAOS SIGSTOP worker w$i pid=${W_PID[i]} for ${FREEZE}s"
  echo "frozen w$i ${W_PID[i]} $(stamp)" >>"$RUN/victims.txt"
}

thaw_worker() {
  local i=$FROZEN_SLOT
  kill -CONT "${W_PID[i]}" 2>/dev/null
  event "CHAOS SIGCONT worker w$i pid=${W_PID[i]}"
  FROZEN_SLOT=""
}

# ZooKeeper node bounce, one node at a time: stopping -> down -> starting -> idle.
ZK_PHASE=idle
ZK_NEXT_AT=0
ZK_START_FAILS=0
ZK_NODE=""
# True when all 3 ensemble nodes serve: a node is taken down only then, so the
# ensemble keeps its quorum (a node still electing, a frozen one, does not serve).
ensemble_whole() {
  local serving up
  read -r serving up < <(ensemble_counts)
  [ "$serving" = 3 ] && [ "$up" = 3 ]
}

zk_bounce_start() {
  if ! ensemble_whole; then event "zk-stop: skipped (not all 3 nodes serving)"; return; fi
  ZK_NODE=$((RANDOM % 3 + 1))
  ZK_PHASE=stopping
  ACTIONS=$((ACTIONS + 1))
  event "CHAOS zk.sh node-stop $ZK_NODE (pid $(node_pid "$ZK_NODE"))"
  zk_sh node-stop "$ZK_NODE"
}

# Run `zk.sh ARGS` in the background; its output goes to zk-step.log, then zk.log.
zk_sh() {
  scripts/zk.sh "$@" >"$RUN/zk-step.log" 2>&1 &
  ZK_JOB_PID=$!
}

# --zk-freeze: SIGSTOP the java of one node of our own ensemble (checked by its
# command line), so clients see timeouts rather than closed connections.
zk_freeze_start() {
  local n pid
  if ! ensemble_whole; then event "zk-freeze: skipped (not all 3 nodes serving)"; return; fi
  n=$((RANDOM % 3 + 1))
  pid="$(node_pid "$n")"
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "QuorumPeerMain $ZKMW_ZK_DIR/ensemble-$n/zoo.cfg"; then
    event "zk-freeze: skipped (no live node $n of ours)"; return
  fi
  kill -STOP "$pid"
  ZK_NODE=$n
  ZK_FROZEN_PID=$pid
  ZK_PHASE=frozen
  ZK_NEXT_AT=$(($(now_ms) + 4000 + RANDOM % 3000))
  ACTIONS=$((ACTIONS + 1))
  event "CHAOS SIGSTOP zk node $n pid=$pid"
}

# Advance the ZooKeeper bounce when its step is done; FORCE=1 starts a down node now.
zk_bounce_step() { # force
  local rc
  case "$ZK_PHASE" in
    stopping|starting)
      alive "$ZK_JOB_PID" && return
      { wait "$ZK_JOB_PID"; } 2>/dev/null; rc=$?
      ZK_JOB_PID=""
      cat "$RUN/zk-step.log" >>"$RUN/zk.log"
      if [ "$ZK_PHASE" = stopping ] && grep -q 'not running' "$RUN/zk-step.log"; then
        # Not a node zk.sh started (its pid file gone?): leave ZooKeeper alone.
        event "zk node $ZK_NODE was not stopped: not started by zk.sh; no more ZooKeeper chaos this run"
        ZK_PHASE=idle; ZK_CHAOS=0
      elif [ "$ZK_PHASE" = stopping ]; then
        event "zk node $ZK_NODE stopped (rc=$rc)"
        ZK_PHASE=down
        ZK_START_FAILS=0
        ZK_NEXT_AT=$(($(now_ms) + 3000 + RANDOM % 4000))
      elif [ "$rc" = 0 ]; then
        event "zk node $ZK_NODE serving again"
        ZK_PHASE=idle
      elif [ "$ZK_START_FAILS" -lt 4 ]; then
        ZK_START_FAILS=$((ZK_START_FAILS + 1))
        event "zk.sh node-start $ZK_NODE failed rc=$rc (see zk.log); retrying in 3 s"
        ZK_PHASE=down
        ZK_NEXT_AT=$(($(now_ms) + 3000))
      else
        event "ANOMALY zk.sh node-start $ZK_NODE failed 5 times (see zk.log); no more ZooKeeper chaos this run"
        ANOMALIES=$((ANOMALIES + 1))
        ZK_PHASE=idle; ZK_CHAOS=0
      fi
      ;;
    frozen)
      if [ "${1:-0}" = 1 ] || [ "$(now_ms)" -ge "$ZK_NEXT_AT" ]; then
        kill -CONT "$ZK_FROZEN_PID"
        event "CHAOS SIGCONT zk node $ZK_NODE pid=$ZK_FROZEN_PID"
        ZK_FROZEN_PID=""
        ZK_PHASE=idle
      fi
      ;;
    down)
      if [ "${1:-0}" = 1 ] || [ "$(now_ms)" -ge "$ZK_NEXT_AT" ]; then
        event "CHAOS zk.sh node-start $ZK_NODE"
        zk_sh node-start "$ZK_NODE"
        ZK_PHASE=starting
      fi
      ;;
  esac
}

# One random action, within limits: at most 2 workers out at once, one
# frozen worker, one ZooKeeper node.
chaos_action() {
  count_down_workers
  case $((RANDOM % 4)) in
    0) kill_active_master ;;
    1) if [ "$DOWN_WORKERS" -lt 2 ]; then kill_worker; else kill_active_master; fi ;;
    2) if [ -z "$FROZEN_SLOT" ] && [ "$DOWN_WORKERS" -lt 2 ]; then freeze_worker; else kill_active_master; fi ;;
    3) if [ "$ZK_CHAOS" = 1 ] && [ "$ZK_PHASE" = idle ]; then
         if [ "$ZK_FREEZE" = 1 ] && [ $((RANDOM % 2)) = 0 ]; then
           zk_freeze_start
         else
           zk_bounce_start
         fi
       else
         kill_active_master
       fi ;;
  esac
}

# ---------- submitters ----------
# Submitter K submits N tasks paced over LOAD_SECONDS; "task-id marker" of each
# acknowledged one to acked-K.txt, each failure (exit code, stderr) to
# submit-failures-K.txt. Each job logs its start to the ledger, sleeps, logs its end.
submitter() { # k n
  local k=$1 n=$2 i marker t job out rc err start_us target_us now_us
  local acked="$RUN/acked-$k.txt" failures="$RUN/submit-failures-$k.txt"
  : >"$acked"; : >"$failures"
  start_us="${EPOCHREALTIME/[.,]/}"
  for ((i = 1; i <= n; i++)); do
    marker="$(printf 's%d-%05d' "$k" "$i")"
    # Sleep 0-1.5 s; one job in 20 sleeps 4-8 s, to outlive a killed or frozen worker's session.
    t=$((RANDOM % 16))
    [ $((RANDOM % 20)) = 0 ] && t=$((40 + RANDOM % 41))
    # Runs under the worker's `sh -c`: $$ is the job's pid, ${PWD##*/} the worker's
    # folder. The "end" line (not written when the job is killed) shows overlapping runs.
    # shellcheck disable=SC2016  # expanded by the job's shell, not here
    job="$(printf 'echo "$ZKMW_TASK_ID $ZKMW_ATTEMPT $$ ${PWD##*/} $(date +%%s.%%N) %s" >> %s; sleep %d.%d; echo "end $ZKMW_TASK_ID $ZKMW_ATTEMPT $$ $(date +%%s.%%N)" >> %s' \
      "$marker" "$LEDGER" $((t / 10)) $((t % 10)) "$LEDGER")"
    err="$RUN/submit/$marker.err"
    out="$(timeout 60 "$BIN" submit "$job" 2>"$err")"; rc=$?
    if [ "$rc" = 0 ] && [[ "$out" =~ ^task-[0-9]{10}$ ]]; then
      echo "$out $marker" >>"$acked"
      # Keep what a successful submit warned about (e.g. a create retried after a lost reply).
      if [ -s "$err" ]; then mv "$err" "$RUN/submit/$marker.warn"; else rm -f "$err"; fi
    else
      echo "$(stamp) $marker rc=$rc stdout=[$out] stderr=[$(tr '\n' ' ' <"$err")]" >>"$failures"
    fi
    target_us=$((start_us + i * LOAD_SECONDS * 1000000 / n))
    now_us="${EPOCHREALTIME/[.,]/}"
    if [ "$now_us" -lt "$target_us" ]; then
      sleep "$(printf '%d.%06d' $(((target_us - now_us) / 1000000)) $(((target_us - now_us) % 1000000)))"
    fi
  done
}

# ---------- the run ----------
for ((i = 1; i <= MASTERS; i++)); do start_master "$i"; done
for ((i = 1; i <= WORKERS; i++)); do start_worker "$i"; done

# Wait (bounded) for an active master and every worker.
wait_cluster() { # seconds
  local deadline=$((SECONDS + $1)) json
  while [ "$SECONDS" -lt "$deadline" ]; do
    supervise
    json="$(cluster_json)"
    if [ -n "$json" ] && [ "$(jq -r '.master != null' <<<"$json")" = true ] &&
       [ "$(jq -r '[.workers[] | select(.state == "live")] | length' <<<"$json")" -ge "$WORKERS" ]; then
      return 0
    fi
    sleep 0.5
  done
  return 1
}
wait_cluster 60 || die "no active master and $WORKERS workers after 60 s; see $RUN/*.log"
say "cluster up; submitting and making chaos"

per=$((TASKS / SUBMITTERS))
for ((k = 1; k <= SUBMITTERS; k++)); do
  n=$per
  [ "$k" = "$SUBMITTERS" ] && n=$((TASKS - per * (SUBMITTERS - 1)))
  submitter "$k" "$n" &
  S_PID[k]=$!
  event "start submitter $k pid=${S_PID[k]} tasks=$n"
done

# Chaos while the submitters run (bounded: LOAD_SECONDS + 90 s at most).
submitters_running() {
  local pid
  for pid in "${S_PID[@]}"; do alive "$pid" && return 0; done
  return 1
}
chaos_deadline=$((SECONDS + LOAD_SECONDS + 90))
next_action=$(($(now_ms) + 2000 + RANDOM % 3000))
last_progress=$SECONDS
while submitters_running && [ "$SECONDS" -lt "$chaos_deadline" ]; do
  supervise
  if [ -n "$FROZEN_SLOT" ] && [ "$(now_ms)" -ge "$FROZEN_UNTIL" ]; then thaw_worker; fi
  zk_bounce_step 0
  if [ "$(now_ms)" -ge "$next_action" ]; then
    chaos_action
    next_action=$(($(now_ms) + 2000 + RANDOM % 4000))
  fi
  if [ $((SECONDS - last_progress)) -ge 20 ]; then
    last_progress=$SECONDS
    say "$(cat "$RUN"/acked-*.txt 2>/dev/null | wc -l) acknowledged, $ACTIONS chaos actions so far"
  fi
  sleep 0.5
done
if submitters_running; then
  event "ANOMALY submitters still running after $((LOAD_SECONDS + 90)) s; stopping them"
  ANOMALIES=$((ANOMALIES + 1))
  for pid in "${S_PID[@]}"; do kill_tree TERM "$pid"; done
fi
for pid in "${S_PID[@]}"; do wait "$pid" 2>/dev/null; done
event "chaos stops after $ACTIONS actions"

# Undo what is still in effect: thaw, bring the ZooKeeper node back, restart roles.
[ -n "$FROZEN_SLOT" ] && thaw_worker
for ((i = 1; i <= WORKERS; i++)); do W_UP_AT[i]=0; done
settle_deadline=$((SECONDS + 90))
while [ "$ZK_PHASE" != idle ] && [ "$SECONDS" -lt "$settle_deadline" ]; do
  zk_bounce_step 1; supervise; sleep 0.5
done
[ "$ZK_PHASE" = idle ] || die "ZooKeeper node $ZK_NODE not serving again after 90 s; see $RUN/zk.log"
wait_cluster 60 || event "ANOMALY no active master and $WORKERS workers 60 s after chaos stopped"

# Wait (bounded) until nothing is pending, assigned or running and every acknowledged task has a result.
acked_count=$(cat "$RUN"/acked-*.txt | wc -l)
say "$acked_count acknowledged; waiting up to ${WAIT_RESULTS}s for their results"
wait_deadline=$((SECONDS + WAIT_RESULTS))
while :; do
  supervise
  json="$(cluster_json)"
  if [ -n "$json" ]; then
    open=$(jq -r '.tasks.pending + .tasks.assigned + .tasks.running' <<<"$json")
    finished=$(jq -r '.tasks.finished' <<<"$json")
    if [ "$open" = 0 ] && [ "$finished" -ge "$acked_count" ]; then break; fi
  fi
  if [ "$SECONDS" -ge "$wait_deadline" ]; then
    event "ANOMALY results still missing after ${WAIT_RESULTS}s: $json"
    say "results still missing after ${WAIT_RESULTS}s: $json"
    break
  fi
  sleep 2
done
cluster_json >"$RUN/final-status.json"
event "final status: $(cat "$RUN/final-status.json")"

# Verify every task one by one and print the summary line.
python3 "$PROJECT/scripts/chaos_ledger.py" "$RUN" "$BIN" "$((SECONDS - START_SECONDS))" "$ANOMALIES"
verdict=$?

# On phantoms, keep ZooKeeper's own record of every task create of this run
# (session, cxid, zxid, time) before the logs roll away: two creates of one
# marker from one session mean one submit stored its task twice.
if [ "$ZK_CHAOS" = 1 ] && grep -q ' phantom=[1-9]' "$RUN/report.txt" 2>/dev/null; then
  say "phantoms: dumping ZooKeeper transaction logs to $RUN/txn-creates.txt"
  zk_cp="/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar"
  dump_deadline=$((SECONDS + 180))
  find "$ZKMW_ZK_DIR"/ensemble-[123]/data/version-2 -name 'log.*' -newer "$RUN/build-info.txt" 2>/dev/null |
    while read -r f; do
      [ "$SECONDS" -lt "$dump_deadline" ] || break
      timeout 60 java -cp "$zk_cp" org.apache.zookeeper.server.persistence.TxnLogToolkit -d "$f" 2>/dev/null |
        grep -a "create2 $ZKMW_ROOT/tasks/task-" | sed -E 's|,\{"job".*(s[0-9]+-[0-9]{5}).*| [marker \1]|'
    done | sort -u -k10,10 >"$RUN/txn-creates.txt"  # field 10: the zxid (each node logs the same txn)
  markers="$(grep -o 'marker s[0-9]*-[0-9]*' "$RUN/report.txt" | sort -u | cut -d' ' -f2)"
  {
    echo; echo "== ZooKeeper's creates of the phantoms' markers (from txn-creates.txt)"
    for m in $markers; do grep -F "[marker $m]" "$RUN/txn-creates.txt"; done
  } >>"$RUN/report.txt"
fi
[ "$ANOMALIES" -gt 0 ] && say "$ANOMALIES anomalies logged (grep ANOMALY $CHAOS_LOG)"
if [ "$verdict" = 0 ]; then
  say "PASS ($ACTIONS chaos actions); run folder $RUN"
  exit 0
fi
say "FAIL: details in $RUN/report.txt (run folder $RUN)"
exit 1
