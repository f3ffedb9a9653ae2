//! One task's run on a worker thread, and the steps that claim it and store
//! what became of it. The control loop (`serve.rs`) sends those steps,
//! together with the other tasks' steps of the moment, as few ZooKeeper
//! transactions as it can (`zk::group`); each step stays all-or-nothing.
//!
//! The claim is one step: bump the assignment's version from 0 (it was not
//! claimed before) and create the ephemeral `/running/<t>` (nobody else runs
//! it). So a task runs at most once at a time, even if a bug or a deposed
//! master assigned it twice. The finish is one step too: create
//! `/status/<t>`, delete the assignment and the claim. A run the worker had
//! to kill while its session lives (stopping past the drain timeout) is
//! handed back in one step: `/tasks/<t>` created again, the assignment and
//! the claim deleted, so it runs again at once. A claim made ahead whose
//! job never started is released the same way, its run not counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::Sender;

use super::{Msg, relay};
use crate::exec::{self, Captured, JobReport, JobSpec, KillSwitch, Outcome};
use crate::layout::Layout;
use crate::model::{
    self, AttemptEnd, Claim, FailReason, FinalState, LockHolder, MAX_NODE_BYTES, Task, TaskResult,
};
use crate::obs;
use crate::zk::Op;

/// What every job thread of one session shares.
#[derive(Clone)]
pub struct JobContext {
    /// This worker's id.
    pub worker: String,
    /// Bytes kept of stdout and of stderr.
    pub output_cap: usize,
    /// The shell that runs jobs.
    pub shell: PathBuf,
    /// Bumped when a session ends: reports of older sessions are dropped.
    pub generation: Arc<AtomicU64>,
    /// The generation this context belongs to.
    pub my_generation: u64,
    /// The control loop's channel.
    pub tx: Sender<Msg>,
    /// The session's progress relay.
    pub progress: Sender<relay::Update>,
}

/// Runs a claimed task's job and reports how it ended to the control loop,
/// which stores what became of it.
pub fn run(ctx: &JobContext, task_name: &str, task: &Task, kill: &KillSwitch) {
    let _about = obs::log::task_scope(task_name);
    let report = execute(ctx, task_name, task, kill);
    if !ctx.current() {
        log::info!("{task_name}: run abandoned: its session is gone, the master runs it again");
    }
    let _ = ctx.tx.send(Msg::Job {
        task: task_name.to_string(),
        generation: ctx.my_generation,
        report: Box::new(report),
    });
}

impl JobContext {
    /// Whether this context's session is still the worker's.
    fn current(&self) -> bool {
        self.generation.load(Ordering::SeqCst) == self.my_generation
    }
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

/// A claimed assignment: the task as it was assigned, and with this run
/// counted (what its job runs as).
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The task as assigned, before the claim.
    pub assigned: Task,
    /// The task with this run counted.
    pub run: Task,
}

/// What is to be written for a run that ended.
#[derive(Debug, Clone, PartialEq)]
pub enum EndStep {
    /// Store its result, with what goes with it.
    Finish {
        /// The result.
        result: Box<TaskResult>,
        /// The step (operations 3 on go with the result, if there).
        ops: Vec<Op>,
    },
    /// `--retry-failed`: back to the queue, to run again after its delay;
    /// if that cannot be done, the result is stored instead.
    Retry {
        /// The step.
        ops: Vec<Op>,
        /// The wait before the re-run, in milliseconds.
        delay_ms: u64,
        /// Its failed runs so far, this one included.
        failed_runs: u32,
        /// The result to store if the re-run cannot be queued.
        result: Box<TaskResult>,
    },
    /// Killed by the worker while its session lives (stopping past the
    /// drain timeout): back to the queue.
    HandBack {
        /// The step.
        ops: Vec<Op>,
    },
    /// Claimed ahead, its job not started: back to the queue as it was
    /// assigned, the run not counted. If that cannot be done, the job
    /// runs here after all.
    Release {
        /// The step.
        ops: Vec<Op>,
        /// The claim, to run if the release fails.
        claim: Box<Claimed>,
    },
}

impl EndStep {
    /// The step's operations.
    pub fn ops(&self) -> &[Op] {
        match self {
            EndStep::Finish { ops, .. }
            | EndStep::Retry { ops, .. }
            | EndStep::HandBack { ops }
            | EndStep::Release { ops, .. } => ops,
        }
    }
}

/// Decides what to write for `task`'s run that ended as `report` says.
pub fn end_step(
    layout: &Layout,
    worker: &str,
    name: &str,
    task: &Task,
    report: JobReport,
) -> EndStep {
    if report.outcome == Outcome::Killed {
        return EndStep::HandBack {
            ops: hand_back_ops(layout, worker, name, task),
        };
    }
    let end = attempt_end(&report.outcome);
    let retry = task.retry_after(&end);
    let result = Box::new(result_of(worker, task, report));
    match retry {
        Some(delay_ms) => {
            let mut again = task.clone().ended(end, model::now_ms());
            again.failed_runs += 1;
            again.not_before_ms = Some(model::now_ms() + delay_ms);
            EndStep::Retry {
                ops: back_to_queue(layout, worker, name, &again),
                delay_ms,
                failed_runs: again.failed_runs,
                result,
            }
        }
        None => finish(layout, worker, name, result),
    }
}

/// The step that stores `result` (cut to fit a node once encoded).
pub fn finish(layout: &Layout, worker: &str, name: &str, mut result: Box<TaskResult>) -> EndStep {
    if result.fit(MAX_NODE_BYTES) {
        log::warn!("{name}: output cut to fit ZooKeeper's limit once encoded (marked truncated)");
    }
    let ops = finish_ops(layout, worker, name, &result);
    EndStep::Finish { result, ops }
}

