//! Waiting for a stored task's result and passing it through: the second
//! half of `submit --wait`, and all of `zkmw wait TASK`.
//!
//! Once the task is stored, the wait never loses it: an outage is waited
//! out (the session is resumed or a new one opened, until `--wait-timeout`),
//! and a wait that ends without the result for any reason (the timeout,
//! Ctrl-C or SIGTERM, an error) ends with one line on stderr naming the
//! task and saying it goes on. A wait that gets its result prints nothing
//! of its own, so a cron mail holds only the job's output.

use std::io::Write;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::debug;

use super::Wake;
use super::live::{self, LiveLine};
use crate::backoff::Backoff;
use crate::error::Error;
use crate::layout::Layout;
use crate::model::{self, TaskResult};
use crate::output;
use crate::shutdown::Shutdown;
use crate::zk::{ConnectOptions, Zk, ZkError};

/// How a wait ended.
#[derive(Debug)]
pub enum WaitEnd {
    /// The task's result.
    Result(Box<TaskResult>),
    /// `--wait-timeout` ran out after this long.
    TimedOut(Duration),
    /// A signal asked us to stop.
    Stopped(Shutdown),
    /// Waiting became impossible.
    Failed(Error),
}

/// What a wait needs.
pub struct Waiting<'a> {
    /// How to reach ZooKeeper again if the session is lost.
    pub connect: &'a ConnectOptions,
    /// The namespace.
    pub layout: &'a Layout,
    /// The task waited for.
    pub task: &'a str,
    /// When to give up, if ever.
    pub deadline: Option<Instant>,
    /// Watches, session changes and signals.
    pub rx: &'a Receiver<Wake>,
    /// Where watches and session changes are sent.
    pub tx: &'a crossbeam_channel::Sender<Wake>,
}

/// How long one attempt to open a new session may take while waiting:
/// short, so a signal is answered soon.
const RECONNECT_ATTEMPT: Duration = Duration::from_secs(2);

impl Waiting<'_> {
    /// Waits for the result on `zk` (or a later session) and ends how it
    /// ends; see [`report`] for what the user then sees.
    pub fn wait(&self, mut zk: Option<Zk>, started: Instant) -> (Option<Zk>, WaitEnd) {
        let path = self.layout.status_task(self.task);
        let mut armed = false;
        // The watch fired: the result was stored (or the claim's proof that
        // there was none created and deleted it): read it at once.
        let mut fired = false;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(2));
        let mut line = LiveLine::on_terminal(self.task);
        loop {
            if let Some(stop) = self.rx.try_iter().find_map(Wake::stop) {
                return (zk, WaitEnd::Stopped(stop));
            }
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return (zk, WaitEnd::TimedOut(started.elapsed()));
            }
            let live = match zk.take().filter(|zk| !zk.is_lost()) {
                Some(live) => live,
                None => match self.reconnect() {
                    Some(live) => {
                        armed = false;
                        live
                    }
                    None => {
                        if let Some(end) = self.pause(backoff.next_wait(), started) {
                            return (None, end);
                        }
                        continue;
                    }
                },
            };
            match self.look(&live, &path, &mut armed, std::mem::take(&mut fired)) {
                Ok(Some(result)) => return (Some(live), WaitEnd::Result(Box::new(result))),
                Ok(None) => {}
                Err(err) => return (Some(live), WaitEnd::Failed(err)),
            }
            if let Some(line) = &mut line {
                line.update(&live, self.layout, self.task);
            }
            zk = Some(live);
            // Wake on the watch, a session change or a signal; re-check
            // every second as a backstop (more often for the live line);
            // stop at the deadline.
            let backstop = if line.is_some() {
                live::EVERY
            } else {
                Duration::from_secs(1)
            };
            match self.next(backstop) {
                Next::Fired => {
                    armed = false;
                    fired = true;
                }
                Next::Stop(stop) => return (zk, WaitEnd::Stopped(stop)),
                Next::Again => {}
            }
        }
    }

    /// One look at `/status/<task>`: the result once it is there.
    fn look(
        &self,
        zk: &Zk,
        path: &str,
        armed: &mut bool,
        fired: bool,
    ) -> Result<Option<TaskResult>, Error> {
        if fired && let Some(result) = read_result(zk, path, self.task)? {
            return Ok(Some(result));
        }
        let read = if *armed {
            zk.exists(path)
        } else {
            zk.exists_watch(path, self.tx)
        };
        match read {
            Ok(Some(_)) => read_result(zk, path, self.task),
            Ok(None) => {
                *armed = true;
                Ok(None)
            }
            Err(ZkError::NoAuth) => Err(Error::zk(format!("reading {path}"), ZkError::NoAuth)),
            Err(err) => {
                debug!("watching {path}: {err}");
                Ok(None)
            }
        }
    }

    /// A new session, if one can be opened now (briefly: signals wait).
    fn reconnect(&self) -> Option<Zk> {
        let attempt = ConnectOptions {
            connect_timeout: Some(RECONNECT_ATTEMPT),
            ..self.connect.clone()
        };
        match Zk::connect(&attempt) {
            Ok(zk) => {
                zk.forward_session_events(self.tx.clone());
                Some(zk)
            }
            Err(err) => {
                debug!("waiting for ZooKeeper: {err}");
                None
            }
        }
    }

    /// Sleeps `wait` (less if the deadline comes first) unless a signal
    /// comes; the end that came meanwhile, if any.
    fn pause(&self, wait: Duration, started: Instant) -> Option<WaitEnd> {
        match self.next(wait) {
            Next::Stop(stop) => Some(WaitEnd::Stopped(stop)),
            _ if self.deadline.is_some_and(|d| Instant::now() >= d) => {
                Some(WaitEnd::TimedOut(started.elapsed()))
            }
            _ => None,
        }
    }

    /// The next message within `wait` (cut at the deadline).
    fn next(&self, wait: Duration) -> Next {
        let wait = match self.deadline {
            Some(deadline) => wait.min(deadline.saturating_duration_since(Instant::now())),
            None => wait,
        };
        match self.rx.recv_timeout(wait) {
            Ok(Wake::Watch) => Next::Fired,
            Ok(Wake::Stop(stop)) => Next::Stop(stop),
            Ok(Wake::Session) | Err(RecvTimeoutError::Timeout) => Next::Again,
            Err(RecvTimeoutError::Disconnected) => Next::Again,
        }
    }
}

