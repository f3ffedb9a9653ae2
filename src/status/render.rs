//! The views for people: the same structs as the JSON, with times as UTC
//! dates and how long ago, and durations instead of unix milliseconds.

use std::fmt::{Display, Write};

use crate::model::Attempt;

use super::tasks::TaskRow;
use super::view::{
    ClusterView, MasterView, StandbyView, TaskState, TaskView, WaitingView, WorkerState, WorkerView,
};

/// The cluster view for people, at `now_ms`.
pub fn render_cluster(v: &ClusterView, now_ms: u64) -> String {
    let mut out = format!("namespace {}\n", v.root);
    let master = v.master.as_ref().map_or("none".to_string(), master_line);
    let _ = writeln!(out, "master    {master}");
    let _ = writeln!(out, "standbys  {}", v.standbys.len());
    for standby in &v.standbys {
        let _ = writeln!(out, "  {}", standby_line(standby));
    }
    let _ = writeln!(out, "workers   {}", v.workers.len());
    for worker in &v.workers {
        let _ = writeln!(out, "  {}", worker_line(worker, now_ms));
    }
    let t = &v.tasks;
    let _ = writeln!(
        out,
        "tasks     pending {}  assigned {}  running {}  finished {}",
        t.pending, t.assigned, t.running, t.finished
    );
    out
}

fn master_line(m: &MasterView) -> String {
    format!(
        "{} on {} (pid {}, epoch {})",
        or_dash(m.id.as_ref()),
        or_dash(m.host.as_ref()),
        or_dash(m.pid),
        or_dash(m.epoch)
    )
}

fn standby_line(s: &StandbyView) -> String {
    format!(
        "{} on {} (pid {})",
        or_dash(s.id.as_ref()),
        or_dash(s.host.as_ref()),
        or_dash(s.pid)
    )
}

fn worker_line(w: &WorkerView, now_ms: u64) -> String {
    let labels = if w.labels.is_empty() {
        String::new()
    } else {
        format!("  labels {}", w.labels.join(","))
    };
    format!(
        "{:<16} {:<20} threads {:<4} running {:<4} assigned {:<4} {}{labels}",
        w.id,
        or_dash(w.host.as_ref()),
        or_dash(w.threads),
        w.running,
        w.assigned,
        worker_state(w, now_ms)
    )
}

/// Where a worker stands, with since or until when it matters.
fn worker_state(w: &WorkerView, now_ms: u64) -> String {
    let at = |ms: Option<u64>, word: &str| {
        ms.map_or(String::new(), |ms| format!(" {word} {}", when(ms, now_ms)))
    };
    match w.state {
        WorkerState::Live => "live".into(),
        WorkerState::Draining => format!("draining{}", at(w.since_ms, "since")),
        WorkerState::Paused => format!("paused{}", at(w.until_ms, "until")),
        WorkerState::Away => format!("away{}", at(w.since_ms, "since")),
        WorkerState::Lost => "lost (gone: its tasks will run again elsewhere)".into(),
    }
}

/// The task view for people, at `now_ms`: one `key value` line per known
/// field, then the output.
pub fn render_task(v: &TaskView, now_ms: u64) -> String {
    let mut out: String = task_fields(v, now_ms)
        .iter()
        .map(|(key, value)| format!("{key:<17} {value}\n"))
        .collect();
    if !v.history.is_empty() {
        out.push_str("--- history\n");
        for (n, attempt) in v.history.iter().enumerate() {
            let _ = writeln!(out, "{}", attempt_line(n + 1, attempt, now_ms));
        }
    }
    if let Some(r) = &v.result {
        for (key, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            if !text.is_empty() {
                let newline = if text.ends_with('\n') { "" } else { "\n" };
                let _ = write!(out, "--- {key}\n{text}{newline}");
            }
        }
    }
    out
}

