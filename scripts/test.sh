#!/usr/bin/env bash
# scripts/test.sh: the whole test suite against real ZooKeeper servers, leaving
# nothing running behind it. Works from any directory. Installs the Debian
# packages the tests need when missing (scripts/packages.sh).
#
#   scripts/test.sh [ARGS...]    builds, then runs `cargo test --all-targets ARGS...`
#                                (e.g. scripts/test.sh -- --test-threads=4)
#
# Everything of one run lives in its run folder, .zk/test-<time>-<pid>/ (git-ignored):
# - zk/: the run's own standalone ZooKeeper, on a free port (the tests get it as
#   ZKMW_TEST_ZK). A ZKMW_TEST_ZK you set is used instead, and left alone.
# - tmp/: the tests' files (env ZKMW_TEST_RUN_DIR), among them the servers some tests
#   start for themselves on free ports (an ensemble, TLS servers) and stop when they end.
# On exit (tests passed or failed, Ctrl-C, SIGTERM) it stops the tests if they still
# run (their whole process group), then every server in the run folder (by pid file),
# then kills any process whose command line still names the folder. The folder is
# removed when the tests passed, and kept for its logs when not (servers' data
# removed). So two checkouts, or two runs of one, can test at once.
# Exits with cargo's exit code (130 on SIGINT, 143 on SIGTERM).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN="$PWD/.zk/test-$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$RUN/tmp"
export ZKMW_TEST_RUN_DIR="$RUN"
TESTS_PGID=""   # the process group of `cargo test`, once started

say() { echo "== test.sh: $*"; }

# Stop what is left of process group PGID: TERM, then KILL after 10 s.
# shellcheck disable=SC2317  # run by cleanup
stop_group() { # pgid
  local deadline=$((SECONDS + 10))
  kill -0 -- "-$1" 2>/dev/null || return 0
  kill -TERM -- "-$1" 2>/dev/null
  while kill -0 -- "-$1" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  kill -KILL -- "-$1" 2>/dev/null
}

# shellcheck disable=SC2317  # run by the traps
cleanup() {
  local rc=$? left cfg
  trap - EXIT INT TERM HUP
  set +e
  if [ -n "$TESTS_PGID" ]; then
    stop_group "$TESTS_PGID"
    wait "$TESTS_PGID" 2>/dev/null
  fi
  say "stopping the servers of this run"
  ZKMW_ZK_DIR="$RUN" scripts/zk.sh stop-all
  left="$(ZKMW_ZK_DIR="$RUN" scripts/zk.sh procs)"
  if [ -n "$left" ]; then
    say "killing what still names $RUN:"
    echo "$left"
    # shellcheck disable=SC2046  # one pid per word
    kill -KILL $(cut -d' ' -f1 <<<"$left") 2>/dev/null
  fi
  if [ "$rc" = 0 ]; then
    rm -rf "$RUN"
  else
    find "$RUN" -name zoo.cfg | while IFS= read -r cfg; do rm -rf "$(dirname "$cfg")/data"; done
    say "exit code $rc; logs kept in $RUN"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# What the tests need besides ZooKeeper: openssl (the TLS tests' CA) and
# chromium (the status page's browser test); installed when missing.
scripts/packages.sh zookeeper openssl chromium

if [ -z "${ZKMW_TEST_ZK:-}" ]; then
  port="$(scripts/zk.sh free-ports 1)"
  say "ZooKeeper of this run: 127.0.0.1:$port (scripts/zk.sh start, files in $RUN/zk)"
  ZKMW_ZK_DIR="$RUN/zk" ZKMW_ZK_PORT="$port" scripts/zk.sh start
  export ZKMW_TEST_ZK="127.0.0.1:$port"
else
  say "ZooKeeper: ZKMW_TEST_ZK=$ZKMW_TEST_ZK (yours: used and left alone)"
fi

say "cargo build --all-targets"
cargo build --all-targets

say "cargo test --all-targets $* (ZKMW_TEST_ZK=$ZKMW_TEST_ZK)"
set -m  # a process group of its own, which cleanup can stop whole
cargo test --all-targets "$@" &
TESTS_PGID=$!
set +m
rc=0
wait "$TESTS_PGID" || rc=$?
exit "$rc"
