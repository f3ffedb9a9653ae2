//! The verdict: every acknowledged task against its result, read from
//! `/status` in one pass of pipelined reads, and against its runs in the
//! ledger. The run passes when nothing was lost, nothing ran twice
//! without zkmw counting it (a new attempt after a worker died),
//! no two runs of a task (nor of two tasks of one lock) overlapped, the
//! submits of one key all printed the same task, nothing ran that was never
//! acknowledged, every failure is an acceptable one, every result is that
//! of a job that ran to its end, `submit` printed no id twice, and nothing
//! anomalous happened (a role exiting by itself, results missing after the
//! wait, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::Duration;

use zkmw::layout::{Layout, is_task_name};
use zkmw::model::{self, FailReason, FinalState, TaskResult};
use zkmw::zk::Zk;

use crate::common::ledger::{self, Run};
use crate::load::{Ack, Guard};

/// `--retries` of every task (the default): `worker lost` is an acceptable
/// failure after more runs than this.
const RETRIES: u32 = 2;

/// Results read at once.
const BATCH: usize = 500;

/// What the verdict is drawn from.
pub struct Evidence {
    /// The acknowledged submits.
    pub acked: Vec<Ack>,
    /// The failed submits, one line each.
    pub failures: Vec<String>,
    /// Markers of acknowledged submits that warned.
    pub warned: Vec<String>,
    /// Every run in the ledger.
    pub runs: Vec<Run>,
    /// Ledger lines that are not a run's start or end.
    pub malformed: Vec<String>,
    /// Every result in `/status`, by task (the error when it is unreadable).
    pub results: BTreeMap<String, Result<TaskResult, String>>,
    /// Anomalies in the journal.
    pub anomalies: usize,
    /// How long the run took.
    pub seconds: u64,
}

/// The tasks of each finding.
#[derive(Default)]
pub struct Tally {
    /// Acknowledged, with a result.
    pub finished: Vec<String>,
    /// Acknowledged, without a readable result.
    pub lost: Vec<String>,
    /// Acknowledged, run more than once.
    pub run_twice: Vec<String>,
    /// Run more than once, each run an attempt zkmw counted.
    pub explained: Vec<String>,
    /// Run more than once otherwise.
    pub unexplained: Vec<String>,
    /// Failed.
    pub failed: Vec<String>,
    /// Failed for a reason other than `worker lost` after every retry.
    pub bad_failed: Vec<String>,
    /// Done, but not with exit 0, or without a run in the ledger.
    pub odd: Vec<String>,
    /// Run or finished, never acknowledged.
    pub phantom: Vec<String>,
    /// Task ids printed by two submits.
    pub dup_ack: Vec<String>,
    /// For each task whose runs overlapped, the first such pair.
    pub overlaps: Vec<(Run, Run)>,
    /// Tasks with a lock (`--lock`).
    pub locked: usize,
    /// For each lock whose tasks' runs overlapped, the first such pair.
    pub lock_overlaps: Vec<(Run, Run)>,
    /// Keys submitted (`--unique`).
    pub keys: usize,
    /// Keys whose submits printed more than one task id.
    pub split_keys: Vec<String>,
}

impl Tally {
    /// The findings in `e`.
    pub fn of(e: &Evidence) -> Tally {
        let mut tally = Tally::default();
        let mut acked: BTreeMap<&str, &Ack> = BTreeMap::new();
        for ack in &e.acked {
            if let Some(first) = acked.insert(&ack.task, ack)
                && !(first.guard == ack.guard && matches!(ack.guard, Guard::Unique(_)))
            {
                let dup = format!(
                    "{} printed for {} and {}",
                    ack.task, first.marker, ack.marker
                );
                tally.dup_ack.push(dup);
            }
        }
        tally.judge_keys(&e.acked);
        let mut runs: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
        for run in &e.runs {
            runs.entry(&run.task).or_default().push(run);
        }
        for &task in acked.keys() {
            let ran = runs.get(task).map_or(&[][..], Vec::as_slice);
            tally.judge(task, e.results.get(task).and_then(|r| r.as_ref().ok()), ran);
        }
        let seen: BTreeSet<&str> = runs
            .keys()
            .copied()
            .chain(e.results.keys().map(String::as_str))
            .collect();
        tally.phantom = seen
            .into_iter()
            .filter(|t| !acked.contains_key(t))
            .map(String::from)
            .collect();
        tally.overlaps = ledger::overlaps(&e.runs);
        let locks: BTreeMap<&str, &str> = acked
            .iter()
            .filter_map(|(task, ack)| match &ack.guard {
                Guard::Lock(name) => Some((*task, name.as_str())),
                _ => None,
            })
            .collect();
        tally.locked = locks.len();
        tally.lock_overlaps = ledger::overlaps_by(&e.runs, |run| {
            locks.get(run.task.as_str()).map(|l| l.to_string())
        });
        tally
    }

