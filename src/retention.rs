//! Keeping /status bounded: which results to delete (a pure rule) and the
//! deleting itself, used by `zkmw purge` and, on a slow timer, by the
//! active master. Without it /status grows until ZooKeeper can no longer
//! list it.

use std::time::Duration;

use log::{debug, info};

use crate::layout::{Layout, task_sequence};
use crate::model::{self, PurgeMark};
use crate::zk::{Op, Zk, ZkError};

/// How long results are kept, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Delete results that finished longer ago than this.
    pub older_than: Option<Duration>,
    /// Keep at most this many results (the newest).
    pub keep: Option<usize>,
}

/// Results looked at per batch of pipelined requests.
const CHUNK: usize = 1000;

/// Splits `/status` children into the ones beyond the newest `keep` (to
/// delete by count) and the rest, oldest first. Names that are not task
/// names count as oldest.
pub fn split_by_count(mut names: Vec<String>, keep: Option<usize>) -> (Vec<String>, Vec<String>) {
    names.sort_by_key(|name| task_sequence(name).unwrap_or(i64::MIN));
    let over = keep.map_or(0, |keep| names.len().saturating_sub(keep));
    let rest = names.split_off(over);
    (names, rest)
}

/// The names whose result was stored (`ctime_ms`) before `cutoff_ms`.
pub fn older_than(stats: &[(String, i64)], cutoff_ms: i64) -> Vec<String> {
    stats
        .iter()
        .filter(|(_, ctime)| *ctime < cutoff_ms)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Applies the policy to /status; every write is fenced by `fence`
/// (`/epoch` at that version) when given; `sent` is told how many
/// transactions the deletions took. Returns how many were deleted.
///
/// Ages are read oldest first, a batch at a time, stopping at the first
/// batch with nothing old enough: results finish roughly in submission
/// order, so a steady state costs one batch of reads. The purge mark is
/// raised before anything is deleted, so every purged task is at or
/// below it.
pub fn purge(
    zk: &Zk,
    layout: &Layout,
    policy: Policy,
    fence: Option<i32>,
    sent: &dyn Fn(usize),
) -> Result<usize, ZkError> {
    let (mut doomed, rest) = split_by_count(zk.children(&layout.status())?, policy.keep);
    if let Some(age) = policy.older_than {
        let cutoff = model::now_ms().saturating_sub(age.as_millis() as u64) as i64;
        for chunk in rest.chunks(CHUNK) {
            let paths: Vec<String> = chunk.iter().map(|t| layout.status_task(t)).collect();
            let mut stats = Vec::with_capacity(chunk.len());
            for (name, got) in chunk.iter().zip(zk.exists_many(&paths)) {
                if let Some(stat) = got? {
                    stats.push((name.clone(), stat.ctime_ms));
                }
            }
            let old = older_than(&stats, cutoff);
            if old.is_empty() {
                break;
            }
            doomed.extend(old);
        }
    }
    if let Some(highest) = doomed.iter().filter_map(|t| task_sequence(t)).max() {
        raise_mark(zk, layout, highest, fence)?;
    }
    let mut deleted = 0;
    for chunk in doomed.chunks(CHUNK) {
        deleted += delete_chunk(zk, layout, chunk, fence, sent)?;
    }
    if deleted > 0 {
        info!("purged {deleted} results from {}", layout.status());
    }
    Ok(deleted)
}

/// How many times raising the purge mark is tried against other writers.
const MARK_ATTEMPTS: usize = 10;

/// The mark to store so that it covers `seq`, given what `/status` holds
/// (a garbled mark is ignored); `None` when it already does.
fn raised_mark(stored: &[u8], seq: i64) -> Option<PurgeMark> {
    let stored = model::decode::<PurgeMark>(stored).ok();
    let covered = stored.is_some_and(|mark| mark.purged_through >= seq);
    (!covered).then_some(PurgeMark {
        purged_through: seq,
    })
}

/// Raises the purge mark in the data of `/status` to at least `seq`, with
/// a version check so that two purgers never lower it.
fn raise_mark(zk: &Zk, layout: &Layout, seq: i64, fence: Option<i32>) -> Result<(), ZkError> {
    let mut last = ZkError::BadVersion;
    for _ in 0..MARK_ATTEMPTS {
        let Some((data, stat)) = zk.get(&layout.status())? else {
            return Err(ZkError::NoNode);
        };
        let Some(mark) = raised_mark(&data, seq) else {
            return Ok(());
        };
        let fence = fence.map(|version| Op::Check {
            path: layout.epoch(),
            version,
        });
        let set = Op::SetData {
            path: layout.status(),
            data: model::encode(&mark),
            version: Some(stat.version),
        };
        let txn: Vec<Op> = fence.into_iter().chain([set]).collect();
        match zk.multi(&txn) {
            Ok(()) => return Ok(()),
            Err(err) if err.is_txn_failure(txn.len() - 1, &ZkError::BadVersion) => last = err,
            Err(err) => return Err(err),
        }
    }
    Err(last)
}

/// The step deleting the result at `path` and, if it has one, its unique
/// key: the result first, then the key.
fn deletion(layout: &Layout, path: &str, key: Option<&str>) -> Vec<Op> {
    let result = Op::Delete {
        path: path.to_string(),
        version: None,
    };
    let key = key.map(|k| Op::Delete {
        path: layout.unique_key(k),
        version: None,
    });
    [result].into_iter().chain(key).collect()
}

/// Deletes the results `chunk` names, each with its unique key (read from
/// the result: the key goes with it), in grouped transactions (each
/// result's deletion all-or-nothing, fenced once per transaction: see
/// `zk::group`); returns how many were deleted. `sent` is told how many
/// transactions went.
fn delete_chunk(
    zk: &Zk,
    layout: &Layout,
    chunk: &[String],
    fence: Option<i32>,
    sent: &dyn Fn(usize),
) -> Result<usize, ZkError> {
    let paths: Vec<String> = chunk.iter().map(|t| layout.status_task(t)).collect();
    let keys: Vec<Option<String>> = zk
        .get_many(&paths)
        .into_iter()
        .map(|got| {
            let (data, _) = got.ok().flatten()?;
            model::decode::<model::TaskResult>(&data).ok()?.unique
        })
        .collect();
    let prefix: Vec<Op> = fence
        .map(|version| Op::Check {
            path: layout.epoch(),
            version,
        })
        .into_iter()
        .collect();
    let steps: Vec<Vec<Op>> = paths
        .iter()
        .zip(&keys)
        .map(|(path, key)| deletion(layout, path, key.as_deref()))
        .collect();
    // Operation `status_at` deletes the result, the next one its key.
    let status_at = prefix.len();
    let mut deleted = 0;
    let mut again = Vec::new();
    for ((path, step), result) in paths
        .iter()
        .zip(&steps)
        .zip(zk.commit(&prefix, &steps, sent))
    {
        match result {
            Ok(_) => deleted += 1,
            Err(err) if fence.is_some() && err.txn_cause().0 == Some(0) => return Err(err),
            // The key is gone already (deleted by hand?): the result alone.
            Err(err) if err.txn_cause() == (Some(status_at + 1), &ZkError::NoNode) => {
                again.push(step[..1].to_vec());
            }
            Err(err) if err.txn_cause().1 == &ZkError::NoNode => {}
            Err(err) => debug!("purge: deleting {path} failed: {err}"),
        }
    }
    deleted += zk
        .commit(&prefix, &again, sent)
        .iter()
        .filter(|r| r.is_ok())
        .count();
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(seqs: &[u32]) -> Vec<String> {
        seqs.iter().map(|i| format!("task-{i:010}")).collect()
    }

    #[test]
    fn keeps_the_newest_by_count() {
        let (gone, kept) = split_by_count(names(&[3, 0, 4, 1, 2]), Some(2));
        assert_eq!(gone, names(&[0, 1, 2]));
        assert_eq!(kept, names(&[3, 4]));
        let (gone, kept) = split_by_count(names(&[1, 0]), None);
        assert!(gone.is_empty());
        assert_eq!(kept, names(&[0, 1]));
    }

    #[test]
    fn counts_stray_names_as_oldest() {
        let mut all = names(&[5, 6]);
        all.push("junk".into());
        let (gone, _) = split_by_count(all, Some(2));
        assert_eq!(gone, ["junk"]);
    }

    /// The mark only goes up; a garbled one is replaced.
    #[test]
    fn the_purge_mark_only_rises() {
        let mark = |seq| {
            model::encode(&PurgeMark {
                purged_through: seq,
            })
        };
        assert_eq!(raised_mark(&mark(5), 3), None);
        assert_eq!(raised_mark(&mark(5), 5), None);
        assert_eq!(
            raised_mark(&mark(5), 9),
            Some(PurgeMark { purged_through: 9 })
        );
        for garbled in [&b""[..], b"{", b"{\"purged_through\":\"x\"}", b"\xff"] {
            assert_eq!(
                raised_mark(garbled, 2),
                Some(PurgeMark { purged_through: 2 }),
                "{garbled:?}"
            );
        }
    }

    #[test]
    fn deletes_by_age() {
        let stats: Vec<(String, i64)> =
            names(&[0, 1, 2]).into_iter().zip([100, 300, 200]).collect();
        assert_eq!(older_than(&stats, 250), names(&[0, 2]));
        assert!(older_than(&stats, 100).is_empty());
    }
}
