//! The master's decisions as a pure function: given what it read of the
//! namespace, which transactions to make. No I/O, no clock, no randomness of
//! its own (the time and the tie-break are passed in), so every rule is
//! unit-tested.
//!
//! Rules, in order:
//! 1. An assignment that cannot be decoded fails as "malformed task".
//! 2. A claimed assignment (data version > 0) with no live claim in /running
//!    was interrupted: its worker died or lost its session mid-run. It is
//!    requeued, or failed as "worker lost" once its runs exceed 1 + retries.
//!    (The caller counts a claim that vanished less than the worker's rerun
//!    grace ago as live, so a worker cut off from ZooKeeper has killed the
//!    job before it runs again: see `core.rs`.)
//! 3. An unclaimed assignment of a worker that is not live is requeued.
//! 4. The empty assignment folder of a worker that is not live is removed.
//! 5. Each pending task, oldest first, goes to the live worker with the
//!    fewest assignments (random among equals) that holds fewer than its
//!    window and has all the task's labels; an undecodable one fails. The
//!    window (four times the worker's threads) keeps every worker busy while
//!    leaving the rest of the queue in /tasks, where a worker that joins
//!    later can get it. A task whose re-run delay is not over, whose lock
//!    is held (another task of it is assigned or running, or was given it
//!    this round), or whose labels no live worker with room has, is parked
//!    (`parked.rs`): so tasks of one lock run one at a time, oldest first.
//! 6. Cancel requests (full rounds): a task with one that has not started
//!    (queued, or assigned and unclaimed) fails `cancelled`, and so does an
//!    interrupted run instead of its requeue; a running one is its
//!    worker's to stop; a request whose task has its result (or is
//!    nowhere) is forgotten. Each with the request's removal, in one
//!    transaction.
//! 7. In a full round that leaves no pending task behind, an unclaimed
//!    assignment that has waited a tick on a worker whose threads are all
//!    busy, or two ticks on any worker, moves to a live worker with a free
//!    thread: tasks never wait behind a busy (or frozen) worker while
//!    another sits idle.
//! 8. (Full rounds) a lock queue's member whose task is no longer in
//!    flight leaves the queue (its result's transaction usually took it).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::parked::Wait;
use crate::layout::{Layout, is_task_name};
use crate::model::{AttemptEnd, FailReason, Task, TaskResult, encode};
use crate::zk::Op;

/// A worker may hold this many assignments per thread: enough that it
/// never waits for the master, few enough that the queue stays in /tasks.
/// Two were too few for short jobs: a worker ran out of assignments while
/// the master's next transaction waited on ZooKeeper's log (README,
/// Performance: 0.54 against 0.65 × local, taking turns).
pub const WINDOW_PER_THREAD: usize = 4;

/// How many assignments a worker with `threads` threads may hold at once.
pub fn window(threads: usize) -> usize {
    threads.max(1).saturating_mul(WINDOW_PER_THREAD)
}

/// What the master read in one round.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Ids under /workers, each with its number of threads.
    pub live_workers: BTreeMap<String, usize>,
    /// The oldest tasks under /tasks, as many as the workers have room for.
    pub pending: Vec<Pending>,
    /// Every `/assign/<worker>` folder and its children.
    pub assign_dirs: BTreeMap<String, Vec<Assigned>>,
    /// The claims that count as live (those under /running, and those
    /// vanished less than their grace ago), when read this round (full
    /// rounds only).
    pub running: Option<BTreeSet<String>>,
    /// How long each unclaimed assignment has waited, as far as the master
    /// has seen (full rounds only).
    pub waiting: HashMap<String, Duration>,
    /// The longest time between full rounds.
    pub tick: Duration,
    /// When the round read this (unix ms): the time stamped on results.
    pub now_ms: u64,
    /// The tasks with a cancel request (as of the last full round).
    pub cancels: BTreeSet<String>,
    /// Tasks with a cancel request found queued (full rounds).
    pub cancelled_pending: Vec<Pending>,
    /// Cancel requests with nothing left to cancel (full rounds).
    pub stale_cancels: Vec<String>,
    /// The live workers' labels (those that have any).
    pub labels: BTreeMap<String, BTreeSet<String>>,
    /// The locks of the tasks assigned or running now.
    pub held_locks: BTreeSet<String>,
    /// The members of the lock queues (full rounds).
    pub lock_members: Vec<LockMember>,
}

/// A member of a lock's queue, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMember {
    /// The lock.
    pub lock: String,
    /// Its name: the task's token.
    pub token: String,
    /// The task it names, once its submit wrote it in.
    pub task: Option<String>,
    /// When it was created (unix ms; `u64::MAX` when it went away).
    pub created_ms: u64,
    /// Whether the task it names has a result.
    pub finished: bool,
}

/// A lock queue member, judged against the round's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockMember {
    /// The member as read.
    pub member: QueueMember,
    /// Whether its task is anywhere: pending, assigned, or (without a
    /// result) still to be found.
    pub in_flight: bool,
}

/// A lock queue member is judged only this long after it was created: its
/// task was created with it, so it was listed before the member was read.
pub const MEMBER_MIN_AGE_MS: u64 = 60_000;

/// A lock queue member without its task's id this long is forgotten: its
/// submit died between storing the task and naming it.
pub const UNNAMED_MEMBER_MS: u64 = 600_000;

