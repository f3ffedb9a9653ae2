//! `zkmw master`: leader election on an ephemeral /master, then one control
//! loop that reads the namespace, asks [`plan`] what to change, and applies
//! each change as one epoch-fenced transaction.
//!
//! Election: a candidate creates /master and bumps /epoch's version in one
//! transaction; the new version is its fencing token, checked by every write
//! it makes, so a deposed master (paused, partitioned, expired) can write
//! nothing. Standbys watch /master and run again when it disappears.
//!
//! The loop is level-triggered: a watch, a reconnect or a tick only says
//! "look again". A light round (on a new task) reads /tasks and the
//! assignment counts; a full round (on worker changes, reconnects, ticks,
//! or after any doubtful write) also reads every assignment and claim, and
//! repairs what a crash left behind.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::error::Error;
use crate::layout::Layout;
use crate::model::{self, MasterInfo, WorkerInfo};
use crate::retention::{self, Policy};
use crate::session::{self, Next};
use crate::shutdown::Shutdown;
use crate::zk::{Op, SessionEvent, WatchEvent, Zk, ZkError};
use plan::{Action, Assigned, AssignedDetail, Pending, Snapshot};

/// What a master needs to run.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Where ZooKeeper is and how to talk to it.
    pub connect: crate::zk::ConnectOptions,
    /// The namespace.
    pub layout: Layout,
    /// This master's id.
    pub id: String,
    /// Longest time between two full rounds.
    pub tick: Duration,
    /// Which results to delete from /status, checked every minute.
    pub retention: Policy,
}

/// A worker may hold this many assignments per thread: enough that it
/// never waits for the master, few enough that the queue stays in /tasks.
pub const WINDOW_PER_THREAD: usize = 2;

/// How often the active master applies the retention policy.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// A message to the master's control loop: each means "look again".
#[derive(Debug)]
pub enum Msg {
    /// A watched node changed.
    Watch(WatchEvent),
    /// The session's state changed.
    Session(SessionEvent),
    /// Stop: leave /master at once so a standby takes over.
    Shutdown,
}

impl From<WatchEvent> for Msg {
    fn from(event: WatchEvent) -> Self {
        Msg::Watch(event)
    }
}

impl From<SessionEvent> for Msg {
    fn from(event: SessionEvent) -> Self {
        Msg::Session(event)
    }
}

impl From<Shutdown> for Msg {
    fn from(_: Shutdown) -> Self {
        Msg::Shutdown
    }
}

