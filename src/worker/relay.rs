//! Relaying jobs' progress to ZooKeeper, coalesced: each running task's
//! latest report is written into its claim (`/running/<t>`, ephemeral, so
//! it goes with the worker) at most every [`EVERY`], however often the job
//! reports. One thread per session does it for every task; each write is
//! fenced by the task's assignment still being this worker's claimed one,
//! so a late report never touches another run's claim.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::debug;

use crate::layout::Layout;
use crate::model::{self, Claim};
use crate::zk::{Op, Zk};

/// The shortest time between two writes of one task's progress.
pub const EVERY: Duration = Duration::from_millis(250);

/// A task's claim with its latest progress, from its job thread.
#[derive(Debug, Clone)]
pub struct Update {
    /// The task.
    pub task: String,
    /// Its claim as it should now read.
    pub claim: Claim,
}

/// Starts the relay of one session; it ends once every sender is gone.
pub fn start(zk: Zk, layout: Layout, worker: String) -> Sender<Update> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || Relay::new(zk, layout, worker).serve(&rx));
    if let Err(err) = spawned {
        log::warn!("cannot start the progress relay ({err}): progress is not shown");
    }
    tx
}

/// The relay's state.
struct Relay {
    zk: Zk,
    layout: Layout,
    worker: String,
    /// Per task: the latest claim not yet written, and the last write.
    tasks: HashMap<String, (Option<Claim>, Option<Instant>)>,
}

impl Relay {
    fn new(zk: Zk, layout: Layout, worker: String) -> Relay {
        Relay {
            zk,
            layout,
            worker,
            tasks: HashMap::new(),
        }
    }

    fn serve(mut self, rx: &Receiver<Update>) {
        loop {
            let wait = self
                .next_due()
                .map(|due| due.saturating_duration_since(Instant::now()));
            let got = match wait {
                Some(wait) => rx.recv_timeout(wait),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(update) => {
                    let entry = self.tasks.entry(update.task).or_insert((None, None));
                    entry.0 = Some(update.claim);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.write_due(Instant::now());
        }
    }

    /// When the next pending report may be written.
    fn next_due(&self) -> Option<Instant> {
        self.tasks
            .values()
            .filter(|(pending, _)| pending.is_some())
            .map(|(_, last)| last.map_or_else(Instant::now, |t| t + EVERY))
            .min()
    }

    /// Writes every pending report whose time has come.
    fn write_due(&mut self, now: Instant) {
        let due: Vec<(String, Claim)> = self
            .tasks
            .iter_mut()
            .filter(|(_, (pending, last))| {
                pending.is_some() && last.is_none_or(|t| now >= t + EVERY)
            })
            .filter_map(|(task, (pending, last))| {
                *last = Some(now);
                pending.take().map(|claim| (task.clone(), claim))
            })
            .collect();
        if due.is_empty() {
            return;
        }
        let txns: Vec<Vec<Op>> = due
            .iter()
            .map(|(task, claim)| self.ops(task, claim))
            .collect();
        for ((task, _), result) in due.iter().zip(self.zk.multi_many(&txns)) {
            if let Err(err) = result {
                // Finished, or no longer ours: nothing more to show.
                debug!("{task}: progress not written: {err}");
                self.tasks.remove(task);
            }
        }
        // Forget tasks quiet for a while (finished ones, mostly).
        self.tasks.retain(|_, (pending, last)| {
            pending.is_some() || last.is_some_and(|t| now < t + EVERY * 40)
        });
    }

    /// The fenced write of one task's claim.
    fn ops(&self, task: &str, claim: &Claim) -> Vec<Op> {
        vec![
            Op::Check {
                path: self.layout.assignment(&self.worker, task),
                version: 1,
            },
            Op::SetData {
                path: self.layout.running_task(task),
                data: model::encode(claim),
                version: None,
            },
        ]
    }
}
