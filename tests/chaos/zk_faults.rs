//! The ZooKeeper faults, each run by a thread of its own while the schedule
//! goes on: an ensemble node stopped and started again (`zk.sh node-stop`,
//! down for a while, `zk.sh node-start`, retried), or frozen with SIGSTOP
//! for a while (clients then see timeouts rather than closed connections).
//! One at a time, and only while all three nodes serve, so the ensemble
//! never loses its quorum for long.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::ensemble::Ensemble;
use crate::events::Events;

/// How many times a node is started before the suite gives up on it.
const STARTS: u32 = 5;

/// The ZooKeeper faults of a run, on its own ensemble.
pub struct ZkFaults<'a> {
    ensemble: &'a Ensemble,
    events: &'a Events,
    /// False once a node could not be brought back: no more ZooKeeper faults.
    enabled: AtomicBool,
    /// True once the chaos is over: a fault under way ends at once.
    settle: AtomicBool,
}

impl<'a> ZkFaults<'a> {
    /// The faults of `ensemble`, written to `events`.
    pub fn new(ensemble: &'a Ensemble, events: &'a Events) -> ZkFaults<'a> {
        ZkFaults {
            ensemble,
            events,
            enabled: AtomicBool::new(true),
            settle: AtomicBool::new(false),
        }
    }

    /// True until a node could not be brought back.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    /// Ends the fault under way now: a stopped node is started, a frozen
    /// one thawed.
    pub fn settle(&self) {
        self.settle.store(true, Ordering::SeqCst);
    }

    /// Stops node `n`, keeps it down for `down`, starts it again.
    pub fn bounce(&self, n: usize, down: Duration) {
        if !self.whole("zk-stop") {
            return;
        }
        let pid = self.ensemble.node_pid(n).unwrap_or_default();
        self.events
            .fault(&format!("zk.sh node-stop {n} (pid {pid})"));
        if let Err(e) = self.ensemble.try_stop_node(n) {
            self.give_up(&format!("zk.sh node-stop {n} failed: {}", one_line(&e)));
            return;
        }
        self.events.log(&format!("zk node {n} stopped"));
        self.pause(down);
        for start in 1..=STARTS {
            self.events.log(&format!("CHAOS zk.sh node-start {n}"));
            match self.ensemble.try_start_node(n) {
                Ok(()) => return self.events.log(&format!("zk node {n} serving again")),
                Err(e) if start < STARTS => {
                    let e = one_line(&e);
                    self.events.log(&format!(
                        "zk.sh node-start {n} failed: {e}; retrying in 3 s"
                    ));
                    thread::sleep(Duration::from_secs(3));
                }
                Err(_) => {}
            }
        }
        self.give_up(&format!("zk.sh node-start {n} failed {STARTS} times"));
    }

    /// Freezes node `n` for `length`.
    pub fn freeze(&self, n: usize, length: Duration) {
        if !self.whole("zk-freeze") {
            return;
        }
        let Some(frozen) = self.ensemble.freeze_node(n) else {
            self.events
                .log(&format!("zk-freeze: skipped (no live node {n} of ours)"));
            return;
        };
        let pid = frozen.pid;
        self.events.fault(&format!("SIGSTOP zk node {n} pid={pid}"));
        self.pause(length);
        drop(frozen);
        self.events
            .log(&format!("CHAOS SIGCONT zk node {n} pid={pid}"));
    }

    /// True when all three nodes serve; else says that `what` is skipped.
    fn whole(&self, what: &str) -> bool {
        let whole = self.ensemble.all_serving();
        if !whole {
            self.events
                .log(&format!("{what}: skipped (not all 3 nodes serving)"));
        }
        whole
    }

    /// Sleeps for `length`, or until the chaos is over or interrupted.
    fn pause(&self, length: Duration) {
        let until = Instant::now() + length;
        while Instant::now() < until && !self.settle.load(Ordering::SeqCst) && !crate::interrupted()
        {
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Logs the anomaly `what` and throws no more ZooKeeper faults.
    fn give_up(&self, what: &str) {
        self.enabled.store(false, Ordering::SeqCst);
        self.events.anomaly(&format!(
            "{what} (see zk/); no more ZooKeeper chaos this run"
        ));
    }
}

/// `text` on one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
