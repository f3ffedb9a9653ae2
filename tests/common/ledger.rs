//! Ledgers: files that jobs append to, to count and to time their runs.
//!
//! A job made by [`Ledger::record`] appends its task id alone: one line per
//! run, counted by [`Ledger::counts`]. A job made by [`Ledger::job`] wraps
//! its work in two lines, `start TASK ATTEMPT PID UNIX-NS` when it begins
//! and `end TASK ATTEMPT PID UNIX-NS` when it ends normally; a run that was
//! killed has no end line, so [`Ledger::watch`] polls the pids of the runs
//! it saw start (every 50 ms) and records when each disappeared. Two runs
//! of one task [overlap](overlaps) when the later one started before the
//! earlier one ended or died.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use super::background::Background;
use super::process::{job_task, parent_pid, pid_alive};
use super::wait::now_ns;

/// How often [`Watch`] reads the ledger and looks at the runs' pids.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// A file jobs append their runs to.
pub struct Ledger {
    /// The file.
    pub path: PathBuf,
}

impl Ledger {
    /// A new, empty ledger at `path`.
    pub fn create(path: PathBuf) -> Ledger {
        File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Ledger { path }
    }

    /// The shell command that records one run of the current task.
    pub fn record(&self) -> String {
        format!("echo $ZKMW_TASK_ID >> '{}'", self.path.display())
    }

    /// A job that runs the shell command `work` between a `start` and an
    /// `end` line (see the module's doc); `$$` is the job's shell.
    pub fn job(&self, work: &str) -> String {
        let line = |what: &str| {
            format!(
                "echo \"{what} $ZKMW_TASK_ID $ZKMW_ATTEMPT $$ $(date +%s%N)\" >> '{}'",
                self.path.display()
            )
        };
        format!("{}; {work}; {}", line("start"), line("end"))
    }

    /// How many runs each task id recorded (a `record` line or a `start`
    /// line each).
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let task = match line.split_whitespace().collect::<Vec<_>>()[..] {
                ["start", task, ..] => task,
                ["end", ..] => continue,
                _ => line,
            };
            *counts.entry(task.to_string()).or_default() += 1;
        }
        counts
    }

    /// Asserts that the ledger holds exactly `ids`, each once.
    pub fn assert_each_exactly_once(&self, ids: &[String]) {
        let counts = self.counts();
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "tasks that ran more than once: {twice:?}");
        let missing: Vec<_> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
        assert!(missing.is_empty(), "tasks that never ran: {missing:?}");
        let unknown: Vec<_> = counts.keys().filter(|id| !ids.contains(id)).collect();
        assert!(
            unknown.is_empty(),
            "runs of tasks nobody submitted: {unknown:?}"
        );
    }

    /// Starts watching the runs of [`Ledger::job`]s: a thread reads the new
    /// lines and looks at the pids of the runs still going, until the
    /// [`Watch`] is dropped.
    pub fn watch(&self) -> Watch {
        let book = Arc::new(Mutex::new(Book::new(self.path.clone())));
        let thread = {
            let book = Arc::clone(&book);
            Background::spawn(move |stop| {
                while !stop.load(Ordering::SeqCst) {
                    lock(&book).poll();
                    thread::sleep(WATCH_EVERY);
                }
            })
        };
        Watch {
            book,
            _thread: thread,
        }
    }
}

/// One run of a job, from the ledger and the watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Its task id.
    pub task: String,
    /// Its `$ZKMW_ATTEMPT`.
    pub attempt: u32,
    /// The pid of its shell.
    pub pid: i32,
    /// Its start line's time (unix ns).
    pub started_ns: u128,
    /// Its end line's time, when it ended normally.
    pub ended_ns: Option<u128>,
    /// When the watch found it gone without an end line (within a poll).
    pub died_ns: Option<u128>,
    /// Its shell's parent (the worker process), as first seen.
    pub parent: Option<i32>,
}

impl Run {
    /// When it stopped running: its end, else its death; `None` while it
    /// still runs.
    pub fn finished_ns(&self) -> Option<u128> {
        self.ended_ns.or(self.died_ns)
    }

    /// True when `later`, a run (of the same task, or of one with the same
    /// lock) that started after this one, started before this one ended or
    /// died.
    pub fn overlaps(&self, later: &Run) -> bool {
        self.finished_ns().is_none_or(|end| later.started_ns < end)
    }
}

/// For each task with overlapping runs, its first such pair (earlier run,
/// later run), in task order.
pub fn overlaps(runs: &[Run]) -> Vec<(Run, Run)> {
    overlaps_by(runs, |run| Some(run.task.clone()))
}

