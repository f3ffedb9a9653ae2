//! The only code that touches zookeeper-client.
//!
//! zkmw is synchronous; the crate is async. This layer turns each call into a
//! blocking one with a deadline (`block.rs`), forwards one-shot watches,
//! persistent child watches (`children.rs`) and session state changes into
//! a crossbeam channel (`events.rs`), and maps
//! every failure to [`ZkError`]. Nothing else in zkmw sees a future or a
//! type of the crate.
//!
//! Facts this layer is built on (measured, see the project notes): the crate
//! keeps the session, its one-shot watches and its auth across reconnects;
//! it never retries a call; a call that hits its deadline still executes when
//! the link comes back, so a timed-out write has an unknown outcome; an
//! expired client never opens a new session by itself; and it gives a
//! session up after 1.4 session timeouts without an answer, so `keeper.rs`
//! reconnects to the same session for as long as the server holds it.
//! A short command's reads ride out a dropped connection: they are tried
//! again for up to its connect timeout (a read changes nothing); writes
//! never are, here. Requests over the server's packet limit are refused here, unsent
//! ([`ZkError::TooLarge`]): the server would drop the connection. Steps
//! ready at once are sent as few transactions and multi-reads as
//! [`group`] allows (group commit).

mod block;
mod children;
mod diagnose;
mod error;
mod events;
pub mod group;
mod keeper;
mod txn;

pub use children::{ChildEvent, ChildWatch};
pub use error::ZkError;
pub use txn::Op;

use std::future::Future;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use log::{debug, warn};
use zookeeper_client::{Acls, Client, Connector, CreateMode, MultiReadResult, TlsOptions};

use crate::backoff::Backoff;
use keeper::Shared;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Comma-separated `host:port` list, as given by the user.
    pub hosts: String,
    /// Session timeout asked of the server (it may clamp it).
    pub session_timeout: Duration,
    /// Deadline of each call.
    pub call_timeout: Duration,
    /// How long to keep trying to connect, and (for a command, not a
    /// service) to try a read again after an unknown outcome; `None` means
    /// forever (services).
    pub connect_timeout: Option<Duration>,
    /// Digest credentials `user:password`; nodes are then creator-only.
    pub auth: Option<String>,
    /// Speak TLS to ZooKeeper's secure port with these PEM files.
    pub tls: Option<TlsFiles>,
    /// A long-running role: it logs what it waits for and what it resumes.
    /// A short command keeps stderr for the user.
    pub service: bool,
}

impl ConnectOptions {
    /// Plain options for tools (the benchmark's helpers): no auth, no TLS,
    /// 10 s for the session, each call and connecting.
    pub fn plain(hosts: &str) -> Self {
        let ten = Duration::from_secs(10);
        ConnectOptions {
            hosts: hosts.to_string(),
            session_timeout: ten,
            call_timeout: ten,
            connect_timeout: Some(ten),
            auth: None,
            tls: None,
            service: false,
        }
    }
}

/// PEM contents for a TLS connection.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate(s) that signed the servers' certificates.
    pub ca: String,
    /// A client certificate and its key, for servers that ask for one.
    pub identity: Option<(String, String)>,
}

/// A node's data and stat, or `None` when the node is not there.
pub type Node = Option<(Vec<u8>, NodeStat)>;

/// The parts of a znode's stat that zkmw uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStat {
    /// Data version: bumped by every write of the node's data.
    pub version: i32,
    /// Session that owns the node if it is ephemeral, else 0.
    pub ephemeral_owner: i64,
    /// Number of children.
    pub num_children: i32,
    /// Child version: bumped by every create or delete of a child. Not
    /// the next sequence number: ZooKeeper 3.8 numbers children by creates
    /// only (measured), so after deletes this runs ahead of them.
    pub cversion: i32,
    /// The transaction that created this node.
    pub czxid: i64,
    /// The last transaction that created or deleted a child: every child
    /// created after this stat was read has a greater `czxid`.
    pub pzxid: i64,
    /// Creation time, unix milliseconds.
    pub ctime_ms: i64,
}

