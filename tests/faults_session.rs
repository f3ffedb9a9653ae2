//! Lost sessions and stale masters: a worker or a master frozen past its
//! session timeout (SIGSTOP), a master deposed behind its back (its epoch
//! bumped), one task assigned to two workers at once, and the active master
//! crashed again and again under load.

mod common;

use std::fs;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Namespace, Proc, StopOnDrop, pid_alive, secs, wait_until};
use serde_json::Value;
use zkmw::model::{self, Task};
use zkmw::zk::Op;

/// How long a frozen process stays frozen: twice the 3 s session timeout.
const FREEZE: Duration = Duration::from_secs(6);

/// Sleeps until `at` (to keep a fault going, never to wait for an effect).
fn sleep_until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

/// The pids a job wrote to `path`, one a line.
fn pids_in(path: &std::path::Path) -> Vec<i32> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn worker_frozen_past_its_session_loses_its_task_to_another_and_comes_back() {
    let ns = Namespace::new("session-worker-frozen");
    let ledger = ns.ledger();
    let pids = ns.dir.join("pids");
    let (_master, mut workers) = ns.spawn_cluster(&["wa", "wb"], 1);

    // The first run takes long; a second one is quick.
    let job = format!(
        "echo $$ >> '{}'; if [ \"$ZKMW_ATTEMPT\" = 1 ]; then sleep 30; fi; {}",
        pids.display(),
        ledger.record()
    );
    let id = ns.submit(&job);
    let running = ns.wait_task_state(&id, "running", secs(15));
    let victim_id = running["worker"].as_str().expect("a worker").to_string();
    let other_id = if victim_id == "wa" { "wb" } else { "wa" };
    assert!(
        wait_until(secs(5), || pids_in(&pids).len() == 1),
        "the job should have written its pid"
    );
    let first_run = pids_in(&pids)[0];

    let victim = workers.get_mut(victim_id.as_str()).unwrap();
    let lost_before = victim.log_count("session lost");
    victim.stop();
    assert!(victim.wait_stopped(secs(5)), "{victim_id} did not stop");
    let frozen_at = Instant::now();

    // While it is frozen, its session expires and the task runs elsewhere.
    let done = ns.wait_task_state(&id, "done", secs(20));
    assert_eq!(done["worker"], other_id, "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");

    sleep_until(frozen_at + FREEZE);
    victim.cont();
    assert!(
        victim.wait_log("session lost", lost_before, secs(10)),
        "{victim_id} should notice its session is gone:\n{}",
        victim.log()
    );
    assert!(
        victim.log().contains("killed its jobs"),
        "{victim_id} should say it killed its jobs:\n{}",
        victim.log()
    );
    assert!(
        wait_until(secs(10), || !pid_alive(first_run)),
        "the first run (pid {first_run}) should be killed once {victim_id} knows its session is gone"
    );
    // It registers again with a new session.
    ns.wait_for_workers(&["wa", "wb"], secs(15));

    // Still one result, the other worker's, and one run to completion.
    let again = ns.task_json(&id);
    assert_eq!(again, done, "the result must not change");
    ledger.assert_each_exactly_once(std::slice::from_ref(&id));
    let status = ns.wait_finished(1, secs(5));
    assert_eq!(status["tasks"]["finished"], 1, "{status}");
}

#[test]
fn master_frozen_past_its_session_is_replaced_and_comes_back_as_standby() {
    let ns = Namespace::new("session-master-frozen");
    let ledger = ns.ledger();
    let job = ledger.record();
    let ma = ns.spawn_master("m-a");
    ns.wait_for_master("m-a", secs(15));
    let mb = ns.spawn_master("m-b");
    assert!(
        mb.wait_log("standby", 0, secs(15)),
        "m-b never became standby:\n{}",
        mb.log()
    );
    let _worker = ns.spawn_worker("w1", 2);
    ns.wait_for_workers(&["w1"], secs(15));
    let mut ids: Vec<String> = (0..3).map(|_| ns.submit(&job)).collect();
    let before = ns.wait_finished(3, secs(20));
    let old_epoch = before["master"]["epoch"].as_i64().expect("an epoch");

    ma.stop();
    assert!(ma.wait_stopped(secs(5)), "m-a did not stop");
    let frozen_at = Instant::now();
    let standby_before = ma.log_count("standby");

    // The standby takes over while m-a is frozen, and work goes on.
    let took_over = ns.wait_for_master("m-b", secs(20));
    let new_epoch = took_over["master"]["epoch"].as_i64().unwrap_or(0);
    assert!(new_epoch > old_epoch, "epoch {new_epoch} after {old_epoch}");
    assert_eq!(took_over["master"]["pid"], mb.pid());
    ids.extend((0..3).map(|_| ns.submit(&job)));
    ns.wait_finished(6, secs(20));

    // Thawed, m-a finds its session gone and goes back to standby.
    sleep_until(frozen_at + FREEZE);
    ma.cont();
    assert!(
        ma.wait_log("standby", standby_before, secs(15)),
        "m-a should be standby again:\n{}",
        ma.log()
    );
    ids.extend((0..5).map(|_| ns.submit(&job)));
    let after = ns.wait_finished(11, secs(20));
    assert_eq!(after["master"]["id"], "m-b", "{after}");
    assert_eq!(
        after["master"]["epoch"], new_epoch,
        "no election since m-b's: {after}"
    );
    ledger.assert_each_exactly_once(&ids);
    assert!(ma.log().contains("session lost"), "m-a:\n{}", ma.log());
}

