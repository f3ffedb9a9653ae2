//! The fault suite: masters, workers and submitters against a ZooKeeper
//! ensemble of the run's own, while the active master is killed every few
//! seconds, workers are killed and started again, one is frozen past its
//! session timeout with jobs at stake, and ensemble nodes are stopped and
//! started again (or frozen) one at a time; then the verdict on every
//! acknowledged task ([`verdict`]), one line and PASS or FAIL.
//!
//! `scripts/chaos.sh` runs it (and documents its settings, passed here as
//! `CHAOS_*` variables, see [`settings`]); so does `cargo test --release
//! --test chaos -- --ignored`. Everything goes to the run folder
//! (`.zk/chaos-*/`): the binary's copy, the ensemble's files (`zk/`), the
//! roles' logs (`logs/`), the journal (`chaos.log`), the ledger, what the
//! submitters got (`acked-*.txt`, `submit-failures-*.txt`, `submit/`),
//! `report.txt`, `results.jsonl` and `verdict` (its two last lines). Every
//! process and server the run starts is stopped when it ends, pass or fail
//! (drops; SIGINT and SIGTERM end the run early); the ensemble's data is
//! kept when it fails.
//!
//! The map: [`cluster`] (the roles and the faults on them), [`faults`]
//! (the schedule), [`zk_faults`] (the ensemble's), [`load`] (the
//! submitters), [`observe`] (the cluster as ZooKeeper shows it),
//! [`events`] (the journal), [`verdict`] and [`report`].

#[path = "chaos/cluster.rs"]
mod cluster;
mod common;
#[path = "chaos/events.rs"]
mod events;
#[path = "chaos/faults.rs"]
mod faults;
#[path = "chaos/load.rs"]
mod load;
#[path = "chaos/observe.rs"]
mod observe;
#[path = "chaos/report.rs"]
mod report;
#[path = "chaos/settings.rs"]
mod settings;
#[path = "chaos/verdict.rs"]
mod verdict;
#[path = "chaos/zk_faults.rs"]
mod zk_faults;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use cluster::Cluster;
use common::command::run_within;
use common::ensemble::Ensemble;
use common::ledger::Watch;
use common::wait::poll_until;
use common::{BIN, Ledger, Namespace, secs, wait_until};
use events::{Events, say};
use faults::Chaos;
use load::Load;
use observe::Observer;
use report::Report;
use settings::Settings;
use verdict::{Evidence, Tally};
use zk_faults::ZkFaults;

/// Set by SIGINT and SIGTERM: the run ends early, stopping what it started.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once SIGINT or SIGTERM came.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Ends the run (a panic, so that every drop stops what it holds) once
/// SIGINT or SIGTERM came.
pub fn check_interrupted() {
    assert!(!interrupted(), "chaos: interrupted by a signal");
}

/// Ends the run without a verdict: the suite could not run.
fn setup_failed(why: &str) -> ! {
    panic!("chaos: error: {why}");
}

#[test]
#[ignore = "the fault suite takes minutes: scripts/chaos.sh runs it"]
fn chaos() {
    let started = Instant::now();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, &INTERRUPTED).expect("a signal handler");
    }
    let settings = Settings::from_env().unwrap_or_else(|e: String| setup_failed(&e));
    let dir = run_folder(&settings);
    let bin = copy_binary(&settings, &dir);
    write_build_info(&settings, &dir);
    let ensemble = settings.external_zk.is_none().then(|| {
        say("starting this run's ZooKeeper ensemble (stopped at the end)");
        Ensemble::start_in(dir.join("zk"))
    });
    let hosts = (settings.external_zk.clone())
        .or_else(|| ensemble.as_ref().map(Ensemble::hosts))
        .unwrap_or_default();
    let ns = Namespace::in_folder("chaos", &hosts, dir.clone(), bin);
    let events = Events::create(&dir.join("chaos.log"));
    announce(&settings, &dir, &ns, &events);
    let ledger = Ledger::create(dir.join("ledger"));
    let watch = ledger.watch();
    let observer = Observer::start(&hosts, ns.layout());
    let zk_faults = ensemble.as_ref().map(|e| ZkFaults::new(e, &events));
    let suite = Suite {
        settings: &settings,
        ns: &ns,
        events: &events,
        ledger: &ledger,
        watch: &watch,
        observer: &observer,
        zk: zk_faults.as_ref(),
    };
    let (evidence, names) = suite.run(started);
    let (passed, verdict) = conclude(&dir, &events, &evidence, &names);
    // While the ensemble is still up: a failing run keeps its data.
    assert!(passed, "{verdict}");
}

