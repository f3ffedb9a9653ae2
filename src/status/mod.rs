//! `zkmw status`: the cluster (active master, standbys, workers and their
//! load, task counts) or one task, for people and, with `--json`, for
//! scripts. This module reads; `view` builds the typed views from what was
//! read; `render` writes them for people; `tasks` is `zkmw tasks`.

mod render;
mod tasks;
mod view;
mod watch;

pub use render::{progress_text, render_cluster, render_task, render_tasks, span, when};
pub use tasks::{Query, TaskRow, task_rows, tasks};
pub use view::{
    ClusterRead, ClusterView, MasterView, ResultView, StandbyView, TaskCounts, TaskState, TaskView,
    WaitingView, WorkerState, WorkerView, cluster_view, finished_view,
};
pub use watch::watch;

use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::layout::{Layout, is_task_name};
use crate::locate::{self, Place};
use crate::model::{self, Claim, LockHolder, Task, WorkerInfo};
use crate::zk::{Node, Zk, ZkError};

/// Reads the whole cluster in one pass of pipelined reads and builds its
/// view.
///
/// The folders of masters and workers are listed together, then their
/// records and `/master` are read together. The task folders are read in
/// the order tasks move through them (/tasks, /assign, /running, /status),
/// so a task that moves meanwhile is seen at least once, and is counted
/// once, in the most advanced state it was seen in.
pub fn cluster(zk: &Zk, layout: &Layout) -> Result<ClusterView, Error> {
    Ok(view::cluster_view(cluster_read(zk, layout)?))
}

/// The reads [`cluster`] builds its view from, for those who need more of
/// them than the view keeps (the master's status page).
pub fn cluster_read(zk: &Zk, layout: &Layout) -> Result<ClusterRead, Error> {
    let folders = [layout.masters(), layout.workers(), layout.away()];
    let mut lists = list_each(zk, &folders)?.into_iter();
    let (candidates, live, away) = (
        lists.next().unwrap_or_default(),
        lists.next().unwrap_or_default(),
        lists.next().unwrap_or_default(),
    );
    let mut paths = vec![layout.master()];
    paths.extend(candidates.iter().map(|s| layout.master_candidate(s)));
    paths.extend(live.iter().map(|w| layout.worker(w)));
    paths.extend(away.iter().map(|w| layout.away_worker(w)));
    let mut got = zk.get_many(&paths).into_iter();
    let master = got
        .next()
        .unwrap_or(Ok(None))
        .map_err(|e| reading(&layout.master(), e))?
        .map(|(data, stat)| (model::decode(&data).ok(), stat.ephemeral_owner));
    let mut read = ClusterRead {
        root: layout.root().to_string(),
        master,
        candidates: records(candidates, &mut got),
        live: records(live, &mut got),
        away: records(away, &mut got),
        ..ClusterRead::default()
    };
    read_tasks(zk, layout, &mut read)?;
    Ok(read)
}

/// Fills in the task folders of `read`, in the order tasks move.
fn read_tasks(zk: &Zk, layout: &Layout, read: &mut ClusterRead) -> Result<(), Error> {
    let mut lists = list_each(zk, &[layout.tasks(), layout.assign()])?.into_iter();
    read.pending = lists.next().unwrap_or_default().into_iter().collect();
    let dirs = lists.next().unwrap_or_default();
    let mut paths: Vec<String> = dirs.iter().map(|w| layout.assign_dir(w)).collect();
    paths.push(layout.running());
    let mut listed = zk.children_many(&paths);
    let running = listed
        .pop()
        .map_or(Ok(Vec::new()), or_empty)
        .map_err(|e| reading(&layout.running(), e))?;
    for (worker, names) in dirs.into_iter().zip(listed) {
        read.assigned
            .insert(worker, names.unwrap_or_default().into_iter().collect());
    }
    let claims: Vec<String> = running.iter().map(|t| layout.running_task(t)).collect();
    let mut got = zk.get_many(&claims).into_iter();
    read.running = records::<Claim>(running, &mut got)
        .into_iter()
        .map(|(name, claim)| (name, claim.map(|c| c.worker)))
        .collect();
    read.finished = list_each(zk, &[layout.status()])?
        .into_iter()
        .flatten()
        .collect();
    Ok(())
}

/// Lists every folder in `paths` with the requests pipelined; a missing
/// folder is empty.
fn list_each(zk: &Zk, paths: &[String]) -> Result<Vec<Vec<String>>, Error> {
    zk.children_many(paths)
        .into_iter()
        .zip(paths)
        .map(|(got, path)| or_empty(got).map_err(|e| reading(path, e)))
        .collect()
}

