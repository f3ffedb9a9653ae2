//! Storing tasks exactly once: the "protected" create. Each task carries a
//! random token; when a create's outcome is unknown (connection lost,
//! deadline hit), submit looks for the token among the tasks created since
//! it last read /tasks (newest first, down to the first node older than
//! that read) before it tries again. So a task is neither lost nor stored
//! twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{debug, warn};

use super::SubmitConfig;
use crate::backoff::Backoff;
use crate::error::Error;
use crate::layout::{Layout, task_sequence};
use crate::model::{self, Task, TaskResult};
use crate::session;
use crate::zk::{Node, Zk, ZkError};

/// Stores each task exactly once; returns the session now in use (a new one
/// if the first expired) and the tasks' names, in order.
pub fn store(
    zk: Zk,
    cfg: &SubmitConfig,
    tasks: &[Task],
    datas: &[Vec<u8>],
) -> Result<(Zk, Vec<String>), Error> {
    let give_up = Instant::now()
        + cfg
            .connect
            .connect_timeout
            .unwrap_or(Duration::from_secs(10));
    let mut storer = Storer {
        zk,
        cfg,
        give_up,
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
    };
    let mut names: Vec<Option<String>> = vec![None; tasks.len()];
    loop {
        let todo: Vec<usize> = (0..tasks.len()).filter(|i| names[*i].is_none()).collect();
        if todo.is_empty() {
            return Ok((storer.zk, names.into_iter().flatten().collect()));
        }
        let Some(queue) = storer.queue()? else {
            continue;
        };
        let pending = usize::try_from(queue.num_children).unwrap_or(0);
        if pending + todo.len() > cfg.max_pending {
            return Err(Error::QueueFull {
                pending,
                adding: todo.len(),
                limit: cfg.max_pending,
            });
        }
        let unknown = storer.create(&todo, datas, &mut names)?;
        if !unknown.is_empty() {
            storer.find(&unknown, tasks, queue.pzxid, &mut names)?;
        }
    }
}

/// One `store` call's session, deadline and pacing.
struct Storer<'a> {
    zk: Zk,
    cfg: &'a SubmitConfig,
    give_up: Instant,
    backoff: Backoff,
}

impl Storer<'_> {
    /// The stat of /tasks: the queue's size and its `pzxid` (every task
    /// created after this read has a greater `czxid`, which bounds the
    /// search for a create whose outcome is unknown). `None` when it must
    /// be read again.
    fn queue(&mut self) -> Result<Option<crate::zk::NodeStat>, Error> {
        let layout = &self.cfg.layout;
        match self.zk.exists(&layout.tasks()) {
            Ok(Some(stat)) => Ok(Some(stat)),
            Ok(None) => {
                self.ensure_namespace()?;
                Ok(None)
            }
            Err(err) if Instant::now() < self.give_up && err.is_cut_off() => {
                debug!("reading {}: {err}; retrying", layout.tasks());
                self.renew()?;
                self.backoff.sleep();
                Ok(None)
            }
            Err(err) => Err(Error::zk(format!("reading {}", layout.tasks()), err)),
        }
    }

    /// Creates the tasks `todo` (indices into `datas`), all in flight at
    /// once, filling in `names`; returns those whose outcome is unknown.
    fn create(
        &mut self,
        todo: &[usize],
        datas: &[Vec<u8>],
        names: &mut [Option<String>],
    ) -> Result<Vec<usize>, Error> {
        let layout = &self.cfg.layout;
        let batch: Vec<Vec<u8>> = todo.iter().map(|i| datas[*i].clone()).collect();
        let created = self
            .zk
            .create_sequential_many(&layout.task_prefix(), &batch);
        let mut unknown = Vec::new();
        let mut missing_namespace = false;
        let mut last_err = None;
        for (i, result) in todo.iter().zip(created) {
            match result {
                Ok(name) => names[*i] = Some(name),
                // Nothing was created: simply try again.
                Err(ZkError::NoNode) => missing_namespace = true,
                Err(err) if err.is_cut_off() => {
                    unknown.push(*i);
                    last_err = Some(err);
                }
                Err(err) => {
                    return Err(Error::zk(
                        format!("storing the task in {}", layout.tasks()),
                        err,
                    ));
                }
            }
        }
        if missing_namespace {
            self.ensure_namespace()?;
        }
        if let Some(err) = last_err {
            warn!(
                "storing {} tasks: {err}; checking whether they were stored",
                unknown.len()
            );
            if Instant::now() > self.give_up {
                return Err(Error::zk(
                    "storing the task (it may or may not be stored)",
                    err,
                ));
            }
        }
        Ok(unknown)
    }

    /// Finds out which of the creates `unknown` happened (by their tasks'
    /// tokens, among the tasks created after transaction `after`), filling
    /// in `names`; the others are created again by the next round.
    fn find(
        &mut self,
        unknown: &[usize],
        tasks: &[Task],
        after: i64,
        names: &mut [Option<String>],
    ) -> Result<(), Error> {
        let tokens: HashMap<&str, usize> = unknown
            .iter()
            .map(|i| (tasks[*i].token.as_str(), *i))
            .collect();
        let found = find_until(&mut self.zk, self.cfg, &tokens, after, self.give_up)?;
        for (i, name) in found {
            names[i] = Some(name);
        }
        Ok(())
    }

    /// A new session if this one is over.
    fn renew(&mut self) -> Result<(), Error> {
        if self.zk.is_lost() {
            self.zk = session::connect(&self.cfg.connect)?;
        }
        Ok(())
    }

    fn ensure_namespace(&self) -> Result<(), Error> {
        let layout = &self.cfg.layout;
        session::ensure_namespace(&self.zk, layout)
            .map_err(|e| Error::zk(format!("creating {}", layout.root()), e))
    }
}