/// Says what the run is about to do, on stderr and in the journal.
fn announce(settings: &Settings, dir: &Path, ns: &Namespace, events: &Events) {
    let (hosts, seed) = (ns.hosts(), settings.seed);
    let root = &ns.root;
    say(&format!(
        "run folder {}; root {root}; zk {hosts}; seed {seed}",
        dir.display()
    ));
    say(&format!(
        "tasks={} over {}s by {} submitters; masters={} workers={} x {} threads",
        settings.tasks,
        settings.load.as_secs(),
        settings.submitters,
        settings.masters,
        settings.workers,
        settings.threads
    ));
    events.log(&format!("run start root={root} zk={hosts} seed={seed}"));
}

/// The verdict on `evidence`: writes the report, prints the summary line
/// and PASS or FAIL (also into `verdict`); whether the run passed, and
/// that last line.
fn conclude(
    dir: &Path,
    events: &Events,
    evidence: &Evidence,
    names: &HashMap<u32, String>,
) -> (bool, String) {
    let tally = Tally::of(evidence);
    let passed = tally.passed(evidence);
    let folder = dir.display();
    let verdict = if passed {
        format!(
            "chaos: PASS ({} chaos actions); run folder {folder}",
            events.faults()
        )
    } else {
        format!("chaos: FAIL: details in {folder}/report.txt (run folder {folder})")
    };
    let report = Report {
        evidence,
        tally: &tally,
        events,
        names,
    };
    report.write(dir, &verdict);
    if evidence.anomalies > 0 {
        let n = evidence.anomalies;
        say(&format!(
            "{n} anomalies logged (grep ANOMALY {folder}/chaos.log)"
        ));
    }
    let lines = format!("{}\n{verdict}\n", tally.summary(evidence));
    eprint_now(&lines);
    fs::write(dir.join("verdict"), &lines).unwrap_or_else(|e| setup_failed(&e.to_string()));
    (passed, verdict)
}

/// What a run works with.
struct Suite<'a> {
    settings: &'a Settings,
    ns: &'a Namespace,
    events: &'a Events,
    ledger: &'a Ledger,
    watch: &'a Watch,
    observer: &'a Observer,
    zk: Option<&'a ZkFaults<'a>>,
}