impl From<zookeeper_client::Stat> for NodeStat {
    fn from(s: zookeeper_client::Stat) -> Self {
        NodeStat {
            version: s.version,
            ephemeral_owner: s.ephemeral_owner,
            num_children: s.num_children,
            cversion: s.cversion,
            czxid: s.czxid,
            pzxid: s.pzxid,
            ctime_ms: s.ctime,
        }
    }
}

/// A session-level change, forwarded into a role's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEvent {
    /// Connected again after a disconnect: re-read everything.
    Connected,
    /// The link is down; the session may still be alive. Pause writes.
    Disconnected,
    /// The session is over (expired, closed or refused): start over.
    Lost,
}

/// A fired one-shot watch: something at `path` may have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The watched path.
    pub path: String,
}

/// A connected ZooKeeper session. Cheap to clone; clones share the session
/// and pipeline their requests on one socket. The session is kept for as
/// long as the server holds it (see `keeper.rs`): a client that gave up
/// during a long outage is replaced by one resumed on the same session.
#[derive(Clone)]
pub struct Zk {
    shared: Arc<Shared>,
    call_timeout: Duration,
    acls: Acls<'static>,
    /// The negotiated session timeout.
    session_timeout: Duration,
    session_id: i64,
    /// How long a read is tried again after an unknown outcome (see
    /// [`Zk::patiently`]); `None` for services.
    read_patience: Option<Duration>,
}

/// Largest request zkmw sends. ZooKeeper drops the connection on a packet of
/// 1 MiB (jute.maxbuffer) or more, failing every call in flight with it;
/// this leaves room for the request's framing.
pub const MAX_REQUEST_BYTES: usize = 1_040_000;

/// How many nodes one multi-read of [`Zk::get_grouped`] reads at most: a
/// few small records in one answer, and never more than a few MiB even of
/// records at the node limit.
pub const READ_GROUP: usize = 32;

