//! A 3-node ensemble of `scripts/zk.sh` of one test's own, for tests that
//! stop and start ZooKeeper nodes: free client, peer and election ports and
//! a private files folder (see [`super::servers`]), so another run of the
//! tests on this machine neither meets nor stops it. Dropping the value
//! stops every node, pass or fail.
//!
//! One ensemble at a time per test process: the tests using one ran one
//! after another when they shared the machine's only ensemble, and three
//! more JVMs beside three would starve the timing of both on 2 cores.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::free_port;
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
            files: ZkServers::new("ensemble"),
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
        self.zk_sh(&["node-stop", &n.to_string()]);
    }

    /// `scripts/zk.sh node-start N`: the node serves (in a quorum) when
    /// this returns.
    pub fn start_node(&mut self, n: usize) {
        self.zk_sh(&["node-start", &n.to_string()]);
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
