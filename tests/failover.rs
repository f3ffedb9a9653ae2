//! Crashes while tasks flow: the active master (a standby takes over) and a
//! worker holding tasks (they run elsewhere).

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{Namespace, Proc, StopOnDrop, secs, wait_until};
use serde_json::Value;

#[test]
fn standby_master_takes_over_after_kill9_and_every_task_runs_once() {
    const TASKS: usize = 100;
    let ns = Namespace::new("failover-master");
    let ledger = ns.ledger();
    let mut masters: BTreeMap<&str, Proc> = BTreeMap::new();
    masters.insert("m-a", ns.spawn_master("m-a"));
    ns.wait_for_master("m-a", secs(15));
    masters.insert("m-b", ns.spawn_master("m-b"));
    let _workers = [ns.spawn_worker("w1", 4), ns.spawn_worker("w2", 4)];
    ns.wait_for_workers(&["w1", "w2"], secs(15));

    let job = ledger.record();
    let stop = AtomicBool::new(false);
    let submitted = AtomicUsize::new(0);
    let ids = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let _stop_on_panic = StopOnDrop(&stop);
        let producer = s.spawn(|| {
            for _ in 0..TASKS {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let id = ns.submit(&job);
                ids.lock().unwrap().push(id);
                submitted.fetch_add(1, Ordering::SeqCst);
            }
        });

        // Once work is flowing, crash the active master.
        let mut before = Value::Null;
        let flowing = wait_until(secs(20), || {
            before = ns.status_json();
            before["tasks"]["finished"].as_u64().unwrap_or(0) >= 10
        });
        assert!(flowing, "tasks never started finishing: {before}");
        let old_id = before["master"]["id"].as_str().expect("an active master");
        let old_epoch = before["master"]["epoch"].as_i64().expect("its epoch");
        let victim = masters.get_mut(old_id).expect("one of our masters");
        assert_eq!(
            before["master"]["pid"],
            victim.pid(),
            "status should show the active master's pid"
        );
        victim.kill9();
        eprintln!(
            "killed master {old_id} (epoch {old_epoch}) with {} of {TASKS} tasks submitted",
            submitted.load(Ordering::SeqCst)
        );
        let new_id = if old_id == "m-a" { "m-b" } else { "m-a" };

        let mut after = Value::Null;
        let took_over = wait_until(secs(20), || {
            after = ns.status_json();
            after["master"]["id"] == new_id
        });
        assert!(
            took_over,
            "standby {new_id} never became active after {old_id} was killed; last status: {after}"
        );
        let new_epoch = after["master"]["epoch"].as_i64().unwrap_or(0);
        assert!(
            new_epoch > old_epoch,
            "the new master's epoch {new_epoch} should be above the old {old_epoch}: {after}"
        );
        assert_eq!(after["master"]["pid"], masters[new_id].pid());

        producer.join().expect("the submitter thread failed");
    });
    let ids = ids.into_inner().unwrap();
    assert_eq!(ids.len(), TASKS);
    ns.wait_finished(TASKS as u64, secs(30));
    ledger.assert_each_exactly_once(&ids);
}

#[test]
fn tasks_of_a_kill9ed_worker_run_elsewhere() {
    const TASKS: usize = 6;
    let ns = Namespace::new("failover-worker");
    let ledger = ns.ledger();
    let (_master, mut workers) = ns.spawn_cluster(&["wa", "wb"], 1);

    let job = format!("sleep 2; {}", ledger.record());
    let ids: Vec<String> = (0..TASKS).map(|_| ns.submit(&job)).collect();

    // A worker with one task running and more waiting behind it.
    let mut status = Value::Null;
    let loaded = wait_until(secs(20), || {
        status = ns.status_json();
        status["workers"].as_array().is_some_and(|ws| {
            ws.iter()
                .any(|w| w["running"].as_u64() == Some(1) && w["assigned"].as_u64() >= Some(1))
        })
    });
    assert!(
        loaded,
        "no worker ever had a task running and one assigned: {status}"
    );
    let victim_id = status["workers"]
        .as_array()
        .and_then(|ws| {
            ws.iter()
                .find(|w| w["running"].as_u64() == Some(1) && w["assigned"].as_u64() >= Some(1))
        })
        .and_then(|w| w["id"].as_str())
        .expect("a loaded worker")
        .to_string();

    // Freeze it so what it holds cannot change while we look, then crash it.
    let victim = workers.get_mut(victim_id.as_str()).unwrap();
    victim.stop();
    assert!(
        victim.wait_stopped(secs(5)),
        "worker {victim_id} did not stop"
    );
    let mut running_there = Vec::new();
    let mut assigned_there = Vec::new();
    for id in &ids {
        let t = ns.task_json(id);
        if t["worker"] == victim_id.as_str() {
            match t["state"].as_str() {
                Some("running") => running_there.push(id.clone()),
                Some("assigned") => assigned_there.push(id.clone()),
                _ => {}
            }
        }
    }
    victim.kill9();
    eprintln!("killed {victim_id}: running {running_there:?}, assigned {assigned_there:?}");
    assert!(
        !assigned_there.is_empty(),
        "{victim_id} should have held tasks it had not started"
    );

    ns.wait_finished(TASKS as u64, secs(40));
    for id in &ids {
        let t = ns.task_json(id);
        assert_eq!(t["state"], "done", "{id} should be done: {t}");
        assert_eq!(t["exit_code"], 0, "{id}: {t}");
    }
    let counts = ledger.counts();
    for id in &ids {
        assert!(
            counts.get(id).copied().unwrap_or(0) >= 1,
            "{id} never ran: ledger {counts:?}"
        );
    }
    for id in &running_there {
        let t = ns.task_json(id);
        assert_eq!(
            t["attempts"], 2,
            "{id} was running on the killed worker, so it ran a second time: {t}"
        );
        assert_ne!(t["worker"], victim_id.as_str(), "{id}: {t}");
    }
    for id in &assigned_there {
        assert_eq!(
            counts.get(id).copied(),
            Some(1),
            "{id} was only assigned to the killed worker (never started there), so it ran exactly once: ledger {counts:?}"
        );
        let t = ns.task_json(id);
        assert_ne!(t["worker"], victim_id.as_str(), "{id}: {t}");
    }
}