impl Zk {
    /// Connects, retrying with backoff until `connect_timeout` (forever when
    /// `None`, logging what it waits for). Each attempt has its own deadline,
    /// so a server that accepts TCP and never answers cannot hang us.
    pub fn connect(opts: &ConnectOptions) -> Result<Zk, ZkError> {
        let started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let attempt_deadline = Instant::now() + opts.session_timeout + Duration::from_secs(1);
            let attempt_deadline = match opts.connect_timeout {
                Some(limit) => attempt_deadline.min(started + limit),
                None => attempt_deadline,
            };
            let connector = connector(opts)?;
            let connecting = match &opts.tls {
                Some(_) => block_until(connector.secure_connect(&opts.hosts), attempt_deadline),
                None => block_until(connector.connect(&opts.hosts), attempt_deadline),
            };
            let err = match connecting {
                Ok(client) => return Ok(Zk::new(client, opts)),
                Err(err @ (ZkError::AuthFailed | ZkError::BadConfig(_))) => return Err(err),
                Err(err) => err,
            };
            let left = opts
                .connect_timeout
                .map(|limit| limit.saturating_sub(started.elapsed()));
            if left.is_some_and(|left| left.is_zero()) {
                return Err(unreachable(opts));
            }
            // Commands have a deadline and report once; services log here.
            let wait = backoff.next_wait();
            let wait = left.map_or(wait, |left| left.min(wait));
            if opts.connect_timeout.is_some() {
                debug!("ZooKeeper at {} not reachable yet ({err})", opts.hosts);
            } else {
                warn!(
                    "waiting for ZooKeeper at {} ({err}); retrying in {} ms",
                    opts.hosts,
                    wait.as_millis()
                );
            }
            thread::sleep(wait);
        }
    }

    fn new(client: Client, opts: &ConnectOptions) -> Zk {
        let acls = if opts.auth.is_some() {
            Acls::creator_all()
        } else {
            Acls::anyone_all()
        };
        let session_timeout = client.session_timeout();
        let session_id = client.session_id().0;
        debug!(
            "connected to {} (session {session_id:#x}, timeout {} ms)",
            opts.hosts,
            session_timeout.as_millis()
        );
        if opts.service && session_timeout != opts.session_timeout {
            warn!(
                "ZooKeeper granted a session timeout of {} ms, not the {} ms asked for \
                 (the server bounds it by its minSessionTimeout and maxSessionTimeout)",
                session_timeout.as_millis(),
                opts.session_timeout.as_millis()
            );
        }
        Zk {
            shared: Shared::keep(client, opts),
            call_timeout: opts.call_timeout,
            acls,
            session_timeout,
            session_id,
            read_patience: opts.connect_timeout.filter(|_| !opts.service),
        }
    }

    /// This session's id (the `ephemeral_owner` of the nodes it creates).
    pub fn session_id(&self) -> i64 {
        self.session_id
    }

    /// The session timeout the server granted: how long after losing touch
    /// with this process it expires the session and its ephemeral nodes.
    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    /// True while connected to a server (writes can go through).
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// True once the session is over for good: the server expired it,
    /// refused it, or this process closed it.
    pub fn is_lost(&self) -> bool {
        self.shared.is_over()
    }

    /// How many times the session was resumed after the client had given
    /// it up during an outage (the server still held it).
    pub fn resumed(&self) -> u64 {
        self.shared.resumed()
    }

    /// Ends the session now, so its ephemeral nodes go at once instead of
    /// after the session timeout; waits at most `wait` for the server to
    /// confirm. Every clone of this `Zk` is closed with it.
    pub fn close(&self, wait: Duration) {
        self.shared.close(wait);
    }

    /// Forwards every later session event into `tx` until the session is
    /// over (the last event is then [`SessionEvent::Lost`]) or `tx` is
    /// disconnected.
    pub fn forward_session_events<M>(&self, tx: Sender<M>)
    where
        M: From<SessionEvent> + Send + 'static,
    {
        self.shared
            .subscribe(Box::new(move |event| tx.send(M::from(event)).is_ok()));
    }

    /// Calls `f` with every later session event until it returns false or
    /// the session is over (the last event is then [`SessionEvent::Lost`]).
    /// `f` runs on the events thread: it must be quick.
    pub fn on_session_events(&self, f: impl Fn(SessionEvent) -> bool + Send + 'static) {
        self.shared.subscribe(Box::new(f));
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.call_timeout
    }

    /// Runs `read` again while its outcome is unknown (the link dropped
    /// mid-call, a server of the ensemble stopped), for as long as a short
    /// command waits for ZooKeeper (its connect timeout): a read changes
    /// nothing, so trying it again is safe, and one server restarting must
    /// not fail a command. Services try once: their control loops read
    /// again on their next round.
    fn patiently<T>(&self, mut read: impl FnMut() -> Result<T, ZkError>) -> Result<T, ZkError> {
        let Some(patience) = self.read_patience else {
            return read();
        };
        let give_up = Instant::now() + patience;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            match read() {
                Err(err) if err.is_unknown_outcome() && Instant::now() < give_up => {
                    debug!("reading: {err}; trying again");
                    backoff.sleep();
                }
                done => return done,
            }
        }
    }

    /// [`Zk::patiently`] for reads with one result per node: all of them
    /// again while one's outcome is unknown.
    fn patiently_each<T>(
        &self,
        mut read: impl FnMut() -> Vec<Result<T, ZkError>>,
    ) -> Vec<Result<T, ZkError>> {
        let mut last = Vec::new();
        let _ = self.patiently(|| {
            last = read();
            let unknown = last.iter().filter_map(|r| r.as_ref().err());
            match unknown.into_iter().find(|err| err.is_unknown_outcome()) {
                Some(err) => Err(err.clone()),
                None => Ok(()),
            }
        });
        last
    }

    /// The client to send a call on, and the call's deadline. A call made
    /// while the session is being resumed waits for it until the deadline.
    fn client(&self) -> Result<(Client, Instant), ZkError> {
        let deadline = self.deadline();
        Ok((self.shared.client(deadline)?, deadline))
    }

    /// Waits for a call sent on the current client.
    fn wait<T, E>(
        &self,
        fut: impl Future<Output = Result<T, E>>,
        deadline: Instant,
    ) -> Result<T, ZkError>
    where
        ZkError: From<E>,
    {
        block_until(fut, deadline).map_err(|err| self.shared.classify(err))
    }

    /// Makes the server this session talks to catch up with the leader, so
    /// the reads that follow see every write committed before. Needed before
    /// deciding from a read whether a write with an unknown outcome
    /// happened: after a reconnect, the session may be on a lagging server.
    pub fn sync(&self, path: &str) -> Result<(), ZkError> {
        self.patiently(|| {
            let (client, deadline) = self.client()?;
            self.wait(client.sync(path), deadline)
        })
    }

    /// Reads a node's data and stat; `None` when there is no such node.
    pub fn get(&self, path: &str) -> Result<Node, ZkError> {
        self.patiently(|| {
            let (client, deadline) = self.client()?;
            node(self.wait(client.get_data(path), deadline))
        })
    }

    /// Reads many nodes with all requests in flight at once; `None` for each
    /// node that is not there. One result per path, in order.
    pub fn get_many(&self, paths: &[String]) -> Vec<Result<Node, ZkError>> {
        self.patiently_each(|| {
            let (client, deadline) = match self.client() {
                Ok(found) => found,
                Err(err) => return all_failed(paths.len(), &err),
            };
            let pending: Vec<_> = paths.iter().map(|p| client.get_data(p)).collect();
            pending
                .into_iter()
                .map(|fut| node(self.wait(fut, deadline)))
                .collect()
        })
    }

    /// The stat of a node, `None` when it is not there.
    pub fn exists(&self, path: &str) -> Result<Option<NodeStat>, ZkError> {
        self.patiently(|| {
            let (client, deadline) = self.client()?;
            self.wait(client.check_stat(path), deadline)
                .map(|s| s.map(Into::into))
        })
    }

    /// The stats of many nodes, with all requests in flight at once; `None`
    /// for each node that is not there.
    pub fn exists_many(&self, paths: &[String]) -> Vec<Result<Option<NodeStat>, ZkError>> {
        self.patiently_each(|| {
            let (client, deadline) = match self.client() {
                Ok(found) => found,
                Err(err) => return all_failed(paths.len(), &err),
            };
            let pending: Vec<_> = paths.iter().map(|p| client.check_stat(p)).collect();
            pending
                .into_iter()
                .map(|fut| self.wait(fut, deadline).map(|s| s.map(Into::into)))
                .collect()
        })
    }

    /// Like [`Zk::exists`], and arms a one-shot watch on the node (created,
    /// changed or deleted) that will send one [`WatchEvent`] into `tx`.
    pub fn exists_watch<M>(&self, path: &str, tx: &Sender<M>) -> Result<Option<NodeStat>, ZkError>
    where
        M: From<WatchEvent> + Send + 'static,
    {
        let (client, deadline) = self.client()?;
        let (stat, watcher) = self.wait(client.check_and_watch_stat(path), deadline)?;
        forward_watch(path, watcher, tx.clone());
        Ok(stat.map(Into::into))
    }

    /// Lists a node's children (names only); `NoNode` if it is not there.
    pub fn children(&self, path: &str) -> Result<Vec<String>, ZkError> {
        self.patiently(|| {
            let (client, deadline) = self.client()?;
            self.wait(client.list_children(path), deadline)
        })
    }

    /// Lists the children of many nodes in ONE read (a ZooKeeper multi-read),
    /// which the server answers from one state: a node that moves from one
    /// of these folders to another shows up in exactly one listing. `None`
    /// for each folder that is not there.
    pub fn children_at_once(&self, paths: &[String]) -> Result<Vec<Option<Vec<String>>>, ZkError> {
        let results = self.read_at_once(paths, |reader, path| reader.add_get_children(path))?;
        results
            .into_iter()
            .map(|result| match result {
                MultiReadResult::Children { children } => Ok(Some(children)),
                other => multi_read_miss(other),
            })
            .collect()
    }

    /// Reads many nodes in ONE read (a multi-read, from one state of the
    /// server); `None` for each node that is not there.
    pub fn get_at_once(&self, paths: &[String]) -> Result<Vec<Node>, ZkError> {
        let results = self.read_at_once(paths, |reader, path| reader.add_get_data(path))?;
        data_nodes(results)
    }

    /// Reads many nodes in few requests: multi-reads of at most
    /// [`READ_GROUP`] nodes each, all in flight at once (ZooKeeper's cost
    /// is per request: a multi-read of 16 small nodes cost it a sixth of
    /// 16 reads, measured by `examples/group_cost.rs`). `None` for each
    /// node that is not there. The reads are independent, as pipelined
    /// ones are: only each group is from one state of the server.
    pub fn get_grouped(&self, paths: &[String]) -> Result<Vec<Node>, ZkError> {
        self.patiently(|| self.get_grouped_once(paths))
    }

    /// One try of [`Zk::get_grouped`].
    fn get_grouped_once(&self, paths: &[String]) -> Result<Vec<Node>, ZkError> {
        let (client, deadline) = self.client()?;
        let pending = paths
            .chunks(READ_GROUP)
            .map(|group| {
                let mut reader = client.new_multi_reader();
                for path in group {
                    reader.add_get_data(path)?;
                }
                Ok((group.len(), reader.commit()))
            })
            .collect::<Result<Vec<_>, ZkError>>()?;
        let mut nodes = Vec::with_capacity(paths.len());
        for (asked, fut) in pending {
            let results = self.wait(fut, deadline)?;
            if results.len() != asked {
                return Err(ZkError::Other(format!(
                    "a multi-read of {asked} nodes answered {}",
                    results.len()
                )));
            }
            nodes.extend(data_nodes(results)?);
        }
        Ok(nodes)
    }

    /// One multi-read of one operation per path; one result per path.
    fn read_at_once(
        &self,
        paths: &[String],
        add: impl Fn(
            &mut zookeeper_client::MultiReader<'_>,
            &str,
        ) -> Result<(), zookeeper_client::Error>,
    ) -> Result<Vec<MultiReadResult>, ZkError> {
        self.patiently(|| {
            let (client, deadline) = self.client()?;
            let mut reader = client.new_multi_reader();
            for path in paths {
                add(&mut reader, path)?;
            }
            let results = self.wait(reader.commit(), deadline)?;
            if results.len() != paths.len() {
                return Err(ZkError::Other(format!(
                    "a multi-read of {} nodes answered {}",
                    paths.len(),
                    results.len()
                )));
            }
            Ok(results)
        })
    }

    /// Like [`Zk::children`], and arms a one-shot watch on the set of
    /// children (and the node's deletion) that sends one event into `tx`.
    pub fn children_watch<M>(&self, path: &str, tx: &Sender<M>) -> Result<Vec<String>, ZkError>
    where
        M: From<WatchEvent> + Send + 'static,
    {
        let (client, deadline) = self.client()?;
        let (children, watcher) = self.wait(client.list_and_watch_children(path), deadline)?;
        forward_watch(path, watcher, tx.clone());
        Ok(children)
    }

    /// Lists the children of many nodes with all requests in flight at
    /// once; for each `(path, true)` also arms a one-shot child watch that
    /// sends one event into `tx`.
    pub fn children_many_watch<M>(
        &self,
        paths: &[(String, bool)],
        tx: &Sender<M>,
    ) -> Vec<Result<Vec<String>, ZkError>>
    where
        M: From<WatchEvent> + Send + 'static,
    {
        let (client, deadline) = match self.client() {
            Ok(found) => found,
            Err(err) => return all_failed(paths.len(), &err),
        };
        let pending: Vec<_> = paths
            .iter()
            .map(|(path, watch)| {
                if *watch {
                    Listing::Watched(client.list_and_watch_children(path))
                } else {
                    Listing::Plain(client.list_children(path))
                }
            })
            .collect();
        pending
            .into_iter()
            .zip(paths)
            .map(|(fut, (path, _))| match fut {
                Listing::Watched(fut) => self.wait(fut, deadline).map(|(children, watcher)| {
                    forward_watch(path, watcher, tx.clone());
                    children
                }),
                Listing::Plain(fut) => self.wait(fut, deadline),
            })
            .collect()
    }

    /// Lists the children of many nodes with all requests in flight at once.
    pub fn children_many(&self, paths: &[String]) -> Vec<Result<Vec<String>, ZkError>> {
        self.patiently_each(|| {
            let (client, deadline) = match self.client() {
                Ok(found) => found,
                Err(err) => return all_failed(paths.len(), &err),
            };
            let pending: Vec<_> = paths.iter().map(|p| client.list_children(p)).collect();
            pending
                .into_iter()
                .map(|fut| self.wait(fut, deadline))
                .collect()
        })
    }

    /// Creates a persistent node. `NodeExists` if it is there already.
    pub fn create(&self, path: &str, data: &[u8]) -> Result<(), ZkError> {
        check_size(path.len() + data.len())?;
        let options = CreateMode::Persistent.with_acls(self.acls);
        let (client, deadline) = self.client()?;
        self.wait(client.create(path, data, &options), deadline)
            .map(drop)
    }

    /// Creates a persistent node unless it exists (an idempotent `mkdir`).
    pub fn ensure(&self, path: &str) -> Result<(), ZkError> {
        // Made or found the same either way: safe to try again.
        self.patiently(|| match self.create(path, b"") {
            Ok(()) | Err(ZkError::NodeExists) => Ok(()),
            Err(err) => Err(err),
        })
    }

    /// Like [`Zk::ensure`], but with the open ACL whatever the session's
    /// credentials: for nodes shared with other namespaces.
    pub fn ensure_open(&self, path: &str) -> Result<(), ZkError> {
        let options = CreateMode::Persistent.with_acls(Acls::anyone_all());
        self.patiently(|| {
            let (client, deadline) = self.client()?;
            match self.wait(client.create(path, b"", &options), deadline) {
                Ok(_) | Err(ZkError::NodeExists) => Ok(()),
                Err(err) => Err(err),
            }
        })
    }

    /// Creates one persistent sequential node under `prefix` for each of
    /// `data`, packed into as few transactions as [`group::GROUP_BYTES`]
    /// allows, all in flight at once; returns each new node's name, in
    /// order. The creates of one transaction happen together or not at
    /// all, and a failure of one is the failure of each (they are alike:
    /// same folder, same kind).
    ///
    /// Notable errors: `ConnectionLoss`/`Timeout` leave a create's outcome
    /// unknown: the node may exist, so find it by content before retrying;
    /// `NoNode` when the folder is missing; `TooLarge` (not sent) for an
    /// item over [`MAX_REQUEST_BYTES`].
    pub fn create_sequential_many(
        &self,
        prefix: &str,
        data: &[Vec<u8>],
    ) -> Vec<Result<String, ZkError>> {
        let steps: Vec<Vec<Op>> = data
            .iter()
            .map(|d| {
                vec![Op::CreateSequential {
                    prefix: prefix.to_string(),
                    data: d.clone(),
                }]
            })
            .collect();
        let todo: Vec<usize> = (0..steps.len()).collect();
        let (mut txns, later) = group::wave(&[], &steps, &todo, group::GROUP_BYTES);
        // Sequential creates name no existing node: they never meet.
        debug_assert!(later.is_empty());
        let ops: Vec<Vec<Op>> = txns.iter_mut().map(group::Txn::take_ops).collect();
        let unsent = ZkError::Other("a create left unsent".into());
        let mut names: Vec<Result<String, ZkError>> = all_failed(data.len(), &unsent);
        for (txn, result) in txns.iter().zip(self.multi_many_created(&ops)) {
            let result = result.map_err(|err| match err.txn_cause() {
                (Some(_), cause) => cause.clone(),
                (None, _) => err,
            });
            for (i, step) in txn.steps().into_iter().enumerate() {
                names[step] = match &result {
                    Ok(created) => created
                        .get(i)
                        .cloned()
                        .flatten()
                        .ok_or_else(|| ZkError::Other("a create answered no name".into())),
                    Err(err) => Err(err.clone()),
                };
            }
        }
        names
    }

    /// Applies `ops` as one transaction: all of them or none.
    ///
    /// Notable errors: `TxnFailed { index, cause }` names the first failing
    /// operation (nothing was applied); `ConnectionLoss`/`Timeout` leave the
    /// outcome unknown; `TooLarge` when the request would pass
    /// [`MAX_REQUEST_BYTES`] (nothing was sent).
    pub fn multi(&self, ops: &[Op]) -> Result<(), ZkError> {
        self.multi_created(ops).map(drop)
    }

    /// Like [`Zk::multi`], and returns, for each operation, the name (last
    /// path segment) of the node it created, if it created one: how a
    /// sequential create in a transaction learns its name.
    pub fn multi_created(&self, ops: &[Op]) -> Result<Vec<Option<String>>, ZkError> {
        let (client, deadline) = self.client()?;
        let results = self.wait(start_multi(&client, ops, self.acls)?, deadline)?;
        Ok(created_names(results))
    }

    /// Applies every step of `steps`, each all-or-nothing behind `prefix`,
    /// in as few transactions as [`group::commit`] makes of them; each
    /// step's outcome is the one it would have had as a transaction of its
    /// own. `sent` is told how many transactions each wave sends.
    pub fn commit(
        &self,
        prefix: &[Op],
        steps: &[Vec<Op>],
        sent: &dyn Fn(usize),
    ) -> Vec<Result<group::Created, ZkError>> {
        group::commit(prefix, steps, group::GROUP_BYTES, |txns| {
            sent(txns.len());
            self.multi_many_created(txns)
        })
    }

    /// Like [`Zk::multi_many`], and answers for each transaction the name of
    /// the node each of its operations created, if it created one (see
    /// [`Zk::multi_created`]): what [`group::commit`] sends with.
    pub fn multi_many_created(&self, txns: &[Vec<Op>]) -> Vec<Result<group::Created, ZkError>> {
        let (client, deadline) = match self.client() {
            Ok(found) => found,
            Err(err) => return all_failed(txns.len(), &err),
        };
        let pending: Vec<_> = txns
            .iter()
            .map(|ops| start_multi(&client, ops, self.acls))
            .collect();
        pending
            .into_iter()
            .map(|fut| self.wait(fut?, deadline).map(created_names))
            .collect()
    }

    /// Applies many independent transactions with all of them in flight at
    /// once (pipelined on the one socket). One result per transaction.
    pub fn multi_many(&self, txns: &[Vec<Op>]) -> Vec<Result<(), ZkError>> {
        self.multi_many_created(txns)
            .into_iter()
            .map(|r| r.map(drop))
            .collect()
    }
}

