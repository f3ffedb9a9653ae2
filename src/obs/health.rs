//! Whether a role is alive and whether it is ready, for `/healthz` and
//! `/readyz`. The role's control loop beats at every turn and says where it
//! stands; the session's events say whether it is connected. The verdicts
//! are plain functions of those facts and the time ([`healthy`], [`ready`]).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::metrics::Role;

/// Where a role stands, as its loops say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Opening a session.
    Connecting,
    /// A master running for election, not watching /master yet.
    Campaigning,
    /// A master watching /master, ready to take over.
    Standby,
    /// The active master.
    Active,
    /// A worker registering its id.
    Registering,
    /// A worker in /workers, taking work.
    Registered,
    /// A worker taking no work for a while: its jobs could not start.
    Paused,
    /// A worker finishing its jobs after SIGTERM.
    Draining,
    /// Stopping.
    Stopping,
}

/// What the verdicts are made from.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// When the control loop last turned.
    pub beat: Option<Instant>,
    /// Whether the session is connected.
    pub connected: bool,
    /// Since when it is not, if it was once.
    pub cut_off_since: Option<Instant>,
    /// Where the role stands.
    pub stage: Stage,
}

/// A role's health, shared between its loops and the HTTP threads.
pub struct Health {
    role: Role,
    /// A loop that has not turned for this long is stuck.
    stale_after: Duration,
    facts: Mutex<Facts>,
}

impl Health {
    /// The health of a role whose loop turns at least every `tick`, and
    /// may wait up to `call_timeout` for one ZooKeeper call.
    pub fn new(role: Role, tick: Duration, call_timeout: Duration) -> Health {
        Health {
            role,
            stale_after: tick * 3 + call_timeout,
            facts: Mutex::new(Facts {
                beat: None,
                connected: false,
                cut_off_since: None,
                stage: Stage::Connecting,
            }),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Facts)) {
        change(&mut self.facts.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The facts now.
    pub fn facts(&self) -> Facts {
        *self.facts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The control loop turned.
    pub fn beat(&self) {
        self.update(|f| f.beat = Some(Instant::now()));
    }

    /// The role now stands at `stage`.
    pub fn set_stage(&self, stage: Stage) {
        self.update(|f| f.stage = stage);
    }

    /// The session is connected, or not.
    pub fn set_connected(&self, connected: bool) {
        self.update(|f| {
            if !connected && f.connected {
                f.cut_off_since = Some(Instant::now());
            }
            f.connected = connected;
        });
    }

    /// `/healthz`'s verdict now.
    pub fn healthy(&self) -> Result<(), String> {
        healthy(&self.facts(), Instant::now(), self.stale_after)
    }

    /// `/readyz`'s verdict now.
    pub fn ready(&self) -> Result<(), String> {
        ready(self.role, self.facts().stage)
    }
}

/// Healthy while connected and the loop turned within `stale_after`;
/// otherwise the one-line reason.
pub fn healthy(facts: &Facts, now: Instant, stale_after: Duration) -> Result<(), String> {
    if !facts.connected {
        return Err(match facts.cut_off_since {
            Some(since) => format!(
                "not connected to ZooKeeper for {} s",
                now.saturating_duration_since(since).as_secs()
            ),
            None => "not connected to ZooKeeper yet".to_string(),
        });
    }
    // A stopping worker waits for its jobs rather than turning its loop.
    match facts.stage {
        Stage::Stopping => return Err("stopping".to_string()),
        Stage::Draining => return Err("stopping: finishing its jobs first".to_string()),
        _ => {}
    }
    match facts.beat {
        Some(beat) if now.saturating_duration_since(beat) <= stale_after => Ok(()),
        Some(beat) => Err(format!(
            "the control loop has not turned for {} s",
            now.saturating_duration_since(beat).as_secs()
        )),
        None => Err("the control loop has not started".to_string()),
    }
}

/// Ready: a worker registered and taking work, a master active or a
/// standby watching; otherwise where it stands instead.
pub fn ready(role: Role, stage: Stage) -> Result<(), String> {
    match (role, stage) {
        (Role::Master, Stage::Active | Stage::Standby) | (Role::Worker, Stage::Registered) => {
            Ok(())
        }
        (_, stage) => Err(match stage {
            Stage::Connecting => "connecting to ZooKeeper",
            Stage::Campaigning => "running for election",
            Stage::Registering => "registering",
            Stage::Paused => "paused: its last jobs could not start",
            Stage::Draining => "draining: finishing its jobs before it stops",
            Stage::Stopping => "stopping",
            Stage::Standby | Stage::Active | Stage::Registered => "not in this role's stages",
        }
        .to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALE: Duration = Duration::from_secs(8);

    fn facts(connected: bool, beat_ago: Option<u64>, now: Instant) -> Facts {
        Facts {
            beat: beat_ago.map(|s| now - Duration::from_secs(s)),
            connected,
            cut_off_since: Some(now - Duration::from_secs(12)),
            stage: Stage::Registered,
        }
    }

    #[test]
    fn healthy_while_connected_and_the_loop_turns() {
        let now = Instant::now() + Duration::from_secs(60);
        assert_eq!(healthy(&facts(true, Some(8), now), now, STALE), Ok(()));
        assert_eq!(
            healthy(&facts(true, Some(9), now), now, STALE),
            Err("the control loop has not turned for 9 s".into())
        );
        assert_eq!(
            healthy(&facts(false, Some(0), now), now, STALE),
            Err("not connected to ZooKeeper for 12 s".into())
        );
        let mut never = facts(true, None, now);
        assert!(healthy(&never, now, STALE).is_err());
        let draining = Facts {
            stage: Stage::Draining,
            ..facts(true, Some(30), now)
        };
        assert_eq!(
            healthy(&draining, now, STALE),
            Err("stopping: finishing its jobs first".into())
        );
        never.connected = false;
        never.cut_off_since = None;
        assert_eq!(
            healthy(&never, now, STALE),
            Err("not connected to ZooKeeper yet".into())
        );
    }

    #[test]
    fn ready_when_a_worker_takes_work_or_a_master_leads_or_watches() {
        assert_eq!(ready(Role::Worker, Stage::Registered), Ok(()));
        assert_eq!(ready(Role::Master, Stage::Active), Ok(()));
        assert_eq!(ready(Role::Master, Stage::Standby), Ok(()));
        for stage in [Stage::Registering, Stage::Paused, Stage::Draining] {
            assert!(ready(Role::Worker, stage).is_err(), "{stage:?}");
        }
        assert_eq!(
            ready(Role::Master, Stage::Connecting),
            Err("connecting to ZooKeeper".into())
        );
    }
}