/// [`find_by_tokens`] until it can answer (renewing a lost session): a
/// create whose outcome is unknown is never made again before the search
/// said it did not happen. Gives up at `give_up`, saying the task may or
/// may not be stored.
pub(super) fn find_until(
    zk: &mut Zk,
    cfg: &SubmitConfig,
    tokens: &HashMap<&str, usize>,
    after: i64,
    give_up: Instant,
) -> Result<HashMap<usize, String>, Error> {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        if zk.is_lost() {
            *zk = session::connect(&cfg.connect)?;
        }
        match find_by_tokens(zk, &cfg.layout, tokens, after) {
            Ok(found) => return Ok(found),
            Err(err) if Instant::now() > give_up => {
                return Err(Error::zk(
                    "checking whether the task was stored (it may or may not be)",
                    err,
                ));
            }
            Err(err) => {
                debug!("search not possible yet: {err}");
                backoff.sleep();
            }
        }
    }
}

/// How many times a search starts over because a task moved under it
/// before it gives up (the caller tries again later).
const SEARCH_ROUNDS: usize = 20;

/// How many records a search reads at a time, newest first, before it
/// looks whether it has gone past the tasks it looks for.
const SEARCH_CHUNK: usize = 256;

/// Which of `tokens` (token → the caller's index) were stored by a
/// transaction after `after` (a zxid; 0 for any time), wherever the tasks
/// are now (pending, assigned or finished). Starts with a sync: the session
/// may now be on a server that has not yet applied the create in question.
///
/// Task ids are sequence numbers, so a task created after `after` has a
/// higher one than every task that existed then: the search reads records
/// from the highest id down and stops below the first node created at or
/// before `after`. (Not from /tasks' child version down: ZooKeeper 3.8
/// numbers children by creates only, so once tasks have left the queue the
/// child version runs ahead of the ids the next tasks get.)
///
/// Tasks move while the search runs (assigned, moved between workers,
/// requeued, finished): a search that listed `/tasks` and then `/assign`
/// could miss a task requeued in between, and a task listed and then moved
/// has no data left to read. So all folders are listed in one multi-read
/// (one state of the server, where each task is in exactly one place), and
/// a task gone from where it was listed is read from every place at once.
pub fn find_by_tokens(
    zk: &Zk,
    layout: &Layout,
    tokens: &HashMap<&str, usize>,
    after: i64,
) -> Result<HashMap<usize, String>, ZkError> {
    zk.sync(layout.root())?;
    for _ in 0..SEARCH_ROUNDS {
        if let Some(found) = search_once(zk, layout, tokens, after)? {
            return Ok(found);
        }
    }
    Err(ZkError::Other(format!(
        "tasks kept moving during {SEARCH_ROUNDS} searches for a token"
    )))
}