#[test]
fn master_deposed_behind_its_back_writes_nothing_and_is_elected_again() {
    let ns = Namespace::new("fence-deposed");
    let ledger = ns.ledger();
    let master = ns.spawn_master("m1");
    let elected = ns.wait_for_master("m1", secs(15));
    let epoch = elected["master"]["epoch"].as_i64().expect("an epoch") as i32;
    let _worker = ns.spawn_worker("w1", 2);
    ns.wait_for_workers(&["w1"], secs(15));

    // Emulate another master's election: bump /epoch's version.
    let zk = ns.connect();
    zk.multi(&[Op::SetData {
        path: ns.layout().epoch(),
        data: Vec::new(),
        version: Some(epoch),
    }])
    .expect("bumping /epoch");

    // The next write m1 tries fails its epoch check: it steps down, starts
    // over with a new session and wins again, under a newer epoch.
    let id = ns.submit(&ledger.record());
    assert!(
        master.wait_log("deposed", 0, secs(15)),
        "m1 should find out it was deposed:\n{}",
        master.log()
    );
    let mut status = Value::Null;
    let reelected = wait_until(secs(20), || {
        status = ns.status_json();
        status["master"]["id"] == "m1"
            && status["master"]["epoch"].as_i64() > Some(i64::from(epoch) + 1)
    });
    assert!(
        reelected,
        "m1 should be active again with an epoch above {}: {status}",
        epoch + 1
    );
    assert_eq!(status["master"]["pid"], master.pid(), "the same process");
    let done = ns.wait_task_state(&id, "done", secs(20));
    assert_eq!(done["attempts"], 1, "{done}");
    ledger.assert_each_exactly_once(&[id]);
}

#[test]
fn task_assigned_to_two_workers_at_once_runs_once() {
    let ns = Namespace::new("fence-double-assign");
    let ledger = ns.ledger();
    let _cluster = ns.spawn_cluster(&["wa", "wb"], 1);

    // What a buggy (or deposed and unfenced) master could do: the same
    // task, unclaimed, in both workers' folders.
    let layout = ns.layout();
    let name = "task-0900000001";
    let task = hand_made_task(format!("sleep 1; {}", ledger.record()), "double-assigned");
    let zk = ns.connect();
    zk.multi(&[
        Op::Create {
            path: layout.assignment("wa", name),
            data: model::encode(&task),
        },
        Op::Create {
            path: layout.assignment("wb", name),
            data: model::encode(&task),
        },
    ])
    .expect("assigning the task twice");

    let done = ns.wait_task_state(name, "done", secs(20));
    assert_eq!(done["attempts"], 1, "{done}");
    // The loser keeps its assignment and retries its claim every tick: give
    // it a few ticks after the result to (wrongly) run the task again.
    let twice = wait_until(secs(5), || ledger.counts().get(name).copied() > Some(1));
    assert!(
        !twice,
        "the task ran {} times: ledger {:?}; result {done}",
        ledger.counts().get(name).copied().unwrap_or(0),
        ledger.counts()
    );
    ledger.assert_each_exactly_once(&[name.to_string()]);
    let status = ns.status_json();
    assert_eq!(status["tasks"]["finished"], 1, "{status}");
    assert_eq!(ns.task_json(name), done, "one result, unchanged");
}