/// Rule 8: lock queue members whose task is no longer in flight leave.
fn forget_members(snap: &Snapshot) -> Vec<Action> {
    snap.lock_members
        .iter()
        .filter(|m| {
            let age = snap.now_ms.saturating_sub(m.member.created_ms);
            match m.member.task {
                Some(_) => !m.in_flight && age > MEMBER_MIN_AGE_MS,
                None => age > UNNAMED_MEMBER_MS,
            }
        })
        .map(|m| Action::LeaveLockQueue {
            lock: m.member.lock.clone(),
            token: m.member.token.clone(),
        })
        .collect()
}

/// A pending task as read.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Its name under /tasks.
    pub name: String,
    /// Its data version (for the version-checked delete).
    pub version: i32,
    /// The decoded task, or what is wrong with its data.
    pub task: Result<Task, String>,
}

/// An assignment as read; `detail` is only read in full rounds.
#[derive(Debug, Clone)]
pub struct Assigned {
    /// Its name under `/assign/<worker>`.
    pub name: String,
    /// Data and version, when read.
    pub detail: Option<AssignedDetail>,
}

/// An assignment's data.
#[derive(Debug, Clone)]
pub struct AssignedDetail {
    /// 0 until a worker claims it; then 1.
    pub version: i32,
    /// The decoded task, or what is wrong with its data.
    pub task: Result<Task, String>,
}

/// Where a task to fail currently is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Under /tasks.
    Pending,
    /// Under `/assign/<worker>`.
    Assigned(String),
}

/// One change the master makes; each becomes one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Move a pending task to a worker.
    Assign {
        /// Task name.
        task: String,
        /// Chosen worker.
        worker: String,
        /// Version of `/tasks/<task>` as read.
        version: i32,
        /// The task record to store in the assignment.
        data: Vec<u8>,
    },
    /// Move an assignment back to /tasks under the same name.
    Requeue {
        /// Task name.
        task: String,
        /// The worker it was assigned to.
        worker: String,
        /// Version of the assignment as read.
        version: i32,
        /// The task record (its attempts already count the runs started).
        data: Vec<u8>,
    },
    /// Move an unclaimed assignment to a worker with a free thread.
    Move {
        /// Task name.
        task: String,
        /// The worker it waits on.
        from: String,
        /// The worker with a free thread.
        to: String,
        /// The task record.
        data: Vec<u8>,
    },
    /// Store a failed result and remove the task from where it is.
    Fail {
        /// Task name.
        task: String,
        /// Where it is now.
        from: Origin,
        /// Version of the node at `from` as read.
        version: i32,
        /// The result to store (boxed: it is by far the largest action).
        result: Box<TaskResult>,
        /// Remove its cancel request too (it is carried out).
        cancel: bool,
    },
    /// Remove a cancel request with nothing left to cancel.
    ForgetCancel {
        /// The task it names.
        task: String,
    },
    /// Remove a lock queue's member whose task is no longer in flight.
    LeaveLockQueue {
        /// The lock.
        lock: String,
        /// The member (the task's token).
        token: String,
    },
    /// Remove the empty `/assign/<worker>` of a worker that is not live.
    RemoveAssignDir {
        /// The worker.
        worker: String,
    },
}

impl Action {
    /// The assignment folders this action changes.
    pub fn folders(&self) -> Vec<&str> {
        match self {
            Action::Assign { worker, .. }
            | Action::Requeue { worker, .. }
            | Action::Fail {
                from: Origin::Assigned(worker),
                ..
            } => vec![worker],
            Action::Move { from, to, .. } => vec![from, to],
            Action::Fail { .. }
            | Action::RemoveAssignDir { .. }
            | Action::ForgetCancel { .. }
            | Action::LeaveLockQueue { .. } => Vec::new(),
        }
    }
}

/// Decides the round's actions. `pick(n)` returns an index below `n`, used
/// to choose among equally loaded workers.
pub fn plan(snap: &Snapshot, pick: &mut dyn FnMut(usize) -> usize) -> Plan {
    let mut actions = Vec::new();
    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    for (worker, assigned) in &snap.assign_dirs {
        let live = snap.live_workers.contains_key(worker);
        let mut kept = 0;
        for a in assigned {
            match repair(worker, live, a, snap) {
                Some(action) => actions.push(action),
                None => kept += 1,
            }
        }
        if live {
            load.insert(worker, kept);
        } else if assigned.is_empty() {
            actions.push(Action::RemoveAssignDir {
                worker: worker.clone(),
            });
        }
    }
    let placed = place_pending(snap, &mut load, pick);
    actions.extend(placed.actions);
    actions.extend(cancel_the_rest(snap));
    actions.extend(forget_members(snap));
    if placed.all_placed && snap.running.is_some() {
        actions.extend(rebalance(snap, &actions));
    }
    Plan {
        actions,
        parked: placed.parked,
    }
}

/// What a round decided.
#[derive(Debug, Default)]
pub struct Plan {
    /// The transactions to make, one per action.
    pub actions: Vec<Action>,
    /// The pending tasks that cannot be assigned yet, with what they wait for.
    pub parked: Vec<(Pending, Wait)>,
}

