//! `zkmw status --watch`: the cluster view, the running tasks and the
//! last failures, redrawn in place every `--interval` until Ctrl-C, on one
//! session.

use std::io::Write;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::cluster_read;
use super::render::{render_cluster, render_tasks};
use super::tasks::{Query, task_rows};
use super::view::{TaskState, cluster_view};
use crate::error::Error;
use crate::layout::Layout;
use crate::model;
use crate::output;
use crate::shutdown::Shutdown;
use crate::zk::Zk;

/// How many running tasks and failures the view shows.
const RUNNING: usize = 20;
const FAILURES: usize = 5;

/// Clears the screen and puts the cursor at its top left.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Redraws until a signal comes (then returns, the screen left as it is).
pub fn watch(
    zk: &Zk,
    layout: &Layout,
    interval: Duration,
    stop: &Receiver<Shutdown>,
) -> Result<(), Error> {
    loop {
        let screen = frame(zk, layout)?;
        output::write(format!("{CLEAR}{screen}").as_bytes(), None)?;
        if stop.recv_timeout(interval).is_ok() {
            let _ = std::io::stdout().flush();
            return Ok(());
        }
    }
}

/// One screen: the cluster, its running tasks, its last failures.
fn frame(zk: &Zk, layout: &Layout) -> Result<String, Error> {
    let now = model::now_ms();
    let width = output::terminal_width();
    let query = |state, limit| Query {
        state: Some(state),
        worker: None,
        limit,
    };
    // One read of the namespace for the whole screen.
    let read = cluster_read(zk, layout)?;
    let running = task_rows(zk, layout, &read, &query(TaskState::Running, RUNNING))?;
    let failed = task_rows(zk, layout, &read, &query(TaskState::Failed, FAILURES))?;
    let mut screen = render_cluster(&cluster_view(read), now);
    screen.push_str(&format!(
        "\nrunning ({}{})\n",
        running.len(),
        if running.len() == RUNNING { "+" } else { "" }
    ));
    screen.push_str(&render_tasks(&running, now, width));
    screen.push_str("\nlast failures\n");
    screen.push_str(&render_tasks(&failed, now, width));
    Ok(screen)
}
