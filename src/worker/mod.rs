//! `zkmw worker`: registers `/assign/<id>` then the ephemeral `/workers/<id>`,
//! watches its assignments, and runs each one in a thread pool.
//!
//! The control loop keeps a local table of the tasks it knows, so a repeated
//! notification never starts a task twice; the claim transaction (version
//! check on the assignment + ephemeral `/running/<t>`) makes sure of it across
//! processes too. Each job's thread claims, runs and finishes its task
//! (see [`job`]); the loop learns the outcome through the same channel as
//! watches and session changes.
//!
//! When the session is lost the loop kills every running job and discards
//! its result: those runs now belong to a re-run elsewhere. On SIGTERM the
//! worker leaves /workers first (so the master requeues what it has not
//! started), lets running jobs finish within the drain timeout, then exits.

pub mod job;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use threadpool::ThreadPool;

use crate::error::Error;
use crate::exec::KillSwitch;
use crate::layout::{Layout, is_task_name};
use crate::model::{self, FailReason, TaskResult, WorkerInfo};
use crate::session::{self, Next};
use crate::shutdown::Shutdown;
use crate::zk::{ConnectOptions, Op, SessionEvent, WatchEvent, Zk, ZkError};
use job::{JobContext, JobEvent};

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
    /// How long running jobs may take to finish after SIGTERM.
    pub drain_timeout: Duration,
    /// Bytes kept of each job's stdout and stderr.
    pub output_cap: usize,
    /// The shell that runs jobs (`sh`).
    pub shell: PathBuf,
}

