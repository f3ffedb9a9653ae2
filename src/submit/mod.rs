//! The client's commands. `zkmw submit`: store a task under /tasks
//! (exactly once: `store.rs`), then optionally wait for its result and pass
//! the job's output and exit code through (`wait.rs`); `--stdin` stores many
//! (`lines.rs`). `zkmw wait TASK` is the second half alone. `zkmw cancel`
//! stops tasks (`cancel.rs`).

mod cancel;
mod guarded;
mod lines;
mod live;
mod store;
mod wait;

pub use store::find_by_tokens;

use std::time::{Duration, Instant};

use crate::error::Error;
use crate::layout::{Layout, is_task_name};
use crate::model::{self, MAX_NODE_BYTES, Task};
use crate::settings::{self, Key};
use crate::shutdown::{self, Shutdown};
use crate::zk::{ConnectOptions, SessionEvent, WatchEvent, Zk};
use crate::{locate, session};
use wait::{WaitEnd, Waiting};

/// What to submit and how.
#[derive(Debug, Clone)]
pub struct SubmitConfig {
    /// Where ZooKeeper is and how to talk to it.
    pub connect: ConnectOptions,
    /// The namespace.
    pub layout: Layout,
    /// The shell command; `None` reads one job per line from stdin.
    pub job: Option<String>,
    /// Wait for the result.
    pub wait: bool,
    /// Give up waiting after this long.
    pub wait_timeout: Option<Duration>,
    /// The job's own time limit.
    pub timeout: Option<Duration>,
    /// Re-runs allowed after lost workers.
    pub retries: u32,
    /// Refuse to queue beyond this many pending tasks.
    pub max_pending: usize,
    /// Options of the task itself: its lock, key, re-runs and labels.
    pub options: TaskOptions,
    /// What the process was given of the settings `submit` reads: the
    /// three above come from these, else the cluster's, else the defaults
    /// (see [`SubmitConfig::settled`]).
    pub given: settings::Given,
}

/// What a task asks beyond its job (each from a `submit` flag).
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    /// `--lock`: never run at the same time as another task of this lock.
    pub lock: Option<String>,
    /// `--skip-if-locked`: store nothing while a task of the lock is in flight.
    pub skip_if_locked: bool,
    /// `--unique`: at most one task per key.
    pub unique: Option<String>,
    /// `--retry-failed`: re-runs of runs that ended badly.
    pub retry_failed: u32,
    /// `--retry-delay`: the first wait before such a re-run.
    pub retry_delay: Duration,
    /// `--on`: the labels a worker needs to run it.
    pub on: Vec<String>,
}

impl SubmitConfig {
    /// This configuration with `timeout`, `retries` and `max_pending` taken
    /// from what the process was given, else from `cluster`, else from the
    /// defaults.
    pub fn settled(&self, cluster: &settings::Values) -> SubmitConfig {
        let value = |key| settings::pick(key, &self.given, cluster).0;
        let count = |key| value(key).and_then(settings::Value::count).unwrap_or(0);
        SubmitConfig {
            timeout: value(Key::Timeout).and_then(settings::Value::duration),
            retries: u32::try_from(count(Key::Retries)).unwrap_or(u32::MAX),
            max_pending: usize::try_from(count(Key::MaxPending)).unwrap_or(usize::MAX),
            ..self.clone()
        }
    }
}

/// Reads the cluster settings once, on the session `zk` just opened, and
/// settles `cfg` with them.
fn settle(zk: &Zk, cfg: &SubmitConfig) -> Result<SubmitConfig, Error> {
    let cluster = settings::read_cluster(zk, &cfg.layout)
        .map_err(|err| Error::zk(format!("reading {}", cfg.layout.config()), err))?;
    Ok(cfg.settled(&cluster))
}

/// The longest job, in bytes: the worker passes it as one argument of
/// `sh -c JOB`, and Linux refuses an argument of more than 131072 bytes
/// counting its terminating NUL (MAX_ARG_STRLEN, 32 pages of 4 KiB) with
/// "Argument list too long".
pub const MAX_JOB_BYTES: usize = 131_071;

