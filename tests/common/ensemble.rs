//! The 3-node ensemble of `scripts/zk.sh` (client ports 2281-2283, or
//! `ZKMW_ENSEMBLE_PORTS`), for tests that stop and start ZooKeeper nodes.
//!
//! There is one ensemble per machine, so one test at a time may use it:
//! [`Ensemble::acquire`] takes an exclusive lock (`.zk/ensemble.lock`,
//! flock) for as long as the value lives; anything else that stops or
//! starts ensemble nodes while tests may run (`scripts/chaos.sh`, the
//! cleanup of `.ci/run`) should take the same lock. It starts the ensemble
//! when it is not running and leaves it running afterwards, with every node
//! it stopped started again (even when the test fails), for the next test
//! to reuse; `scripts/zk.sh ensemble-stop` (which `.ci/run` calls) stops it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{describe, run_bounded};

/// Longest a `zk.sh` ensemble command may take (its own start timeout is 60 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(100);

/// How long to wait for another test's hold on the ensemble.
const LOCK_WAIT: Duration = Duration::from_secs(300);

/// The running ensemble, held exclusively.
pub struct Ensemble {
    ports: [u16; 3],
    /// Nodes this test stopped and has not started again.
    down: BTreeSet<usize>,
    _lock: File,
}

fn project() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    project().join("scripts/zk.sh")
}

impl Ensemble {
    /// Takes the ensemble for this test: waits for the lock, then runs
    /// `scripts/zk.sh ensemble-start` (idempotent: a running ensemble is
    /// reused) and checks that every node serves.
    pub fn acquire() -> Ensemble {
        let dir = project().join(".zk");
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let path = dir.join("ensemble.lock");
        let lock = File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "another test held {} for {LOCK_WAIT:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let ports = ensemble_ports();
        let mut ensemble = Ensemble {
            ports,
            down: BTreeSet::new(),
            _lock: lock,
        };
        ensemble.zk_sh(&["ensemble-start"]);
        for n in 1..=3 {
            // A node left down by an aborted run: bring it back.
            if ensemble.mode(n).is_none() {
                ensemble.start_node(n);
            }
        }
        ensemble
    }

    /// The connect string of all three nodes.
    pub fn hosts(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `n`'s client port (n = 1..3).
    pub fn port(&self, n: usize) -> u16 {
        self.ports[n - 1]
    }

    /// `scripts/zk.sh node-stop N`: the node is stopped when this returns.
    pub fn stop_node(&mut self, n: usize) {
        self.down.insert(n);
        self.zk_sh(&["node-stop", &n.to_string()]);
    }

    /// `scripts/zk.sh node-start N`: the node serves (in a quorum) when
    /// this returns.
    pub fn start_node(&mut self, n: usize) {
        self.zk_sh(&["node-start", &n.to_string()]);
        self.down.remove(&n);
    }

    /// `leader` or `follower` when node `n` serves clients; `None` when it
    /// is down or has no quorum.
    pub fn mode(&self, n: usize) -> Option<String> {
        let srvr = four_letter_word(self.port(n), "srvr");
        srvr.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
            .filter(|m| m == "leader" || m == "follower")
    }

    /// The node that session `sid` is connected to now, from each node's
    /// `cons` (which lists its connections with their session ids).
    pub fn node_of_session(&self, sid: i64) -> Option<usize> {
        let needle = format!("sid={sid:#x}");
        (1..=3).find(|&n| {
            four_letter_word(self.port(n), "cons").lines().any(|l| {
                l.match_indices(&needle).any(|(at, _)| {
                    !l[at + needle.len()..].starts_with(|c: char| c.is_ascii_hexdigit())
                })
            })
        })
    }

    fn zk_sh(&self, args: &[&str]) {
        let mut cmd = Command::new(script());
        cmd.args(args);
        let out = run_bounded(cmd, SCRIPT_LIMIT);
        assert!(
            out.status.success(),
            "`scripts/zk.sh {}` failed: {}",
            args.join(" "),
            describe(&out)
        );
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        // Leave it whole for the next test, even after a failure.
        for n in std::mem::take(&mut self.down) {
            let mut cmd = Command::new(script());
            cmd.args(["node-start", &n.to_string()]);
            let _ = super::try_run_bounded(cmd, SCRIPT_LIMIT);
        }
    }
}

/// The ensemble's client ports, as `scripts/zk.sh` reads them.
fn ensemble_ports() -> [u16; 3] {
    let text =
        std::env::var("ZKMW_ENSEMBLE_PORTS").unwrap_or_else(|_| "2281,2282,2283".to_string());
    let ports: Vec<u16> = text
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad ZKMW_ENSEMBLE_PORTS {text:?}"))
        })
        .collect();
    ports
        .try_into()
        .unwrap_or_else(|_| panic!("ZKMW_ENSEMBLE_PORTS must list 3 ports, got {text:?}"))
}

/// Sends a four-letter word to 127.0.0.1:`port`; its reply, or "" when the
/// node does not answer.
pub fn four_letter_word(port: u16, word: &str) -> String {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let mut reply = String::new();
    if stream.write_all(word.as_bytes()).is_ok() {
        let _ = stream.read_to_string(&mut reply);
    }
    reply
}
