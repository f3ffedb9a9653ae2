//! zkmw's Prometheus metrics: one registry per process holding the
//! families of its role, thread-safe (the roles' threads record, the HTTP
//! threads encode), from the `prometheus-client` crate. The label values
//! of a finished task are a plain function of its result ([`finished`]).
//! README lists every metric.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::{FailReason, FinalState, TaskResult};

/// Which long-running role this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `zkmw master`.
    Master,
    /// `zkmw worker`.
    Worker,
}

impl Role {
    /// Its name, as the command line and the logs say it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }
}

/// The labels of `zkmw_tasks_finished_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Finished {
    /// `done` (the job exited or died of a signal) or `failed`.
    pub outcome: &'static str,
    /// `0`, `1-125`, `126-127`, `128-255`, `signal`, or `none` when failed.
    pub exit_class: &'static str,
    /// Why it failed (`timed_out`, `worker_lost`, ...), `none` when done.
    pub reason: &'static str,
}

/// The label of the transaction counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// Upper bounds of the job run time histogram, in seconds: from a no-op
/// job to an hour-long one.
const RUN_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Every metric of the process; those of the other role exist but are not
/// registered, so recording into them costs nothing and shows nothing.
pub struct Metrics {
    registry: Registry,
    finished: Family<Finished, Counter>,
    sent: Family<Kind, Counter>,
    failed: Family<Kind, Counter>,
    zk_transactions: Counter,
    zk_connected: Gauge,
    reconnects: Counter,
    expiries: Counter,
    run_seconds: Histogram,
    last_success: Gauge<f64, AtomicU64>,
    jobs_running: Gauge,
    jobs_claimed: Gauge,
    threads: Gauge,
    active: Gauge,
    epoch: Gauge,
    queue: Gauge,
    assigned: Gauge,
    running: Gauge,
    workers: Gauge,
}

/// What the active master saw in its last round, for its gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Live workers.
    pub workers: usize,
    /// Tasks queued in /tasks.
    pub pending: usize,
    /// Tasks assigned to a worker, not started.
    pub assigned: usize,
    /// Tasks started, not finished.
    pub running: usize,
}

impl Metrics {
    /// The metrics of `role`, registered under the `zkmw_` prefix.
    pub fn new(role: Role) -> Metrics {
        let metrics = Metrics {
            registry: Registry::with_prefix("zkmw"),
            finished: Family::default(),
            sent: Family::default(),
            failed: Family::default(),
            zk_transactions: Counter::default(),
            zk_connected: Gauge::default(),
            reconnects: Counter::default(),
            expiries: Counter::default(),
            run_seconds: Histogram::new(RUN_BUCKETS),
            last_success: Gauge::default(),
            jobs_running: Gauge::default(),
            jobs_claimed: Gauge::default(),
            threads: Gauge::default(),
            active: Gauge::default(),
            epoch: Gauge::default(),
            queue: Gauge::default(),
            assigned: Gauge::default(),
            running: Gauge::default(),
            workers: Gauge::default(),
        };
        metrics.registered(role)
    }

