//! The integration-test harness: a real ZooKeeper server, the real `zkmw`
//! binary run as processes, one namespace (`--root`) per test. One file per
//! concern, all re-exported here (`common::Namespace`, `common::secs`, ...):
//!
//! - [`server`]: the shared server's connect string, [`zk`]: env
//!   `ZKMW_TEST_ZK` (which `scripts/test.sh` sets), else a standalone
//!   server of this test process, stopped when it exits.
//! - [`namespace`]: [`Namespace`], a unique root and a folder for logs and
//!   ledgers; builds commands for the binary, starts masters and workers
//!   as [`Proc`]s, runs `submit` and `status` with a bounded time. On a
//!   failing test it prints the services' logs; on a passing one it removes
//!   its znodes and files.
//! - [`command`]: short commands with a bounded time ([`run_bounded`]), and
//!   their output for failure messages ([`describe`]).
//! - [`process`]: [`Proc`], a started service, SIGKILLed and reaped on drop
//!   (with the job process groups it started), even when the test panics;
//!   [`Reaped`], a short-lived child, the same; what /proc says of any
//!   process ([`pid_alive`], [`group_alive`]).
//! - [`background`]: [`Background`], a helper thread looping until told to
//!   stop, stopped and joined on drop.
//! - [`ledger`]: [`Ledger`], a file jobs append their runs to, to count them
//!   and to find runs of one task that overlapped.
//! - [`wait`]: [`wait_until`], the bounded poll every "it eventually
//!   happens" uses, and the clocks.
//! - [`proxy::Proxy`]: a TCP proxy between zkmw and ZooKeeper whose link can
//!   be cut, black-holed or muted at run time (network faults).
//! - [`ensemble::Ensemble`]: a 3-node ensemble of the test's own, with nodes
//!   stopped, started and frozen by number.
//! - [`http`]: GETs and scrapes of zkmw's HTTP endpoint, and a headless
//!   Chromium to load its status page.
//! - [`servers::ZkServers`]: a private folder of `scripts/zk.sh` servers,
//!   stopped (and removed) on drop.
//! - [`scratch`]: where all of these keep their files ([`scratch_dir`]):
//!   under the run folder of `scripts/test.sh` (env `ZKMW_TEST_RUN_DIR`),
//!   or else under the system temp dir.
//! - [`ports`]: [`free_port`], a port nothing listens on, that no other
//!   test process on this machine takes meanwhile.

// Each test binary uses a part of the harness.
#![allow(dead_code, unused_imports)]

pub mod background;
pub mod command;
pub mod ensemble;
pub mod http;
pub mod ledger;
pub mod namespace;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod scratch;
pub mod server;
pub mod servers;
pub mod wait;

// What the tests have always found here; newer items by their module's path.
pub use background::{Background, StopOnDrop};
pub use command::{describe, parse_json, run_bounded, stderr, stdout, try_run_bounded};
pub use ledger::Ledger;
pub use namespace::{BIN, COMMAND_LIMIT, Namespace, SESSION_TIMEOUT, delete_tree};
pub use ports::free_port;
pub use process::{Proc, Reaped, group_alive, pid_alive};
pub use scratch::scratch_dir;
pub use server::zk;
pub use wait::{now_ms, secs, wait_until};
