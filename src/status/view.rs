//! The typed views `zkmw status` prints, built by plain functions from what
//! one pass of reads found. Their serialisation is the JSON README
//! documents; the human views render the same structs.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::{
    Attempt, Away, Claim, FailReason, FinalState, MasterInfo, Task, TaskResult, WorkerInfo,
};

/// What one pass of reads of the namespace found, decoded where it could
/// be (`None` for a record that is missing or garbled).
#[derive(Debug, Clone, Default)]
pub struct ClusterRead {
    /// The namespace root.
    pub root: String,
    /// `/master`, when it exists: its record and the session owning it.
    pub master: Option<(Option<MasterInfo>, i64)>,
    /// `/masters/<session>`: every running master, active or standby.
    pub candidates: Vec<(String, Option<MasterInfo>)>,
    /// `/workers/<id>`: the live workers.
    pub live: Vec<(String, Option<WorkerInfo>)>,
    /// `/away/<id>`: the workers up but taking no work.
    pub away: Vec<(String, Option<Away>)>,
    /// The names under `/tasks`.
    pub pending: BTreeSet<String>,
    /// The names under each `/assign/<id>`.
    pub assigned: BTreeMap<String, BTreeSet<String>>,
    /// The names under `/running`, each with the worker its claim names.
    pub running: BTreeMap<String, Option<String>>,
    /// The names under `/status`.
    pub finished: BTreeSet<String>,
}

/// `zkmw status --json`: the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The namespace root.
    pub root: String,
    /// The active master; `None` (null) when none is.
    pub master: Option<MasterView>,
    /// The other running masters, by session.
    pub standbys: Vec<StandbyView>,
    /// Every worker with something to show, by id.
    pub workers: Vec<WorkerView>,
    /// How many tasks are where.
    pub tasks: TaskCounts,
}

/// The active master. Fields its records do not give are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasterView {
    /// Its `--id`.
    pub id: Option<String>,
    /// Its host name.
    pub host: Option<String>,
    /// Its process id.
    pub pid: Option<u32>,
    /// The session owning `/master`, in hex.
    pub session: String,
    /// The fencing epoch it was elected under.
    pub epoch: Option<i32>,
}

/// A running master that is not the active one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandbyView {
    /// Its `--id`.
    pub id: Option<String>,
    /// Its host name.
    pub host: Option<String>,
    /// Its process id.
    pub pid: Option<u32>,
    /// Its session, in hex.
    pub session: String,
}

/// Where a worker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Registered in `/workers`: takes work.
    Live,
    /// Stopping after SIGTERM: takes nothing new, finishes what runs.
    Draining,
    /// Takes no work for a while: its last jobs could not start.
    Paused,
    /// In `/away` with a reason this version cannot read.
    Away,
    /// Gone, but tasks are still assigned to it or claimed by it: the
    /// master requeues them, or runs them again after the re-run grace.
    Lost,
}

/// One worker and its load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerView {
    /// Its `--id`.
    pub id: String,
    /// Its host name (known for live workers).
    pub host: Option<String>,
    /// Its process id (known for live workers).
    pub pid: Option<u32>,
    /// Its thread pool size (known for live workers).
    pub threads: Option<usize>,
    /// Its tasks whose job has started.
    pub running: usize,
    /// Its tasks not started yet.
    pub assigned: usize,
    /// Where it stands.
    pub state: WorkerState,
    /// Since when (unix ms): registered, draining or paused.
    pub since_ms: Option<u64>,
    /// Until when a pause lasts (unix ms).
    pub until_ms: Option<u64>,
    /// Its labels (`worker --label`).
    pub labels: Vec<String>,
}

/// How many tasks are where; each task is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    /// Queued in `/tasks`.
    pub pending: usize,
    /// Assigned, not started.
    pub assigned: usize,
    /// Started, not finished.
    pub running: usize,
    /// With a result in `/status`.
    pub finished: usize,
}

