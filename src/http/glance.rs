//! What the master's status page and its `/api/` show: the cluster read
//! through the master's own session with the viewer's functions
//! (`crate::status`), at most once a second whatever the request rate, and
//! what this master remembers between two reads: when each result was
//! stored (its node's creation time, read once per result), for the chart
//! of tasks finished per minute; and the recent failures, found by reading
//! each result of the last hour once.
//!
//! The master's loop never waits for this: the page reads on the HTTP
//! threads, and only while someone looks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::layout::{Layout, task_sequence};
use crate::model;
use crate::obs::Obs;
use crate::status::{self, ClusterView, Query, TaskRow, TaskState, TaskView};
use crate::zk::Zk;

/// How long a read serves every request.
const FRESH: Duration = Duration::from_secs(1);

/// How many tasks `/api/tasks` lists (what `zkmw tasks` lists by default).
pub const TASKS: usize = 50;

/// How many failures the page keeps.
const FAILURES: usize = 10;

/// The chart's span, in minutes.
pub const MINUTES: usize = 60;

/// Most results whose creation time one read looks up (newest first): the
/// first look at a namespace of 100,000 results is spread over reads.
const TIMES_PER_READ: usize = 5000;

/// Most results one read inspects for failures (newest first).
const INSPECTED_PER_READ: usize = 500;

/// One read of the cluster, as the page shows it.
#[derive(Debug, Clone)]
pub struct Glance {
    /// When it was read (unix ms).
    pub at_ms: u64,
    /// What `zkmw status --json` shows.
    pub cluster: ClusterView,
    /// What `zkmw tasks --json` shows.
    pub tasks: Vec<TaskRow>,
    /// The running tasks, newest first, with their progress.
    pub running: Vec<TaskRow>,
    /// The most recent failures seen, newest first.
    pub failures: Vec<Failure>,
    /// Results stored in each of the last [`MINUTES`] minutes, oldest first.
    pub per_minute: Vec<u32>,
}

/// A task that failed, or whose job exited non-zero or died of a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The task id.
    pub task: String,
    /// The worker that ran it last.
    pub worker: Option<String>,
    /// When it finished (unix ms).
    pub finished_ms: Option<u64>,
    /// Why: `exit 3`, `signal 9`, `timed out`, ...
    pub why: String,
    /// The shell command.
    pub job: Option<String>,
    /// The last line of its stderr, unless output is kept off the page.
    pub stderr: Option<String>,
}

/// The last read, and why there is no fresher one (ZooKeeper unreachable).
#[derive(Debug, Clone, Default)]
pub struct Sight {
    /// The last successful read, if any.
    pub glance: Option<Arc<Glance>>,
    /// Why it is not fresh, if it is not.
    pub trouble: Option<String>,
}

/// The master's view of the cluster for the page, read on demand.
pub struct Glances {
    layout: Layout,
    obs: Obs,
    /// Keep job output (stderr lines) off the page.
    no_output: bool,
    memory: Mutex<Memory>,
}

/// What is kept between reads.
#[derive(Default)]
struct Memory {
    last: Option<(Instant, Arc<Glance>)>,
    trouble: Option<String>,
    /// Each listed result whose time was read.
    stored: HashMap<String, Stored>,
    /// The newest failures, by when they finished and their sequence.
    failures: BTreeMap<(u64, i64), Failure>,
}

/// What is known of one result.
#[derive(Debug, Clone, Copy)]
struct Stored {
    /// When it was stored (unix ms).
    at_ms: u64,
    /// Whether it was read to see if it is a failure.
    inspected: bool,
}