/// A message to a waiting command: something may have changed, or stop.
#[derive(Debug)]
pub enum Wake {
    /// The watched result node changed.
    Watch,
    /// The session changed.
    Session,
    /// SIGINT or SIGTERM.
    Stop(Shutdown),
}

impl Wake {
    /// The stop request, if this is one.
    fn stop(self) -> Option<Shutdown> {
        match self {
            Wake::Stop(stop) => Some(stop),
            _ => None,
        }
    }
}

impl From<WatchEvent> for Wake {
    fn from(_: WatchEvent) -> Self {
        Wake::Watch
    }
}

impl From<SessionEvent> for Wake {
    fn from(_: SessionEvent) -> Self {
        Wake::Session
    }
}

impl From<Shutdown> for Wake {
    fn from(stop: Shutdown) -> Self {
        Wake::Stop(stop)
    }
}

/// Submits the task(s); returns the process exit code.
pub fn run(cfg: &SubmitConfig) -> Result<i32, Error> {
    let started = Instant::now();
    // Signals become messages from here on: once the task is stored, a
    // Ctrl-C must still tell the user its id.
    let (tx, rx) = crossbeam_channel::unbounded();
    shutdown::forward_signals(tx.clone());
    let Some(job) = &cfg.job else {
        return lines::submit_lines(cfg, std::io::stdin().lock(), &rx);
    };
    // Refused input is refused before connecting.
    check_task(&new_task(cfg, job))?;
    let zk = session::connect(&cfg.connect)?;
    let settled = settle(&zk, cfg).and_then(|cfg| {
        let task = new_task(&cfg, job);
        let data = check_task(&task)?;
        Ok((cfg, task, data))
    });
    let (cfg, task, data) = match settled {
        Ok(settled) => settled,
        Err(err) => {
            zk.close(session::CLOSE_WAIT);
            return Err(err);
        }
    };
    let cfg = &cfg;
    let (zk, name) = match store_one(zk, cfg, &task, data)? {
        (zk, Ok(name)) => (zk, name),
        (zk, Err(code)) => {
            zk.close(session::CLOSE_WAIT);
            return Ok(code);
        }
    };
    if !cfg.wait {
        let printed = crate::output::line(&name, Some(&format!("{name} was stored")));
        zk.close(session::CLOSE_WAIT);
        printed?;
        return Ok(rx
            .try_iter()
            .find_map(Wake::stop)
            .map_or(0, |s| s.exit_code()));
    }
    zk.forward_session_events(tx.clone());
    let waiting = Waiting {
        connect: &cfg.connect,
        layout: &cfg.layout,
        task: &name,
        deadline: cfg.wait_timeout.map(|d| started + d),
        rx: &rx,
        tx: &tx,
    };
    finish(waiting.wait(Some(zk), started), &name)
}

/// Stores one task: plainly, or with its lock queue and key (`guarded.rs`).
/// `Ok(name)` for the task to go on with (the new one, or the one that has
/// its key already); `Err(code)` when nothing was stored and the command
/// ends with that exit code (the lock is held, with `--skip-if-locked`).
fn store_one(
    zk: Zk,
    cfg: &SubmitConfig,
    task: &Task,
    data: Vec<u8>,
) -> Result<(Zk, Result<String, i32>), Error> {
    if task.lock.is_none() && task.unique.is_none() {
        let (zk, names) = store::store(zk, cfg, std::slice::from_ref(task), &[data])?;
        return Ok((zk, Ok(names.into_iter().next().unwrap_or_default())));
    }
    let mut zk = zk;
    let skip = cfg.options.skip_if_locked;
    let stored = guarded::store_guarded(&mut zk, cfg, task, &data, skip)?;
    let lock = task.lock.as_deref().unwrap_or_default();
    let key = task.unique.as_deref().unwrap_or_default();
    let outcome = match stored {
        guarded::Stored::New(name) => Ok(name),
        guarded::Stored::Existing(name) => {
            eprintln!(
                "zkmw: key '{key}' belongs to {name} already: nothing stored, going on with it"
            );
            Ok(name)
        }
        guarded::Stored::Locked(holders) => {
            let by = if holders.is_empty() {
                "a task being stored".to_string()
            } else {
                holders.join(", ")
            };
            eprintln!(
                "zkmw: lock '{lock}' is held by {by} (pending, assigned or running): nothing stored (--skip-if-locked)"
            );
            Err(crate::error::EXIT_LOCKED)
        }
    };
    Ok((zk, outcome))
}

