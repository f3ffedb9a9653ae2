//! The worker's control loop for one session: reads its assignments when a
//! watch fires, on a session change and every tick; hands new ones to the
//! thread pool; follows its job threads; gives its jobs up when cut off
//! from ZooKeeper past the hold; pauses when its jobs cannot start; drains
//! on SIGTERM.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use threadpool::ThreadPool;

use super::decide::{self, OnListed, StartHealth};
use super::job::{self, Ending, JobContext, JobEvent};
use super::{Msg, WorkerConfig, register_ops, worker_info};
use crate::exec::KillSwitch;
use crate::model::{self, Away, CancelRequest, FailReason, TaskResult};
use crate::notify;
use crate::obs::health::Stage;
use crate::session::{self, Next};
use crate::settings::{self, Key, Tuning};
use crate::zk::{Op, SessionEvent, Zk, ZkError};

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

/// How long a stopping worker waits for its killed jobs' threads.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// One session's worth of a worker.
pub struct WorkerSession<'a> {
    cfg: &'a WorkerConfig,
    zk: &'a Zk,
    ctx: JobContext,
    pool: &'a ThreadPool,
    local: HashMap<String, Local>,
    /// The watch on the assignments folder is armed and has not fired.
    armed: bool,
    /// The watch on /cancel is armed and has not fired.
    cancel_armed: bool,
    /// The tasks with a cancel request, as last listed.
    cancels: HashSet<String>,
    /// Since when the session has been disconnected, if it is.
    cut_off_since: Option<Instant>,
    /// How long a disconnected worker keeps its jobs.
    hold: Duration,
    /// The settings followed live: the output cap, the drain timeout.
    tuning: &'a mut Tuning,
    /// The watch on the cluster settings is armed and has not fired.
    settings_armed: bool,
    health: StartHealth,
    /// Taking no work until then: its recent jobs could not start.
    paused_until: Option<Instant>,
}

impl<'a> WorkerSession<'a> {
    /// The loop state for a freshly registered session.
    pub fn new(
        cfg: &'a WorkerConfig,
        zk: &'a Zk,
        pool: &'a ThreadPool,
        tx: &Sender<Msg>,
        generation: &Arc<AtomicU64>,
        accepting: &Arc<AtomicBool>,
        tuning: &'a mut Tuning,
    ) -> Self {
        accepting.store(true, Ordering::SeqCst);
        let ctx = JobContext {
            zk: zk.clone(),
            layout: cfg.layout.clone(),
            worker: cfg.id.clone(),
            output_cap: usize::try_from(tuning.count(Key::OutputCap)).unwrap_or(usize::MAX),
            shell: cfg.shell.clone(),
            generation: generation.clone(),
            my_generation: generation.load(Ordering::SeqCst),
            accepting: accepting.clone(),
            tx: tx.clone(),
            progress: super::relay::start(zk.clone(), cfg.layout.clone(), cfg.id.clone()),
            obs: cfg.obs.clone(),
        };
        WorkerSession {
            cfg,
            zk,
            ctx,
            pool,
            local: HashMap::new(),
            armed: false,
            cancel_armed: false,
            cancels: HashSet::new(),
            cut_off_since: None,
            hold: session::hold(zk.session_timeout()),
            tuning,
            settings_armed: false,
            health: StartHealth::default(),
            paused_until: None,
        }
    }

