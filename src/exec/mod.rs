//! Running one job for a worker.
//!
//! A job is `sh -c COMMAND`, started in its own process group so that a
//! timeout or a kill reaches everything it spawned, not just the shell. It
//! gets a clean environment (only [`PASSED_ENV`] plus `ZKMW_TASK_ID` and
//! `ZKMW_ATTEMPT`), stdin from `/dev/null`, no other open descriptor than
//! 0, 1, 2 (and [`KEPT_FD`] when it is given one to keep), and its stdout
//! and stderr are captured up to a cap so memory stays bounded whatever the
//! job prints.
//!
//! [`run`] blocks the calling thread until the job is over. A [`KillSwitch`]
//! lets another thread stop the job at any time: kill it (worker shutdown
//! past the drain timeout, ZooKeeper session lost) or cancel it.
//!
//! How a run goes (all on the calling thread, which waits in one `poll` on
//! the two pipes, a pidfd of the shell and the kill switch's eventfd):
//! - the shell is started by `spawn.rs`, which also makes it die with the
//!   thread that started it (`PR_SET_PDEATHSIG` fires when that *thread*
//!   exits), so a worker killed with SIGKILL does not leave its jobs running
//!   beside their re-runs; that thread is the one that runs [`run`], which
//!   returns only once the shell is reaped, so it outlives the job;
//! - the shell's exit is seen through its pidfd *without reaping it*, so
//!   the group id (the shell's pid) can never be reused while we may still
//!   signal it;
//! - on timeout or kill the group gets SIGTERM, then SIGKILL after a grace
//!   of 2 s (on cancel, after the grace the cancel gives);
//! - once the shell has exited, the pipes get 200 ms to reach end of file,
//!   then the whole group gets SIGKILL (a background grandchild such as
//!   `sleep 100 &` would otherwise hold the pipes open), and the shell is
//!   reaped.

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod progress;
mod spawn;

use progress::Channel;
pub use progress::{MAX_MESSAGE, Progress, ProgressSink};
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
compile_error!(
    "zkmw's job runner supports Linux on x86_64 and aarch64 only (see src/exec/spawn.rs)"
);

pub use spawn::KEPT_FD;

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::fs::Access;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitStatus};

/// Names of the worker's environment variables passed on to a job, when set.
///
/// Everything else is cleared. `PATH` falls back to
/// `/usr/local/bin:/usr/bin:/bin` when the worker has none. On top of these,
/// a job always gets `ZKMW_TASK_ID` (the task id) and `ZKMW_ATTEMPT` (the
/// attempt number).
pub const PASSED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR",
];

/// `PATH` given to a job when the worker has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Time between SIGTERM and SIGKILL when we stop a job, unless a cancel
/// asks for another.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// The longest grace a cancel gets (a longer one is cut to this).
const MAX_GRACE: Duration = Duration::from_secs(24 * 3600);

/// Time the pipes get to reach end of file once the shell has exited,
/// before the rest of its process group is killed.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Time the pipes get after the group was killed; past it, we stop reading
/// them (a process that left the group may still hold a pipe).
const READER_GIVE_UP: Duration = Duration::from_secs(1);

/// Size of one read from a pipe.
const CHUNK: usize = 8 * 1024;

/// What to run.
pub struct JobSpec {
    /// Shell command, passed to `sh -c` (after `--` when it begins with `-`
    /// or `+`, so that the shell does not take it for its options).
    pub command: String,
    /// Task id, exported to the job as `ZKMW_TASK_ID`.
    pub task_id: String,
    /// Attempt number, exported to the job as `ZKMW_ATTEMPT`.
    pub attempt: u32,
    /// Time after which the job is stopped; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Maximum number of bytes kept of stdout, and of stderr, each.
    pub output_cap: usize,
    /// Shell to run the command with, normally `"sh"` (looked up in the
    /// job's `PATH` unless it contains a `/`).
    pub shell: String,
    /// Where the job's progress reports go: given one, the job finds its
    /// progress channel open at [`KEPT_FD`], named in `ZKMW_PROGRESS`
    /// (every other descriptor above 2 is closed for it).
    pub progress: Option<ProgressSink>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The shell exited with this code.
    Exited(i32),
    /// The shell was killed by this signal, not sent by us.
    Signaled(i32),
    /// We stopped the job because it ran past its timeout.
    TimedOut,
    /// We stopped the job (or did not start it) because of
    /// [`KillSwitch::kill`].
    Killed,
    /// We stopped the job (or did not start it) because of
    /// [`KillSwitch::cancel`]; the report keeps what it wrote until then.
    Cancelled,
    /// The shell could not be started; the reason, e.g.
    /// `"sh: No such file or directory (os error 2)"`.
    CouldNotStart(String),
}

/// Captured output of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Captured {
    /// The first bytes written, at most the cap; raw, not necessarily UTF-8.
    pub bytes: Vec<u8>,
    /// Whether more than the cap was written (`total > cap`).
    pub truncated: bool,
    /// Number of bytes written in all, kept or not.
    pub total: u64,
}

/// The result of [`run`].
#[derive(Debug, Clone)]
pub struct JobReport {
    /// How the job ended.
    pub outcome: Outcome,
    /// What the job wrote on stdout.
    pub stdout: Captured,
    /// What the job wrote on stderr.
    pub stderr: Captured,
    /// When [`run`] was called, in Unix milliseconds.
    pub started_ms: u64,
    /// When [`run`] was done, in Unix milliseconds.
    pub finished_ms: u64,
}

