//! One task's life on a worker thread: claim it, run it, store its result.
//!
//! The claim is one transaction: bump the assignment's version from 0 (it
//! was not claimed before) and create the ephemeral `/running/<t>` (nobody
//! else runs it). So a task runs at most once at a time, even if a bug or a
//! deposed master assigned it twice. The finish is one transaction too:
//! create `/status/<t>`, delete the assignment and the claim. A run the
//! worker had to kill while its session lives (stopping past the drain
//! timeout) is handed back in one transaction: `/tasks/<t>` created again,
//! the assignment and the claim deleted, so it runs again at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use log::{debug, info, warn};

use super::decide::{self, ClaimVerdict};
use super::{Msg, relay};
use crate::backoff::Backoff;
use crate::exec::{self, Captured, JobReport, JobSpec, KillSwitch, Outcome};
use crate::layout::Layout;
use crate::model::{
    self, AttemptEnd, Claim, FailReason, FinalState, LockHolder, MAX_NODE_BYTES, Task, TaskResult,
};
use crate::obs::{self, Obs};
use crate::zk::{Op, Zk, ZkError};

/// What a job thread reports to the control loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// The task is claimed and its job is running.
    Started,
    /// The thread is done with the task.
    Ended(Ending),
    /// Not run: another run holds the task's claim.
    Held,
}

/// How a job thread was done with its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Not claimed: the worker takes no work now, or the task is not ours.
    Skipped,
    /// The job ran and its result was stored (or will be by the master).
    Finished,
    /// The job's shell could not be started; the failure was stored.
    CouldNotStart,
    /// Killed and handed back to the queue.
    HandedBack,
    /// Dropped: the session it ran under is gone.
    Abandoned,
}

/// What every job thread of one session shares.
#[derive(Clone)]
pub struct JobContext {
    /// The session's client.
    pub zk: Zk,
    /// The namespace.
    pub layout: Layout,
    /// This worker's id.
    pub worker: String,
    /// Bytes kept of stdout and of stderr.
    pub output_cap: usize,
    /// The shell that runs jobs.
    pub shell: PathBuf,
    /// Bumped when a session ends: results of older sessions are dropped.
    pub generation: Arc<AtomicU64>,
    /// The generation this context belongs to.
    pub my_generation: u64,
    /// Cleared when the worker takes no work (draining, paused): tasks
    /// not yet claimed are left for the master.
    pub accepting: Arc<AtomicBool>,
    /// The control loop's channel.
    pub tx: Sender<Msg>,
    /// The session's progress relay.
    pub progress: Sender<relay::Update>,
    /// The worker's metrics and health.
    pub obs: Obs,
}

impl JobContext {
    fn current(&self) -> bool {
        self.generation.load(Ordering::SeqCst) == self.my_generation
    }

    fn report(&self, task: &str, event: JobEvent) {
        let _ = self.tx.send(Msg::Job {
            task: task.to_string(),
            generation: self.my_generation,
            event,
        });
    }
}

/// Claims, runs and finishes one task; always reports `Ended` or `Held` at
/// the end.
pub fn run(ctx: &JobContext, task_name: &str, task: Task, kill: &KillSwitch) {
    let _about = obs::log::task_scope(task_name);
    if !ctx.current() || !ctx.accepting.load(Ordering::SeqCst) || kill.is_killed() {
        return ctx.report(task_name, JobEvent::Ended(Ending::Skipped));
    }
    let task = match claim(ctx, task_name, task) {
        Claimed::Yes(task) => *task,
        Claimed::Held => return ctx.report(task_name, JobEvent::Held),
        Claimed::No => return ctx.report(task_name, JobEvent::Ended(Ending::Skipped)),
    };
    ctx.report(task_name, JobEvent::Started);
    let report = execute(ctx, task_name, &task, kill);
    let ending = if !ctx.current() {
        info!("{task_name}: run abandoned: its session is gone, the master runs it again");
        Ending::Abandoned
    } else if report.outcome == Outcome::Killed {
        hand_back(ctx, task_name, &task);
        Ending::HandedBack
    } else {
        let could_not_start = matches!(report.outcome, Outcome::CouldNotStart(_));
        let end = attempt_end(&report.outcome);
        let retried = task
            .retry_after(&end)
            .is_some_and(|delay| requeue_failed(ctx, task_name, &task, end, delay));
        if !retried {
            finish(ctx, task_name, result_of(ctx, &task, report));
        }
        if could_not_start {
            Ending::CouldNotStart
        } else {
            Ending::Finished
        }
    };
    ctx.report(task_name, JobEvent::Ended(ending));
}

