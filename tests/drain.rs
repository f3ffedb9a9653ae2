//! A worker stopped with SIGTERM: it finishes what runs (within
//! --drain-timeout), hands back at once what it had not started, and exits 0.

mod common;

use std::time::Instant;

use common::{Namespace, group_alive, now_ms, secs, wait_until};
use serde_json::Value;
use zkmw::master::plan::window;

/// The status view of worker `id`, or null.
fn worker<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or(&Value::Null)
}

#[test]
fn sigterm_finishes_running_jobs_hands_back_the_rest_at_once_and_exits_zero() {
    let ns = Namespace::new("drain-clean");
    let ledger = ns.ledger();
    let _master = ns.spawn_master("m1");
    let mut wa = ns.spawn_worker("wa", 1);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["wa"], secs(15));

    // wa's one thread runs one task, the rest of its window waits behind
    // it, one more stays queued; wb has a thread for each of those.
    let behind = window(1) - 1;
    let job = format!("sleep 3; {}", ledger.record());
    let ids: Vec<String> = (0..behind + 2).map(|_| ns.submit(&job)).collect();
    let mut status = Value::Null;
    let loaded = wait_until(secs(15), || {
        status = ns.status_json();
        worker(&status, "wa")["running"] == 1 && worker(&status, "wa")["assigned"] == behind
    });
    assert!(
        loaded,
        "wa never had 1 task running and {behind} waiting: {status}"
    );
    let _wb = ns.spawn_worker("wb", behind as u16 + 1);
    ns.wait_for_workers(&["wa", "wb"], secs(15));
    let mut running = Vec::new();
    let mut waiting = Vec::new();
    for id in &ids {
        let t = ns.task_json(id);
        match (t["worker"].as_str(), t["state"].as_str()) {
            (Some("wa"), Some("running")) => running.push(id.clone()),
            (Some("wa"), Some("assigned")) => waiting.push(id.clone()),
            _ => {}
        }
    }
    assert_eq!(
        (running.len(), waiting.len()),
        (1, behind),
        "wa's tasks: running {running:?}, waiting {waiting:?}"
    );

    let sigterm_ms = now_ms();
    let sigterm = Instant::now();
    wa.term();

    // What wa had not started runs on wb right away, not a session timeout
    // later.
    for id in &waiting {
        let mut t = Value::Null;
        let started = wait_until(secs(10), || {
            t = ns.task_json(id);
            t["started_ms"].is_u64()
        });
        assert!(started, "{id} never started after wa's SIGTERM: {t}");
        assert_eq!(t["worker"], "wb", "{id}: {t}");
        let delay = t["started_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(sigterm_ms);
        eprintln!("{id} started on wb {delay} ms after wa's SIGTERM");
        assert!(
            delay < 2000,
            "{id} started {delay} ms after the SIGTERM; it should be handed back at once: {t}"
        );
    }

    // wa finishes its running jobs itself, then exits 0 on its own.
    let exit = wa.wait_exit(secs(15));
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "wa should exit 0 by itself after its jobs ({:?} after the SIGTERM):\n{}",
        sigterm.elapsed(),
        wa.log()
    );
    ns.wait_finished(ids.len() as u64, secs(20));
    for id in &running {
        let t = ns.task_json(id);
        assert_eq!(t["state"], "done", "{id}: {t}");
        assert_eq!(t["worker"], "wa", "{id} finished where it ran: {t}");
        assert_eq!(t["attempts"], 1, "{id}: {t}");
    }
    for id in &waiting {
        let t = ns.task_json(id);
        assert_eq!(t["state"], "done", "{id}: {t}");
        assert_eq!(t["attempts"], 1, "{id} never started on wa: {t}");
    }
    ledger.assert_each_exactly_once(&ids);
}

#[test]
fn drain_timeout_kills_the_job_and_the_task_runs_again_elsewhere() {
    let ns = Namespace::new("drain-timeout");
    let ledger = ns.ledger();
    let pids = ns.dir.join("pids");
    let _master = ns.spawn_master("m1");
    let mut wa = ns.spawn(
        "wa",
        &[
            "worker",
            "--id",
            "wa",
            "--threads",
            "1",
            "--drain-timeout",
            "1s",
        ],
    );
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["wa"], secs(15));

    let job = format!(
        "echo $$ >> '{}'; if [ \"$ZKMW_ATTEMPT\" = 1 ]; then sleep 30; fi; {}",
        pids.display(),
        ledger.record()
    );
    let id = ns.submit(&job);
    ns.wait_task_state(&id, "running", secs(15));
    let mut pid = 0;
    assert!(
        wait_until(secs(5), || {
            pid = std::fs::read_to_string(&pids)
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or(0);
            pid > 0
        }),
        "the job should have written its pid"
    );
    let _wb = ns.spawn_worker("wb", 1);
    ns.wait_for_workers(&["wa", "wb"], secs(15));

    let sigterm = Instant::now();
    wa.term();
    let exit = wa.wait_exit(secs(15));
    let took = sigterm.elapsed();
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(0),
        "wa should exit 0 after its drain timeout:\n{}",
        wa.log()
    );
    // 1 s of drain, then SIGTERM to the job's group (sleep dies of it).
    assert!(
        took.as_secs_f64() < 5.0,
        "wa took {took:?} to exit with a 1 s drain timeout"
    );
    assert!(
        wa.log().contains("drain timeout"),
        "wa should say it killed what was left:\n{}",
        wa.log()
    );
    assert!(
        wait_until(secs(5), || !group_alive(pid)),
        "the job's process group {pid} should be gone"
    );

    // The interrupted run was handed back at once and runs again elsewhere:
    // no session timeout, no grace (3 s and 10 s here).
    let exited = Instant::now();
    let done = ns.wait_task_state(&id, "done", secs(20));
    assert!(
        exited.elapsed().as_secs_f64() < 3.0,
        "the killed run was requeued only after {:?}",
        exited.elapsed()
    );
    assert!(wa.log().contains("handed back"), "{}", wa.log());
    assert_eq!(done["worker"], "wb", "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    ledger.assert_each_exactly_once(&[id]);
}
