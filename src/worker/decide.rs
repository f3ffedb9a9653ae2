//! The worker's decisions as plain functions over plain data, time passed
//! in, so each rule is unit-tested without a server: what to do with an
//! assignment it lists, who holds its id when registering fails, when a
//! worker cut off from ZooKeeper gives its jobs up, when a worker whose
//! jobs cannot start stops taking work, and when it claims ahead.

use std::time::{Duration, Instant};

use crate::layout::is_task_name;
use crate::model::{Task, WorkerInfo};
use crate::zk::ZkError;

/// What to do with an assignment the worker has not seen before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnListed {
    /// Hand it to the thread pool: a job thread claims and runs it.
    Run(Task),
    /// Claimed already, by an earlier session of this worker (its run was
    /// interrupted): the master repairs it; look again after a tick.
    SetAside,
    /// Store a failed result "malformed task" for it, with this reason.
    FailMalformed(String),
}

/// Decides about an assignment from its name, decoded data and version.
pub fn on_listed(name: &str, task: Result<Task, String>, version: i32) -> OnListed {
    match task {
        Err(why) => OnListed::FailMalformed(why),
        Ok(_) if !is_task_name(name) => OnListed::FailMalformed("not a task name".into()),
        Ok(_) if version > 0 => OnListed::SetAside,
        Ok(task) => OnListed::Run(task),
    }
}

/// What the claim transaction's outcome means (see `job.rs`: operation 0
/// raises the assignment from version 0, 1 creates the claim, 2 and 3
/// prove there is no result, 4 takes the task's lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// The run is ours.
    Ours,
    /// The outcome is unknown: look whether the claim is this session's.
    Unknown,
    /// Another run holds the task's claim: look again later.
    HeldByAnotherRun,
    /// Another task of its lock runs: look again later.
    LockHeld,
    /// The task has its result: remove the stray assignment.
    Finished,
    /// The assignment changed or went away: not ours to run.
    NotOurs,
}

/// Reads the claim transaction's outcome.
pub fn on_claim(result: &Result<(), ZkError>) -> ClaimVerdict {
    let err = match result {
        Ok(()) => return ClaimVerdict::Ours,
        Err(err) => err,
    };
    if err.is_unknown_outcome() {
        return ClaimVerdict::Unknown;
    }
    match err.txn_cause() {
        (Some(1), ZkError::NodeExists) => ClaimVerdict::HeldByAnotherRun,
        (Some(2), ZkError::NodeExists) => ClaimVerdict::Finished,
        (Some(4), ZkError::NodeExists) => ClaimVerdict::LockHeld,
        _ => ClaimVerdict::NotOurs,
    }
}

/// What the finish step's outcome means (see `job::finish_ops`: operation
/// 0 creates the result, 1 and 2 delete the assignment and the claim, 3 on
/// delete what goes with the result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishVerdict {
    /// The result is stored.
    Stored,
    /// Something that goes with the result is gone already (a master
    /// cleaned it up): store the result without operation `.0`.
    Without(usize),
    /// It has its one result already (an earlier try whose reply was
    /// lost): remove the leftovers (operations 1 on).
    StoredBefore,
    /// The outcome is unknown: look at the claim, then try again.
    Unknown,
    /// Not stored, and it cannot be: the master runs it again.
    Lost,
}

/// Reads the finish step's outcome.
pub fn on_finish(result: &Result<(), ZkError>) -> FinishVerdict {
    let err = match result {
        Ok(()) => return FinishVerdict::Stored,
        Err(err) => err,
    };
    if err.is_unknown_outcome() {
        return FinishVerdict::Unknown;
    }
    match err.txn_cause() {
        (Some(i @ 3..), ZkError::NoNode) => FinishVerdict::Without(i),
        (Some(0), ZkError::NodeExists) => FinishVerdict::StoredBefore,
        _ => FinishVerdict::Lost,
    }
}