impl Suite<'_> {
    /// The cluster, the load and the faults, until every result is in (or
    /// the wait is over); the evidence, and the role of every pid.
    fn run(&self, started: Instant) -> (Evidence, HashMap<u32, String>) {
        let mut cluster = Cluster::start(self.ns, self.events, self.settings);
        if !self.wait_cluster(&mut cluster) {
            setup_failed("no active master and every worker after 60 s; see logs/");
        }
        say("cluster up; submitting and making chaos");
        let load = Load::new(
            self.ns,
            self.ledger,
            &self.ns.dir,
            self.settings.submitters,
            self.settings.load,
        );
        self.chaos(&mut cluster, &load);
        if !self.wait_cluster(&mut cluster) {
            self.events
                .anomaly("no active master and every worker 60 s after the chaos stopped");
        }
        let acked = load.acked();
        // The submits of one key share a task.
        let tasks: std::collections::BTreeSet<&str> =
            acked.iter().map(|a| a.task.as_str()).collect();
        self.wait_results(&mut cluster, tasks.len());
        let zk = self.ns.connect();
        let results = verdict::read_results(&zk, &self.ns.layout())
            .unwrap_or_else(|e: String| setup_failed(&e));
        let evidence = Evidence {
            acked,
            failures: load.failures(),
            warned: load.warned(),
            runs: self.watch.runs(),
            malformed: self.watch.malformed(),
            results,
            anomalies: self.events.anomalies(),
            seconds: started.elapsed().as_secs(),
        };
        (evidence, cluster.names().clone())
    }

    /// The submitters, each a thread, and the faults while they run; then
    /// what is still in effect undone.
    fn chaos(&self, cluster: &mut Cluster, load: &Load) {
        let s = self.settings;
        thread::scope(|scope| {
            let _brake = Brake { load, zk: self.zk };
            for k in 1..=s.submitters {
                let share = s.tasks / s.submitters;
                let n = if k == s.submitters {
                    s.tasks - share * (s.submitters - 1)
                } else {
                    share
                };
                let seed = s.seed.wrapping_add(k.into());
                scope.spawn(move || load.submitter(k, n, seed));
                self.events.log(&format!("start submitter {k} tasks={n}"));
            }
            let mut chaos = Chaos {
                scope,
                settings: s,
                events: self.events,
                load,
                watch: self.watch,
                observer: self.observer,
                zk: self.zk,
                rng: StdRng::seed_from_u64(s.seed),
                zk_fault: None,
                freeze_armed: None,
            };
            chaos.run(cluster);
            chaos
                .settle(cluster)
                .unwrap_or_else(|e: String| setup_failed(&e));
        });
    }

    /// Waits (60 s at most) for an active master and every worker.
    fn wait_cluster(&self, cluster: &mut Cluster) -> bool {
        let workers = self.settings.workers as usize;
        wait_until(secs(60), || {
            check_interrupted();
            cluster.supervise();
            let snapshot = self.observer.latest();
            snapshot.is_some_and(|s| s.master_pid.is_some() && s.live_workers >= workers)
        })
    }

    /// Waits (the settings' wait at most) until nothing is pending,
    /// assigned or running and there are `acked` results at least.
    fn wait_results(&self, cluster: &mut Cluster, acked: usize) {
        let wait = self.settings.wait;
        say(&format!(
            "{acked} acknowledged; waiting up to {}s for their results",
            wait.as_secs()
        ));
        let done = poll_until(Instant::now() + wait, Duration::from_millis(500), || {
            check_interrupted();
            cluster.supervise();
            self.observer
                .latest()
                .is_some_and(|s| s.open == 0 && s.finished >= acked)
        });
        let last = self.observer.latest();
        if !done {
            let text = format!("results still missing after {}s: {last:?}", wait.as_secs());
            say(&text);
            self.events.anomaly(&text);
        }
        self.events.log(&format!("final status: {last:?}"));
    }
}

/// Stops the submitters and the ZooKeeper fault under way when dropped,
/// so that a run that panics does not wait for them.
struct Brake<'a> {
    load: &'a Load<'a>,
    zk: Option<&'a ZkFaults<'a>>,
}

impl Drop for Brake<'_> {
    fn drop(&mut self) {
        self.load.stop();
        self.zk.inspect(|zk| zk.settle());
    }
}

/// The run folder: `CHAOS_RUN_DIR`, or a new `.zk/chaos-<time>-<pid>/`.
fn run_folder(settings: &Settings) -> PathBuf {
    let dir = settings.run_dir.clone().unwrap_or_else(|| {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!("chaos-{time}-{}", std::process::id());
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".zk").join(name)
    });
    fs::create_dir_all(&dir).unwrap_or_else(|e| setup_failed(&format!("{}: {e}", dir.display())));
    dir
}

/// The binary under test.
fn binary(settings: &Settings) -> PathBuf {
    settings.bin.clone().unwrap_or_else(|| PathBuf::from(BIN))
}

/// The run's own copy of the binary under test: a rebuild during the run
/// must not change the roles it starts again.
fn copy_binary(settings: &Settings, dir: &Path) -> PathBuf {
    let source = binary(settings);
    let copy = dir.join("bin").join("zkmw");
    let copied = fs::create_dir_all(dir.join("bin")).and_then(|()| fs::copy(&source, &copy));
    if let Err(e) = copied {
        setup_failed(&format!("cannot copy {}: {e}", source.display()));
    }
    copy
}

