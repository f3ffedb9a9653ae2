//! The JSON records stored in znodes, their size limits, and decoders that
//! never panic: nothing read from ZooKeeper is trusted to be well-formed.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::DeserializeOwned};

use crate::error::{EXIT_CANCELLED, EXIT_CANNOT_START, EXIT_TIMED_OUT, EXIT_ZKMW_FAILED};
use crate::layout::check_znode_name;

/// Largest record zkmw writes into one znode. ZooKeeper refuses packets of
/// 1 MiB (jute.maxbuffer) and more; this leaves room for the path and headers.
pub const MAX_NODE_BYTES: usize = 1_000_000;

/// A submitted task: stored in `/tasks/<t>`, copied into `/assign/<w>/<t>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The shell command, run as `sh -c JOB`.
    pub job: String,
    /// When `submit` stored it (unix ms).
    pub submitted_ms: u64,
    /// Kill the job after this long (ms); none means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// How many times a run interrupted by a lost worker is started again.
    pub retries: u32,
    /// How many runs have started so far (a worker's claim adds one).
    #[serde(default)]
    pub attempts: u32,
    /// The submitter's unique token: finds the task after an ambiguous create.
    pub token: String,
    /// Every run started so far, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// The lock it holds while it runs: tasks of one lock never run at
    /// the same time (`submit --lock`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// Its key: at most one task per key exists (`submit --unique`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<String>,
    /// How many times a run that ended badly (exited non-zero, timed out,
    /// could not start) is started again (`submit --retry-failed`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry_failed: u32,
    /// The wait before the first such re-run (ms); it doubles each time,
    /// up to [`MAX_RETRY_DELAY_MS`].
    #[serde(default, skip_serializing_if = "is_zero_ms")]
    pub retry_delay_ms: u64,
    /// How many such re-runs it had so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed_runs: u32,
    /// Not to be assigned before this time (unix ms): a re-run's delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    /// Labels a worker must have, all of them, to run it (`submit --on`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
}

/// The longest wait between two failed runs of a task (1 hour).
pub const MAX_RETRY_DELAY_MS: u64 = 3_600_000;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_ms(n: &u64) -> bool {
    *n == 0
}

impl Task {
    /// Whether a run that ended this way is started again, and when: the
    /// wait before re-run `k` (counting from 0) is `delay × 2^k`, capped.
    /// A cancelled run is never re-run.
    pub fn retry_after(&self, end: &AttemptEnd) -> Option<u64> {
        let bad = match end {
            AttemptEnd::Exited { code } => *code != 0,
            AttemptEnd::Failed { reason } => {
                matches!(reason, FailReason::TimedOut | FailReason::CouldNotStart(_))
            }
            _ => false,
        };
        if !bad || self.failed_runs >= self.retry_failed {
            return None;
        }
        let factor = 1u64 << self.failed_runs.min(40);
        Some(
            self.retry_delay_ms
                .saturating_mul(factor)
                .min(MAX_RETRY_DELAY_MS),
        )
    }

    /// The task with a new run started by `worker` at `now_ms` counted.
    pub fn started(mut self, worker: &str, now_ms: u64) -> Task {
        self.attempts += 1;
        self.history.push(Attempt {
            worker: worker.to_string(),
            started_ms: now_ms,
            ended_ms: None,
            end: None,
        });
        self
    }

    /// The task with its last run ended at `now_ms`, as `end` says.
    pub fn ended(mut self, end: AttemptEnd, now_ms: u64) -> Task {
        if let Some(last) = self.history.last_mut().filter(|a| a.end.is_none()) {
            last.ended_ms = Some(now_ms);
            last.end = Some(end);
        }
        self
    }
}

/// One run of a task: who ran it, when, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The worker that claimed it.
    pub worker: String,
    /// When the run started (unix ms).
    pub started_ms: u64,
    /// When it ended, once it did (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// How it ended, once it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<AttemptEnd>,
}

/// How one run of a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum AttemptEnd {
    /// The job exited with this code.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The job died of this signal.
    Signaled {
        /// The signal.
        signal: i32,
    },
    /// zkmw ended it: timed out, cancelled, could not start, killed.
    Failed {
        /// Why.
        reason: FailReason,
    },
    /// Its worker died or lost its session mid-run; the master took it back.
    Interrupted,
    /// Its worker stopped past its drain timeout and handed it back.
    HandedBack,
}