/// Sends a transaction now (unless it is too large to send); the returned
/// future yields its outcome.
fn start_multi<'a>(
    client: &'a Client,
    ops: &[Op],
    acls: Acls<'static>,
) -> Result<
    impl Future<
        Output = Result<Vec<zookeeper_client::MultiWriteResult>, zookeeper_client::MultiWriteError>,
    > + use<'a>,
    ZkError,
> {
    check_size(txn::request_bytes(ops))?;
    let mut writer = client.new_multi_writer();
    for op in ops {
        op.add_to(&mut writer, acls)?;
    }
    Ok(writer.commit())
}

/// For each operation of a transaction that went through, the name (last
/// path segment) of the node it created, if it created one.
fn created_names(results: Vec<zookeeper_client::MultiWriteResult>) -> group::Created {
    results
        .into_iter()
        .map(|r| match r {
            zookeeper_client::MultiWriteResult::Create { path, .. } => {
                path.rsplit('/').next().map(str::to_string)
            }
            _ => None,
        })
        .collect()
}

/// One copy of `err` for each of `n` calls that could not be sent.
fn all_failed<T>(n: usize, err: &ZkError) -> Vec<Result<T, ZkError>> {
    (0..n).map(|_| Err(err.clone())).collect()
}

/// The crate's connector for these options: session timeout, credentials,
/// TLS, and no endless retrying inside one attempt.
fn connector(opts: &ConnectOptions) -> Result<Connector, ZkError> {
    let mut connector = Client::connector()
        .with_session_timeout(opts.session_timeout)
        .with_fail_eagerly();
    if let Some(auth) = &opts.auth {
        connector = connector.with_auth("digest", auth.as_bytes());
    }
    if let Some(tls) = &opts.tls {
        connector = connector.with_tls(tls_options(tls)?);
    }
    Ok(connector)
}

