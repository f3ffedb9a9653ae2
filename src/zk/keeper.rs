//! Keeping one ZooKeeper session for as long as the server does.
//!
//! zookeeper-client gives a session up on its own after about 1.4 session
//! timeouts without an answer (it then reports `Expired`), even when the
//! server still holds it: a ZooKeeper restart or an ensemble election
//! longer than that would end every role's session although the server
//! gives every session a fresh timeout when it comes back. So when the
//! client gives up, the keeper reconnects with the same session id and
//! password, and only a server that answers "expired" (or refuses the
//! credentials) ends the session. Meanwhile the session counts as
//! disconnected: calls wait for it, and writes stay unknown.
//!
//! The keeper runs on the events thread and is the one source of
//! [`SessionEvent`]s for the roles. It logs only for services: a short
//! command's stderr is the user's.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use log::{debug, info, warn};
use zookeeper_client::{Client, SessionInfo, SessionState, StateWatcher};

use super::{ConnectOptions, SessionEvent, ZkError, connector, events};
use crate::backoff::Backoff;

/// How the session stands for the calls made on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// The client serves calls (it may be reconnecting by itself).
    Serving,
    /// The client gave up; the keeper is reconnecting to the same session.
    Resuming,
    /// The session is over: expired on the server, refused, or closed.
    Over,
}

/// A subscriber to session events; false once it wants no more.
type Subscriber = Box<dyn Fn(SessionEvent) -> bool + Send>;

/// What every clone of a `Zk` shares.
pub struct Shared {
    live: Mutex<Live>,
    /// Notified whenever `live.standing` or `live.client` changes.
    changed: Condvar,
    /// How to reconnect.
    opts: ConnectOptions,
}

struct Live {
    /// The session to resume: its id and password.
    session: SessionInfo,
    /// `None` once closed by this process.
    client: Option<Client>,
    standing: Standing,
    subscribers: Vec<Subscriber>,
    /// Times the keeper resumed the session after the client gave it up.
    resumed: u64,
}