/// A task's known fields, in order, with times as dates and durations.
fn task_fields(v: &TaskView, now_ms: u64) -> Vec<(&'static str, String)> {
    let r = v.result.as_ref();
    let finished_ms = r.and_then(|r| r.finished_ms);
    let running_for = v
        .started_ms
        .filter(|_| v.state == TaskState::Running)
        .map(|start| span(now_ms.saturating_sub(start)));
    let took = v
        .started_ms
        .zip(finished_ms)
        .map(|(start, end)| span(end.saturating_sub(start)));
    let date = |ms: Option<u64>| ms.map(|ms| when(ms, now_ms));
    let fields = [
        ("task", Some(v.task.clone())),
        ("state", Some(state_word(v.state).to_string())),
        ("worker", v.worker.clone()),
        ("job", v.job.clone()),
        ("attempts", shown(v.attempts)),
        (
            "progress",
            v.progress
                .map(|p| progress_text(p, v.progress_message.as_deref())),
        ),
        (
            "waiting for",
            v.waiting_for.as_ref().map(|w| waiting_text(w, now_ms)),
        ),
        ("exit_code", shown(r.and_then(|r| r.exit_code))),
        ("signal", shown(r.and_then(|r| r.signal))),
        ("reason", shown(r.and_then(|r| r.reason.as_ref()))),
        ("submitted", date(v.submitted_ms)),
        ("started", date(v.started_ms)),
        ("finished", date(finished_ms)),
        ("running for", running_for),
        ("took", took),
        ("stdout_truncated", shown(r.map(|r| r.stdout_truncated))),
        ("stderr_truncated", shown(r.map(|r| r.stderr_truncated))),
    ];
    fields
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)))
        .collect()
}

/// `zkmw tasks` for people: one line per task, the job cut to `width`
/// columns when the output is a terminal that wide.
pub fn render_tasks(rows: &[TaskRow], now_ms: u64, width: Option<usize>) -> String {
    let mut out = String::new();
    for row in rows {
        let line = format!(
            "{:<15} {:<8} {:<12} {:<24} {:<18} ",
            row.task,
            state_word(row.state),
            or_dash(row.worker.as_deref()),
            row_time(row, now_ms),
            row_outcome(row)
        );
        let job = row.job.as_deref().unwrap_or("-").replace(['\n', '\t'], " ");
        let room = width.map_or(usize::MAX, |w| {
            w.saturating_sub(line.chars().count()).max(10)
        });
        let job: String = if job.chars().count() > room {
            job.chars()
                .take(room.saturating_sub(1))
                .chain(['…'])
                .collect()
        } else {
            job
        };
        let _ = writeln!(out, "{line}{job}");
    }
    out
}

/// How long ago, or for how long: queued, running, finished.
fn row_time(row: &TaskRow, now_ms: u64) -> String {
    match (row.state, row.started_ms, row.finished_ms) {
        (TaskState::Running, Some(start), _) => {
            format!("running {}", span(now_ms.saturating_sub(start)))
        }
        (TaskState::Done | TaskState::Failed, start, Some(end)) => {
            let took = start.map_or("not run".to_string(), |s| span(end.saturating_sub(s)));
            format!("{} ago ({took})", span(now_ms.saturating_sub(end)))
        }
        _ => match row.submitted_ms {
            Some(at) => format!("queued {} ago", span(now_ms.saturating_sub(at))),
            None => "-".to_string(),
        },
    }
}

/// The exit code, signal or reason of a finished task; the progress of a
/// running one.
fn row_outcome(row: &TaskRow) -> String {
    if let Some(waiting) = &row.waiting_for {
        return match waiting {
            WaitingView::Delay { .. } => "delayed (re-run)".to_string(),
            WaitingView::Lock { lock, held_by, .. } => format!("lock {lock}: {held_by}"),
            WaitingView::Labels { labels } => format!("no worker {}", labels.join(",")),
        };
    }
    match (&row.reason, row.exit_code, row.signal, row.progress) {
        (Some(reason), ..) => reason.to_string(),
        (None, Some(code), ..) => format!("exit {code}"),
        (None, None, Some(signal), _) => format!("signal {signal}"),
        (None, None, None, Some(p)) => progress_text(p, row.progress_message.as_deref()),
        _ => "-".to_string(),
    }
}

/// What a pending task waits for, for people.
fn waiting_text(w: &WaitingView, now_ms: u64) -> String {
    match w {
        WaitingView::Delay { until_ms } => format!(
            "its re-run after a failed run, in {} ({})",
            span(until_ms.saturating_sub(now_ms)),
            utc(*until_ms)
        ),
        WaitingView::Lock {
            lock,
            held_by,
            worker,
        } => format!("lock {lock}, held by {held_by} (running on {worker})"),
        WaitingView::Labels { labels } => {
            format!(
                "a worker with label {}: no live worker has it",
                labels.join(", ")
            )
        }
    }
}