/// A handle another thread can use to stop a running job's whole process
/// group: kill it (worker shutdown past the drain timeout, session lost) or
/// cancel it.
///
/// Clones share the same switch; it is `Send + Sync` and its methods work
/// from any thread at any time. Stopping before the job started makes
/// [`run`] not start it; stopping while it is being started still stops
/// it; stopping after it ended does nothing. The first of
/// [`KillSwitch::kill`] and [`KillSwitch::cancel`] decides the outcome;
/// SIGKILL follows SIGTERM at the earliest time any of them asked for (the
/// time of each call plus its grace). A stopped switch stays stopped.
#[derive(Debug, Clone, Default)]
pub struct KillSwitch {
    inner: Arc<Mutex<SwitchState>>,
}

#[derive(Debug, Default)]
struct SwitchState {
    /// What was asked, once kill or cancel was called.
    asked: Option<StopRequest>,
    /// The eventfd of the run waiting on this switch, if one is: a stop
    /// writes to it to wake the run's `poll`. Registered and removed under
    /// the lock, so a run never misses a stop asked while it registers.
    waker: Option<Arc<OwnedFd>>,
}

/// Why a job is to be stopped, and when SIGKILL follows the SIGTERM.
#[derive(Debug, Clone, Copy)]
struct StopRequest {
    why: Stop,
    kill_at: Instant,
}

impl KillSwitch {
    /// A switch that has not been used.
    pub fn new() -> Self {
        Self::default()
    }

    /// Kills the job run with this switch, now or when it starts: SIGTERM
    /// to its group, SIGKILL 2 s later; [`Outcome::Killed`].
    pub fn kill(&self) {
        self.ask(Stop::Kill, KILL_GRACE);
    }

    /// Cancels the job run with this switch, now or when it starts: SIGTERM
    /// to its group, SIGKILL `grace` later (at most a day);
    /// [`Outcome::Cancelled`], with the output written until then.
    pub fn cancel(&self, grace: Duration) {
        self.ask(Stop::Cancel, grace.min(MAX_GRACE));
    }

    /// Whether [`KillSwitch::kill`] or [`KillSwitch::cancel`] was called.
    pub fn is_killed(&self) -> bool {
        self.asked().is_some()
    }

    fn ask(&self, why: Stop, grace: Duration) {
        let mut state = lock(&self.inner);
        let mut asked = StopRequest {
            why,
            kill_at: Instant::now() + grace,
        };
        if let Some(earlier) = state.asked {
            asked.why = earlier.why;
            asked.kill_at = asked.kill_at.min(earlier.kill_at);
        }
        state.asked = Some(asked);
        if let Some(fd) = &state.waker {
            // An eventfd takes 8-byte writes; this one cannot overflow.
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }

    /// What was asked of the switch so far.
    fn asked(&self) -> Option<StopRequest> {
        lock(&self.inner).asked
    }

    /// Registers the run's eventfd; returns what was already asked.
    fn register(&self, fd: Arc<OwnedFd>) -> Option<StopRequest> {
        let mut state = lock(&self.inner);
        state.waker = Some(fd);
        state.asked
    }

    fn unregister(&self) {
        lock(&self.inner).waker.take();
    }
}

/// Runs the job to completion (blocking the calling thread) and reports how
/// it ended.
pub fn run(spec: &mut JobSpec, kill: &KillSwitch) -> JobReport {
    let started_ms = now_ms();
    let (outcome, stdout, stderr) = match kill.asked() {
        Some(asked) => (
            asked.why.outcome(),
            Captured::default(),
            Captured::default(),
        ),
        None => execute(spec, kill),
    };
    JobReport {
        outcome,
        stdout,
        stderr,
        started_ms,
        finished_ms: now_ms(),
    }
}

/// Why we stopped a job.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Timeout,
    Kill,
    Cancel,
}

impl Stop {
    fn outcome(self) -> Outcome {
        match self {
            Stop::Timeout => Outcome::TimedOut,
            Stop::Kill => Outcome::Killed,
            Stop::Cancel => Outcome::Cancelled,
        }
    }
}

/// What a run waits on besides the output: the shell's exit and its switch.
struct Waits<'a> {
    /// Readable once the shell has exited.
    pidfd: &'a OwnedFd,
    /// Readable once a stop was asked of `switch` (and until it is read).
    waker: &'a OwnedFd,
    switch: &'a KillSwitch,
}

fn execute(spec: &mut JobSpec, kill: &KillSwitch) -> (Outcome, Captured, Captured) {
    let flags = EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK;
    let waker = match rustix::event::eventfd(0, flags) {
        Ok(fd) => Arc::new(fd),
        Err(e) => return not_started(format!("could not make an eventfd: {e}")),
    };
    let channel = match spec.progress.take().map(progress_pipe).transpose() {
        Ok(channel) => channel,
        Err(e) => return not_started(format!("could not make a progress pipe: {e}")),
    };
    let keep = channel.as_ref().map(|(_, write)| write.as_fd());
    // This thread spawns, supervises and reaps the shell, so it outlives
    // it: the shell's death signal fires when this thread exits.
    let started = command(spec, keep.is_some())
        .and_then(|(program, argv, envp)| spawn::spawn(&program, &argv, &envp, keep));
    let child = match started {
        Ok(child) => child,
        Err(e) => return not_started(format!("{}: {e}", spec.shell)),
    };
    let mut watch = Watch {
        pgid: child.pid,
        pipes: [Some(child.stdout), Some(child.stderr)],
        captured: [Captured::default(), Captured::default()],
        cap: spec.output_cap,
        // Only the job holds the write end now.
        progress: channel.map(|(channel, _)| channel),
    };
    let waits = Waits {
        pidfd: &child.pidfd,
        waker: &waker,
        switch: kill,
    };
    let stopped = match kill.register(Arc::clone(&waker)) {
        None => watch.supervise(&waits, spec.timeout),
        Some(asked) => Some(watch.stop(&waits, asked)),
    };
    kill.unregister();
    watch.drain();
    // The shell has exited but is not reaped: `pgid` still names our group.
    let status = spawn::reap(child.pid);
    let [stdout, stderr] = watch.captured;
    (outcome(stopped, status, child.pid), stdout, stderr)
}

