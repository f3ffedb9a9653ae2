//! The active master as a state machine, in the manner of raft-rs: the
//! shell (`lead.rs`) feeds it what it read and what became of its writes,
//! with the current time; it answers what to read next and which
//! transactions to send. It keeps every piece of bookkeeping (the queue's
//! cached head, which folders changed, which watches are armed, when each
//! claim vanished, how long each assignment has waited, light or full
//! round) and makes every decision; the shell does only I/O.
//!
//! A round goes:
//! 1. [`Core::begin`]: full or light. A full round first reads the roots:
//!    whether /master is still ours, the live workers and their records,
//!    the assignment folders ([`Core::roots`]).
//! 2. [`Core::listing`]: the folders to list (a full round: all; a light
//!    one: only the live workers' folders that may have changed), with
//!    /tasks when the queue's cached head must be refreshed.
//! 3. [`Core::listed`]: what that found; answers which assignments to read
//!    in detail and whether to list /running (full rounds), and the head
//!    of the queue to read (as many as the workers have room for).
//! 4. [`Core::decide`]: those reads, and the time; answers the actions
//!    (see `plan.rs`), each one fenced transaction.
//! 5. [`Core::applied`]: what became of them; answers the clean-ups, or
//!    that this master was deposed.
//!
//! The grace rule lives here: a claim that vanished counts as live until
//! its worker's rerun grace has passed (the grace its worker published,
//! else this master's own default), so a worker cut off from ZooKeeper has
//! killed its job before the master runs it again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::load;
use super::parked::Parked;
use super::plan::{
    self, Action, Assigned, AssignedDetail, LockMember, Pending, QueueMember, Snapshot,
};
use crate::layout::{Layout, task_sequence};
use crate::model::{self, WorkerInfo};
use crate::obs::metrics::Load;
use crate::zk::{Node, Op, ZkError};

/// This master's epoch is stale: another master was elected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deposed;

/// What to list in step 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Workers whose assignment folder to list, each with whether to arm
    /// a child watch on it.
    pub dirs: Vec<(String, bool)>,
    /// List /tasks too, arming a watch if `Some(true)`.
    pub tasks: Option<bool>,
}

/// What to read in step 3.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Details {
    /// Assignments (worker, task) to read with their versions.
    pub assignments: Vec<(String, String)>,
    /// List /running.
    pub running: bool,
    /// Pending tasks to read, oldest first.
    pub heads: Vec<String>,
    /// Tasks with a cancel request that no folder listed: read where they
    /// may be (/tasks, and whether /status has them).
    pub cancelled: Vec<String>,
}

/// The reads of step 3, in the order [`Details`] asked for them.
#[derive(Debug, Default)]
pub struct DetailsRead {
    /// Each asked assignment's data and stat, `None` if gone.
    pub assignments: Vec<Node>,
    /// The names under /running, if asked.
    pub running: Option<BTreeSet<String>>,
    /// Each asked pending task's data and stat, `None` if gone.
    pub heads: Vec<Node>,
    /// For each of `Details::cancelled`: its node in /tasks, and whether it
    /// has a result.
    pub cancelled: Vec<(Node, bool)>,
    /// The lock queues' members (full rounds).
    pub lock_members: Vec<QueueMember>,
}

/// Each folder's assignments as listed, in a full round with the data and
/// version read of each (`read`, in listing order); one gone since the
/// listing is left out: nothing is to be done about it.
fn assign_dirs(
    listed: Vec<(String, Vec<String>)>,
    full: bool,
    read: Vec<Node>,
) -> BTreeMap<String, Vec<Assigned>> {
    let mut read = read.into_iter();
    let mut dirs = BTreeMap::new();
    for (worker, names) in listed {
        let mut assigned = Vec::new();
        for name in names {
            let detail = if full {
                let Some(Some((data, stat))) = read.next() else {
                    continue;
                };
                Some(AssignedDetail {
                    version: stat.version,
                    task: model::decode_task(&data),
                })
            } else {
                None
            };
            assigned.push(Assigned { name, detail });
        }
        dirs.insert(worker, assigned);
    }
    dirs
}

/// The active master's state between and within rounds.
pub struct Core {
    layout: Layout,
    epoch: i32,
    tick: Duration,
    /// The rerun grace of workers that never published one.
    default_grace: Duration,
    /// Paths whose one-shot watch is armed and has not fired yet.
    armed: HashSet<String>,
    /// Each live worker's assignment names as last listed. Valid while the
    /// folder's watch is armed (nothing changed since) and the master wrote
    /// nothing there since: a light round lists only the other folders, so
    /// its work follows what changed, not the number of workers.
    folders: BTreeMap<String, Vec<String>>,
    /// The next round must re-read and repair everything.
    full: bool,
    /// When the next full round is due at the latest.
    next_full: Instant,
    /// Live workers and their threads, as of the last full round.
    workers: BTreeMap<String, usize>,
    /// Each worker's rerun grace, kept after it is gone (that is when it
    /// is needed).
    graces: HashMap<String, Duration>,
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
    /// When each unclaimed assignment was first seen unclaimed.
    waiting_since: HashMap<String, Instant>,
    /// The tasks with a cancel request, as of the last full round.
    cancels: BTreeSet<String>,
    /// The live workers' labels (those that have any), as of the last full
    /// round.
    labels: BTreeMap<String, BTreeSet<String>>,
    /// The worker and lock of each assigned task that has a lock: a lock
    /// is held while a task of it is assigned or running (or interrupted,
    /// until it is requeued after the grace).
    locks_of: HashMap<String, (String, String)>,
    /// Pending tasks read but not assignable yet.
    parked: Parked,
    /// The round in progress.
    round: Round,
    /// What the last decided round saw, for the metrics.
    load: Load,
}

