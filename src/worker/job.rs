//! One task's life on a worker thread: claim it, run it, store its result.
//!
//! The claim is one transaction: bump the assignment's version from 0 (it
//! was not claimed before) and create the ephemeral `/running/<t>` (nobody
//! else runs it). So a task runs at most once at a time, even if a bug or a
//! deposed master assigned it twice. The finish is one transaction too:
//! create `/status/<t>`, delete the assignment and the claim.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;
use log::{debug, info, warn};

use super::Msg;
use crate::exec::{self, Captured, JobReport, JobSpec, KillSwitch, Outcome};
use crate::layout::Layout;
use crate::model::{self, Claim, FinalState, Task, TaskResult};
use crate::zk::{Op, Zk, ZkError};

/// Reason recorded when a job ran past its `--timeout`.
pub const TIMED_OUT: &str = "timed out";
/// Prefix of the reason recorded when a job could not be started.
pub const COULD_NOT_START: &str = "could not start";

/// What a job thread reports to the control loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEvent {
    /// The task is claimed and its job is running.
    Started,
    /// The thread is done with the task (finished, skipped or abandoned).
    Ended,
    /// Not run: another run holds the task's claim.
    Held,
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
    /// Set on SIGTERM: tasks not yet claimed are left for the master.
    pub draining: Arc<AtomicBool>,
    /// The control loop's channel.
    pub tx: Sender<Msg>,
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
    if !ctx.current() || ctx.draining.load(Ordering::SeqCst) || kill.is_killed() {
        ctx.report(task_name, JobEvent::Ended);
        return;
    }
    let task = match claim(ctx, task_name, task) {
        Claimed::Yes(task) => task,
        Claimed::Held => return ctx.report(task_name, JobEvent::Held),
        Claimed::No => return ctx.report(task_name, JobEvent::Ended),
    };
    ctx.report(task_name, JobEvent::Started);
    let report = execute(ctx, task_name, &task, kill);
    if matches!(report.outcome, Outcome::Killed) || !ctx.current() {
        info!("{task_name}: run abandoned (worker stopping or session lost)");
    } else {
        finish(ctx, task_name, &result_of(ctx, &task, report));
    }
    ctx.report(task_name, JobEvent::Ended);
}

/// How a claim attempt ended.
enum Claimed {
    /// Ours: the task, with this run counted.
    Yes(Task),
    /// Another run holds the task's claim: look again later.
    Held,
    /// Not ours to run (the assignment changed or went away).
    No,
}

