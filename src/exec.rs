//! Running one job for a worker.
//!
//! A job is `sh -c COMMAND`, started in its own process group so that a
//! timeout or a kill reaches everything it spawned, not just the shell. It
//! gets a clean environment (only [`PASSED_ENV`] plus `ZKMW_TASK_ID` and
//! `ZKMW_ATTEMPT`), stdin from `/dev/null`, and its stdout and stderr are
//! captured up to a cap so memory stays bounded whatever the job prints.
//!
//! [`run`] blocks the calling thread until the job is over. A [`KillSwitch`]
//! lets another thread stop the job at any time (worker shutdown past the
//! drain timeout, ZooKeeper session lost).
//!
//! How a run goes:
//! - two reader threads drain stdout and stderr, a waiter thread waits for
//!   the shell to exit *without reaping it* (`waitid(WNOWAIT)`), so the
//!   group id (the shell's pid) can never be reused while we may still
//!   signal it;
//! - the runner waits on the waiter, the kill switch and the timeout; on
//!   timeout or kill it sends SIGTERM to the group, then SIGKILL after a
//!   grace of 2 s;
//! - the shell dies with the worker (`PR_SET_PDEATHSIG`), so a worker killed
//!   with SIGKILL does not leave its jobs running beside their re-runs;
//! - once the shell has exited, the readers get 200 ms to reach end
//!   of file, then the whole group gets SIGKILL (a background grandchild such
//!   as `sleep 100 &` would otherwise hold the pipes open), and the shell is
//!   reaped.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

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

/// Time between SIGTERM and SIGKILL when we stop a job.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// Time the readers get to reach end of file once the shell has exited,
/// before the rest of its process group is killed.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// Time the readers get after the group was killed; past it, we stop waiting
/// for them (a process that left the group may still hold a pipe).
const READER_GIVE_UP: Duration = Duration::from_secs(1);

/// Size of one read from a pipe.
const CHUNK: usize = 8 * 1024;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Shell command, passed to `sh -c`.
    pub command: String,
    /// Task id, exported to the job as `ZKMW_TASK_ID`.
    pub task_id: String,
    /// Attempt number, exported to the job as `ZKMW_ATTEMPT`.
    pub attempt: u32,
    /// Time after which the job is stopped; `None` for no limit.
    pub timeout: Option<Duration>,
    /// Maximum number of bytes kept of stdout, and of stderr, each.
    pub output_cap: usize,
    /// Shell to run the command with, normally `"sh"`.
    pub shell: String,
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
    /// We stopped the job (or did not start it) because of the [`KillSwitch`].
    Killed,
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

/// A handle another thread can use to kill a running job's whole process
/// group (worker shutdown past the drain timeout, session lost).
///
/// Clones share the same switch; it is `Send + Sync` and [`KillSwitch::kill`]
/// works from any thread at any time. Killing before the job started makes
/// [`run`] not start it ([`Outcome::Killed`]); killing while it is being
/// started still kills it; killing after it ended does nothing. A killed
/// switch stays killed.
#[derive(Debug, Clone)]
pub struct KillSwitch {
    inner: Arc<KillInner>,
}

#[derive(Debug)]
struct KillInner {
    killed: AtomicBool,
    /// Never sends; `kill` drops it, which disconnects `rx` for good, so a
    /// waiting runner wakes up whenever the kill happens, even before it
    /// started waiting.
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
}

impl KillSwitch {
    /// A switch that has not been killed.
    pub fn new() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(0);
        KillSwitch {
            inner: Arc::new(KillInner {
                killed: AtomicBool::new(false),
                tx: Mutex::new(Some(tx)),
                rx,
            }),
        }
    }

    /// Kills the job run with this switch, now or when it starts.
    pub fn kill(&self) {
        self.inner.killed.store(true, Ordering::SeqCst);
        lock(&self.inner.tx).take();
    }

    /// Whether [`KillSwitch::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.inner.killed.load(Ordering::SeqCst)
    }
}

