//! The details behind the summary line: `report.txt` (each finding, with
//! every task's result, its runs and the faults thrown near them) and
//! `results.jsonl` (every result read, one a line).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;

use serde_json::json;

use crate::common::ledger::Run;
use crate::events::Events;
use crate::verdict::{Evidence, Tally};

/// A run's findings and where to look them up.
pub struct Report<'a> {
    /// What the verdict was drawn from.
    pub evidence: &'a Evidence,
    /// The findings.
    pub tally: &'a Tally,
    /// The journal, for the faults near a run.
    pub events: &'a Events,
    /// The role of every process started (pid → id).
    pub names: &'a HashMap<u32, String>,
}

impl Report<'_> {
    /// Writes `report.txt` and `results.jsonl` into `dir`.
    pub fn write(&self, dir: &Path, verdict: &str) {
        let mut text = vec![self.tally.summary(self.evidence), verdict.to_string()];
        text.extend(self.overview());
        text.extend(self.sections());
        write(&dir.join("report.txt"), &(text.join("\n") + "\n"));
        let results = self.evidence.results.iter().map(|(task, result)| {
            let (result, error) = match result {
                Ok(r) => (json!(r), None),
                Err(e) => (serde_json::Value::Null, Some(e)),
            };
            json!({"task": task, "result": result, "error": error}).to_string() + "\n"
        });
        write(&dir.join("results.jsonl"), &results.collect::<String>());
    }

    /// The counts that no task list shows.
    fn overview(&self) -> Vec<String> {
        let runs = &self.evidence.runs;
        let unended = runs.iter().filter(|r| r.ended_ns.is_none()).count();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for task in &self.tally.failed {
            if let Some(Ok(r)) = self.evidence.results.get(task) {
                let reason = r.reason.as_ref().map_or("none".into(), ToString::to_string);
                *reasons
                    .entry(format!("{reason} (attempts={})", r.attempts))
                    .or_default() += 1;
            }
        }
        vec![
            format!(
                "runs in the ledger: {}, of which without an end line (killed): {unended}; \
                 malformed lines: {}",
                runs.len(),
                self.evidence.malformed.len()
            ),
            format!(
                "anomalies: {} (grep ANOMALY chaos.log)",
                self.evidence.anomalies
            ),
            format!("failed reasons: {reasons:?}"),
        ]
    }

    /// One section per finding that is not empty.
    fn sections(&self) -> Vec<String> {
        let (t, e) = (self.tally, self.evidence);
        let overlaps: Vec<String> = t.overlaps.iter().map(|(a, b)| self.overlap(a, b)).collect();
        let lock_overlaps: Vec<String> = t
            .lock_overlaps
            .iter()
            .map(|(a, b)| self.overlap(a, b))
            .collect();
        let (duplicates, failed_submits) = self.phantom_origins();
        let detailed: [(&str, &Vec<String>); 7] = [
            ("LOST (acknowledged, no result)", &t.lost),
            ("UNEXPLAINED repeats", &t.unexplained),
            ("BAD failures (reason not acceptable)", &t.bad_failed),
            (
                "ODD results (done but not exit 0, or no ledger line)",
                &t.odd,
            ),
            ("PHANTOMS (ran or finished, never acknowledged)", &t.phantom),
            ("failed tasks", &t.failed),
            ("explained repeats", &t.explained),
        ];
        let plain: [(&str, &Vec<String>); 9] = [
            (
                "phantoms that duplicate an acknowledged submit",
                &duplicates,
            ),
            (
                "phantoms from a submit that exited non-zero",
                &failed_submits,
            ),
            ("DUPLICATE acknowledgements", &t.dup_ack),
            ("OVERLAPPING runs (each fails the run)", &overlaps),
            (
                "OVERLAPPING runs of one lock (each fails the run)",
                &lock_overlaps,
            ),
            (
                "KEYS stored more than once (each fails the run)",
                &t.split_keys,
            ),
            ("SUBMIT FAILURES (each fails the run)", &e.failures),
            (
                "acknowledged submits that warned (see submit/<marker>.warn)",
                &e.warned,
            ),
            ("malformed ledger lines", &e.malformed),
        ];
        let mut out = Vec::new();
        for (title, tasks) in detailed.into_iter().filter(|(_, l)| !l.is_empty()) {
            out.push(format!("\n== {title}: {}", tasks.len()));
            out.extend(tasks.iter().flat_map(|task| self.task(task)));
        }
        for (title, lines) in plain.into_iter().filter(|(_, l)| !l.is_empty()) {
            out.push(format!("\n== {title}: {}", lines.len()));
            out.extend(lines.iter().map(|line| format!("  {line}")));
        }
        if !t.phantom.is_empty() {
            out.push(PHANTOM_HINT.into());
        }
        out
    }

    /// A task: its marker, its result, its runs, the faults near them.
    fn task(&self, task: &str) -> Vec<String> {
        let marker = self.evidence.acked.iter().find(|a| a.task == task);
        let mut lines = vec![format!(
            "  {task}: marker={}",
            marker.map_or("?", |a| &a.marker)
        )];
        lines.push(match self.evidence.results.get(task) {
            None => "    result: none".into(),
            Some(Err(e)) => format!("    result: unreadable: {e}"),
            Some(Ok(r)) => format!(
                "    result: state={:?} worker={:?} attempts={} exit_code={:?} signal={:?} \
                 reason={:?} submitted_ms={} started_ms={:?} finished_ms={}",
                r.state,
                r.worker,
                r.attempts,
                r.exit_code,
                r.signal,
                r.reason.as_ref().map(ToString::to_string),
                r.submitted_ms,
                r.started_ms,
                r.finished_ms
            ),
        });
        let runs: Vec<&Run> = self
            .evidence
            .runs
            .iter()
            .filter(|r| r.task == task)
            .collect();
        lines.extend(runs.iter().map(|run| format!("    run: {}", self.run(run))));
        let starts = runs.iter().map(|r| secs(r.started_ns));
        if let (Some(first), Some(last)) =
            (starts.clone().reduce(f64::min), starts.reduce(f64::max))
        {
            let near = self.events.hits_between(first - 6.0, last + 1.0);
            lines.extend(
                near.into_iter()
                    .map(|line| format!("    chaos near: {line}")),
            );
        }
        lines
    }

    /// A run: attempt, pid, worker, when it started and stopped.
    fn run(&self, run: &Run) -> String {
        let end = match (run.ended_ns, run.died_ns) {
            (Some(at), _) => format!("ended {:.3}", secs(at)),
            (None, Some(at)) => format!("died by {:.3}", secs(at)),
            (None, None) => "still running".into(),
        };
        format!(
            "attempt={} pid={} on {} started {:.3}, {end}",
            run.attempt,
            run.pid,
            self.worker(run),
            secs(run.started_ns)
        )
    }

    /// Two overlapping runs, and the faults that hit the first one's
    /// worker between its start and the second run's.
    fn overlap(&self, first: &Run, second: &Run) -> String {
        let worker = self.worker(first);
        let cause: Vec<String> = match first.parent {
            Some(pid) => self
                .events
                .hits_between(secs(first.started_ns) - 0.5, secs(second.started_ns))
                .into_iter()
                .filter(|line| line.contains(&format!("pid={pid} ")))
                .collect(),
            None => Vec::new(),
        };
        let overlap = first.finished_ns().map_or("still running".into(), |end| {
            format!("{:.2} s of overlap", (end - second.started_ns) as f64 / 1e9)
        });
        // Runs of two tasks of one lock name both tasks.
        let then = if second.task == first.task {
            String::new()
        } else {
            format!("{} ", second.task)
        };
        format!(
            "{}: {}; then {then}{} ({overlap}); cause: {}",
            first.task,
            self.run(first),
            self.run(second),
            if cause.is_empty() {
                format!("no fault of {worker} found")
            } else {
                cause.join(" | ")
            }
        )
    }

    /// The worker that ran `run`, as far as the harness saw.
    fn worker(&self, run: &Run) -> String {
        let name = run.parent.and_then(|pid| self.names.get(&(pid as u32)));
        name.cloned().unwrap_or_else(|| "?".into())
    }

    /// The phantoms whose marker (found in their result's job) is also an
    /// acknowledged one's, and those whose marker's submit failed.
    fn phantom_origins(&self) -> (Vec<String>, Vec<String>) {
        let (mut duplicates, mut failed) = (Vec::new(), Vec::new());
        for task in &self.tally.phantom {
            let Some(Ok(result)) = self.evidence.results.get(task) else {
                continue;
            };
            let Some(marker) = marker_in(&result.job) else {
                continue;
            };
            if let Some(ack) = self.evidence.acked.iter().find(|a| a.marker == marker) {
                duplicates.push(format!(
                    "{task} (duplicate of {}, marker {marker})",
                    ack.task
                ));
            } else if self
                .evidence
                .failures
                .iter()
                .any(|f| f.contains(&format!(" {marker} ")))
            {
                failed.push(format!(
                    "{task} (marker {marker}: that submit exited non-zero)"
                ));
            }
        }
        (duplicates, failed)
    }
}

/// Where ZooKeeper's own record of a phantom's create is (the data of a
/// failed run is kept).
const PHANTOM_HINT: &str = "\nZooKeeper's record of every create (session, cxid, zxid, time) is in the \
ensemble's kept data: java -cp /etc/zookeeper/conf:/usr/share/java/zookeeper.jar:\
/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar \
org.apache.zookeeper.server.persistence.TxnLogToolkit -d zk/ensemble-1/data/version-2/log.* \
(two creates of one marker from one session: one submit stored its task twice)";

/// The marker in a job of the load (`...; : s1-00042; sleep ...`).
fn marker_in(job: &str) -> Option<&str> {
    let (_, rest) = job.split_once("; : ")?;
    rest.split(';').next()
}

/// Unix nanoseconds as seconds.
fn secs(ns: u128) -> f64 {
    ns as f64 / 1e9
}

/// Writes `text` to `path`, saying so when it cannot.
fn write(path: &Path, text: &str) {
    if let Err(e) = fs::write(path, text) {
        crate::events::say(&format!("cannot write {}: {e}", path.display()));
    }
}
