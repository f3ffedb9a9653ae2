//! The roles under test, in numbered slots: masters `m<slot>-<start>` and
//! workers `w<slot>`, each started again once it is gone (a master at once,
//! a killed worker after its pause, as a service manager would), and the
//! faults thrown at them: kill -9 of the active master or of a worker,
//! SIGSTOP of a worker and its SIGCONT when its freeze is over.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;

use crate::common::{Namespace, Proc};
use crate::events::Events;
use crate::settings::Settings;

/// What a slot runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Master,
    Worker,
}

/// One place of the cluster and the process in it, if any.
struct Slot {
    role: Role,
    number: usize,
    /// Processes started in it so far.
    starts: u32,
    proc: Option<Proc>,
    /// True when its process was killed on purpose.
    killed: bool,
    /// Not started again before this.
    up_at: Instant,
    /// While frozen: when to thaw it.
    frozen_until: Option<Instant>,
}

/// How roles are started.
struct Launch<'a> {
    ns: &'a Namespace,
    events: &'a Events,
    logs: PathBuf,
    threads: String,
    log_level: String,
}

/// The masters and workers of the run.
pub struct Cluster<'a> {
    launch: Launch<'a>,
    masters: Vec<Slot>,
    workers: Vec<Slot>,
    /// The role of every process started (pid → id), for the report.
    names: HashMap<u32, String>,
    /// Masters killed so far: `/master` names one until its session expires.
    killed_masters: HashSet<u32>,
}

impl<'a> Cluster<'a> {
    /// Starts every master and worker of `settings` in `ns`, their logs in
    /// `logs/` of its folder.
    pub fn start(ns: &'a Namespace, events: &'a Events, settings: &Settings) -> Cluster<'a> {
        let logs = ns.dir.join("logs");
        fs::create_dir_all(&logs).unwrap_or_else(|e| panic!("{}: {e}", logs.display()));
        let slots = |role, n| {
            (1..=n as usize)
                .map(|number| Slot::new(role, number))
                .collect()
        };
        let mut cluster = Cluster {
            launch: Launch {
                ns,
                events,
                logs,
                threads: settings.threads.to_string(),
                log_level: settings.log.clone(),
            },
            masters: slots(Role::Master, settings.masters),
            workers: slots(Role::Worker, settings.workers),
            names: HashMap::new(),
            killed_masters: HashSet::new(),
        };
        cluster.supervise();
        cluster
    }

    /// Notes which processes are gone (an exit nobody caused is an
    /// anomaly) and starts those due in the empty slots.
    pub fn supervise(&mut self) {
        let now = Instant::now();
        for slot in self.masters.iter_mut().chain(self.workers.iter_mut()) {
            slot.reap(self.launch.events);
            if slot.proc.is_none() && now >= slot.up_at {
                let pid = slot.launch(&self.launch);
                self.names.insert(pid, slot.id());
            }
        }
    }

    /// The id of the role each pid was, for every process started.
    pub fn names(&self) -> &HashMap<u32, String> {
        &self.names
    }

    /// kill -9 of the active master, `/master`'s `pid`; false when skipped.
    pub fn kill_active_master(&mut self, pid: Option<u32>) -> bool {
        let events = self.launch.events;
        let Some(pid) = pid else {
            events.log("kill-master: skipped (no active master known)");
            return false;
        };
        if self.killed_masters.contains(&pid) {
            events.log(&format!(
                "kill-master: skipped (/master still names killed master pid={pid}: session not expired yet)"
            ));
            return false;
        }
        let Some(slot) = self.masters.iter_mut().find(|s| s.pid() == Some(pid)) else {
            events.anomaly(&format!(
                "kill-master: active master pid={pid} is not one of ours"
            ));
            return false;
        };
        slot.kill9(Duration::ZERO);
        self.killed_masters.insert(pid);
        events.fault(&format!(
            "kill -9 active master {} pid={pid} (a new one starts in its place)",
            slot.id()
        ));
        true
    }

    /// kill -9 of a random live worker (started again 1-4 s later); false
    /// when none could be picked.
    pub fn kill_worker(&mut self, rng: &mut StdRng) -> bool {
        let Some(i) = self.pick_worker(rng) else {
            self.launch
                .events
                .log("kill-worker: skipped (no live worker to pick)");
            return false;
        };
        let slot = &mut self.workers[i];
        let pid = slot.pid().unwrap_or_default();
        slot.kill9(Duration::from_millis(rng.random_range(1000..4000)));
        self.launch.events.fault(&format!(
            "kill -9 worker {} pid={pid} (restart in 1-4 s)",
            slot.id()
        ));
        true
    }

    /// A random live worker that is not frozen (its index).
    pub fn pick_worker(&self, rng: &mut StdRng) -> Option<usize> {
        let live: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].pickable())
            .collect();
        (!live.is_empty()).then(|| live[rng.random_range(0..live.len())])
    }

    /// The live, unfrozen worker whose process is `pid` (its index).
    pub fn worker_with_pid(&self, pid: u32) -> Option<usize> {
        (0..self.workers.len())
            .find(|&i| self.workers[i].pickable() && self.workers[i].pid() == Some(pid))
    }

    /// SIGSTOP of worker `i` for `length`; `why` says why that one.
    pub fn freeze_worker(&mut self, i: usize, length: Duration, why: &str) {
        let slot = &mut self.workers[i];
        let Some(proc) = slot.proc.as_ref() else {
            return;
        };
        proc.stop();
        slot.frozen_until = Some(Instant::now() + length);
        self.launch.events.fault(&format!(
            "SIGSTOP worker {} pid={} for {}s ({why})",
            slot.id(),
            proc.pid(),
            length.as_secs()
        ));
    }

    /// SIGCONT of the frozen workers whose freeze is over (of all of them
    /// with `all`).
    pub fn thaw(&mut self, all: bool) {
        let now = Instant::now();
        for slot in &mut self.workers {
            if slot.frozen_until.is_some_and(|until| all || now >= until) {
                slot.frozen_until = None;
                if let Some(proc) = slot.proc.as_ref() {
                    proc.cont();
                    let text = format!("CHAOS SIGCONT worker {} pid={}", slot.id(), proc.pid());
                    self.launch.events.log(&text);
                }
            }
        }
    }

    /// Workers out of service: killed and not back yet, or frozen.
    pub fn down_workers(&self) -> usize {
        self.workers.iter().filter(|s| !s.pickable()).count()
    }

    /// True while a worker is frozen.
    pub fn any_frozen(&self) -> bool {
        self.workers.iter().any(|s| s.frozen_until.is_some())
    }

    /// Lets every worker that is down start again at once.
    pub fn restart_workers_now(&mut self) {
        let now = Instant::now();
        for slot in &mut self.workers {
            slot.up_at = now;
        }
    }
}

