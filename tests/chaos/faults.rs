//! The schedule of faults while the load runs: every 2-6 s one fault,
//! picked at random, within limits (at most 2 workers out at once, one
//! frozen worker, one ZooKeeper fault at a time):
//!
//! - kill -9 of the active master (also what is done when the fault picked
//!   cannot be thrown now);
//! - kill -9 of a worker, started again 1-4 s later;
//! - SIGSTOP of a worker past its session timeout, which puts running jobs
//!   at stake: the freeze waits (up to 30 s) for a worker to start a job
//!   with at least [`LEFT_AT_STAKE`] still to run, and freezes that worker;
//!   its session expires while the job runs on, so the job's re-run must
//!   not start before the job ends (the re-run grace);
//! - a ZooKeeper node stopped and started again, or frozen (see
//!   [`crate::zk_faults`]).

use std::panic;
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;

use crate::cluster::Cluster;
use crate::common::ledger::Watch;
use crate::common::wait::{now_ns, wait_until};
use crate::events::{Events, say};
use crate::load::Load;
use crate::observe::Observer;
use crate::settings::Settings;
use crate::zk_faults::ZkFaults;

/// How long a job of the worker to freeze must have left to run: past the
/// expiry of the frozen worker's session and the start of a re-run that
/// would come without the grace (session timeout, a tick).
pub const LEFT_AT_STAKE: Duration = Duration::from_millis(4500);

/// How long a freeze waits for a worker to start a job that long.
const FREEZE_WAIT: Duration = Duration::from_secs(30);

/// How often the schedule looks at the roles and the clock.
const TICK: Duration = Duration::from_millis(100);

/// The faults of one run and what they act on.
pub struct Chaos<'scope, 'env> {
    /// Where the ZooKeeper faults' threads run.
    pub scope: &'scope Scope<'scope, 'env>,
    /// The run's settings.
    pub settings: &'env Settings,
    /// The journal.
    pub events: &'env Events,
    /// The submitters.
    pub load: &'env Load<'env>,
    /// The ledger's runs.
    pub watch: &'env Watch,
    /// The cluster as ZooKeeper shows it.
    pub observer: &'env Observer,
    /// The ensemble's faults, when the ensemble is the run's own.
    pub zk: Option<&'env ZkFaults<'env>>,
    /// Every random choice.
    pub rng: StdRng,
    /// The ZooKeeper fault under way.
    pub zk_fault: Option<ScopedJoinHandle<'scope, ()>>,
    /// Until when a freeze waits for a job long enough.
    pub freeze_armed: Option<Instant>,
}

impl Chaos<'_, '_> {
    /// Throws faults at `cluster` while the submitters run (at most the
    /// load's length and 90 s), restarting what is gone.
    pub fn run(&mut self, cluster: &mut Cluster) {
        let deadline = Instant::now() + self.settings.load + Duration::from_secs(90);
        let mut next = Instant::now() + self.millis(2000..5000);
        let mut progress = Instant::now() + Duration::from_secs(20);
        while self.load.running() && Instant::now() < deadline {
            crate::check_interrupted();
            cluster.supervise();
            cluster.thaw(false);
            self.freeze_when_at_stake(cluster);
            if Instant::now() >= next {
                self.throw(cluster);
                next = Instant::now() + self.millis(2000..6000);
            }
            if Instant::now() >= progress {
                let (acked, faults) = (self.load.acked_count(), self.events.faults());
                say(&format!(
                    "{acked} acknowledged, {faults} chaos actions so far"
                ));
                progress += Duration::from_secs(20);
            }
            thread::sleep(TICK);
        }
        if self.load.running() {
            let limit = self.settings.load.as_secs() + 90;
            self.events.anomaly(&format!(
                "submitters still running after {limit} s; stopping them"
            ));
            self.load.stop();
        }
        let faults = self.events.faults();
        self.events
            .log(&format!("chaos stops after {faults} actions"));
    }