/// A message to the worker's control loop.
#[derive(Debug)]
pub enum Msg {
    /// A watched node changed.
    Watch(WatchEvent),
    /// The session's state changed.
    Session(SessionEvent),
    /// Stop: drain and leave.
    Shutdown,
    /// A job thread's progress on a task.
    Job {
        /// The task.
        task: String,
        /// The session generation the job thread belongs to.
        generation: u64,
        /// What happened.
        event: JobEvent,
    },
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

/// Where a task this worker knows of stands locally.
#[derive(Debug)]
enum Local {
    /// Handed to the pool, not claimed yet.
    Queued(KillSwitch),
    /// Claimed and running.
    Running(KillSwitch),
    /// Not to run now: claimed by an earlier session of this worker (the
    /// master repairs it), or held by another run. Looked at again after
    /// this time, since the master may hand the same name back.
    Ignored(Instant),
}

/// Runs a worker until a [`Msg::Shutdown`] arrives on `rx`.
///
/// Notable errors: [`Error::WorkerIdTaken`] when another live worker has
/// this id at start.
pub fn run(cfg: &WorkerConfig, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Result<(), Error> {
    let pool = ThreadPool::with_name("job".into(), cfg.threads);
    let generation = Arc::new(AtomicU64::new(0));
    let draining = Arc::new(AtomicBool::new(false));
    // The session this worker last registered with, if any.
    let mut previous: Option<i64> = None;
    loop {
        let is_stop = |m: &Msg| matches!(m, Msg::Shutdown);
        let Some(zk) = session::open(&cfg.connect, &cfg.layout, tx, rx, is_stop)? else {
            return Ok(());
        };
        match register(cfg, &zk, previous, rx)? {
            Registered::Yes => {}
            Registered::Stop => return Ok(()),
            Registered::Lost => continue,
        }
        previous = Some(zk.session_id());
        info!("worker {}: registered ({} threads)", cfg.id, cfg.threads);
        let ctx = JobContext {
            zk: zk.clone(),
            layout: cfg.layout.clone(),
            worker: cfg.id.clone(),
            output_cap: cfg.output_cap,
            shell: cfg.shell.clone(),
            generation: generation.clone(),
            my_generation: generation.load(Ordering::SeqCst),
            draining: draining.clone(),
            tx: tx.clone(),
        };
        let mut session = WorkerSession {
            cfg,
            zk: &zk,
            ctx,
            pool: &pool,
            local: HashMap::new(),
            armed: false,
        };
        let next = session.serve(rx);
        // Whatever ran under this session is no longer ours to finish.
        generation.fetch_add(1, Ordering::SeqCst);
        session.kill_all();
        match next {
            Next::Stop => {
                // Wait (bounded) for the killed jobs' threads, so no job
                // process outlives the worker.
                session.wait_for_jobs(rx, Instant::now() + Duration::from_secs(10));
                return Ok(());
            }
            Next::Restart => warn!(
                "worker {}: session lost; killed its jobs, registering again",
                cfg.id
            ),
        }
    }
}

enum Registered {
    Yes,
    Stop,
    Lost,
}

/// Creates `/assign/<id>` and then the ephemeral `/workers/<id>`, the latter in
/// a transaction that checks the former still exists. `previous` is the
/// session this worker registered with before, whose node may linger.
fn register(
    cfg: &WorkerConfig,
    zk: &Zk,
    previous: Option<i64>,
    rx: &Receiver<Msg>,
) -> Result<Registered, Error> {
    let layout = &cfg.layout;
    let info = WorkerInfo {
        host: session::host_name(),
        pid: std::process::id(),
        threads: cfg.threads,
        started_ms: model::now_ms(),
    };
    // After a session loss our old ephemeral node lingers until the server
    // expires that session, which can take several session timeouts when
    // the ensemble is electing leaders: wait for it (saying so), rather than
    // give up. A node held by any other session is another worker's.
    let mut next_warning = Instant::now() + cfg.connect.session_timeout;
    loop {
        if zk.is_lost() {
            return Ok(Registered::Lost);
        }
        if rx.try_iter().any(|m| matches!(m, Msg::Shutdown)) {
            return Ok(Registered::Stop);
        }
        let attempt = zk.ensure(&layout.assign_dir(&cfg.id)).and_then(|()| {
            zk.multi(&[
                Op::Check {
                    path: layout.assign_dir(&cfg.id),
                    version: 0,
                },
                Op::CreateEphemeral {
                    path: layout.worker(&cfg.id),
                    data: model::encode(&info),
                },
            ])
        });
        let err = match attempt {
            Ok(()) => return Ok(Registered::Yes),
            Err(err) => err,
        };
        if err.is_txn_failure(1, &ZkError::NodeExists) {
            let owner = zk
                .exists(&layout.worker(&cfg.id))
                .ok()
                .flatten()
                .map(|s| s.ephemeral_owner);
            if owner == Some(zk.session_id()) {
                return Ok(Registered::Yes);
            }
            // Held by another session than our previous one: another
            // worker has this id. (Gone meanwhile: just try again.)
            if owner.is_some() && owner != previous {
                return Err(Error::WorkerIdTaken(cfg.id.clone()));
            }
            if Instant::now() > next_warning {
                warn!(
                    "worker {}: {} is still held by session {:#x}; waiting for it to expire",
                    cfg.id,
                    layout.worker(&cfg.id),
                    owner.unwrap_or(0)
                );
                next_warning = Instant::now() + cfg.connect.session_timeout;
            }
        } else if matches!(err.txn_cause().1, ZkError::NoAuth) {
            return Err(Error::zk(
                format!("registering worker {}", cfg.id),
                ZkError::NoAuth,
            ));
        }
        debug!(
            "worker {}: registration not done yet ({err}); retrying",
            cfg.id
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct WorkerSession<'a> {
    cfg: &'a WorkerConfig,
    zk: &'a Zk,
    ctx: JobContext,
    pool: &'a ThreadPool,
    local: HashMap<String, Local>,
    armed: bool,
}

impl WorkerSession<'_> {
    /// The control loop: reads the assignments again when a watch fired,
    /// on a session change, and every tick (which also revisits tasks set
    /// aside); a job's progress alone changes nothing there to read.
    fn serve(&mut self, rx: &Receiver<Msg>) -> Next {
        let mut stale = true;
        let mut next_tick = Instant::now();
        loop {
            if self.zk.is_lost() {
                return Next::Restart;
            }
            if Instant::now() >= next_tick {
                stale = true;
                next_tick = Instant::now() + self.cfg.tick;
            }
            if stale && self.zk.is_connected() {
                stale = false;
                if let Err(err) = self.round() {
                    debug!("worker {}: round failed ({err}); retrying", self.cfg.id);
                }
            }
            let first = match rx.recv_deadline(next_tick) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Next::Stop,
            };
            for msg in first.into_iter().chain(rx.try_iter()) {
                match msg {
                    Msg::Shutdown => return self.drain(rx),
                    Msg::Watch(_) => {
                        self.armed = false;
                        stale = true;
                    }
                    Msg::Session(_) => stale = true,
                    Msg::Job {
                        task,
                        generation,
                        event,
                    } => self.on_job(task, generation, event),
                }
            }
        }
    }

    /// Reads the assignments and starts the ones it has not seen.
    fn round(&mut self) -> Result<(), ZkError> {
        let dir = self.cfg.layout.assign_dir(&self.cfg.id);
        let listed = if self.armed {
            self.zk.children(&dir)
        } else {
            self.zk.children_watch(&dir, &self.ctx.tx)
        };
        let listed = match listed {
            Ok(listed) => listed,
            Err(ZkError::NoNode) => {
                // The folder went away under us (a master cleaning up just as
                // we registered): put it back; assignments need it.
                return self.zk.ensure(&dir);
            }
            Err(err) => return Err(err),
        };
        self.armed = true;
        // Forget what the master took back, and look again at what was set
        // aside long enough ago.
        let now = Instant::now();
        self.local.retain(|task, state| match state {
            Local::Ignored(until) => *until > now && listed.contains(task),
            _ => true,
        });
        let new: Vec<String> = listed
            .into_iter()
            .filter(|t| !self.local.contains_key(t))
            .collect();
        let paths: Vec<String> = new
            .iter()
            .map(|t| self.cfg.layout.assignment(&self.cfg.id, t))
            .collect();
        for (task, got) in new.into_iter().zip(self.zk.get_many(&paths)) {
            let Some((data, stat)) = got? else { continue };
            let decoded = model::decode_task(&data);
            match decoded {
                Err(why) => self.fail_malformed(&task, stat.version, &why),
                Ok(_) if !is_task_name(&task) => {
                    self.fail_malformed(&task, stat.version, "not a task name")
                }
                Ok(_) if stat.version > 0 => {
                    self.local.insert(task, Local::Ignored(now + self.cfg.tick));
                }
                Ok(decoded) => {
                    let kill = KillSwitch::new();
                    self.local.insert(task.clone(), Local::Queued(kill.clone()));
                    let ctx = self.ctx.clone();
                    self.pool
                        .execute(move || job::run(&ctx, &task, decoded, &kill));
                }
            }
        }
        Ok(())
    }

    fn fail_malformed(&mut self, task: &str, version: i32, why: &str) {
        warn!(
            "worker {}: assignment {task} is malformed ({why}); failing it",
            self.cfg.id
        );
        let layout = &self.cfg.layout;
        let result = TaskResult::failed(
            None,
            FailReason::Malformed,
            Some(&self.cfg.id),
            model::now_ms(),
        );
        let txn = [
            Op::Create {
                path: layout.status_task(task),
                data: model::encode(&result),
            },
            Op::Delete {
                path: layout.assignment(&self.cfg.id, task),
                version: Some(version),
            },
        ];
        if let Err(err) = self.zk.multi(&txn) {
            debug!("worker {}: could not fail {task}: {err}", self.cfg.id);
        }
    }

    fn on_job(&mut self, task: String, generation: u64, event: JobEvent) {
        if generation != self.ctx.my_generation {
            return;
        }
        match event {
            JobEvent::Started => {
                if let Some(Local::Queued(kill)) = self.local.remove(&task) {
                    self.local.insert(task, Local::Running(kill));
                }
            }
            JobEvent::Ended => {
                self.local.remove(&task);
            }
            JobEvent::Held => {
                self.local
                    .insert(task, Local::Ignored(Instant::now() + self.cfg.tick));
            }
        }
    }

    fn busy(&self) -> usize {
        self.local
            .values()
            .filter(|s| !matches!(s, Local::Ignored(_)))
            .count()
    }

    /// SIGTERM: take nothing new, leave /workers so the master requeues what
    /// has not started, let running jobs finish within the drain timeout.
    fn drain(&mut self, rx: &Receiver<Msg>) -> Next {
        info!(
            "worker {}: stopping; {} jobs to finish",
            self.cfg.id,
            self.busy()
        );
        self.ctx.draining.store(true, Ordering::SeqCst);
        if let Err(err) = self.zk.multi(&[Op::Delete {
            path: self.cfg.layout.worker(&self.cfg.id),
            version: None,
        }]) {
            debug!(
                "worker {}: could not leave /workers early: {err}",
                self.cfg.id
            );
        }
        let deadline = Instant::now() + self.cfg.drain_timeout;
        if !self.wait_for_jobs(rx, deadline) {
            warn!(
                "worker {}: drain timeout; killing {} jobs",
                self.cfg.id,
                self.busy()
            );
        }
        Next::Stop
    }

    fn kill_all(&self) {
        for state in self.local.values() {
            if let Local::Queued(kill) | Local::Running(kill) = state {
                kill.kill();
            }
        }
    }

    /// Takes the job threads' messages until none is busy; false if
    /// `deadline` passed first.
    fn wait_for_jobs(&mut self, rx: &Receiver<Msg>, deadline: Instant) -> bool {
        while self.busy() > 0 {
            match rx.recv_deadline(deadline) {
                Ok(Msg::Job {
                    task,
                    generation,
                    event,
                }) => self.on_job(task, generation, event),
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        true
    }
}