/// The error a command reports when no server answered in its time, with
/// what happened at each host.
fn unreachable(opts: &ConnectOptions) -> ZkError {
    let limit = opts.connect_timeout.unwrap_or_default();
    let hint = if opts.tls.is_some() {
        "; with TLS: is --tls-ca the CA that signed the server's certificate, and is that its secure port?"
    } else {
        ""
    };
    ZkError::Unreachable(format!(
        "no ZooKeeper server answered within {:.1} s: {}{hint}",
        limit.as_secs_f64(),
        diagnose::unreachable(&opts.hosts, limit)
    ))
}

/// `TooLarge` for a request of `bytes` over [`MAX_REQUEST_BYTES`].
fn check_size(bytes: usize) -> Result<(), ZkError> {
    if bytes > MAX_REQUEST_BYTES {
        Err(ZkError::TooLarge { bytes })
    } else {
        Ok(())
    }
}

/// The crate's TLS options from PEM contents.
fn tls_options(tls: &TlsFiles) -> Result<TlsOptions, ZkError> {
    let bad =
        |what: &str, err: zookeeper_client::Error| ZkError::BadConfig(format!("{what}: {err}"));
    let mut options = TlsOptions::new()
        .with_pem_ca(&tls.ca)
        .map_err(|e| bad("the TLS CA is not a usable PEM certificate", e))?;
    if let Some((cert, key)) = &tls.identity {
        options = options
            .with_pem_identity(cert, key)
            .map_err(|e| bad("the TLS client certificate or key is not usable PEM", e))?;
    }
    Ok(options)
}