/// Takes one read from `got` per name and decodes it; `None` for a node
/// that is gone, garbled or could not be read.
fn records<T: DeserializeOwned>(
    names: Vec<String>,
    got: &mut impl Iterator<Item = Result<Node, ZkError>>,
) -> Vec<(String, Option<T>)> {
    names
        .into_iter()
        .map(|name| {
            let data = got.next().and_then(|r| r.ok().flatten());
            (name, data.and_then(|(bytes, _)| model::decode(&bytes).ok()))
        })
        .collect()
}

fn or_empty(listed: Result<Vec<String>, ZkError>) -> Result<Vec<String>, ZkError> {
    match listed {
        Err(ZkError::NoNode) => Ok(Vec::new()),
        other => other,
    }
}

fn reading(path: &str, err: ZkError) -> Error {
    Error::zk(format!("reading {path}"), err)
}

/// Reads one task and builds its view.
///
/// Notable errors: [`Error::NoSuchTask`] when no node of that name exists,
/// saying whether it was purged or never submitted.
pub fn task(zk: &Zk, layout: &Layout, name: &str) -> Result<TaskView, Error> {
    if !is_task_name(name) {
        return Err(Error::BadInput(format!(
            "'{name}' is not a task id (expected task-NNNNNNNNNN)"
        )));
    }
    // A requeued task moves backwards and may slip between two reads:
    // look again.
    for _ in 0..3 {
        if let Some(found) = find_task(zk, layout, name).map_err(|e| reading(name, e))? {
            return Ok(found);
        }
    }
    let why = locate::missing(zk, layout, name).map_err(|e| reading(name, e))?;
    Err(Error::NoSuchTask {
        task: name.to_string(),
        why,
    })
}

/// The view of the task wherever it is, if anywhere.
fn find_task(zk: &Zk, layout: &Layout, name: &str) -> Result<Option<TaskView>, ZkError> {
    Ok(locate::find(zk, layout, name)?.map(|place| match place {
        Place::Finished { result, stat } => match result {
            Ok(result) => view::finished_view(name, result),
            Err(why) => view::unreadable_view(name, &why, stat.ctime_ms.max(0) as u64),
        },
        Place::Assigned {
            worker,
            task,
            claim,
            ..
        } => assigned_view(name, &worker, task.ok(), claim),
        Place::Pending { task, .. } => {
            let task = task.ok();
            let mut view =
                view::in_flight_view(name, TaskState::Pending, None, task.as_ref(), None);
            view.waiting_for = task
                .as_ref()
                .and_then(|t| why_waiting(zk, layout, name, t, &mut None));
            view
        }
    }))
}

/// What a pending task waits for besides a free worker: its re-run delay,
/// its lock's holder, or a worker with its labels (as far as can be read).
/// `labels` caches the live workers' labels across calls.
fn why_waiting(
    zk: &Zk,
    layout: &Layout,
    name: &str,
    task: &Task,
    labels: &mut Option<Vec<Vec<String>>>,
) -> Option<WaitingView> {
    if let Some(until_ms) = task.not_before_ms.filter(|until| *until > model::now_ms()) {
        return Some(WaitingView::Delay { until_ms });
    }
    if let Some(lock) = &task.lock
        && let Ok(Some((data, _))) = zk.get(&layout.lock(lock))
        && let Ok(holder) = model::decode::<LockHolder>(&data)
        && holder.task != name
    {
        return Some(WaitingView::Lock {
            lock: lock.clone(),
            held_by: holder.task,
            worker: holder.worker,
        });
    }
    if task.on.is_empty() {
        return None;
    }
    if labels.is_none() {
        *labels = Some(live_labels(zk, layout)?);
    }
    let matched = labels
        .iter()
        .flatten()
        .any(|have| task.on.iter().all(|label| have.contains(label)));
    (!matched).then(|| WaitingView::Labels {
        labels: task.on.clone(),
    })
}

/// The labels of every live worker.
fn live_labels(zk: &Zk, layout: &Layout) -> Option<Vec<Vec<String>>> {
    let workers = or_empty(zk.children(&layout.workers())).ok()?;
    let paths: Vec<String> = workers.iter().map(|w| layout.worker(w)).collect();
    let mut got = zk.get_many(&paths).into_iter();
    Some(
        records::<WorkerInfo>(workers, &mut got)
            .into_iter()
            .filter_map(|(_, info)| info.map(|i| i.labels))
            .collect(),
    )
}

/// A task in `worker`'s folder: running when a claim exists that names
/// that worker (or cannot be read), assigned otherwise.
fn assigned_view(
    name: &str,
    worker: &str,
    task: Option<Task>,
    claim: Option<Result<Claim, String>>,
) -> TaskView {
    let (state, claim) = match claim {
        Some(Ok(c)) if c.worker == worker => (TaskState::Running, Some(c)),
        Some(Err(_)) => (TaskState::Running, None),
        _ => (TaskState::Assigned, None),
    };
    view::in_flight_view(name, state, Some(worker), task.as_ref(), claim.as_ref())
}