/// `zkmw wait TASK`: waits for a stored task as `submit --wait` does.
///
/// Notable errors: [`Error::NoSuchTask`] when the namespace holds no task
/// of that id.
pub fn wait_for(
    connect: &ConnectOptions,
    layout: &Layout,
    task: &str,
    wait_timeout: Option<Duration>,
) -> Result<i32, Error> {
    let started = Instant::now();
    if !is_task_name(task) {
        return Err(Error::BadInput(format!(
            "'{task}' is not a task id (expected task-NNNNNNNNNN)"
        )));
    }
    let (tx, rx) = crossbeam_channel::unbounded();
    shutdown::forward_signals(tx.clone());
    let zk = session::connect(connect)?;
    let looking = |err| Error::zk(format!("looking for {task}"), err);
    if locate::find(&zk, layout, task).map_err(looking)?.is_none() {
        let why = locate::missing(&zk, layout, task).map_err(looking);
        zk.close(session::CLOSE_WAIT);
        return Err(Error::NoSuchTask {
            task: task.to_string(),
            why: why?,
        });
    }
    zk.forward_session_events(tx.clone());
    let waiting = Waiting {
        connect,
        layout,
        task,
        deadline: wait_timeout.map(|d| started + d),
        rx: &rx,
        tx: &tx,
    };
    finish(waiting.wait(Some(zk), started), task)
}

/// `zkmw cancel TASK...`: cancels each task (see `cancel.rs`), printing a
/// line for each; with `wait`, waits for the running ones to end.
pub fn cancel_tasks(
    connect: &ConnectOptions,
    layout: &Layout,
    tasks: &[String],
    grace: Duration,
    wait_timeout: Option<Duration>,
    wait: bool,
) -> Result<i32, Error> {
    let started = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded();
    shutdown::forward_signals(tx.clone());
    let zk = session::connect(connect)?;
    let (asked, mut code) = ask_cancels(&zk, layout, tasks, grace)?;
    if !wait || asked.is_empty() {
        zk.close(session::CLOSE_WAIT);
        return Ok(code);
    }
    zk.forward_session_events(tx.clone());
    let mut zk = Some(zk);
    for task in &asked {
        let waiting = Waiting {
            connect,
            layout,
            task,
            deadline: wait_timeout.map(|d| started + d),
            rx: &rx,
            tx: &tx,
        };
        let Some(live) = zk.take() else { break };
        let (next, ended) = cancel::wait_for_end(&waiting, live);
        zk = next;
        match ended {
            Ok(true) => crate::output::line(&format!("{task} cancelled"), None)?,
            Ok(false) => code = code.max(crate::error::EXIT_ZKMW_FAILED),
            Err(err) => return Err(err),
        }
    }
    if let Some(zk) = zk {
        zk.close(session::CLOSE_WAIT);
    }
    Ok(code)
}

/// Cancels each of `tasks`, printing a line for each (an error on stderr);
/// answers the running ones, whose workers were asked to stop them, and
/// the exit code so far.
fn ask_cancels(
    zk: &Zk,
    layout: &Layout,
    tasks: &[String],
    grace: Duration,
) -> Result<(Vec<String>, i32), Error> {
    let mut code = 0;
    let mut asked = Vec::new();
    for task in tasks {
        let line = match cancel::cancel(zk, layout, task, grace) {
            Ok(cancel::Cancelled::BeforeStart) => format!("{task} cancelled (it had not started)"),
            Ok(cancel::Cancelled::Asked { worker }) => {
                asked.push(task.clone());
                format!(
                    "{task} cancel asked of {worker}, which stops it (SIGTERM, then SIGKILL after {} s)",
                    grace.as_secs_f64()
                )
            }
            Err(err) => {
                eprintln!("zkmw: {err}");
                code = code.max(err.exit_code());
                continue;
            }
        };
        crate::output::line(&line, None)?;
    }
    Ok((asked, code))
}

