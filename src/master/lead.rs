//! The active master's I/O shell around [`Core`]: it waits for watches,
//! session changes and the tick, runs each round's reads and writes as the
//! core asks, applies the retention policy on a slow timer, and steps down
//! when the core says it was deposed or the session is lost.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use super::core::{Core, Deposed, Details, DetailsRead, Listing, fenced_out};
use super::plan::{Action, Origin, QueueMember};
use super::{MasterConfig, Msg};
use crate::layout::{Layout, is_task_name};
use crate::model;
use crate::notify;
use crate::obs::Obs;
use crate::retention;
use crate::session::{self, Next};
use crate::settings::{self, Key, Tuning};
use crate::zk::{Node, Op, Zk, ZkError};

/// How often the active master applies the retention policy.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Leads under `epoch` until the session or the lead is lost, or a stop;
/// follows the retention settings in `tuning` live.
pub fn lead(
    cfg: &MasterConfig,
    zk: &Zk,
    epoch: i32,
    tx: &Sender<Msg>,
    rx: &Receiver<Msg>,
    tuning: &mut Tuning,
) -> Next {
    let default_grace = session::rerun_grace(zk.session_timeout());
    let mut core = Core::new(
        cfg.layout.clone(),
        epoch,
        cfg.tick,
        default_grace,
        Instant::now(),
    );
    let mut next_retention = Instant::now();
    let mut settings_read = false;
    let mut rng = rand::rng();
    loop {
        cfg.obs.beat();
        if zk.is_lost() {
            warn!("master {}: session lost; stepping down", cfg.id);
            return Next::Restart;
        }
        if zk.is_connected() && !settings_read {
            settings_read = follow_settings(cfg, zk, tx, tuning, &mut next_retention);
        }
        if zk.is_connected() && Instant::now() >= next_retention {
            next_retention = Instant::now() + RETENTION_EVERY;
            if apply_retention(cfg, zk, epoch, tuning).is_err() {
                return Next::Restart;
            }
        }
        if zk.is_connected() {
            let mut pick = |n| rand::RngExt::random_range(&mut rng, 0..n);
            if round(&mut core, zk, &cfg.obs, tx, &mut pick).is_err() {
                warn!(
                    "master {}: deposed (epoch {epoch} is stale); stepping down",
                    cfg.id
                );
                return Next::Restart;
            }
            cfg.obs.metrics().master_load(core.load());
        }
        // Wait for something to happen, then take every message queued.
        let first = match rx.recv_deadline(notify::wake_by(
            core.next_wake(Instant::now(), model::now_ms()),
        )) {
            Ok(msg) => Some(msg),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return Next::Stop,
        };
        for msg in first.into_iter().chain(rx.try_iter()) {
            match msg {
                Msg::Shutdown => return Next::Stop,
                Msg::Watch(event) if event.path == cfg.layout.config() => settings_read = false,
                Msg::Watch(event) => core.watch_fired(&event.path),
                Msg::Session(_) => core.session_changed(),
            }
        }
    }
}