impl Default for KillSwitch {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the job to completion (blocking the calling thread) and reports how
/// it ended.
pub fn run(spec: &JobSpec, kill: &KillSwitch) -> JobReport {
    let started_ms = now_ms();
    let (outcome, stdout, stderr) = if kill.is_killed() {
        (Outcome::Killed, Captured::default(), Captured::default())
    } else {
        execute(spec, kill)
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
enum Stop {
    Timeout,
    Kill,
}

fn execute(spec: &JobSpec, kill: &KillSwitch) -> (Outcome, Captured, Captured) {
    let mut child = match command(spec).spawn() {
        Ok(child) => child,
        Err(e) => return not_started(format!("{}: {e}", spec.shell)),
    };
    // The shell leads its own group: the group id is its pid.
    let pid = child.id();
    let pgid = pid as libc::pid_t;
    let stdout = Arc::new(Mutex::new(Captured::default()));
    let stderr = Arc::new(Mutex::new(Captured::default()));
    // Readers hold clones of `done_tx`; `done_rx` disconnects when both are done.
    let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(0);
    let (exit_tx, exit_rx) = crossbeam_channel::bounded::<()>(1);

    let sinks = [&stdout, &stderr];
    if let Err(e) = start_threads(&mut child, spec.output_cap, sinks, done_tx, exit_tx) {
        kill_group(pgid, libc::SIGKILL);
        if let Err(wait_err) = child.wait() {
            log::error!("could not reap job process {pid}: {wait_err}");
        }
        return not_started(format!("could not start a helper thread: {e}"));
    }

    let stopped = supervise(spec.timeout, kill, pgid, &exit_rx);
    // The shell has exited but is not reaped: `pgid` still names our group.
    if done_rx.recv_timeout(DRAIN_GRACE) == Err(RecvTimeoutError::Timeout) {
        log::debug!("job process group {pgid} still holds its output pipes");
    }
    kill_group(pgid, libc::SIGKILL);
    if done_rx.recv_timeout(READER_GIVE_UP) == Err(RecvTimeoutError::Timeout) {
        log::warn!(
            "job {pgid}: output still held open by a process outside its group; not waiting for it"
        );
    }
    let status = child.wait();
    let outcome = outcome(stopped, status, pid);
    (outcome, lock(&stdout).clone(), lock(&stderr).clone())
}

fn not_started(reason: String) -> (Outcome, Captured, Captured) {
    let empty = Captured::default();
    (Outcome::CouldNotStart(reason), empty.clone(), empty)
}

/// `sh -c COMMAND` with a clean environment, in a new process group.
fn command(spec: &JobSpec) -> Command {
    let mut cmd = Command::new(&spec.shell);
    cmd.arg("-c")
        .arg(&spec.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .process_group(0);
    for &name in PASSED_ENV {
        match std::env::var_os(name) {
            Some(value) => {
                cmd.env(name, value);
            }
            None if name == "PATH" => {
                cmd.env(name, DEFAULT_PATH);
            }
            None => {}
        }
    }
    cmd.env("ZKMW_TASK_ID", &spec.task_id)
        .env("ZKMW_ATTEMPT", spec.attempt.to_string());
    // If the worker dies (even by SIGKILL), the kernel kills the job's
    // shell: its run is re-run elsewhere, and must not go on beside it.
    // The death signal follows the spawning thread, a pool thread that
    // lives as long as the worker.
    let worker = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The worker died before the signal was armed.
            if libc::getppid() != worker {
                return Err(io::Error::other("the worker exited"));
            }
            Ok(())
        });
    }
    cmd
}

/// Starts the two readers and the waiter.
fn start_threads(
    child: &mut Child,
    cap: usize,
    sinks: [&Arc<Mutex<Captured>>; 2],
    done_tx: Sender<()>,
    exit_tx: Sender<()>,
) -> io::Result<()> {
    let [out_sink, err_sink] = sinks;
    if let Some(pipe) = child.stdout.take() {
        let (sink, done) = (Arc::clone(out_sink), done_tx.clone());
        spawn("zkmw-job-stdout", move || {
            read_into(pipe, cap, &sink);
            drop(done);
        })?;
    }
    if let Some(pipe) = child.stderr.take() {
        let sink = Arc::clone(err_sink);
        spawn("zkmw-job-stderr", move || {
            read_into(pipe, cap, &sink);
            drop(done_tx);
        })?;
    }
    let pid = child.id();
    spawn("zkmw-job-wait", move || {
        if let Err(e) = wait_exited(pid) {
            log::error!("waiting for job process {pid}: {e}");
        }
        let _ = exit_tx.send(());
    })?;
    Ok(())
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map(drop)
}

/// Reads `pipe` to its end, keeping the first `cap` bytes in `sink`.
fn read_into(mut pipe: impl Read, cap: usize, sink: &Mutex<Captured>) {
    let mut buf = [0u8; CHUNK];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("reading job output: {e}");
                return;
            }
        };
        let mut captured = lock(sink);
        let room = cap.saturating_sub(captured.bytes.len());
        captured.bytes.extend_from_slice(&buf[..n.min(room)]);
        captured.total += n as u64;
        captured.truncated = captured.total > cap as u64;
    }
}

