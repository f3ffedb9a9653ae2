//! Storing one task with a lock or a unique key: the task, its place in
//! its lock's queue (`/lockq/<lock>/<token>`) and its key
//! (`/unique/<key>`) are created in ONE transaction, so no crash leaves one
//! without the other, and two submits of one key (or of one lock with
//! `--skip-if-locked`) cannot both store a task:
//! - a key exists once: the second create fails, and the second submit
//!   finds the task that has it;
//! - a lock's queue node has its data version bumped by every task joining
//!   it, and `--skip-if-locked` joins only at the version it read with the
//!   queue empty: of two such submits racing, the second one's version
//!   check fails, it reads again and finds the first's task.
//!
//! The task's id is known only once the transaction is done; it is then
//! written into the key's and the queue member's data (status and the
//! second submit read it there). The create is protected as every submit
//! is: after an unknown outcome the task is looked for by its token.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::SubmitConfig;
use super::store::{find_by_tokens, find_until};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::layout::{Layout, is_task_name};
use crate::model::Task;
use crate::session;
use crate::zk::{NodeStat, Op, Zk, ZkError};

/// How a guarded store ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// The task was stored under this id.
    New(String),
    /// Its key belongs to this task already: nothing was stored.
    Existing(String),
    /// `--skip-if-locked`, and these tasks of the lock are in flight:
    /// nothing was stored.
    Locked(Vec<String>),
}

/// How long a second submit waits for the first to write its task's id
/// into the key it created.
const NAME_WAIT: Duration = Duration::from_secs(2);

/// Stores `task` (whose record is `data`) with its lock and key.
pub fn store_guarded(
    zk: &mut Zk,
    cfg: &SubmitConfig,
    task: &Task,
    data: &[u8],
    skip_if_locked: bool,
) -> Result<Stored, Error> {
    let layout = &cfg.layout;
    let give_up = Instant::now()
        + cfg
            .connect
            .connect_timeout
            .unwrap_or(Duration::from_secs(10));
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let doing = |err| Error::zk("storing the task", err);
    // The floor of the first try: the search for a task an earlier try may
    // have stored starts there.
    let mut since = None;
    // An earlier try's outcome is unknown.
    let mut unsure = false;
    loop {
        if Instant::now() > give_up {
            return Err(doing(ZkError::Timeout));
        }
        if zk.is_lost() {
            *zk = session::connect(&cfg.connect)?;
        }
        let before = match read_before_try(zk, layout, task, unsure) {
            Ok(Some(before)) => before,
            Ok(None) => continue,
            // Nothing is sent before these reads answer: read again, in a
            // new session if this one expired.
            Err(err) if err.is_cut_off() => {
                debug!("reading before storing the task: {err}; retrying");
                backoff.sleep();
                continue;
            }
            Err(err) => return Err(doing(err)),
        };
        let search = (
            *since.get_or_insert(queue_floor(before.tasks, cfg.max_pending)?),
            give_up,
        );
        if before.stored_earlier {
            return stored_after_all(zk, cfg, task, search);
        }
        if skip_if_locked
            && let Some((_, stat)) = &before.queue
            && stat.num_children > 0
        {
            let lock = task.lock.as_deref().unwrap_or_default();
            return Ok(Stored::Locked(holders(zk, layout, lock)));
        }
        let ops = guarded_ops(
            layout,
            task,
            data,
            before.queue.map(|(v, _)| v),
            skip_if_locked,
        );
        match zk.multi_created(&ops) {
            Ok(created) => {
                let name = created.last().cloned().flatten().unwrap_or_default();
                name_it(zk, layout, task, &name);
                return Ok(Stored::New(name));
            }
            Err(err) => {
                unsure |= err.is_cut_off();
                match on_failure(zk, cfg, task, &ops, &err, search)? {
                    Some(stored) => return Ok(stored),
                    None => backoff.sleep(),
                }
            }
        }
    }
}