/// What a round has learnt so far.
#[derive(Debug, Default)]
struct Round {
    full: bool,
    /// Every assignment folder's names (full: all; light: live workers').
    listed: Vec<(String, Vec<String>)>,
    details: Details,
}

impl Core {
    /// A newly elected master's state: its first round is full.
    pub fn new(
        layout: Layout,
        epoch: i32,
        tick: Duration,
        default_grace: Duration,
        now: Instant,
    ) -> Self {
        Core {
            layout,
            epoch,
            tick,
            default_grace,
            armed: HashSet::new(),
            folders: BTreeMap::new(),
            full: true,
            next_full: now,
            workers: BTreeMap::new(),
            graces: HashMap::new(),
            queue: BTreeSet::new(),
            tasks_changed: true,
            lost_since: HashMap::new(),
            waiting_since: HashMap::new(),
            cancels: BTreeSet::new(),
            labels: BTreeMap::new(),
            locks_of: HashMap::new(),
            parked: Parked::default(),
            round: Round::default(),
            load: Load::default(),
        }
    }

    /// The namespace.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A watch fired: look again at what it watched.
    pub fn watch_fired(&mut self, path: &str) {
        self.armed.remove(path);
        if path == self.layout.tasks() {
            self.tasks_changed = true;
        } else if path == self.layout.workers() {
            self.full = true;
        }
    }

    /// The session changed (a reconnect, say): re-read everything.
    pub fn session_changed(&mut self) {
        self.full = true;
    }

    /// A read failed: the next round re-reads everything.
    pub fn read_failed(&mut self) {
        self.full = true;
    }

    /// When the loop must run a round even if nothing happens.
    pub fn next_wake(&self, now: Instant, now_ms: u64) -> Instant {
        match self.parked.next_due() {
            Some(due) => self
                .next_full
                .min(now + Duration::from_millis(due.saturating_sub(now_ms))),
            None => self.next_full,
        }
    }

    /// Step 1: starts a round at `now`. `Some(watch /workers?)` for a full
    /// round, whose roots the shell reads next; `None` for a light one.
    pub fn begin(&mut self, now: Instant) -> Option<bool> {
        let full = std::mem::take(&mut self.full) || now >= self.next_full;
        if full {
            self.next_full = now + self.tick;
        }
        self.round = Round {
            full,
            ..Round::default()
        };
        full.then(|| !self.armed.contains(&self.layout.workers()))
    }

    /// Step 1 of a full round: whether /master is still ours, the live
    /// workers with their records (as listed and read; `watched`: the
    /// listing armed a watch), the folders under /assign, and the tasks
    /// under /cancel.
    pub fn roots(
        &mut self,
        still_master: bool,
        workers: Vec<(String, Node)>,
        watched: bool,
        assign_dirs: Vec<String>,
        cancels: Vec<String>,
    ) -> Result<(), Deposed> {
        if !still_master {
            return Err(Deposed);
        }
        self.cancels = cancels.into_iter().collect();
        // A parked task with a cancel request is never released to a
        // worker: it waits in /tasks, where a full round fails it.
        let cancels = &self.cancels;
        self.parked.retain(|name| !cancels.contains(name));
        if watched {
            self.armed.insert(self.layout.workers());
        }
        self.workers.clear();
        self.labels.clear();
        for (worker, node) in workers {
            let Some((data, _)) = node else { continue };
            let info = model::decode::<WorkerInfo>(&data).ok();
            let threads = info.as_ref().map_or(1, |i| i.threads.max(1));
            if let Some(info) = info.as_ref().filter(|i| !i.labels.is_empty()) {
                self.labels
                    .insert(worker.clone(), info.labels.iter().cloned().collect());
            }
            if let Some(grace) = info.and_then(|i| i.rerun_grace_ms) {
                self.graces
                    .insert(worker.clone(), Duration::from_millis(grace));
            }
            self.workers.insert(worker, threads);
        }
        let dirs: BTreeSet<&String> = assign_dirs.iter().collect();
        self.graces
            .retain(|w, _| dirs.contains(w) || self.workers.contains_key(w));
        self.folders.clear();
        self.round.listed = assign_dirs.into_iter().map(|w| (w, Vec::new())).collect();
        Ok(())
    }

    /// Step 2: the folders to list, and whether to list /tasks.
    pub fn listing(&self) -> Listing {
        let dirs: Vec<String> = if self.round.full {
            self.round.listed.iter().map(|(w, _)| w.clone()).collect()
        } else {
            self.workers
                .keys()
                .filter(|w| !self.folder_unchanged(w))
                .cloned()
                .collect()
        };
        let refresh = self.round.full || (self.tasks_changed && self.queue.is_empty());
        Listing {
            dirs: dirs
                .into_iter()
                .map(|w| {
                    let watch = self.workers.contains_key(&w)
                        && !self.armed.contains(&self.layout.assign_dir(&w));
                    (w, watch)
                })
                .collect(),
            tasks: refresh.then(|| !self.armed.contains(&self.layout.tasks())),
        }
    }

