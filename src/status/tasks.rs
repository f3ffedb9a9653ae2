//! `zkmw tasks`: the tasks of the namespace, newest first, one line each,
//! filtered by state and worker, at most `--limit` of them.
//!
//! It lists the folders (names only, as `status` does), places every task
//! by the most advanced folder it is in, and reads the records of only as
//! many tasks as it shows, newest first, in pipelined batches: so it stays
//! fast with 100,000 tasks in the namespace. Finished tasks are told done
//! from failed, and their worker known, only once their result is read.

use std::collections::BTreeMap;

use serde::Serialize;

use super::view::{ClusterRead, TaskState, TaskView, WaitingView};
use super::{assigned_view, read_tasks, reading};
use crate::error::Error;
use crate::layout::{Layout, task_sequence};
use crate::model::{self, Claim, FailReason, TaskResult};
use crate::zk::{Node, Zk};

/// What `zkmw tasks` shows.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only tasks in this state.
    pub state: Option<TaskState>,
    /// Only tasks of this worker (assigned to it, or run by it last).
    pub worker: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// One line of `zkmw tasks`: a task's view without its output and history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskRow {
    /// The task id.
    pub task: String,
    /// Where it stands.
    pub state: TaskState,
    /// The worker it is assigned to, or that ran it last.
    pub worker: Option<String>,
    /// The shell command.
    pub job: Option<String>,
    /// Runs started so far.
    pub attempts: Option<u32>,
    /// When it was submitted (unix ms).
    pub submitted_ms: Option<u64>,
    /// When its last run started (unix ms).
    pub started_ms: Option<u64>,
    /// When it finished (unix ms).
    pub finished_ms: Option<u64>,
    /// The job's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the job, when one did.
    pub signal: Option<i32>,
    /// Why it failed, when it did.
    pub reason: Option<FailReason>,
    /// A running job's progress, 0 to 100.
    pub progress: Option<f64>,
    /// The message of that progress.
    pub progress_message: Option<String>,
    /// What a pending task waits for, besides a free worker.
    pub waiting_for: Option<WaitingView>,
}

impl From<TaskView> for TaskRow {
    fn from(v: TaskView) -> Self {
        let r = v.result.as_ref();
        TaskRow {
            finished_ms: r.and_then(|r| r.finished_ms),
            exit_code: r.and_then(|r| r.exit_code),
            signal: r.and_then(|r| r.signal),
            reason: r.and_then(|r| r.reason.clone()),
            task: v.task,
            state: v.state,
            worker: v.worker,
            job: v.job,
            attempts: v.attempts,
            submitted_ms: v.submitted_ms,
            started_ms: v.started_ms,
            progress: v.progress,
            progress_message: v.progress_message,
            waiting_for: v.waiting_for,
        }
    }
}

/// Where a listed task is, by its folders alone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spot {
    Pending,
    Assigned(String),
    Finished,
}

/// Records read per batch: a little more than a page, so that filtering
/// finished tasks by done/failed or worker rarely needs a second batch.
const BATCH: usize = 200;

/// The tasks `query` asks for, newest first.
pub fn tasks(zk: &Zk, layout: &Layout, query: &Query) -> Result<Vec<TaskRow>, Error> {
    let mut read = ClusterRead::default();
    read_tasks(zk, layout, &mut read)?;
    task_rows(zk, layout, &read, query)
}

/// The rows of the tasks `query` asks for among those `read` listed,
/// newest first: one read of the namespace can serve several queries.
pub fn task_rows(
    zk: &Zk,
    layout: &Layout,
    read: &ClusterRead,
    query: &Query,
) -> Result<Vec<TaskRow>, Error> {
    let views = task_views(zk, layout, read, query)?;
    Ok(views.into_iter().map(TaskRow::from).collect())
}

/// The views of the tasks `query` asks for among those `read` listed,
/// newest first: each with its output once finished.
fn task_views(
    zk: &Zk,
    layout: &Layout,
    read: &ClusterRead,
    query: &Query,
) -> Result<Vec<TaskView>, Error> {
    let candidates: Vec<(String, Spot)> = spots(read)
        .into_iter()
        .filter(|(_, spot)| may_match(spot, query))
        .collect();
    let mut rows = Vec::new();
    for batch in candidates.chunks(BATCH) {
        for row in read_rows(zk, layout, batch)? {
            if rows.len() < query.limit && matches(&row, query) {
                rows.push(row);
            }
        }
        if rows.len() >= query.limit {
            break;
        }
    }
    Ok(rows)
}