/// Blocks until process `pid` has exited, leaving it unreaped (a zombie) so
/// its pid, which is also its group id, cannot be reused yet.
fn wait_exited(pid: u32) -> io::Result<()> {
    loop {
        // SAFETY: siginfo_t is plain data, for which all zeroes is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid place for waitid to write to; WNOWAIT
        // leaves the child to be reaped by `Child::wait`.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Waits until the shell exits; stops the job on timeout or kill. Returns
/// why we stopped it, if we did. On return, the shell has exited (or the
/// waiter failed, in which case the group got SIGKILL).
fn supervise(
    timeout: Option<Duration>,
    kill: &KillSwitch,
    pgid: libc::pid_t,
    exit_rx: &Receiver<()>,
) -> Option<Stop> {
    let timer = timeout.map_or_else(crossbeam_channel::never, crossbeam_channel::after);
    // Biased towards the exit: a job that has ended is not reported stopped.
    let stop = crossbeam_channel::select_biased! {
        recv(exit_rx) -> _ => return None,
        recv(kill.inner.rx) -> _ => Stop::Kill,
        recv(timer) -> _ => Stop::Timeout,
    };
    kill_group(pgid, libc::SIGTERM);
    if exit_rx.recv_timeout(KILL_GRACE).is_err() {
        kill_group(pgid, libc::SIGKILL);
        let _ = exit_rx.recv();
    }
    Some(stop)
}

/// Sends `sig` to process group `pgid`.
fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
    // 0 and 1 would mean our own group or init's: never signal those.
    if pgid <= 1 {
        return;
    }
    // SAFETY: killpg only sends a signal. `pgid` is our unreaped child's pid,
    // so it still names the job's group and nothing else.
    if unsafe { libc::killpg(pgid, sig) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            log::warn!("could not signal job process group {pgid}: {err}");
        }
    }
}

/// How the job ended, from why we stopped it (if we did) and its status.
fn outcome(stopped: Option<Stop>, status: io::Result<ExitStatus>, pid: u32) -> Outcome {
    match (stopped, status) {
        (Some(Stop::Timeout), _) => Outcome::TimedOut,
        (Some(Stop::Kill), _) => Outcome::Killed,
        (None, Ok(status)) => match (status.code(), status.signal()) {
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
    use std::path::{Path, PathBuf};
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
        }
    }

    fn run_job(command: &str) -> JobReport {
        run(&spec(command), &KillSwitch::new())
    }

    fn text(c: &Captured) -> &str {
        std::str::from_utf8(&c.bytes).expect("utf-8 output")
    }

    /// Whether process `pid` is gone (or a zombie nobody reaped yet),
    /// polling for at most 5 s.
    fn gone(pid: libc::pid_t) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // SAFETY: signal 0 only checks that the process exists.
            let exists = unsafe { libc::kill(pid, 0) } == 0;
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, rest)| rest.trim_start().starts_with('Z'))
                })
                .unwrap_or(false);
            if !exists || zombie {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("zkmw-exec-{name}-{}", std::process::id()))
    }

    fn wait_for_file(path: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if path.exists() {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
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

    #[test]
    fn timeout_stops_job() {
        let mut s = spec("sleep 30");
        s.timeout = Some(Duration::from_millis(200));
        let t = Instant::now();
        let r = run(&s, &KillSwitch::new());
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
    }

    #[test]
    fn timeout_kills_grandchildren() {
        let mut s = spec("sleep 30 & echo $!; wait");
        s.timeout = Some(Duration::from_millis(200));
        let t = Instant::now();
        let r = run(&s, &KillSwitch::new());
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?}",
            t.elapsed()
        );
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
    fn output_is_capped() {
        let mut s = spec("head -c 1000000 /dev/zero; echo done >&2");
        s.output_cap = 1000;
        let r = run(&s, &KillSwitch::new());
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
        let r = run(&s, &KillSwitch::new());
        let Outcome::CouldNotStart(reason) = r.outcome else {
            panic!("unexpected {:?}", r.outcome);
        };
        assert!(reason.contains("No such file or directory"), "{reason}");
        assert!(reason.starts_with("/nonexistent/sh"), "{reason}");
    }

    #[test]
    fn kill_switch_from_another_thread() {
        let marker = temp_path("kill-marker");
        let _ = std::fs::remove_file(&marker);
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
            &spec(&format!("touch '{}'; sleep 30", marker.display())),
            &kill,
        );
        let started = killer.join().expect("killer thread");
        let _ = std::fs::remove_file(&marker);
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
        let r = run(&spec("echo hi"), &kill);
        assert_eq!(r.outcome, Outcome::Killed);
        assert_eq!(r.stdout, Captured::default());
    }

    #[test]
    fn kill_after_end_is_noop() {
        let kill = KillSwitch::new();
        let r = run(&spec("exit 0"), &kill);
        kill.kill();
        kill.kill();
        assert_eq!(r.outcome, Outcome::Exited(0));
        assert!(kill.is_killed());
    }

    #[test]
    fn raw_bytes_kept() {
        let r = run_job("printf '\\377'");
        assert_eq!(r.outcome, Outcome::Exited(0));
        assert_eq!(r.stdout.bytes, vec![0xff]);
    }
}
