//! `zkmw worker`: registers `/assign/<id>` then the ephemeral `/workers/<id>`,
//! watches its assignments, and runs each one in a thread pool.
//!
//! The control loop (`serve.rs`) keeps a local table of the tasks it knows,
//! so a repeated notification never starts a task twice; the claim
//! (version check on the assignment + ephemeral `/running/<t>`) makes sure
//! of it across processes too. The loop claims what it can start and
//! stores what became of each run (see [`job`]), all the steps of a turn
//! in as few transactions as they fit; each job's thread only runs it and
//! reports through the same channel as watches and session changes. Its
//! decisions are plain functions in `decide.rs`.
//!
//! A worker cut off from ZooKeeper keeps its jobs for [`session::hold`]
//! (its session may come back: see `zk/keeper.rs`), then kills them and
//! starts over with a new session: those runs now belong to a re-run
//! elsewhere, which the master starts only [`session::rerun_grace`] after
//! their claims vanished. On SIGTERM the worker leaves /workers first (so
//! the master requeues what it has not started), lets running jobs finish
//! within the drain timeout, hands back what it had to kill, and closes
//! its session, so nothing of it lingers.

mod decide;
pub mod job;
mod relay;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use threadpool::ThreadPool;

use crate::backoff::Backoff;
use crate::error::Error;
use crate::exec::JobReport;
use crate::layout::Layout;
use crate::model::{self, WorkerInfo};
use crate::notify;
use crate::obs::Obs;
use crate::obs::health::Stage;
use crate::session::{self, Next};
use crate::settings::{Given, Tuning, WORKER_KEYS};
use crate::shutdown::Shutdown;
use crate::zk::{ChildEvent, ConnectOptions, Op, SessionEvent, WatchEvent, Zk, ZkError};
use decide::{Holder, InTheWay, Me};
use serve::WorkerSession;

/// What a worker needs to run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where ZooKeeper is and how to talk to it.
    pub connect: ConnectOptions,
    /// The namespace.
    pub layout: Layout,
    /// This worker's id.
    pub id: String,
    /// Jobs run at once.
    pub threads: usize,
    /// Longest time between two reads of the assignments.
    pub tick: Duration,
    /// The settings this worker was given itself (flags, env): the drain
    /// timeout and the output cap, which beat the cluster's.
    pub given: Given,
    /// The shell that runs jobs (`sh`).
    pub shell: PathBuf,
    /// The labels it advertises (`--label`).
    pub labels: Vec<String>,
    /// What this worker shows of itself (metrics, health).
    pub obs: Obs,
}

/// A message to the worker's control loop.
#[derive(Debug)]
pub enum Msg {
    /// A watched node changed.
    Watch(WatchEvent),
    /// The watch on the assignments folder saw a child come or go.
    Children(ChildEvent),
    /// The session's state changed.
    Session(SessionEvent),
    /// Stop: drain and leave.
    Shutdown,
    /// A job thread's run of a task ended.
    Job {
        /// The task.
        task: String,
        /// The session generation the job thread belongs to.
        generation: u64,
        /// How it ended.
        report: Box<JobReport>,
    },
}

impl From<WatchEvent> for Msg {
    fn from(event: WatchEvent) -> Self {
        Msg::Watch(event)
    }
}