    /// Step 3: what `listing` found (`None` for a folder that is gone, and
    /// /tasks' names if it was listed); answers what to read in detail.
    pub fn listed(
        &mut self,
        listing: &Listing,
        dirs: Vec<Option<Vec<String>>>,
        tasks: Option<Vec<String>>,
    ) -> Details {
        if let Some(names) = tasks {
            self.note_queue(listing, names);
        }
        let listed = self.note_folders(listing, dirs);
        let details = self.details_for(&listed);
        self.round.listed = listed;
        self.round.details = details.clone();
        details
    }

    /// The queue as /tasks listed it: what is not parked, oldest first.
    fn note_queue(&mut self, listing: &Listing, names: Vec<String>) {
        if listing.tasks == Some(true) {
            self.armed.insert(self.layout.tasks());
        }
        self.tasks_changed = false;
        let listed: BTreeSet<String> = names.into_iter().collect();
        self.parked.retain(|name| listed.contains(name));
        self.queue = listed
            .into_iter()
            .filter(|name| !self.parked.contains(name))
            .collect();
    }

    /// Each live worker's assignment names: as listed now, or (in a light
    /// round, for a folder not listed) as last listed.
    fn note_folders(
        &mut self,
        listing: &Listing,
        dirs: Vec<Option<Vec<String>>>,
    ) -> Vec<(String, Vec<String>)> {
        let mut listed = Vec::new();
        for ((worker, watch), names) in listing.dirs.iter().zip(dirs) {
            let Some(names) = names else { continue };
            if *watch {
                self.armed.insert(self.layout.assign_dir(worker));
            }
            if self.workers.contains_key(worker) {
                self.folders.insert(worker.clone(), names.clone());
            }
            listed.push((worker.clone(), names));
        }
        if self.round.full {
            return listed;
        }
        self.workers
            .keys()
            .filter_map(|w| self.folders.get(w).map(|names| (w.clone(), names.clone())))
            .collect()
    }

    /// What to read in detail, given the folders `listed`: in a full round,
    /// every assignment, the claims and the cancelled tasks no folder
    /// holds; in every round, the oldest pending tasks there is room for.
    fn details_for(&self, listed: &[(String, Vec<String>)]) -> Details {
        let held: BTreeMap<String, usize> = listed
            .iter()
            .map(|(w, names)| (w.clone(), names.len()))
            .collect();
        let heads = self
            .queue
            .iter()
            .filter(|t| !self.cancels.contains(*t))
            .take(plan::room(&self.workers, &held))
            .cloned()
            .collect();
        if !self.round.full {
            return Details {
                heads,
                ..Details::default()
            };
        }
        let assigned: BTreeSet<&String> = listed.iter().flat_map(|(_, names)| names).collect();
        Details {
            assignments: listed
                .iter()
                .flat_map(|(w, names)| names.iter().map(|t| (w.clone(), t.clone())))
                .collect(),
            running: true,
            heads,
            cancelled: self
                .cancels
                .iter()
                .filter(|t| !assigned.contains(t))
                .cloned()
                .collect(),
        }
    }

    /// Step 4: the details read, at `now` (`now_ms` stamps results);
    /// answers the round's actions. `pick(n)` breaks ties below `n`.
    pub fn decide(
        &mut self,
        read: DetailsRead,
        now: Instant,
        now_ms: u64,
        pick: &mut dyn FnMut(usize) -> usize,
    ) -> Vec<Action> {
        let round = std::mem::take(&mut self.round);
        let assign_dirs = assign_dirs(round.listed, round.full, read.assignments);
        let running = read
            .running
            .map(|claims| self.live_claims(claims, &assign_dirs, now));
        if running.is_some() {
            self.note_waiting(&assign_dirs, now);
        }
        let held_locks = self.held_locks(&assign_dirs);
        let lock_members = self.lock_members(read.lock_members, &round.details.heads, &assign_dirs);
        let labels = &self.labels;
        let workers = &self.workers;
        let mut pending = self.parked.release(now_ms, &held_locks, round.full, |on| {
            workers.keys().any(|w| plan::matches(labels.get(w), on))
        });
        pending.extend(self.pending(round.details.heads, read.heads));
        pending.sort_by_key(|p| task_sequence(&p.name).unwrap_or(i64::MAX));
        let (cancelled_pending, stale_cancels) =
            cancel_places(round.details.cancelled, read.cancelled);
        let snap = Snapshot {
            live_workers: self.workers.clone(),
            pending,
            assign_dirs,
            running,
            waiting: self
                .waiting_since
                .iter()
                .map(|(t, since)| (t.clone(), now.saturating_duration_since(*since)))
                .collect(),
            tick: self.tick,
            now_ms,
            cancels: self.cancels.clone(),
            cancelled_pending,
            stale_cancels,
            labels: self.labels.clone(),
            held_locks,
            lock_members,
        };
        self.load = load::measure(&snap, self.queue.len(), self.load);
        let planned = plan::plan(&snap, pick);
        for (pending, wait) in planned.parked {
            self.parked.park(pending, wait);
        }
        for action in &planned.actions {
            self.note_lock(action);
        }
        planned.actions
    }