    fn registered(mut self, role: Role) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "tasks_finished",
            "Tasks this process stored a result for, by outcome, exit code class and failure reason",
            self.finished.clone(),
        );
        r.register(
            "transactions_sent",
            "All-or-nothing steps sent to ZooKeeper (an assignment, a claim, a result...), by kind; \
             steps ready at once share a ZooKeeper transaction (zkmw_zk_transactions_total)",
            self.sent.clone(),
        );
        r.register(
            "transactions_failed",
            "Steps that failed or whose outcome is unknown, by kind",
            self.failed.clone(),
        );
        r.register(
            "zk_transactions",
            "ZooKeeper transactions sent, each carrying one or more steps",
            self.zk_transactions.clone(),
        );
        r.register(
            "zk_connected",
            "1 while the session is connected to a ZooKeeper server",
            self.zk_connected.clone(),
        );
        r.register(
            "zk_reconnects",
            "Times the link to ZooKeeper came back after a disconnect",
            self.reconnects.clone(),
        );
        r.register(
            "zk_session_expiries",
            "Sessions lost without this process closing them (expired or refused by the server)",
            self.expiries.clone(),
        );
        match role {
            Role::Worker => self.register_worker(),
            Role::Master => self.register_master(),
        }
        self
    }

    fn register_worker(&mut self) {
        let r = &mut self.registry;
        r.register_with_unit(
            "task_run",
            "Run time of the jobs this worker finished",
            Unit::Seconds,
            self.run_seconds.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the last task this worker finished with exit code 0 (0: none yet)",
            self.last_success.clone(),
        );
        r.register(
            "worker_jobs_running",
            "Jobs this worker runs now",
            self.jobs_running.clone(),
        );
        r.register(
            "worker_jobs_claimed_ahead",
            "Tasks this worker claimed ahead of a free thread, their jobs not started",
            self.jobs_claimed.clone(),
        );
        r.register(
            "worker_threads",
            "Jobs this worker can run at once (--threads)",
            self.threads.clone(),
        );
    }

    fn register_master(&mut self) {
        let r = &mut self.registry;
        r.register(
            "master_active",
            "1 while this master is the active one",
            self.active.clone(),
        );
        r.register(
            "master_epoch",
            "The fencing epoch this master leads under (0 when standby)",
            self.epoch.clone(),
        );
        r.register(
            "queue_depth",
            "Tasks queued in /tasks, as the active master last listed them",
            self.queue.clone(),
        );
        r.register(
            "tasks_assigned",
            "Tasks assigned to a worker and not started, as the active master last saw them",
            self.assigned.clone(),
        );
        r.register(
            "tasks_running",
            "Tasks started and not finished, as the active master last saw them",
            self.running.clone(),
        );
        r.register(
            "workers_live",
            "Workers taking work, as the active master last saw them",
            self.workers.clone(),
        );
    }

    /// The Content-Type of [`Metrics::encode`]'s text.
    pub const CONTENT_TYPE: &'static str = prometheus_text::CONTENT_TYPE;

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// A result this process stored (a worker's run, or a master's failure).
    pub fn task_finished(&self, result: &TaskResult) {
        self.finished.get_or_create(&finished(result)).inc();
        if let Some(started) = result.started_ms {
            let ms = result.finished_ms.saturating_sub(started);
            self.run_seconds.observe(ms as f64 / 1000.0);
        }
        if result.state == FinalState::Done && result.exit_code == Some(0) {
            self.last_success.set(result.finished_ms as f64 / 1000.0);
        }
    }

    /// Counts one transaction of `kind` and whether it failed; hands the
    /// result on.
    pub fn txn<T, E>(&self, kind: &'static str, result: Result<T, E>) -> Result<T, E> {
        let label = Kind { kind };
        self.sent.get_or_create(&label).inc();
        if result.is_err() {
            self.failed.get_or_create(&label).inc();
        }
        result
    }

    /// `n` ZooKeeper transactions were sent (carrying the steps that
    /// [`Metrics::txn`] counts).
    pub fn zk_transactions(&self, n: usize) {
        self.zk_transactions.inc_by(n as u64);
    }

    /// Whether the session is connected now.
    pub fn set_connected(&self, connected: bool) {
        self.zk_connected.set(i64::from(connected));
    }

    /// The link to ZooKeeper came back.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    /// A session ended without this process closing it.
    pub fn session_expired(&self) {
        self.expiries.inc();
    }

    /// A worker's running jobs, its claims waiting for a thread, and its
    /// capacity.
    pub fn worker_jobs(&self, running: usize, claimed: usize, threads: usize) {
        self.jobs_running.set(running as i64);
        self.jobs_claimed.set(claimed as i64);
        self.threads.set(threads as i64);
    }

    /// This master is active under `epoch`, or (`None`) not.
    pub fn master_epoch(&self, epoch: Option<i32>) {
        self.active.set(i64::from(epoch.is_some()));
        self.epoch.set(i64::from(epoch.unwrap_or(0)));
    }

    /// What the active master saw in its last round.
    pub fn master_load(&self, load: Load) {
        self.workers.set(load.workers as i64);
        self.queue.set(load.pending as i64);
        self.assigned.set(load.assigned as i64);
        self.running.set(load.running as i64);
    }
}