/// One search; `None` if it must start over (a task it listed moved, then
/// could not be found in one read of every place, and a token is still
/// missing).
fn search_once(
    zk: &Zk,
    layout: &Layout,
    tokens: &HashMap<&str, usize>,
    after: i64,
) -> Result<Option<HashMap<usize, String>>, ZkError> {
    let Some(places) = list_places(zk, layout)? else {
        return Ok(None);
    };
    let folders: Vec<String> = places.iter().map(|(folder, _)| folder.clone()).collect();
    let mut newest_first: Vec<(i64, String, String)> = places
        .into_iter()
        .flat_map(|(folder, names)| {
            names
                .into_iter()
                .filter_map(move |n| task_sequence(&n).map(|seq| (seq, format!("{folder}/{n}"), n)))
        })
        .collect();
    newest_first.sort_unstable_by_key(|(seq, _, _)| std::cmp::Reverse(*seq));
    let mut found = HashMap::new();
    for chunk in newest_first.chunks(SEARCH_CHUNK) {
        let reads: Vec<String> = chunk.iter().map(|(_, path, _)| path.clone()).collect();
        let mut past = false;
        for ((_, _, name), got) in chunk.iter().zip(zk.get_grouped(&reads)?) {
            let (data, stat) = match got {
                Some(node) => node,
                // Moved since the listing: it is in exactly one place now.
                None if found.len() < tokens.len() => match read_anywhere(zk, &folders, name)? {
                    Some(node) => node,
                    None => return Ok(None),
                },
                None => continue,
            };
            past |= stat.czxid <= after;
            if let Some(i) = token_of(&data).and_then(|t| tokens.get(t.as_str()).copied()) {
                found.insert(i, name.clone());
            }
        }
        if past || found.len() == tokens.len() {
            break;
        }
    }
    Ok(Some(found))
}

/// The token of a task or result record.
fn token_of(data: &[u8]) -> Option<String> {
    model::decode::<Task>(data)
        .map(|t| t.token)
        .or_else(|_| model::decode::<TaskResult>(data).map(|r| r.token))
        .ok()
}

/// Task `name`'s node wherever it is among `folders`, read in one state of
/// the server.
fn read_anywhere(zk: &Zk, folders: &[String], name: &str) -> Result<Node, ZkError> {
    let paths: Vec<String> = folders.iter().map(|f| format!("{f}/{name}")).collect();
    let nodes = zk.get_at_once(&paths)?;
    Ok(nodes.into_iter().flatten().next())
}

/// A folder's path and its children's names.
type Folder = (String, Vec<String>);

/// Every folder a task can be in (`/tasks`, each `/assign/<worker>`,
/// `/status`) with its children, from one state of the server; `None` if a
/// worker's folder came or went between listing `/assign` and that read.
fn list_places(zk: &Zk, layout: &Layout) -> Result<Option<Vec<Folder>>, ZkError> {
    let mut workers = zk.children(&layout.assign())?;
    workers.sort();
    let mut folders = vec![layout.assign(), layout.tasks(), layout.status()];
    folders.extend(workers.iter().map(|w| layout.assign_dir(w)));
    let mut listed = zk.children_at_once(&folders)?.into_iter();
    let mut now = listed.next().flatten().unwrap_or_default();
    now.sort();
    if now != workers {
        return Ok(None);
    }
    Ok(Some(
        folders
            .into_iter()
            .skip(1)
            .zip(listed)
            .map(|(folder, names)| (folder, names.unwrap_or_default()))
            .collect(),
    ))
}
