//! `zkmw submit`: store a task under /tasks, then optionally wait for its
//! result and pass the job's output and exit code through.
//!
//! The create is "protected": the task carries a random token, and when the
//! create's outcome is unknown (connection lost, deadline hit) submit looks
//! for the token among the tasks created since (their sequence numbers are
//! bounded below by /tasks' child version read in the same round trip)
//! before it tries again. So a task is neither lost nor stored twice.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, warn};

use crate::error::Error;
use crate::layout::{Layout, task_sequence};
use crate::model::{self, MAX_NODE_BYTES, Task, TaskResult};
use crate::session;
use crate::zk::{ConnectOptions, SessionEvent, WatchEvent, Zk, ZkError};

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
}

/// How many tasks of a `--stdin` submission are in flight at once.
const BATCH: usize = 512;

/// The longest job, in bytes: the worker passes it as one argument of
/// `sh -c JOB`, and Linux refuses an argument of more than 131072 bytes
/// counting its terminating NUL (MAX_ARG_STRLEN, 32 pages of 4 KiB) with
/// "Argument list too long".
pub const MAX_JOB_BYTES: usize = 131_071;

/// Submits the task(s); returns the process exit code.
pub fn run(cfg: &SubmitConfig) -> Result<i32, Error> {
    let started = Instant::now();
    let Some(job) = &cfg.job else {
        return submit_lines(cfg, std::io::stdin().lock());
    };
    let task = new_task(cfg, job);
    let data = check_task(&task)?;
    let zk = session::connect(&cfg.connect)?;
    let (zk, names) = store(zk, cfg, &[task], &[data])?;
    let name = names.into_iter().next().unwrap_or_default();
    if !cfg.wait {
        println!("{name}");
        return Ok(0);
    }
    let deadline = cfg.wait_timeout.map(|d| started + d);
    match wait_for_result(zk, cfg, &name, deadline)? {
        Some(result) => Ok(print_result(&name, &result)),
        None => Err(Error::WaitTimedOut {
            task: name,
            secs: started.elapsed().as_secs_f64(),
        }),
    }
}

fn new_task(cfg: &SubmitConfig, job: &str) -> Task {
    Task {
        job: job.to_string(),
        submitted_ms: model::now_ms(),
        timeout_ms: cfg.timeout.map(|d| d.as_millis().max(1) as u64),
        retries: cfg.retries,
        attempts: 0,
        token: new_token(),
    }
}