impl From<ChildEvent> for Msg {
    fn from(event: ChildEvent) -> Self {
        Msg::Children(event)
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

/// How long a stopping worker waits for ZooKeeper to confirm the end of
/// its session.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Runs a worker until a [`Msg::Shutdown`] arrives on `rx`.
///
/// Notable errors: [`Error::BadInput`] when its shell cannot be found (no
/// job could start), [`Error::WorkerIdTaken`] when another live worker
/// has this id at start.
pub fn run(cfg: &WorkerConfig, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Result<(), Error> {
    crate::exec::locate_shell(&cfg.shell.to_string_lossy()).map_err(Error::BadInput)?;
    let pool = ThreadPool::with_name("job".into(), cfg.threads);
    let generation = Arc::new(AtomicU64::new(0));
    // The session this worker last registered with, if any.
    let mut previous: Option<i64> = None;
    // Followed live, and kept across sessions.
    let mut tuning = Tuning::new(WORKER_KEYS, cfg.given.clone());
    cfg.obs.metrics().worker_jobs(0, 0, cfg.threads);
    loop {
        cfg.obs.stage(Stage::Connecting);
        let is_stop = |m: &Msg| matches!(m, Msg::Shutdown);
        let Some(zk) = session::open(&cfg.connect, &cfg.layout, &cfg.obs, tx, rx, is_stop)? else {
            return Ok(());
        };
        cfg.obs.stage(Stage::Registering);
        let registered = register(cfg, &zk, previous, tx, rx);
        if !matches!(registered, Ok(Registered::Yes)) {
            cfg.obs.session_ended(&zk);
        }
        match registered? {
            Registered::Yes => {}
            Registered::Stop => {
                notify::stopping("stopping before registering", CLOSE_WAIT);
                zk.close(CLOSE_WAIT);
                return Ok(());
            }
            Registered::Lost => continue,
        }
        previous = Some(zk.session_id());
        cfg.obs.stage(Stage::Registered);
        info!("worker {}: registered ({} threads)", cfg.id, cfg.threads);
        notify::ready(&format!(
            "worker {}: registered, {} threads",
            cfg.id, cfg.threads
        ));
        let mut session = WorkerSession::new(cfg, &zk, &pool, tx, &generation, &mut tuning);
        match session.serve(rx) {
            Next::Stop => {
                session.stop(rx);
                cfg.obs.stage(Stage::Stopping);
                cfg.obs.session_ended(&zk);
                zk.close(CLOSE_WAIT);
                info!("worker {}: stopped", cfg.id);
                return Ok(());
            }
            Next::Restart => {
                session.abandon();
                cfg.obs.session_ended(&zk);
                zk.close(Duration::ZERO);
                warn!(
                    "worker {}: session lost; killed its jobs, registering again",
                    cfg.id
                );
            }
        }
    }
}

/// What this worker publishes in `/workers/<id>`.
fn worker_info(cfg: &WorkerConfig, zk: &Zk) -> WorkerInfo {
    let t = zk.session_timeout();
    WorkerInfo {
        host: session::host_name(),
        pid: std::process::id(),
        threads: cfg.threads,
        started_ms: model::now_ms(),
        session_timeout_ms: Some(t.as_millis() as u64),
        rerun_grace_ms: Some(session::rerun_grace(t).as_millis() as u64),
        labels: cfg.labels.clone(),
    }
}

/// How registering ended.
enum Registered {
    Yes,
    Stop,
    Lost,
}

/// The transaction that makes a worker live: `/assign/<id>` is there, and
/// the ephemeral `/workers/<id>` is created.
fn register_ops(cfg: &WorkerConfig, info: &WorkerInfo) -> [Op; 2] {
    let layout = &cfg.layout;
    [
        Op::Check {
            path: layout.assign_dir(&cfg.id),
            version: 0,
        },
        Op::CreateEphemeral {
            path: layout.worker(&cfg.id),
            data: model::encode(info),
        },
    ]
}

/// Creates `/assign/<id>` and then the ephemeral `/workers/<id>`. When the
/// latter is held by a session of ours that ended, or by this id's worker
/// on this host whose process is gone (restarted after a crash), waits for
/// that session to expire, saying so; any other holder means the id is
/// taken.
fn register(
    cfg: &WorkerConfig,
    zk: &Zk,
    previous: Option<i64>,
    tx: &Sender<Msg>,
    rx: &Receiver<Msg>,
) -> Result<Registered, Error> {
    let layout = &cfg.layout;
    let info = worker_info(cfg, zk);
    let host = session::host_name();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut said = false;
    loop {
        cfg.obs.beat();
        if zk.is_lost() {
            return Ok(Registered::Lost);
        }
        let attempt = zk.ensure(&layout.assign_dir(&cfg.id)).and_then(|()| {
            let txn = zk.multi(&register_ops(cfg, &info));
            cfg.obs.metrics().txn("register", txn)
        });
        let err = match attempt {
            Ok(()) => return Ok(Registered::Yes),
            Err(err) => err,
        };
        let mut wait = backoff.next_wait();
        if err.is_txn_failure(1, &ZkError::NodeExists) {
            let (holder, way) = holder_of(cfg, zk, tx, previous, &host);
            match holder {
                Holder::Us => return Ok(Registered::Yes),
                Holder::Nobody => continue,
                Holder::Another => return Err(Error::WorkerIdTaken(cfg.id.clone())),
                Holder::OurPrevious | Holder::OurGhost => {
                    if !said {
                        say_waiting_for(cfg, zk, way);
                        said = true;
                    }
                    wait = Duration::from_secs(1);
                }
            }
        } else if matches!(err.txn_cause().1, ZkError::NoAuth) {
            return Err(Error::zk(
                format!("registering worker {}", cfg.id),
                ZkError::NoAuth,
            ));
        } else {
            debug!(
                "worker {}: registration not done yet ({err}); retrying",
                cfg.id
            );
        }
        match rx.recv_deadline(notify::wake_by(Instant::now() + wait)) {
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                return Ok(Registered::Stop);
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Who holds this worker's `/workers/<id>`, with the holder's session and
/// pid as read; also watches the node, so that its deletion wakes the
/// loop at once.
fn holder_of(
    cfg: &WorkerConfig,
    zk: &Zk,
    tx: &Sender<Msg>,
    previous: Option<i64>,
    host: &str,
) -> (Holder, (Option<i64>, u32)) {
    let node = cfg.layout.worker(&cfg.id);
    let owner = zk.exists_watch(&node, tx).ok().flatten();
    let holding = zk
        .get(&node)
        .ok()
        .flatten()
        .and_then(|(data, _)| model::decode::<WorkerInfo>(&data).ok());
    let way = InTheWay {
        owner: owner.map(|s| s.ephemeral_owner),
        info: holding.as_ref(),
    };
    let me = Me {
        session: zk.session_id(),
        previous,
        host,
        pid: std::process::id(),
    };
    let holder = decide::holder(way, me, |pid| worker_process_alive(pid, &cfg.id));
    (holder, (way.owner, holding.map_or(0, |i| i.pid)))
}

/// Says, in the log and to systemd, that registering waits for an earlier
/// session of this worker (`way`: its session and pid) to expire.
fn say_waiting_for(cfg: &WorkerConfig, zk: &Zk, (owner, pid): (Option<i64>, u32)) {
    info!(
        "worker {}: {} is still held by an earlier session of this worker ({:#x}, pid {pid}); waiting for ZooKeeper to expire it (within {} s)",
        cfg.id,
        cfg.layout.worker(&cfg.id),
        owner.unwrap_or(0),
        zk.session_timeout().as_secs()
    );
    notify::status(&format!(
        "waiting for an earlier session of worker {} to expire",
        cfg.id
    ));
}

/// Whether a worker process of this id runs on this host with this pid
/// (its command line names the role and the id).
fn worker_process_alive(pid: u32, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.contains(&b"worker".as_slice()) && args.contains(&id.as_bytes())
}