impl fmt::Display for AttemptEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttemptEnd::Exited { code } => write!(f, "exited {code}"),
            AttemptEnd::Signaled { signal } => write!(f, "killed by signal {signal}"),
            AttemptEnd::Failed { reason } => write!(f, "{reason}"),
            AttemptEnd::Interrupted => f.write_str("interrupted: worker lost"),
            AttemptEnd::HandedBack => f.write_str("interrupted: worker stopped, handed back"),
        }
    }
}

/// How a finished task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalState {
    /// The job ran and exited (with any exit code) or died of a signal.
    Done,
    /// zkmw could not get a result; `reason` says why.
    Failed,
}

/// A task's final result, stored once in `/status/<t>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// done or failed.
    pub state: FinalState,
    /// The job's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that killed the job, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Why the task failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailReason>,
    /// Captured stdout, cut at the worker's cap; invalid UTF-8 replaced by U+FFFD.
    #[serde(default)]
    pub stdout: String,
    /// Captured stderr, same rules as stdout.
    #[serde(default)]
    pub stderr: String,
    /// True when stdout was longer than the cap.
    #[serde(default)]
    pub stdout_truncated: bool,
    /// True when stderr was longer than the cap.
    #[serde(default)]
    pub stderr_truncated: bool,
    /// The worker that ran (or last held) the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Runs started, including the last one.
    #[serde(default)]
    pub attempts: u32,
    /// The job, for people reading status.
    #[serde(default)]
    pub job: String,
    /// The submitter's token, copied from the task.
    #[serde(default)]
    pub token: String,
    /// When the task was submitted (unix ms).
    #[serde(default)]
    pub submitted_ms: u64,
    /// When the last run started (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When the result was made (unix ms).
    #[serde(default)]
    pub finished_ms: u64,
    /// Every run, oldest first, the last one ended as this result says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// The task's lock, copied from the task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// The task's unique key, copied from the task: removed with the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<String>,
}

/// Why zkmw failed a task. Stored as the result's `reason` string, the
/// same strings zkmw has always written, so results of any version read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// The job ran past its `--timeout` and was killed.
    TimedOut,
    /// Every run was interrupted by a lost worker, past `--retries`.
    WorkerLost,
    /// The stored task could not be decoded.
    Malformed,
    /// The worker could not start the job's shell; the error.
    CouldNotStart(String),
    /// The worker killed the job and stored a result anyway.
    Killed,
    /// Stopped or removed by `zkmw cancel`.
    Cancelled,
    /// A reason this version does not know (kept as stored).
    Other(String),
}

/// Prefix of [`FailReason::CouldNotStart`]'s stored string.
const COULD_NOT_START: &str = "could not start: ";

impl FailReason {
    /// The exit code `submit --wait` ends with for a task failed this way.
    pub fn exit_code(&self) -> i32 {
        match self {
            FailReason::TimedOut => EXIT_TIMED_OUT,
            FailReason::CouldNotStart(_) => EXIT_CANNOT_START,
            FailReason::Cancelled => EXIT_CANCELLED,
            _ => EXIT_ZKMW_FAILED,
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::TimedOut => f.write_str("timed out"),
            FailReason::WorkerLost => f.write_str("worker lost"),
            FailReason::Malformed => f.write_str("malformed task"),
            FailReason::CouldNotStart(why) => write!(f, "{COULD_NOT_START}{why}"),
            FailReason::Killed => f.write_str("killed"),
            FailReason::Cancelled => f.write_str("cancelled"),
            FailReason::Other(text) => f.write_str(text),
        }
    }
}

impl From<&str> for FailReason {
    fn from(text: &str) -> Self {
        match text {
            "timed out" => FailReason::TimedOut,
            "worker lost" => FailReason::WorkerLost,
            "malformed task" => FailReason::Malformed,
            "killed" => FailReason::Killed,
            "cancelled" => FailReason::Cancelled,
            _ => match text.strip_prefix(COULD_NOT_START) {
                Some(why) => FailReason::CouldNotStart(why.to_string()),
                None => FailReason::Other(text.to_string()),
            },
        }
    }
}

impl Serialize for FailReason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FailReason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|text| FailReason::from(text.as_str()))
    }
}

