//! What a long-running role shows of itself to those who watch it without
//! a terminal: its metrics ([`metrics`]), its health ([`health`]), the
//! context of its log lines ([`log`]), and its current session, through
//! which the master's status page reads the cluster. The role's loops
//! write here with a few calls (a beat per turn, a stage, a `record`);
//! the HTTP endpoint (`crate::http`) only reads.

pub mod health;
pub mod log;
pub mod metrics;

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use health::{Health, Stage};
use metrics::{Metrics, Role};

use crate::zk::{SessionEvent, Zk};

/// A role's observable state. Cheap to clone; shared between threads.
#[derive(Clone)]
pub struct Obs(Arc<Inner>);

struct Inner {
    role: Role,
    metrics: Metrics,
    health: Health,
    /// The role's session while it has one.
    session: Mutex<Option<Zk>>,
}

impl fmt::Debug for Obs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Obs({})", self.0.role.name())
    }
}

impl Obs {
    /// The observable state of `role`, whose loop turns at least every
    /// `tick` and may wait up to `call_timeout` on one ZooKeeper call.
    pub fn new(role: Role, tick: Duration, call_timeout: Duration) -> Obs {
        Obs(Arc::new(Inner {
            role,
            metrics: Metrics::new(role),
            health: Health::new(role, tick, call_timeout),
            session: Mutex::new(None),
        }))
    }

    /// The role.
    pub fn role(&self) -> Role {
        self.0.role
    }

    /// Its metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// Its health.
    pub fn health(&self) -> &Health {
        &self.0.health
    }

    /// The control loop turned: `/healthz` and systemd's watchdog (when
    /// one is asked for) both hear of it.
    pub fn beat(&self) {
        self.0.health.beat();
        crate::notify::watchdog();
    }

    /// The role now stands at `stage`.
    pub fn stage(&self, stage: Stage) {
        self.0.health.set_stage(stage);
    }

    /// A new session of the role: from now on its events drive the
    /// connection gauge and `/healthz`, and viewers read through it.
    pub fn session_opened(&self, zk: &Zk) {
        let weak = Arc::downgrade(&self.0);
        zk.on_session_events(move |event| match weak.upgrade() {
            Some(inner) => {
                inner.session_event(event);
                true
            }
            None => false,
        });
        self.0.connected(zk.is_connected());
        *self.lock_session() = Some(zk.clone());
    }

    /// The role is done with `zk`: counts an expiry if the session ended
    /// without being closed.
    pub fn session_ended(&self, zk: &Zk) {
        if zk.is_lost() {
            self.0.metrics.session_expired();
        }
        self.0.connected(false);
        *self.lock_session() = None;
    }

    /// The role's session, while it has one.
    pub fn session(&self) -> Option<Zk> {
        self.lock_session().clone()
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Option<Zk>> {
        self.0
            .session
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn connected(&self, connected: bool) {
        self.metrics.set_connected(connected);
        self.health.set_connected(connected);
    }

    fn session_event(&self, event: SessionEvent) {
        match event {
            SessionEvent::Connected => {
                self.metrics.reconnected();
                self.connected(true);
            }
            SessionEvent::Disconnected | SessionEvent::Lost => self.connected(false),
        }
    }
}