/// Builds the cluster view.
pub fn cluster_view(read: ClusterRead) -> ClusterView {
    let ClusterRead {
        root,
        master,
        candidates,
        live,
        away,
        pending,
        mut assigned,
        mut running,
        finished,
    } = read;
    let tasks = count_tasks(&pending, &mut assigned, &mut running, &finished);
    let (master, standbys) = masters(master, candidates);
    ClusterView {
        root,
        master,
        standbys,
        workers: workers(live, away, &assigned, &running),
        tasks,
    }
}

/// Counts each task once, in the most advanced place it was seen in (a
/// task may move while status reads), leaving in `assigned` only the tasks
/// not started. A claim whose record names no worker is given to the
/// worker the task is assigned to.
fn count_tasks(
    pending: &BTreeSet<String>,
    assigned: &mut BTreeMap<String, BTreeSet<String>>,
    running: &mut BTreeMap<String, Option<String>>,
    finished: &BTreeSet<String>,
) -> TaskCounts {
    running.retain(|name, _| !finished.contains(name));
    for (name, worker) in running.iter_mut().filter(|(_, w)| w.is_none()) {
        *worker = assigned
            .iter()
            .find(|(_, names)| names.contains(name))
            .map(|(id, _)| id.clone());
    }
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
    TaskCounts {
        pending,
        assigned: assigned.values().map(BTreeSet::len).sum(),
        running: running.len(),
        finished: finished.len(),
    }
}

/// The active master and the standbys: every candidate but the session
/// owning `/master`. A garbled `/master` record is filled in from that
/// session's candidate record.
fn masters(
    master: Option<(Option<MasterInfo>, i64)>,
    candidates: Vec<(String, Option<MasterInfo>)>,
) -> (Option<MasterView>, Vec<StandbyView>) {
    let owner = master.as_ref().map(|(_, owner)| format!("{owner:#x}"));
    let (active, standbys): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .map(|(session, info)| standby_view(session, info))
        .partition(|s| Some(&s.session) == owner.as_ref());
    let master = master.map(|(info, owner)| match info {
        Some(info) => MasterView {
            id: Some(info.id),
            host: Some(info.host),
            pid: Some(info.pid),
            session: format!("{owner:#x}"),
            epoch: Some(info.epoch),
        },
        None => {
            let known = active.into_iter().next();
            MasterView {
                id: known.as_ref().and_then(|s| s.id.clone()),
                host: known.as_ref().and_then(|s| s.host.clone()),
                pid: known.as_ref().and_then(|s| s.pid),
                session: format!("{owner:#x}"),
                epoch: None,
            }
        }
    });
    (master, standbys)
}

fn standby_view(session: String, info: Option<MasterInfo>) -> StandbyView {
    StandbyView {
        id: info.as_ref().map(|i| i.id.clone()),
        host: info.as_ref().map(|i| i.host.clone()),
        pid: info.as_ref().map(|i| i.pid),
        session,
    }
}

/// Live workers, then away ones (a worker seen in both moved while status
/// read: away is the later read), then the lost: ids still holding
/// assignments or claims. Sorted by id.
fn workers(
    live: Vec<(String, Option<WorkerInfo>)>,
    away: Vec<(String, Option<Away>)>,
    assigned: &BTreeMap<String, BTreeSet<String>>,
    running: &BTreeMap<String, Option<String>>,
) -> Vec<WorkerView> {
    let mut views: BTreeMap<String, WorkerView> = BTreeMap::new();
    for (id, info) in live {
        views.insert(id.clone(), live_view(id, info.as_ref()));
    }
    for (id, info) in away {
        views.insert(id.clone(), away_view(id, info.as_ref()));
    }
    let holders = assigned
        .iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(id, _)| id)
        .chain(running.values().flatten());
    for id in holders {
        if !views.contains_key(id) {
            views.insert(id.clone(), bare_view(id.clone(), WorkerState::Lost));
        }
    }
    for view in views.values_mut() {
        view.assigned = assigned.get(&view.id).map_or(0, BTreeSet::len);
        view.running = running
            .values()
            .filter(|w| w.as_ref() == Some(&view.id))
            .count();
    }
    views.into_values().collect()
}