/// How a run that the worker did not kill ended.
fn attempt_end(outcome: &Outcome) -> AttemptEnd {
    match outcome {
        Outcome::Exited(code) => AttemptEnd::Exited { code: *code },
        Outcome::Signaled(sig) => AttemptEnd::Signaled { signal: *sig },
        other => AttemptEnd::Failed {
            reason: fail_reason(other),
        },
    }
}

/// `--retry-failed`: puts a run that ended badly back in the queue, to run
/// again after `delay_ms` (stored in the task, so a new master knows it);
/// the lock goes with this run, the task keeps its place in the lock's
/// queue. False if that could not be done: the result is stored instead.
fn requeue_failed(
    ctx: &JobContext,
    name: &str,
    task: &Task,
    end: AttemptEnd,
    delay_ms: u64,
) -> bool {
    let now = model::now_ms();
    let mut again = task.clone().ended(end, now);
    again.failed_runs += 1;
    again.not_before_ms = Some(now + delay_ms);
    let txn = back_to_queue(ctx, name, &again);
    match ctx.obs.metrics().txn("requeue_failed", ctx.zk.multi(&txn)) {
        Ok(()) => {
            info!(
                "{name}: run {} ended badly; it runs again in {} s ({} of {} re-runs)",
                task.attempts,
                delay_ms / 1000,
                again.failed_runs,
                task.retry_failed
            );
            true
        }
        Err(err) => {
            warn!("{name}: could not queue its re-run ({err}); storing the result");
            false
        }
    }
}

/// The transaction putting a claimed task back in the queue as `task`:
/// `/tasks/<t>` created again, the assignment (claimed: version 1), the
/// claim and the task's lock deleted.
fn back_to_queue(ctx: &JobContext, name: &str, task: &Task) -> Vec<Op> {
    let mut txn = vec![
        Op::Create {
            path: ctx.layout.task(name),
            data: model::encode(task),
        },
        Op::Delete {
            path: ctx.layout.assignment(&ctx.worker, name),
            version: Some(1),
        },
        Op::Delete {
            path: ctx.layout.running_task(name),
            version: None,
        },
    ];
    txn.extend(release_lock(ctx, task));
    txn
}

/// The operation releasing a task's lock (its claim created it).
fn release_lock(ctx: &JobContext, task: &Task) -> Option<Op> {
    task.lock.as_ref().map(|lock| Op::Delete {
        path: ctx.layout.lock(lock),
        version: None,
    })
}

/// Puts a run the worker killed back in the queue: `/tasks/<t>` created
/// again (its attempts count the run), the assignment (claimed: version 1)
/// and the claim deleted. If that fails, the claim goes with the session
/// and the master requeues the task.
fn hand_back(ctx: &JobContext, name: &str, task: &Task) {
    let back = task.clone().ended(AttemptEnd::HandedBack, model::now_ms());
    let txn = back_to_queue(ctx, name, &back);
    match ctx.obs.metrics().txn("hand_back", ctx.zk.multi(&txn)) {
        Ok(()) => info!("{name}: killed (worker stopping); handed back to the queue"),
        Err(err) => warn!("{name}: killed; not handed back ({err}): the master requeues it"),
    }
}

/// How a claim attempt ended.
enum Claimed {
    /// Ours: the task, with this run counted.
    Yes(Box<Task>),
    /// Another run holds the task's claim: look again later.
    Held,
    /// Not ours to run (the assignment changed or went away).
    No,
}

