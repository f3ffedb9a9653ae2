//! The worker's control loop for one session: reads the assignments its
//! persistent watch reports (`zk::ChildWatch`: its own deletions cost it no
//! listing), and lists them all when the watch begins, on a session change
//! and every tick; claims those it can
//! start and hands them to the thread pool; stores what became of the jobs
//! that ended; gives its jobs up when cut off from ZooKeeper past the
//! hold; pauses when its jobs cannot start; drains on SIGTERM.
//!
//! While its recent jobs are short (`decide::Pace`), it claims one
//! assignment ahead per thread, so a thread that frees starts its next job
//! at once; a claim made ahead that waits too long, or whose task is
//! cancelled, or that a pause or a drain finds, is given up without the run
//! being counted.
//!
//! Its writes are grouped (`zk::group`): on each turn, the steps of every
//! job that ended since its last write (results, re-runs, hand-backs) and
//! the claims of the assignments it can start now go out together, as one
//! transaction when they fit, each step all-or-nothing. Nothing waits for
//! a batch to fill: a turn sends what is ready, and a lone task's claim or
//! result goes at once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};
use threadpool::ThreadPool;

use super::decide::{self, ClaimVerdict, FinishVerdict, OnListed, Pace, StartHealth};
use super::job::{self, Claimed, EndStep, JobContext};
use super::{Msg, WorkerConfig, register_ops, worker_info};
use crate::backoff::Backoff;
use crate::exec::{JobReport, KillSwitch, Outcome};
use crate::model::{self, Away, CancelRequest, FailReason, Task, TaskResult};
use crate::notify;
use crate::obs::health::Stage;
use crate::session::{self, Next};
use crate::settings::{self, Key, Tuning};
use crate::zk::{ChildEvent, ChildWatch, Op, SessionEvent, Zk, ZkError};

/// Where a task this worker knows of stands locally.
#[derive(Debug)]
enum Local {
    /// Listed and read, not claimed: waits for a free thread (the master
    /// may still move it elsewhere).
    Waiting(Box<Task>),
    /// Claimed, its job not started: it starts when a thread is free; it
    /// is released (back to the queue, uncounted) if it has not started
    /// within `decide::CLAIM_AHEAD_HOLD` of `held_since` (`None`: a release
    /// failed, so it runs here).
    Claimed {
        claim: Box<Claimed>,
        held_since: Option<Instant>,
    },
    /// Claimed; its job runs on a thread (the task has this run counted).
    Running { kill: KillSwitch, task: Box<Task> },
    /// The claim's outcome is unknown: the claim is read before anything
    /// else is done with it.
    Unsure(Box<Claimed>),
    /// Its job ended; this is what to write for it.
    Ended(Box<Ending>),
    /// Not to run now: claimed by an earlier session of this worker (the
    /// master repairs it), or held by another run. Looked at again after
    /// this time, since the master may hand the same name back.
    Ignored(Instant),
}

/// A job that ended, and the write still to make for it.
#[derive(Debug)]
struct Ending {
    step: EndStep,
    /// The last try's outcome is unknown: read the claim first (gone: the
    /// step went through).
    unsure: bool,
    /// Not tried again before then.
    due: Instant,
    backoff: Backoff,
}

impl Ending {
    fn new(step: EndStep) -> Self {
        Ending {
            step,
            unsure: false,
            due: Instant::now(),
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(2)),
        }
    }
}