impl Shared {
    /// Shares `client` and starts keeping its session.
    pub fn keep(client: Client, opts: &ConnectOptions) -> Arc<Shared> {
        let watcher = client.state_watcher();
        let shared = Arc::new(Shared {
            live: Mutex::new(Live {
                session: client.session().clone(),
                client: Some(client),
                standing: Standing::Serving,
                subscribers: Vec::new(),
                resumed: 0,
            }),
            changed: Condvar::new(),
            opts: opts.clone(),
        });
        events::spawn(watch_over(Arc::downgrade(&shared), watcher));
        shared
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client to send a call on, waiting until `deadline` while the
    /// session is being resumed.
    pub fn client(&self, deadline: Instant) -> Result<Client, ZkError> {
        let mut live = self.lock();
        loop {
            match (live.standing, &live.client) {
                (Standing::Serving, Some(client)) => return Ok(client.clone()),
                (Standing::Over, _) | (_, None) => return Err(ZkError::SessionExpired),
                (Standing::Resuming, _) => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ZkError::ConnectionLoss);
            }
            live = self
                .changed
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// A failed call's error as the roles must read it: the client's
    /// "expired" means "unknown, the link is down" while the session may
    /// still be resumed.
    pub fn classify(&self, err: ZkError) -> ZkError {
        if err == ZkError::SessionExpired && !self.is_over() {
            ZkError::ConnectionLoss
        } else {
            err
        }
    }

    /// True once the session is over for good.
    pub fn is_over(&self) -> bool {
        self.lock().standing == Standing::Over
    }

    /// True while calls can go through now.
    pub fn is_connected(&self) -> bool {
        let live = self.lock();
        live.standing == Standing::Serving
            && live.client.as_ref().is_some_and(|c| {
                matches!(
                    c.state(),
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly
                )
            })
    }

    /// How many times the session was resumed after the client gave it up.
    pub fn resumed(&self) -> u64 {
        self.lock().resumed
    }

    /// Adds a subscriber to every later session event.
    pub fn subscribe(&self, subscriber: Subscriber) {
        let mut live = self.lock();
        if live.standing == Standing::Over {
            subscriber(SessionEvent::Lost);
        } else {
            live.subscribers.push(subscriber);
        }
    }

    fn publish(&self, event: SessionEvent) {
        let mut live = self.lock();
        live.subscribers.retain(|s| s(event));
        if event == SessionEvent::Lost {
            live.subscribers.clear();
        }
    }

    fn set(&self, standing: Standing, client: Option<Client>) {
        let mut live = self.lock();
        if live.standing == Standing::Over {
            return;
        }
        live.standing = standing;
        if let Some(client) = client {
            live.session = client.session().clone();
            live.client = Some(client);
            live.resumed += 1;
        }
        drop(live);
        self.changed.notify_all();
    }

    /// Ends the session on the server now (its ephemeral nodes go at once),
    /// waiting at most `wait` for the server to confirm.
    pub fn close(&self, wait: Duration) {
        let (client, id) = {
            let mut live = self.lock();
            live.standing = Standing::Over;
            (live.client.take(), live.session.id().0)
        };
        self.changed.notify_all();
        let Some(client) = client else { return };
        let mut watcher = client.state_watcher();
        // The session closes when the last clone of the client is gone
        // (calls in flight hold clones for their duration).
        drop(client);
        let closed = async {
            while !matches!(
                watcher.changed().await,
                SessionState::Closed | SessionState::Expired | SessionState::AuthFailed
            ) {}
            true
        };
        let deadline = Instant::now() + wait;
        let done = super::block::block_on_until(closed, deadline).unwrap_or(false);
        debug!("session {id:#x} closed (confirmed: {done})");
    }
}

/// Follows the session's states, resumes it when the client gives it up,
/// and tells the subscribers. Ends with the session, or when no `Zk` is
/// left.
async fn watch_over(shared: Weak<Shared>, mut watcher: StateWatcher) {
    loop {
        let state = watcher.changed().await;
        let Some(strong) = shared.upgrade() else {
            return;
        };
        let event = match state {
            SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                SessionEvent::Connected
            }
            SessionState::Disconnected => SessionEvent::Disconnected,
            SessionState::Expired if strong.lock().standing == Standing::Serving => {
                strong.set(Standing::Resuming, None);
                strong.publish(SessionEvent::Disconnected);
                drop(strong);
                match resume(&shared).await {
                    Some(next) => {
                        watcher = next;
                        continue;
                    }
                    None => return,
                }
            }
            _ => {
                strong.set(Standing::Over, None);
                strong.publish(SessionEvent::Lost);
                return;
            }
        };
        strong.publish(event);
    }
}

/// Reconnects to the same session until the server takes it back (the new
/// client's state watcher) or says it is over (`None`).
async fn resume(shared: &Weak<Shared>) -> Option<StateWatcher> {
    // Each attempt tries every host once (the connector fails eagerly) and
    // the pace is ours: short, so a server that is back is found soon.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
    let mut warned = false;
    loop {
        let (opts, session) = {
            let strong = shared.upgrade()?;
            let live = strong.lock();
            if live.standing == Standing::Over {
                return None;
            }
            (strong.opts.clone(), live.session.clone())
        };
        let id = session.id().0;
        // Each attempt is bounded: a server that takes TCP and never
        // answers must not hold the keeper.
        let limit = opts.session_timeout.max(Duration::from_secs(2));
        let connecting = match connector(&opts) {
            Ok(connecting) => connecting.with_session(session),
            Err(err) => return give_up(shared, id, &err),
        };
        let attempt = async {
            match &opts.tls {
                Some(_) => connecting.secure_connect(&opts.hosts).await,
                None => connecting.connect(&opts.hosts).await,
            }
        }
        .or(async {
            async_io::Timer::after(limit).await;
            Err(zookeeper_client::Error::Timeout)
        });
        match attempt.await.map_err(ZkError::from) {
            Ok(client) if client.session_id().0 == id => {
                let watcher = client.state_watcher();
                let strong = shared.upgrade()?;
                strong.set(Standing::Serving, Some(client));
                if opts.service {
                    info!("ZooKeeper session {id:#x} resumed: the server still held it");
                }
                strong.publish(SessionEvent::Connected);
                return Some(watcher);
            }
            Ok(_) => return give_up(shared, id, &ZkError::SessionExpired),
            Err(err @ (ZkError::SessionExpired | ZkError::AuthFailed)) => {
                return give_up(shared, id, &err);
            }
            Err(err) => {
                if !warned && opts.service {
                    warn!(
                        "ZooKeeper at {} unreachable past the session timeout ({err}); \
                         reconnecting to session {id:#x}, which the server may still hold",
                        opts.hosts
                    );
                    warned = true;
                }
                async_io::Timer::after(backoff.next_wait()).await;
            }
        }
    }
}

/// Marks the session over for good and tells the subscribers.
fn give_up(shared: &Weak<Shared>, id: i64, err: &ZkError) -> Option<StateWatcher> {
    let strong = shared.upgrade()?;
    if strong.opts.service {
        warn!("ZooKeeper session {id:#x} is over: {err}");
    }
    strong.set(Standing::Over, None);
    strong.publish(SessionEvent::Lost);
    None
}