#[test]
fn task_handed_back_to_a_worker_after_its_session_loss_runs() {
    let ns = Namespace::new("session-same-name-back");
    let ledger = ns.ledger();
    // No master: the test plays its part for this one task.
    let w1 = ns.spawn_worker("w1", 1);
    ns.wait_for_workers(&["w1"], secs(15));
    let layout = ns.layout();
    let name = "task-0900000002";
    let assignment = layout.assignment("w1", name);
    let mut task = hand_made_task(
        format!(
            "if [ \"$ZKMW_ATTEMPT\" = 1 ]; then sleep 30; fi; {}",
            ledger.record()
        ),
        "handed-back",
    );
    let zk = ns.connect();
    zk.multi(&[Op::Create {
        path: assignment.clone(),
        data: model::encode(&task),
    }])
    .expect("assigning the task");
    assert!(
        wait_until(secs(10), || zk
            .exists(&layout.running_task(name))
            .is_ok_and(|s| s.is_some())),
        "w1 never claimed {name}"
    );

    // w1 loses its session mid-run, kills the run and registers again; its
    // new session leaves the claimed assignment to the master.
    w1.stop();
    assert!(w1.wait_stopped(secs(5)), "w1 did not stop");
    std::thread::sleep(FREEZE);
    w1.cont();
    assert!(
        w1.wait_log("session lost", 0, secs(10)),
        "w1 should notice its session is gone:\n{}",
        w1.log()
    );
    ns.wait_for_workers(&["w1"], secs(15));
    // Let its new session list its folder at least once (tick: 1 s).
    std::thread::sleep(Duration::from_millis(1500));

    // The master's requeue, then its assignment back to w1, with no listing
    // by w1 in between (as it happens when w1's watch fires late).
    let stat = zk
        .exists(&assignment)
        .expect("reading the assignment")
        .expect("the claimed assignment is still there");
    assert_eq!(stat.version, 1, "claimed once");
    task.attempts = 1;
    zk.multi(&[
        Op::Delete {
            path: assignment.clone(),
            version: Some(1),
        },
        Op::Create {
            path: assignment,
            data: model::encode(&task),
        },
    ])
    .expect("requeue and assign back");

    let done = ns.wait_task_state(name, "done", secs(15));
    assert_eq!(done["worker"], "w1", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    ledger.assert_each_exactly_once(&[name.to_string()]);
}

/// A small xorshift generator: random moments without a dependency; the
/// seed is printed so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("ZKMW_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        eprintln!("random moments from seed {seed} (ZKMW_TEST_SEED={seed} replays them)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn active_master_killed_five_times_under_load_loses_and_repeats_nothing() {
    const TASKS: usize = 200;
    const KILLS: usize = 5;
    let ns = Namespace::new("crash-masters");
    let ledger = ns.ledger();
    let mut rng = Rng::new();
    let mut masters: Vec<Proc> = vec![ns.spawn_master("m0"), ns.spawn_master("m1")];
    let _workers = [ns.spawn_worker("w1", 4), ns.spawn_worker("w2", 4)];
    ns.wait_for_workers(&["w1", "w2"], secs(15));

    let job = ledger.record();
    let stop = AtomicBool::new(false);
    let ids = Mutex::new(Vec::new());
    let mut epochs = Vec::new();
    std::thread::scope(|s| {
        let _stop_on_panic = StopOnDrop(&stop);
        // Tasks arrive in batches of 10 (`submit --stdin`) all along.
        let producer = s.spawn(|| {
            let batch = format!("{job}\n").repeat(10);
            for _ in 0..TASKS / 10 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let out = ns.run_with_stdin(&["submit", "--stdin"], batch.as_bytes());
                assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
                let printed = common::stdout(&out);
                ids.lock()
                    .unwrap()
                    .extend(printed.lines().map(str::to_string));
                // Spread over the ~20 s the kills take.
                std::thread::sleep(Duration::from_millis(900));
            }
        });

        for kill in 0..KILLS {
            // A master is active (and known to be ours); kill it at a
            // random moment of its reign.
            let mut status = Value::Null;
            let active = wait_until(secs(20), || {
                status = ns.status_json();
                masters.iter().any(|m| {
                    status["master"]["pid"] == m.pid() && status["master"]["id"] == *m.name
                })
            });
            assert!(
                active,
                "no master of ours active before kill {kill}: {status}"
            );
            epochs.push(status["master"]["epoch"].as_i64().unwrap_or(0));
            std::thread::sleep(Duration::from_millis(rng.below(1500)));
            let pid = status["master"]["pid"].as_u64().unwrap_or(0) as u32;
            let at = masters.iter().position(|m| m.pid() == pid).expect("ours");
            let mut victim = masters.remove(at);
            victim.kill9();
            eprintln!(
                "kill {}: master {} (epoch {}), {} tasks submitted, {} finished",
                kill + 1,
                victim.name,
                epochs[kill],
                ids.lock().unwrap().len(),
                status["tasks"]["finished"]
            );
            // Its replacement starts as a standby.
            let name = format!("m{}", kill + 2);
            masters.push(ns.spawn_master(&name));
        }
        producer.join().expect("the submitter thread failed");
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.len(), TASKS);
    ns.wait_finished(TASKS as u64, secs(40));
    ledger.assert_each_exactly_once(&ids);
    let mut last = Value::Null;
    let settled = wait_until(secs(20), || {
        last = ns.status_json();
        masters.iter().any(|m| last["master"]["pid"] == m.pid())
    });
    assert!(settled, "no live master of ours active at the end: {last}");
    let epoch = last["master"]["epoch"].as_i64().unwrap_or(0);
    assert!(
        epochs.windows(2).all(|w| w[0] < w[1]) && epochs.last() < Some(&epoch),
        "every new master has a newer epoch: {epochs:?} then {epoch}"
    );
}