/// What rule 5 made of the pending tasks.
struct Placed {
    actions: Vec<Action>,
    parked: Vec<(Pending, Wait)>,
    /// Every pending task was placed or parked (no worker ran out of room).
    all_placed: bool,
}

/// Rule 5: each pending task, oldest first, to the least loaded live
/// worker with room that has all its labels; parked when its re-run delay
/// is not over, when another task of its lock is assigned or running (or
/// was given the lock this round), or when no live worker with room has
/// its labels. `load` counts each worker's assignments.
fn place_pending(
    snap: &Snapshot,
    load: &mut BTreeMap<&str, usize>,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Placed {
    let mut placed = Placed {
        actions: Vec::new(),
        parked: Vec::new(),
        all_placed: true,
    };
    let mut held = snap.held_locks.clone();
    for p in &snap.pending {
        let task = match &p.task {
            Ok(task) => task,
            Err(_) => {
                placed.actions.push(Action::Fail {
                    task: p.name.clone(),
                    from: Origin::Pending,
                    version: p.version,
                    result: Box::new(TaskResult::failed(
                        None,
                        FailReason::Malformed,
                        None,
                        snap.now_ms,
                    )),
                    cancel: false,
                });
                continue;
            }
        };
        if let Some(until) = task.not_before_ms.filter(|until| *until > snap.now_ms) {
            placed.parked.push((p.clone(), Wait::Until(until)));
            continue;
        }
        if let Some(lock) = task.lock.as_ref().filter(|lock| held.contains(*lock)) {
            placed.parked.push((p.clone(), Wait::Lock(lock.clone())));
            continue;
        }
        if !has_room(load, &snap.live_workers) {
            placed.all_placed = false;
            break;
        }
        let Some(worker) = least_loaded(load, snap, &task.on, pick) else {
            placed
                .parked
                .push((p.clone(), Wait::Labels(task.on.clone())));
            continue;
        };
        *load.entry(worker).or_default() += 1;
        held.extend(task.lock.clone());
        placed.actions.push(Action::Assign {
            task: p.name.clone(),
            worker: worker.to_string(),
            version: p.version,
            data: encode(task),
        });
    }
    placed
}

/// Whether some live worker has room for one more assignment.
fn has_room(load: &BTreeMap<&str, usize>, threads: &BTreeMap<String, usize>) -> bool {
    load.iter()
        .any(|(w, n)| threads.get(*w).is_some_and(|t| *n < window(*t)))
}

/// Whether a worker with `labels` can run a task that needs `on`.
pub fn matches(labels: Option<&BTreeSet<String>>, on: &[String]) -> bool {
    on.iter()
        .all(|label| labels.is_some_and(|l| l.contains(label)))
}

/// Rule 6 for the cancel requests no folder holds: fail the queued ones,
/// forget the stale ones.
fn cancel_the_rest(snap: &Snapshot) -> Vec<Action> {
    let failed = snap.cancelled_pending.iter().map(|p| Action::Fail {
        task: p.name.clone(),
        from: Origin::Pending,
        version: p.version,
        result: Box::new(TaskResult::failed(
            p.task.as_ref().ok(),
            FailReason::Cancelled,
            None,
            snap.now_ms,
        )),
        cancel: true,
    });
    let forgotten = snap
        .stale_cancels
        .iter()
        .map(|task| Action::ForgetCancel { task: task.clone() });
    failed.chain(forgotten).collect()
}

/// The action one assignment needs, if any.
fn repair(worker: &str, live: bool, a: &Assigned, snap: &Snapshot) -> Option<Action> {
    let detail = a.detail.as_ref()?;
    let cancel = snap.cancels.contains(&a.name);
    let fail = |task: Option<&Task>, reason: FailReason| Action::Fail {
        task: a.name.clone(),
        from: Origin::Assigned(worker.to_string()),
        version: detail.version,
        result: Box::new(TaskResult::failed(task, reason, Some(worker), snap.now_ms)),
        cancel,
    };
    let task = match &detail.task {
        Ok(task) if is_task_name(&a.name) => task,
        _ => return Some(fail(None, FailReason::Malformed)),
    };
    let claimed = detail.version > 0;
    let interrupted = claimed && snap.running.as_ref().is_some_and(|r| !r.contains(&a.name));
    // A cancelled task that is not running (any more) ends here.
    if cancel && (!claimed || interrupted) {
        return Some(fail(Some(task), FailReason::Cancelled));
    }
    if interrupted && task.attempts > task.retries {
        return Some(fail(Some(task), FailReason::WorkerLost));
    }
    if interrupted || (!claimed && !live) {
        let task = if interrupted {
            task.clone().ended(AttemptEnd::Interrupted, snap.now_ms)
        } else {
            task.clone()
        };
        return Some(Action::Requeue {
            task: a.name.clone(),
            worker: worker.to_string(),
            version: detail.version,
            data: encode(&task),
        });
    }
    None
}

/// The worker with room and the fewest assignments; random among equals.
fn least_loaded<'a>(
    load: &BTreeMap<&'a str, usize>,
    snap: &Snapshot,
    on: &[String],
    pick: &mut dyn FnMut(usize) -> usize,
) -> Option<&'a str> {
    let with_room: Vec<(&'a str, usize)> = load
        .iter()
        .filter(|(w, n)| snap.live_workers.get(**w).is_some_and(|t| **n < window(*t)))
        .filter(|(w, _)| matches(snap.labels.get(**w), on))
        .map(|(w, n)| (*w, *n))
        .collect();
    let min = with_room.iter().map(|(_, n)| *n).min()?;
    let ties: Vec<&str> = with_room
        .iter()
        .filter(|(_, n)| *n == min)
        .map(|(w, _)| *w)
        .collect();
    Some(ties[pick(ties.len()).min(ties.len() - 1)])
}

