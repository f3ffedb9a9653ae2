#!/usr/bin/env bash
# scripts/chaos.sh: the fault suite. Runs masters, workers and submitters
# against a 3-node ZooKeeper ensemble on 127.0.0.1 while killing, freezing and
# restarting them (and ZooKeeper nodes), then checks that every acknowledged
# task has exactly one result, every repeated run is one zkmw counted, and no
# two runs of one task overlapped.
#
# Usage: scripts/chaos.sh [--short] [options]
#   --short            CI mode: 300 tasks over 60 s (about 2-3 minutes in all)
#   --tasks N          tasks to submit in total      (env CHAOS_TASKS; 1200, short 300)
#   --load-seconds S   spread the submits over S s   (env CHAOS_LOAD_SECONDS; 300, short 60)
#   --submitters N     parallel submitters           (env CHAOS_SUBMITTERS; 4)
#   --masters N        masters                       (env CHAOS_MASTERS; 3)
#   --workers N        workers                       (env CHAOS_WORKERS; 4)
#   --threads N        threads per worker            (env CHAOS_THREADS; 4)
#   --freeze S         SIGSTOP a worker for S s      (env CHAOS_FREEZE; 5); past the
#                      worker's hold (2 x 3 s + 2 s) its jobs overlap their re-runs,
#                      a documented limit, and the run fails
#   --wait S           wait at most S s for results  (env CHAOS_WAIT; 120)
#   --zk HOSTS         use this ZooKeeper instead of the ensemble; no ZooKeeper
#                      chaos then                    (env CHAOS_ZK)
#   --seed N           seed of the chaos choices     (env CHAOS_SEED; random)
#   --zk-freeze        also SIGSTOP an ensemble node for 4-7 s at times
#                                                    (env CHAOS_ZK_FREEZE=1)
#   --no-build         do not build; run the suite last built, on target/release/zkmw
#   --log LEVEL        RUST_LOG of masters/workers   (env CHAOS_LOG; info)
#
# The suite is the Rust test tests/chaos.rs (on the harness of tests/common/); this
# script builds it (cargo test --release --test chaos --no-run), passes the options
# as the CHAOS_* variables above and runs it, which is the same as
#   CHAOS_SHORT=1 cargo test --release --test chaos -- --ignored --nocapture
# The suite prints its progress and its verdict: one line
# (chaos: submitted=... lost=0 ... unexplained=0 ... overlap=0 ...), then PASS or FAIL.
# Everything goes to the run folder .zk/chaos-<stamp>/ (git-ignored): role logs
# (logs/), chaos.log (every action, with wall and unix time and the pid hit), ledger
# (a "start" and, unless the job was killed, an "end" line per run), acked-*.txt,
# submit-failures-*.txt, report.txt (the details behind the verdict), results.jsonl,
# libtest.log (the test harness's own output) and zk/, the run's own ensemble on free
# ports, stopped at the end (its data kept when the run fails).
# Exit 0 on PASS, 1 on FAIL, 2 when the suite could not run to a verdict (setup
# failure), 130/143 on SIGINT/SIGTERM. Whatever the suite leaves running is stopped
# on exit (it stops everything itself; this checks it): the run's servers, then any
# process whose command line names the run folder.
set -uo pipefail

PROJECT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$PROJECT" || exit 2

BUILD=1
usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  option="$1"
  case "$1" in
    --short) export CHAOS_SHORT=1 ;;
    --tasks) export CHAOS_TASKS="${2-}"; shift ;;
    --load-seconds) export CHAOS_LOAD_SECONDS="${2-}"; shift ;;
    --submitters) export CHAOS_SUBMITTERS="${2-}"; shift ;;
    --masters) export CHAOS_MASTERS="${2-}"; shift ;;
    --workers) export CHAOS_WORKERS="${2-}"; shift ;;
    --threads) export CHAOS_THREADS="${2-}"; shift ;;
    --freeze) export CHAOS_FREEZE="${2-}"; shift ;;
    --wait) export CHAOS_WAIT="${2-}"; shift ;;
    --zk) export CHAOS_ZK="${2-}"; shift ;;
    --seed) export CHAOS_SEED="${2-}"; shift ;;
    --zk-freeze) export CHAOS_ZK_FREEZE=1 ;;
    --no-build) BUILD=0 ;;
    --log) export CHAOS_LOG="${2-}"; shift ;;
    -h|--help) usage ;;
    *) echo "chaos: unknown option '$1'" >&2; usage ;;
  esac
  [ $# -gt 0 ] || { echo "chaos: $option needs a value" >&2; usage; }
  shift
done

say() { echo "chaos: $*"; }
die() { echo "chaos: error: $*" >&2; exit 2; }

RUN="$PROJECT/.zk/chaos-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$RUN" || exit 2
export CHAOS_RUN_DIR="$RUN"
TEST_PID=""

# shellcheck disable=SC2317  # run by the traps
cleanup() {
  local rc=$? left
  trap - EXIT INT TERM
  if [ -n "$TEST_PID" ] && kill -0 "$TEST_PID" 2>/dev/null; then
    kill -TERM "$TEST_PID" 2>/dev/null  # the suite ends early, stopping what it started
    for _ in $(seq 600); do kill -0 "$TEST_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$TEST_PID" 2>/dev/null
  fi
  ZKMW_ZK_DIR="$RUN/zk" scripts/zk.sh stop-all >/dev/null 2>&1
  left="$(ZKMW_ZK_DIR="$RUN" scripts/zk.sh procs)"
  if [ -n "$left" ]; then
    echo "chaos: still running from $RUN (now killed):" >&2
    echo "$left" >&2
    # shellcheck disable=SC2046  # one pid per word
    kill -KILL $(cut -d' ' -f1 <<<"$left") 2>/dev/null
    [ "$rc" = 0 ] && rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$BUILD" = 1 ]; then
  say "building (cargo test --release --test chaos --no-run)"
  SUITE="$(cargo test --release --test chaos --no-run --message-format=json-render-diagnostics |
    grep '"name":"chaos"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
  [ -n "$SUITE" ] || die "cargo could not build the suite"
else
  SUITE=""  # the newest executable target/release/deps/chaos-<hash>
  for f in target/release/deps/chaos-*; do
    [[ "$f" != *.d && -x "$f" ]] || continue
    if [ -z "$SUITE" ] || [ "$f" -nt "$SUITE" ]; then SUITE="$f"; fi
  done
  [ -n "$SUITE" ] || die "no suite built yet (target/release/deps/chaos-*): drop --no-build"
  [ -x target/release/zkmw ] || die "target/release/zkmw not found: drop --no-build"
  export CHAOS_BIN="$PROJECT/target/release/zkmw"
fi

set -m  # a process group of its own: Ctrl-C comes here, and the suite gets a SIGTERM
"$SUITE" --ignored --exact chaos --nocapture --test-threads=1 >"$RUN/libtest.log" &
TEST_PID=$!
set +m
wait "$TEST_PID"
rc=$?
TEST_PID=""
case "$(tail -n 1 "$RUN/verdict" 2>/dev/null)" in
  "chaos: PASS"*) exit 0 ;;
  "chaos: FAIL"*) exit 1 ;;
esac
die "the suite reached no verdict (exit $rc); see $RUN/libtest.log"