/// A progress channel for `sink`, and the write end the job gets.
fn progress_pipe(sink: ProgressSink) -> io::Result<(Channel, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    Ok((Channel::new(read, sink), write))
}

fn not_started(reason: String) -> (Outcome, Captured, Captured) {
    let empty = Captured::default();
    (Outcome::CouldNotStart(reason), empty.clone(), empty)
}

/// The program, argv and environment of `sh -c COMMAND` (`sh -c -- COMMAND`
/// when it begins with `-` or `+`: only then, for shells that are not POSIX
/// shells do not expect a `--`).
fn command(spec: &JobSpec, progress: bool) -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
    let mut env: Vec<(&str, OsString)> = PASSED_ENV
        .iter()
        .filter_map(|&name| match std::env::var_os(name) {
            Some(value) => Some((name, value)),
            None if name == "PATH" => Some((name, DEFAULT_PATH.into())),
            None => None,
        })
        .collect();
    env.push(("ZKMW_TASK_ID", spec.task_id.clone().into()));
    env.push(("ZKMW_ATTEMPT", spec.attempt.to_string().into()));
    if progress {
        env.push(("ZKMW_PROGRESS", KEPT_FD.to_string().into()));
    }
    let path = env
        .iter()
        .find(|(n, _)| *n == "PATH")
        .map(|(_, v)| v.clone());
    let program = find_program(&spec.shell, path.as_deref().unwrap_or_default());
    let envp = env
        .into_iter()
        .map(|(name, value)| {
            let mut entry = OsString::from(format!("{name}="));
            entry.push(value);
            c_string(entry.into_vec())
        })
        .collect::<io::Result<_>>()?;
    let mut argv = vec![
        c_string(spec.shell.clone().into_bytes())?,
        c_string(b"-c".to_vec())?,
    ];
    if spec.command.starts_with(['-', '+']) {
        argv.push(c_string(b"--".to_vec())?);
    }
    argv.push(c_string(spec.command.clone().into_bytes())?);
    Ok((c_string(program.into_os_string().into_vec())?, argv, envp))
}

/// Where a job's `shell` will be found (in the jobs' `PATH` unless it holds
/// a `/`), or why it cannot be run: a worker checks it at start rather
/// than fail every job it takes.
pub fn locate_shell(shell: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    let found = find_program(shell, &path);
    if is_executable(&found) {
        Ok(found)
    } else if shell.contains('/') {
        Err(format!("--shell {shell}: no executable file there"))
    } else {
        Err(format!(
            "--shell {shell}: no executable of that name in PATH"
        ))
    }
}

/// Where `name` is: itself if it has a `/`, else the first executable file
/// of that name in `path`; `name` again if none (execve then says why).
fn find_program(name: &str, path: &OsStr) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| PathBuf::from(name))
}

fn is_executable(path: &Path) -> bool {
    rustix::fs::access(path, Access::EXEC_OK).is_ok() && path.is_file()
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the job contains a NUL byte"))
}

/// A running job's group, pipes and captured output.
struct Watch {
    pgid: Pid,
    /// stdout and stderr; `None` once at end of file.
    pipes: [Option<OwnedFd>; 2],
    captured: [Captured; 2],
    cap: usize,
    /// The job's progress channel, if it has one.
    progress: Option<Channel>,
}

