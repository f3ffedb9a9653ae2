//! `zkmw cancel TASK...`: a task not started yet is failed `cancelled` at
//! once, by one transaction that removes it from where it waits (so it
//! races the master's assignment or the worker's claim, and exactly one of
//! them wins); a running one gets a request in `/cancel/<t>`, which its
//! worker carries out (SIGTERM to the job's process group, SIGKILL after
//! the grace) and stores as the result, output so far included. Requests
//! are persistent: one made while the worker is cut off, or while no master
//! runs, takes effect when they are back (see `master/plan.rs` for what
//! the master does with them).

use std::time::Duration;

use log::debug;

use super::wait::{self, WaitEnd, Waiting};
use crate::error::Error;
use crate::layout::{Layout, is_task_name};
use crate::locate::{self, Place};
use crate::model::{self, CancelRequest, FailReason, Task, TaskResult};
use crate::zk::{Op, Zk, ZkError};

/// How a cancel went, for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancelled {
    /// It had not started: it is failed `cancelled` now.
    BeforeStart,
    /// It runs on this worker, which is asked to stop it.
    Asked {
        /// The worker running it.
        worker: String,
    },
}

/// How often a cancel looks again at a task that moved under it.
const TRIES: usize = 5;

/// Cancels `task`, stopping it within `grace` if it runs.
///
/// Notable errors: [`Error::NoSuchTask`], [`Error::AlreadyFinished`].
pub fn cancel(zk: &Zk, layout: &Layout, task: &str, grace: Duration) -> Result<Cancelled, Error> {
    if !is_task_name(task) {
        return Err(Error::BadInput(format!(
            "'{task}' is not a task id (expected task-NNNNNNNNNN)"
        )));
    }
    let doing = |err| Error::zk(format!("cancelling {task}"), err);
    for _ in 0..TRIES {
        let Some(place) = locate::find(zk, layout, task).map_err(doing)? else {
            continue;
        };
        match try_cancel(zk, layout, task, place, grace) {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => debug!("{task} moved while being cancelled; looking again"),
            Err(Attempt::Finished(how)) => {
                return Err(Error::AlreadyFinished {
                    task: task.to_string(),
                    how,
                });
            }
            Err(Attempt::Zk(err)) => return Err(doing(err)),
        }
    }
    match locate::find(zk, layout, task).map_err(doing)? {
        Some(_) => Err(doing(ZkError::Other("it keeps moving; try again".into()))),
        None => Err(Error::NoSuchTask {
            task: task.to_string(),
            why: locate::missing(zk, layout, task).map_err(doing)?,
        }),
    }
}

/// Why one try did not cancel.
enum Attempt {
    /// It has its result already; how it ended.
    Finished(String),
    Zk(ZkError),
}

/// One try, from where the task was seen; `None` when it moved meanwhile.
fn try_cancel(
    zk: &Zk,
    layout: &Layout,
    name: &str,
    place: Place,
    grace: Duration,
) -> Result<Option<Cancelled>, Attempt> {
    let (task, delete) = match place {
        Place::Finished { result, .. } => return Err(Attempt::Finished(how_it_ended(&result))),
        Place::Assigned { worker, stat, .. } if stat.version > 0 => {
            return ask_worker(zk, layout, name, grace).map(|()| Some(Cancelled::Asked { worker }));
        }
        Place::Assigned {
            worker, task, stat, ..
        } => (task, (layout.assignment(&worker, name), stat.version)),
        Place::Pending { task, stat } => (task, (layout.task(name), stat.version)),
    };
    let result = cancelled_result(task.ok().as_ref());
    let txn = [
        Op::Create {
            path: layout.status_task(name),
            data: model::encode(&result),
        },
        Op::Delete {
            path: delete.0,
            version: Some(delete.1),
        },
    ];
    match zk.multi(&txn) {
        Ok(()) => {
            leave_lock_queue(zk, layout, &result);
            Ok(Some(Cancelled::BeforeStart))
        }
        // A result meanwhile, or the task moved on: look again.
        Err(err) if err.txn_cause().0.is_some() => Ok(None),
        Err(err) => Err(Attempt::Zk(err)),
    }
}

/// Takes a cancelled task out of its lock's queue (best effort: the
/// master forgets members of finished tasks too).
fn leave_lock_queue(zk: &Zk, layout: &Layout, result: &TaskResult) {
    if let Some(lock) = &result.lock {
        let member = layout.lockq_member(lock, &result.token);
        if let Err(err) = zk.multi(&[Op::Delete {
            path: member,
            version: None,
        }]) {
            debug!("leaving the lock queue of {lock}: {err}");
        }
    }
}

/// Leaves the request for the worker running the task.
fn ask_worker(zk: &Zk, layout: &Layout, name: &str, grace: Duration) -> Result<(), Attempt> {
    let request = CancelRequest {
        grace_ms: grace.as_millis() as u64,
        requested_ms: model::now_ms(),
    };
    match zk.create(&layout.cancel_task(name), &model::encode(&request)) {
        Ok(()) | Err(ZkError::NodeExists) => Ok(()),
        Err(err) => Err(Attempt::Zk(err)),
    }
}

/// The result of a task cancelled before it started.
fn cancelled_result(task: Option<&Task>) -> TaskResult {
    TaskResult::failed(task, FailReason::Cancelled, None, model::now_ms())
}

/// How a finished task ended, in words.
fn how_it_ended(result: &Result<TaskResult, String>) -> String {
    match result {
        Ok(r) => match (&r.reason, r.exit_code, r.signal) {
            (Some(reason), ..) => format!("it failed: {reason}"),
            (None, Some(code), _) => format!("it finished with exit code {code}"),
            (None, None, Some(signal)) => format!("it died of signal {signal}"),
            (None, None, None) => "it finished".to_string(),
        },
        Err(why) => format!("it has a result ({why})"),
    }
}

/// With `--wait`: waits for a running task's result; true if it ended
/// cancelled, false (with a line saying how it ended) if it finished on
/// its own before the cancel took effect.
pub fn wait_for_end(waiting: &Waiting, zk: Zk) -> (Option<Zk>, Result<bool, Error>) {
    let (zk, end) = waiting.wait(Some(zk), std::time::Instant::now());
    let outcome = match end {
        WaitEnd::Result(result) if result.reason == Some(FailReason::Cancelled) => Ok(true),
        WaitEnd::Result(result) => {
            eprintln!(
                "zkmw: {} was not cancelled: {} before the cancel took effect",
                waiting.task,
                how_it_ended(&Ok(*result))
            );
            Ok(false)
        }
        other => wait::report(waiting.task, other).map(|_| false),
    };
    (zk, outcome)
}
