//! The run's journal, `chaos.log`: every role start and exit and every
//! fault, each with its wall-clock time (UTC) and unix time, so that it can
//! be matched against the ledger's times. Faults (`CHAOS ...`) and
//! anomalies (`ANOMALY ...`, each of which fails the run) are counted.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::common::wait::now_ns;

/// The journal of one run.
pub struct Events {
    file: Mutex<File>,
    /// Every line, with its unix time in seconds.
    lines: Mutex<Vec<(f64, String)>>,
    faults: AtomicUsize,
    anomalies: AtomicUsize,
}

impl Events {
    /// A new journal at `path`.
    pub fn create(path: &Path) -> Events {
        Events {
            file: Mutex::new(
                File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
            ),
            lines: Mutex::new(Vec::new()),
            faults: AtomicUsize::new(0),
            anomalies: AtomicUsize::new(0),
        }
    }

    /// Writes one line.
    pub fn log(&self, text: &str) {
        let now = now_ns() as f64 / 1e9;
        let line = format!("{} {text}", stamp_of(now));
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = writeln!(file, "{line}");
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.push((now, line));
    }

    /// Writes a fault thrown (`CHAOS text`) and counts it.
    pub fn fault(&self, text: &str) {
        self.faults.fetch_add(1, Ordering::SeqCst);
        self.log(&format!("CHAOS {text}"));
    }

    /// Writes something that should not happen (`ANOMALY text`) and counts it.
    pub fn anomaly(&self, text: &str) {
        self.anomalies.fetch_add(1, Ordering::SeqCst);
        self.log(&format!("ANOMALY {text}"));
    }

    /// Faults thrown so far.
    pub fn faults(&self) -> usize {
        self.faults.load(Ordering::SeqCst)
    }

    /// Anomalies so far.
    pub fn anomalies(&self) -> usize {
        self.anomalies.load(Ordering::SeqCst)
    }

    /// The fault and anomaly lines written between the unix times `from`
    /// and `to` (seconds).
    pub fn hits_between(&self, from: f64, to: f64) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines
            .iter()
            .filter(|(at, line)| {
                (from..=to).contains(at) && (line.contains(" CHAOS ") || line.contains(" ANOMALY "))
            })
            .map(|(_, line)| line.clone())
            .collect()
    }
}

/// Now as the journal writes it: wall-clock time (UTC) and unix time.
pub fn stamp() -> String {
    stamp_of(now_ns() as f64 / 1e9)
}

/// `HH:MM:SS.micros UNIX.micros` of the unix time `secs` (UTC).
fn stamp_of(secs: f64) -> String {
    let day = secs.rem_euclid(86_400.0);
    let whole = day as u64;
    let micros = ((day - whole as f64) * 1e6) as u64;
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    format!("{h:02}:{m:02}:{s:02}.{micros:06} {secs:.6}")
}

/// Prints `chaos: text` on stderr at once, even while the test harness
/// captures what tests print.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "chaos: {text}");
}