    /// The lock queue members as read, each told whether its task is still
    /// in flight: no result, and queued, parked or assigned.
    fn lock_members(
        &self,
        read: Vec<QueueMember>,
        heads: &[String],
        assign_dirs: &BTreeMap<String, Vec<Assigned>>,
    ) -> Vec<LockMember> {
        let assigned: HashSet<&String> = assign_dirs.values().flatten().map(|a| &a.name).collect();
        read.into_iter()
            .map(|member| {
                let in_flight = member.task.as_ref().is_some_and(|t| {
                    !member.finished
                        && (self.queue.contains(t)
                            || self.parked.contains(t)
                            || heads.contains(t)
                            || assigned.contains(t))
                });
                LockMember { member, in_flight }
            })
            .collect()
    }

    /// Keeps `locks_of` up to date with an assignment or a move this round
    /// decided (the folder a locked task is in).
    fn note_lock(&mut self, action: &Action) {
        let (task, worker, data) = match action {
            Action::Assign {
                task, worker, data, ..
            } => (task, worker, data),
            Action::Move { task, to, data, .. } => (task, to, data),
            _ => return,
        };
        if let Some(lock) = model::decode_task(data).ok().and_then(|t| t.lock) {
            self.locks_of.insert(task.clone(), (worker.clone(), lock));
        }
    }

    /// The locks held now: those of the tasks in the assignment folders,
    /// as read in detail by a full round or assigned by this master since.
    /// A folder listed this round forgets the tasks no longer in it; the
    /// others (a dead worker's, in light rounds) keep theirs.
    fn held_locks(&mut self, assign_dirs: &BTreeMap<String, Vec<Assigned>>) -> BTreeSet<String> {
        let listed: HashSet<&String> = assign_dirs.values().flatten().map(|a| &a.name).collect();
        for (worker, assigned) in assign_dirs {
            for a in assigned {
                if let Some(Ok(task)) = a.detail.as_ref().map(|d| &d.task) {
                    match &task.lock {
                        Some(lock) => self
                            .locks_of
                            .insert(a.name.clone(), (worker.clone(), lock.clone())),
                        None => self.locks_of.remove(&a.name),
                    };
                }
            }
        }
        self.locks_of
            .retain(|task, (worker, _)| listed.contains(task) || !assign_dirs.contains_key(worker));
        self.locks_of
            .values()
            .map(|(_, lock)| lock.clone())
            .collect()
    }

    /// What the last decided round saw: workers, queue, assigned, running.
    pub fn load(&self) -> Load {
        self.load
    }

    /// The head tasks as read; whatever happens to them, they leave the
    /// cached queue: one still in /tasks after a failed write is found
    /// again by the next listing.
    fn pending(&mut self, heads: Vec<String>, nodes: Vec<Node>) -> Vec<Pending> {
        let mut pending = Vec::new();
        for (name, node) in heads.into_iter().zip(nodes) {
            self.queue.remove(&name);
            if let Some((data, stat)) = node {
                pending.push(Pending {
                    name,
                    version: stat.version,
                    task: model::decode_task(&data),
                });
            }
        }
        pending
    }

    /// The grace rule: the claims under /running, plus every claim that
    /// vanished less than its worker's rerun grace ago. A worker cut off
    /// from ZooKeeper learns that its session is gone only some time after
    /// the server dropped it, and kills its jobs then; waiting that long
    /// before a re-run keeps the two runs apart.
    fn live_claims(
        &mut self,
        mut claims: BTreeSet<String>,
        assign_dirs: &BTreeMap<String, Vec<Assigned>>,
        now: Instant,
    ) -> BTreeSet<String> {
        let lost: HashMap<&String, &String> = assign_dirs
            .iter()
            .flat_map(|(w, assigned)| assigned.iter().map(move |a| (w, a)))
            .filter(|(_, a)| {
                a.detail.as_ref().is_some_and(|d| d.version > 0) && !claims.contains(&a.name)
            })
            .map(|(w, a)| (&a.name, w))
            .collect();
        self.lost_since.retain(|name, _| lost.contains_key(name));
        for (name, worker) in lost {
            let since = *self.lost_since.entry(name.clone()).or_insert(now);
            let grace = self
                .graces
                .get(worker)
                .copied()
                .unwrap_or(self.default_grace);
            if now < since + grace {
                claims.insert(name.clone());
            }
        }
        claims
    }

    /// Remembers since when each unclaimed assignment of a live worker has
    /// waited, forgetting the others.
    fn note_waiting(&mut self, assign_dirs: &BTreeMap<String, Vec<Assigned>>, now: Instant) {
        let unclaimed: HashSet<&String> = assign_dirs
            .iter()
            .filter(|(w, _)| self.workers.contains_key(*w))
            .flat_map(|(_, assigned)| assigned)
            .filter(|a| a.detail.as_ref().is_some_and(|d| d.version == 0))
            .map(|a| &a.name)
            .collect();
        self.waiting_since
            .retain(|name, _| unclaimed.contains(name));
        for name in unclaimed {
            self.waiting_since.entry(name.clone()).or_insert(now);
        }
    }

    /// The check every transaction of this master starts with: its epoch.
    pub fn fence(&self) -> Op {
        plan::fence(&self.layout, self.epoch)
    }

    /// The steps of `actions`, one per action, to send behind the
    /// [`Core::fence`] (as few transactions as `zk::group` can make of them).
    pub fn steps(&self, actions: &[Action]) -> Vec<Vec<Op>> {
        actions.iter().map(|a| plan::ops(a, &self.layout)).collect()
    }