/// A job's progress for people: `40% copying table 3`.
pub fn progress_text(percent: f64, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(message) => format!("{percent}% {message}"),
        None => format!("{percent}%"),
    }
}

/// One run of a task: its number, worker, start, how long, how it ended.
fn attempt_line(n: usize, a: &Attempt, now_ms: u64) -> String {
    let ended = match (a.ended_ms, &a.end) {
        (Some(end), Some(how)) => format!("took {}, {how}", span(end.saturating_sub(a.started_ms))),
        _ => format!("running for {}", span(now_ms.saturating_sub(a.started_ms))),
    };
    format!(
        "{n:<3} {:<16} {}  {ended}",
        a.worker,
        when(a.started_ms, now_ms)
    )
}

fn shown(value: Option<impl Display>) -> Option<String> {
    value.map(|v| v.to_string())
}

fn state_word(state: TaskState) -> &'static str {
    match state {
        TaskState::Pending => "pending",
        TaskState::Assigned => "assigned",
        TaskState::Running => "running",
        TaskState::Done => "done",
        TaskState::Failed => "failed",
    }
}

fn or_dash(value: Option<impl Display>) -> String {
    shown(value).unwrap_or_else(|| "-".into())
}

/// `2026-12-01 21:42:25 UTC (3.0 s ago)` for unix time `ms` seen at `now_ms`.
pub fn when(ms: u64, now_ms: u64) -> String {
    let relative = if ms <= now_ms {
        format!("{} ago", span(now_ms - ms))
    } else {
        format!("in {}", span(ms - now_ms))
    };
    format!("{} ({relative})", utc(ms))
}