impl Slot {
    fn new(role: Role, number: usize) -> Slot {
        Slot {
            role,
            number,
            starts: 0,
            proc: None,
            killed: false,
            up_at: Instant::now(),
            frozen_until: None,
        }
    }

    /// The id of its role: `m<slot>-<start>` or `w<slot>`.
    fn id(&self) -> String {
        match self.role {
            Role::Master => format!("{}-{}", self.id_base(), self.starts),
            Role::Worker => self.id_base(),
        }
    }

    fn what(&self) -> &'static str {
        match self.role {
            Role::Master => "master",
            Role::Worker => "worker",
        }
    }

    /// The pid of its process, while it has one.
    fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// True when its process runs, unharmed: one a fault may pick.
    fn pickable(&self) -> bool {
        self.proc.is_some() && !self.killed && self.frozen_until.is_none()
    }

    /// Starts its next process; its pid.
    fn launch(&mut self, with: &Launch) -> u32 {
        self.starts += 1;
        let id = self.id();
        let mut cmd = with.ns.cmd();
        match self.role {
            Role::Master => cmd.args(["master", "--id", &id]),
            Role::Worker => cmd
                .args(["worker", "--id", &id, "--threads", &with.threads])
                .args(["--drain-timeout", "2s"]),
        };
        cmd.env("RUST_LOG", &with.log_level);
        let log = with
            .logs
            .join(format!("{}-{}.log", self.id_base(), self.starts));
        let proc = Proc::spawn(&id, cmd, &log);
        let pid = proc.pid();
        with.events
            .log(&format!("start {} {id} pid={pid}", self.what()));
        self.proc = Some(proc);
        self.killed = false;
        pid
    }

    /// `m<slot>` or `w<slot>`, that its logs are named after.
    fn id_base(&self) -> String {
        match self.role {
            Role::Master => format!("m{}", self.number),
            Role::Worker => format!("w{}", self.number),
        }
    }

    /// kill -9 of its process, to be started again after `pause`.
    fn kill9(&mut self, pause: Duration) {
        if let Some(proc) = self.proc.as_mut() {
            proc.kill9();
            self.killed = true;
            self.up_at = Instant::now() + pause;
        }
    }

    /// When its process has exited: says how, and empties the slot.
    fn reap(&mut self, events: &Events) {
        let Some(proc) = self.proc.as_mut() else {
            return;
        };
        let Some(status) = proc.exit_status() else {
            return;
        };
        let (id, pid) = (proc.name.clone(), proc.pid());
        let what = self.what();
        if self.killed {
            events.log(&format!("{what} {id} pid={pid} is gone (killed by chaos)"));
        } else if self.role == Role::Worker && status.code() == Some(125) {
            events.log(&format!(
                "worker {id} pid={pid} exited rc=125 (id still live: old session not expired yet); retrying"
            ));
            self.up_at = Instant::now() + Duration::from_secs(1);
        } else {
            events.anomaly(&format!(
                "{what} {id} pid={pid} exited by itself ({status}); see logs/{}-{}.log",
                self.id_base(),
                self.starts
            ));
        }
        self.proc = None;
        self.killed = false;
    }
}
