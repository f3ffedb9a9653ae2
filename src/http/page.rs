//! The master's status page: one self-contained HTML document (a little
//! CSS, an inline SVG chart, no script, no external asset) that reloads
//! itself every few seconds. It is a plain function of what was read
//! ([`render`]), readable on a laptop and on a phone: the tiles and
//! tables wrap or scroll within the screen's width.

use std::fmt::Write;

use super::chart;
use super::glance::{Failure, Glance, Sight, cut};
use crate::status::{ClusterView, TaskRow, WorkerState, WorkerView, progress_text, span, when};

/// Seconds between two reloads of the page.
pub const REFRESH_SECS: u32 = 5;

/// The style sheet: system fonts, light and dark, tables that scroll
/// sideways on a narrow screen.
const STYLE: &str = "
:root{color-scheme:light dark;--fg:#1c2230;--muted:#5d6778;--line:#d9dee7;--card:#f5f7fa;--ok:#1f8a4c;--bad:#c0392b;--warn:#b7791f;--bar:#3b6fd8}
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ef;--muted:#9aa4b5;--line:#333b48;--card:#1d232d;--bar:#6d9bff}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1100px;padding:12px 16px 32px;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg)}
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:22px 0 8px}
.sub{color:var(--muted);font-size:13px}
.banner{background:var(--bad);color:#fff;padding:8px 12px;border-radius:6px;margin:10px 0}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:10px;margin-top:14px}
.tile{background:var(--card);border-radius:8px;padding:10px 12px}
.tile b{display:block;font-size:24px}.tile span{color:var(--muted);font-size:13px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code{font:13px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}
code.id{white-space:nowrap;word-break:normal}
.scroll table{min-width:620px}
.meter{display:inline-block;width:90px;height:8px;background:var(--line);border-radius:4px;vertical-align:middle;margin-right:6px}
.meter i{display:block;height:8px;border-radius:4px;background:var(--bar)}
.live{color:var(--ok)}.lost{color:var(--bad)}.draining,.paused,.away{color:var(--warn)}
.why{color:var(--bad);font-weight:600}
.empty{color:var(--muted)}
.chart{width:100%;height:auto;max-width:900px}
.chart .bar{fill:var(--bar)}.chart .grid{stroke:var(--line)}.chart .axis{fill:var(--muted);font-size:15px}
footer{margin-top:26px;color:var(--muted);font-size:13px}
a{color:var(--bar)}
";

/// The page for `sight`, served by master `me` (its id and whether it is
/// active), at `now_ms`.
pub fn render(sight: &Sight, me: &str, now_ms: u64) -> String {
    let mut body = String::new();
    let root = sight
        .glance
        .as_ref()
        .map_or("", |g| g.cluster.root.as_str());
    let _ = write!(
        body,
        "<h1>zkmw <span class=\"sub\">{}</span></h1><div class=\"sub\">served by master {}</div>",
        esc(root),
        esc(me)
    );
    if let Some(trouble) = &sight.trouble {
        let age = sight.glance.as_ref().map_or(String::new(), |g| {
            format!(
                "; showing what was read {} ago",
                span(now_ms.saturating_sub(g.at_ms))
            )
        });
        let _ = write!(body, "<div class=\"banner\">{}{age}</div>", esc(trouble));
    }
    if let Some(glance) = &sight.glance {
        body.push_str(&sections(glance, now_ms));
    }
    let _ = write!(
        body,
        "<footer>Reloads every {REFRESH_SECS} s. JSON: <a href=\"/api/status\">/api/status</a>, <a href=\"/api/tasks\">/api/tasks</a>. Metrics: <a href=\"/metrics\">/metrics</a>.</footer>"
    );
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\"><title>zkmw {}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(root)
    )
}

/// Everything a read shows, in the order the eye needs it.
fn sections(g: &Glance, now_ms: u64) -> String {
    let c = &g.cluster;
    [
        tiles(c),
        masters(c),
        format!("<h2>Workers</h2>{}", workers(&c.workers, now_ms)),
        format!(
            "<h2>Running <span class=\"sub\">{}</span></h2>{}",
            g.running.len(),
            running(&g.running, now_ms)
        ),
        format!("<h2>Recent failures</h2>{}", failures(&g.failures, now_ms)),
        format!(
            "<h2>Tasks finished per minute <span class=\"sub\">last hour</span></h2>{}",
            chart::svg(&g.per_minute)
        ),
    ]
    .concat()
}

fn tiles(c: &ClusterView) -> String {
    let live = c
        .workers
        .iter()
        .filter(|w| w.state == WorkerState::Live)
        .count();
    let threads: usize = c.workers.iter().filter_map(|w| w.threads).sum();
    let tile = |n: String, label: &str| {
        format!("<div class=\"tile\"><b>{n}</b><span>{label}</span></div>")
    };
    format!(
        "<div class=\"tiles\" id=\"counts\">{}{}{}{}{}</div>",
        tile(c.tasks.pending.to_string(), "queued"),
        tile(c.tasks.assigned.to_string(), "assigned"),
        tile(c.tasks.running.to_string(), "running"),
        tile(c.tasks.finished.to_string(), "results kept"),
        tile(
            format!("{live}/{}", c.workers.len()),
            &format!("workers live, {threads} threads")
        ),
    )
}

fn masters(c: &ClusterView) -> String {
    let active = match &c.master {
        Some(m) => format!(
            "<b>{}</b> on {} (pid {}, epoch {})",
            esc(m.id.as_deref().unwrap_or("?")),
            esc(m.host.as_deref().unwrap_or("?")),
            or_dash(m.pid),
            or_dash(m.epoch)
        ),
        None => "<span class=\"why\">none: no master is active</span>".to_string(),
    };
    let standbys: Vec<String> = c
        .standbys
        .iter()
        .map(|s| {
            format!(
                "{} on {}",
                esc(s.id.as_deref().unwrap_or("?")),
                esc(s.host.as_deref().unwrap_or("?"))
            )
        })
        .collect();
    let standbys = if standbys.is_empty() {
        "none".to_string()
    } else {
        standbys.join(", ")
    };
    format!("<h2>Masters</h2><div id=\"masters\">Active: {active}<br>Standby: {standbys}</div>")
}

fn workers(workers: &[WorkerView], now_ms: u64) -> String {
    let rows: Vec<String> = workers
        .iter()
        .map(|w| {
            let threads = w.threads.unwrap_or(0);
            let load = format!(
                "{}{} running, {} waiting",
                meter(w.running as f64 / threads.max(1) as f64),
                w.running,
                w.assigned
            );
            format!(
                "<tr class=\"worker\"><td><b>{}</b></td><td class=\"{state}\">{state}</td><td>{}</td><td class=\"num\">{}</td><td>{load}</td><td>{}</td><td>{}</td></tr>",
                esc(&w.id),
                esc(w.host.as_deref().unwrap_or("-")),
                or_dash(w.threads),
                if w.labels.is_empty() { "-".to_string() } else { esc(&w.labels.join(", ")) },
                w.since_ms.map_or("-".into(), |s| span(now_ms.saturating_sub(s))),
                state = state_word(w.state),
            )
        })
        .collect();
    let headings = [
        "worker", "state", "host", "threads", "load", "labels", "for",
    ];
    table("workers", &headings, &rows, "No worker.")
}

fn running(rows: &[TaskRow], now_ms: u64) -> String {
    let rows: Vec<String> = rows
        .iter()
        .map(|t| {
            let progress = match t.progress {
                Some(p) => format!(
                    "{}{}",
                    meter(p / 100.0),
                    esc(&progress_text(p, t.progress_message.as_deref()))
                ),
                None => "-".to_string(),
            };
            format!(
                "<tr><td><code class=\"id\">{}</code></td><td>{}</td><td><code>{}</code></td><td>{progress}</td><td>{}</td></tr>",
                esc(&t.task),
                esc(t.worker.as_deref().unwrap_or("-")),
                esc(&cut(t.job.as_deref().unwrap_or("-"), 120)),
                t.started_ms.map_or("-".into(), |s| span(now_ms.saturating_sub(s))),
            )
        })
        .collect();
    let headings = ["task", "worker", "job", "progress", "for"];
    table("running", &headings, &rows, "Nothing is running.")
}

fn failures(failures: &[Failure], now_ms: u64) -> String {
    let rows: Vec<String> = failures
        .iter()
        .map(|f| {
            let stderr = f
                .stderr
                .as_ref()
                .map_or(String::new(), |l| format!("<br><code>{}</code>", esc(l)));
            format!(
                "<tr class=\"failure\"><td><code class=\"id\">{}</code></td><td class=\"why\">{}</td><td>{}</td><td><code>{}</code>{stderr}</td><td>{}</td></tr>",
                esc(&f.task),
                esc(&f.why),
                esc(f.worker.as_deref().unwrap_or("-")),
                esc(f.job.as_deref().unwrap_or("-")),
                f.finished_ms.map_or("-".into(), |at| ago(at, now_ms)),
            )
        })
        .collect();
    let headings = ["task", "why", "worker", "job", "finished"];
    table(
        "failures",
        &headings,
        &rows,
        "No failure among the recent tasks.",
    )
}

/// A table with its headings, scrolling sideways on a narrow screen; the
/// `empty` sentence instead when there is no row.
fn table(id: &str, headings: &[&str], rows: &[String], empty: &str) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{empty}</p>");
    }
    let head: String = headings.iter().map(|h| format!("<th>{h}</th>")).collect();
    format!(
        "<div class=\"scroll\"><table id=\"{id}\"><thead><tr>{head}</tr></thead><tbody>{}</tbody></table></div>",
        rows.concat()
    )
}