impl WorkerView {
    /// The same view in another state.
    fn in_state(self, state: WorkerState) -> WorkerView {
        WorkerView { state, ..self }
    }
}

/// A worker view with nothing known but its id and state.
fn bare_view(id: String, state: WorkerState) -> WorkerView {
    WorkerView {
        id,
        host: None,
        pid: None,
        threads: None,
        running: 0,
        assigned: 0,
        state,
        since_ms: None,
        until_ms: None,
        labels: Vec::new(),
    }
}

fn live_view(id: String, info: Option<&WorkerInfo>) -> WorkerView {
    WorkerView {
        host: info.map(|i| i.host.clone()),
        pid: info.map(|i| i.pid),
        threads: info.map(|i| i.threads),
        since_ms: info.map(|i| i.started_ms),
        labels: info.map_or_else(Vec::new, |i| i.labels.clone()),
        ..bare_view(id, WorkerState::Live)
    }
}

fn away_view(id: String, away: Option<&Away>) -> WorkerView {
    let state = match away.map(|a| a.why.as_str()) {
        Some("draining") => WorkerState::Draining,
        Some("paused") => WorkerState::Paused,
        _ => WorkerState::Away,
    };
    let info = away.and_then(|a| a.worker.as_ref());
    WorkerView {
        since_ms: away.map(|a| a.since_ms),
        until_ms: away.and_then(|a| a.until_ms),
        ..live_view(id, info)
    }
    .in_state(state)
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Queued in `/tasks`.
    Pending,
    /// Assigned to a worker, not started.
    Assigned,
    /// Started by its worker.
    Running,
    /// Finished: the job exited or died of a signal.
    Done,
    /// Finished: zkmw could not get a result.
    Failed,
}

impl TaskState {
    /// The state a word names (as `zkmw tasks --state` takes it).
    pub fn parse(word: &str) -> Option<TaskState> {
        match word {
            "pending" => Some(TaskState::Pending),
            "assigned" => Some(TaskState::Assigned),
            "running" => Some(TaskState::Running),
            "done" => Some(TaskState::Done),
            "failed" => Some(TaskState::Failed),
            _ => None,
        }
    }
}

/// `zkmw status TASK --json`: one task. Fields its records do not give are
/// `None` (null); the result's fields are there once it finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskView {
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
    /// A running job's own report of how far it is, 0 to 100.
    pub progress: Option<f64>,
    /// The message of that report.
    pub progress_message: Option<String>,
    /// Every run so far, oldest first, each with how it ended.
    pub history: Vec<Attempt>,
    /// What a pending task waits for, when it is more than a free worker.
    pub waiting_for: Option<WaitingView>,
    /// Its result, once finished.
    #[serde(flatten)]
    pub result: Option<ResultView>,
}

/// What a pending task waits for, besides a free worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "lowercase")]
pub enum WaitingView {
    /// Its re-run after a failed run starts no earlier than `until_ms`.
    Delay {
        /// Unix ms.
        until_ms: u64,
    },
    /// Another task of its lock runs.
    Lock {
        /// The lock.
        lock: String,
        /// The task holding it, and its worker.
        held_by: String,
        /// The worker running that task.
        worker: String,
    },
    /// No live worker has all its labels.
    Labels {
        /// The labels it needs.
        labels: Vec<String>,
    },
}

/// What a finished task's result adds to its view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultView {
    /// When the result was stored (unix ms).
    pub finished_ms: Option<u64>,
    /// The job's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed the job, when one did.
    pub signal: Option<i32>,
    /// Why it failed, when it did.
    pub reason: Option<FailReason>,
    /// Its captured stdout (capped).
    pub stdout: String,
    /// Its captured stderr (capped).
    pub stderr: String,
    /// True when stdout was cut at the cap.
    pub stdout_truncated: bool,
    /// True when stderr was cut at the cap.
    pub stderr_truncated: bool,
}