/// What woke the wait.
enum Next {
    Fired,
    Stop(Shutdown),
    Again,
}

/// Reads and decodes `/status/<task>`; `None` if it is not there (yet) or
/// could not be read now.
fn read_result(zk: &Zk, path: &str, task: &str) -> Result<Option<TaskResult>, Error> {
    match zk.get(path) {
        Ok(Some((data, _))) => model::decode::<TaskResult>(&data)
            .map(Some)
            .map_err(|why| Error::BadInput(format!("the result of {task} is unreadable: {why}"))),
        Ok(None) => Ok(None),
        Err(ZkError::NoAuth) => Err(Error::zk(format!("reading {path}"), ZkError::NoAuth)),
        Err(err) => {
            debug!("reading {path}: {err}");
            Ok(None)
        }
    }
}

/// What the user sees at the end of a wait, and the exit code: the job's
/// output and code for a result; otherwise one line naming the task,
/// which goes on, and how to wait for it again.
pub fn report(task: &str, end: WaitEnd) -> Result<i32, Error> {
    let again = format!("it is stored and goes on: `zkmw wait {task}` waits again");
    let (line, code) = match end {
        WaitEnd::Result(result) => return pass_through(task, &result),
        WaitEnd::TimedOut(after) => (
            format!(
                "gave up waiting for {task} after {:.1} s (--wait-timeout); {again}",
                after.as_secs_f64()
            ),
            crate::error::EXIT_TIMED_OUT,
        ),
        WaitEnd::Stopped(stop) => (
            format!(
                "stopped waiting for {task} (signal {}); {again}",
                stop.signal
            ),
            stop.exit_code(),
        ),
        WaitEnd::Failed(err) => (
            format!("waiting for {task} failed: {err}; {again}"),
            err.exit_code(),
        ),
    };
    eprintln!("zkmw: {line}");
    Ok(code)
}

/// Passes the job's output through and returns the exit code for it.
fn pass_through(task: &str, result: &TaskResult) -> Result<i32, Error> {
    let code = result.exit_code();
    let after =
        format!("{task} ended with exit code {code}: `zkmw status {task}` shows its output");
    output::write(result.stdout.as_bytes(), Some(&after))?;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(result.stderr.as_bytes());
    if result.stdout_truncated || result.stderr_truncated {
        let _ = writeln!(
            err,
            "zkmw: {task}: output was cut at the worker's --output-cap"
        );
    }
    if let Some(reason) = &result.reason {
        let _ = writeln!(err, "zkmw: {task} failed: {reason}");
    }
    Ok(code)
}