    /// Undoes what is still in effect: thaws the frozen worker, lets the
    /// killed ones start, brings the ZooKeeper node back (within 90 s).
    pub fn settle(&mut self, cluster: &mut Cluster) -> Result<(), String> {
        cluster.thaw(true);
        cluster.restart_workers_now();
        self.freeze_armed = None;
        self.zk.inspect(|zk| zk.settle());
        let Some(fault) = self.zk_fault.take() else {
            return Ok(());
        };
        let over = wait_until(Instant::now() + Duration::from_secs(90), || {
            cluster.supervise();
            fault.is_finished()
        });
        if !over {
            return Err("the ZooKeeper node is not serving again after 90 s; see zk/".into());
        }
        fault.join().unwrap_or_else(|e| panic::resume_unwind(e));
        Ok(())
    }

    /// One fault, picked at random within the limits.
    fn throw(&mut self, cluster: &mut Cluster) {
        let down = cluster.down_workers();
        let zk_idle = self.zk.is_some_and(ZkFaults::enabled)
            && self.zk_fault.as_ref().is_none_or(|f| f.is_finished());
        match self.rng.random_range(0..4) {
            1 if down < 2 => {
                cluster.kill_worker(&mut self.rng);
            }
            2 if down < 2 && !cluster.any_frozen() && self.freeze_armed.is_none() => {
                self.events
                    .log("freeze-worker: waiting for a worker to start a long job");
                self.freeze_armed = Some(Instant::now() + FREEZE_WAIT);
            }
            3 if zk_idle => self.zk_fault(),
            _ => {
                let master = self.observer.latest().and_then(|s| s.master_pid);
                cluster.kill_active_master(master);
            }
        }
    }

    /// While a freeze waits: freezes the worker of a job with at least
    /// [`LEFT_AT_STAKE`] left, or any live worker once the wait is over.
    fn freeze_when_at_stake(&mut self, cluster: &mut Cluster) {
        let Some(until) = self.freeze_armed else {
            return;
        };
        let over = Instant::now() >= until;
        if cluster.down_workers() >= 2 || cluster.any_frozen() {
            if over {
                self.freeze_armed = None;
                self.events
                    .log("freeze-worker: skipped (2 workers out, or one frozen)");
            }
            return;
        }
        let target = match self.worker_at_stake(cluster) {
            Some((i, left)) => Some((i, format!("its job has {:.1} s left", left.as_secs_f64()))),
            None if over => {
                let why = format!("no job long enough started within {FREEZE_WAIT:?}");
                cluster.pick_worker(&mut self.rng).map(|i| (i, why))
            }
            None => return,
        };
        self.freeze_armed = None;
        match target {
            Some((i, why)) => cluster.freeze_worker(i, self.settings.freeze, &why),
            None => self
                .events
                .log("freeze-worker: skipped (no live worker to pick)"),
        }
    }

    /// The live worker running the job with the most time left to run, if
    /// that is [`LEFT_AT_STAKE`] at least: its index, and that time.
    fn worker_at_stake(&self, cluster: &Cluster) -> Option<(usize, Duration)> {
        let now = now_ns();
        let at_stake = self.watch.running().into_iter().filter_map(|run| {
            let ran = Duration::from_nanos(now.saturating_sub(run.started_ns) as u64);
            let left = self.load.sleep_of(&run.task)?.checked_sub(ran)?;
            let worker = cluster.worker_with_pid(run.parent? as u32)?;
            (left >= LEFT_AT_STAKE).then_some((worker, left))
        });
        at_stake.max_by_key(|&(_, left)| left)
    }

    /// Starts a ZooKeeper fault in a thread of its own: a node restarted
    /// (down 3-7 s), or, with `--zk-freeze`, one time in two frozen (4-7 s).
    fn zk_fault(&mut self) {
        let Some(zk) = self.zk else {
            return;
        };
        if let Some(done) = self.zk_fault.take() {
            done.join().unwrap_or_else(|e| panic::resume_unwind(e));
        }
        let node = self.rng.random_range(1..=3);
        let fault = if self.settings.zk_freeze && self.rng.random_bool(0.5) {
            let length = self.millis(4000..7000);
            self.scope.spawn(move || zk.freeze(node, length))
        } else {
            let down = self.millis(3000..7000);
            self.scope.spawn(move || zk.bounce(node, down))
        };
        self.zk_fault = Some(fault);
    }

    /// A random duration in `range` milliseconds.
    fn millis(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(self.rng.random_range(range))
    }
}