/// What the reads before a try of the transaction found.
struct Before {
    /// `/tasks`' stat.
    tasks: NodeStat,
    /// An earlier try, whose outcome was unknown, went through (its lock
    /// queue member is there).
    stored_earlier: bool,
    /// The lock's queue (version and stat), unless stored earlier.
    queue: Option<(i32, NodeStat)>,
}

/// Reads what a try of `task`'s transaction rests on; `None` when
/// `/tasks` was missing (the namespace is made now: read again).
fn read_before_try(
    zk: &Zk,
    layout: &Layout,
    task: &Task,
    unsure: bool,
) -> Result<Option<Before>, ZkError> {
    let Some(tasks) = zk.exists(&layout.tasks())? else {
        session::ensure_namespace(zk, layout)?;
        return Ok(None);
    };
    let stored_earlier = unsure && own_member(zk, layout, task)?;
    let queue = match &task.lock {
        Some(lock) if !stored_earlier => Some(lock_queue(zk, layout, lock)?),
        _ => None,
    };
    Ok(Some(Before {
        tasks,
        stored_earlier,
        queue,
    }))
}

/// What a failed guarded transaction says, read from its failing
/// operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// Another task has the key.
    KeyTaken,
    /// Its own queue member (named by its token) is there: an earlier try,
    /// whose outcome was unknown, went through after all.
    OwnMember,
    /// The queue moved (another task joined, or an earlier try of this one
    /// went through): read it again.
    QueueMoved,
    /// A folder of the namespace is missing.
    NoNamespace,
    /// Whether anything was stored is unknown.
    Unknown,
    /// Nothing was stored, and trying again will not change that.
    Refused,
}

/// Reads `err`, the failure of `task`'s guarded transaction `ops`.
fn failure(layout: &Layout, task: &Task, ops: &[Op], err: &ZkError) -> Failure {
    let own_member = |i: usize| {
        task.lock
            .as_ref()
            .is_some_and(|lock| ops[i].path() == layout.lockq_member(lock, &task.token))
    };
    match err.txn_cause() {
        (Some(i), ZkError::NodeExists)
            if task.unique.is_some() && ops[i].path().starts_with(&layout.unique()) =>
        {
            Failure::KeyTaken
        }
        (Some(i), ZkError::NodeExists) if own_member(i) => Failure::OwnMember,
        (Some(_), ZkError::BadVersion) => Failure::QueueMoved,
        (Some(_), ZkError::NoNode) => Failure::NoNamespace,
        (None, cause) if cause.is_cut_off() => Failure::Unknown,
        _ => Failure::Refused,
    }
}

/// What a failed guarded transaction means: the task found after all, the
/// key's task, or `None` to try again (only once it is known that nothing
/// was stored). `search` is the floor and the deadline of a search by token.
fn on_failure(
    zk: &mut Zk,
    cfg: &SubmitConfig,
    task: &Task,
    ops: &[Op],
    err: &ZkError,
    search: (i64, Instant),
) -> Result<Option<Stored>, Error> {
    let layout = &cfg.layout;
    match failure(layout, task, ops, err) {
        Failure::KeyTaken => {
            let key = task.unique.as_deref().unwrap_or_default();
            existing(zk, layout, key).map(|name| name.map(Stored::Existing))
        }
        Failure::OwnMember => stored_after_all(zk, cfg, task, search).map(Some),
        Failure::QueueMoved => Ok(None),
        Failure::NoNamespace => {
            session::ensure_namespace(zk, layout)
                .map_err(|e| Error::zk(format!("creating {}", layout.root()), e))?;
            Ok(None)
        }
        Failure::Unknown => {
            warn!("storing the task: {err}; checking whether it was stored");
            find_own(zk, cfg, task, search)
        }
        Failure::Refused => Err(Error::zk(
            format!("storing the task in {}", layout.tasks()),
            err.clone(),
        )),
    }
}