/// Every listed task where its most advanced folder puts it, newest first.
fn spots(read: &ClusterRead) -> Vec<(String, Spot)> {
    let mut spots: BTreeMap<i64, (String, Spot)> = BTreeMap::new();
    let mut place = |name: &String, spot: Spot| {
        if let Some(seq) = task_sequence(name) {
            spots.insert(seq, (name.clone(), spot));
        }
    };
    read.pending.iter().for_each(|t| place(t, Spot::Pending));
    for (worker, names) in &read.assigned {
        names
            .iter()
            .for_each(|t| place(t, Spot::Assigned(worker.clone())));
    }
    read.finished.iter().for_each(|t| place(t, Spot::Finished));
    spots.into_values().rev().collect()
}

/// Whether a task at `spot` may be one `query` asks for (finished ones are
/// known only once read).
fn may_match(spot: &Spot, query: &Query) -> bool {
    let state_ok = match (spot, query.state) {
        (_, None) => true,
        (Spot::Pending, Some(state)) => state == TaskState::Pending,
        (Spot::Assigned(_), Some(state)) => {
            matches!(state, TaskState::Assigned | TaskState::Running)
        }
        (Spot::Finished, Some(state)) => matches!(state, TaskState::Done | TaskState::Failed),
    };
    let worker_ok = match (spot, &query.worker) {
        (_, None) | (Spot::Finished, Some(_)) => true,
        (Spot::Pending, Some(_)) => false,
        (Spot::Assigned(w), Some(want)) => w == want,
    };
    state_ok && worker_ok
}

/// Whether a read task is one `query` asks for.
fn matches(row: &TaskView, query: &Query) -> bool {
    query.state.is_none_or(|s| s == row.state)
        && query
            .worker
            .as_ref()
            .is_none_or(|w| row.worker.as_ref() == Some(w))
}

/// Reads the records of `batch`, all at once.
fn read_rows(zk: &Zk, layout: &Layout, batch: &[(String, Spot)]) -> Result<Vec<TaskView>, Error> {
    let paths: Vec<String> = batch
        .iter()
        .flat_map(|(name, spot)| match spot {
            Spot::Pending => vec![layout.task(name)],
            Spot::Assigned(w) => vec![layout.assignment(w, name), layout.running_task(name)],
            Spot::Finished => vec![layout.status_task(name)],
        })
        .collect();
    let mut got = zk.get_many(&paths).into_iter();
    let mut next = || -> Result<Node, Error> {
        got.next()
            .unwrap_or(Ok(None))
            .map_err(|e| reading(&layout.tasks(), e))
    };
    let mut rows = Vec::new();
    let mut labels = None;
    for (name, spot) in batch {
        let view = match spot {
            Spot::Pending => next()?.map(|(data, _)| {
                let task = model::decode_task(&data).ok();
                let mut view = super::view::in_flight_view(
                    name,
                    TaskState::Pending,
                    None,
                    task.as_ref(),
                    None,
                );
                view.waiting_for = task
                    .as_ref()
                    .and_then(|t| super::why_waiting(zk, layout, name, t, &mut labels));
                view
            }),
            Spot::Assigned(worker) => {
                let task = next()?.and_then(|(data, _)| model::decode_task(&data).ok());
                let claim = next()?.map(|(data, _)| model::decode::<Claim>(&data));
                Some(assigned_view(name, worker, task, claim))
            }
            Spot::Finished => {
                next()?.map(|(data, stat)| match model::decode::<TaskResult>(&data) {
                    Ok(result) => super::view::finished_view(name, result),
                    Err(why) => {
                        super::view::unreadable_view(name, &why, stat.ctime_ms.max(0) as u64)
                    }
                })
            }
        };
        // A task that moved on between the listing and the read is left out.
        rows.extend(view);
    }
    Ok(rows)
}