    /// Step 5: what became of each action's step (as if it had been a
    /// fenced transaction of its own: see `zk::group`); answers the
    /// clean-up steps to send the same way, or that this master is deposed.
    pub fn applied(
        &mut self,
        actions: &[Action],
        results: &[Result<(), ZkError>],
    ) -> Result<Vec<Vec<Op>>, Deposed> {
        let mut cleanups = Vec::new();
        for (action, result) in actions.iter().zip(results) {
            // Our own write changes the folders: list them again next round.
            for folder in action.folders() {
                self.folders.remove(folder);
            }
            match result {
                Ok(()) => cleanups.extend(self.leftovers(action)),
                Err(err) if fenced_out(err) => return Err(Deposed),
                Err(err) if err.is_txn_failure(1, &ZkError::NodeExists) => {
                    // The task already has its one result: only clean up.
                    cleanups.extend(plan::cleanup_ops(action, &self.layout));
                    self.full = true;
                }
                Err(_) => self.full = true,
            }
        }
        Ok(cleanups)
    }

    /// What a failed task leaves that its result's transaction could not
    /// take along (it might be gone, which would fail the transaction): its
    /// place in its lock's queue.
    fn leftovers(&self, action: &Action) -> Option<Vec<Op>> {
        let Action::Fail { result, .. } = action else {
            return None;
        };
        let lock = result.lock.as_ref()?;
        Some(vec![Op::Delete {
            path: self.layout.lockq_member(lock, &result.token),
            version: None,
        }])
    }

    /// What became of the clean-ups.
    pub fn cleaned(&mut self, results: &[Result<(), ZkError>]) -> Result<(), Deposed> {
        if results.iter().any(|r| r.as_ref().is_err_and(fenced_out)) {
            return Err(Deposed);
        }
        Ok(())
    }

    /// Whether `worker`'s folder is known not to have changed since it was
    /// last listed.
    fn folder_unchanged(&self, worker: &str) -> bool {
        self.folders.contains_key(worker) && self.armed.contains(&self.layout.assign_dir(worker))
    }
}

/// Where the cancelled tasks that no folder listed are: those still
/// queued (to fail), and the requests with nothing left to cancel (the task
/// has its result, or is nowhere) to forget.
fn cancel_places(names: Vec<String>, read: Vec<(Node, bool)>) -> (Vec<Pending>, Vec<String>) {
    let mut pending = Vec::new();
    let mut stale = Vec::new();
    for (name, (node, finished)) in names.into_iter().zip(read) {
        match node {
            Some((data, stat)) if !finished => pending.push(Pending {
                name,
                version: stat.version,
                task: model::decode_task(&data),
            }),
            _ => stale.push(name),
        }
    }
    (pending, stale)
}