/// Deletes the results the retention settings say are old enough, fenced
/// by `epoch`; `Err` when a newer master's epoch refused it.
fn apply_retention(
    cfg: &MasterConfig,
    zk: &Zk,
    epoch: i32,
    tuning: &Tuning,
) -> Result<(), Deposed> {
    let metrics = cfg.obs.metrics();
    let sent = |n| metrics.zk_transactions(n);
    match retention::purge(zk, &cfg.layout, policy(tuning), Some(epoch), &sent) {
        Err(err) if fenced_out(&err) => Err(Deposed),
        Err(err) => {
            warn!("master {}: retention not applied: {err}", cfg.id);
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// Reads the cluster settings into `tuning`, arming their watch; a change
/// of the retention settings is applied at once. False when the read
/// failed: it is tried again on the next turn.
fn follow_settings(
    cfg: &MasterConfig,
    zk: &Zk,
    tx: &Sender<Msg>,
    tuning: &mut Tuning,
    next_retention: &mut Instant,
) -> bool {
    let who = format!("master {}", cfg.id);
    match settings::follow(zk, &cfg.layout, tx, tuning, &who) {
        Ok(changed) => {
            if changed {
                *next_retention = Instant::now();
            }
            true
        }
        Err(err) => {
            debug!("{who}: cannot read the cluster settings yet ({err})");
            false
        }
    }
}

/// The retention policy the settings say now.
fn policy(tuning: &Tuning) -> retention::Policy {
    retention::Policy {
        older_than: Some(tuning.duration(Key::ResultTtl)),
        keep: Some(usize::try_from(tuning.count(Key::KeepResults)).unwrap_or(usize::MAX)),
    }
}

/// One round: the reads the core asks for, then its writes. A failed read
/// only makes the next round full.
fn round(
    core: &mut Core,
    zk: &Zk,
    obs: &Obs,
    tx: &Sender<Msg>,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Result<(), Deposed> {
    let read = match read(core, zk, tx) {
        Ok(read) => read,
        Err(Failed::Deposed) => return Err(Deposed),
        Err(Failed::Zk(err)) => {
            debug!("master: read failed ({err}); retrying");
            core.read_failed();
            return Ok(());
        }
    };
    let actions = core.decide(read, Instant::now(), model::now_ms(), pick);
    if actions.is_empty() {
        return Ok(());
    }
    let results = send(core, zk, obs, &core.steps(&actions));
    for (action, result) in actions.iter().zip(&results) {
        let _ = obs.metrics().txn(kind(action), result.as_ref());
        match result {
            Ok(()) => applied(action, obs),
            Err(err) => debug!("master: {action:?} not applied: {err}"),
        }
    }
    let cleanups = core.applied(&actions, &results)?;
    if cleanups.is_empty() {
        return Ok(());
    }
    let results = send(core, zk, obs, &cleanups);
    for result in &results {
        let _ = obs.metrics().txn("cleanup", result.as_ref());
    }
    core.cleaned(&results)
}

/// Sends `steps` behind the core's fence, grouped into as few transactions
/// as `zk::group` makes of them (one epoch check each); answers each
/// step's outcome as if it had been a fenced transaction of its own.
fn send(core: &Core, zk: &Zk, obs: &Obs, steps: &[Vec<Op>]) -> Vec<Result<(), ZkError>> {
    zk.commit(&[core.fence()], steps, &|n| {
        obs.metrics().zk_transactions(n)
    })
    .into_iter()
    .map(|r| r.map(drop))
    .collect()
}

/// The kind of an action's step, as the metrics label it.
fn kind(action: &Action) -> &'static str {
    match action {
        Action::Assign { .. } => "assign",
        Action::Requeue { .. } => "requeue",
        Action::Move { .. } => "move",
        Action::Fail { .. } => "fail",
        Action::ForgetCancel { .. } => "forget_cancel",
        Action::LeaveLockQueue { .. } => "leave_lock_queue",
        Action::RemoveAssignDir { .. } => "remove_assign_dir",
    }
}

/// An action went through: a result it stored counts as finished.
fn applied(action: &Action, obs: &Obs) {
    if let Action::Fail { result, .. } = action {
        obs.metrics().task_finished(result);
    }
    log_applied(action);
}

/// Why a round's reads stopped.
enum Failed {
    Deposed,
    Zk(ZkError),
}

impl From<ZkError> for Failed {
    fn from(err: ZkError) -> Self {
        Failed::Zk(err)
    }
}

impl From<Deposed> for Failed {
    fn from(_: Deposed) -> Self {
        Failed::Deposed
    }
}

/// Steps 1 to 3 of a round: the roots (full rounds), the folders, the
/// details.
fn read(core: &mut Core, zk: &Zk, tx: &Sender<Msg>) -> Result<DetailsRead, Failed> {
    if let Some(watch_workers) = core.begin(Instant::now()) {
        read_roots(core, zk, tx, watch_workers)?;
    }
    let listing = core.listing();
    let (dirs, tasks) = read_folders(core.layout(), zk, tx, &listing)?;
    let details = core.listed(&listing, dirs, tasks);
    Ok(read_details(core.layout(), zk, &details)?)
}

/// Step 1: whether this session still holds /master, the live workers and
/// their records, the assignment folders and the cancel requests.
fn read_roots(
    core: &mut Core,
    zk: &Zk,
    tx: &Sender<Msg>,
    watch_workers: bool,
) -> Result<(), Failed> {
    let layout = core.layout().clone();
    let master = zk.exists(&layout.master())?;
    let still_master = master.is_some_and(|s| s.ephemeral_owner == zk.session_id());
    let workers = if watch_workers {
        zk.children_watch(&layout.workers(), tx)?
    } else {
        zk.children(&layout.workers())?
    };
    let paths: Vec<String> = workers.iter().map(|w| layout.worker(w)).collect();
    let nodes = zk.get_grouped(&paths)?;
    let assign = zk.children(&layout.assign())?;
    let cancels = match zk.children(&layout.cancel()) {
        Err(ZkError::NoNode) => Vec::new(),
        listed => listed?,
    };
    let workers = workers.into_iter().zip(nodes).collect();
    core.roots(still_master, workers, watch_workers, assign, cancels)?;
    Ok(())
}

/// What step 2 lists: each asked assignment folder's names (`None` for one
/// that is gone) and, if asked, /tasks's.
type Folders = (Vec<Option<Vec<String>>>, Option<Vec<String>>);

/// Step 2: the folders the listing asks for, each with its watch re-armed
/// if asked.
fn read_folders(
    layout: &Layout,
    zk: &Zk,
    tx: &Sender<Msg>,
    listing: &Listing,
) -> Result<Folders, ZkError> {
    let mut requests: Vec<(String, bool)> = listing
        .dirs
        .iter()
        .map(|(w, watch)| (layout.assign_dir(w), *watch))
        .collect();
    if let Some(watch) = listing.tasks {
        requests.push((layout.tasks(), watch));
    }
    let mut results = zk.children_many_watch(&requests, tx);
    let tasks = match listing.tasks {
        Some(_) => Some(results.pop().unwrap_or(Err(ZkError::NoNode))?),
        None => None,
    };
    let dirs = results
        .into_iter()
        .map(|r| match r {
            Ok(names) => Ok(Some(names)),
            Err(ZkError::NoNode) => Ok(None),
            Err(err) => Err(err),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dirs, tasks))
}

/// Step 3: the data the listing's changes need, in the order `details`
/// asks for it.
fn read_details(layout: &Layout, zk: &Zk, details: &Details) -> Result<DetailsRead, ZkError> {
    let paths: Vec<String> = details
        .assignments
        .iter()
        .map(|(w, t)| layout.assignment(w, t))
        .collect();
    let assignments = zk.get_grouped(&paths)?;
    // Claims are read after the assignments: a claim made in between is
    // then seen, so a running task is never taken for an interrupted one.
    let running = if details.running {
        Some(zk.children(&layout.running())?.into_iter().collect())
    } else {
        None
    };
    let paths: Vec<String> = details.heads.iter().map(|t| layout.task(t)).collect();
    let heads = zk.get_grouped(&paths)?;
    for (name, node) in details.heads.iter().zip(&heads) {
        if let Some((data, _)) = node
            && let Err(why) = model::decode_task(data)
        {
            warn!("master: task {name} is malformed: {why}");
        }
    }
    let lock_members = if details.running {
        read_lock_queues(zk, layout)?
    } else {
        Vec::new()
    };
    Ok(DetailsRead {
        assignments,
        running,
        heads,
        cancelled: read_cancelled(layout, zk, &details.cancelled)?,
        lock_members,
    })
}

/// For each task with a cancel request that no folder listed: its node in
/// /tasks, and whether it has a result.
fn read_cancelled(
    layout: &Layout,
    zk: &Zk,
    tasks: &[String],
) -> Result<Vec<(Node, bool)>, ZkError> {
    let queued: Vec<String> = tasks.iter().map(|t| layout.task(t)).collect();
    let queued = zk.get_grouped(&queued)?;
    let finished = have_results(zk, layout, tasks.iter().map(String::as_str))?;
    Ok(queued.into_iter().zip(finished).collect())
}

/// Whether each of `tasks` has a result (all asked at once).
fn have_results<'a>(
    zk: &Zk,
    layout: &Layout,
    tasks: impl Iterator<Item = &'a str>,
) -> Result<Vec<bool>, ZkError> {
    let paths: Vec<String> = tasks.map(|t| layout.status_task(t)).collect();
    zk.exists_many(&paths)
        .into_iter()
        .map(|found| found.map(|stat| stat.is_some()))
        .collect()
}

/// Every lock queue member: a listing of /lockq, one of each queue, their
/// data, and the results of the tasks they name. Nothing when no task uses
/// a lock.
fn read_lock_queues(zk: &Zk, layout: &Layout) -> Result<Vec<QueueMember>, ZkError> {
    let locks = match zk.children(&layout.lockq()) {
        Err(ZkError::NoNode) => return Ok(Vec::new()),
        listed => listed?,
    };
    let dirs: Vec<String> = locks.iter().map(|l| layout.lockq_dir(l)).collect();
    let mut members = Vec::new();
    for (lock, listed) in locks.iter().zip(zk.children_many(&dirs)) {
        for token in listed.unwrap_or_default() {
            members.push((lock.clone(), token));
        }
    }
    let paths: Vec<String> = members
        .iter()
        .map(|(l, t)| layout.lockq_member(l, t))
        .collect();
    let named: Vec<(Option<String>, u64)> =
        zk.get_grouped(&paths)?.iter().map(member_names).collect();
    let named_tasks = named.iter().map(|(t, _)| t.as_deref().unwrap_or("none"));
    let finished = have_results(zk, layout, named_tasks)?;
    Ok(members
        .into_iter()
        .zip(named)
        .zip(finished)
        .map(
            |(((lock, token), (task, created_ms)), finished)| QueueMember {
                lock,
                token,
                task,
                created_ms,
                finished,
            },
        )
        .collect())
}

/// The task a lock queue member names (if its data is a task name) and
/// when it was created (`u64::MAX` when it went away).
fn member_names(node: &Node) -> (Option<String>, u64) {
    match node {
        Some((data, stat)) => {
            let name = String::from_utf8_lossy(data).into_owned();
            let task = is_task_name(&name).then_some(name);
            (task, stat.ctime_ms.max(0) as u64)
        }
        None => (None, u64::MAX),
    }
}

/// Says what the master did; a line about a worker names it (`worker`
/// in JSON logs).
fn log_applied(action: &Action) {
    match action {
        Action::Assign { task, worker, .. } => {
            debug!(worker = worker.as_str(); "master: assigned {task} to {worker}")
        }
        Action::Requeue { task, worker, .. } => {
            info!(worker = worker.as_str(); "master: requeued {task} from {worker}")
        }
        Action::Move { task, from, to, .. } => {
            info!(worker = to.as_str(); "master: moved {task} from busy {from} to {to}, which has a free thread")
        }
        Action::Fail {
            task, result, from, ..
        } => {
            let reason = result
                .reason
                .as_ref()
                .map_or(String::new(), |r| format!(": {r}"));
            match from {
                Origin::Pending => warn!("master: failed {task}{reason}"),
                Origin::Assigned(worker) => {
                    warn!(worker = worker.as_str(); "master: failed {task} (worker {worker}){reason}")
                }
            }
        }
        Action::ForgetCancel { task } => debug!("master: forgot the cancel request of {task}"),
        Action::LeaveLockQueue { lock, token } => {
            debug!("master: forgot member {token} of lock {lock}'s queue")
        }
        Action::RemoveAssignDir { worker } => {
            info!(worker = worker.as_str(); "master: removed the assignments folder of gone worker {worker}")
        }
    }
}
