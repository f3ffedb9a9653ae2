//! A 3-node ensemble of `scripts/zk.sh` of one test's own, for tests that
//! stop, start and freeze ZooKeeper nodes: free client, peer and election
//! ports and a private files folder (see [`super::servers`]), so another
//! run of the tests on this machine neither meets nor stops it. Dropping
//! the value stops every node, pass or fail.
//!
//! One ensemble at a time per test process: the tests using one ran one
//! after another when they shared the machine's only ensemble, and three
//! more JVMs beside three would starve the timing of both on 2 cores.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::ports::free_port;
use super::servers::ZkServers;

/// A running ensemble of this test's own.
pub struct Ensemble {
    /// Client ports of nodes 1..3.
    ports: [u16; 3],
    /// `zk.sh` settings naming its ports.
    env: Vec<(&'static str, String)>,
    /// Its files; dropped (every node stopped) before the turn is passed on.
    files: ZkServers,
    _turn: MutexGuard<'static, ()>,
}

impl Ensemble {
    /// Starts a new ensemble (`scripts/zk.sh ensemble-start` on 9 free
    /// ports) once no other test of this process holds one; every node
    /// serves when this returns.
    pub fn start() -> Ensemble {
        Ensemble::start_with(ZkServers::new("ensemble"))
    }

    /// Like [`Ensemble::start`], with its files in the caller's folder
    /// `dir` (see [`ZkServers::at`]).
    pub fn start_in(dir: PathBuf) -> Ensemble {
        Ensemble::start_with(ZkServers::at(dir))
    }

    fn start_with(files: ZkServers) -> Ensemble {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        let ports: Vec<u16> = (0..9).map(|_| free_port()).collect();
        let list = |of: &[u16]| of.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
        let ensemble = Ensemble {
            ports: [ports[0], ports[1], ports[2]],
            env: vec![
                ("ZKMW_ENSEMBLE_PORTS", list(&ports[0..3])),
                ("ZKMW_ENSEMBLE_PEER_PORTS", list(&ports[3..6])),
                ("ZKMW_ENSEMBLE_ELECTION_PORTS", list(&ports[6..9])),
            ],
            files,
            _turn: turn,
        };
        ensemble.zk_sh(&["ensemble-start"]);
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
        self.try_stop_node(n).unwrap_or_else(|e| panic!("{e}"));
    }

    /// `scripts/zk.sh node-start N`: the node serves (in a quorum) when
    /// this returns.
    pub fn start_node(&mut self, n: usize) {
        self.try_start_node(n).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Like [`Ensemble::stop_node`], returning what went wrong instead.
    pub fn try_stop_node(&self, n: usize) -> Result<(), String> {
        self.files
            .try_zk_sh(&self.env, &["node-stop", &n.to_string()])
    }

    /// Like [`Ensemble::start_node`], returning what went wrong instead.
    pub fn try_start_node(&self, n: usize) -> Result<(), String> {
        self.files
            .try_zk_sh(&self.env, &["node-start", &n.to_string()])
    }

    /// True when every node serves clients (as leader or follower).
    pub fn all_serving(&self) -> bool {
        (1..=3).all(|n| self.mode(n).is_some())
    }

    /// SIGSTOPs node `n`'s server (clients then see timeouts, not closed
    /// connections) until the guard is dropped; `None` when it is not
    /// running.
    pub fn freeze_node(&self, n: usize) -> Option<FrozenNode> {
        let pid = self.node_pid(n)?;
        // SAFETY: kill only sends a signal, to a server of this ensemble.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Some(FrozenNode { pid })
    }

    /// The pid of node `n`'s server, while its pid file names a process
    /// running this node's configuration.
    pub fn node_pid(&self, n: usize) -> Option<i32> {
        let node = self.files.dir.join(format!("ensemble-{n}"));
        let pid: i32 = fs::read_to_string(node.join("zookeeper.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let config = format!("{}", node.join("zoo.cfg").display());
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == config.as_bytes())
            .then_some(pid)
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
        self.files.zk_sh(&self.env, args);
    }
}

/// A ZooKeeper server stopped with SIGSTOP; SIGCONT when dropped.
pub struct FrozenNode {
    /// Its pid.
    pub pid: i32,
}

impl Drop for FrozenNode {
    fn drop(&mut self) {
        // SAFETY: kill only sends a signal.
        unsafe { libc::kill(self.pid, libc::SIGCONT) };
    }
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