/// True when the epoch check (operation 0) failed: another master won.
pub fn fenced_out(err: &ZkError) -> bool {
    err.is_txn_failure(0, &ZkError::BadVersion) || err.is_txn_failure(0, &ZkError::NoNode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Task, encode};
    use crate::zk::NodeStat;
    use crate::zk::group::{self, fake::FakeZk};

    const TICK: Duration = Duration::from_secs(2);
    const DEFAULT_GRACE: Duration = Duration::from_secs(13);

    fn name(n: u32) -> String {
        format!("task-{n:010}")
    }

    fn node(data: Vec<u8>, version: i32) -> Node {
        let stat = NodeStat {
            version,
            ..NodeStat::default()
        };
        Some((data, stat))
    }

    fn task(attempts: u32) -> Vec<u8> {
        encode(&Task {
            job: "true".into(),
            submitted_ms: 0,
            timeout_ms: None,
            retries: 2,
            attempts,
            token: "t".into(),
            history: Vec::new(),
            ..Default::default()
        })
    }

    fn worker(threads: usize, grace: Option<Duration>) -> Node {
        let info = WorkerInfo {
            host: "h".into(),
            pid: 1,
            threads,
            started_ms: 0,
            session_timeout_ms: None,
            rerun_grace_ms: grace.map(|g| g.as_millis() as u64),
            labels: Vec::new(),
        };
        node(encode(&info), 0)
    }

    /// What one round of the test cluster reads.
    #[derive(Clone)]
    struct World {
        workers: Vec<(&'static str, Node)>,
        /// Each folder's assignments: (task number, version).
        dirs: Vec<(&'static str, Vec<(u32, i32)>)>,
        running: Vec<u32>,
        queue: Vec<u32>,
        cancels: Vec<u32>,
        /// The lock every task of this world holds, if any.
        lock: Option<&'static str>,
    }

    impl World {
        /// A task record of this world.
        fn record(&self, attempts: u32) -> Vec<u8> {
            let mut t: Task = crate::model::decode(&task(attempts)).expect("a task");
            t.lock = self.lock.map(String::from);
            encode(&t)
        }

        fn listing(&self, worker: &str) -> Option<Vec<String>> {
            self.dirs
                .iter()
                .find(|(w, _)| *w == worker)
                .map(|(_, a)| a.iter().map(|(n, _)| name(*n)).collect())
        }

        fn assignment(&self, worker: &str, task: &str) -> Node {
            let (_, assigned) = self.dirs.iter().find(|(w, _)| *w == worker)?;
            let (_, version) = assigned.iter().find(|(n, _)| name(*n) == task)?;
            node(self.record(*version as u32), *version)
        }
    }

    fn first(_: usize) -> usize {
        0
    }

    /// Runs one round of `core` against `world` at `now`; the listing it
    /// asked for and the actions it decided.
    fn round(core: &mut Core, world: &World, now: Instant) -> (Listing, Vec<Action>) {
        if let Some(watch) = core.begin(now) {
            let workers = world
                .workers
                .iter()
                .map(|(w, n)| (w.to_string(), n.clone()))
                .collect();
            let dirs = world.dirs.iter().map(|(w, _)| w.to_string()).collect();
            core.roots(
                true,
                workers,
                watch,
                dirs,
                world.cancels.iter().map(|n| name(*n)).collect(),
            )
            .expect("still master");
        }
        let listing = core.listing();
        let dirs = listing.dirs.iter().map(|(w, _)| world.listing(w)).collect();
        let tasks = listing
            .tasks
            .map(|_| world.queue.iter().map(|n| name(*n)).collect());
        let details = core.listed(&listing, dirs, tasks);
        let read = DetailsRead {
            assignments: details
                .assignments
                .iter()
                .map(|(w, t)| world.assignment(w, t))
                .collect(),
            running: details
                .running
                .then(|| world.running.iter().map(|n| name(*n)).collect()),
            heads: details
                .heads
                .iter()
                .map(|_| node(world.record(0), 0))
                .collect(),
            cancelled: details.cancelled.iter().map(|_| (None, true)).collect(),
            lock_members: Vec::new(),
        };
        let actions = core.decide(read, now, 1, &mut first);
        (listing, actions)
    }

    fn core(now: Instant) -> Core {
        Core::new(Layout::new("/r"), 4, TICK, DEFAULT_GRACE, now)
    }

    fn requeued(actions: &[Action]) -> bool {
        actions.iter().any(|a| matches!(a, Action::Requeue { .. }))
    }

    /// Whether `actions` assign task number `n`.
    fn assigns(actions: &[Action], n: u32) -> bool {
        actions
            .iter()
            .any(|a| matches!(a, Action::Assign { task, .. } if *task == name(n)))
    }

    /// A lock queue member's task is in flight while it has no result and
    /// is queued, parked, about to be read or assigned; anywhere else (or
    /// finished) it is not, and rule 8 lets the member go.
    #[test]
    fn a_lock_queue_members_task_is_in_flight_only_without_a_result_and_somewhere() {
        let mut core = core(Instant::now());
        core.queue.insert(name(1));
        let read = |task: u32, finished: bool| QueueMember {
            lock: "nightly".into(),
            token: format!("t{task}{finished}"),
            task: Some(name(task)),
            created_ms: 0,
            finished,
        };
        let unnamed = QueueMember {
            task: None,
            ..read(0, false)
        };
        let dirs = BTreeMap::from([(
            "w1".to_string(),
            vec![Assigned {
                name: name(3),
                detail: None,
            }],
        )]);
        let members = vec![
            read(1, false),
            read(1, true),
            read(2, false),
            read(3, false),
            read(4, false),
            unnamed,
        ];
        let judged: Vec<bool> = core
            .lock_members(members, &[name(4)], &dirs)
            .iter()
            .map(|m| m.in_flight)
            .collect();
        assert_eq!(judged, [true, false, false, true, true, false]);
    }

    /// A claim that vanished counts as live for its worker's published
    /// grace, and not a moment longer.
    #[test]
    fn an_interrupted_run_is_requeued_only_after_its_workers_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let world = World {
            workers: vec![("w1", worker(2, Some(grace)))],
            dirs: vec![("w1", vec![(1, 1)])],
            running: vec![1],
            queue: vec![],
            cancels: vec![],
            lock: None,
        };
        let mut core = core(t0);
        assert!(round(&mut core, &world, t0).1.is_empty());
        // The worker dies: its node and its claim vanish.
        let gone = World {
            workers: vec![],
            running: vec![],
            ..world
        };
        let lost_at = t0 + TICK;
        for at in [lost_at, lost_at + grace - Duration::from_millis(1)] {
            core.session_changed();
            assert!(
                !requeued(&round(&mut core, &gone, at).1),
                "at {:?}",
                at - lost_at
            );
        }
        core.session_changed();
        assert!(requeued(&round(&mut core, &gone, lost_at + grace).1));
    }

    /// A task parked behind its lock that gets a cancel request is not
    /// released to a worker when the lock frees: it stays in /tasks, where
    /// the cancel fails it. (Without the request, the same round assigns
    /// it: the setup is one where the release happens.)
    #[test]
    fn a_parked_task_with_a_cancel_request_is_not_assigned() {
        let t0 = Instant::now();
        let held = World {
            workers: vec![("w1", worker(4, None))],
            dirs: vec![("w1", vec![(2, 1)])],
            running: vec![2],
            queue: vec![1],
            cancels: vec![],
            lock: Some("nightly"),
        };
        for cancelled in [false, true] {
            let mut core = core(t0);
            assert!(
                !assigns(&round(&mut core, &held, t0).1, 1),
                "parked behind the lock"
            );
            let freed = World {
                dirs: vec![("w1", vec![])],
                running: vec![],
                cancels: if cancelled { vec![1] } else { vec![] },
                ..held.clone()
            };
            core.session_changed();
            let actions = round(&mut core, &freed, t0 + TICK).1;
            assert_eq!(
                assigns(&actions, 1),
                !cancelled,
                "cancelled: {cancelled}: {actions:?}"
            );
        }
    }

    /// A task whose run was interrupted keeps its lock until it is
    /// requeued after its worker's grace: no other task of the lock starts
    /// meanwhile, though a worker is free.
    #[test]
    fn an_interrupted_run_keeps_its_lock_through_the_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let world = World {
            workers: vec![("w1", worker(2, Some(grace))), ("w2", worker(2, None))],
            dirs: vec![("w1", vec![(1, 1)]), ("w2", vec![])],
            running: vec![1],
            queue: vec![2],
            cancels: vec![],
            lock: Some("nightly"),
        };
        let mut core = core(t0);
        assert!(
            !assigns(&round(&mut core, &world, t0).1, 2),
            "held by the run"
        );
        let gone = World {
            workers: vec![("w2", worker(2, None))],
            running: vec![],
            ..world
        };
        let lost_at = t0 + TICK;
        for at in [lost_at, lost_at + grace - Duration::from_millis(1)] {
            core.session_changed();
            let actions = round(&mut core, &gone, at).1;
            assert!(
                !assigns(&actions, 2) && !requeued(&actions),
                "at {:?}",
                at - lost_at
            );
        }
        core.session_changed();
        assert!(requeued(&round(&mut core, &gone, lost_at + grace).1));
    }

    /// A worker that never published a grace gets this master's default.
    #[test]
    fn a_worker_without_a_published_grace_gets_the_default() {
        let t0 = Instant::now();
        let world = World {
            workers: vec![("w1", worker(2, None))],
            dirs: vec![("w1", vec![(1, 1)])],
            running: vec![],
            queue: vec![],
            cancels: vec![],
            lock: None,
        };
        let mut core = core(t0);
        assert!(!requeued(&round(&mut core, &world, t0).1));
        core.session_changed();
        let almost = t0 + DEFAULT_GRACE - Duration::from_millis(1);
        assert!(!requeued(&round(&mut core, &world, almost).1));
        core.session_changed();
        assert!(requeued(&round(&mut core, &world, t0 + DEFAULT_GRACE).1));
    }

    /// A light round lists only the folders that may have changed, and
    /// /tasks only when the cached head of the queue is used up.
    #[test]
    fn light_rounds_list_only_what_may_have_changed() {
        let t0 = Instant::now();
        let world = World {
            workers: vec![("w1", worker(1, None)), ("w2", worker(1, None))],
            dirs: vec![("w1", vec![]), ("w2", vec![])],
            running: vec![],
            queue: vec![],
            cancels: vec![],
            lock: None,
        };
        let mut core = core(t0);
        let (full, _) = round(&mut core, &world, t0);
        assert_eq!(full.dirs.len(), 2);
        assert!(full.dirs.iter().all(|(_, watch)| *watch));
        let (light, _) = round(&mut core, &world, t0);
        assert_eq!(
            light,
            Listing {
                dirs: vec![],
                tasks: None
            }
        );
        core.watch_fired("/r/assign/w1");
        core.watch_fired("/r/tasks");
        let (light, _) = round(&mut core, &world, t0);
        assert_eq!(light.dirs, [("w1".to_string(), true)]);
        assert_eq!(light.tasks, Some(true));
        // A tick later the round is full again.
        let (full, _) = round(&mut core, &world, t0 + TICK);
        assert_eq!(full.dirs.len(), 2);
    }

    /// New tasks are assigned from the cached queue without listing /tasks
    /// again, and the master's own writes make it list that folder again.
    #[test]
    fn assigns_from_the_cached_queue_and_relists_what_it_wrote() {
        let t0 = Instant::now();
        let world = World {
            workers: vec![("w1", worker(1, None))],
            dirs: vec![("w1", vec![])],
            running: vec![],
            // One task more than its window: the last stays cached.
            queue: (1..=plan::window(1) as u32 + 1).collect(),
            cancels: vec![],
            lock: None,
        };
        let mut core = core(t0);
        let (_, actions) = round(&mut core, &world, t0);
        assert_eq!(actions.len(), plan::window(1), "its window: {actions:?}");
        let results = vec![Ok(()); actions.len()];
        assert_eq!(core.applied(&actions, &results), Ok(vec![]));
        let (light, _) = round(&mut core, &world, t0);
        assert_eq!(light.dirs, [("w1".to_string(), false)]);
        assert_eq!(light.tasks, None, "the last task is still cached");
    }

    #[test]
    fn a_stale_epoch_or_a_lost_master_node_deposes() {
        let t0 = Instant::now();
        let mut core = core(t0);
        assert!(core.begin(t0).is_some());
        assert_eq!(
            core.roots(false, vec![], false, vec![], vec![]),
            Err(Deposed)
        );
        let action = Action::RemoveAssignDir { worker: "w".into() };
        let stale = ZkError::TxnFailed {
            index: 0,
            cause: Box::new(ZkError::BadVersion),
        };
        assert_eq!(core.applied(&[action], &[Err(stale)]), Err(Deposed));
    }

    /// An assignment seen unclaimed for a tick behind a busy worker moves
    /// to an idle one.
    #[test]
    fn a_task_waiting_behind_a_busy_worker_moves_within_a_tick() {
        let t0 = Instant::now();
        let world = World {
            workers: vec![("w1", worker(1, None)), ("w2", worker(1, None))],
            dirs: vec![("w1", vec![(1, 1), (2, 0)]), ("w2", vec![])],
            running: vec![1],
            queue: vec![],
            cancels: vec![],
            lock: None,
        };
        let mut core = core(t0);
        assert!(round(&mut core, &world, t0).1.is_empty());
        core.session_changed();
        let (_, actions) = round(&mut core, &world, t0 + TICK);
        assert!(
            matches!(&actions[..], [Action::Move { task, from, to, .. }] if *task == name(2) && from == "w1" && to == "w2"),
            "{actions:?}"
        );
    }

    /// Sends steps as lead.rs does (behind the fence, grouped), to `zk`.
    fn send(core: &Core, zk: &mut FakeZk, steps: &[Vec<Op>]) -> Vec<Result<(), ZkError>> {
        group::commit(&[core.fence()], steps, group::GROUP_BYTES, |t| zk.send(t))
            .into_iter()
            .map(|r| r.map(drop))
            .collect()
    }

    /// A server with the epoch at `epoch` and the pending tasks `queued`.
    fn server(epoch: i32, queued: &[u32]) -> FakeZk {
        let mut zk = FakeZk::with(&[]);
        zk.nodes.insert("/r/epoch".into(), epoch);
        for n in queued {
            zk.nodes.insert(format!("/r/tasks/{}", name(*n)), 0);
        }
        zk
    }

    fn five_queued() -> World {
        World {
            workers: vec![("w1", worker(4, None))],
            dirs: vec![("w1", vec![])],
            running: vec![],
            queue: vec![1, 2, 3, 4, 5],
            cancels: vec![],
            lock: None,
        }
    }

    /// A round's assignments go in one transaction, fenced once: one epoch
    /// check per transaction, not per task.
    #[test]
    fn a_rounds_assignments_share_one_fenced_transaction() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let (_, actions) = round(&mut core, &five_queued(), t0);
        assert_eq!(actions.len(), 5);
        let mut zk = server(4, &[1, 2, 3, 4, 5]);
        let results = send(&core, &mut zk, &core.steps(&actions));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(zk.sent.len(), 1, "{:?}", zk.sent);
        assert_eq!(zk.sent[0][0], core.fence());
        assert_eq!(
            zk.sent[0].iter().filter(|op| **op == core.fence()).count(),
            1
        );
        assert_eq!(core.applied(&actions, &results), Ok(vec![]));
    }

    /// A task cancelled under the round (its pending node gone) fails its
    /// own step only; the other tasks of the transaction are assigned.
    #[test]
    fn a_task_gone_under_a_batch_fails_alone_and_the_rest_are_assigned() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let (_, actions) = round(&mut core, &five_queued(), t0);
        let mut zk = server(4, &[1, 2, 4, 5]);
        let results = send(&core, &mut zk, &core.steps(&actions));
        for (n, result) in (1..=5).zip(&results) {
            let assigned = zk.has(&format!("/r/assign/w1/{}", name(n)));
            assert_eq!(assigned, n != 3, "task {n}");
            assert_eq!(result.is_ok(), n != 3, "task {n}: {result:?}");
        }
        assert!(
            results[2]
                .as_ref()
                .is_err_and(|e| e.is_txn_failure(2, &ZkError::NoNode))
        );
        assert_eq!(core.applied(&actions, &results), Ok(vec![]));
        assert!(
            core.begin(t0).is_some(),
            "a failed step makes the next round full"
        );
    }

    /// A deposed master's batch writes nothing, and the core steps down.
    #[test]
    fn a_stale_epoch_fails_the_whole_batch_and_deposes() {
        let t0 = Instant::now();
        let mut core = core(t0);
        let (_, actions) = round(&mut core, &five_queued(), t0);
        let mut zk = server(5, &[1, 2, 3, 4, 5]);
        let results = send(&core, &mut zk, &core.steps(&actions));
        assert_eq!(zk.sent.len(), 1, "no retry without the fence");
        assert!(zk.nodes.keys().all(|p| !p.starts_with("/r/assign/")));
        assert_eq!(core.applied(&actions, &results), Err(Deposed));
    }

    /// Requeues go together the same way: one whose version moved (a
    /// worker claimed it under the master) fails alone.
    #[test]
    fn a_requeue_whose_version_moved_fails_alone() {
        let t0 = Instant::now();
        let world = World {
            workers: vec![("w1", worker(4, None))],
            dirs: vec![("w1", vec![]), ("w2", vec![(1, 0), (2, 0), (3, 0)])],
            running: vec![],
            queue: vec![],
            cancels: vec![],
            lock: None,
        };
        let mut core = core(t0);
        let (_, actions) = round(&mut core, &world, t0);
        assert_eq!(actions.len(), 3, "{actions:?}");
        let mut zk = server(4, &[]);
        for n in 1..=3 {
            zk.nodes
                .insert(format!("/r/assign/w2/{}", name(n)), i32::from(n == 2));
        }
        let results = send(&core, &mut zk, &core.steps(&actions));
        assert!(
            results[1]
                .as_ref()
                .is_err_and(|e| e.is_txn_failure(2, &ZkError::BadVersion))
        );
        for n in [1, 3] {
            assert!(
                zk.has(&format!("/r/tasks/{}", name(n))),
                "task {n} requeued"
            );
        }
        assert!(zk.has(&format!("/r/assign/w2/{}", name(2))));
        assert_eq!(zk.sent.len(), 2);
        assert_eq!(core.applied(&actions, &results), Ok(vec![]));
    }
}