/// The labels of a finished task: its outcome, its exit code's class and
/// why it failed.
pub fn finished(result: &TaskResult) -> Finished {
    match result.state {
        FinalState::Done => Finished {
            outcome: "done",
            exit_class: match (result.exit_code, result.signal) {
                (Some(0), _) => "0",
                (Some(1..=125), _) => "1-125",
                (Some(126..=127), _) => "126-127",
                (Some(_), _) => "128-255",
                (None, _) => "signal",
            },
            reason: "none",
        },
        FinalState::Failed => Finished {
            outcome: "failed",
            exit_class: "none",
            reason: match &result.reason {
                Some(FailReason::TimedOut) => "timed_out",
                Some(FailReason::WorkerLost) => "worker_lost",
                Some(FailReason::Malformed) => "malformed",
                Some(FailReason::CouldNotStart(_)) => "could_not_start",
                Some(FailReason::Killed) => "killed",
                Some(FailReason::Cancelled) => "cancelled",
                Some(FailReason::Other(_)) | None => "other",
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(state: FinalState, exit_code: Option<i32>, reason: Option<FailReason>) -> TaskResult {
        let mut r = TaskResult::failed(None, FailReason::Killed, Some("w1"), 5_000);
        r.state = state;
        r.exit_code = exit_code;
        r.reason = reason;
        r
    }

    #[test]
    fn a_result_is_labelled_by_outcome_exit_class_and_reason() {
        let cases = [
            (
                result(FinalState::Done, Some(0), None),
                ("done", "0", "none"),
            ),
            (
                result(FinalState::Done, Some(3), None),
                ("done", "1-125", "none"),
            ),
            (
                result(FinalState::Done, Some(127), None),
                ("done", "126-127", "none"),
            ),
            (
                result(FinalState::Done, Some(130), None),
                ("done", "128-255", "none"),
            ),
            (
                result(FinalState::Done, None, None),
                ("done", "signal", "none"),
            ),
            (
                result(FinalState::Failed, None, Some(FailReason::TimedOut)),
                ("failed", "none", "timed_out"),
            ),
            (
                result(FinalState::Failed, None, Some(FailReason::WorkerLost)),
                ("failed", "none", "worker_lost"),
            ),
        ];
        for (r, (outcome, exit_class, reason)) in cases {
            let want = Finished {
                outcome,
                exit_class,
                reason,
            };
            assert_eq!(finished(&r), want, "{r:?}");
        }
    }

    /// The text a scrape gets follows the Prometheus conventions: the
    /// prefix, `_total` counters, base units; each role shows only its own.
    #[test]
    fn each_role_exports_its_families_by_their_conventional_names() {
        let worker = Metrics::new(Role::Worker);
        let mut ok = result(FinalState::Done, Some(0), None);
        ok.started_ms = Some(4_000);
        worker.task_finished(&ok);
        let _ = worker.txn::<(), _>("claim", Err("connection loss"));
        let text = worker.encode();
        for line in [
            "zkmw_tasks_finished_total{outcome=\"done\",exit_class=\"0\",reason=\"none\"} 1",
            "zkmw_transactions_sent_total{kind=\"claim\"} 1",
            "zkmw_transactions_failed_total{kind=\"claim\"} 1",
            "zkmw_task_run_seconds_bucket{le=\"1\"} 1",
            "zkmw_last_success_timestamp_seconds 5.0",
            "zkmw_zk_connected 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(!text.contains("zkmw_master_active"), "{text}");
        let master = Metrics::new(Role::Master);
        master.master_epoch(Some(7));
        let text = master.encode();
        assert!(text.contains("zkmw_master_active 1\n"), "{text}");
        assert!(text.contains("zkmw_master_epoch 7\n"), "{text}");
        assert!(!text.contains("zkmw_worker_threads"), "{text}");
    }
}
