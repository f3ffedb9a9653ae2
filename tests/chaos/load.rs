//! The load: submitters, each a thread running `zkmw submit` for its share
//! of the tasks, paced evenly over the load's duration. Each job records
//! its run in the ledger ([`Ledger::job`]) around a sleep of 0-1.5 s, or
//! of 4-8 s for one job in 20 (to outlive a killed or frozen worker's
//! session). What each submit said is kept: the acknowledged ones
//! (`acked-K.txt`: task id and marker), the failures
//! (`submit-failures-K.txt`) and the warnings of successful ones
//! (`submit/<marker>.warn`).
//!
//! One submit in ten holds lock `chaos-a` and one in ten `chaos-b`
//! (`--lock`), and one in ten is keyed (`--unique`): the `i`-th submits of
//! all submitters share the key `chaos-<i>`, so they race to store one
//! task and the others must print its id.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::common::{Ledger, Namespace};

/// Longest one `zkmw submit` may take before it is killed (and counted as
/// a failure).
const SUBMIT_LIMIT: Duration = Duration::from_secs(60);

/// An acknowledged submit.
#[derive(Debug, Clone)]
pub struct Ack {
    /// The task id `submit` printed.
    pub task: String,
    /// The submit's own name, `s<submitter>-<n>`, also in its job.
    pub marker: String,
    /// How long its job sleeps.
    pub sleep: Duration,
    /// Its lock or key, if any.
    pub guard: Guard,
}

/// What a submit asks beyond its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guard {
    /// Nothing.
    None,
    /// `--lock NAME`.
    Lock(String),
    /// `--unique KEY`.
    Unique(String),
}

impl Guard {
    /// The guard of the `i`-th submit of a submitter.
    fn of(i: u32) -> Guard {
        match i % 10 {
            3 => Guard::Lock("chaos-a".into()),
            7 => Guard::Lock("chaos-b".into()),
            0 => Guard::Unique(format!("chaos-{i}")),
            _ => Guard::None,
        }
    }

    /// Its `submit` flags.
    fn args(&self) -> Vec<String> {
        match self {
            Guard::None => Vec::new(),
            Guard::Lock(name) => vec!["--lock".into(), name.clone()],
            Guard::Unique(key) => vec!["--unique".into(), key.clone()],
        }
    }
}

/// The submitters' shared state.
pub struct Load<'a> {
    ns: &'a Namespace,
    ledger: &'a Ledger,
    dir: PathBuf,
    length: Duration,
    acked: Mutex<Vec<Ack>>,
    failures: Mutex<Vec<String>>,
    running: AtomicUsize,
    stop: AtomicBool,
}

impl<'a> Load<'a> {
    /// A load of `submitters` spread over `length`, submitting in `ns`
    /// jobs that record to `ledger`; files in `dir`.
    pub fn new(
        ns: &'a Namespace,
        ledger: &'a Ledger,
        dir: &Path,
        submitters: u32,
        length: Duration,
    ) -> Load<'a> {
        let submits = dir.join("submit");
        fs::create_dir_all(&submits).unwrap_or_else(|e| panic!("{}: {e}", submits.display()));
        Load {
            ns,
            ledger,
            dir: dir.to_path_buf(),
            length,
            acked: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            running: AtomicUsize::new(submitters as usize),
            stop: AtomicBool::new(false),
        }
    }

    /// Submitter `k`: submits `n` tasks, the `i`-th at `i/n` of the load's
    /// length (unless it is behind), its choices from `seed`. Run by a
    /// thread; it ends early after [`Load::stop`].
    pub fn submitter(&self, k: u32, n: u32, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let start = Instant::now();
        let acked = self.dir.join(format!("acked-{k}.txt"));
        let failures = self.dir.join(format!("submit-failures-{k}.txt"));
        for i in 1..=n {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let marker = format!("s{k}-{i:05}");
            let sleep = Duration::from_millis(match rng.random_range(0..20) {
                0 => rng.random_range(40..=80) * 100,
                _ => rng.random_range(0..=15) * 100,
            });
            self.submit(&marker, sleep, Guard::of(i), (&acked, &failures));
            let due = start + self.length * i / n;
            thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// One `zkmw submit` of the job of `marker`, and what became of it (in
    /// `files`: the acknowledged, the failures).
    fn submit(&self, marker: &str, sleep: Duration, guard: Guard, files: (&Path, &Path)) {
        let (acked, failures) = files;
        let work = format!(
            ": {marker}; sleep {}.{}",
            sleep.as_secs(),
            sleep.subsec_millis() / 100
        );
        let mut cmd = self.ns.cmd();
        cmd.arg("submit")
            .args(guard.args())
            .arg(self.ledger.job(&work));
        let out = crate::common::command::run_within(cmd, SUBMIT_LIMIT);
        let task = match &out {
            Ok(Some(out)) if out.status.success() => Some(stdout_line(out)),
            _ => None,
        }
        .filter(|t| zkmw::layout::is_task_name(t));
        let Some(task) = task else {
            let line = format!("{} {marker} {}", crate::events::stamp(), failure(&out));
            append(failures, &line);
            lock(&self.failures).push(line);
            return;
        };
        append(acked, &format!("{task} {marker}"));
        if let Ok(Some(out)) = &out
            && !out.stderr.is_empty()
        {
            let warn = self.dir.join("submit").join(format!("{marker}.warn"));
            let _ = fs::write(warn, &out.stderr);
        }
        let marker = marker.to_string();
        lock(&self.acked).push(Ack {
            task,
            marker,
            sleep,
            guard,
        });
    }

    /// True while a submitter runs.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::SeqCst) > 0
    }

    /// Makes the submitters stop after their current submit.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The acknowledged submits so far.
    pub fn acked(&self) -> Vec<Ack> {
        lock(&self.acked).clone()
    }

    /// How many submits were acknowledged so far.
    pub fn acked_count(&self) -> usize {
        lock(&self.acked).len()
    }

    /// The failed submits so far, one line each.
    pub fn failures(&self) -> Vec<String> {
        lock(&self.failures).clone()
    }

    /// How long the job of acknowledged task `task` sleeps.
    pub fn sleep_of(&self, task: &str) -> Option<Duration> {
        let acked = lock(&self.acked);
        acked.iter().rev().find(|a| a.task == task).map(|a| a.sleep)
    }

    /// The markers of the acknowledged submits that warned.
    pub fn warned(&self) -> Vec<String> {
        let mut warned: Vec<String> = fs::read_dir(self.dir.join("submit"))
            .into_iter()
            .flatten()
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".warn")
                    .map(String::from)
            })
            .collect();
        warned.sort();
        warned
    }
}

/// The first line of a command's stdout.
fn stdout_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a failed submit did: its exit code and output, on one line.
fn failure(out: &std::io::Result<Option<Output>>) -> String {
    match out {
        Err(e) => format!("cannot start: {e}"),
        Ok(None) => format!("still running after {SUBMIT_LIMIT:?}: killed"),
        Ok(Some(out)) => format!(
            "rc={:?} stdout=[{}] stderr=[{}]",
            out.status.code(),
            stdout_line(out),
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', " ")
        ),
    }
}

/// Appends `line` to the file `path`.
fn append(path: &Path, line: &str) {
    let file = OpenOptions::new().create(true).append(true).open(path);
    if let Ok(mut file) = file {
        let _ = writeln!(file, "{line}");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