/// A task still in flight (pending, assigned or running), from its stored
/// record and, once running, when its run started.
pub fn in_flight_view(
    name: &str,
    state: TaskState,
    worker: Option<&str>,
    task: Option<&Task>,
    claim: Option<&Claim>,
) -> TaskView {
    TaskView {
        task: name.to_string(),
        state,
        worker: worker.map(str::to_string),
        job: task.map(|t| t.job.clone()),
        attempts: task.map(|t| t.attempts),
        submitted_ms: task.map(|t| t.submitted_ms),
        started_ms: claim.map(|c| c.started_ms),
        progress: claim.and_then(|c| c.progress),
        progress_message: claim.and_then(|c| c.progress_message.clone()),
        history: task.map_or_else(Vec::new, |t| t.history.clone()),
        waiting_for: None,
        result: None,
    }
}

/// A finished task, from its stored result.
pub fn finished_view(name: &str, result: TaskResult) -> TaskView {
    let state = match result.state {
        FinalState::Done => TaskState::Done,
        FinalState::Failed => TaskState::Failed,
    };
    TaskView {
        task: name.to_string(),
        state,
        worker: result.worker,
        job: Some(result.job).filter(|job| !job.is_empty()),
        attempts: Some(result.attempts),
        submitted_ms: Some(result.submitted_ms).filter(|ms| *ms > 0),
        started_ms: result.started_ms,
        progress: None,
        progress_message: None,
        history: result.history,
        waiting_for: None,
        result: Some(ResultView {
            finished_ms: Some(result.finished_ms).filter(|ms| *ms > 0),
            exit_code: result.exit_code,
            signal: result.signal,
            reason: result.reason,
            stdout: result.stdout,
            stderr: result.stderr,
            stdout_truncated: result.stdout_truncated,
            stderr_truncated: result.stderr_truncated,
        }),
    }
}