/// `--stdin`: one job per line, stored [`BATCH`] at a time with the creates
/// pipelined, ids printed in input order. Blank lines are skipped. At the
/// first broken line, the jobs before it are stored, and the line is
/// reported by number.
fn submit_lines(cfg: &SubmitConfig, input: impl BufRead) -> Result<i32, Error> {
    let mut zk = session::connect(&cfg.connect)?;
    let mut lines = input.split(b'\n').enumerate();
    loop {
        let mut tasks = Vec::new();
        let mut datas = Vec::new();
        let mut broken = None;
        for (index, line) in lines.by_ref() {
            let line = line.map_err(|err| Error::BadInput(format!("reading stdin: {err}")))?;
            let checked = std::str::from_utf8(&line)
                .map_err(|_| Error::BadInput("not valid UTF-8".into()))
                .map(|job| job.trim_end_matches('\r'))
                .and_then(|job| {
                    if job.trim().is_empty() {
                        return Ok(None);
                    }
                    let task = new_task(cfg, job);
                    check_task(&task).map(|data| Some((task, data)))
                });
            match checked {
                Ok(None) => continue,
                Ok(Some((task, data))) => {
                    tasks.push(task);
                    datas.push(data);
                }
                Err(err) => {
                    broken = Some(Error::BadInput(format!("stdin line {}: {err}", index + 1)));
                    break;
                }
            }
            if tasks.len() == BATCH {
                break;
            }
        }
        if !tasks.is_empty() {
            let (next, names) = store(zk, cfg, &tasks, &datas)?;
            zk = next;
            let mut out = std::io::stdout().lock();
            for name in names {
                let _ = writeln!(out, "{name}");
            }
            let _ = out.flush();
        }
        match broken {
            Some(err) => return Err(err),
            None if tasks.len() < BATCH => return Ok(0),
            None => {}
        }
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

/// Stores each task exactly once; returns the session now in use (a new one
/// if the first expired) and the tasks' names, in order.
fn store(
    mut zk: Zk,
    cfg: &SubmitConfig,
    tasks: &[Task],
    datas: &[Vec<u8>],
) -> Result<(Zk, Vec<String>), Error> {
    let layout = &cfg.layout;
    let give_up = Instant::now()
        + cfg
            .connect
            .connect_timeout
            .unwrap_or(Duration::from_secs(10));
    let mut names: Vec<Option<String>> = vec![None; tasks.len()];
    loop {
        let todo: Vec<usize> = (0..tasks.len()).filter(|i| names[*i].is_none()).collect();
        if todo.is_empty() {
            return Ok((zk, names.into_iter().flatten().collect()));
        }
        // The queue's size now, and its child version: every task created
        // after this read has a sequence number at least that version, which
        // bounds the search for a create whose outcome is unknown.
        let queue = match zk.exists(&layout.tasks()) {
            Ok(Some(stat)) => stat,
            Ok(None) => {
                session::ensure_namespace(&zk, layout)
                    .map_err(|e| Error::zk(format!("creating {}", layout.root()), e))?;
                continue;
            }
            Err(err)
                if Instant::now() < give_up
                    && (err.is_unknown_outcome() || err.is_session_lost()) =>
            {
                if zk.is_lost() {
                    zk = session::connect(&cfg.connect)?;
                }
                debug!("reading {}: {err}; retrying", layout.tasks());
                continue;
            }
            Err(err) => return Err(Error::zk(format!("reading {}", layout.tasks()), err)),
        };
        let pending = usize::try_from(queue.num_children).unwrap_or(0);
        if pending + todo.len() > cfg.max_pending {
            return Err(Error::QueueFull {
                pending,
                adding: todo.len(),
                limit: cfg.max_pending,
            });
        }
        let floor = queue.cversion;
        let batch: Vec<Vec<u8>> = todo.iter().map(|i| datas[*i].clone()).collect();
        let created = zk.create_sequential_many(&layout.task_prefix(), &batch);
        let mut unknown = Vec::new();
        let mut missing_namespace = false;
        let mut last_err = None;
        for (i, result) in todo.into_iter().zip(created) {
            match result {
                Ok(name) => names[i] = Some(name),
                // Nothing was created: simply try again.
                Err(ZkError::NoNode) => missing_namespace = true,
                Err(err) if err.is_unknown_outcome() || err.is_session_lost() => {
                    unknown.push(i);
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
            session::ensure_namespace(&zk, layout)
                .map_err(|e| Error::zk(format!("creating {}", layout.root()), e))?;
        }
        let Some(err) = last_err else { continue };
        warn!(
            "storing {} tasks: {err}; checking whether they were stored",
            unknown.len()
        );
        if Instant::now() > give_up {
            return Err(Error::zk("storing the task", err));
        }
        // Find out which creates happened before trying the rest again.
        let tokens: HashMap<&str, usize> = unknown
            .iter()
            .map(|i| (tasks[*i].token.as_str(), *i))
            .collect();
        loop {
            if zk.is_lost() {
                zk = session::connect(&cfg.connect)?;
            }
            match find_by_tokens(&zk, layout, &tokens, floor) {
                Ok(found) => {
                    for (i, name) in found {
                        names[i] = Some(name);
                    }
                    break;
                }
                Err(err) if Instant::now() > give_up => {
                    return Err(Error::zk("checking whether the task was stored", err));
                }
                Err(err) => {
                    debug!("search not possible yet: {err}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// Which of `tokens` were stored, among the tasks whose sequence is at
/// least `floor`, wherever they are now (pending, assigned or finished).
/// Starts with a sync: the session may now be on a server that has not yet
/// applied the create in question.
fn find_by_tokens(
    zk: &Zk,
    layout: &Layout,
    tokens: &HashMap<&str, usize>,
    floor: i32,
) -> Result<HashMap<usize, String>, ZkError> {
    zk.sync(layout.root())?;
    let recent = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| task_sequence(n).is_some_and(|s| s >= i64::from(floor)))
            .collect()
    };
    let mut paths: Vec<(String, String)> = Vec::new();
    for name in recent(zk.children(&layout.tasks())?) {
        paths.push((layout.task(&name), name));
    }
    for worker in zk.children(&layout.assign())? {
        let names = match zk.children(&layout.assign_dir(&worker)) {
            Ok(names) => names,
            Err(ZkError::NoNode) => continue,
            Err(err) => return Err(err),
        };
        for name in recent(names) {
            paths.push((layout.assignment(&worker, &name), name));
        }
    }
    for name in recent(zk.children(&layout.status())?) {
        paths.push((layout.status_task(&name), name));
    }
    let reads: Vec<String> = paths.iter().map(|(path, _)| path.clone()).collect();
    let mut found = HashMap::new();
    for ((_, name), got) in paths.into_iter().zip(zk.get_many(&reads)) {
        if let Some((data, _)) = got? {
            let token = model::decode::<Task>(&data)
                .map(|t| t.token)
                .or_else(|_| model::decode::<TaskResult>(&data).map(|r| r.token));
            if let Some(i) = token.ok().and_then(|t| tokens.get(t.as_str()).copied()) {
                found.insert(i, name);
            }
        }
    }
    Ok(found)
}

/// A message to the waiting loop.
enum Wake {
    Watch,
    Session,
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

/// Waits for `/status/<name>`; `None` when the deadline passed first. Rides
/// out disconnects, and opens a new session if this one expires.
pub fn wait_for_result(
    mut zk: Zk,
    cfg: &SubmitConfig,
    name: &str,
    deadline: Option<Instant>,
) -> Result<Option<TaskResult>, Error> {
    let (tx, rx): (Sender<Wake>, Receiver<Wake>) = crossbeam_channel::unbounded();
    zk.forward_session_events(tx.clone());
    let path = cfg.layout.status_task(name);
    let mut armed = false;
    // The watch fired: the result was stored (or the claim's proof that
    // there was none created and deleted it): read it at once.
    let mut fired = false;
    loop {
        if zk.is_lost() {
            zk = session::connect(&cfg.connect)?;
            zk.forward_session_events(tx.clone());
            armed = false;
        }
        if std::mem::take(&mut fired)
            && let Some(result) = read_result(&zk, &path, name)?
        {
            return Ok(Some(result));
        }
        let read = if armed {
            zk.exists(&path)
        } else {
            zk.exists_watch(&path, &tx)
        };
        match read {
            Ok(Some(_)) => {
                if let Some(result) = read_result(&zk, &path, name)? {
                    return Ok(Some(result));
                }
            }
            Ok(None) => armed = true,
            Err(err) if err == ZkError::NoAuth => {
                return Err(Error::zk(format!("reading {path}"), err));
            }
            Err(err) => debug!("watching {path}: {err}"),
        }
        // Wake on the watch or a session change; re-check every second as
        // a backstop; stop at the deadline.
        let mut wait = Duration::from_secs(1);
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            wait = wait.min(left);
        }
        match rx.recv_timeout(wait) {
            Ok(Wake::Watch) => {
                armed = false;
                fired = true;
            }
            Ok(Wake::Session) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(None),
        }
    }
}

/// Reads and decodes `/status/<name>`; `None` if it is not there (yet) or
/// could not be read now.
fn read_result(zk: &Zk, path: &str, name: &str) -> Result<Option<TaskResult>, Error> {
    match zk.get(path) {
        Ok(Some((data, _))) => model::decode::<TaskResult>(&data)
            .map(Some)
            .map_err(|why| Error::BadInput(format!("the result of {name} is unreadable: {why}"))),
        Ok(None) => Ok(None),
        Err(err) if err == ZkError::NoAuth => Err(Error::zk(format!("reading {path}"), err)),
        Err(err) => {
            debug!("reading {path}: {err}");
            Ok(None)
        }
    }
}

/// Passes the job's output through and returns the exit code for it.
pub fn print_result(name: &str, result: &TaskResult) -> i32 {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(result.stdout.as_bytes());
    let _ = out.flush();
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(result.stderr.as_bytes());
    if result.stdout_truncated || result.stderr_truncated {
        let _ = writeln!(
            err,
            "zkmw: {name}: output was cut at the worker's --output-cap"
        );
    }
    if let Some(reason) = &result.reason {
        let _ = writeln!(err, "zkmw: {name} failed: {reason}");
    }
    result.exit_code()
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