impl TaskResult {
    /// A failed result made by zkmw itself for `task` (which may be unknown
    /// when the stored task could not be decoded), at `now_ms`.
    pub fn failed(
        task: Option<&Task>,
        reason: FailReason,
        worker: Option<&str>,
        now_ms: u64,
    ) -> TaskResult {
        // The last run (if any) ended this way.
        let end = match &reason {
            FailReason::WorkerLost => AttemptEnd::Interrupted,
            other => AttemptEnd::Failed {
                reason: other.clone(),
            },
        };
        TaskResult {
            state: FinalState::Failed,
            exit_code: None,
            signal: None,
            reason: Some(reason),
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            worker: worker.map(str::to_string),
            attempts: task.map_or(0, |t| t.attempts),
            job: task.map_or_else(String::new, |t| t.job.clone()),
            token: task.map_or_else(String::new, |t| t.token.clone()),
            submitted_ms: task.map_or(0, |t| t.submitted_ms),
            started_ms: None,
            finished_ms: now_ms,
            history: task.map_or_else(Vec::new, |t| t.clone().ended(end, now_ms).history),
            lock: task.and_then(|t| t.lock.clone()),
            unique: task.and_then(|t| t.unique.clone()),
        }
    }

    /// Cuts stdout and stderr (each keeps its beginning, and is marked
    /// truncated) until the encoded record takes at most `max` bytes: JSON
    /// escaping can make output six times larger. The job's copy is cut
    /// last, if even that is not enough. True if anything was cut.
    pub fn fit(&mut self, max: usize) -> bool {
        if encode(self).len() <= max {
            return false;
        }
        let out = std::mem::take(&mut self.stdout);
        let err = std::mem::take(&mut self.stderr);
        let (out_cut, err_cut) = (self.stdout_truncated, self.stderr_truncated);
        let keep = largest_fitting(out.len().max(err.len()), |limit| {
            self.stdout = prefix(&out, limit).to_string();
            self.stderr = prefix(&err, limit).to_string();
            encode(self).len() <= max
        });
        self.stdout = prefix(&out, keep).to_string();
        self.stderr = prefix(&err, keep).to_string();
        self.stdout_truncated = out_cut || self.stdout.len() < out.len();
        self.stderr_truncated = err_cut || self.stderr.len() < err.len();
        if encode(self).len() > max {
            let job = std::mem::take(&mut self.job);
            let keep = largest_fitting(job.len(), |limit| {
                self.job = prefix(&job, limit).to_string();
                encode(self).len() <= max
            });
            self.job = prefix(&job, keep).to_string();
        }
        true
    }

    /// The exit code `submit --wait` ends with for this result: the job's
    /// own code, 128 + the signal that killed it, or the failure's code.
    pub fn exit_code(&self) -> i32 {
        match (self.state, self.exit_code, self.signal, &self.reason) {
            (FinalState::Done, Some(code), _, _) => code,
            (FinalState::Done, None, Some(signal), _) => 128 + signal,
            (FinalState::Failed, _, _, Some(reason)) => reason.exit_code(),
            _ => EXIT_ZKMW_FAILED,
        }
    }
}

/// The largest `n` in `0..=upper` for which `fits(n)` holds, `fits` being
/// monotone (true up to some point, false after); 0 if none.
fn largest_fitting(upper: usize, mut fits: impl FnMut(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, upper);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The first `limit` bytes of `text` or fewer, cut at a character boundary.
fn prefix(text: &str, limit: usize) -> &str {
    &text[..text.floor_char_boundary(limit)]
}

/// What a live worker publishes in `/workers/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Host name of the worker's machine.
    pub host: String,
    /// Process id of the worker.
    pub pid: u32,
    /// Size of its thread pool: how many jobs it runs at once.
    pub threads: usize,
    /// When it registered (unix ms).
    pub started_ms: u64,
    /// The session timeout the server granted it (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout_ms: Option<u64>,
    /// The labels it advertises (`worker --label`): a task submitted with
    /// `--on` runs only on a worker that has all of its labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// How long after its claims vanish the master must wait before it
    /// runs those tasks again: by then the worker, if cut off from
    /// ZooKeeper, has killed the jobs (ms). Absent from workers before this
    /// was published; the master then assumes its own session timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerun_grace_ms: Option<u64>,
}

/// Why a worker that is not taking work is still around, in `/away/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Away {
    /// What it is doing: "draining" (stopping) or "paused" (its recent
    /// jobs could not start).
    pub why: String,
    /// Since when (unix ms).
    pub since_ms: u64,
    /// Until when, for a pause (unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// What it published in `/workers/<id>` while it took work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<WorkerInfo>,
}

/// What the active master publishes in /master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterInfo {
    /// The master's id (`--id`).
    pub id: String,
    /// Host name of its machine.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its ZooKeeper session, in hex.
    pub session: String,
    /// The fencing epoch it was elected under.
    pub epoch: i32,
}