impl Watch {
    /// Reads output until the shell exits; stops the job on timeout or when
    /// a stop is asked of the switch. Returns why we stopped it, if we did.
    fn supervise(&mut self, waits: &Waits, timeout: Option<Duration>) -> Option<Stop> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if wait == Some(Duration::ZERO) {
                let kill_at = Instant::now() + KILL_GRACE;
                let why = Stop::Timeout;
                return Some(self.stop(waits, StopRequest { why, kill_at }));
            }
            let ready = self.poll(&[waits.pidfd, waits.waker], wait);
            // Biased towards the exit: a job that has ended is not reported
            // stopped.
            if ready[0] {
                return None;
            }
            if let Some(asked) = waits.switch.asked() {
                return Some(self.stop(waits, asked));
            }
        }
    }

    /// SIGTERM to the group, SIGKILL once `first.kill_at` or an earlier
    /// time asked of the switch meanwhile has come; returns, once the shell
    /// has exited, why it was stopped (the first reason).
    fn stop(&mut self, waits: &Waits, first: StopRequest) -> Stop {
        kill_group(self.pgid, Signal::TERM);
        let mut kill_at = first.kill_at;
        loop {
            let wait = kill_at.saturating_duration_since(Instant::now());
            if wait == Duration::ZERO {
                break;
            }
            if self.poll(&[waits.pidfd, waits.waker], Some(wait))[0] {
                return first.why;
            }
            // Woken by the switch (or not): take its request into account.
            let _ = rustix::io::read(waits.waker, &mut [0u8; 8]);
            if let Some(asked) = waits.switch.asked() {
                kill_at = kill_at.min(asked.kill_at);
            }
        }
        kill_group(self.pgid, Signal::KILL);
        while !self.poll(&[waits.pidfd], None)[0] {}
        first.why
    }

    /// Once the shell has exited: reads the pipes to their end for a short
    /// grace, kills what is left of the group, and gives the pipes a last
    /// chance before giving up on them.
    fn drain(&mut self) {
        self.read_until(Instant::now() + DRAIN_GRACE);
        if self.pipes.iter().any(Option::is_some) {
            log::debug!(
                "job process group {} still holds its output pipes",
                self.pgid
            );
        }
        kill_group(self.pgid, Signal::KILL);
        self.read_until(Instant::now() + READER_GIVE_UP);
        if self.pipes.iter().any(Option::is_some) {
            log::warn!(
                "job {}: output still held open by a process outside its group; not waiting for it",
                self.pgid
            );
        }
    }

    fn read_until(&mut self, deadline: Instant) {
        while self.pipes.iter().any(Option::is_some) {
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait == Duration::ZERO {
                return;
            }
            self.poll(&[], Some(wait));
        }
    }

    /// Waits up to `wait` (`None`: no limit) for output or for one of
    /// `extra` to be readable; reads what output is ready and returns which
    /// of `extra` are readable.
    fn poll(&mut self, extra: &[&OwnedFd], wait: Option<Duration>) -> Vec<bool> {
        let (live, mut fds): (Vec<usize>, Vec<PollFd>) = self
            .pipes
            .iter()
            .enumerate()
            .filter_map(|(i, pipe)| Some((i, PollFd::new(pipe.as_ref()?, PollFlags::IN))))
            .unzip();
        let channel = self.progress.as_ref().and_then(Channel::fd);
        let has_channel = channel.is_some();
        fds.extend(channel.map(|fd| PollFd::new(fd, PollFlags::IN)));
        fds.extend(extra.iter().map(|fd| PollFd::new(*fd, PollFlags::IN)));
        // A wait too long for a timespec is no limit.
        let timeout = wait.and_then(|w| Timespec::try_from(w).ok());
        if let Err(err) = rustix::event::poll(&mut fds, timeout.as_ref()) {
            if err != Errno::INTR {
                log::warn!("waiting for job {}: {err}", self.pgid);
            }
            return vec![false; extra.len()];
        }
        let ready: Vec<bool> = fds.iter().map(|fd| !fd.revents().is_empty()).collect();
        let (pipes_ready, rest) = ready.split_at(live.len());
        let (channel_ready, extra_ready) = rest.split_at(usize::from(has_channel));
        for (&i, &ready) in live.iter().zip(pipes_ready) {
            if ready {
                self.read_pipe(i);
            }
        }
        if channel_ready.first() == Some(&true)
            && let Some(channel) = &mut self.progress
        {
            channel.read();
        }
        extra_ready.to_vec()
    }

    /// One read from pipe `i`, which poll said is ready; closes it at end of
    /// file.
    fn read_pipe(&mut self, i: usize) {
        let Some(pipe) = &self.pipes[i] else { return };
        let mut buf = [0u8; CHUNK];
        let n = match rustix::io::read(pipe, &mut buf) {
            Ok(n) => n,
            Err(Errno::INTR) => return,
            Err(err) => {
                log::warn!("reading job output: {err}");
                0
            }
        };
        if n == 0 {
            self.pipes[i] = None;
            return;
        }
        let captured = &mut self.captured[i];
        let room = self.cap.saturating_sub(captured.bytes.len());
        captured.bytes.extend_from_slice(&buf[..n.min(room)]);
        captured.total += n as u64;
        captured.truncated = captured.total > self.cap as u64;
    }
}

/// Sends `sig` to process group `pgid`.
fn kill_group(pgid: Pid, sig: Signal) {
    // That would be init's group: never signal it.
    if pgid.is_init() {
        return;
    }
    // `pgid` is our unreaped child's pid, so it still names the job's group
    // and nothing else.
    match rustix::process::kill_process_group(pgid, sig) {
        Ok(()) | Err(Errno::SRCH) => {}
        Err(err) => log::warn!("could not signal job process group {pgid}: {err}"),
    }
}

