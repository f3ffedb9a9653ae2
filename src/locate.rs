//! Finding out about one task wherever it is in its life, for the
//! commands that take a task id (`status TASK`, `wait`): roles are peers,
//! so what they share of this lives here, beside `model` and `layout`.

use crate::error::Missing;
use crate::layout::{Layout, task_name, task_sequence};
use crate::model::{self, Claim, PurgeMark, Task, TaskResult};
use crate::zk::{Node, NodeStat, Zk, ZkError};

/// Where a task was found, with what its node there holds.
#[derive(Debug)]
pub enum Place {
    /// Queued in `/tasks`.
    Pending {
        /// The task, or what is wrong with its record.
        task: Result<Task, String>,
        /// Its node's stat (its version guards a delete).
        stat: NodeStat,
    },
    /// Assigned to `worker`, and claimed if `claim` is there.
    Assigned {
        /// The worker whose folder holds it.
        worker: String,
        /// The task, or what is wrong with its record.
        task: Result<Task, String>,
        /// Its node's stat: version 0 until a worker claims it.
        stat: NodeStat,
        /// The claim under `/running`, if there is one (any worker's).
        claim: Option<Result<Claim, String>>,
    },
    /// Finished: its result, or what is wrong with it.
    Finished {
        /// The result, or what is wrong with its record.
        result: Result<TaskResult, String>,
        /// Its node's stat (when it was stored).
        stat: NodeStat,
    },
}

/// One pipelined look at every place `task` can be: queued, assigned to
/// each worker, claimed, finished; the most advanced place it is seen in
/// wins (a task moves forward between the reads). `None` when it is
/// nowhere (it may have moved back, from assigned to queued, meanwhile:
/// look again before calling it missing).
pub fn find(zk: &Zk, layout: &Layout, task: &str) -> Result<Option<Place>, ZkError> {
    let workers = match zk.children(&layout.assign()) {
        Err(ZkError::NoNode) => Vec::new(),
        listed => listed?,
    };
    let mut paths = vec![layout.task(task)];
    paths.extend(workers.iter().map(|w| layout.assignment(w, task)));
    paths.push(layout.running_task(task));
    paths.push(layout.status_task(task));
    let mut got = zk
        .get_many(&paths)
        .into_iter()
        .collect::<Result<Vec<Node>, ZkError>>()?;
    let (result, claim) = (got.pop().flatten(), got.pop().flatten());
    if let Some((data, stat)) = result {
        let result = model::decode::<TaskResult>(&data);
        return Ok(Some(Place::Finished { result, stat }));
    }
    let mut got = got.into_iter();
    let queued = got.next().flatten();
    let claim = claim.map(|(data, _)| model::decode::<Claim>(&data));
    for (worker, node) in workers.into_iter().zip(got) {
        if let Some((data, stat)) = node {
            let task = model::decode_task(&data);
            return Ok(Some(Place::Assigned {
                worker,
                task,
                stat,
                claim,
            }));
        }
    }
    Ok(queued.map(|(data, stat)| Place::Pending {
        task: model::decode_task(&data),
        stat,
    }))
}

/// Why `task` (a well-formed id that names no node) is missing: its result
/// was purged, or no task ever had that id. Reads the purge mark in
/// `/status` and whether `/tasks` is there.
pub fn missing(zk: &Zk, layout: &Layout, task: &str) -> Result<Missing, ZkError> {
    let paths = [layout.status(), layout.tasks()];
    let mut got = zk.get_many(&paths).into_iter();
    let mut next = || got.next().unwrap_or(Ok(None));
    let mark = next()?.and_then(|(data, _)| model::decode::<PurgeMark>(&data).ok());
    let namespace = next()?.is_some();
    let seq = task_sequence(task).unwrap_or(i64::MAX);
    Ok(why_missing(seq, mark, namespace))
}

/// Why a well-formed id names no task, as a plain rule: purged when it is
/// at or below the purge mark, else never submitted. (No "next id" is
/// given: /tasks' child version is not it, see `submit::find_by_tokens`.)
fn why_missing(seq: i64, mark: Option<PurgeMark>, namespace: bool) -> Missing {
    match mark {
        Some(mark) if seq <= mark.purged_through => Missing::Purged {
            through: task_name(mark.purged_through),
        },
        _ => Missing::NeverSubmitted { namespace },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_id_is_purged_up_to_the_mark_and_never_submitted_above() {
        let mark = Some(PurgeMark { purged_through: 7 });
        let purged = Missing::Purged {
            through: "task-0000000007".into(),
        };
        assert_eq!(why_missing(3, mark, true), purged);
        assert_eq!(why_missing(7, mark, true), purged);
        let never = Missing::NeverSubmitted { namespace: true };
        assert_eq!(why_missing(8, mark, true), never);
        assert_eq!(why_missing(99, mark, true), never);
        assert_eq!(why_missing(3, None, true), never);
        assert_eq!(
            why_missing(3, None, false),
            Missing::NeverSubmitted { namespace: false }
        );
    }
}