/// A worker's claim on a task it is running, in `/running/<t>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    /// The worker running the task.
    pub worker: String,
    /// When this run started (unix ms).
    pub started_ms: u64,
    /// Which run this is (1 for the first).
    pub attempt: u32,
    /// The job's own report of how far it is, 0 to 100 (`zkmw progress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// The job's message with its progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_message: Option<String>,
}

/// Who holds a lock, in the ephemeral `/locks/<name>` its claim created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The task running with the lock.
    pub task: String,
    /// The worker running it.
    pub worker: String,
}

/// A request to cancel a task, in `/cancel/<t>`: the worker running it
/// stops it, the master fails it if it had not started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// Time between SIGTERM and SIGKILL for a running job (ms).
    pub grace_ms: u64,
    /// When it was asked (unix ms).
    pub requested_ms: u64,
}

/// What `/status` itself holds: the highest task sequence number whose
/// result retention ever deleted. `status TASK` tells by it a purged task
/// (at or below it) from an id never handed out (above it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeMark {
    /// The highest sequence number purged so far.
    pub purged_through: i64,
}

/// Encodes a record as JSON.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail: no maps with non-string
    // keys, no custom serializers.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decodes a record, describing what is wrong when the bytes are not one.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|err| format!("invalid record: {err}"))
}