/// Who holds `/workers/<id>` when registering found it taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This very session (an earlier try whose reply was lost).
    Us,
    /// Nobody any more: try again now.
    Nobody,
    /// A session of this process that ended (its node lingers until the
    /// server expires it): wait.
    OurPrevious,
    /// A worker of this id on this host whose process is gone (killed and
    /// restarted, as a service manager does): wait for its session to expire.
    OurGhost,
    /// Another live worker: the id is taken.
    Another,
}

/// What registering knows about the node in the way.
#[derive(Debug, Clone, Copy)]
pub struct InTheWay<'a> {
    /// The session that owns the node, if it is still there.
    pub owner: Option<i64>,
    /// The node's data, if it decoded.
    pub info: Option<&'a WorkerInfo>,
}

/// What this process knows about itself.
#[derive(Debug, Clone, Copy)]
pub struct Me<'a> {
    /// The session registering now.
    pub session: i64,
    /// The session this process registered with before, if any.
    pub previous: Option<i64>,
    /// This host's name.
    pub host: &'a str,
    /// This process's id.
    pub pid: u32,
}

/// Tells who holds the id; `worker_alive(pid)` says whether a worker
/// process of that pid runs on this host.
pub fn holder(way: InTheWay, me: Me, worker_alive: impl Fn(u32) -> bool) -> Holder {
    match way.owner {
        None => Holder::Nobody,
        Some(owner) if owner == me.session => Holder::Us,
        Some(owner) if Some(owner) == me.previous => Holder::OurPrevious,
        Some(_) => match way.info {
            Some(info) if info.host == me.host && info.pid != me.pid && !worker_alive(info.pid) => {
                Holder::OurGhost
            }
            _ => Holder::Another,
        },
    }
}

/// The first failed job starts after this pause; each further pause doubles,
/// up to [`PAUSE_CAP`].
pub const FIRST_PAUSE: Duration = Duration::from_secs(30);

/// The longest pause of a worker whose jobs cannot start.
pub const PAUSE_CAP: Duration = Duration::from_secs(600);

/// This many jobs in a row that could not start pause the worker.
pub const FAILED_STARTS: u32 = 3;

/// Whether the worker's jobs start: a worker whose every recent job could
/// not start (its shell gone, no processes left, no memory) stops taking
/// work for a while, so the queue goes to workers that can run it, then
/// tries again.
#[derive(Debug, Clone, Default)]
pub struct StartHealth {
    failed_in_a_row: u32,
    pauses: u32,
}

impl StartHealth {
    /// Records one job's start; returns how long to pause, if it is time to.
    pub fn record(&mut self, could_not_start: bool) -> Option<Duration> {
        if !could_not_start {
            *self = StartHealth::default();
            return None;
        }
        self.failed_in_a_row += 1;
        if self.failed_in_a_row < FAILED_STARTS {
            return None;
        }
        self.failed_in_a_row = 0;
        let pause = FIRST_PAUSE.saturating_mul(1 << self.pauses.min(10));
        self.pauses += 1;
        Some(pause.min(PAUSE_CAP))
    }
}

/// A job that took less than this counts as short for [`Pace`].
pub const SHORT_JOB: Duration = Duration::from_millis(100);

/// A claim made ahead whose job has not started after this long goes back
/// to the queue uncounted, so it does not wait behind a long job while
/// another worker could run it.
pub const CLAIM_AHEAD_HOLD: Duration = Duration::from_secs(1);

/// How fast the worker's jobs end. While its last jobs were all short,
/// it claims one assignment ahead per thread: a thread that frees then
/// starts its next job at once, instead of waiting for a claim to commit
/// (which takes as long as a short job). A long job or a claim held too
/// long stops it until jobs are short again.
#[derive(Debug, Clone, Default)]
pub struct Pace {
    short_in_a_row: usize,
}

impl Pace {
    /// Records how long one job took.
    pub fn record(&mut self, took: Duration) {
        if took < SHORT_JOB {
            self.short_in_a_row += 1;
        } else {
            self.short_in_a_row = 0;
        }
    }