/// Runs a master until a [`Msg::Shutdown`] arrives on `rx`. Session loss
/// starts the election over with a new session.
pub fn run(cfg: &MasterConfig, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Result<(), Error> {
    loop {
        let Some(zk) = session::open(&cfg.connect, &cfg.layout, tx, rx, |m| {
            matches!(m, Msg::Shutdown)
        })?
        else {
            return Ok(());
        };
        match campaign(cfg, &zk, tx, rx) {
            Next::Stop => {
                info!("master {}: stopping", cfg.id);
                return Ok(());
            }
            Next::Restart => info!("master {}: starting over with a new session", cfg.id),
        }
    }
}

/// Standby until elected, then leads until the session or the lead is lost.
fn campaign(cfg: &MasterConfig, zk: &Zk, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Next {
    // True while a watch on /master is armed and has not fired: one watch
    // at a time, however many ticks pass.
    let mut watching = false;
    let mut announced = false;
    loop {
        if zk.is_lost() {
            return Next::Restart;
        }
        if zk.is_connected() {
            match run_for_master(cfg, zk) {
                Ok(Some(epoch)) => {
                    info!("master {}: active (epoch {epoch})", cfg.id);
                    return Leader::new(cfg, zk, epoch).lead(tx, rx);
                }
                Ok(None) if watching => {}
                Ok(None) => match zk.exists_watch(&cfg.layout.master(), tx) {
                    Ok(Some(_)) => {
                        watching = true;
                        if !announced {
                            info!("master {}: standby", cfg.id);
                            announced = true;
                        }
                    }
                    Ok(None) => continue,
                    Err(err) => warn!("master {}: cannot watch /master: {err}", cfg.id),
                },
                Err(err) => warn!("master {}: election attempt failed: {err}", cfg.id),
            }
        }
        match rx.recv_timeout(cfg.tick) {
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => return Next::Stop,
            Ok(Msg::Watch(event)) if event.path == cfg.layout.master() => watching = false,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// One election attempt: `Some(epoch)` when this session is now the master.
fn run_for_master(cfg: &MasterConfig, zk: &Zk) -> Result<Option<i32>, ZkError> {
    let layout = &cfg.layout;
    if let Some(epoch) = held_epoch(zk, layout)? {
        return Ok(Some(epoch));
    }
    let Some((_, epoch_stat)) = zk.get(&layout.epoch())? else {
        return Err(ZkError::NoNode);
    };
    let epoch = epoch_stat.version + 1;
    let info = MasterInfo {
        id: cfg.id.clone(),
        host: session::host_name(),
        pid: std::process::id(),
        session: format!("{:#x}", zk.session_id()),
        epoch,
    };
    let txn = [
        Op::CreateEphemeral {
            path: layout.master(),
            data: model::encode(&info),
        },
        Op::SetData {
            path: layout.epoch(),
            data: Vec::new(),
            version: Some(epoch_stat.version),
        },
    ];
    match zk.multi(&txn) {
        Ok(()) => Ok(Some(epoch)),
        Err(err) if err.is_txn_failure(0, &ZkError::NodeExists) => Ok(None),
        Err(err) if err.is_txn_failure(1, &ZkError::BadVersion) => Ok(None),
        // Unknown outcome: the next attempt finds /master if it was ours.
        Err(err) => Err(err),
    }
}

/// The epoch this session holds if /master is already its own (an earlier
/// election whose reply was lost).
fn held_epoch(zk: &Zk, layout: &Layout) -> Result<Option<i32>, ZkError> {
    match zk.get(&layout.master())? {
        Some((data, stat)) if stat.ephemeral_owner == zk.session_id() => {
            Ok(model::decode::<MasterInfo>(&data)
                .ok()
                .map(|info| info.epoch))
        }
        _ => Ok(None),
    }
}

/// The active master's loop state.
struct Leader<'a> {
    cfg: &'a MasterConfig,
    zk: &'a Zk,
    epoch: i32,
    /// Paths whose one-shot watch is armed and has not fired yet.
    armed: HashSet<String>,
    /// Each live worker's assignment names as last listed. Valid while the
    /// folder's watch is armed (nothing changed since) and the master wrote
    /// nothing there since: a light round lists only the other folders, so
    /// its work follows what changed, not the number of workers.
    folders: BTreeMap<String, Vec<String>>,
    /// The next round must re-read and repair everything.
    full: bool,
    /// Live workers and their windows, as of the last full round.
    windows: BTreeMap<String, usize>,
    /// Names under /tasks as of the last listing, oldest first, less the
    /// ones assigned since. New tasks always sort after these (sequence
    /// numbers only grow), so /tasks is listed again only when this runs
    /// dry or a full round comes: work per event does not grow with the
    /// backlog.
    queue: BTreeSet<String>,
    /// /tasks changed since it was last listed.
    tasks_changed: bool,
    /// When each claimed assignment was first seen without its claim.
    lost_since: HashMap<String, Instant>,
    rng: rand::rngs::ThreadRng,
}

impl<'a> Leader<'a> {
    fn new(cfg: &'a MasterConfig, zk: &'a Zk, epoch: i32) -> Self {
        Leader {
            cfg,
            zk,
            epoch,
            armed: HashSet::new(),
            folders: BTreeMap::new(),
            full: true,
            windows: BTreeMap::new(),
            queue: BTreeSet::new(),
            tasks_changed: true,
            lost_since: HashMap::new(),
            rng: rand::rng(),
        }
    }

    fn lead(mut self, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Next {
        let mut next_full = Instant::now() + self.cfg.tick;
        let mut next_retention = Instant::now();
        loop {
            if self.zk.is_lost() {
                warn!("master {}: session lost; stepping down", self.cfg.id);
                return Next::Restart;
            }
            if self.zk.is_connected() && Instant::now() >= next_retention {
                next_retention = Instant::now() + RETENTION_EVERY;
                let policy = self.cfg.retention;
                match retention::purge(self.zk, &self.cfg.layout, policy, Some(self.epoch)) {
                    Err(err) if fenced_out(&err) => return Next::Restart,
                    Err(err) => warn!("master {}: retention not applied: {err}", self.cfg.id),
                    Ok(_) => {}
                }
            }
            if self.zk.is_connected() && self.round(tx).is_err() {
                warn!(
                    "master {}: deposed (epoch {} is stale); stepping down",
                    self.cfg.id, self.epoch
                );
                return Next::Restart;
            }
            // Wait for something to happen, then take every message queued.
            let wait = next_full.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Next::Stop,
            };
            for msg in first.into_iter().chain(rx.try_iter()) {
                match msg {
                    Msg::Shutdown => return Next::Stop,
                    Msg::Watch(event) => {
                        self.armed.remove(&event.path);
                        if event.path == self.cfg.layout.tasks() {
                            self.tasks_changed = true;
                        } else if event.path == self.cfg.layout.workers() {
                            self.full = true;
                        }
                    }
                    Msg::Session(_) => self.full = true,
                }
            }
            if Instant::now() >= next_full {
                self.full = true;
            }
            if self.full {
                next_full = Instant::now() + self.cfg.tick;
            }
        }
    }

    /// Reads, plans and applies one round. Errors other than being deposed
    /// only mark the next round as full.
    fn round(&mut self, tx: &Sender<Msg>) -> Result<(), Deposed> {
        let full = std::mem::take(&mut self.full);
        let snap = match self.read(full, tx) {
            Ok(snap) => snap,
            Err(ReadError::Deposed) => return Err(Deposed),
            Err(ReadError::Zk(err)) => {
                debug!("master {}: read failed ({err}); retrying", self.cfg.id);
                self.full = true;
                return Ok(());
            }
        };
        let rng = &mut self.rng;
        let actions = plan::plan(&snap, &mut |n| rand::RngExt::random_range(rng, 0..n));
        // Whatever happens to them, these leave the queue: a task still in
        // /tasks after a failed write is found again by the next listing.
        for p in &snap.pending {
            self.queue.remove(&p.name);
        }
        self.apply(&actions)
    }

    /// Reads what this round needs; arms the watches that are not armed.
    fn read(&mut self, full: bool, tx: &Sender<Msg>) -> Result<Snapshot, ReadError> {
        let layout = &self.cfg.layout;
        if full {
            if !self.still_master()? {
                return Err(ReadError::Deposed);
            }
            self.windows = self.read_windows(tx)?;
        }
        // Full rounds look at every folder (a dead worker's too); light
        // rounds only at the live workers' that may have changed. All are
        // listed at once (with /tasks when the queue must be refreshed), and
        // a live worker's folder is watched: that says when it has room.
        let dirs: Vec<String> = if full {
            self.folders.clear();
            self.zk.children(&layout.assign())?
        } else {
            self.windows
                .keys()
                .filter(|w| !self.folder_unchanged(w))
                .cloned()
                .collect()
        };
        let mut requests: Vec<(String, bool)> = dirs
            .iter()
            .map(|w| {
                let path = layout.assign_dir(w);
                let watch = self.windows.contains_key(w) && !self.armed.contains(&path);
                (path, watch)
            })
            .collect();
        let refresh_queue = full || (self.tasks_changed && self.queue.is_empty());
        if refresh_queue {
            requests.push((layout.tasks(), !self.armed.contains(&layout.tasks())));
        }
        let mut results = self.zk.children_many_watch(&requests, tx);
        if refresh_queue {
            let (path, watch) = requests.pop().unwrap_or_default();
            let names = results.pop().unwrap_or(Err(ZkError::NoNode))?;
            if watch {
                self.armed.insert(path);
            }
            self.tasks_changed = false;
            self.queue = names.into_iter().collect();
        }
        let mut listed = Vec::with_capacity(dirs.len());
        for ((worker, (path, watch)), result) in dirs.into_iter().zip(requests).zip(results) {
            match result {
                Ok(names) => {
                    if watch {
                        self.armed.insert(path);
                    }
                    listed.push((worker, names));
                }
                Err(ZkError::NoNode) => {}
                Err(err) => return Err(err.into()),
            }
        }
        for (worker, names) in &listed {
            if self.windows.contains_key(worker) {
                self.folders.insert(worker.clone(), names.clone());
            }
        }
        if !full {
            // Every live worker's folder: as listed now, or as last listed.
            listed = self
                .windows
                .keys()
                .filter_map(|w| self.folders.get(w).map(|names| (w.clone(), names.clone())))
                .collect();
        }
        let held: BTreeMap<String, usize> = listed
            .iter()
            .map(|(w, names)| (w.clone(), names.len()))
            .collect();
        let mut assign_dirs = BTreeMap::new();
        for (worker, names) in listed {
            let assigned = if full {
                self.read_assignments(&worker, names)?
            } else {
                names
                    .into_iter()
                    .map(|name| Assigned { name, detail: None })
                    .collect()
            };
            assign_dirs.insert(worker, assigned);
        }
        // Claims are read after the assignments: a claim made in between is
        // then seen, so a running task is never taken for an interrupted one.
        let running = if full {
            let claims: BTreeSet<String> =
                self.zk.children(&layout.running())?.into_iter().collect();
            Some(self.with_fresh_losses(claims, &assign_dirs))
        } else {
            None
        };
        let head: Vec<String> = self
            .queue
            .iter()
            .take(plan::room(&self.windows, &held))
            .cloned()
            .collect();
        let head_paths: Vec<String> = head.iter().map(|t| layout.task(t)).collect();
        let mut pending = Vec::new();
        for (name, got) in head.into_iter().zip(self.zk.get_many(&head_paths)) {
            match got? {
                Some((data, stat)) => {
                    let task = model::decode_task(&data);
                    if let Err(why) = &task {
                        warn!("master: task {name} is malformed: {why}");
                    }
                    pending.push(Pending {
                        name,
                        version: stat.version,
                        task,
                    });
                }
                None => {
                    self.queue.remove(&name);
                }
            }
        }
        Ok(Snapshot {
            live_workers: self.windows.clone(),
            pending,
            assign_dirs,
            running,
            now_ms: model::now_ms(),
        })
    }

    /// Counts a claim that vanished less than a session timeout ago as still
    /// alive. A worker cut off from ZooKeeper learns that its session is
    /// gone only some time after the server dropped it, and kills its jobs
    /// then; waiting that long before a re-run keeps the two runs apart.
    fn with_fresh_losses(
        &mut self,
        mut claims: BTreeSet<String>,
        assign_dirs: &BTreeMap<String, Vec<Assigned>>,
    ) -> BTreeSet<String> {
        let now = Instant::now();
        let grace = self.cfg.connect.session_timeout;
        let lost: HashSet<&String> = assign_dirs
            .values()
            .flatten()
            .filter(|a| {
                a.detail.as_ref().is_some_and(|d| d.version > 0) && !claims.contains(&a.name)
            })
            .map(|a| &a.name)
            .collect();
        self.lost_since.retain(|name, _| lost.contains(name));
        for name in lost {
            let since = *self.lost_since.entry(name.clone()).or_insert(now);
            if now.duration_since(since) < grace {
                claims.insert(name.clone());
            }
        }
        claims
    }

    /// The live workers and their windows (twice their threads).
    fn read_windows(&mut self, tx: &Sender<Msg>) -> Result<BTreeMap<String, usize>, ZkError> {
        let layout = &self.cfg.layout;
        let workers = self.children_watched(&layout.workers(), tx)?;
        let paths: Vec<String> = workers.iter().map(|w| layout.worker(w)).collect();
        let mut windows = BTreeMap::new();
        for (worker, got) in workers.into_iter().zip(self.zk.get_many(&paths)) {
            let Some((data, _)) = got? else { continue };
            let threads = model::decode::<WorkerInfo>(&data).map_or(1, |info| info.threads.max(1));
            windows.insert(worker, threads.saturating_mul(WINDOW_PER_THREAD));
        }
        Ok(windows)
    }

    /// Data and versions of one worker's assignments (full rounds).
    fn read_assignments(&self, worker: &str, names: Vec<String>) -> Result<Vec<Assigned>, ZkError> {
        let layout = &self.cfg.layout;
        let paths: Vec<String> = names.iter().map(|t| layout.assignment(worker, t)).collect();
        let mut assigned = Vec::new();
        for (name, got) in names.into_iter().zip(self.zk.get_many(&paths)) {
            if let Some((data, stat)) = got? {
                let task = model::decode_task(&data);
                if let Err(why) = &task {
                    warn!("master: assignment {worker}/{name} is malformed: {why}");
                }
                let detail = AssignedDetail {
                    version: stat.version,
                    task,
                };
                assigned.push(Assigned {
                    name,
                    detail: Some(detail),
                });
            }
        }
        Ok(assigned)
    }

    /// Whether `worker`'s folder is known not to have changed since it was
    /// last listed.
    fn folder_unchanged(&self, worker: &str) -> bool {
        self.folders.contains_key(worker)
            && self.armed.contains(&self.cfg.layout.assign_dir(worker))
    }

    fn still_master(&self) -> Result<bool, ZkError> {
        let stat = self.zk.exists(&self.cfg.layout.master())?;
        Ok(stat.is_some_and(|s| s.ephemeral_owner == self.zk.session_id()))
    }

    fn children_watched(&mut self, path: &str, tx: &Sender<Msg>) -> Result<Vec<String>, ZkError> {
        if self.armed.contains(path) {
            return self.zk.children(path);
        }
        let children = self.zk.children_watch(path, tx)?;
        self.armed.insert(path.to_string());
        Ok(children)
    }

    /// Applies the actions, all in flight at once, each one transaction.
    fn apply(&mut self, actions: &[Action]) -> Result<(), Deposed> {
        if actions.is_empty() {
            return Ok(());
        }
        let layout = &self.cfg.layout;
        let txns: Vec<Vec<Op>> = actions
            .iter()
            .map(|a| plan::ops(a, layout, self.epoch))
            .collect();
        for action in actions {
            // Our own write changes the folder: list it again next round.
            match action {
                Action::Assign { worker, .. }
                | Action::Requeue { worker, .. }
                | Action::Fail {
                    from: plan::Origin::Assigned(worker),
                    ..
                } => {
                    self.folders.remove(worker);
                }
                _ => {}
            }
        }
        let results = self.zk.multi_many(&txns);
        let mut cleanups = Vec::new();
        for (action, result) in actions.iter().zip(results) {
            match result {
                Ok(()) => log_applied(action),
                Err(err) if fenced_out(&err) => return Err(Deposed),
                Err(err) if err.is_txn_failure(1, &ZkError::NodeExists) => {
                    // The task already has its one result: only clean up.
                    cleanups.extend(plan::cleanup_ops(action, layout, self.epoch));
                    self.full = true;
                }
                Err(err) => {
                    debug!("master: {action:?} not applied: {err}");
                    self.full = true;
                }
            }
        }
        for result in self.zk.multi_many(&cleanups) {
            match result {
                Err(err) if fenced_out(&err) => return Err(Deposed),
                Err(err) => debug!("master: cleanup not applied: {err}"),
                Ok(()) => {}
            }
        }
        Ok(())
    }
}

/// True when the epoch check (operation 0) failed: another master won.
fn fenced_out(err: &ZkError) -> bool {
    err.is_txn_failure(0, &ZkError::BadVersion) || err.is_txn_failure(0, &ZkError::NoNode)
}

fn log_applied(action: &Action) {
    match action {
        Action::Assign { task, worker, .. } => debug!("master: assigned {task} to {worker}"),
        Action::Requeue { task, worker, .. } => info!("master: requeued {task} from {worker}"),
        Action::Fail { task, result, .. } => match &result.reason {
            Some(reason) => warn!("master: failed {task}: {reason}"),
            None => warn!("master: failed {task}"),
        },
        Action::RemoveAssignDir { worker } => {
            info!("master: removed the assignments folder of gone worker {worker}")
        }
    }
}

/// This master's epoch is stale: another master was elected.
struct Deposed;

enum ReadError {
    Deposed,
    Zk(ZkError),
}

impl From<ZkError> for ReadError {
    fn from(err: ZkError) -> Self {
        ReadError::Zk(err)
    }
}