/// For each group of runs (by `group`; `None`: in none) in which two runs
/// overlap, its first such pair (earlier run, later run), in group order:
/// by task, or by the lock the runs' tasks share.
pub fn overlaps_by(runs: &[Run], group: impl Fn(&Run) -> Option<String>) -> Vec<(Run, Run)> {
    let mut groups: BTreeMap<String, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        if let Some(key) = group(run) {
            groups.entry(key).or_default().push(run);
        }
    }
    let mut found = Vec::new();
    for mut of_group in groups.into_values() {
        of_group.sort_by_key(|r| r.started_ns);
        let pair = of_group.iter().enumerate().find_map(|(i, later)| {
            let earlier = of_group[..i].iter().find(|e| e.overlaps(later))?;
            Some(((*earlier).clone(), (*later).clone()))
        });
        found.extend(pair);
    }
    found
}

/// The ledger's runs as a [`Watch`] sees them.
pub struct Watch {
    book: Arc<Mutex<Book>>,
    _thread: Background<()>,
}

impl Watch {
    /// Every run so far, after one more look at the ledger and the pids.
    pub fn runs(&self) -> Vec<Run> {
        let mut book = lock(&self.book);
        book.poll();
        book.runs.clone()
    }

    /// The runs still going, as of the watch's last look.
    pub fn running(&self) -> Vec<Run> {
        let book = lock(&self.book);
        let running = book.runs.iter().filter(|r| r.finished_ns().is_none());
        running.cloned().collect()
    }

    /// The lines that are neither a start nor an end line.
    pub fn malformed(&self) -> Vec<String> {
        lock(&self.book).malformed.clone()
    }
}

/// What the watch knows: the runs, and how far it has read.
struct Book {
    path: PathBuf,
    /// Bytes of the ledger read so far.
    read: u64,
    /// The last line read, while it has no newline yet.
    partial: String,
    runs: Vec<Run>,
    /// Index in `runs` of each (task, attempt, pid).
    index: HashMap<(String, u32, i32), usize>,
    malformed: Vec<String>,
}

impl Book {
    fn new(path: PathBuf) -> Book {
        Book {
            path,
            read: 0,
            partial: String::new(),
            runs: Vec::new(),
            index: HashMap::new(),
            malformed: Vec::new(),
        }
    }

    /// Reads the new lines, then records the runs found gone.
    fn poll(&mut self) {
        let mut text = std::mem::take(&mut self.partial);
        text.push_str(&self.new_text());
        let complete = text.rfind('\n').map_or(0, |at| at + 1);
        self.partial = text.split_off(complete);
        for line in text.lines().filter(|l| !l.is_empty()) {
            self.take(line);
        }
        let now = now_ns();
        for run in &mut self.runs {
            if run.finished_ns().is_none() && !runs_task(run.pid, &run.task) {
                run.died_ns = Some(now);
            }
        }
    }

    /// The bytes appended since the last read.
    fn new_text(&mut self) -> String {
        let mut bytes = Vec::new();
        if let Ok(mut file) = File::open(&self.path)
            && file.seek(SeekFrom::Start(self.read)).is_ok()
            && file.read_to_end(&mut bytes).is_ok()
        {
            self.read += bytes.len() as u64;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Records one line: a run's start or end.
    fn take(&mut self, line: &str) {
        let Some((what, task, attempt, pid, at)) = parse(line) else {
            self.malformed.push(line.to_string());
            return;
        };
        let key = (task.to_string(), attempt, pid);
        match (what, self.index.get(&key)) {
            ("start", None) => {
                self.index.insert(key, self.runs.len());
                self.runs.push(Run {
                    task: task.to_string(),
                    attempt,
                    pid,
                    started_ns: at,
                    ended_ns: None,
                    died_ns: None,
                    parent: parent_pid(pid).filter(|_| runs_task(pid, task)),
                });
            }
            ("end", Some(&i)) => self.runs[i].ended_ns = Some(at),
            _ => self.malformed.push(line.to_string()),
        }
    }
}

/// `start|end TASK ATTEMPT PID UNIX-NS`, split.
fn parse(line: &str) -> Option<(&str, &str, u32, i32, u128)> {
    match line.split_whitespace().collect::<Vec<_>>()[..] {
        [what @ ("start" | "end"), task, attempt, pid, at] => Some((
            what,
            task,
            attempt.parse().ok()?,
            pid.parse().ok()?,
            at.parse().ok()?,
        )),
        _ => None,
    }
}

/// True while `pid` is a live process of a job of `task` (not a zombie, nor
/// another process that got the pid since).
fn runs_task(pid: i32, task: &str) -> bool {
    pid_alive(pid) && job_task(pid).is_some_and(|t| t == task)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
