#!/usr/bin/env bash
# scripts/test.sh: start (or reuse) the local standalone ZooKeeper through scripts/zk.sh,
# build, then run `cargo test --all-targets "$@"` with ZKMW_TEST_ZK set for the
# integration tests. Exits with cargo's exit code. Works from any directory.
# The ZooKeeper server is left running for the next run; `scripts/zk.sh stop` stops it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export ZKMW_ZK_PORT="${ZKMW_ZK_PORT:-2181}"
export ZKMW_TEST_ZK="127.0.0.1:$ZKMW_ZK_PORT"

echo "== test.sh: ZooKeeper (scripts/zk.sh start)"
scripts/zk.sh start

echo "== test.sh: cargo build --all-targets"
cargo build --all-targets

echo "== test.sh: cargo test --all-targets $* (ZKMW_TEST_ZK=$ZKMW_TEST_ZK)"
exec cargo test --all-targets "$@"