/// `12 s ago`, with the UTC time as its tooltip.
fn ago(at_ms: u64, now_ms: u64) -> String {
    let full = when(at_ms, now_ms);
    let short = full
        .split_once('(')
        .map_or(full.as_str(), |(_, r)| r.trim_end_matches(')'));
    format!("<span title=\"{}\">{}</span>", esc(&full), esc(short))
}

/// A small bar filled to `fraction` (0 to 1).
fn meter(fraction: f64) -> String {
    let percent = (fraction.clamp(0.0, 1.0) * 100.0).round();
    format!("<span class=\"meter\"><i style=\"width:{percent}%\"></i></span>")
}

fn state_word(state: WorkerState) -> &'static str {
    match state {
        WorkerState::Live => "live",
        WorkerState::Draining => "draining",
        WorkerState::Paused => "paused",
        WorkerState::Away => "away",
        WorkerState::Lost => "lost",
    }
}

fn or_dash(value: Option<impl std::fmt::Display>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// `text` safe inside HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{MasterView, TaskCounts, TaskState};
    use std::sync::Arc;

    fn glance() -> Glance {
        let worker = WorkerView {
            id: "w<1>".into(),
            host: Some("h1".into()),
            pid: Some(7),
            threads: Some(4),
            running: 1,
            assigned: 2,
            state: WorkerState::Live,
            since_ms: Some(1_000),
            until_ms: None,
            labels: vec!["gpu".into()],
        };
        let running = TaskRow {
            task: "task-0000000002".into(),
            state: TaskState::Running,
            worker: Some("w<1>".into()),
            job: Some("sleep 60".into()),
            attempts: Some(1),
            submitted_ms: Some(1_000),
            started_ms: Some(2_000),
            finished_ms: None,
            exit_code: None,
            signal: None,
            reason: None,
            progress: Some(40.0),
            progress_message: Some("copying".into()),
            waiting_for: None,
        };
        Glance {
            at_ms: 10_000,
            cluster: ClusterView {
                root: "/zkmw".into(),
                master: Some(MasterView {
                    id: Some("m1".into()),
                    host: Some("h0".into()),
                    pid: Some(3),
                    session: "0x1".into(),
                    epoch: Some(4),
                }),
                standbys: vec![],
                workers: vec![worker],
                tasks: TaskCounts {
                    pending: 12,
                    assigned: 2,
                    running: 1,
                    finished: 30,
                },
            },
            tasks: vec![],
            running: vec![running],
            failures: vec![Failure {
                task: "task-0000000001".into(),
                worker: Some("w<1>".into()),
                finished_ms: Some(9_000),
                why: "exit 3".into(),
                job: Some("false".into()),
                stderr: Some("boom & bust".into()),
            }],
            per_minute: vec![1; 60],
        }
    }

    #[test]
    fn the_page_shows_the_cluster_escaped() {
        let sight = Sight {
            glance: Some(Arc::new(glance())),
            trouble: None,
        };
        let page = render(&sight, "m1 (active)", 12_000);
        for needle in [
            "<b>w&lt;1&gt;</b>",
            "<td>gpu</td>",
            "<b>12</b><span>queued</span>",
            "<b>m1</b> on h0 (pid 3, epoch 4)",
            "40% copying",
            "<td class=\"why\">exit 3</td>",
            "<code>boom &amp; bust</code>",
            "<svg class=\"chart\"",
            "http-equiv=\"refresh\"",
        ] {
            assert!(page.contains(needle), "{needle} in {page}");
        }
        assert!(!page.contains("<script"), "no script");
        assert!(!page.contains("class=\"banner\""), "no trouble, no banner");
    }

    #[test]
    fn a_stale_view_says_why_and_how_old() {
        let sight = Sight {
            glance: Some(Arc::new(glance())),
            trouble: Some("not connected to ZooKeeper".into()),
        };
        let page = render(&sight, "m1 (active)", 70_000);
        assert!(
            page.contains("not connected to ZooKeeper; showing what was read 1 min 0 s ago"),
            "{page}"
        );
        let empty = render(&Sight::default(), "m1 (standby)", 0);
        assert!(empty.contains("served by master m1 (standby)"), "{empty}");
    }
}