/// Decodes a task and checks what serde cannot: a job to run.
pub fn decode_task(bytes: &[u8]) -> Result<Task, String> {
    let task: Task = decode(bytes)?;
    if task.job.trim().is_empty() {
        return Err("invalid record: empty job".into());
    }
    // The names a task carries become znode names: its lock (/locks/L), its
    // key (/unique/K), and with a lock its token (/lockq/L/<token>). One the
    // server would refuse would fail every step that names it, for good.
    let names = [
        ("lock", task.lock.as_deref()),
        ("unique key", task.unique.as_deref()),
        ("token", task.lock.as_ref().map(|_| task.token.as_str())),
    ];
    for (what, name) in names {
        if let Some(name) = name {
            check_znode_name(what, name).map_err(|why| format!("invalid record: {why}"))?;
        }
    }
    Ok(task)
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task {
            job: "echo hi".into(),
            submitted_ms: 1,
            timeout_ms: None,
            retries: 2,
            attempts: 0,
            token: "t".into(),
            history: Vec::new(),
            ..Default::default()
        }
    }

    /// `--retry-failed N`: N re-runs of a failed run at most, each wait
    /// twice the one before; an exit code of 0 or a cancel is never re-run.
    #[test]
    fn a_failed_run_is_retried_n_times_with_a_doubling_delay() {
        let failed = AttemptEnd::Exited { code: 1 };
        let mut t = Task {
            retry_failed: 3,
            retry_delay_ms: 100,
            ..task()
        };
        let mut waits = Vec::new();
        while let Some(wait) = t.retry_after(&failed) {
            waits.push(wait);
            t.failed_runs += 1;
        }
        assert_eq!(waits, [100, 200, 400]);
        t.failed_runs = 0;
        assert_eq!(t.retry_after(&AttemptEnd::Exited { code: 0 }), None);
        let cancelled = AttemptEnd::Failed {
            reason: FailReason::Cancelled,
        };
        assert_eq!(t.retry_after(&cancelled), None);
    }

    #[test]
    fn round_trips_records() {
        let t = task();
        assert_eq!(decode_task(&encode(&t)), Ok(t.clone()));
        let r = TaskResult::failed(Some(&t), FailReason::WorkerLost, Some("w1"), 5);
        assert_eq!(decode::<TaskResult>(&encode(&r)), Ok(r));
    }

    /// Reasons are stored as the strings every earlier version wrote, and
    /// a string this version does not know is kept as it is.
    #[test]
    fn fail_reasons_keep_their_stored_strings() {
        let cases = [
            (FailReason::TimedOut, "timed out", EXIT_TIMED_OUT),
            (FailReason::WorkerLost, "worker lost", EXIT_ZKMW_FAILED),
            (FailReason::Malformed, "malformed task", EXIT_ZKMW_FAILED),
            (
                FailReason::CouldNotStart("sh: not found".into()),
                "could not start: sh: not found",
                EXIT_CANNOT_START,
            ),
            (FailReason::Killed, "killed", EXIT_ZKMW_FAILED),
            (FailReason::Cancelled, "cancelled", EXIT_CANCELLED),
            (FailReason::Other("eaten".into()), "eaten", EXIT_ZKMW_FAILED),
        ];
        for (reason, stored, code) in cases {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("{stored:?}"));
            assert_eq!(serde_json::from_str::<FailReason>(&json).unwrap(), reason);
            let result = TaskResult::failed(None, reason, None, 1);
            assert_eq!(result.exit_code(), code, "{stored}");
        }
    }

    /// Output of control bytes grows sixfold in JSON: the record is cut
    /// until it fits, keeping the beginnings, marked truncated.
    #[test]
    fn a_result_too_large_once_encoded_is_cut_to_fit() {
        let mut r = TaskResult::failed(None, FailReason::Killed, None, 1);
        r.stdout = "\u{1}".repeat(400_000);
        r.stderr = "é".repeat(100_000);
        r.job = "x".repeat(10);
        assert!(encode(&r).len() > 2_000_000);
        assert!(r.fit(MAX_NODE_BYTES));
        let size = encode(&r).len();
        assert!(
            size <= MAX_NODE_BYTES && size > MAX_NODE_BYTES - 100,
            "{size}"
        );
        assert!(r.stdout_truncated && r.stderr_truncated);
        assert!(r.stdout.len() < 400_000 && !r.stdout.is_empty());
        assert_eq!(r.job, "x".repeat(10));
        // Nothing to cut when it fits.
        let mut small = TaskResult::failed(None, FailReason::Killed, None, 1);
        small.stdout = "hi".into();
        assert!(!small.fit(MAX_NODE_BYTES));
        assert!(!small.stdout_truncated);
        // A record whose job alone is too large loses its copy of the job.
        let mut huge = TaskResult::failed(None, FailReason::Killed, None, 1);
        huge.job = "\u{1}".repeat(300_000);
        huge.stdout = "out".into();
        assert!(huge.fit(MAX_NODE_BYTES));
        assert!(encode(&huge).len() <= MAX_NODE_BYTES);
        assert!(huge.stdout.is_empty() && huge.stdout_truncated);
    }

    #[test]
    fn exit_codes_of_finished_jobs() {
        let mut r = TaskResult::failed(None, FailReason::Killed, None, 1);
        r.state = FinalState::Done;
        r.reason = None;
        r.exit_code = Some(3);
        assert_eq!(r.exit_code(), 3);
        r.exit_code = None;
        r.signal = Some(9);
        assert_eq!(r.exit_code(), 137);
        r.signal = None;
        assert_eq!(r.exit_code(), EXIT_ZKMW_FAILED);
    }

    #[test]
    fn refuses_garbage_without_panicking() {
        let samples: [&[u8]; 7] = [
            b"",
            b"{",
            b"null",
            b"[1,2]",
            b"{\"job\":\"\",\"submitted_ms\":1,\"retries\":0,\"token\":\"x\"}",
            b"\xff\xfe\x00",
            b"{\"job\":5}",
        ];
        for bytes in samples {
            assert!(decode_task(bytes).is_err(), "{bytes:?}");
            assert!(decode::<TaskResult>(bytes).is_err() || bytes.is_empty());
            assert!(decode::<WorkerInfo>(bytes).is_err());
        }
    }

    /// Every decoder, on every prefix and every one-byte corruption of
    /// every kind of record: an error or a value, never a panic.
    #[test]
    fn decoders_survive_every_prefix_and_byte_flip() {
        let records = [
            encode(&TaskResult::failed(
                Some(&task()),
                FailReason::TimedOut,
                Some("w"),
                1,
            )),
            encode(&task()),
            encode(&WorkerInfo {
                host: "h".into(),
                pid: 1,
                threads: 4,
                started_ms: 2,
                session_timeout_ms: Some(5000),
                rerun_grace_ms: Some(13000),
                labels: Vec::new(),
            }),
            encode(&MasterInfo {
                id: "m".into(),
                host: "h".into(),
                pid: 1,
                session: "0x1".into(),
                epoch: 3,
            }),
            encode(&Claim {
                worker: "w".into(),
                started_ms: 1,
                attempt: 1,
                progress: None,
                progress_message: None,
            }),
            encode(&PurgeMark { purged_through: 42 }),
        ];
        for bytes in &records {
            for cut in 0..bytes.len() {
                for flip in [0x01, 0x5a, 0x80, 0xff] {
                    let mut flipped = bytes.clone();
                    flipped[cut] ^= flip;
                    for sample in [&bytes[..cut], &flipped[..]] {
                        let _ = decode::<TaskResult>(sample);
                        let _ = decode_task(sample);
                        let _ = decode::<WorkerInfo>(sample);
                        let _ = decode::<MasterInfo>(sample);
                        let _ = decode::<Claim>(sample);
                        let _ = decode::<PurgeMark>(sample);
                    }
                }
            }
        }
    }
}