/// A task as `zkmw submit` would store it, for tests that play the master.
fn hand_made_task(job: String, token: &str) -> Task {
    Task {
        job,
        submitted_ms: model::now_ms(),
        timeout_ms: None,
        retries: 2,
        attempts: 0,
        token: token.into(),
        history: Vec::new(),
        ..Default::default()
    }
}

/// Results for tasks 1 to `count`, in a prepared namespace, with the purge
/// mark already above them (so a purge skips the mark's own fenced write
/// and only the deletions' fence stands).
fn results_below_the_mark(zk: &zkmw::zk::Zk, layout: &zkmw::layout::Layout, count: i64) {
    for seq in 1..=count {
        let result = model::TaskResult::failed(None, model::FailReason::Malformed, None, 0);
        let path = layout.status_task(&zkmw::layout::task_name(seq));
        zk.create(&path, &model::encode(&result)).expect("a result");
    }
    let mark = br#"{"purged_through":1000}"#.to_vec();
    zk.multi(&[set_data(layout.status(), mark)])
        .expect("the purge mark");
}

/// Sets a node's data whatever its version.
fn set_data(path: String, data: Vec<u8>) -> Op {
    Op::SetData {
        path,
        data,
        version: None,
    }
}

/// Retention is fenced like every master write: a master whose epoch has
/// moved on deletes no result, even when the purge mark already covers
/// them. With the current epoch, the same purge deletes them all.
#[test]
fn a_deposed_masters_retention_deletes_no_result() {
    let ns = Namespace::new("fence-retention");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    results_below_the_mark(&zk, &layout, 20);
    let epoch = |zk: &zkmw::zk::Zk| zk.exists(&layout.epoch()).unwrap().unwrap().version;
    let deposed = epoch(&zk);
    zk.multi(&[set_data(layout.epoch(), b"next".to_vec())])
        .expect("a new master's epoch");
    let policy = || zkmw::retention::Policy {
        older_than: None,
        keep: Some(0),
    };
    let purged = zkmw::retention::purge(&zk, &layout, policy(), Some(deposed), &|_| {});
    assert!(purged.is_err(), "fenced out: {purged:?}");
    assert_eq!(
        ns.children(&zk, &layout.status()).len(),
        20,
        "a deposed master deleted results"
    );
    let purged = zkmw::retention::purge(&zk, &layout, policy(), Some(epoch(&zk)), &|_| {});
    assert_eq!(purged.ok(), Some(20), "the current epoch purges");
}

/// The master's own retention turn carries its epoch: deposed behind its
/// back (its epoch bumped) and then told to keep no result, it deletes
/// nothing until it has been elected again, under a newer epoch.
#[test]
fn a_deposed_master_purges_no_result_before_it_is_elected_again() {
    let ns = Namespace::new("fence-master-retention");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    results_below_the_mark(&zk, &layout, 20);
    let master = ns.spawn_master("m1");
    ns.wait_for_master("m1", secs(15));
    zk.multi(&[set_data(layout.epoch(), b"next".to_vec())])
        .expect("another master's epoch");
    let out = ns.run(&["config", "set", "keep-results", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));

    // The master logs its purge once the deletes are done: wait for the
    // line, not only for the results to go.
    let purged = wait_until(secs(30), || master.log().contains("purged 20 results"));
    assert!(purged, "m1 never purged:\n{}", master.log());
    assert!(
        ns.children(&zk, &layout.status()).is_empty(),
        "results left after the purge"
    );
    let log = master.log();
    let deleted_at = log.find("purged 20 results").expect("the purge's line");
    let elected: Vec<usize> = log
        .match_indices(": active (epoch")
        .map(|(at, _)| at)
        .collect();
    assert!(
        elected.len() >= 2 && elected[1] < deleted_at,
        "m1 deleted results before it was elected again:\n{log}"
    );
}
