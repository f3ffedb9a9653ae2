//! The one line `submit --wait` and `zkmw wait` keep up to date on a
//! terminal (when stderr is one): queued, assigned to a worker, running
//! for how long and how far along. Off a terminal (cron, pipes, CI)
//! nothing at all is shown, so a cron mail holds only the job's output.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::layout::{Layout, task_sequence};
use crate::locate::{self, Place};
use crate::model;
use crate::zk::Zk;

/// How often the line is brought up to date.
pub const EVERY: Duration = Duration::from_millis(500);

/// Above this many pending tasks, a queued task's position is not worked
/// out (it takes a listing of the queue).
const POSITION_UP_TO: i32 = 2000;

/// The live line; cleared when dropped.
pub struct LiveLine {
    bar: ProgressBar,
    next_look: Instant,
}

impl LiveLine {
    /// A line on stderr, if stderr is a terminal.
    pub fn on_terminal(task: &str) -> Option<LiveLine> {
        if !rustix::termios::isatty(std::io::stderr()) {
            return None;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix}: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.set_prefix(task.to_string());
        bar.set_message("stored");
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(LiveLine {
            bar,
            next_look: Instant::now(),
        })
    }

    /// Looks at the task again if it is time to.
    pub fn update(&mut self, zk: &Zk, layout: &Layout, task: &str) {
        if Instant::now() < self.next_look {
            return;
        }
        self.next_look = Instant::now() + EVERY;
        if let Ok(place) = locate::find(zk, layout, task) {
            let position = match &place {
                Some(Place::Pending { .. }) => position(zk, layout, task),
                _ => None,
            };
            self.bar
                .set_message(describe(place.as_ref(), position, model::now_ms()));
        }
    }
}

impl Drop for LiveLine {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// How many tasks are queued before `task`, when that is cheap to know.
fn position(zk: &Zk, layout: &Layout, task: &str) -> Option<usize> {
    let queue = zk.exists(&layout.tasks()).ok()??;
    if queue.num_children > POSITION_UP_TO {
        return None;
    }
    let seq = task_sequence(task)?;
    let names = zk.children(&layout.tasks()).ok()?;
    Some(
        names
            .iter()
            .filter(|n| task_sequence(n).is_some_and(|s| s < seq))
            .count(),
    )
}

/// The line for where the task is.
fn describe(place: Option<&Place>, ahead: Option<usize>, now_ms: u64) -> String {
    match place {
        None => "looking for it".to_string(),
        Some(Place::Pending { .. }) => match ahead {
            Some(0) => "queued, next in line".to_string(),
            Some(n) => format!("queued, {n} ahead"),
            None => "queued".to_string(),
        },
        Some(Place::Assigned {
            worker,
            claim: Some(Ok(claim)),
            ..
        }) if claim.worker == *worker => {
            let secs = now_ms.saturating_sub(claim.started_ms) / 1000;
            let mut line = format!("running on {worker} for {secs} s");
            if let Some(p) = claim.progress {
                line.push_str(&format!(", {p}%"));
                if let Some(message) = claim.progress_message.as_deref().filter(|m| !m.is_empty()) {
                    line.push_str(&format!(" {message}"));
                }
            }
            line
        }
        Some(Place::Assigned { worker, .. }) => format!("assigned to {worker}"),
        Some(Place::Finished { .. }) => "finished".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Claim, Task};
    use crate::zk::NodeStat;

    fn stat(version: i32) -> NodeStat {
        NodeStat {
            version,
            ..NodeStat::default()
        }
    }

    #[test]
    fn says_where_the_task_is() {
        let pending = Place::Pending {
            task: Ok(Task::default()),
            stat: stat(0),
        };
        assert_eq!(describe(Some(&pending), Some(3), 0), "queued, 3 ahead");
        assert_eq!(describe(Some(&pending), None, 0), "queued");
        let claim = Claim {
            worker: "w1".into(),
            started_ms: 1_000,
            attempt: 1,
            progress: Some(40.0),
            progress_message: Some("copying table 3".into()),
        };
        let running = Place::Assigned {
            worker: "w1".into(),
            task: Ok(Task::default()),
            stat: stat(1),
            claim: Some(Ok(claim)),
        };
        assert_eq!(
            describe(Some(&running), None, 13_000),
            "running on w1 for 12 s, 40% copying table 3"
        );
        let assigned = Place::Assigned {
            worker: "w2".into(),
            task: Ok(Task::default()),
            stat: stat(0),
            claim: None,
        };
        assert_eq!(describe(Some(&assigned), None, 0), "assigned to w2");
    }
}