/// Rule 6: unclaimed assignments that wait too long behind busy or
/// frozen workers move to workers with a free thread, given the round's
/// other actions (already decided).
fn rebalance(snap: &Snapshot, decided: &[Action]) -> Vec<Action> {
    let taken: BTreeSet<&str> = decided
        .iter()
        .filter_map(|a| match a {
            Action::Requeue { task, .. } | Action::Fail { task, .. } => Some(task.as_str()),
            _ => None,
        })
        .collect();
    let mut free: BTreeMap<&str, isize> = BTreeMap::new();
    let mut movable: Vec<(&str, &Assigned, &Task)> = Vec::new();
    for (worker, threads) in &snap.live_workers {
        let assigned: Vec<&Assigned> = snap
            .assign_dirs
            .get(worker)
            .map(|a| {
                a.iter()
                    .filter(|a| !taken.contains(a.name.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let claimed = assigned
            .iter()
            .filter(|a| a.detail.as_ref().is_some_and(|d| d.version > 0))
            .count();
        let new = decided
            .iter()
            .filter(|a| matches!(a, Action::Assign { worker: w, .. } if w == worker))
            .count();
        free.insert(worker, *threads as isize - (assigned.len() + new) as isize);
        let busy = claimed >= *threads;
        for a in assigned {
            let Some(AssignedDetail {
                version: 0,
                task: Ok(task),
            }) = &a.detail
            else {
                continue;
            };
            let waited = snap.waiting.get(&a.name).copied().unwrap_or_default();
            if (busy && waited >= snap.tick) || waited >= snap.tick * 2 {
                movable.push((worker, a, task));
            }
        }
    }
    movable.sort_by(|x, y| x.1.name.cmp(&y.1.name));
    let mut moves = Vec::new();
    for (from, a, task) in movable {
        let target = free
            .iter()
            .filter(|(w, n)| **w != from && **n > 0 && matches(snap.labels.get(**w), &task.on))
            .max_by_key(|(_, n)| **n)
            .map(|(w, _)| *w);
        let Some(to) = target else { break };
        *free.entry(to).or_default() -= 1;
        moves.push(Action::Move {
            task: a.name.clone(),
            from: from.to_string(),
            to: to.to_string(),
            data: encode(task),
        });
    }
    moves
}

/// How many more tasks the live workers can take, given how many
/// assignments each holds now (`held`; a worker without a folder cannot
/// take any).
pub fn room(live_workers: &BTreeMap<String, usize>, held: &BTreeMap<String, usize>) -> usize {
    live_workers
        .iter()
        .filter_map(|(w, threads)| held.get(w).map(|n| window(*threads).saturating_sub(*n)))
        .sum()
}

/// The check that fences every transaction of the master: /epoch is still
/// at the version it was elected under. Each transaction carries it once,
/// first, whatever number of actions it carries (see `zk::group`).
pub fn fence(layout: &Layout, epoch: i32) -> Op {
    Op::Check {
        path: layout.epoch(),
        version: epoch,
    }
}

/// An action's own operations (its step): all of them or none, in a
/// transaction that starts with the [`fence`]. Indexes in an action's
/// error count the fence as operation 0.
pub fn ops(action: &Action, layout: &Layout) -> Vec<Op> {
    match action {
        Action::Assign {
            task,
            worker,
            version,
            data,
        } => move_node(
            layout.task(task),
            *version,
            layout.assignment(worker, task),
            data,
        ),
        Action::Requeue {
            task,
            worker,
            version,
            data,
        } => move_node(
            layout.assignment(worker, task),
            *version,
            layout.task(task),
            data,
        ),
        // Version 0: only while no worker has claimed it.
        Action::Move {
            task,
            from,
            to,
            data,
        } => move_node(
            layout.assignment(from, task),
            0,
            layout.assignment(to, task),
            data,
        ),
        Action::Fail {
            task,
            from,
            version,
            result,
            cancel,
        } => {
            let mut ops = vec![
                Op::Create {
                    path: layout.status_task(task),
                    data: encode(result),
                },
                origin_delete(layout, task, from, *version),
            ];
            if *cancel {
                ops.push(delete(layout.cancel_task(task)));
            }
            ops
        }
        Action::ForgetCancel { task } => vec![delete(layout.cancel_task(task))],
        Action::LeaveLockQueue { lock, token } => vec![delete(layout.lockq_member(lock, token))],
        // Creating and deleting the worker's ephemeral node in the same
        // transaction proves the worker is not live: if it registered
        // meanwhile, the create fails and nothing is removed.
        Action::RemoveAssignDir { worker } => vec![
            Op::CreateEphemeral {
                path: layout.worker(worker),
                data: Vec::new(),
            },
            delete(layout.worker(worker)),
            delete(layout.assign_dir(worker)),
        ],
    }
}

/// Deletes `path` whatever its version.
fn delete(path: String) -> Op {
    Op::Delete {
        path,
        version: None,
    }
}

/// A task's move from `from` (at `version`: nobody changed it since it was
/// read) to `to`, carrying `data`.
fn move_node(from: String, version: i32, to: String, data: &[u8]) -> Vec<Op> {
    vec![
        Op::Create {
            path: to,
            data: data.to_vec(),
        },
        Op::Delete {
            path: from,
            version: Some(version),
        },
    ]
}

/// For a `Fail` whose /status node already exists (the task already has its
/// one result): the step that only removes the leftover.
pub fn cleanup_ops(action: &Action, layout: &Layout) -> Option<Vec<Op>> {
    let Action::Fail {
        task,
        from,
        version,
        ..
    } = action
    else {
        return None;
    };
    Some(vec![origin_delete(layout, task, from, *version)])
}

fn origin_delete(layout: &Layout, task: &str, from: &Origin, version: i32) -> Op {
    let path = match from {
        Origin::Pending => layout.task(task),
        Origin::Assigned(worker) => layout.assignment(worker, task),
    };
    Op::Delete {
        path,
        version: Some(version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(attempts: u32) -> Task {
        Task {
            job: "true".into(),
            submitted_ms: 0,
            timeout_ms: None,
            retries: 2,
            attempts,
            token: "tok".into(),
            history: Vec::new(),
            ..Default::default()
        }
    }

    fn name(n: u32) -> String {
        format!("task-{n:010}")
    }

    fn pending(n: u32) -> Pending {
        Pending {
            name: name(n),
            version: 0,
            task: Ok(task(0)),
        }
    }

    fn assigned(n: u32, version: i32, attempts: u32) -> Assigned {
        Assigned {
            name: name(n),
            detail: Some(AssignedDetail {
                version,
                task: Ok(task(attempts)),
            }),
        }
    }

    fn snapshot(
        live: &[&str],
        dirs: &[(&str, Vec<Assigned>)],
        running: Option<&[u32]>,
    ) -> Snapshot {
        Snapshot {
            live_workers: live.iter().map(|w| (w.to_string(), 4)).collect(),
            pending: Vec::new(),
            assign_dirs: dirs
                .iter()
                .map(|(w, a)| (w.to_string(), a.clone()))
                .collect(),
            running: running.map(|r| r.iter().map(|n| name(*n)).collect()),
            waiting: HashMap::new(),
            tick: Duration::from_secs(2),
            now_ms: 1,
            ..Snapshot::default()
        }
    }

    fn first(_: usize) -> usize {
        0
    }

    fn assigned_to(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Assign { task, worker, .. } => Some((task.clone(), worker.clone())),
                _ => None,
            })
            .collect()
    }

    fn member(
        token: &str,
        task: Option<u32>,
        age_ms: u64,
        in_flight: bool,
        now_ms: u64,
    ) -> LockMember {
        LockMember {
            member: QueueMember {
                lock: "nightly".into(),
                token: token.into(),
                task: task.map(name),
                created_ms: now_ms - age_ms,
                finished: false,
            },
            in_flight,
        }
    }

    /// Rule 8: a lock queue member leaves once its task is no longer in
    /// flight and the member is old enough to have been listed with it; a
    /// member whose submit never named its task leaves much later.
    #[test]
    fn a_lock_queue_member_leaves_only_once_its_task_is_gone_and_it_is_old_enough() {
        let now_ms = 10 * UNNAMED_MEMBER_MS;
        let mut snap = snapshot(&["w1"], &[("w1", vec![])], Some(&[]));
        snap.now_ms = now_ms;
        let old = MEMBER_MIN_AGE_MS + 1;
        snap.lock_members = vec![
            member("gone", Some(1), old, false, now_ms),
            member("in-flight", Some(2), old, true, now_ms),
            member("young", Some(3), MEMBER_MIN_AGE_MS, false, now_ms),
            member("unnamed-young", None, UNNAMED_MEMBER_MS, false, now_ms),
            member("unnamed-old", None, UNNAMED_MEMBER_MS + 1, false, now_ms),
        ];
        let left: Vec<String> = plan(&snap, &mut first)
            .actions
            .into_iter()
            .filter_map(|a| match a {
                Action::LeaveLockQueue { token, .. } => Some(token),
                _ => None,
            })
            .collect();
        assert_eq!(left, ["gone", "unnamed-old"]);
    }

    #[test]
    fn assigns_pending_tasks_to_the_least_loaded_worker() {
        let mut snap = snapshot(
            &["w1", "w2"],
            &[
                ("w1", vec![assigned(1, 0, 0), assigned(2, 0, 0)]),
                ("w2", vec![]),
            ],
            Some(&[]),
        );
        snap.pending = vec![pending(3), pending(4), pending(5)];
        let got = assigned_to(&plan(&snap, &mut first).actions);
        assert_eq!(
            got,
            [
                (name(3), "w2".into()),
                (name(4), "w2".into()),
                (name(5), "w1".into())
            ]
        );
    }

    /// A pending task built by `shape`.
    fn pending_with(n: u32, shape: impl FnOnce(&mut Task)) -> Pending {
        let mut t = task(0);
        shape(&mut t);
        Pending {
            name: name(n),
            version: 0,
            task: Ok(t),
        }
    }

    /// What each parked task of a plan waits for.
    fn parked_for(plan: &Plan) -> Vec<(String, Wait)> {
        plan.parked
            .iter()
            .map(|(p, w)| (p.name.clone(), w.clone()))
            .collect()
    }

    #[test]
    fn assigns_one_task_of_a_lock_at_a_time_oldest_first() {
        let mut snap = snapshot(&["w1", "w2"], &[("w1", vec![]), ("w2", vec![])], Some(&[]));
        let lock = |t: &mut Task| t.lock = Some("nightly".into());
        snap.pending = vec![pending_with(1, lock), pending_with(2, lock), pending(3)];
        let got = plan(&snap, &mut first);
        let assigned: Vec<String> = assigned_to(&got.actions)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(assigned, [name(1), name(3)]);
        assert_eq!(parked_for(&got), [(name(2), Wait::Lock("nightly".into()))]);
        // Held by a task assigned or running (or interrupted, within its
        // grace): none of its tasks goes out.
        snap.held_locks = BTreeSet::from(["nightly".to_string()]);
        let got = plan(&snap, &mut first);
        let assigned: Vec<String> = assigned_to(&got.actions)
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        assert_eq!(assigned, [name(3)]);
        assert_eq!(got.parked.len(), 2);
    }

    #[test]
    fn a_rerun_waits_for_its_delay() {
        let mut snap = snapshot(&["w1"], &[("w1", vec![])], Some(&[]));
        snap.now_ms = 10_000;
        snap.pending = vec![
            pending_with(1, |t| t.not_before_ms = Some(10_001)),
            pending_with(2, |t| t.not_before_ms = Some(10_000)),
        ];
        let got = plan(&snap, &mut first);
        assert_eq!(assigned_to(&got.actions), [(name(2), "w1".into())]);
        assert_eq!(parked_for(&got), [(name(1), Wait::Until(10_001))]);
    }

    #[test]
    fn a_task_goes_only_to_a_worker_with_all_its_labels() {
        let mut snap = snapshot(
            &["w1", "w2", "w3"],
            &[("w1", vec![]), ("w2", vec![]), ("w3", vec![])],
            Some(&[]),
        );
        let labels = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        snap.labels = BTreeMap::from([
            ("w2".to_string(), labels(&["gpu"])),
            ("w3".to_string(), labels(&["gpu", "zone=eu"])),
        ]);
        let on = |l: &'static [&'static str]| {
            move |t: &mut Task| t.on = l.iter().map(|s| s.to_string()).collect()
        };
        snap.pending = vec![
            pending_with(1, on(&["gpu", "zone=eu"])),
            pending_with(2, on(&["tpu"])),
            pending_with(3, on(&["gpu"])),
        ];
        let got = plan(&snap, &mut first);
        assert_eq!(
            assigned_to(&got.actions),
            [(name(1), "w3".into()), (name(3), "w2".into())]
        );
        assert_eq!(
            parked_for(&got),
            [(name(2), Wait::Labels(vec!["tpu".into()]))]
        );
    }

    #[test]
    fn a_labelled_task_waits_while_its_only_worker_is_full() {
        // w2 alone has the label, and its window is full; w1 has room.
        let full: Vec<Assigned> = (1..=window(1) as u32).map(|n| assigned(n, 0, 0)).collect();
        let mut snap = snapshot(&["w1", "w2"], &[("w1", vec![]), ("w2", full)], Some(&[]));
        snap.live_workers.insert("w1".into(), 1);
        snap.live_workers.insert("w2".into(), 1);
        snap.labels = BTreeMap::from([("w2".to_string(), BTreeSet::from(["gpu".to_string()]))]);
        let gpu = |t: &mut Task| t.on = vec!["gpu".into()];
        snap.pending = vec![pending_with(90, gpu), pending(91)];
        let got = plan(&snap, &mut first);
        assert_eq!(assigned_to(&got.actions), [(name(91), "w1".into())]);
        assert_eq!(
            parked_for(&got),
            [(name(90), Wait::Labels(vec!["gpu".into()]))]
        );
    }

    #[test]
    fn fills_each_worker_up_to_its_window_only() {
        let mut snap = snapshot(
            &["w1", "w2"],
            &[("w1", vec![assigned(1, 1, 1)]), ("w2", vec![])],
            Some(&[1]),
        );
        // One thread each: a window of four assignments, w1 holding one.
        snap.live_workers.insert("w1".into(), 1);
        snap.live_workers.insert("w2".into(), 1);
        snap.pending = (2..12).map(pending).collect();
        let got = assigned_to(&plan(&snap, &mut first).actions);
        // Fewest assignments first, ties to the first: they take turns,
        // w2 first, until both are full; tasks 9 to 11 stay queued.
        let turn = |n: u32| if n.is_multiple_of(2) { "w2" } else { "w1" };
        let turns: Vec<(String, String)> = (2..9).map(|n| (name(n), turn(n).into())).collect();
        assert_eq!(got, turns);
        let held = [("w1".to_string(), 1), ("w2".to_string(), 0)]
            .into_iter()
            .collect();
        assert_eq!(room(&snap.live_workers, &held), 2 * window(1) - 1);
    }

    #[test]
    fn breaks_ties_with_the_given_choice() {
        let mut snap = snapshot(
            &["a", "b", "c"],
            &[("a", vec![]), ("b", vec![]), ("c", vec![])],
            None,
        );
        snap.pending = vec![pending(1)];
        let got = assigned_to(&plan(&snap, &mut |n| n - 1).actions);
        assert_eq!(got, [(name(1), "c".into())]);
    }

    #[test]
    fn leaves_tasks_pending_without_live_workers() {
        let mut snap = snapshot(&[], &[], None);
        snap.pending = vec![pending(1)];
        assert!(plan(&snap, &mut first).actions.is_empty());
        // A live worker without its assignment folder cannot take tasks yet.
        let mut snap = snapshot(&["w1"], &[], None);
        snap.pending = vec![pending(1)];
        assert!(plan(&snap, &mut first).actions.is_empty());
    }

    #[test]
    fn requeues_unclaimed_tasks_of_a_dead_worker() {
        let snap = snapshot(&[], &[("w1", vec![assigned(1, 0, 0)])], Some(&[]));
        let actions = plan(&snap, &mut first).actions;
        assert!(
            matches!(&actions[..], [Action::Requeue { task, worker, version: 0, .. }] if *task == name(1) && worker == "w1")
        );
    }

    #[test]
    fn waits_for_a_dead_workers_running_task_while_its_claim_lives() {
        // A draining worker left /workers but still holds /running/<t>.
        let snap = snapshot(&[], &[("w1", vec![assigned(1, 1, 1)])], Some(&[1]));
        assert!(plan(&snap, &mut first).actions.is_empty());
    }

    #[test]
    fn requeues_an_interrupted_run_until_retries_are_spent() {
        let snap = snapshot(&["w1"], &[("w1", vec![assigned(1, 1, 3)])], Some(&[]));
        let actions = plan(&snap, &mut first).actions;
        match &actions[..] {
            [Action::Fail { result, from, .. }] => {
                assert_eq!(result.reason, Some(FailReason::WorkerLost));
                assert_eq!(result.attempts, 3);
                assert_eq!(*from, Origin::Assigned("w1".into()));
            }
            other => panic!("{other:?}"),
        }
        let snap = snapshot(&["w1"], &[("w1", vec![assigned(1, 1, 2)])], Some(&[]));
        assert!(matches!(
            &plan(&snap, &mut first).actions[..],
            [Action::Requeue { version: 1, .. }]
        ));
    }

    #[test]
    fn does_not_judge_claims_without_reading_running() {
        let snap = snapshot(&["w1"], &[("w1", vec![assigned(1, 1, 1)])], None);
        assert!(plan(&snap, &mut first).actions.is_empty());
        let light = Assigned {
            name: name(1),
            detail: None,
        };
        let snap = snapshot(&[], &[("w1", vec![light])], None);
        assert!(plan(&snap, &mut first).actions.is_empty());
    }

    #[test]
    fn fails_malformed_tasks_wherever_they_are() {
        let bad = Assigned {
            name: "junk".into(),
            detail: Some(AssignedDetail {
                version: 0,
                task: Ok(task(0)),
            }),
        };
        let garbled = Assigned {
            name: name(2),
            detail: Some(AssignedDetail {
                version: 0,
                task: Err("invalid".into()),
            }),
        };
        let mut snap = snapshot(&["w1"], &[("w1", vec![bad, garbled])], Some(&[]));
        snap.pending = vec![Pending {
            name: name(3),
            version: 4,
            task: Err("invalid".into()),
        }];
        let reasons: Vec<_> = plan(&snap, &mut first)
            .actions
            .into_iter()
            .map(|a| match a {
                Action::Fail { task, result, .. } => (task, result.reason.unwrap()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                ("junk".into(), FailReason::Malformed),
                (name(2), FailReason::Malformed),
                (name(3), FailReason::Malformed)
            ]
        );
    }

    #[test]
    fn removes_only_empty_folders_of_dead_workers() {
        let snap = snapshot(
            &["w1"],
            &[
                ("w1", vec![]),
                ("w2", vec![]),
                ("w3", vec![assigned(1, 1, 1)]),
            ],
            Some(&[1]),
        );
        assert_eq!(
            plan(&snap, &mut first).actions,
            [Action::RemoveAssignDir {
                worker: "w2".into()
            }]
        );
    }

    /// An action's step is its own writes; the fence is the transaction's
    /// (core.rs tests that every transaction sent starts with it).
    #[test]
    fn an_assignment_creates_the_assignment_and_deletes_the_pending_task() {
        let layout = Layout::new("/r");
        let action = Action::Assign {
            task: name(1),
            worker: "w".into(),
            version: 0,
            data: b"{}".to_vec(),
        };
        assert_eq!(
            fence(&layout, 7),
            Op::Check {
                path: "/r/epoch".into(),
                version: 7
            }
        );
        let step = ops(&action, &layout);
        assert_eq!(step.len(), 2);
        assert_eq!(step[0].path(), "/r/assign/w/task-0000000001");
        assert_eq!(
            step[1],
            Op::Delete {
                path: "/r/tasks/task-0000000001".into(),
                version: Some(0)
            }
        );
        let remove = ops(&Action::RemoveAssignDir { worker: "w".into() }, &layout);
        assert_eq!(remove.len(), 3);
        assert!(cleanup_ops(&action, &layout).is_none());
    }

    fn moves(actions: &[Action]) -> Vec<(String, String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Move { task, from, to, .. } => {
                    Some((task.clone(), from.clone(), to.clone()))
                }
                _ => None,
            })
            .collect()
    }

    /// w1's one thread runs task 1; task 2 waits behind it while w2 is idle.
    fn one_waits_behind_a_busy_worker(waited: Duration) -> Snapshot {
        let mut snap = snapshot(
            &["w1", "w2"],
            &[
                ("w1", vec![assigned(1, 1, 1), assigned(2, 0, 0)]),
                ("w2", vec![]),
            ],
            Some(&[1]),
        );
        snap.live_workers.insert("w1".into(), 1);
        snap.waiting.insert(name(2), waited);
        snap
    }

    #[test]
    fn moves_a_task_waiting_behind_a_busy_worker_to_an_idle_one() {
        let tick = Duration::from_secs(2);
        let snap = one_waits_behind_a_busy_worker(tick);
        assert_eq!(
            moves(&plan(&snap, &mut first).actions),
            [(name(2), "w1".into(), "w2".into())]
        );
        let txn = ops(&plan(&snap, &mut first).actions[0], &Layout::new("/r"));
        assert_eq!(txn[0].path(), "/r/assign/w2/task-0000000002");
        assert_eq!(
            txn[1],
            Op::Delete {
                path: "/r/assign/w1/task-0000000002".into(),
                version: Some(0)
            }
        );
        // Not yet a tick: it may be claimed any moment.
        let snap = one_waits_behind_a_busy_worker(tick - Duration::from_millis(1));
        assert!(moves(&plan(&snap, &mut first).actions).is_empty());
        // Only from full rounds, which read the versions.
        let mut snap = one_waits_behind_a_busy_worker(tick);
        snap.running = None;
        assert!(moves(&plan(&snap, &mut first).actions).is_empty());
    }

    #[test]
    fn moves_nothing_while_tasks_are_still_pending_or_no_worker_is_free() {
        let tick = Duration::from_secs(2);
        let mut snap = one_waits_behind_a_busy_worker(tick);
        // w2 takes pending work instead (and task 4 stays queued).
        snap.pending = (3..6).map(pending).collect();
        snap.live_workers.insert("w2".into(), 1);
        assert!(moves(&plan(&snap, &mut first).actions).is_empty());
        // w2 busy too: nowhere to go.
        let mut snap = one_waits_behind_a_busy_worker(tick);
        snap.live_workers.insert("w2".into(), 1);
        snap.assign_dirs
            .insert("w2".into(), vec![assigned(7, 1, 1)]);
        snap.running = Some([name(1), name(7)].into_iter().collect());
        assert!(moves(&plan(&snap, &mut first).actions).is_empty());
    }

    #[test]
    fn moves_from_a_frozen_worker_after_two_ticks() {
        let tick = Duration::from_secs(2);
        // w1 has free threads but claims nothing (frozen): two ticks.
        let mut snap = snapshot(
            &["w1", "w2"],
            &[("w1", vec![assigned(1, 0, 0)]), ("w2", vec![])],
            Some(&[]),
        );
        snap.waiting.insert(name(1), tick);
        assert!(moves(&plan(&snap, &mut first).actions).is_empty());
        snap.waiting.insert(name(1), tick * 2);
        assert_eq!(
            moves(&plan(&snap, &mut first).actions),
            [(name(1), "w1".into(), "w2".into())]
        );
    }

    fn failed_as(actions: &[Action]) -> Vec<(String, Option<FailReason>, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fail {
                    task,
                    result,
                    cancel,
                    ..
                } => Some((task.clone(), result.reason.clone(), *cancel)),
                _ => None,
            })
            .collect()
    }

    /// A cancelled task that has not started (or whose run was
    /// interrupted) fails `cancelled` with its request; a running one is
    /// left to its worker; a stale request is forgotten.
    #[test]
    fn cancel_requests_end_tasks_that_are_not_running() {
        let mut snap = snapshot(
            &["w1"],
            &[(
                "w1",
                vec![assigned(1, 0, 0), assigned(2, 1, 1), assigned(3, 1, 1)],
            )],
            Some(&[2]),
        );
        snap.cancels = [1, 2, 3, 4, 5].iter().map(|n| name(*n)).collect();
        snap.cancelled_pending = vec![pending(4)];
        snap.stale_cancels = vec![name(5)];
        let actions = plan(&snap, &mut first).actions;
        let cancelled = Some(FailReason::Cancelled);
        assert_eq!(
            failed_as(&actions),
            [
                (name(1), cancelled.clone(), true),
                (name(3), cancelled.clone(), true),
                (name(4), cancelled, true),
            ],
            "{actions:?}"
        );
        assert!(actions.contains(&Action::ForgetCancel { task: name(5) }));
        assert!(
            !requeued_any(&actions),
            "an interrupted cancelled run is not requeued"
        );
        let txn = ops(&actions[0], &Layout::new("/r"));
        assert_eq!(txn.last().map(Op::path), Some("/r/cancel/task-0000000001"));
    }

    fn requeued_any(actions: &[Action]) -> bool {
        actions.iter().any(|a| matches!(a, Action::Requeue { .. }))
    }
}