    /// The control loop: reads the assignments again when a watch fired,
    /// on a session change, and every tick (which also revisits tasks set
    /// aside); a job's progress alone changes nothing there to read.
    pub fn serve(&mut self, rx: &Receiver<Msg>) -> Next {
        let mut stale = true;
        let mut next_tick = Instant::now();
        loop {
            self.cfg.obs.beat();
            self.cfg
                .obs
                .metrics()
                .worker_jobs(self.running(), self.cfg.threads);
            let now = Instant::now();
            if self.zk.is_lost() {
                return Next::Restart;
            }
            if decide::hold_is_over(self.cut_off_since, self.hold, now) {
                warn!(
                    "worker {}: cut off from ZooKeeper for {} s: giving up its {} jobs, which will run again elsewhere",
                    self.cfg.id,
                    self.hold.as_secs(),
                    self.busy()
                );
                return Next::Restart;
            }
            if self.paused_until.is_some_and(|until| now >= until) {
                self.resume_taking();
            }
            if now >= next_tick {
                stale = true;
                next_tick = now + self.cfg.tick;
            }
            if stale && self.zk.is_connected() {
                stale = false;
                if let Err(err) = self.round() {
                    debug!("worker {}: round failed ({err}); retrying", self.cfg.id);
                }
            }
            let wake = [
                Some(next_tick),
                self.cut_off_since.map(|since| since + self.hold),
                self.paused_until,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_tick);
            let first = match rx.recv_deadline(notify::wake_by(wake)) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Next::Stop,
            };
            for msg in first.into_iter().chain(rx.try_iter()) {
                match msg {
                    Msg::Shutdown => return self.drain(rx),
                    Msg::Watch(event) => {
                        if event.path == self.cfg.layout.cancel() {
                            self.cancel_armed = false;
                        } else if event.path == self.cfg.layout.config() {
                            self.settings_armed = false;
                        } else {
                            self.armed = false;
                        }
                        stale = true;
                    }
                    Msg::Session(event) => {
                        self.on_session(event);
                        stale = true;
                    }
                    Msg::Job {
                        task,
                        generation,
                        event,
                    } => self.on_job(task, generation, event),
                }
            }
        }
    }

    fn on_session(&mut self, event: SessionEvent) {
        match event {
            SessionEvent::Disconnected => {
                self.cut_off_since.get_or_insert_with(Instant::now);
            }
            SessionEvent::Connected => self.cut_off_since = None,
            SessionEvent::Lost => {}
        }
    }

    /// Reads the cancel requests when they may have changed, and stops the
    /// jobs they name: a running one within its grace (its thread stores
    /// the result), a queued one before it starts (the master fails it).
    fn read_cancels(&mut self) -> Result<(), ZkError> {
        if self.cancel_armed {
            return Ok(());
        }
        let layout = &self.cfg.layout;
        let listed = match self.zk.children_watch(&layout.cancel(), &self.ctx.tx) {
            Err(ZkError::NoNode) => Vec::new(),
            listed => listed?,
        };
        self.cancel_armed = true;
        self.cancels = listed.into_iter().collect();
        let ours: Vec<String> = self
            .cancels
            .iter()
            .filter(|t| self.local.contains_key(*t))
            .cloned()
            .collect();
        let paths: Vec<String> = ours.iter().map(|t| layout.cancel_task(t)).collect();
        for (task, got) in ours.iter().zip(self.zk.get_many(&paths)) {
            let Some((data, _)) = got? else { continue };
            let grace = model::decode::<CancelRequest>(&data)
                .map_or(Duration::from_secs(10), |r| {
                    Duration::from_millis(r.grace_ms)
                });
            if let Some(Local::Queued(kill) | Local::Running(kill)) = self.local.get(task) {
                info!("worker {}: cancelling {task}", self.cfg.id);
                kill.cancel(grace);
            }
        }
        Ok(())
    }

    /// Reads the cluster settings when they may have changed (arming their
    /// watch): jobs started from now on keep the new output cap, and a
    /// drain takes the drain timeout of when it starts.
    fn read_settings(&mut self) -> Result<(), ZkError> {
        if self.settings_armed {
            return Ok(());
        }
        let who = format!("worker {}", self.cfg.id);
        settings::follow(self.zk, &self.cfg.layout, &self.ctx.tx, self.tuning, &who)?;
        self.settings_armed = true;
        self.ctx.output_cap =
            usize::try_from(self.tuning.count(Key::OutputCap)).unwrap_or(usize::MAX);
        Ok(())
    }

    /// Reads the assignments and starts the ones it has not seen.
    fn round(&mut self) -> Result<(), ZkError> {
        self.read_settings()?;
        self.read_cancels()?;
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
            .filter(|t| !self.local.contains_key(t) && !self.cancels.contains(t))
            .collect();
        let paths: Vec<String> = new
            .iter()
            .map(|t| self.cfg.layout.assignment(&self.cfg.id, t))
            .collect();
        for (task, got) in new.into_iter().zip(self.zk.get_many(&paths)) {
            let Some((data, stat)) = got? else { continue };
            match decide::on_listed(&task, model::decode_task(&data), stat.version) {
                OnListed::FailMalformed(why) => self.fail_malformed(&task, stat.version, &why),
                OnListed::SetAside => {
                    self.local.insert(task, Local::Ignored(now + self.cfg.tick));
                }
                OnListed::Run(decoded) => {
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
        if let Err(err) = self.cfg.obs.metrics().txn("fail", self.zk.multi(&txn)) {
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
            JobEvent::Ended(ending) => {
                self.local.remove(&task);
                if matches!(ending, Ending::Finished | Ending::CouldNotStart)
                    && let Some(pause) = self.health.record(ending == Ending::CouldNotStart)
                {
                    self.pause(pause);
                }
            }
            JobEvent::Held => {
                self.local
                    .insert(task, Local::Ignored(Instant::now() + self.cfg.tick));
            }
        }
    }

    /// Stops taking work for `pause`: its jobs cannot start here. Leaving
    /// /workers makes the master requeue what this worker has not started.
    fn pause(&mut self, pause: Duration) {
        warn!(
            "worker {}: its last {} jobs could not start; taking no work for {} s (see the tasks' reason)",
            self.cfg.id,
            decide::FAILED_STARTS,
            pause.as_secs()
        );
        self.ctx.accepting.store(false, Ordering::SeqCst);
        self.cfg.obs.stage(Stage::Paused);
        self.paused_until = Some(Instant::now() + pause);
        let until = model::now_ms() + pause.as_millis() as u64;
        self.step_away("paused", Some(until));
    }

    /// Takes work again after a pause: back in /workers.
    fn resume_taking(&mut self) {
        let layout = &self.cfg.layout;
        let mut txn = vec![Op::Delete {
            path: layout.away_worker(&self.cfg.id),
            version: None,
        }];
        txn.extend(register_ops(self.cfg, &worker_info(self.cfg, self.zk)));
        match self.cfg.obs.metrics().txn("register", self.zk.multi(&txn)) {
            Ok(()) => {
                info!("worker {}: taking work again", self.cfg.id);
                self.cfg.obs.stage(Stage::Registered);
                self.paused_until = None;
                self.ctx.accepting.store(true, Ordering::SeqCst);
            }
            Err(err) => {
                debug!("worker {}: cannot take work again yet: {err}", self.cfg.id);
                self.paused_until = Some(Instant::now() + self.cfg.tick);
            }
        }
    }

    /// Leaves /workers for /away in one transaction, saying why (a paused
    /// worker is away already: only what it says changes).
    fn step_away(&self, why: &str, until_ms: Option<u64>) {
        let layout = &self.cfg.layout;
        let away = model::encode(&Away {
            why: why.to_string(),
            since_ms: model::now_ms(),
            until_ms,
            worker: Some(worker_info(self.cfg, self.zk)),
        });
        let (worker, away_path) = (
            layout.worker(&self.cfg.id),
            layout.away_worker(&self.cfg.id),
        );
        let txn = if self.paused_until.is_some() && why != "paused" {
            vec![Op::SetData {
                path: away_path,
                data: away,
                version: None,
            }]
        } else {
            vec![
                Op::Delete {
                    path: worker,
                    version: None,
                },
                Op::CreateEphemeral {
                    path: away_path,
                    data: away,
                },
            ]
        };
        if let Err(err) = self.cfg.obs.metrics().txn("step_away", self.zk.multi(&txn)) {
            debug!("worker {}: could not step away ({why}): {err}", self.cfg.id);
        }
    }

    /// Its jobs that are claimed and running.
    fn running(&self) -> usize {
        self.local
            .values()
            .filter(|s| matches!(s, Local::Running(_)))
            .count()
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
        self.ctx.accepting.store(false, Ordering::SeqCst);
        self.cfg.obs.stage(Stage::Draining);
        self.step_away("draining", None);
        let drain_timeout = self.tuning.duration(Key::DrainTimeout);
        notify::stopping(
            &format!(
                "worker {}: draining, {} jobs to finish",
                self.cfg.id,
                self.busy()
            ),
            drain_timeout + STOP_WAIT + super::CLOSE_WAIT,
        );
        let deadline = Instant::now() + drain_timeout;
        if !self.wait_for_jobs(rx, deadline) {
            warn!(
                "worker {}: drain timeout; killing {} jobs and handing them back",
                self.cfg.id,
                self.busy()
            );
        }
        Next::Stop
    }

    /// A planned stop: kills what still runs (each job thread hands its
    /// task back while the session lives) and waits for the job threads,
    /// so no job outlives the worker.
    pub fn stop(&mut self, rx: &Receiver<Msg>) {
        self.ctx.accepting.store(false, Ordering::SeqCst);
        self.kill_all();
        self.wait_for_jobs(rx, Instant::now() + STOP_WAIT);
        self.ctx.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The session is gone: whatever ran under it is no longer ours to
    /// finish.
    pub fn abandon(&mut self) {
        self.ctx.generation.fetch_add(1, Ordering::SeqCst);
        self.kill_all();
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