/// The claim transaction: bump the assignment from version 0, create the
/// ephemeral claim, and prove there is no result yet (creating and deleting
/// `/status/<t>` fails if it exists). A stray assignment of a task that
/// already has its result is removed.
fn claim(ctx: &JobContext, name: &str, task: Task) -> Claimed {
    let started_ms = model::now_ms();
    let task = task.started(&ctx.worker, started_ms);
    let claim = Claim {
        worker: ctx.worker.clone(),
        started_ms,
        attempt: task.attempts,
        progress: None,
        progress_message: None,
    };
    let assignment = ctx.layout.assignment(&ctx.worker, name);
    let status = ctx.layout.status_task(name);
    let mut txn = vec![
        Op::SetData {
            path: assignment.clone(),
            data: model::encode(&task),
            version: Some(0),
        },
        Op::CreateEphemeral {
            path: ctx.layout.running_task(name),
            data: model::encode(&claim),
        },
        Op::Create {
            path: status.clone(),
            data: Vec::new(),
        },
        Op::Delete {
            path: status,
            version: None,
        },
    ];
    if let Some(lock) = &task.lock {
        // The lock is held by the run itself: ephemeral, with the claim.
        let holder = LockHolder {
            task: name.to_string(),
            worker: ctx.worker.clone(),
        };
        txn.push(Op::CreateEphemeral {
            path: ctx.layout.lock(lock),
            data: model::encode(&holder),
        });
    }
    let result = ctx.obs.metrics().txn("claim", ctx.zk.multi(&txn));
    match decide::on_claim(&result) {
        ClaimVerdict::Ours => Claimed::Yes(Box::new(task)),
        ClaimVerdict::Unknown => {
            // Ours if the claim node exists and this session owns it.
            let owner = settle(ctx, |zk| zk.exists(&ctx.layout.running_task(name)));
            let ours = owner
                .flatten()
                .is_some_and(|s| s.ephemeral_owner == ctx.zk.session_id());
            if ours {
                Claimed::Yes(Box::new(task))
            } else {
                Claimed::No
            }
        }
        ClaimVerdict::HeldByAnotherRun => {
            warn!("{name}: assigned here, but another run holds it; not running it");
            Claimed::Held
        }
        ClaimVerdict::LockHeld => {
            info!("{name}: its lock is held by another run; not running it yet");
            Claimed::Held
        }
        ClaimVerdict::Finished => {
            warn!("{name}: assigned here, but it already has its result; removing the assignment");
            let _ = ctx.zk.multi(&[Op::Delete {
                path: assignment,
                version: Some(0),
            }]);
            Claimed::No
        }
        ClaimVerdict::NotOurs => {
            debug!("{name}: not claimed: {result:?}");
            Claimed::No
        }
    }
}

fn execute(ctx: &JobContext, name: &str, task: &Task, kill: &KillSwitch) -> JobReport {
    let mut spec = JobSpec {
        command: task.job.clone(),
        task_id: name.to_string(),
        attempt: task.attempts,
        timeout: task.timeout_ms.map(Duration::from_millis),
        output_cap: ctx.output_cap,
        shell: ctx.shell.to_string_lossy().into_owned(),
        progress: Some(progress_sink(ctx, name, task)),
    };
    exec::run(&mut spec, kill)
}

/// Where the job's progress reports go: into its claim, through the
/// session's relay (which coalesces them).
fn progress_sink(ctx: &JobContext, name: &str, task: &Task) -> exec::ProgressSink {
    let relay = ctx.progress.clone();
    let task_name = name.to_string();
    let mut claim = Claim {
        worker: ctx.worker.clone(),
        started_ms: task.history.last().map_or(0, |a| a.started_ms),
        attempt: task.attempts,
        progress: None,
        progress_message: None,
    };
    Box::new(move |report| {
        claim.progress = Some(report.percent);
        claim.progress_message = Some(report.message);
        let _ = relay.send(relay::Update {
            task: task_name.clone(),
            claim: claim.clone(),
        });
    })
}

/// The /status record for a job's report.
pub fn result_of(ctx: &JobContext, task: &Task, report: JobReport) -> TaskResult {
    let end = attempt_end(&report.outcome);
    let history = task.clone().ended(end, report.finished_ms).history;
    let (state, exit_code, signal, reason) = match report.outcome {
        Outcome::Exited(code) => (FinalState::Done, Some(code), None, None),
        Outcome::Signaled(sig) => (FinalState::Done, None, Some(sig), None),
        ref other => (FinalState::Failed, None, None, Some(fail_reason(other))),
    };
    TaskResult {
        state,
        exit_code,
        signal,
        reason,
        stdout: lossy(&report.stdout),
        stderr: lossy(&report.stderr),
        stdout_truncated: report.stdout.truncated,
        stderr_truncated: report.stderr.truncated,
        worker: Some(ctx.worker.clone()),
        attempts: task.attempts,
        job: task.job.clone(),
        token: task.token.clone(),
        submitted_ms: task.submitted_ms,
        started_ms: Some(report.started_ms),
        finished_ms: report.finished_ms,
        history,
        lock: task.lock.clone(),
        unique: task.unique.clone(),
    }
}

