//! `zkmw master`: leader election on an ephemeral /master (`election.rs`),
//! then, as the active master, one control loop (`lead.rs`) around a state
//! machine that makes every decision (`core.rs`, with the rules of
//! `plan.rs`) and applies each change as one epoch-fenced transaction.
//!
//! Election: a candidate creates /master and bumps /epoch's version in one
//! transaction; the new version is its fencing token, checked by every write
//! it makes, so a deposed master (paused, partitioned, expired) can write
//! nothing. Standbys watch /master and run again when it disappears. A
//! master that stops closes its session, so a standby takes over at once.
//!
//! The loop is level-triggered: a watch, a reconnect or a tick only says
//! "look again". A light round (on a new task) reads /tasks and the
//! assignment counts; a full round (on worker changes, reconnects, ticks,
//! or after any doubtful write) also reads every assignment and claim, and
//! repairs what a crash left behind.

mod core;
mod election;
mod lead;
mod load;
mod parked;
pub mod plan;

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::info;

use crate::error::Error;
use crate::layout::Layout;
use crate::notify;
use crate::obs::health::Stage;
use crate::obs::metrics::Load;
use crate::obs::{self, Obs};
use crate::session::{self, Next};
use crate::settings::{Given, MASTER_KEYS, Tuning};
use crate::shutdown::Shutdown;
use crate::zk::{SessionEvent, WatchEvent};
use election::Elected;

/// What a master needs to run.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Where ZooKeeper is and how to talk to it.
    pub connect: crate::zk::ConnectOptions,
    /// The namespace.
    pub layout: Layout,
    /// This master's id.
    pub id: String,
    /// Longest time between two full rounds.
    pub tick: Duration,
    /// The retention settings this master was given itself (flags, env):
    /// they beat the cluster's (see [`crate::settings`]).
    pub given: Given,
    /// What this master shows of itself (metrics, health, its session).
    pub obs: Obs,
}

/// How long a stopping master waits for ZooKeeper to confirm the end of its
/// session (which hands /master to a standby).
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// A message to the master's control loop: each means "look again".
#[derive(Debug)]
pub enum Msg {
    /// A watched node changed.
    Watch(WatchEvent),
    /// The session's state changed.
    Session(SessionEvent),
    /// Stop: leave /master at once so a standby takes over.
    Shutdown,
}

impl From<WatchEvent> for Msg {
    fn from(event: WatchEvent) -> Self {
        Msg::Watch(event)
    }
}

impl From<SessionEvent> for Msg {
    fn from(event: SessionEvent) -> Self {
        Msg::Session(event)
    }
}

impl From<Shutdown> for Msg {
    fn from(_: Shutdown) -> Self {
        Msg::Shutdown
    }
}

/// Runs a master until a [`Msg::Shutdown`] arrives on `rx`. Session loss
/// starts the election over with a new session.
pub fn run(cfg: &MasterConfig, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Result<(), Error> {
    // Followed live while active, and kept across elections.
    let mut tuning = Tuning::new(MASTER_KEYS, cfg.given.clone());
    loop {
        cfg.obs.stage(Stage::Connecting);
        let Some(zk) = session::open(&cfg.connect, &cfg.layout, &cfg.obs, tx, rx, |m| {
            matches!(m, Msg::Shutdown)
        })?
        else {
            return Ok(());
        };
        cfg.obs.stage(Stage::Campaigning);
        let next = match election::campaign(cfg, &zk, tx, rx) {
            Elected::Yes(epoch) => {
                leading(cfg, Some(epoch));
                info!("master {}: active (epoch {epoch})", cfg.id);
                notify::ready(&format!("active master, epoch {epoch}"));
                let next = lead::lead(cfg, &zk, epoch, tx, rx, &mut tuning);
                leading(cfg, None);
                next
            }
            Elected::No(next) => next,
        };
        cfg.obs.session_ended(&zk);
        match next {
            Next::Stop => {
                notify::stopping("stopping: closing the session", CLOSE_WAIT);
                cfg.obs.stage(Stage::Stopping);
                zk.close(CLOSE_WAIT);
                info!("master {}: stopped", cfg.id);
                return Ok(());
            }
            Next::Restart => {
                zk.close(Duration::ZERO);
                info!("master {}: starting over with a new session", cfg.id);
            }
        }
    }
}

/// This master now leads under `epoch`, or (`None`) no longer leads: its
/// stage, its gauges (a master that does not lead shows no load) and its
/// log lines say so.
fn leading(cfg: &MasterConfig, epoch: Option<i32>) {
    match epoch {
        Some(_) => cfg.obs.stage(Stage::Active),
        None => cfg.obs.metrics().master_load(Load::default()),
    }
    cfg.obs.metrics().master_epoch(epoch);
    obs::log::set_epoch(epoch);
}