/// The claim transaction: bump the assignment from version 0, create the
/// ephemeral claim, and prove there is no result yet (creating and deleting
/// `/status/<t>` fails if it exists). A stray assignment of a task that
/// already has its result is removed.
fn claim(ctx: &JobContext, name: &str, mut task: Task) -> Claimed {
    task.attempts += 1;
    let claim = Claim {
        worker: ctx.worker.clone(),
        started_ms: model::now_ms(),
        attempt: task.attempts,
    };
    let assignment = ctx.layout.assignment(&ctx.worker, name);
    let status = ctx.layout.status_task(name);
    let txn = [
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
    match ctx.zk.multi(&txn) {
        Ok(()) => Claimed::Yes(task),
        Err(err) if err.is_unknown_outcome() => {
            // Ours if the claim node exists and this session owns it.
            let owner = settle(ctx, |zk| zk.exists(&ctx.layout.running_task(name)));
            let ours = owner
                .flatten()
                .is_some_and(|s| s.ephemeral_owner == ctx.zk.session_id());
            if ours {
                Claimed::Yes(task)
            } else {
                Claimed::No
            }
        }
        Err(err) if err.is_txn_failure(1, &ZkError::NodeExists) => {
            warn!("{name}: assigned here, but another run holds it; not running it");
            Claimed::Held
        }
        Err(err) if err.is_txn_failure(2, &ZkError::NodeExists) => {
            warn!("{name}: assigned here, but it already has its result; removing the assignment");
            let _ = ctx.zk.multi(&[Op::Delete {
                path: assignment,
                version: Some(0),
            }]);
            Claimed::No
        }
        Err(err) => {
            debug!("{name}: not claimed: {err}");
            Claimed::No
        }
    }
}

fn execute(ctx: &JobContext, name: &str, task: &Task, kill: &KillSwitch) -> JobReport {
    let spec = JobSpec {
        command: task.job.clone(),
        task_id: name.to_string(),
        attempt: task.attempts,
        timeout: task.timeout_ms.map(Duration::from_millis),
        output_cap: ctx.output_cap,
        shell: ctx.shell.to_string_lossy().into_owned(),
        keep_fd: None,
    };
    exec::run(&spec, kill)
}

/// The /status record for a job's report.
pub fn result_of(ctx: &JobContext, task: &Task, report: JobReport) -> TaskResult {
    let (state, exit_code, signal, reason) = match report.outcome {
        Outcome::Exited(code) => (FinalState::Done, Some(code), None, None),
        Outcome::Signaled(sig) => (FinalState::Done, None, Some(sig), None),
        Outcome::TimedOut => (FinalState::Failed, None, None, Some(TIMED_OUT.to_string())),
        Outcome::CouldNotStart(why) => (
            FinalState::Failed,
            None,
            None,
            Some(format!("{COULD_NOT_START}: {why}")),
        ),
        Outcome::Killed => (FinalState::Failed, None, None, Some("killed".to_string())),
        Outcome::Cancelled => (
            FinalState::Failed,
            None,
            None,
            Some("cancelled".to_string()),
        ),
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
    }
}

fn lossy(captured: &Captured) -> String {
    String::from_utf8_lossy(&captured.bytes).into_owned()
}

/// The finish transaction, retried while the outcome is unknown and this
/// session lives.
fn finish(ctx: &JobContext, name: &str, result: &TaskResult) {
    let layout = &ctx.layout;
    let assignment = layout.assignment(&ctx.worker, name);
    let running = layout.running_task(name);
    let txn = [
        Op::Create {
            path: layout.status_task(name),
            data: model::encode(result),
        },
        Op::Delete {
            path: assignment.clone(),
            version: None,
        },
        Op::Delete {
            path: running.clone(),
            version: None,
        },
    ];
    while ctx.current() && !ctx.zk.is_lost() {
        let err = match ctx.zk.multi(&txn) {
            Ok(()) => {
                debug!("{name}: finished ({:?})", result.state);
                return;
            }
            Err(err) => err,
        };
        if err.is_txn_failure(0, &ZkError::NodeExists) {
            // Already has its one result (an earlier try of ours whose reply
            // was lost): remove the leftovers.
            let _ = ctx.zk.multi(&txn[1..]);
            return;
        }
        if !err.is_unknown_outcome() {
            warn!("{name}: result not stored ({err}); the master will run it again");
            return;
        }
        // Unknown outcome: done if our claim is gone and a result exists.
        let claim_left = settle(ctx, |zk| zk.exists(&running));
        if let Some(None) = claim_left {
            return;
        }
    }
}

/// Runs a read once the session is connected again; `None` if the session
/// ends first. The read follows a sync, so it sees every committed write,
/// whichever server the session is on now; and it is answered after the
/// session's earlier write, which is by then applied or refused.
fn settle<T>(ctx: &JobContext, read: impl Fn(&Zk) -> Result<T, ZkError>) -> Option<T> {
    let mut backoff = Duration::from_millis(20);
    while ctx.current() && !ctx.zk.is_lost() {
        match ctx.zk.sync(ctx.layout.root()).and_then(|()| read(&ctx.zk)) {
            Ok(value) => return Some(value),
            Err(err) => debug!("waiting for ZooKeeper to settle: {err}"),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    None
}