/// `/tasks/<t>` created again with `task`, the claimed assignment
/// (version 1), the claim and the task's lock deleted: the lock goes with
/// this run, the task keeps its place in the lock's queue. The step of a
/// run handed back, and of `--retry-failed`'s re-run (its delay stored in
/// the task, so a new master knows it).
fn back_to_queue(layout: &Layout, worker: &str, name: &str, task: &Task) -> Vec<Op> {
    let mut ops = vec![
        Op::Create {
            path: layout.task(name),
            data: model::encode(task),
        },
        Op::Delete {
            path: layout.assignment(worker, name),
            version: Some(1),
        },
        Op::Delete {
            path: layout.running_task(name),
            version: None,
        },
    ];
    ops.extend(release_lock(layout, task));
    ops
}

/// The operation releasing a task's lock (its claim created it).
fn release_lock(layout: &Layout, task: &Task) -> Option<Op> {
    task.lock.as_ref().map(|lock| Op::Delete {
        path: layout.lock(lock),
        version: None,
    })
}

/// The hand-back step of a run the worker killed: back in the queue, its
/// attempts counting the run. If it fails, the claim goes with the session
/// and the master requeues the task.
fn hand_back_ops(layout: &Layout, worker: &str, name: &str, task: &Task) -> Vec<Op> {
    let back = task.clone().ended(AttemptEnd::HandedBack, model::now_ms());
    back_to_queue(layout, worker, name, &back)
}

/// The step releasing a claim whose job has not started: the task goes
/// back to the queue as it was assigned (its attempts as they were).
pub fn release(layout: &Layout, worker: &str, name: &str, claim: Claimed) -> EndStep {
    EndStep::Release {
        ops: back_to_queue(layout, worker, name, &claim.assigned),
        claim: Box::new(claim),
    }
}

/// The claim step of `task` at `started_ms` (see `decide::on_claim` for
/// what each operation's failure means): raise the assignment from version
/// 0, create the ephemeral claim, prove there is no result yet (creating
/// and deleting `/status/<t>` fails if it exists), and take the task's
/// lock. Returns the claim and its step.
pub fn claim(
    layout: &Layout,
    worker: &str,
    name: &str,
    assigned: Task,
    started_ms: u64,
) -> (Claimed, Vec<Op>) {
    let task = assigned.clone().started(worker, started_ms);
    let claim = Claim {
        worker: worker.to_string(),
        started_ms,
        attempt: task.attempts,
        progress: None,
        progress_message: None,
    };
    let status = layout.status_task(name);
    let mut ops = vec![
        Op::SetData {
            path: layout.assignment(worker, name),
            data: model::encode(&task),
            version: Some(0),
        },
        Op::CreateEphemeral {
            path: layout.running_task(name),
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
            worker: worker.to_string(),
        };
        ops.push(Op::CreateEphemeral {
            path: layout.lock(lock),
            data: model::encode(&holder),
        });
    }
    (
        Claimed {
            assigned,
            run: task,
        },
        ops,
    )
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
pub fn result_of(worker: &str, task: &Task, report: JobReport) -> TaskResult {
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
        worker: Some(worker.to_string()),
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

/// The finish step: create `/status/<t>`, delete the assignment and the
/// claim, and (operations 3 on) what goes with the result if there: its
/// lock, its place in the lock's queue, a cancel request it carried out.
pub fn finish_ops(layout: &Layout, worker: &str, name: &str, result: &TaskResult) -> Vec<Op> {
    let mut ops = vec![
        Op::Create {
            path: layout.status_task(name),
            data: model::encode(result),
        },
        Op::Delete {
            path: layout.assignment(worker, name),
            version: None,
        },
        Op::Delete {
            path: layout.running_task(name),
            version: None,
        },
    ];
    if let Some(lock) = &result.lock {
        ops.push(Op::Delete {
            path: layout.lock(lock),
            version: None,
        });
        ops.push(Op::Delete {
            path: layout.lockq_member(lock, &result.token),
            version: None,
        });
    }
    if result.reason == Some(FailReason::Cancelled) {
        ops.push(Op::Delete {
            path: layout.cancel_task(name),
            version: None,
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::decide::{self, ClaimVerdict};
    use crate::zk::ZkError;
    use crate::zk::group::fake::FakeZk;

    /// The claim takes an assignment only at version 0: one that a run
    /// raised already (its claim gone with that run's session, say) is not
    /// this worker's to run again; the master decides what becomes of it.
    #[test]
    fn a_claim_takes_only_an_assignment_no_run_has_raised() {
        let layout = Layout::new("/zkmw");
        let task = "task-0000000001";
        let assignment = layout.assignment("w1", task);
        let mut zk = FakeZk::with(&[&assignment]);
        zk.nodes.insert(assignment.clone(), 1);
        let (_, ops) = claim(&layout, "w1", task, Task::default(), 0);

        let raised = zk.send(std::slice::from_ref(&ops)).remove(0).map(|_| ());
        assert!(
            matches!(raised, Err(ZkError::TxnFailed { index: 0, .. })),
            "{raised:?}"
        );
        assert_eq!(decide::on_claim(&raised), ClaimVerdict::NotOurs);
        assert!(!zk.has(&layout.running_task(task)), "no claim was made");

        zk.nodes.insert(assignment.clone(), 0);
        let fresh = zk.send(&[ops]).remove(0).map(|_| ());
        assert_eq!(decide::on_claim(&fresh), ClaimVerdict::Ours);
        assert_eq!(zk.nodes[&assignment], 1, "the claim raised it");
    }
}