/// One step of a turn's write, and what it was for.
enum Write {
    /// The step of a job that ended.
    End(String),
    /// The claim of a waiting assignment.
    Claim(String, Box<Claimed>),
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
    /// Whether it takes work: not while draining or paused.
    accepting: bool,
    /// The watch on the assignments folder, while it reports.
    assignments: Option<ChildWatch>,
    /// The assignments it reported since the last read of them.
    created: Vec<String>,
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
    /// How short its recent jobs were: whether it claims ahead.
    pace: Pace,
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
        tuning: &'a mut Tuning,
    ) -> Self {
        let ctx = JobContext {
            worker: cfg.id.clone(),
            output_cap: usize::try_from(tuning.count(Key::OutputCap)).unwrap_or(usize::MAX),
            shell: cfg.shell.clone(),
            generation: generation.clone(),
            my_generation: generation.load(Ordering::SeqCst),
            tx: tx.clone(),
            progress: super::relay::start(zk.clone(), cfg.layout.clone(), cfg.id.clone()),
        };
        WorkerSession {
            cfg,
            zk,
            ctx,
            pool,
            local: HashMap::new(),
            accepting: true,
            assignments: None,
            created: Vec::new(),
            cancel_armed: false,
            cancels: HashSet::new(),
            cut_off_since: None,
            hold: session::hold(zk.session_timeout()),
            tuning,
            settings_armed: false,
            health: StartHealth::default(),
            pace: Pace::default(),
            paused_until: None,
        }
    }

    /// The control loop: reads what a watch said changed, and lists the
    /// assignments on a session change and every tick too (which also
    /// revisits tasks set aside); a job's progress alone changes nothing
    /// there to read.
    pub fn serve(&mut self, rx: &Receiver<Msg>) -> Next {
        // Something may have changed: read it.
        let mut stale = true;
        // List the assignments whatever their watch says.
        let mut full = true;
        let mut next_tick = Instant::now();
        loop {
            self.cfg.obs.beat();
            self.cfg.obs.metrics().worker_jobs(
                self.running(),
                self.claimed_ahead(),
                self.cfg.threads,
            );
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
                (stale, full) = (true, true);
                next_tick = now + self.cfg.tick;
            }
            if stale && self.zk.is_connected() {
                stale = false;
                if let Err(err) = self.round(std::mem::take(&mut full)) {
                    debug!("worker {}: round failed ({err}); retrying", self.cfg.id);
                }
            }
            self.start_claimed();
            self.release_overdue(now);
            self.write_ready();
            self.start_claimed();
            let first = match rx.recv_deadline(notify::wake_by(self.next_wake(next_tick))) {
                Ok(msg) => Some(msg),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Next::Stop,
            };
            for msg in first.into_iter().chain(rx.try_iter()) {
                match msg {
                    Msg::Shutdown => return self.drain(rx),
                    Msg::Watch(event) => {
                        self.on_watch(&event.path);
                        stale = true;
                    }
                    Msg::Children(event) => {
                        full |= self.on_children(event);
                        stale = true;
                    }
                    Msg::Session(event) => {
                        self.on_session(event);
                        (stale, full) = (true, true);
                    }
                    Msg::Job {
                        task,
                        generation,
                        report,
                    } => self.on_job(task, generation, *report),
                }
            }
        }
    }

    /// When the loop must wake at the latest: the tick, the end of the
    /// hold, the end of a pause, or a retry falling due.
    fn next_wake(&self, next_tick: Instant) -> Instant {
        [
            Some(next_tick),
            self.cut_off_since.map(|since| since + self.hold),
            self.paused_until,
            self.next_due(),
            self.next_release(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(next_tick)
    }

    /// A one-shot watch fired: it is to be armed again with the next read.
    fn on_watch(&mut self, path: &str) {
        if path == self.cfg.layout.cancel() {
            self.cancel_armed = false;
        } else if path == self.cfg.layout.config() {
            self.settings_armed = false;
        }
    }

    /// What the watch on the assignments said: one to read, one gone (the
    /// master took it back, if it was not claimed here), or the watch's
    /// end (true: watch again and list them all).
    fn on_children(&mut self, event: ChildEvent) -> bool {
        match event {
            ChildEvent::Created(task) => self.created.push(task),
            ChildEvent::Deleted(task) => {
                if let Some(Local::Waiting(_) | Local::Ignored(_)) = self.local.get(&task) {
                    self.local.remove(&task);
                }
            }
            ChildEvent::Ended(id) => {
                if self.assignments.as_ref().is_some_and(|w| w.id() == id) {
                    self.assignments = None;
                    return true;
                }
            }
        }
        false
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
    /// running jobs they name within their grace (the result says
    /// `cancelled`); one not claimed yet is left alone (the master fails
    /// it).
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
        self.cancel_claimed();
        // Only a running job has anything to stop.
        let ours: Vec<String> = self
            .cancels
            .iter()
            .filter(|t| matches!(self.local.get(*t), Some(Local::Running { .. })))
            .cloned()
            .collect();
        let paths: Vec<String> = ours.iter().map(|t| layout.cancel_task(t)).collect();
        for (task, got) in ours.iter().zip(self.zk.get_grouped(&paths)?) {
            let Some((data, _)) = got else { continue };
            let grace = model::decode::<CancelRequest>(&data)
                .map_or(Duration::from_secs(10), |r| {
                    Duration::from_millis(r.grace_ms)
                });
            if let Some(Local::Running { kill, .. }) = self.local.get(task) {
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

    /// Reads the settings and the cancel requests if their watches fired,
    /// the assignments the watch reported since the last round, and, if
    /// `full` or the watch is not on, all of them (keeping the ones it has
    /// not seen).
    fn round(&mut self, full: bool) -> Result<(), ZkError> {
        self.read_settings()?;
        self.read_cancels()?;
        let now = Instant::now();
        if self.assignments.is_some() && !full {
            let created = std::mem::take(&mut self.created);
            return self.read_new(&created, now).inspect_err(|_| {
                // Read again next round.
                self.created.extend(created);
            });
        }
        let dir = self.cfg.layout.assign_dir(&self.cfg.id);
        // Watched first, then listed: the listing covers what happened
        // before the watch began.
        if self.assignments.is_none() {
            self.assignments = Some(self.zk.watch_children(&dir, &self.ctx.tx)?);
        }
        let listed = match self.zk.children(&dir) {
            Ok(listed) => listed,
            Err(ZkError::NoNode) => {
                // The folder went away under us (a master cleaning up just as
                // we registered): put it back; assignments need it.
                return self.zk.ensure(&dir);
            }
            Err(err) => return Err(err),
        };
        // The listing covers what the watch reported so far.
        self.created.clear();
        // Forget what the master took back (unclaimed: it may move them),
        // and look again at what was set aside long enough ago.
        self.local.retain(|task, state| match state {
            Local::Ignored(until) => *until > now && listed.contains(task),
            Local::Waiting(_) => listed.contains(task),
            _ => true,
        });
        self.read_new(&listed, now)
    }

    /// Reads the assignments among `listed` it does not know yet, and
    /// takes each as waiting, set aside or malformed.
    fn read_new(&mut self, listed: &[String], now: Instant) -> Result<(), ZkError> {
        let new: Vec<String> = listed
            .iter()
            .filter(|t| !self.local.contains_key(*t) && !self.cancels.contains(*t))
            .cloned()
            .collect();
        let paths: Vec<String> = new
            .iter()
            .map(|t| self.cfg.layout.assignment(&self.cfg.id, t))
            .collect();
        for (task, got) in new.into_iter().zip(self.zk.get_grouped(&paths)?) {
            let Some((data, stat)) = got else { continue };
            match decide::on_listed(&task, model::decode_task(&data), stat.version) {
                OnListed::FailMalformed(why) => self.fail_malformed(&task, stat.version, &why),
                OnListed::SetAside => {
                    self.local.insert(task, Local::Ignored(now + self.cfg.tick));
                }
                OnListed::Run(decoded) => {
                    self.local.insert(task, Local::Waiting(Box::new(decoded)));
                }
            }
        }
        Ok(())
    }

    /// The write of a turn, when connected: what failed stays for later.
    fn write_ready(&mut self) {
        if !self.zk.is_connected() {
            return;
        }
        if let Err(err) = self.settle_unsure().and_then(|()| self.write()) {
            debug!("worker {}: writing failed ({err}); retrying", self.cfg.id);
            let now = Instant::now();
            for state in self.local.values_mut() {
                if let Local::Ended(ending) = state
                    && ending.due <= now
                {
                    ending.due = now + ending.backoff.next_wait();
                }
            }
        }
    }

    /// Sends what is ready, together: the steps of the jobs that ended and
    /// are due, and the claims of the waiting assignments it can start
    /// now (one per free thread, oldest first). Each step's outcome is
    /// then read as if it had been sent alone; one that can go again at
    /// once (a result without what was already gone, a re-run that became
    /// a result) goes in the next pass.
    fn write(&mut self) -> Result<(), ZkError> {
        loop {
            let (writes, steps) = self.ready(Instant::now());
            if steps.is_empty() {
                return Ok(());
            }
            let metrics = self.cfg.obs.metrics();
            let results = self.zk.commit(&[], &steps, &|n| metrics.zk_transactions(n));
            let mut again = false;
            for (write, result) in writes.into_iter().zip(results) {
                let result = result.map(drop);
                again |= match write {
                    Write::End(task) => self.ended_written(&task, &result),
                    Write::Claim(task, claim) => {
                        self.claimed(task, claim, &result);
                        false
                    }
                };
            }
            if !again {
                return Ok(());
            }
        }
    }

    /// The steps ready now and what each is for.
    fn ready(&self, now: Instant) -> (Vec<Write>, Vec<Vec<Op>>) {
        let mut writes = Vec::new();
        let mut steps = Vec::new();
        for (task, state) in &self.local {
            if let Local::Ended(ending) = state
                && !ending.unsure
                && ending.due <= now
            {
                writes.push(Write::End(task.clone()));
                steps.push(ending.step.ops().to_vec());
            }
        }
        for (task, waiting) in self.claimable() {
            let (claim, ops) = job::claim(
                &self.cfg.layout,
                &self.cfg.id,
                &task,
                waiting,
                model::now_ms(),
            );
            writes.push(Write::Claim(task, Box::new(claim)));
            steps.push(ops);
        }
        (writes, steps)
    }

    /// The waiting assignments to claim now: as many as it has free
    /// threads (and, while its jobs are short, one ahead per thread),
    /// oldest first, none with a cancel request; none while it takes no
    /// work.
    fn claimable(&self) -> Vec<(String, Task)> {
        if !self.accepting {
            return Vec::new();
        }
        let taken = self
            .local
            .values()
            .filter(|s| {
                matches!(
                    s,
                    Local::Running { .. } | Local::Claimed { .. } | Local::Unsure(_)
                )
            })
            .count();
        let room = self.cfg.threads + self.pace.ahead(self.cfg.threads);
        let mut waiting: Vec<(&String, &Task)> = self
            .local
            .iter()
            .filter_map(|(name, state)| match state {
                Local::Waiting(task) if !self.cancels.contains(name) => Some((name, &**task)),
                _ => None,
            })
            .collect();
        waiting.sort_by(|a, b| a.0.cmp(b.0));
        waiting
            .into_iter()
            .take(room.saturating_sub(taken))
            .map(|(name, task)| (name.clone(), task.clone()))
            .collect()
    }

    /// What became of a claim: an assignment that is ours starts when a
    /// thread is free; one held by another run or whose lock is held is looked at
    /// again after a tick; one whose outcome is unknown is read first.
    fn claimed(&mut self, task: String, claim: Box<Claimed>, result: &Result<(), ZkError>) {
        let verdict = decide::on_claim(&self.cfg.obs.metrics().txn("claim", result.clone()));
        match verdict {
            ClaimVerdict::Ours => self.hold_claim(task, claim),
            ClaimVerdict::Unknown => {
                self.local.insert(task, Local::Unsure(claim));
            }
            ClaimVerdict::HeldByAnotherRun => {
                warn!("{task}: assigned here, but another run holds it; not running it");
                self.set_aside(task);
            }
            ClaimVerdict::LockHeld => {
                info!("{task}: its lock is held by another run; not running it yet");
                self.set_aside(task);
            }
            ClaimVerdict::Finished => {
                warn!(
                    "{task}: assigned here, but it already has its result; removing the assignment"
                );
                let _ = self.zk.multi(&[Op::Delete {
                    path: self.cfg.layout.assignment(&self.cfg.id, &task),
                    version: Some(0),
                }]);
                self.local.remove(&task);
            }
            ClaimVerdict::NotOurs => {
                debug!("{task}: not claimed: {result:?}");
                self.local.remove(&task);
            }
        }
    }

    fn set_aside(&mut self, task: String) {
        self.local
            .insert(task, Local::Ignored(Instant::now() + self.cfg.tick));
    }

    /// A claim of ours: its job starts when a thread is free, and it is
    /// released if that takes too long.
    fn hold_claim(&mut self, task: String, claim: Box<Claimed>) {
        let held_since = Some(Instant::now());
        self.local
            .insert(task, Local::Claimed { claim, held_since });
    }

    /// Starts the claimed jobs, oldest first, on the free threads (one
    /// whose task has a cancel request ends `cancelled` instead); while it
    /// takes no work (paused, draining), releases them instead. Cut off
    /// from ZooKeeper, it starts nothing new: they wait.
    fn start_claimed(&mut self) {
        if !self.accepting {
            self.release_claimed(None);
        }
        if !self.zk.is_connected() {
            return;
        }
        let free = self.cfg.threads.saturating_sub(self.running());
        for task in self.claimed_names().into_iter().take(free) {
            let Some(Local::Claimed { claim, .. }) = self.local.remove(&task) else {
                continue;
            };
            if self.cancels.contains(&task) {
                self.cancel_unstarted(task, *claim);
            } else {
                self.start(task, Box::new(claim.run));
            }
        }
    }

    /// The claimed tasks whose jobs have not started, oldest first.
    fn claimed_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .local
            .iter()
            .filter(|(_, s)| matches!(s, Local::Claimed { .. }))
            .map(|(t, _)| t.clone())
            .collect();
        names.sort();
        names
    }

    /// Ends the claimed, unstarted tasks that have a cancel request:
    /// `cancelled`, their run not counted, as the master ends an unclaimed
    /// one.
    fn cancel_claimed(&mut self) {
        for task in self.claimed_names() {
            if self.cancels.contains(&task)
                && let Some(Local::Claimed { claim, .. }) = self.local.remove(&task)
            {
                self.cancel_unstarted(task, *claim);
            }
        }
    }

    fn cancel_unstarted(&mut self, task: String, claim: Claimed) {
        info!("{task}: cancelled before its job started");
        let result = TaskResult::failed(
            Some(&claim.assigned),
            FailReason::Cancelled,
            Some(&self.cfg.id),
            model::now_ms(),
        );
        let step = job::finish(&self.cfg.layout, &self.cfg.id, &task, Box::new(result));
        self.local
            .insert(task, Local::Ended(Box::new(Ending::new(step))));
    }

    /// Releases the claims whose jobs have not started within their hold
    /// (all of them if `now` is `None`: a pause or a drain); true if one
    /// was.
    fn release_claimed(&mut self, now: Option<Instant>) -> bool {
        let due: Vec<String> = self
            .local
            .iter()
            .filter(|(_, s)| match s {
                Local::Claimed {
                    held_since: Some(since),
                    ..
                } => now.is_none_or(|now| decide::claim_ahead_is_overdue(*since, now)),
                _ => false,
            })
            .map(|(t, _)| t.clone())
            .collect();
        for task in &due {
            if let Some(Local::Claimed { claim, .. }) = self.local.remove(task) {
                info!("{task}: claimed, its job not started: back to the queue, uncounted");
                let step = job::release(&self.cfg.layout, &self.cfg.id, task, *claim);
                self.local
                    .insert(task.clone(), Local::Ended(Box::new(Ending::new(step))));
            }
        }
        !due.is_empty()
    }

    /// Releases the claims held past their hold: the jobs ahead of them
    /// are not short, so it claims no more ahead for now.
    fn release_overdue(&mut self, now: Instant) {
        if self.release_claimed(Some(now)) {
            self.pace.stalled();
        }
    }

    /// When the next claim's hold ends, if one is held.
    fn next_release(&self) -> Option<Instant> {
        self.local
            .values()
            .filter_map(|s| match s {
                Local::Claimed {
                    held_since: Some(since),
                    ..
                } => Some(*since + decide::CLAIM_AHEAD_HOLD),
                _ => None,
            })
            .min()
    }

    /// Runs a claimed task's job on a thread.
    fn start(&mut self, task: String, started: Box<Task>) {
        let kill = KillSwitch::new();
        let ctx = self.ctx.clone();
        let (name, run, switch) = (task.clone(), started.clone(), kill.clone());
        self.pool
            .execute(move || job::run(&ctx, &name, &run, &switch));
        self.local.insert(
            task,
            Local::Running {
                kill,
                task: started,
            },
        );
    }

    /// What became of an ended job's step; true when it can go again at
    /// once (changed).
    fn ended_written(&mut self, task: &str, result: &Result<(), ZkError>) -> bool {
        let Some(Local::Ended(ending)) = self.local.get_mut(task) else {
            return false;
        };
        let kind = match ending.step {
            EndStep::Finish { .. } => "finish",
            EndStep::Retry { .. } => "requeue_failed",
            EndStep::HandBack { .. } => "hand_back",
            EndStep::Release { .. } => "release",
        };
        let result = self.cfg.obs.metrics().txn(kind, result.clone());
        let layout = &self.cfg.layout;
        match (&mut ending.step, &result) {
            (_, Ok(())) => {}
            (EndStep::Finish { ops, .. }, Err(_)) => match decide::on_finish(&result) {
                FinishVerdict::Stored => {}
                FinishVerdict::Without(i) => {
                    // Something that goes with the result is gone already
                    // (a master cleaned it up): store the result without it.
                    ops.remove(i);
                    return true;
                }
                FinishVerdict::StoredBefore => {
                    // An earlier try of ours whose reply was lost.
                    let _ = self.zk.multi(&ops[1..]);
                }
                FinishVerdict::Unknown => {
                    warn!("{task}: storing the result: {result:?}; checking and retrying");
                    ending.unsure = true;
                    ending.due = Instant::now() + ending.backoff.next_wait();
                    return false;
                }
                FinishVerdict::Lost => {
                    warn!("{task}: result not stored ({result:?}); the master will run it again");
                    self.local.remove(task);
                    return false;
                }
            },
            (EndStep::Retry { result: stored, .. }, Err(err)) => {
                warn!("{task}: could not queue its re-run ({err}); storing the result");
                let result = stored.clone();
                ending.step = job::finish(layout, &self.cfg.id, task, result);
                return true;
            }
            (EndStep::Release { .. }, Err(err)) if err.is_unknown_outcome() => {
                ending.unsure = true;
                ending.due = Instant::now() + ending.backoff.next_wait();
                return false;
            }
            (EndStep::Release { claim, .. }, Err(err)) => {
                warn!("{task}: could not release its claim ({err}); running it here");
                let claim = claim.clone();
                self.local.insert(
                    task.to_string(),
                    Local::Claimed {
                        claim,
                        held_since: None,
                    },
                );
                return false;
            }
            (EndStep::HandBack { .. }, Err(err)) => {
                warn!("{task}: killed; not handed back ({err}): the master requeues it");
                self.local.remove(task);
                return false;
            }
        }
        self.applied(task);
        false
    }

    /// An ended job's step went through: it is done here.
    fn applied(&mut self, task: &str) {
        let Some(Local::Ended(ending)) = self.local.remove(task) else {
            return;
        };
        match ending.step {
            EndStep::Finish { result, .. } => self.stored(task, &result),
            EndStep::Retry {
                delay_ms,
                failed_runs,
                result,
                ..
            } => info!(
                "{task}: run {} ended badly; it runs again in {} s ({failed_runs} re-runs so far)",
                result.attempts,
                delay_ms / 1000,
            ),
            EndStep::HandBack { .. } => {
                info!("{task}: killed (worker stopping); handed back to the queue")
            }
            EndStep::Release { .. } => info!("{task}: released; back in the queue"),
        }
    }

    /// A run's result is stored: it counts, and the log says how it ended.
    fn stored(&self, task: &str, result: &TaskResult) {
        self.cfg.obs.metrics().task_finished(result);
        let took = result
            .finished_ms
            .saturating_sub(result.started_ms.unwrap_or(0));
        let how = match (&result.reason, result.exit_code, result.signal) {
            (Some(reason), ..) => reason.to_string(),
            (None, Some(code), _) => format!("exit {code}"),
            (None, None, Some(signal)) => format!("signal {signal}"),
            (None, None, None) => "done".to_string(),
        };
        let attempt = result.attempts;
        info!("{task}: finished: {how} after {took} ms (attempt {attempt})");
    }

    /// Reads the claims of the tasks whose last write had an unknown
    /// outcome (after a sync, so the read sees every committed write): a
    /// claim of this session means the claim went through (its job starts)
    /// or an ended job's or a release's step did not (it goes again when
    /// due); no claim, the opposite.
    fn settle_unsure(&mut self) -> Result<(), ZkError> {
        let now = Instant::now();
        let unsure: Vec<String> = self
            .local
            .iter()
            .filter(|(_, s)| match s {
                Local::Unsure(_) => true,
                Local::Ended(ending) => ending.unsure && ending.due <= now,
                _ => false,
            })
            .map(|(t, _)| t.clone())
            .collect();
        if unsure.is_empty() {
            return Ok(());
        }
        self.zk.sync(self.cfg.layout.root())?;
        let paths: Vec<String> = unsure
            .iter()
            .map(|t| self.cfg.layout.running_task(t))
            .collect();
        for (task, claim) in unsure.into_iter().zip(self.zk.exists_many(&paths)) {
            let ours = claim?.is_some_and(|s| s.ephemeral_owner == self.zk.session_id());
            match self.local.remove(&task) {
                Some(Local::Unsure(claim)) if ours => self.hold_claim(task, claim),
                Some(Local::Unsure(_)) => {}
                Some(Local::Ended(mut ending)) if ours => {
                    ending.unsure = false;
                    self.local.insert(task, Local::Ended(ending));
                }
                Some(Local::Ended(ending)) => {
                    self.local.insert(task.clone(), Local::Ended(ending));
                    self.applied(&task);
                }
                Some(other) => {
                    self.local.insert(task, other);
                }
                None => {}
            }
        }
        Ok(())
    }

    /// When the next ended job's step is due, if one waits and it can be
    /// written (connected: a reconnect wakes the loop anyway).
    fn next_due(&self) -> Option<Instant> {
        if !self.zk.is_connected() {
            return None;
        }
        self.local
            .values()
            .filter_map(|s| match s {
                Local::Ended(ending) => Some(ending.due),
                _ => None,
            })
            .min()
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

    /// A job thread's report: the run ended; what to write for it is
    /// decided now and written with the turn's other steps.
    fn on_job(&mut self, task: String, generation: u64, report: JobReport) {
        if generation != self.ctx.my_generation {
            return;
        }
        let Some(Local::Running { task: run, .. }) = self.local.remove(&task) else {
            return;
        };
        let could_not_start = matches!(report.outcome, Outcome::CouldNotStart(_));
        let took = report.finished_ms.saturating_sub(report.started_ms);
        self.pace.record(Duration::from_millis(took));
        let killed = report.outcome == Outcome::Killed;
        let step = job::end_step(&self.cfg.layout, &self.cfg.id, &task, &run, report);
        self.local
            .insert(task, Local::Ended(Box::new(Ending::new(step))));
        if !killed && let Some(pause) = self.health.record(could_not_start) {
            self.pause(pause);
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
        self.accepting = false;
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
                self.accepting = true;
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
            .filter(|s| matches!(s, Local::Running { .. }))
            .count()
    }

    /// Its claims whose jobs wait for a thread.
    fn claimed_ahead(&self) -> usize {
        self.local
            .values()
            .filter(|s| matches!(s, Local::Claimed { .. }))
            .count()
    }

    /// Its runs not done with yet: claimed (or perhaps claimed), running,
    /// or ended with their step still to write.
    fn busy(&self) -> usize {
        self.local
            .values()
            .filter(|s| {
                matches!(
                    s,
                    Local::Claimed { .. }
                        | Local::Running { .. }
                        | Local::Unsure(_)
                        | Local::Ended(_)
                )
            })
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
        self.accepting = false;
        // What it has not claimed is the master's to requeue; what it has
        // claimed and not started it releases (`start_claimed`).
        self.local.retain(|_, s| !matches!(s, Local::Waiting(_)));
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

    /// A planned stop: kills what still runs (each killed run is handed
    /// back while the session lives) and waits for the job threads, so no
    /// job outlives the worker.
    pub fn stop(&mut self, rx: &Receiver<Msg>) {
        self.accepting = false;
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
            if let Local::Running { kill, .. } = state {
                kill.kill();
            }
        }
    }

    /// Takes the job threads' messages and writes what became of their
    /// runs until none is busy; false if `deadline` passed first (or the
    /// session ended).
    fn wait_for_jobs(&mut self, rx: &Receiver<Msg>, deadline: Instant) -> bool {
        loop {
            self.write_ready();
            self.start_claimed();
            if self.busy() == 0 {
                return true;
            }
            if self.zk.is_lost() {
                return false;
            }
            let wake = self.next_due().map_or(deadline, |due| due.min(deadline));
            match rx.recv_deadline(wake) {
                Ok(Msg::Job {
                    task,
                    generation,
                    report,
                }) => self.on_job(task, generation, *report),
                Ok(Msg::Session(event)) => self.on_session(event),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => return false,
            }
        }
    }
}