    /// A claim made ahead waited past [`CLAIM_AHEAD_HOLD`]: the jobs are
    /// not short enough to claim ahead of.
    pub fn stalled(&mut self) {
        self.short_in_a_row = 0;
    }

    /// How many assignments to claim beyond its free threads: one per
    /// thread once twice as many jobs in a row as it has threads were
    /// short, none before.
    pub fn ahead(&self, threads: usize) -> usize {
        if self.short_in_a_row >= threads.max(1) * 2 {
            threads
        } else {
            0
        }
    }
}

/// True when a claim made ahead at `since` and not started by `now` is to
/// go back to the queue.
pub fn claim_ahead_is_overdue(since: Instant, now: Instant) -> bool {
    now >= since + CLAIM_AHEAD_HOLD
}

/// True when a worker cut off from ZooKeeper since `since` must give its
/// jobs up at `now`: its session may be expired by then and the master
/// may soon run them elsewhere.
pub fn hold_is_over(since: Option<Instant>, hold: Duration, now: Instant) -> bool {
    since.is_some_and(|since| now >= since + hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            job: "true".into(),
            submitted_ms: 1,
            timeout_ms: None,
            retries: 2,
            attempts: 0,
            token: "t".into(),
            history: Vec::new(),
            ..Default::default()
        }
    }

    #[test]
    fn runs_only_unclaimed_well_formed_tasks() {
        let name = "task-0000000001";
        assert_eq!(on_listed(name, Ok(task()), 0), OnListed::Run(task()));
        assert_eq!(on_listed(name, Ok(task()), 1), OnListed::SetAside);
        assert!(matches!(
            on_listed(name, Err("bad".into()), 0),
            OnListed::FailMalformed(_)
        ));
        assert!(matches!(
            on_listed("junk", Ok(task()), 0),
            OnListed::FailMalformed(_)
        ));
    }

    fn info(host: &str, pid: u32) -> WorkerInfo {
        WorkerInfo {
            host: host.into(),
            pid,
            threads: 1,
            started_ms: 0,
            session_timeout_ms: None,
            rerun_grace_ms: None,
            labels: Vec::new(),
        }
    }

    #[test]
    fn tells_a_restarted_workers_ghost_from_another_worker() {
        let me = Me {
            session: 7,
            previous: Some(5),
            host: "h1",
            pid: 100,
        };
        let way = |owner, info| InTheWay { owner, info };
        let dead = |_| false;
        let alive = |_| true;
        assert_eq!(holder(way(None, None), me, dead), Holder::Nobody);
        assert_eq!(holder(way(Some(7), None), me, dead), Holder::Us);
        assert_eq!(holder(way(Some(5), None), me, dead), Holder::OurPrevious);
        let here = info("h1", 90);
        assert_eq!(
            holder(way(Some(3), Some(&here)), me, dead),
            Holder::OurGhost
        );
        assert_eq!(
            holder(way(Some(3), Some(&here)), me, alive),
            Holder::Another
        );
        let elsewhere = info("h2", 90);
        assert_eq!(
            holder(way(Some(3), Some(&elsewhere)), me, dead),
            Holder::Another
        );
        assert_eq!(holder(way(Some(3), None), me, dead), Holder::Another);
    }

    #[test]
    fn pauses_after_failed_starts_in_a_row_doubling_up_to_the_cap() {
        let mut health = StartHealth::default();
        assert_eq!(health.record(true), None);
        assert_eq!(health.record(false), None);
        let pauses: Vec<Option<Duration>> = (0..3 * 8).map(|_| health.record(true)).collect();
        let taken: Vec<Duration> = pauses.iter().flatten().copied().collect();
        assert_eq!(pauses.iter().filter(|p| p.is_some()).count(), 8);
        assert_eq!(pauses[..3], [None, None, Some(FIRST_PAUSE)]);
        assert_eq!(taken[1], FIRST_PAUSE * 2);
        assert_eq!(*taken.last().unwrap(), PAUSE_CAP);
        // One job that starts is enough to forget the failures.
        assert_eq!(health.record(false), None);
        assert_eq!(health.record(true), None);
        assert_eq!(health.record(true), None);
        assert_eq!(health.record(true), Some(FIRST_PAUSE));
    }

    #[test]
    fn claims_ahead_only_while_its_recent_jobs_are_short() {
        let short = SHORT_JOB - Duration::from_millis(1);
        let mut pace = Pace::default();
        assert_eq!(pace.ahead(4), 0, "nothing known yet");
        for _ in 0..7 {
            pace.record(short);
        }
        assert_eq!(
            pace.ahead(4),
            0,
            "seven short jobs are not enough for 4 threads"
        );
        pace.record(short);
        assert_eq!(pace.ahead(4), 4, "one ahead per thread");
        pace.record(SHORT_JOB);
        assert_eq!(pace.ahead(4), 0, "one long job stops it");
        for _ in 0..8 {
            pace.record(short);
        }
        assert_eq!(pace.ahead(4), 4);
        pace.stalled();
        assert_eq!(pace.ahead(4), 0, "a claim held too long stops it");
        pace.record(short);
        pace.record(short);
        assert_eq!(pace.ahead(1), 1, "a single thread needs two short jobs");
    }

    #[test]
    fn a_claim_made_ahead_goes_back_once_held_too_long() {
        let t0 = Instant::now();
        let just_before = t0 + CLAIM_AHEAD_HOLD - Duration::from_millis(1);
        assert!(!claim_ahead_is_overdue(t0, just_before));
        assert!(claim_ahead_is_overdue(t0, t0 + CLAIM_AHEAD_HOLD));
    }

    #[test]
    fn a_cut_off_worker_holds_its_jobs_until_the_hold_is_over() {
        let t0 = Instant::now();
        let hold = Duration::from_secs(12);
        assert!(!hold_is_over(None, hold, t0 + hold * 10));
        assert!(!hold_is_over(
            Some(t0),
            hold,
            t0 + hold - Duration::from_millis(1)
        ));
        assert!(hold_is_over(Some(t0), hold, t0 + hold));
    }

    #[test]
    fn reads_the_finish_outcome() {
        let failed = |index, cause| {
            Err(ZkError::TxnFailed {
                index,
                cause: Box::new(cause),
            })
        };
        assert_eq!(on_finish(&Ok(())), FinishVerdict::Stored);
        assert_eq!(on_finish(&Err(ZkError::Timeout)), FinishVerdict::Unknown);
        assert_eq!(
            on_finish(&failed(4, ZkError::NoNode)),
            FinishVerdict::Without(4)
        );
        assert_eq!(
            on_finish(&failed(0, ZkError::NodeExists)),
            FinishVerdict::StoredBefore
        );
        assert_eq!(on_finish(&failed(1, ZkError::NoNode)), FinishVerdict::Lost);
    }

    #[test]
    fn reads_the_claim_outcome() {
        let failed = |index, cause| {
            Err(ZkError::TxnFailed {
                index,
                cause: Box::new(cause),
            })
        };
        assert_eq!(on_claim(&Ok(())), ClaimVerdict::Ours);
        assert_eq!(
            on_claim(&Err(ZkError::ConnectionLoss)),
            ClaimVerdict::Unknown
        );
        assert_eq!(
            on_claim(&failed(1, ZkError::NodeExists)),
            ClaimVerdict::HeldByAnotherRun
        );
        assert_eq!(
            on_claim(&failed(2, ZkError::NodeExists)),
            ClaimVerdict::Finished
        );
        assert_eq!(
            on_claim(&failed(4, ZkError::NodeExists)),
            ClaimVerdict::LockHeld
        );
        assert_eq!(
            on_claim(&failed(0, ZkError::BadVersion)),
            ClaimVerdict::NotOurs
        );
        assert_eq!(on_claim(&failed(0, ZkError::NoNode)), ClaimVerdict::NotOurs);
    }
}
