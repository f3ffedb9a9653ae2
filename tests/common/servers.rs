//! ZooKeeper servers of a test's own, run by `scripts/zk.sh` in a private
//! files folder (its `ZKMW_ZK_DIR`) on free ports, so that two runs of the
//! tests (two checkouts, or two at once of one) never share or stop each
//! other's servers.
//!
//! The folder is under the run folder of `scripts/test.sh` (env
//! `ZKMW_TEST_RUN_DIR`), whose cleanup stops whatever a killed test left
//! there, or else under the system temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::command::{describe, run_bounded};
use super::scratch::scratch_dir;

/// Longest a `zk.sh` start may take (its own start timeout is 60 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(100);

/// A private files folder for `scripts/zk.sh`. Dropping it stops every
/// server started in it (`zk.sh stop-all`) and removes the folder, kept
/// (with the servers' logs) when the test is failing. A folder of the
/// caller's ([`ZkServers::at`]) keeps the servers' logs in any case.
pub struct ZkServers {
    /// The folder (`ZKMW_ZK_DIR` of every `zk.sh` run through this value).
    pub dir: PathBuf,
    /// True when the folder is the caller's.
    kept: bool,
}

impl ZkServers {
    /// A new, empty folder named after `name`.
    pub fn new(name: &str) -> ZkServers {
        ZkServers {
            dir: scratch_dir(&format!("zk-{name}")),
            kept: false,
        }
    }

    /// The caller's folder `dir`: when dropped, its servers are stopped and
    /// only their data is removed (kept too while the thread panics).
    pub fn at(dir: PathBuf) -> ZkServers {
        ZkServers { dir, kept: true }
    }

    /// `scripts/zk.sh ARGS` with these `env` settings (ports); it must
    /// succeed within [`SCRIPT_LIMIT`].
    pub fn zk_sh(&self, env: &[(&str, String)], args: &[&str]) {
        self.try_zk_sh(env, args).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Like [`ZkServers::zk_sh`], returning what went wrong instead.
    pub fn try_zk_sh(&self, env: &[(&str, String)], args: &[&str]) -> Result<(), String> {
        let out = run_bounded(self.command(env, args), SCRIPT_LIMIT);
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "`scripts/zk.sh {}` ({}) failed: {}",
            args.join(" "),
            self.dir.display(),
            describe(&out)
        ))
    }

    /// Stops every server of the folder and removes it (or, while the
    /// thread panics, says where it is kept). Never panics: it runs in
    /// drops and at exit.
    pub fn stop_and_remove(&self) {
        // zk.sh bounds each stop itself (TERM, then KILL).
        let _ = self.command(&[], &["stop-all"]).output();
        if std::thread::panicking() {
            eprintln!(
                "===== kept for inspection: ZooKeeper files in {}",
                self.dir.display()
            );
        } else if self.kept {
            self.remove_data();
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Removes the data folder of every server of the folder.
    fn remove_data(&self) {
        let servers = std::fs::read_dir(&self.dir).into_iter().flatten();
        for server in servers.filter_map(Result::ok) {
            let _ = std::fs::remove_dir_all(server.path().join("data"));
        }
    }

    fn command(&self, env: &[(&str, String)], args: &[&str]) -> Command {
        let mut cmd = Command::new(script());
        cmd.args(args).env("ZKMW_ZK_DIR", &self.dir);
        for (name, value) in env {
            cmd.env(name, value);
        }
        cmd
    }
}

impl Drop for ZkServers {
    fn drop(&mut self) {
        self.stop_and_remove();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/zk.sh")
}

/// A standalone server of a test's own, to stop and start at will (a
/// ZooKeeper restart under running roles).
pub struct Standalone {
    servers: ZkServers,
    port: u16,
}

impl Standalone {
    /// Starts a standalone server on a free port, in a folder of its own.
    pub fn start(name: &str) -> Standalone {
        let server = Standalone {
            servers: ZkServers::new(name),
            port: super::ports::free_port(),
        };
        server.zk_sh("start");
        server
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its connect string.
    pub fn hosts(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops it (its sessions are kept in its data folder).
    pub fn stop(&self) {
        self.zk_sh("stop");
    }

    /// Starts it again after [`Standalone::stop`]; returns once it serves.
    pub fn restart(&self) {
        self.zk_sh("start");
    }

    fn zk_sh(&self, what: &str) {
        let port = ("ZKMW_ZK_PORT", self.port.to_string());
        self.servers.zk_sh(&[port], &[what]);
    }
}