/// The transaction: the lock queue bumped and joined, the key created, the
/// task created.
fn guarded_ops(
    layout: &Layout,
    task: &Task,
    data: &[u8],
    queue_version: Option<i32>,
    skip_if_locked: bool,
) -> Vec<Op> {
    let mut ops = Vec::new();
    if let (Some(lock), Some(version)) = (&task.lock, queue_version) {
        ops.push(Op::SetData {
            path: layout.lockq_dir(lock),
            data: Vec::new(),
            version: skip_if_locked.then_some(version),
        });
        ops.push(Op::Create {
            path: layout.lockq_member(lock, &task.token),
            data: Vec::new(),
        });
    }
    if let Some(key) = &task.unique {
        ops.push(Op::Create {
            path: layout.unique_key(key),
            data: task.token.clone().into_bytes(),
        });
    }
    ops.push(Op::CreateSequential {
        prefix: layout.task_prefix(),
        data: data.to_vec(),
    });
    ops
}

/// `/tasks`' `pzxid`, from its stat: every task created after this read
/// has a greater `czxid` (the floor of a search by token). A full queue
/// stores nothing.
fn queue_floor(stat: NodeStat, max_pending: usize) -> Result<i64, Error> {
    let pending = usize::try_from(stat.num_children).unwrap_or(0);
    if pending >= max_pending {
        return Err(Error::QueueFull {
            pending,
            adding: 1,
            limit: max_pending,
        });
    }
    Ok(stat.pzxid)
}

/// The lock's queue node (made if missing): its data version and stat.
/// `/lockq` itself may be missing too: a master that is creating the
/// namespace makes `/tasks` before it.
fn lock_queue(zk: &Zk, layout: &Layout, lock: &str) -> Result<(i32, NodeStat), ZkError> {
    let path = layout.lockq_dir(lock);
    loop {
        if let Some(stat) = zk.exists(&path)? {
            return Ok((stat.version, stat));
        }
        match zk.ensure(&path) {
            Err(ZkError::NoNode) => session::ensure_namespace(zk, layout)?,
            made => made?,
        }
    }
}

/// Whether this submit's own lock queue member is there: proof that a try
/// of its transaction went through (the member is named by its token, and
/// comes and goes with the task, all-or-nothing).
fn own_member(zk: &Zk, layout: &Layout, task: &Task) -> Result<bool, ZkError> {
    match &task.lock {
        Some(lock) => Ok(zk
            .exists(&layout.lockq_member(lock, &task.token))?
            .is_some()),
        None => Ok(false),
    }
}

/// The task an earlier try of this submit stored after all (its outcome
/// was unknown, and it was applied only after the search for it).
fn stored_after_all(
    zk: &mut Zk,
    cfg: &SubmitConfig,
    task: &Task,
    search: (i64, Instant),
) -> Result<Stored, Error> {
    find_own(zk, cfg, task, search)?.ok_or_else(|| {
        Error::zk(
            "finding the task an earlier try stored (its lock queue member is there)",
            ZkError::NoNode,
        )
    })
}

/// The task this submit stored, if a search by its token finds it; its id
/// is then written into its key and queue member.
fn find_own(
    zk: &mut Zk,
    cfg: &SubmitConfig,
    task: &Task,
    search: (i64, Instant),
) -> Result<Option<Stored>, Error> {
    let tokens = HashMap::from([(task.token.as_str(), 0)]);
    let found = find_until(zk, cfg, &tokens, search.0, search.1)?;
    Ok(found.get(&0).map(|name| {
        name_it(zk, &cfg.layout, task, name);
        Stored::New(name.clone())
    }))
}

