//! `zkmw status`: the cluster (active master, live workers and their load,
//! task counts) or one task, for people and, with `--json`, for scripts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::error::Error;
use crate::layout::{Layout, is_task_name};
use crate::model::{self, Claim, FinalState, MasterInfo, Task, TaskResult, WorkerInfo};
use crate::zk::{Zk, ZkError};

/// Reads the whole cluster's state as the documented JSON value.
///
/// The nodes are read in the order tasks move through them (/tasks,
/// /assign, /running, /status) and each task is counted once, in the most
/// advanced state it was seen in, so a task that moves while status reads
/// is not counted twice.
pub fn cluster(zk: &Zk, layout: &Layout) -> Result<Value, Error> {
    let read = |what: &str, err: ZkError| Error::zk(format!("reading {what}"), err);
    let master = zk
        .get(&layout.master())
        .map_err(|e| read("/master", e))?
        .and_then(|(data, _)| model::decode::<MasterInfo>(&data).ok());
    let workers = children_or_empty(zk, &layout.workers()).map_err(|e| read("/workers", e))?;
    let worker_paths: Vec<String> = workers.iter().map(|w| layout.worker(w)).collect();
    let infos = zk.get_many(&worker_paths);
    let pending: BTreeSet<String> = children_or_empty(zk, &layout.tasks())
        .map_err(|e| read("/tasks", e))?
        .into_iter()
        .collect();
    let dirs = children_or_empty(zk, &layout.assign()).map_err(|e| read("/assign", e))?;
    let dir_paths: Vec<String> = dirs.iter().map(|w| layout.assign_dir(w)).collect();
    let mut assigned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (worker, listed) in dirs.iter().zip(zk.children_many(&dir_paths)) {
        assigned.insert(
            worker.clone(),
            listed.unwrap_or_default().into_iter().collect(),
        );
    }
    let running_names =
        children_or_empty(zk, &layout.running()).map_err(|e| read("/running", e))?;
    let claim_paths: Vec<String> = running_names
        .iter()
        .map(|t| layout.running_task(t))
        .collect();
    let mut running: BTreeMap<String, Option<String>> = BTreeMap::new();
    for (name, got) in running_names.into_iter().zip(zk.get_many(&claim_paths)) {
        let worker = got
            .ok()
            .flatten()
            .and_then(|(data, _)| model::decode::<Claim>(&data).ok())
            .map(|claim| claim.worker);
        running.insert(name, worker);
    }
    let finished: BTreeSet<String> = children_or_empty(zk, &layout.status())
        .map_err(|e| read("/status", e))?
        .into_iter()
        .collect();
    running.retain(|name, _| !finished.contains(name));
    for names in assigned.values_mut() {
        names.retain(|name| !running.contains_key(name) && !finished.contains(name));
    }
    let pending = pending
        .iter()
        .filter(|name| {
            !finished.contains(*name)
                && !running.contains_key(*name)
                && !assigned.values().any(|names| names.contains(*name))
        })
        .count();
    let worker_list: Vec<Value> = workers
        .iter()
        .zip(infos)
        .map(|(id, info)| {
            let info = info
                .ok()
                .flatten()
                .and_then(|(data, _)| model::decode::<WorkerInfo>(&data).ok());
            json!({
                "id": id,
                "host": info.as_ref().map(|i| i.host.clone()),
                "pid": info.as_ref().map(|i| i.pid),
                "threads": info.as_ref().map(|i| i.threads),
                "assigned": assigned.get(id).map_or(0, BTreeSet::len),
                "running": running.values().filter(|w| w.as_deref() == Some(id.as_str())).count(),
            })
        })
        .collect();
    Ok(json!({
        "root": layout.root(),
        "master": master,
        "workers": worker_list,
        "tasks": {
            "pending": pending,
            "assigned": assigned.values().map(BTreeSet::len).sum::<usize>(),
            "running": running.len(),
            "finished": finished.len(),
        },
    }))
}

fn children_or_empty(zk: &Zk, path: &str) -> Result<Vec<String>, ZkError> {
    match zk.children(path) {
        Err(ZkError::NoNode) => Ok(Vec::new()),
        other => other,
    }
}