impl Glances {
    /// The page's reads of the namespace `layout`, through `obs`'s session.
    pub fn new(layout: Layout, obs: Obs, no_output: bool) -> Glances {
        Glances {
            layout,
            obs,
            no_output,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// The cluster as of at most a second ago, read now if need be (one
    /// read at a time: others wait for it and share it).
    pub fn sight(&self) -> Sight {
        let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, glance)) = &memory.last
            && at.elapsed() < FRESH
        {
            return Sight {
                glance: Some(glance.clone()),
                trouble: memory.trouble.clone(),
            };
        }
        let read = match self.obs.session() {
            Some(zk) if zk.is_connected() => self.read(&zk, &mut memory),
            _ => Err("not connected to ZooKeeper".to_string()),
        };
        match read {
            Ok(glance) => {
                memory.last = Some((Instant::now(), Arc::new(glance)));
                memory.trouble = None;
            }
            Err(why) => memory.trouble = Some(why),
        }
        Sight {
            glance: memory.last.as_ref().map(|(_, g)| g.clone()),
            trouble: memory.trouble.clone(),
        }
    }

    /// One read of the cluster, the newest tasks, the running ones, the
    /// times of the results not seen before, and the results of the last
    /// hour not inspected yet.
    fn read(&self, zk: &Zk, memory: &mut Memory) -> Result<Glance, String> {
        let layout = &self.layout;
        let read = status::cluster_read(zk, layout).map_err(|e| e.to_string())?;
        let newest = Query {
            limit: TASKS,
            ..Query::default()
        };
        let tasks = status::task_rows(zk, layout, &read, &newest).map_err(|e| e.to_string())?;
        let running = Query {
            state: Some(TaskState::Running),
            limit: TASKS,
            ..Query::default()
        };
        let running = status::task_rows(zk, layout, &read, &running).map_err(|e| e.to_string())?;
        let now_ms = model::now_ms();
        self.note_stored(zk, &read.finished, &mut memory.stored);
        self.inspect(zk, memory, now_ms.saturating_sub(MINUTES as u64 * 60_000));
        Ok(Glance {
            at_ms: now_ms,
            cluster: status::cluster_view(read),
            tasks,
            running,
            failures: memory.failures.values().rev().cloned().collect(),
            per_minute: per_minute(memory.stored.values().map(|s| s.at_ms), now_ms),
        })
    }

    /// Learns when the results not seen before were stored (newest first,
    /// at most [`TIMES_PER_READ`]), and forgets those purged since.
    fn note_stored(
        &self,
        zk: &Zk,
        listed: &BTreeSet<String>,
        stored: &mut HashMap<String, Stored>,
    ) {
        stored.retain(|name, _| listed.contains(name));
        let new: Vec<&String> = listed
            .iter()
            .rev()
            .filter(|name| !stored.contains_key(*name))
            .take(TIMES_PER_READ)
            .collect();
        let paths: Vec<String> = new.iter().map(|t| self.layout.status_task(t)).collect();
        for (name, stat) in new.into_iter().zip(zk.exists_many(&paths)) {
            if let Ok(Some(stat)) = stat {
                let at_ms = stat.ctime_ms.max(0) as u64;
                let inspected = false;
                stored.insert(name.clone(), Stored { at_ms, inspected });
            }
        }
    }

    /// Reads the results stored since `since_ms` not inspected yet (newest
    /// first, at most [`INSPECTED_PER_READ`]), keeping the newest failures.
    fn inspect(&self, zk: &Zk, memory: &mut Memory, since_ms: u64) {
        let mut due: Vec<(i64, &String)> = memory
            .stored
            .iter()
            .filter(|(_, s)| !s.inspected && s.at_ms >= since_ms)
            .map(|(name, _)| (task_sequence(name).unwrap_or(0), name))
            .collect();
        due.sort_unstable_by(|a, b| b.cmp(a));
        let names: Vec<String> = due
            .into_iter()
            .take(INSPECTED_PER_READ)
            .map(|(_, name)| name.clone())
            .collect();
        let paths: Vec<String> = names.iter().map(|t| self.layout.status_task(t)).collect();
        for (name, got) in names.iter().zip(zk.get_many(&paths)) {
            if got.is_err() {
                continue;
            }
            if let Some(s) = memory.stored.get_mut(name) {
                s.inspected = true;
            }
            let result = got
                .ok()
                .flatten()
                .and_then(|(data, _)| model::decode(&data).ok());
            let view = result.map(|r| status::finished_view(name, r));
            if let Some(f) = view.and_then(|v| failure(&v, self.no_output)) {
                let key = (f.finished_ms.unwrap_or(0), task_sequence(name).unwrap_or(0));
                memory.failures.insert(key, f);
            }
        }
        while memory.failures.len() > FAILURES {
            memory.failures.pop_first();
        }
    }
}