    /// Files the keys whose submits did not all print one task.
    fn judge_keys(&mut self, acks: &[Ack]) {
        let mut by_key: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for ack in acks {
            if let Guard::Unique(key) = &ack.guard {
                by_key.entry(key).or_default().insert(&ack.task);
            }
        }
        self.keys = by_key.len();
        self.split_keys = by_key
            .into_iter()
            .filter(|(_, tasks)| tasks.len() > 1)
            .map(|(key, tasks)| format!("{key}: {tasks:?}"))
            .collect();
    }

    /// Files the acknowledged `task`, its `result` and its `runs`.
    fn judge(&mut self, task: &str, result: Option<&TaskResult>, runs: &[&Run]) {
        let task = task.to_string();
        if runs.len() > 1 {
            self.run_twice.push(task.clone());
            let attempts: BTreeSet<u32> = runs.iter().map(|r| r.attempt).collect();
            let counted = result.map_or(0, |r| r.attempts as usize);
            let explained = if counted >= runs.len() && attempts.len() == runs.len() {
                &mut self.explained
            } else {
                &mut self.unexplained
            };
            explained.push(task.clone());
        }
        let Some(result) = result else {
            self.lost.push(task);
            return;
        };
        self.finished.push(task.clone());
        match result.state {
            FinalState::Failed => {
                self.failed.push(task.clone());
                let worn_out =
                    result.reason == Some(FailReason::WorkerLost) && result.attempts > RETRIES;
                if !worn_out {
                    self.bad_failed.push(task);
                }
            }
            FinalState::Done if result.exit_code != Some(0) || runs.is_empty() => {
                self.odd.push(task)
            }
            FinalState::Done => {}
        }
    }

    /// True when the run passed: every submit stored its task (a quorum
    /// serves throughout, so none may fail) and nothing was wrong with the
    /// tasks.
    pub fn passed(&self, e: &Evidence) -> bool {
        !e.acked.is_empty()
            && e.failures.is_empty()
            && [
                &self.lost,
                &self.unexplained,
                &self.phantom,
                &self.bad_failed,
                &self.odd,
                &self.dup_ack,
                &self.split_keys,
            ]
            .iter()
            .all(|found| found.is_empty())
            && self.overlaps.is_empty()
            && self.lock_overlaps.is_empty()
            && e.anomalies == 0
    }

    /// The one-line summary.
    pub fn summary(&self, e: &Evidence) -> String {
        format!(
            "chaos: submitted={} submit_failures={} finished={} lost={} run_twice={} \
             explained={} unexplained={} failed={} bad_failed={} odd={} phantom={} \
             anomalies={} overlap={} locked={} lock_overlap={} keys={} split_keys={} \
             duration={}s",
            e.acked.len(),
            e.failures.len(),
            self.finished.len(),
            self.lost.len(),
            self.run_twice.len(),
            self.explained.len(),
            self.unexplained.len(),
            self.failed.len(),
            self.bad_failed.len(),
            self.odd.len(),
            self.phantom.len(),
            e.anomalies,
            self.overlaps.len(),
            self.locked,
            self.lock_overlaps.len(),
            self.keys,
            self.split_keys.len(),
            e.seconds
        )
    }
}

/// Every result in `/status` of `layout`: the children listed, then read
/// in batches of pipelined reads (a read that fails is tried twice more).
pub fn read_results(
    zk: &Zk,
    layout: &Layout,
) -> Result<BTreeMap<String, Result<TaskResult, String>>, String> {
    let mut names = retried(|| zk.children(&layout.status()))?;
    names.retain(|n| is_task_name(n));
    let mut results = BTreeMap::new();
    for batch in names.chunks(BATCH) {
        let paths: Vec<String> = batch.iter().map(|t| layout.status_task(t)).collect();
        for ((task, path), got) in batch.iter().zip(&paths).zip(zk.get_many(&paths)) {
            let node = match got {
                Ok(node) => node,
                Err(_) => retried(|| zk.get(path))?,
            };
            if let Some((data, _)) = node {
                results.insert(task.clone(), model::decode::<TaskResult>(&data));
            }
        }
    }
    Ok(results)
}

/// `read`, tried up to 3 times a second apart; the last error as text.
fn retried<T>(mut read: impl FnMut() -> Result<T, zkmw::zk::ZkError>) -> Result<T, String> {
    let mut last = String::new();
    for _ in 0..3 {
        match read() {
            Ok(found) => return Ok(found),
            Err(e) => last = format!("reading /status: {e}"),
        }
        thread::sleep(Duration::from_secs(1));
    }
    Err(last)
}