/// A finished task whose result cannot be read: failed, saying why,
/// finished when its node was created (`stored_ms`).
pub fn unreadable_view(name: &str, why: &str, stored_ms: u64) -> TaskView {
    TaskView {
        task: name.to_string(),
        state: TaskState::Failed,
        worker: None,
        job: None,
        attempts: None,
        submitted_ms: None,
        started_ms: None,
        progress: None,
        progress_message: None,
        history: Vec::new(),
        waiting_for: None,
        result: Some(ResultView {
            finished_ms: Some(stored_ms).filter(|ms| *ms > 0),
            exit_code: None,
            signal: None,
            reason: Some(FailReason::Other(format!("unreadable result: {why}"))),
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(id: &str, session: i64, epoch: i32) -> MasterInfo {
        MasterInfo {
            id: id.into(),
            host: "h".into(),
            pid: 7,
            session: format!("{session:#x}"),
            epoch,
        }
    }

    fn worker(threads: usize) -> WorkerInfo {
        WorkerInfo {
            host: "h".into(),
            pid: 9,
            threads,
            started_ms: 100,
            session_timeout_ms: None,
            rerun_grace_ms: None,
            labels: Vec::new(),
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    fn claims(list: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        list.iter()
            .map(|(t, w)| (t.to_string(), w.map(str::to_string)))
            .collect()
    }

    fn find<'a>(view: &'a ClusterView, id: &str) -> &'a WorkerView {
        view.workers.iter().find(|w| w.id == id).expect(id)
    }

    #[test]
    fn standbys_are_the_running_masters_but_the_active_one() {
        let view = cluster_view(ClusterRead {
            master: Some((Some(master("m1", 0x10, 3)), 0x10)),
            candidates: vec![
                ("0x10".into(), Some(master("m1", 0x10, 0))),
                ("0x11".into(), Some(master("m2", 0x11, 0))),
                ("0x12".into(), None),
            ],
            ..ClusterRead::default()
        });
        let active = view.master.expect("a master");
        assert_eq!(
            (active.id.as_deref(), active.epoch, active.session.as_str()),
            (Some("m1"), Some(3), "0x10")
        );
        let standbys: Vec<_> = view
            .standbys
            .iter()
            .map(|s| (s.id.as_deref(), s.session.as_str()))
            .collect();
        assert_eq!(standbys, [(Some("m2"), "0x11"), (None, "0x12")]);
    }

    /// A garbled /master still shows a master, named by its candidate
    /// record; none at all is `None`.
    #[test]
    fn a_garbled_master_record_shows_what_is_known() {
        let view = cluster_view(ClusterRead {
            master: Some((None, 0x10)),
            candidates: vec![("0x10".into(), Some(master("m1", 0x10, 0)))],
            ..ClusterRead::default()
        });
        let active = view.master.expect("a master");
        assert_eq!((active.id.as_deref(), active.epoch), (Some("m1"), None));
        assert!(view.standbys.is_empty());
        assert_eq!(cluster_view(ClusterRead::default()).master, None);
    }

    /// Live, away and gone workers are all shown, so the per-worker running
    /// counts add up to `tasks.running`; an unreadable claim counts for
    /// the worker the task is assigned to.
    #[test]
    fn every_running_task_is_counted_for_a_worker() {
        let view = cluster_view(ClusterRead {
            live: vec![("w1".into(), Some(worker(4))), ("w9".into(), None)],
            away: vec![
                (
                    "w2".into(),
                    Some(Away {
                        why: "draining".into(),
                        since_ms: 50,
                        until_ms: None,
                        worker: Some(worker(3)),
                    }),
                ),
                (
                    "w4".into(),
                    Some(Away {
                        why: "paused".into(),
                        since_ms: 60,
                        until_ms: Some(90),
                        worker: None,
                    }),
                ),
                ("w5".into(), None),
            ],
            assigned: [
                ("w1".to_string(), names(&["t1", "t5", "t6"])),
                ("w2".to_string(), names(&["t2", "t3"])),
                ("w3".to_string(), names(&["t4", "t7"])),
                ("w8".to_string(), names(&[])),
            ]
            .into(),
            running: claims(&[
                ("t1", Some("w1")),
                ("t2", Some("w2")),
                ("t3", Some("w2")),
                ("t4", Some("w3")),
                ("t5", None),
            ]),
            ..ClusterRead::default()
        });
        let ids: Vec<_> = view
            .workers
            .iter()
            .map(|w| (w.id.as_str(), w.state))
            .collect();
        assert_eq!(
            ids,
            [
                ("w1", WorkerState::Live),
                ("w2", WorkerState::Draining),
                ("w3", WorkerState::Lost),
                ("w4", WorkerState::Paused),
                ("w5", WorkerState::Away),
                ("w9", WorkerState::Live),
            ]
        );
        let counts: Vec<_> = view
            .workers
            .iter()
            .map(|w| (w.running, w.assigned))
            .collect();
        assert_eq!(counts, [(2, 1), (2, 0), (1, 1), (0, 0), (0, 0), (0, 0)]);
        let running: usize = view.workers.iter().map(|w| w.running).sum();
        assert_eq!(running, view.tasks.running);
        let assigned: usize = view.workers.iter().map(|w| w.assigned).sum();
        assert_eq!(assigned, view.tasks.assigned);
        let w1 = find(&view, "w1");
        assert_eq!(
            (w1.host.as_deref(), w1.threads, w1.since_ms),
            (Some("h"), Some(4), Some(100))
        );
        let w4 = find(&view, "w4");
        assert_eq!((w4.since_ms, w4.until_ms), (Some(60), Some(90)));
        let w9 = find(&view, "w9");
        assert_eq!((w9.host.as_deref(), w9.pid), (None, None), "garbled record");
    }

    /// A worker seen both live and away moved while status read: away wins.
    #[test]
    fn a_worker_seen_live_and_away_is_shown_once_away() {
        let away = Away {
            why: "draining".into(),
            since_ms: 5,
            until_ms: None,
            worker: None,
        };
        let view = cluster_view(ClusterRead {
            live: vec![("w1".into(), Some(worker(2)))],
            away: vec![("w1".into(), Some(away))],
            ..ClusterRead::default()
        });
        assert_eq!(view.workers.len(), 1);
        assert_eq!(view.workers[0].state, WorkerState::Draining);
    }

    /// A task seen in several places while it moved counts once, in the
    /// most advanced.
    #[test]
    fn a_moving_task_is_counted_once() {
        let view = cluster_view(ClusterRead {
            pending: names(&["t1", "t2", "t3", "t4"]),
            assigned: [("w1".to_string(), names(&["t2", "t3", "t4"]))].into(),
            running: claims(&[("t3", Some("w1")), ("t4", Some("w1"))]),
            finished: names(&["t4"]),
            ..ClusterRead::default()
        });
        assert_eq!(
            view.tasks,
            TaskCounts {
                pending: 1,
                assigned: 1,
                running: 1,
                finished: 1
            }
        );
    }

    fn task() -> Task {
        Task {
            job: "sleep 5".into(),
            submitted_ms: 10,
            timeout_ms: None,
            retries: 2,
            attempts: 1,
            token: "secret-token".into(),
            history: Vec::new(),
            ..Default::default()
        }
    }

    fn keys(view: &TaskView) -> Vec<String> {
        match serde_json::to_value(view).unwrap() {
            serde_json::Value::Object(map) => map.keys().cloned().collect(),
            other => panic!("not an object: {other}"),
        }
    }

    const IN_FLIGHT: [&str; 11] = [
        "attempts",
        "history",
        "job",
        "progress",
        "progress_message",
        "started_ms",
        "state",
        "submitted_ms",
        "task",
        "waiting_for",
        "worker",
    ];

    fn claim(started_ms: u64) -> Claim {
        Claim {
            worker: "w1".into(),
            started_ms,
            attempt: 1,
            progress: Some(40.0),
            progress_message: Some("copying".into()),
        }
    }

    /// The task JSON has exactly the fields README lists: seven for a task
    /// in flight, eight more once finished; never the token.
    #[test]
    fn task_views_have_the_documented_fields() {
        let running = in_flight_view(
            "t",
            TaskState::Running,
            Some("w1"),
            Some(&task()),
            Some(&claim(20)),
        );
        assert_eq!(keys(&running), IN_FLIGHT);
        let json = serde_json::to_string(&running).unwrap();
        assert!(json.contains(r#""state":"running""#), "{json}");
        let mut result = TaskResult::failed(Some(&task()), FailReason::TimedOut, Some("w1"), 30);
        result.started_ms = Some(20);
        let finished = finished_view("t", result);
        let mut all: Vec<&str> = IN_FLIGHT.to_vec();
        all.extend([
            "exit_code",
            "finished_ms",
            "reason",
            "signal",
            "stderr",
            "stderr_truncated",
            "stdout",
            "stdout_truncated",
        ]);
        all.sort_unstable();
        assert_eq!(keys(&finished), all);
        let json = serde_json::to_string(&finished).unwrap();
        assert!(
            !json.contains("token") && !json.contains("secret-token"),
            "{json}"
        );
        assert!(json.contains(r#""reason":"timed out""#), "{json}");
        assert_eq!(keys(&unreadable_view("t", "bad", 5)), all);
    }

    #[test]
    fn an_unreadable_result_is_failed_saying_why() {
        let view = unreadable_view("t", "invalid record: eof", 42);
        assert_eq!(view.state, TaskState::Failed);
        let result = view.result.expect("a result");
        assert_eq!(result.finished_ms, Some(42));
        assert_eq!(
            result.reason.map(|r| r.to_string()).as_deref(),
            Some("unreadable result: invalid record: eof")
        );
    }

    #[test]
    fn an_old_result_without_a_job_or_times_shows_none() {
        let view = finished_view(
            "t",
            TaskResult::failed(None, FailReason::Malformed, None, 0),
        );
        assert_eq!((view.job, view.submitted_ms), (None, None));
        assert_eq!(view.result.and_then(|r| r.finished_ms), None);
    }
}