/// A length of time in the one or two largest units that matter.
pub fn span(ms: u64) -> String {
    let secs = ms / 1000;
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        10_000..60_000 => format!("{secs} s"),
        60_000..3_600_000 => format!("{} min {} s", secs / 60, secs % 60),
        3_600_000..86_400_000 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// Unix time `ms` as a UTC date and time, to the second.
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (year, month, day) = civil_date(secs / 86_400);
    let time = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// Days in 400 Gregorian years: the calendar repeats after them.
const DAYS_PER_400_YEARS: u64 = 146_097;

/// The Gregorian (year, month, day) `days` days after 1970-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let mut year = 1970 + 400 * (days / DAYS_PER_400_YEARS);
    let mut days = days % DAYS_PER_400_YEARS;
    while days >= year_days(year) {
        days -= year_days(year);
        year += 1;
    }
    let mut month = 1;
    while days >= month_days(year, month) {
        days -= month_days(year, month);
        month += 1;
    }
    (year, month, days + 1)
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn year_days(year: u64) -> u64 {
    if is_leap(year) { 366 } else { 365 }
}

fn month_days(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FailReason, Task, TaskResult};
    use crate::status::view::{self, TaskCounts};

    /// 2026-12-01 21:42:25 UTC.
    const T: u64 = 1_796_161_345_000;

    #[test]
    fn dates_are_utc_to_the_second() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(T + 999), "2026-12-01 21:42:25 UTC");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc(951_868_800_000), "2000-03-01 00:00:00 UTC");
        assert_eq!(utc(4_107_585_600_000), "2100-03-01 12:00:00 UTC");
        // A garbled time is shown, whatever it is, at once.
        assert!(utc(u64::MAX).ends_with(" UTC"));
    }

    #[test]
    fn spans_use_the_largest_units() {
        let cases = [
            (0, "0 ms"),
            (999, "999 ms"),
            (3_210, "3.2 s"),
            (42_000, "42 s"),
            (252_000, "4 min 12 s"),
            (7_500_000, "2 h 5 min"),
            (273_600_000, "3 d 4 h"),
        ];
        for (ms, text) in cases {
            assert_eq!(span(ms), text, "{ms}");
        }
        assert_eq!(when(T, T + 3_000), "2026-12-01 21:42:25 UTC (3.0 s ago)");
        assert_eq!(when(T + 20_000, T), "2026-12-01 21:42:45 UTC (in 20 s)");
    }

    /// True when `text` holds a run of 12 or more digits: raw unix ms.
    fn has_raw_ms(text: &str) -> bool {
        text.split(|c: char| !c.is_ascii_digit())
            .any(|run| run.len() >= 12)
    }

    fn task() -> Task {
        Task {
            job: "make".into(),
            submitted_ms: T,
            timeout_ms: None,
            retries: 2,
            attempts: 1,
            token: "secret-token".into(),
            history: Vec::new(),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_task_shows_dates_and_how_long_it_runs() {
        let v = view::in_flight_view(
            "t",
            TaskState::Running,
            Some("w1"),
            Some(&task()),
            Some(&crate::model::Claim {
                worker: "w1".into(),
                started_ms: T + 1_000,
                attempt: 1,
                progress: Some(40.0),
                progress_message: Some("copying".into()),
            }),
        );
        let text = render_task(&v, T + 61_000);
        assert!(!has_raw_ms(&text) && !text.contains("token"), "{text}");
        assert!(text.contains("state             running\n"), "{text}");
        assert!(
            text.contains("submitted         2026-12-01 21:42:25 UTC (1 min 1 s ago)\n"),
            "{text}"
        );
        assert!(text.contains("running for       1 min 0 s\n"), "{text}");
        assert!(!text.contains("exit_code"), "{text}");
    }

    #[test]
    fn a_finished_task_shows_how_long_it_took_and_its_output() {
        let mut result =
            TaskResult::failed(Some(&task()), FailReason::TimedOut, Some("w1"), T + 4_500);
        result.started_ms = Some(T + 500);
        result.stdout = "partial".into();
        let text = render_task(&view::finished_view("t", result), T + 10_000);
        assert!(!has_raw_ms(&text) && !text.contains("secret"), "{text}");
        assert!(text.contains("reason            timed out\n"), "{text}");
        assert!(
            text.contains("finished          2026-12-01 21:42:29 UTC (5.5 s ago)\n"),
            "{text}"
        );
        assert!(text.contains("took              4.0 s\n"), "{text}");
        assert!(text.ends_with("--- stdout\npartial\n"), "{text}");
        assert!(!text.contains("--- stderr"), "{text}");
    }

    #[test]
    fn the_cluster_shows_standbys_and_every_worker_state() {
        let worker = |id: &str, state, since_ms, until_ms| WorkerView {
            id: id.into(),
            host: None,
            pid: None,
            threads: None,
            running: 1,
            assigned: 0,
            state,
            since_ms,
            until_ms,
            labels: Vec::new(),
        };
        let v = ClusterView {
            root: "/zkmw".into(),
            master: Some(MasterView {
                id: Some("m1".into()),
                host: Some("h1".into()),
                pid: Some(42),
                session: "0x1".into(),
                epoch: Some(3),
            }),
            standbys: vec![StandbyView {
                id: Some("m2".into()),
                host: None,
                pid: Some(43),
                session: "0x2".into(),
            }],
            workers: vec![
                worker("wd", WorkerState::Draining, Some(T), None),
                worker("wl", WorkerState::Lost, None, None),
                worker("wp", WorkerState::Paused, Some(T), Some(T + 30_000)),
            ],
            tasks: TaskCounts {
                pending: 0,
                assigned: 0,
                running: 3,
                finished: 5,
            },
        };
        let text = render_cluster(&v, T + 2_000);
        assert!(!has_raw_ms(&text), "{text}");
        let line = |id: &str| {
            text.lines()
                .find(|l| l.contains(id))
                .unwrap_or_default()
                .to_string()
        };
        assert_eq!(line("m1"), "master    m1 on h1 (pid 42, epoch 3)");
        assert!(text.contains("standbys  1\n  m2 on - (pid 43)\n"), "{text}");
        assert!(
            line("wd").ends_with("draining since 2026-12-01 21:42:25 UTC (2.0 s ago)"),
            "{text}"
        );
        assert!(
            line("wp").ends_with("paused until 2026-12-01 21:42:55 UTC (in 28 s)"),
            "{text}"
        );
        assert!(
            line("wl").contains("running 1") && line("wl").contains("lost"),
            "{text}"
        );
        assert!(
            text.ends_with("tasks     pending 0  assigned 0  running 3  finished 5\n"),
            "{text}"
        );
        let none = ClusterView {
            master: None,
            standbys: vec![],
            workers: vec![],
            ..v
        };
        assert!(render_cluster(&none, T).contains("master    none\nstandbys  0\nworkers   0\n"));
    }
}