/// Closes the session and tells the user how the wait ended.
fn finish((zk, end): (Option<Zk>, WaitEnd), task: &str) -> Result<i32, Error> {
    if let Some(zk) = zk {
        zk.close(session::CLOSE_WAIT);
    }
    wait::report(task, end)
}

fn new_task(cfg: &SubmitConfig, job: &str) -> Task {
    Task {
        job: job.to_string(),
        submitted_ms: model::now_ms(),
        timeout_ms: cfg.timeout.map(|d| d.as_millis().max(1) as u64),
        retries: cfg.retries,
        attempts: 0,
        token: new_token(),
        history: Vec::new(),
        lock: cfg.options.lock.clone(),
        unique: cfg.options.unique.clone(),
        retry_failed: cfg.options.retry_failed,
        retry_delay_ms: cfg.options.retry_delay.as_millis() as u64,
        failed_runs: 0,
        not_before_ms: None,
        on: cfg.options.on.clone(),
    }
}

/// Refuses what cannot become a task, or could not be started as one,
/// before anything is sent; returns the task's record.
pub fn check_task(task: &Task) -> Result<Vec<u8>, Error> {
    check_job(&task.job).map_err(Error::BadInput)?;
    let data = model::encode(task);
    if data.len() > MAX_NODE_BYTES {
        return Err(Error::BadInput(format!(
            "the job is too large: {} bytes stored, the limit is {MAX_NODE_BYTES} (ZooKeeper's znode limit is 1 MiB); put the script in a file and submit a command that runs it",
            data.len()
        )));
    }
    Ok(data)
}

/// Why `job` cannot run as `sh -c JOB` on a worker, if it cannot.
fn check_job(job: &str) -> Result<(), String> {
    if job.trim().is_empty() {
        return Err("the job is empty: give a shell command, e.g. zkmw submit 'echo hi'".into());
    }
    if let Some(at) = job.find('\0') {
        return Err(format!(
            "the job has a NUL byte at byte {at}: no program can be given one in an argument"
        ));
    }
    if job.len() > MAX_JOB_BYTES {
        return Err(format!(
            "the job is {} bytes; a job can be at most {MAX_JOB_BYTES} bytes (Linux's limit on one argument): put the script in a file and submit a command that runs it",
            job.len()
        ));
    }
    Ok(())
}

/// A random 128-bit token, in hex.
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(job: &str) -> Task {
        Task {
            job: job.to_string(),
            submitted_ms: 1,
            timeout_ms: None,
            retries: 2,
            attempts: 0,
            token: new_token(),
            history: Vec::new(),
            ..Default::default()
        }
    }

    fn refusal(job: &str) -> String {
        match check_task(&task(job)) {
            Err(Error::BadInput(why)) => why,
            other => panic!("{} bytes: expected a refusal, got {other:?}", job.len()),
        }
    }

    #[test]
    fn a_job_is_at_most_one_argument_long() {
        assert!(check_task(&task(&"x".repeat(MAX_JOB_BYTES))).is_ok());
        // Each control character is a 6-byte JSON escape: still one record.
        assert!(check_task(&task(&"\u{1}".repeat(MAX_JOB_BYTES))).is_ok());
        let why = refusal(&"x".repeat(MAX_JOB_BYTES + 1));
        assert!(
            why.contains("the job is 131072 bytes") && why.contains("at most 131071 bytes"),
            "{why}"
        );
    }

    #[test]
    fn a_job_with_a_nul_byte_is_refused() {
        let why = refusal("echo a\0b");
        assert!(why.contains("NUL byte at byte 6"), "{why}");
    }

    #[test]
    fn an_empty_job_is_refused() {
        assert!(refusal(" \t").contains("the job is empty"));
    }
}