/// A children listing in flight, with or without a watch.
enum Listing<W, P> {
    Watched(W),
    Plain(P),
}

/// Runs `fut` on this thread until it finishes or `deadline` passes.
fn block_until<T, E>(
    fut: impl Future<Output = Result<T, E>>,
    deadline: Instant,
) -> Result<T, ZkError>
where
    ZkError: From<E>,
{
    match block::block_on_until(fut, deadline) {
        Some(result) => result.map_err(ZkError::from),
        None => Err(ZkError::Timeout),
    }
}

/// A multi-read's data answers as [`Node`]s.
fn data_nodes(results: Vec<MultiReadResult>) -> Result<Vec<Node>, ZkError> {
    results
        .into_iter()
        .map(|result| match result {
            MultiReadResult::Data { data, stat } => Ok(Some((data, stat.into()))),
            other => multi_read_miss(other),
        })
        .collect()
}

/// A multi-read's answer for a node that is not there (`None`), or the
/// error it gives.
fn multi_read_miss<T>(result: MultiReadResult) -> Result<Option<T>, ZkError> {
    match result {
        MultiReadResult::Error { err } => match ZkError::from(err) {
            ZkError::NoNode => Ok(None),
            err => Err(err),
        },
        _ => Err(ZkError::Other(
            "a multi-read answered another kind of read".into(),
        )),
    }
}

/// A read's data and stat as a [`Node`]: `None` when the node is not there.
fn node(result: Result<(Vec<u8>, zookeeper_client::Stat), ZkError>) -> Result<Node, ZkError> {
    match result {
        Ok((data, stat)) => Ok(Some((data, stat.into()))),
        Err(ZkError::NoNode) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Forwards a one-shot watch when it fires (which includes the session
/// ending).
fn forward_watch<M>(path: &str, watcher: zookeeper_client::OneshotWatcher, tx: Sender<M>)
where
    M: From<WatchEvent> + Send + 'static,
{
    let path = path.to_string();
    events::spawn(async move {
        watcher.changed().await;
        let _ = tx.send(M::from(WatchEvent { path }));
    });
}