/// The failure a finished task's view shows, if it is one; its stderr's
/// last line unless `no_output`.
pub fn failure(view: &TaskView, no_output: bool) -> Option<Failure> {
    let result = view.result.as_ref()?;
    let why = match (view.state, &result.reason, result.exit_code, result.signal) {
        (TaskState::Failed, Some(reason), ..) => reason.to_string(),
        (TaskState::Failed, None, ..) => "failed".to_string(),
        (_, None, Some(code), _) if code != 0 => format!("exit {code}"),
        (_, None, None, Some(signal)) => format!("signal {signal}"),
        _ => return None,
    };
    let stderr = result
        .stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .filter(|_| !no_output)
        .map(|l| cut(l.trim(), 200));
    Some(Failure {
        task: view.task.clone(),
        worker: view.worker.clone(),
        finished_ms: result.finished_ms,
        why,
        job: view.job.as_deref().map(|j| cut(j, 200)),
        stderr,
    })
}

/// `text` cut to at most `max` bytes (at a character boundary), with `…`
/// when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    format!("{}…", &text[..text.floor_char_boundary(max)])
}

/// How many of the times `stored` (unix ms) fall in each of the last
/// [`MINUTES`] minutes up to `now_ms`, oldest first.
pub fn per_minute(stored: impl Iterator<Item = u64>, now_ms: u64) -> Vec<u32> {
    let mut counts = vec![0u32; MINUTES];
    for at in stored.filter(|at| *at <= now_ms) {
        let ago = ((now_ms - at) / 60_000) as usize;
        if ago < MINUTES {
            counts[MINUTES - 1 - ago] += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FailReason, TaskResult};

    fn view(result: TaskResult) -> TaskView {
        crate::status::finished_view("task-0000000003", result)
    }

    fn result(exit_code: Option<i32>, reason: Option<FailReason>) -> TaskResult {
        let mut r = TaskResult::failed(None, FailReason::Killed, Some("w1"), 9_000);
        r.exit_code = exit_code;
        r.reason = reason.clone();
        r.state = if reason.is_some() {
            model::FinalState::Failed
        } else {
            model::FinalState::Done
        };
        r.job = "make deploy".into();
        r.stderr = "step 1\nconnection refused\n\n".into();
        r
    }

    #[test]
    fn a_failure_says_why_and_its_last_stderr_line_unless_told_not_to() {
        let exited = failure(&view(result(Some(3), None)), false).expect("a failure");
        assert_eq!(exited.why, "exit 3");
        assert_eq!(exited.stderr.as_deref(), Some("connection refused"));
        assert_eq!(exited.job.as_deref(), Some("make deploy"));
        let hidden = failure(&view(result(Some(3), None)), true).expect("a failure");
        assert_eq!(hidden.stderr, None);
        let timed_out = failure(&view(result(None, Some(FailReason::TimedOut))), false);
        assert_eq!(timed_out.map(|f| f.why), Some("timed out".to_string()));
        assert_eq!(failure(&view(result(Some(0), None)), false), None);
    }

    #[test]
    fn results_are_counted_in_the_minute_they_were_stored() {
        let now = 10 * 3_600_000;
        let times = [
            now,
            now - 59_999,
            now - 60_000,
            now - 3_599_999,
            now - 3_600_000,
            now + 5,
        ];
        let counts = per_minute(times.into_iter(), now);
        assert_eq!(counts.len(), MINUTES);
        assert_eq!(counts[MINUTES - 1], 2);
        assert_eq!(counts[MINUTES - 2], 1);
        assert_eq!(counts[0], 1);
        assert_eq!(counts.iter().sum::<u32>(), 4);
    }

    #[test]
    fn long_text_is_cut_at_a_character() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("ééé", 3), "é…");
    }
}