/// Reads one task's state as the documented JSON value.
///
/// Notable errors: [`Error::NoSuchTask`] when no node of that name exists.
pub fn task(zk: &Zk, layout: &Layout, name: &str) -> Result<Value, Error> {
    if !is_task_name(name) {
        return Err(Error::BadInput(format!(
            "'{name}' is not a task id (expected task-NNNNNNNNNN)"
        )));
    }
    // A task moves forward between our reads; look in the order it moves,
    // and look again if it slipped through.
    for _ in 0..3 {
        if let Some(found) =
            find_task(zk, layout, name).map_err(|e| Error::zk(format!("reading {name}"), e))?
        {
            return Ok(found);
        }
    }
    Err(Error::NoSuchTask(name.to_string()))
}

fn find_task(zk: &Zk, layout: &Layout, name: &str) -> Result<Option<Value>, ZkError> {
    if let Some((data, _)) = zk.get(&layout.task(name))? {
        let task = model::decode_task(&data).ok();
        return Ok(Some(task_view(name, "pending", None, task.as_ref(), None)));
    }
    for worker in children_or_empty(zk, &layout.assign())? {
        if let Some((data, _)) = zk.get(&layout.assignment(&worker, name))? {
            let task = model::decode_task(&data).ok();
            let claim = zk
                .get(&layout.running_task(name))?
                .and_then(|(data, _)| model::decode::<Claim>(&data).ok())
                .filter(|c| c.worker == worker);
            let state = if claim.is_some() {
                "running"
            } else {
                "assigned"
            };
            let started = claim.map(|c| c.started_ms);
            return Ok(Some(task_view(
                name,
                state,
                Some(&worker),
                task.as_ref(),
                started,
            )));
        }
    }
    if let Some((data, _)) = zk.get(&layout.status_task(name))? {
        let view = match model::decode::<TaskResult>(&data) {
            Ok(result) => result_view(name, &result),
            Err(why) => {
                json!({ "task": name, "state": "failed", "reason": format!("unreadable result: {why}") })
            }
        };
        return Ok(Some(view));
    }
    Ok(None)
}

fn task_view(
    name: &str,
    state: &str,
    worker: Option<&str>,
    task: Option<&Task>,
    started_ms: Option<u64>,
) -> Value {
    json!({
        "task": name,
        "state": state,
        "worker": worker,
        "job": task.map(|t| t.job.clone()),
        "attempts": task.map(|t| t.attempts),
        "submitted_ms": task.map(|t| t.submitted_ms),
        "started_ms": started_ms,
    })
}

fn result_view(name: &str, result: &TaskResult) -> Value {
    let state = match result.state {
        FinalState::Done => "done",
        FinalState::Failed => "failed",
    };
    let mut view = serde_json::to_value(result).unwrap_or_else(|_| json!({}));
    if let Value::Object(map) = &mut view {
        map.insert("task".into(), json!(name));
        map.insert("state".into(), json!(state));
    }
    view
}

/// The cluster view for people.
pub fn render_cluster(v: &Value) -> String {
    let mut out = String::new();
    let master = match &v["master"] {
        Value::Null => "none".to_string(),
        m => format!(
            "{} on {} (epoch {})",
            text(&m["id"]),
            text(&m["host"]),
            m["epoch"]
        ),
    };
    out.push_str(&format!(
        "namespace {}\nmaster    {master}\n",
        text(&v["root"])
    ));
    let workers = v["workers"].as_array().map_or(&[][..], |w| w.as_slice());
    out.push_str(&format!("workers   {}\n", workers.len()));
    for w in workers {
        out.push_str(&format!(
            "  {:<16} {:<20} threads {:<4} running {:<4} assigned {}\n",
            text(&w["id"]),
            text(&w["host"]),
            w["threads"],
            w["running"],
            w["assigned"]
        ));
    }
    let t = &v["tasks"];
    out.push_str(&format!(
        "tasks     pending {}  assigned {}  running {}  finished {}\n",
        t["pending"], t["assigned"], t["running"], t["finished"]
    ));
    out
}

/// The task view for people: one `key value` line per known field.
pub fn render_task(v: &Value) -> String {
    let mut out = String::new();
    let keys = [
        "task",
        "state",
        "worker",
        "job",
        "attempts",
        "exit_code",
        "signal",
        "reason",
        "submitted_ms",
        "started_ms",
        "finished_ms",
        "stdout_truncated",
        "stderr_truncated",
    ];
    for key in keys {
        match &v[key] {
            Value::Null => {}
            value => out.push_str(&format!("{key:<17} {}\n", text(value))),
        }
    }
    for key in ["stdout", "stderr"] {
        if let Some(s) = v[key].as_str().filter(|s| !s.is_empty()) {
            out.push_str(&format!("--- {key}\n{s}"));
            if !s.ends_with('\n') {
                out.push('\n');
            }
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