/// The ids of the tasks in a lock's queue. Each member's id is written by
/// its submit just after the task is stored, so wait a moment for those
/// not written yet (a submit racing this one), then give what is known.
fn holders(zk: &Zk, layout: &Layout, lock: &str) -> Vec<String> {
    let until = Instant::now() + NAME_WAIT;
    loop {
        let (named, unnamed) = queue_members(zk, layout, lock);
        if unnamed == 0 || Instant::now() >= until {
            return named;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The ids written in a lock's queue members, and how many members have
/// none yet.
fn queue_members(zk: &Zk, layout: &Layout, lock: &str) -> (Vec<String>, usize) {
    let members = zk.children(&layout.lockq_dir(lock)).unwrap_or_default();
    let paths: Vec<String> = members
        .iter()
        .map(|m| layout.lockq_member(lock, m))
        .collect();
    let data: Vec<String> = zk
        .get_many(&paths)
        .into_iter()
        .filter_map(|got| got.ok().flatten())
        .map(|(data, _)| String::from_utf8_lossy(&data).into_owned())
        .collect();
    let (named, unnamed): (Vec<String>, Vec<String>) =
        data.into_iter().partition(|name| is_task_name(name));
    (named, unnamed.len())
}

/// Writes the new task's id into its key and its queue member.
fn name_it(zk: &Zk, layout: &Layout, task: &Task, name: &str) {
    let mut ops = Vec::new();
    if let Some(key) = &task.unique {
        ops.push(layout.unique_key(key));
    }
    if let Some(lock) = &task.lock {
        ops.push(layout.lockq_member(lock, &task.token));
    }
    let txns: Vec<Vec<Op>> = ops
        .into_iter()
        .map(|path| {
            vec![Op::SetData {
                path,
                data: name.as_bytes().to_vec(),
                version: Some(0),
            }]
        })
        .collect();
    for result in zk.multi_many(&txns) {
        if let Err(err) = result {
            debug!("writing {name} into its key or lock queue: {err}");
        }
    }
}

/// The task that has `key`: its id as the key's node gives it (written by
/// its submit just after the create, so wait a moment for it), or found
/// by the token the node holds meanwhile; `None` if the key was purged
/// meanwhile (the caller tries to store again).
fn existing(zk: &Zk, layout: &Layout, key: &str) -> Result<Option<String>, Error> {
    let path = layout.unique_key(key);
    let until = Instant::now() + NAME_WAIT;
    let doing = |err| Error::zk(format!("reading {path}"), err);
    loop {
        let data = match zk.get(&path).map_err(doing)? {
            Some((data, _)) => String::from_utf8_lossy(&data).into_owned(),
            None => return Ok(None),
        };
        if is_task_name(&data) {
            return Ok(Some(data));
        }
        if Instant::now() >= until {
            let tokens = HashMap::from([(data.as_str(), 0)]);
            return find_by_tokens(zk, layout, &tokens, 0)
                .map_err(doing)?
                .remove(&0)
                .map(Some)
                .ok_or_else(|| {
                    Error::BadInput(format!(
                        "the task with key '{key}' is still being stored by another submit; try again"
                    ))
                });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_at(index: usize, cause: ZkError) -> ZkError {
        ZkError::TxnFailed {
            index,
            cause: Box::new(cause),
        }
    }

    /// The failing operation and its cause say what a guarded store does
    /// next; its own queue member found there means an earlier try stored
    /// the task, not that the store failed.
    #[test]
    fn a_failure_is_read_from_the_operation_it_names() {
        let layout = Layout::new("/zkmw");
        let task = Task {
            lock: Some("nightly".into()),
            unique: Some("backup".into()),
            token: "tok".into(),
            ..Task::default()
        };
        // The queue's bump, its own member, the key, the task.
        let ops = guarded_ops(&layout, &task, b"{}", Some(3), false);
        let read = |err: ZkError| failure(&layout, &task, &ops, &err);
        assert_eq!(read(failed_at(1, ZkError::NodeExists)), Failure::OwnMember);
        assert_eq!(read(failed_at(2, ZkError::NodeExists)), Failure::KeyTaken);
        assert_eq!(read(failed_at(0, ZkError::BadVersion)), Failure::QueueMoved);
        assert_eq!(read(failed_at(3, ZkError::NoNode)), Failure::NoNamespace);
        assert_eq!(read(ZkError::ConnectionLoss), Failure::Unknown);
        assert_eq!(read(failed_at(3, ZkError::NodeExists)), Failure::Refused);
    }
}