/// What was tested, in `build-info.txt`: others may edit the checkout
/// while the run goes on.
fn write_build_info(settings: &Settings, dir: &Path) {
    let source = binary(settings);
    let script = r#"echo "git HEAD: $(git rev-parse HEAD 2>/dev/null)"
echo "binary: $(sha256sum "$1" | cut -d' ' -f1) built $(date -r "$1" '+%F %T')"
echo "uncommitted changes:"; git status --short 2>/dev/null"#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script, "sh"])
        .arg(&source)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Ok(Some(out)) = run_within(cmd, Duration::from_secs(30)) {
        let _ = fs::write(dir.join("build-info.txt"), out.stdout);
    }
}

/// Writes `text` to stderr at once (not captured by the test harness).
fn eprint_now(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

#[cfg(test)]
mod rules {
    //! The rules of the verdict, without a cluster.

    use std::os::unix::process::CommandExt;
    use std::process::Command;
    use std::time::Duration;

    use crate::common::ledger::{Ledger, Run, overlaps, overlaps_by};
    use crate::common::{Reaped, scratch_dir, secs, wait_until};

    /// A run of task 1.
    fn run(attempt: u32, started: u128, ended: Option<u128>, died: Option<u128>) -> Run {
        Run {
            task: "task-0000000001".into(),
            attempt,
            pid: attempt as i32,
            started_ns: started,
            ended_ns: ended,
            died_ns: died,
            parent: None,
        }
    }

    #[test]
    fn a_rerun_overlaps_when_it_starts_before_the_first_run_ended_or_died() {
        let second = run(2, 20, Some(30), None);
        assert!(overlaps(&[run(1, 0, Some(10), None), second.clone()]).is_empty());
        assert!(overlaps(&[run(1, 0, None, Some(19)), second.clone()]).is_empty());
        for first in [
            run(1, 0, Some(21), None),
            run(1, 0, None, Some(21)),
            run(1, 0, None, None),
        ] {
            let found = overlaps(&[second.clone(), first.clone()]);
            assert_eq!(found, vec![(first, second.clone())]);
        }
    }

    #[test]
    fn runs_of_two_tasks_overlap_only_when_they_share_a_lock() {
        let first = run(1, 0, Some(21), None);
        let other = Run {
            task: "task-0000000002".into(),
            ..run(1, 20, Some(30), None)
        };
        let runs = [first.clone(), other.clone()];
        assert!(overlaps(&runs).is_empty(), "two tasks, each run once");
        let one_lock = overlaps_by(&runs, |_| Some("nightly".into()));
        assert_eq!(one_lock, vec![(first, other)]);
        let own_locks = overlaps_by(&runs, |r| Some(r.task.clone()));
        assert!(own_locks.is_empty());
    }

    #[test]
    fn the_watch_times_the_end_of_a_run_and_the_death_of_a_killed_one() {
        let dir = scratch_dir("chaos-watch");
        let ledger = Ledger::create(dir.join("ledger"));
        let watch = ledger.watch();
        let job = |task: &str, work: &str| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &ledger.job(work)])
                .env("ZKMW_TASK_ID", task)
                .env("ZKMW_ATTEMPT", "1")
                .process_group(0);
            Reaped::spawn(&mut cmd).expect("sh")
        };
        let mut quick = job("task-0000000001", "true");
        let mut slow = job("task-0000000002", "sleep 30");
        assert!(quick.wait().expect("sh").success());
        assert!(
            wait_until(secs(10), || watch.runs().len() == 2),
            "{:?}",
            watch.runs()
        );
        slow.kill().expect("kill");
        let _ = slow.wait();
        assert!(
            wait_until(secs(10), || watch.running().is_empty()),
            "{:?}",
            watch.runs()
        );
        let runs = watch.runs();
        let by_task = |t: &str| runs.iter().find(|r| r.task == t).cloned().expect("a run");
        let (ended, died) = (by_task("task-0000000001"), by_task("task-0000000002"));
        assert!(
            ended.ended_ns.is_some() && ended.died_ns.is_none(),
            "{ended:?}"
        );
        assert!(
            died.ended_ns.is_none() && died.died_ns.is_some(),
            "{died:?}"
        );
        let lag = died.died_ns.unwrap_or_default() - died.started_ns;
        assert!(lag < Duration::from_secs(10).as_nanos(), "{died:?}");
        assert!(watch.malformed().is_empty(), "{:?}", watch.malformed());
        let _ = std::fs::remove_dir_all(dir);
    }
}
