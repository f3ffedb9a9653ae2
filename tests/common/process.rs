//! Processes the tests start, and what /proc says about any process.
//!
//! [`Proc`] is a started service, SIGKILLed and reaped on drop (with the
//! job process groups it started), even when the test panics; [`Reaped`]
//! is a short-lived child (a submitter, a waiter, `sh`), the same.

use std::fs::{self, File};
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Instant;

use super::wait::wait_until;

/// A service the test started. Dropping it SIGKILLs it (and the job process
/// groups it started) and reaps it.
pub struct Proc {
    /// The name its log is under (its id).
    pub name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// Job process groups it left running when it was SIGKILLed.
    orphans: Vec<i32>,
}

impl Proc {
    /// Starts `cmd` as the service `name`, its stdout discarded and its
    /// stderr written to `log` (a new file).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        let file = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = cmd
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            exited: None,
            orphans: Vec::new(),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would, and reap it. Its jobs (each in its own
    /// process group) are left running, as they would be after a crash of
    /// the worker process alone; they are killed when the Proc is dropped.
    pub fn kill9(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.orphans.extend(job_groups(self.pid() as i32));
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// SIGTERM: the clean stop.
    pub fn term(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGSTOP: freeze it (its session then expires).
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: thaw it.
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if self.exited.is_none() {
            // SAFETY: kill only sends a signal to our own unreaped child.
            unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        }
    }

    /// Waits until the kernel shows it stopped (after [`Proc::stop`]).
    pub fn wait_stopped(&self, deadline: Instant) -> bool {
        wait_until(deadline, || {
            proc_stat(self.pid() as i32).is_some_and(|s| s.state == 'T')
        })
    }

    /// Waits for it to exit by itself; its status, or `None` at the deadline.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        if self.exited.is_none() {
            wait_until(deadline, || {
                self.exited = self.child.try_wait().ok().flatten();
                self.exited.is_some()
            });
        }
        self.exited
    }

    /// How it exited, once it has (and has been reaped).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many lines of its log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until its log has more than `seen` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, seen: usize, deadline: Instant) -> bool {
        wait_until(deadline, || self.log_count(needle) > seen)
    }

    /// True while it has not exited (a stopped process counts as running).
    pub fn is_running(&mut self) -> bool {
        self.exit_status().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // Its jobs first, while it still holds them (unreaped), so their
            // group ids cannot name anything else.
            for pgid in job_groups(self.pid() as i32) {
                // SAFETY: killpg only sends a signal.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pgid in std::mem::take(&mut self.orphans) {
            // Only if that group still is a zkmw job (not a reused pid).
            let still_a_job =
                job_task(pgid).is_some() && proc_stat(pgid).is_some_and(|s| s.pgrp == pgid);
            if still_a_job {
                // SAFETY: killpg only sends a signal.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
        }
    }
}

/// A short-lived child of a test (a submitter, a waiter, `sh`), the
/// [`Child`] itself through `Deref`. A test that panics before it waits
/// would leave it running: dropping it SIGKILLs it and reaps it, unless
/// the test already waited for it. Services are [`Proc`]s.
pub struct Reaped(Option<Child>);

impl Reaped {
    /// Starts `cmd`.
    pub fn spawn(cmd: &mut Command) -> io::Result<Reaped> {
        cmd.spawn().map(|child| Reaped(Some(child)))
    }

    /// SIGKILL, and to its process group too while it runs and leads one
    /// (`Command::process_group(0)`): unreaped, its pid names nothing else.
    pub fn kill(&mut self) -> io::Result<()> {
        let pid = self.id() as i32;
        if self.try_wait()?.is_none() && proc_stat(pid).is_some_and(|s| s.pgrp == pid) {
            // SAFETY: killpg only sends a signal.
            unsafe { libc::killpg(pid, libc::SIGKILL) };
        }
        self.deref_mut().kill()
    }

    /// Waits for it to exit, reading all of its piped output.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        self.0
            .take()
            .expect("a Reaped has its child")
            .wait_with_output()
    }
}

impl Deref for Reaped {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a Reaped has its child")
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a Reaped has its child")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.is_some() {
            let _ = self.kill();
            let _ = self.wait();
        }
    }
}

/// The fields of /proc/PID/stat the harness uses.
struct ProcStat {
    state: char,
    ppid: i32,
    pgrp: i32,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ...": comm may hold anything, even ")".
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

/// True while process `pid` exists and is not a zombie. (Orphaned jobs are
/// reparented to pid 1, which on some machines never reaps them: a zombie
/// is gone for every purpose but this one.)
pub fn pid_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// True while any process of group `pgid` exists and is not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    all_pids().any(|pid| {
        proc_stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
    })
}

/// The parent of process `pid`, while it exists.
pub fn parent_pid(pid: i32) -> Option<i32> {
    proc_stat(pid).map(|s| s.ppid)
}

/// The `ZKMW_TASK_ID` in the environment of process `pid`: the task it
/// runs, when it is a zkmw job (or a process the job started).
pub fn job_task(pid: i32) -> Option<String> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(b"ZKMW_TASK_ID="))
        .map(|id| String::from_utf8_lossy(id).into_owned())
}

/// The job process groups `pid` started: its children leading their own group.
fn job_groups(pid: i32) -> Vec<i32> {
    all_pids()
        .filter(|&child| proc_stat(child).is_some_and(|s| s.ppid == pid && s.pgrp == child))
        .collect()
}

/// Every process id in /proc now.
fn all_pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
}