/// Why zkmw failed a run that ended this way (those that are not the job's
/// own exit or signal).
fn fail_reason(outcome: &Outcome) -> FailReason {
    match outcome {
        Outcome::TimedOut => FailReason::TimedOut,
        Outcome::CouldNotStart(why) => FailReason::CouldNotStart(why.clone()),
        Outcome::Cancelled => FailReason::Cancelled,
        Outcome::Killed | Outcome::Exited(_) | Outcome::Signaled(_) => FailReason::Killed,
    }
}

fn lossy(captured: &Captured) -> String {
    String::from_utf8_lossy(&captured.bytes).into_owned()
}

/// The finish transaction, retried (with backoff) while the outcome is
/// unknown and this session lives. The record is cut to fit a request.
fn finish(ctx: &JobContext, name: &str, mut result: TaskResult) {
    if result.fit(MAX_NODE_BYTES) {
        warn!("{name}: output cut to fit ZooKeeper's limit once encoded (marked truncated)");
    }
    let layout = &ctx.layout;
    let mut txn = vec![
        Op::Create {
            path: layout.status_task(name),
            data: model::encode(&result),
        },
        Op::Delete {
            path: layout.assignment(&ctx.worker, name),
            version: None,
        },
        Op::Delete {
            path: layout.running_task(name),
            version: None,
        },
    ];
    // What goes with the result, if there: its lock, its place in the
    // lock's queue, a cancel request it carried out.
    if let Some(lock) = &result.lock {
        txn.push(Op::Delete {
            path: layout.lock(lock),
            version: None,
        });
        txn.push(Op::Delete {
            path: layout.lockq_member(lock, &result.token),
            version: None,
        });
    }
    if result.reason == Some(FailReason::Cancelled) {
        txn.push(Op::Delete {
            path: layout.cancel_task(name),
            version: None,
        });
    }
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    while ctx.current() && !ctx.zk.is_lost() {
        let err = match ctx.obs.metrics().txn("finish", ctx.zk.multi(&txn)) {
            Ok(()) => return stored(ctx, name, &result),
            Err(err) => err,
        };
        if let (Some(i @ 3..), ZkError::NoNode) = err.txn_cause() {
            // Something that goes with the result is gone already (a
            // master cleaned it up): store the result without it.
            txn.remove(i);
            continue;
        }
        if err.is_txn_failure(0, &ZkError::NodeExists) {
            // Already has its one result (an earlier try of ours whose reply
            // was lost): remove the leftovers.
            let _ = ctx.zk.multi(&txn[1..]);
            return stored(ctx, name, &result);
        }
        if !err.is_unknown_outcome() {
            warn!("{name}: result not stored ({err}); the master will run it again");
            return;
        }
        warn!("{name}: storing the result: {err}; checking and retrying");
        // Unknown outcome: done if our claim is gone and a result exists.
        if let Some(None) = settle(ctx, |zk| zk.exists(&layout.running_task(name))) {
            return;
        }
        backoff.sleep();
    }
}

/// A run's result is stored: it counts, and the log says how it ended.
fn stored(ctx: &JobContext, name: &str, result: &TaskResult) {
    ctx.obs.metrics().task_finished(result);
    let took = result
        .finished_ms
        .saturating_sub(result.started_ms.unwrap_or(0));
    let how = match (&result.reason, result.exit_code, result.signal) {
        (Some(reason), ..) => reason.to_string(),
        (None, Some(code), _) => format!("exit {code}"),
        (None, None, Some(signal)) => format!("signal {signal}"),
        (None, None, None) => "done".to_string(),
    };
    let attempt = result.attempts;
    info!("{name}: finished: {how} after {took} ms (attempt {attempt})");
}

/// Runs a read once the session is connected again; `None` if the session
/// ends first. The read follows a sync, so it sees every committed write,
/// whichever server the session is on now; and it is answered after the
/// session's earlier write, which is by then applied or refused.
fn settle<T>(ctx: &JobContext, read: impl Fn(&Zk) -> Result<T, ZkError>) -> Option<T> {
    let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_secs(1));
    while ctx.current() && !ctx.zk.is_lost() {
        match ctx.zk.sync(ctx.layout.root()).and_then(|()| read(&ctx.zk)) {
            Ok(value) => return Some(value),
            Err(err) => debug!("waiting for ZooKeeper to settle: {err}"),
        }
        backoff.sleep();
    }
    None
}