/// How the job ended, from why we stopped it (if we did) and its status.
fn outcome(stopped: Option<Stop>, status: io::Result<WaitStatus>, pid: Pid) -> Outcome {
    match (stopped, status) {
        (Some(why), _) => why.outcome(),
        (None, Ok(status)) => match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Outcome::Exited(code),
            (None, Some(sig)) => Outcome::Signaled(sig),
            (None, None) => {
                log::error!("job process {pid}: unexpected status {status:?}");
                Outcome::Exited(-1)
            }
        },
        (None, Err(e)) => {
            log::error!("could not reap job process {pid}: {e}");
            Outcome::Exited(-1)
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::thread;
    use std::time::Instant;

    /// A job with a 20 s safety timeout, so no test can hang.
    fn spec(command: &str) -> JobSpec {
        JobSpec {
            command: command.to_string(),
            task_id: "task-7".to_string(),
            attempt: 2,
            timeout: Some(Duration::from_secs(20)),
            output_cap: 1 << 20,
            shell: "sh".to_string(),
            progress: None,
        }
    }

    fn run_job(command: &str) -> JobReport {
        run(&mut spec(command), &KillSwitch::new())
    }

    fn text(c: &Captured) -> &str {
        std::str::from_utf8(&c.bytes).expect("utf-8 output")
    }

    /// Whether `done()` holds within `limit`, polling every 10 ms.
    fn within(limit: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if done() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The state letter and the process group of process `pid`, from
    /// /proc; `None` once it is gone.
    fn proc_stat(pid: &str) -> Option<(char, String)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?.chars().next()?;
        Some((state, fields.nth(1)?.to_string()))
    }

    /// Whether process `pid` is gone (or a zombie nobody reaped yet),
    /// polling for at most 5 s.
    fn gone(pid: libc::pid_t) -> bool {
        within(Duration::from_secs(5), || {
            proc_stat(&pid.to_string()).is_none_or(|(state, _)| state == 'Z')
        })
    }

    /// Whether every process of group `pgid` is gone (or a zombie),
    /// polling for at most 5 s.
    fn group_gone(pgid: &str) -> bool {
        within(Duration::from_secs(5), || {
            let procs = std::fs::read_dir("/proc").expect("/proc");
            procs
                .filter_map(|entry| proc_stat(entry.ok()?.file_name().to_str()?))
                .all(|(state, pgrp)| state == 'Z' || pgrp != pgid)
        })
    }

    /// Paths for files that a test's jobs make: none exists at first, and
    /// they are removed on drop.
    struct TempFiles<const N: usize>([PathBuf; N]);

    impl<const N: usize> TempFiles<N> {
        fn new(names: [&str; N]) -> Self {
            let files = Self(names.map(|name| {
                std::env::temp_dir().join(format!("zkmw-exec-{name}-{}", std::process::id()))
            }));
            files.remove();
            files
        }

        fn remove(&self) {
            for path in &self.0 {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    impl<const N: usize> Drop for TempFiles<N> {
        fn drop(&mut self) {
            self.remove();
        }
    }

    fn wait_for_file(path: &Path) -> bool {
        within(Duration::from_secs(10), || path.exists())
    }

    #[test]
    fn captures_stdout_and_stderr() {
        let r = run_job("echo out; echo err >&2");
        assert_eq!(r.outcome, Outcome::Exited(0));
        assert_eq!(text(&r.stdout), "out\n");
        assert_eq!(text(&r.stderr), "err\n");
        assert_eq!((r.stdout.total, r.stdout.truncated), (4, false));
        assert!(r.started_ms > 0 && r.started_ms <= r.finished_ms);
    }

    #[test]
    fn exit_code() {
        assert_eq!(run_job("exit 3").outcome, Outcome::Exited(3));
    }

    #[test]
    fn killed_by_own_signal() {
        assert_eq!(run_job("kill -9 $$").outcome, Outcome::Signaled(9));
    }

    /// Runs `command` with `timeout`; it must be stopped for it within
    /// `limit`. Returns the report and how long the run took.
    fn run_past_timeout(command: &str, timeout: u64, limit: u64) -> (JobReport, Duration) {
        let mut s = spec(command);
        s.timeout = Some(Duration::from_millis(timeout));
        let t = Instant::now();
        let r = run(&mut s, &KillSwitch::new());
        let took = t.elapsed();
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert!(took < Duration::from_secs(limit), "took {took:?}");
        (r, took)
    }

    #[test]
    fn timeout_stops_job() {
        run_past_timeout("sleep 30", 200, 3);
    }

    #[test]
    fn timeout_kills_grandchildren() {
        let (r, _) = run_past_timeout("sleep 30 & echo $!; wait", 200, 3);
        let pid: libc::pid_t = text(&r.stdout).trim().parse().expect("pid");
        assert!(gone(pid), "grandchild {pid} survived");
    }

    #[test]
    fn background_grandchild_does_not_block() {
        let t = Instant::now();
        let r = run_job("sleep 30 & echo $!; echo hi");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert_eq!(r.outcome, Outcome::Exited(0));
        let out = text(&r.stdout);
        let mut lines = out.lines();
        let pid: libc::pid_t = lines.next().and_then(|l| l.parse().ok()).expect("pid");
        assert_eq!(lines.next(), Some("hi"));
        assert!(gone(pid), "grandchild {pid} survived");
    }

    #[test]
    fn background_process_without_our_pipes_is_killed_too() {
        // It holds no pipe, so nothing waits for it, and it is still killed
        // with the group.
        let r = run_job("sleep 30 >/dev/null 2>&1 & echo $!");
        let pid: libc::pid_t = text(&r.stdout).trim().parse().expect("pid");
        assert!(gone(pid), "background process {pid} survived");
    }

    #[test]
    fn daemon_detached_with_setsid_outlives_the_job() {
        // The daemon answers a file the test makes once the job is over (it
        // waits 10 s at most; `\$` keeps its variables from the job's
        // shell). `setsid -w` returns once the daemon has been started in a
        // session of its own: one still leaving the group when the shell
        // exits (`setsid CMD &`) may be killed with it.
        let files = TempFiles::new(["daemon-go", "daemon-done"]);
        let [go, done] = &files.0;
        let daemon = format!(
            "i=0; while [ ! -e '{go}' ] && [ \\$i -lt 200 ]; do sleep 0.05; i=\\$((i+1)); done; \
             [ -e '{go}' ] && touch '{done}'",
            go = go.display(),
            done = done.display()
        );
        let job = format!("setsid -w sh -c \"({daemon}) >/dev/null 2>&1 &\"");
        let r = run_job(&job);
        assert_eq!(r.outcome, Outcome::Exited(0), "{}", text(&r.stderr));
        std::fs::write(go, "").expect("go");
        assert!(wait_for_file(done), "the daemon was killed with the job");
    }

    #[test]
    fn output_is_capped() {
        let mut s = spec("head -c 1000000 /dev/zero; echo done >&2");
        s.output_cap = 1000;
        let r = run(&mut s, &KillSwitch::new());
        assert_eq!(r.outcome, Outcome::Exited(0));
        assert_eq!(r.stdout.bytes, vec![0u8; 1000]);
        assert!(r.stdout.truncated);
        assert_eq!(r.stdout.total, 1_000_000);
        assert_eq!(text(&r.stderr), "done\n");
        assert!(!r.stderr.truncated);
    }

    #[test]
    fn environment_is_clean() {
        let r = run_job("env");
        assert_eq!(r.outcome, Outcome::Exited(0));
        let out = text(&r.stdout);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"ZKMW_TASK_ID=task-7"), "{out}");
        assert!(lines.contains(&"ZKMW_ATTEMPT=2"), "{out}");
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string());
        assert!(lines.contains(&format!("PATH={path}").as_str()), "{out}");
        // Only what we pass, plus what sh sets itself.
        let allowed = |name: &str| {
            PASSED_ENV.contains(&name)
                || [
                    "ZKMW_TASK_ID",
                    "ZKMW_ATTEMPT",
                    "PWD",
                    "OLDPWD",
                    "SHLVL",
                    "_",
                ]
                .contains(&name)
        };
        for line in &lines {
            let name = line.split('=').next().unwrap_or_default();
            assert!(allowed(name), "unexpected variable {name} in {out}");
        }
        // Cargo sets this one for the test process: it must not leak.
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(!out.contains("CARGO_MANIFEST_DIR"), "{out}");
    }

    #[test]
    fn missing_shell_could_not_start() {
        let mut s = spec("true");
        s.shell = "/nonexistent/sh".to_string();
        let r = run(&mut s, &KillSwitch::new());
        let Outcome::CouldNotStart(reason) = r.outcome else {
            panic!("unexpected {:?}", r.outcome);
        };
        assert!(reason.contains("No such file or directory"), "{reason}");
        assert!(reason.starts_with("/nonexistent/sh"), "{reason}");
    }

    #[test]
    fn kill_switch_from_another_thread() {
        let files = TempFiles::new(["kill-marker"]);
        let [marker] = &files.0;
        let kill = KillSwitch::new();
        let killer = {
            let (kill, marker) = (kill.clone(), marker.clone());
            thread::spawn(move || {
                let started = wait_for_file(&marker);
                kill.kill();
                started
            })
        };
        let t = Instant::now();
        let r = run(
            &mut spec(&format!("touch '{}'; sleep 30", marker.display())),
            &kill,
        );
        let started = killer.join().expect("killer thread");
        assert!(started, "job never started");
        assert_eq!(r.outcome, Outcome::Killed);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "took {:?}",
            t.elapsed()
        );
        assert!(kill.is_killed());
    }

    #[test]
    fn kill_before_run_does_not_start() {
        let kill = KillSwitch::default();
        assert!(!kill.is_killed());
        kill.kill();
        let r = run(&mut spec("echo hi"), &kill);
        assert_eq!(r.outcome, Outcome::Killed);
        assert_eq!(r.stdout, Captured::default());
    }

    #[test]
    fn kill_after_end_is_noop() {
        let kill = KillSwitch::new();
        let r = run(&mut spec("exit 0"), &kill);
        kill.kill();
        kill.kill();
        assert_eq!(r.outcome, Outcome::Exited(0));
        assert!(kill.is_killed());
    }

    #[test]
    fn job_starts_with_default_signals() {
        // Signals blocked or ignored around the start must not leak into the
        // job: the worker ignores SIGPIPE and blocks all while it spawns.
        // `exec`: grep reads the state it inherited, not that of a shell
        // (dash blocks every signal for a moment while it waits for a child).
        let r = run_job("exec grep -E '^Sig(Blk|Ign)' /proc/self/status");
        assert_eq!(r.outcome, Outcome::Exited(0));
        assert_eq!(
            text(&r.stdout),
            "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
        );
    }

    #[test]
    fn job_leads_its_own_group() {
        // The shell's own pid and process group, read by the program it execs.
        let r = run_job("exec cat /proc/self/stat");
        let stat = text(&r.stdout);
        let pid = stat.split_whitespace().next().expect("pid");
        let (_, rest) = stat.rsplit_once(')').expect("comm");
        let pgrp = rest.split_whitespace().nth(2).expect("pgrp");
        assert_eq!(pid, pgrp, "{stat}");
    }

    #[test]
    fn sigterm_ignored_gets_sigkill_after_grace() {
        let (_, took) = run_past_timeout("trap '' TERM; sleep 30", 100, 6);
        assert!(took >= KILL_GRACE, "took {took:?}");
    }

    #[test]
    fn nul_byte_in_job_could_not_start() {
        let r = run_job("echo a\0b");
        let Outcome::CouldNotStart(reason) = r.outcome else {
            panic!("unexpected {:?}", r.outcome);
        };
        assert!(reason.contains("NUL"), "{reason}");
    }

    #[test]
    fn concurrent_jobs_and_kills_each_report_their_own_job() {
        // Jobs started from many threads at once, a third of them killed
        // mid-run (those would sleep 5 s): each report belongs to its job.
        let reports: Vec<(usize, JobReport)> = thread::scope(|scope| {
            let runners: Vec<_> = (0..8)
                .map(|t| {
                    scope.spawn(move || {
                        (0..6)
                            .map(|j| {
                                let n = t * 6 + j;
                                let nap = if n % 3 == 0 { "5" } else { "0.05" };
                                let mut s = spec(&format!("sleep {nap}; echo $ZKMW_TASK_ID"));
                                s.task_id = format!("task-{n}");
                                let kill = KillSwitch::new();
                                let killer = (n % 3 == 0).then(|| {
                                    let kill = kill.clone();
                                    thread::spawn(move || {
                                        thread::sleep(Duration::from_millis(10));
                                        kill.kill();
                                    })
                                });
                                let report = run(&mut s, &kill);
                                if let Some(killer) = killer {
                                    killer.join().expect("killer thread");
                                }
                                (n, report)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            runners
                .into_iter()
                .flat_map(|r| r.join().expect("runner thread"))
                .collect()
        });
        assert_eq!(reports.len(), 48);
        for (n, r) in &reports {
            if n % 3 == 0 {
                assert_eq!(r.outcome, Outcome::Killed, "job {n}");
            } else {
                assert_eq!(r.outcome, Outcome::Exited(0), "job {n}");
                assert_eq!(text(&r.stdout), format!("task-{n}\n"), "job {n}");
            }
        }
    }

    /// Opens a descriptor without close-on-exec, as a shell leaves them
    /// (the lowest free number from 77 on, so no other test's fd is
    /// replaced), and checks that jobs see only 0, 1 and 2.
    fn assert_jobs_get_only_stdio() {
        let leaky = rustix::io::fcntl_dupfd_cloexec(std::io::stderr(), 77).expect("dup");
        rustix::io::fcntl_setfd(&leaky, rustix::io::FdFlags::empty()).expect("no cloexec");
        let fd = leaky.as_raw_fd();
        let r = run_job(&format!(
            "[ -e /proc/$$/fd/{fd} ] && echo leaked || echo closed"
        ));
        assert_eq!(text(&r.stdout), "closed\n");
        // `ls` lists the shell's descriptors from a process of its own, so
        // its directory's fd is not among them; `:` keeps sh from exec'ing it.
        let r = run_job("ls /proc/$$/fd; :");
        assert_eq!(text(&r.stdout), "0\n1\n2\n");
    }

    #[test]
    fn inherited_descriptors_are_closed() {
        assert_jobs_get_only_stdio();
    }

    #[test]
    fn inherited_descriptors_are_closed_without_close_range() {
        thread::scope(|scope| {
            scope.spawn(|| {
                refuse_close_range_on_this_thread();
                assert_jobs_get_only_stdio();
            });
        });
    }

    /// Makes `close_range` fail with ENOSYS, as before Linux 5.9, for this
    /// thread and the processes it starts: a seccomp filter, which applies
    /// to the thread that installs it only.
    fn refuse_close_range_on_this_thread() {
        let op = |code: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        };
        let filter = [
            // Load the system call's number (the first field of seccomp_data).
            op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
            op(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                0,
                1,
                libc::SYS_close_range as u32,
            ),
            op(
                libc::BPF_RET | libc::BPF_K,
                0,
                0,
                libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
            ),
            op(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
        ];
        let program = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr().cast_mut(),
        };
        // SAFETY: prctl with these options reads only `program`, which is
        // valid; the filter makes one system call fail, nothing else.
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            let mode = libc::SECCOMP_MODE_FILTER;
            assert_eq!(libc::prctl(libc::PR_SET_SECCOMP, mode, &program), 0);
        }
        // SAFETY: closes nothing (no descriptor is that high); only checks
        // the filter is in force.
        let rc = unsafe { libc::syscall(libc::SYS_close_range, 1 << 30, 1 << 30, 0) };
        assert_eq!(
            (rc, io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::ENOSYS))
        );
    }

    /// The progress channel is the one descriptor above 2, at the number
    /// `ZKMW_PROGRESS` names; its reports reach the sink, and lines that
    /// are not reports are dropped.
    #[test]
    fn progress_channel_is_the_only_descriptor_above_stdio() {
        let reports = Arc::new(Mutex::new(Vec::new()));
        let mut s = spec(
            "ls /proc/$$/fd; echo \"40 copying table 3\" >&$ZKMW_PROGRESS; \
             echo junk >&3; echo '101 x' >&3; echo 12.5 >&3",
        );
        let sink = Arc::clone(&reports);
        s.progress = Some(Box::new(move |p| lock(&sink).push(p)));
        let r = run(&mut s, &KillSwitch::new());
        assert_eq!(text(&r.stdout), "0\n1\n2\n3\n", "{}", text(&r.stderr));
        let got: Vec<(f64, String)> = lock(&reports)
            .iter()
            .map(|p| (p.percent, p.message.clone()))
            .collect();
        assert_eq!(
            got,
            [(40.0, "copying table 3".to_string()), (12.5, String::new())]
        );
        // Without a sink the job has no channel at all.
        let r = run_job("echo ${ZKMW_PROGRESS:-none}; ls /proc/$$/fd");
        assert_eq!(text(&r.stdout), "none\n0\n1\n2\n");
    }

    #[test]
    fn job_starting_with_a_dash_or_plus_is_not_an_option() {
        for job in ["-v; echo ok", "+v; echo ok"] {
            let r = run_job(job);
            assert_eq!(text(&r.stdout), "ok\n", "{job}: {}", text(&r.stderr));
            assert_eq!(r.outcome, Outcome::Exited(0), "{job}");
        }
    }

    #[test]
    fn only_jobs_that_look_like_options_get_a_double_dash() {
        let argv = |job: &str| {
            let (_, argv, _) = command(&spec(job), false).expect("command");
            argv.into_iter()
                .map(|a| a.into_string().expect("utf-8"))
                .collect::<Vec<_>>()
        };
        assert_eq!(argv("echo -v"), ["sh", "-c", "echo -v"]);
        assert_eq!(argv("-v"), ["sh", "-c", "--", "-v"]);
        assert_eq!(argv("+v"), ["sh", "-c", "--", "+v"]);
    }

    /// Runs a job that traps SIGTERM (and goes on), and once it runs calls
    /// `stop` from another thread with its switch and a file that exists
    /// once the job got SIGTERM. `stop` returns the moment the grace under
    /// test began. Returns the report, the job's process group and how long
    /// the run went on from that moment: waiting for the trap, slow on a
    /// loaded machine, counts only where the test says so.
    fn stop_job_trapping_term(
        name: &str,
        stop: impl FnOnce(&KillSwitch, &Path) -> Instant + Send,
    ) -> (JobReport, String, Duration) {
        let term = format!("{name}-term");
        let files = TempFiles::new([name, &term]);
        let [started, termed] = &files.0;
        // `sleep & wait`, not a foreground `sleep`: a SIGTERM that comes
        // before the shell has started its sleep would wait for that whole
        // sleep to run its trap, while `wait` returns to it at once.
        let job = format!(
            "trap \"touch '{}'\" TERM; echo \"before $$\"; touch '{}'; while :; do sleep 30 & wait $!; done",
            termed.display(),
            started.display()
        );
        let kill = KillSwitch::new();
        let (report, took) = thread::scope(|scope| {
            let stopper = scope.spawn(|| {
                assert!(wait_for_file(started), "job never started");
                stop(&kill, termed)
            });
            let report = run(&mut spec(&job), &kill);
            let ended = Instant::now();
            (report, ended - stopper.join().expect("stopper thread"))
        });
        let out = text(&report.stdout);
        let pgid = out.strip_prefix("before ").expect(out).trim().to_string();
        (report, pgid, took)
    }

    #[test]
    fn cancel_kills_after_its_grace_and_keeps_the_output() {
        let grace = Duration::from_millis(300);
        let (r, pgid, took) = stop_job_trapping_term("cancel", |kill, _| {
            let at = Instant::now();
            kill.cancel(grace);
            at
        });
        assert_eq!(r.outcome, Outcome::Cancelled);
        assert_eq!(text(&r.stdout), format!("before {pgid}\n"));
        // Well before the 2 s of a kill.
        assert!(took >= grace, "took {took:?}");
        assert!(took < grace + Duration::from_millis(1200), "took {took:?}");
        assert!(group_gone(&pgid), "process group {pgid} survived");
    }

    #[test]
    fn stopped_before_run_does_not_start_and_the_first_reason_wins() {
        let cancel_then_kill = KillSwitch::new();
        cancel_then_kill.cancel(Duration::MAX);
        cancel_then_kill.kill();
        let kill_then_cancel = KillSwitch::new();
        kill_then_cancel.kill();
        kill_then_cancel.cancel(Duration::ZERO);
        // A shell that cannot start: trying to would end in CouldNotStart.
        let mut s = spec("echo hi");
        s.shell = "/nonexistent/sh".to_string();
        for (kill, first) in [
            (cancel_then_kill, Outcome::Cancelled),
            (kill_then_cancel, Outcome::Killed),
        ] {
            assert!(kill.is_killed());
            let r = run(&mut s, &kill);
            assert_eq!(r.outcome, first);
            assert_eq!(r.stdout, Captured::default());
        }
    }

    #[test]
    fn kill_during_a_cancel_keeps_cancelled_and_shortens_the_grace() {
        let (r, _, took) = stop_job_trapping_term("cancel-kill", |kill, termed| {
            kill.cancel(Duration::from_secs(30));
            assert!(wait_for_file(termed), "no SIGTERM");
            let at = Instant::now();
            kill.kill();
            at
        });
        assert_eq!(r.outcome, Outcome::Cancelled);
        assert!(took >= KILL_GRACE, "took {took:?}");
        assert!(
            took < KILL_GRACE + Duration::from_millis(1500),
            "took {took:?}"
        );
    }

    #[test]
    fn cancel_during_a_kill_keeps_killed_and_shortens_the_grace() {
        let grace = Duration::from_millis(300);
        let (r, _, took) = stop_job_trapping_term("kill-cancel", |kill, termed| {
            // Counted from the kill: the cancel cuts its grace short.
            let at = Instant::now();
            kill.kill();
            assert!(wait_for_file(termed), "no SIGTERM");
            kill.cancel(grace);
            at
        });
        assert_eq!(r.outcome, Outcome::Killed);
        assert!(took >= grace, "took {took:?}");
        assert!(took < KILL_GRACE, "took {took:?}");
    }

    #[test]
    fn raw_bytes_kept() {
        let r = run_job("printf '\\377'");
        assert_eq!(r.outcome, Outcome::Exited(0));
        assert_eq!(r.stdout.bytes, vec![0xff]);
    }
}
