//! Jobs that cron can trust: tasks of one lock never run at the same time
//! (even with a worker and the master killed mid-run), `--skip-if-locked`
//! and `--unique` store exactly one task however many submit at once,
//! failed runs are re-run after a growing delay that survives a master
//! failover, and labels route tasks to the workers that have them.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::proxy::Proxy;
use common::{Namespace, Proc, Reaped, describe, secs, stderr, stdout, wait_until};
use serde_json::Value;

/// A job that records its run's start and end (unix ns) in `ledger`.
fn timed_job(ledger: &std::path::Path, work: &str) -> String {
    format!(
        "echo \"start $ZKMW_TASK_ID $(date +%s%N)\" >> '{0}'; {work}; echo \"end $ZKMW_TASK_ID $(date +%s%N)\" >> '{0}'",
        ledger.display()
    )
}

/// Each run's (start, end) from a ledger of `timed_job`s; a run killed
/// before its end counts as running until `until`.
fn runs(ledger: &std::path::Path, until: u128) -> Vec<(String, u128, u128)> {
    let text = std::fs::read_to_string(ledger).unwrap_or_default();
    let mut open: BTreeMap<String, u128> = BTreeMap::new();
    let mut runs = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [what, task, at] = fields[..] else {
            continue;
        };
        let at: u128 = at.parse().unwrap_or(0);
        match what {
            "start" => {
                if let Some(start) = open.insert(task.to_string(), at) {
                    // The earlier run never ended: it was killed meanwhile.
                    runs.push((task.to_string(), start, at));
                }
            }
            _ => {
                if let Some(start) = open.remove(task) {
                    runs.push((task.to_string(), start, at));
                }
            }
        }
    }
    runs.extend(open.into_iter().map(|(task, start)| (task, start, until)));
    runs
}

/// No two runs overlap in time.
fn assert_no_overlap(runs: &mut [(String, u128, u128)]) {
    runs.sort_by_key(|r| r.1);
    for pair in runs.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "{} started {} ms before {} ended",
            pair[1].0,
            (pair[0].2 - pair[1].1) / 1_000_000,
            pair[0].0
        );
    }
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// `n` `zkmw submit ARGS` started at once.
fn submit_at_once(ns: &Namespace, n: usize, args: &[&str]) -> Vec<Reaped> {
    (0..n)
        .map(|_| {
            let mut cmd: Command = ns.cmd();
            cmd.arg("submit")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            Reaped::spawn(&mut cmd).expect("zkmw submit")
        })
        .collect()
}

#[test]
fn tasks_of_one_lock_never_overlap_even_across_crashes() {
    let ns = Namespace::new("cron-lock");
    let ledger = ns.dir.join("ledger");
    let _masters: Vec<Proc> = vec![ns.spawn_master("m1"), ns.spawn_master("m2")];
    let mut workers: BTreeMap<String, Proc> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| (id.to_string(), ns.spawn_worker(id, 2)))
        .collect();
    ns.wait_for_workers(&["w1", "w2", "w3"], secs(15));
    let job = timed_job(&ledger, "sleep 0.3");
    let submitters = submit_at_once(&ns, 8, &["--lock", "nightly", &job]);
    let ids: Vec<String> = submitters
        .into_iter()
        .map(|c| {
            String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout)
                .trim()
                .to_string()
        })
        .collect();
    // A worker killed mid-run: its run is taken up again after the grace,
    // and no other task of the lock starts meanwhile.
    assert!(
        wait_until(secs(20), || std::fs::read_to_string(&ledger)
            .is_ok_and(|t| t.lines().count() >= 3)),
        "no run started"
    );
    let mut victim = None;
    let found = wait_until(secs(20), || {
        victim = ns.status_json()["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["running"] == 1))
            .and_then(|w| w["id"].as_str())
            .map(str::to_string);
        victim.is_some()
    });
    assert!(found, "no worker was seen running a task of the lock");
    let victim = victim.expect("found");
    workers.get_mut(&victim).unwrap().kill9();
    ns.wait_finished(ids.len() as u64, secs(120));
    let mut all = runs(&ledger, now_ns());
    assert!(all.len() >= ids.len(), "{all:?}");
    assert_no_overlap(&mut all);
    let zk = ns.connect();
    assert!(
        ns.children(&zk, &format!("{}/locks", ns.root)).is_empty(),
        "the lock is released"
    );
}

#[test]
fn tasks_of_one_lock_never_overlap_when_the_master_dies() {
    let ns = Namespace::new("cron-lock-master");
    let ledger = ns.dir.join("ledger");
    let mut m1 = ns.spawn_master("m1");
    ns.wait_for_master("m1", secs(15));
    let _m2 = ns.spawn_master("m2");
    let _workers: Vec<Proc> = ["w1", "w2"]
        .iter()
        .map(|id| ns.spawn_worker(id, 2))
        .collect();
    ns.wait_for_workers(&["w1", "w2"], secs(15));
    let job = timed_job(&ledger, "sleep 0.5");
    let locked: Vec<String> = (0..6)
        .map(|_| {
            let out = ns.run(&["submit", "--lock", "db", &job]);
            stdout(&out).trim().to_string()
        })
        .collect();
    assert!(
        wait_until(secs(20), || std::fs::read_to_string(&ledger)
            .is_ok_and(|t| t.contains("start"))),
        "no run started"
    );
    m1.kill9();
    ns.wait_finished(6, secs(120));
    let mut locked_runs: Vec<(String, u128, u128)> = runs(&ledger, now_ns())
        .into_iter()
        .filter(|(task, ..)| locked.contains(task))
        .collect();
    assert_eq!(locked_runs.len(), 6, "{locked_runs:?}");
    assert_no_overlap(&mut locked_runs);
}

#[test]
fn skip_if_locked_from_concurrent_submitters_stores_one_task() {
    let ns = Namespace::new("cron-skip");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 2);
    for round in 0..4 {
        let lock = format!("nightly-{round}");
        let submits = submit_at_once(&ns, 2, &["--lock", &lock, "--skip-if-locked", "sleep 3"]);
        let outs: Vec<_> = submits
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        let stored = codes.iter().filter(|c| **c == Some(0)).count();
        assert_eq!(stored, 1, "round {round}: {codes:?}");
        let skipped = outs
            .iter()
            .find(|o| o.status.code() == Some(122))
            .expect("one skipped");
        assert!(
            stderr(skipped).contains("is held by task-"),
            "{}",
            describe(skipped)
        );
        assert!(stdout(skipped).is_empty(), "{}", describe(skipped));
    }
    assert_eq!(
        ns.status_json()["tasks"]["finished"].as_u64().unwrap_or(0) + pending_or_running(&ns),
        4
    );
}

/// A `--skip-if-locked` submit that meets a queue member whose submit has
/// stored its task but not yet written its id into the member (the moment
/// between the two) waits for the id and names that task.
#[test]
fn skip_if_locked_names_a_holder_whose_id_is_written_a_moment_later() {
    let ns = Namespace::new("cron-skip-unnamed");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    zk.ensure(&layout.lockq_dir("nightly")).expect("the queue");
    let member = layout.lockq_member("nightly", "a-token");
    zk.create(&member, b"a-token").expect("a member");
    std::thread::scope(|s| {
        s.spawn(|| {
            // The racing submit, a moment after its transaction (well
            // within the 2 s the refused one waits for the id).
            std::thread::sleep(std::time::Duration::from_secs(1));
            let named = zkmw::zk::Op::SetData {
                path: member.clone(),
                data: b"task-0000000007".to_vec(),
                version: Some(0),
            };
            zk.multi(&[named]).expect("naming the member");
        });
        let out = ns.run(&["submit", "--lock", "nightly", "--skip-if-locked", "true"]);
        assert_eq!(out.status.code(), Some(122), "{}", describe(&out));
        assert!(
            stderr(&out).contains("is held by task-0000000007"),
            "{}",
            describe(&out)
        );
    });
}

/// A master that is creating the namespace makes `/tasks` before `/lockq`:
/// a `--lock` submit that comes in between makes the rest and stores its
/// task (it exited 125, "no such node", in a fault run).
#[test]
fn a_lock_submit_into_a_half_made_namespace_stores_its_task() {
    let ns = Namespace::new("lock-half-made");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    zk.multi(&[zkmw::zk::Op::Delete {
        path: layout.lockq(),
        version: None,
    }])
    .expect("removing /lockq");
    let out = ns.run(&["submit", "--lock", "nightly", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let id = stdout(&out).trim().to_string();
    assert!(zkmw::layout::is_task_name(&id), "{}", describe(&out));
    let queue = ns.children(&zk, &layout.lockq_dir("nightly"));
    assert_eq!(
        queue.len(),
        1,
        "the task joined its lock's queue: {queue:?}"
    );
}

/// A `--lock` submit whose session expires while it reads its lock's
/// queue (cut off past the 3 s session timeout) goes on in a new session
/// and stores its task, once (it exited 125, "session expired", in a storm
/// run).
#[test]
fn a_lock_submit_whose_session_expires_mid_read_stores_its_task_once() {
    let ns = Namespace::new("lock-expired");
    let layout = ns.layout();
    let zk = ns.connect_prepared();
    let proxy = Proxy::start(ns.hosts());
    proxy.mute_replies_on(layout.lockq_dir("expiring").as_bytes());
    let submit = ns.submit_until_triggered(
        &proxy,
        &["--lock", "expiring", "echo locked"],
        Stdio::null(),
    );
    proxy.blackhole();
    // Kept cut off for twice the session timeout: the server expires it.
    std::thread::sleep(std::time::Duration::from_secs(6));
    proxy.heal();
    let out = submit.wait_with_output().expect("the submit ends");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let id = stdout(&out).trim().to_string();
    let tasks = ns.children(&zk, &layout.tasks());
    assert_eq!(tasks, [id], "one task stored: {}", describe(&out));
    let queue = ns.children(&zk, &layout.lockq_dir("expiring"));
    assert_eq!(queue.len(), 1, "one member of its lock's queue: {queue:?}");
}

fn pending_or_running(ns: &Namespace) -> u64 {
    let t = &ns.status_json()["tasks"];
    ["pending", "assigned", "running"]
        .iter()
        .map(|k| t[k].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn unique_from_eight_concurrent_submitters_makes_one_task() {
    let ns = Namespace::new("cron-unique");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 2);
    let submits = submit_at_once(
        &ns,
        8,
        &["--unique", "backup-2026-12-01-0300", "echo backup"],
    );
    let outs: Vec<_> = submits
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for out in &outs {
        assert_eq!(out.status.code(), Some(0), "{}", describe(out));
    }
    let ids: Vec<String> = outs.iter().map(|o| stdout(o).trim().to_string()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let found = outs
        .iter()
        .filter(|o| stderr(o).contains("already"))
        .count();
    assert_eq!(found, 7, "seven say they found it");
    ns.wait_finished(1, secs(20));
    assert_eq!(pending_or_running(&ns), 0);
    // With --wait, a second submit waits for the first's task.
    let out = ns.submit_wait(&["--unique", "backup-2026-12-01-0300", "echo other"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "backup\n"),
        "{}",
        describe(&out)
    );
    // Purged, the key goes with the result, and a new task may take it.
    assert!(ns.run(&["purge", "--keep", "0"]).status.success());
    let again = ns.submit_wait(&["--unique", "backup-2026-12-01-0300", "echo later"]);
    assert_eq!(stdout(&again), "later\n", "{}", describe(&again));
}

/// The create's reply is lost for one submitter (the fault proxy): it
/// finds its own task by its token, and the key still has one task.
#[test]
fn unique_survives_a_submitter_whose_reply_is_lost() {
    let ns = Namespace::new("cron-unique-cut");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 2);
    let proxy = Proxy::start(ns.hosts());
    proxy.mute_replies_on(b"weekly-report");
    let cut = ns.submit_until_triggered(
        &proxy,
        &["--unique", "weekly-report", "echo report"],
        Stdio::null(),
    );
    let mut others = submit_at_once(&ns, 3, &["--unique", "weekly-report", "echo report"]);
    // They find the task whose reply was lost, and end.
    wait_until(secs(20), || {
        others
            .iter_mut()
            .all(|c| matches!(c.try_wait(), Ok(Some(_))))
    });
    proxy.cut();
    proxy.pass();
    let mut ids: Vec<String> = others
        .into_iter()
        .map(|c| stdout(&c.wait_with_output().unwrap()).trim().to_string())
        .collect();
    let out = cut.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    ids.push(stdout(&out).trim().to_string());
    assert!(
        ids.iter().all(|id| *id == ids[0] && !id.is_empty()),
        "{ids:?}"
    );
    ns.wait_finished(1, secs(20));
    assert_eq!(pending_or_running(&ns), 0);
}

#[test]
fn failed_runs_are_retried_with_a_growing_delay_across_a_failover() {
    let ns = Namespace::new("cron-retry");
    let ledger = ns.dir.join("ledger");
    let mut m1 = ns.spawn_master("m1");
    ns.wait_for_master("m1", secs(15));
    let _m2 = ns.spawn_master("m2");
    let _w1 = ns.spawn_worker("w1", 1);
    ns.wait_for_workers(&["w1"], secs(15));
    let job = format!("date +%s%N >> '{}'; exit 3", ledger.display());
    let out = ns.run(&["submit", "--retry-failed", "2", "--retry-delay", "1s", &job]);
    let id = stdout(&out).trim().to_string();
    // Delayed after its first run: status says so, and when.
    let mut seen = Value::Null;
    assert!(
        wait_until(secs(15), || {
            seen = ns.task_json(&id);
            seen["waiting_for"]["why"] == "delay"
        }),
        "never shown delayed: {seen}"
    );
    // The master dies during the delay: the delay is stored, the standby
    // keeps it.
    m1.kill9();
    let done = ns.wait_task_state(&id, "done", secs(60));
    assert_eq!(done["exit_code"], 3, "{done}");
    assert_eq!(done["attempts"], 3, "{done}");
    let times: Vec<u128> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let ours: Vec<u128> = times[times.len() - 3..].to_vec();
    let gaps: Vec<u128> = ours.windows(2).map(|w| (w[1] - w[0]) / 1_000_000).collect();
    assert!(
        gaps[0] >= 1000 && gaps[0] < 10_000,
        "first delay {gaps:?} ms"
    );
    assert!(
        gaps[1] >= 2000 && gaps[1] < 15_000,
        "second delay {gaps:?} ms"
    );
    let history = done["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 3, "{done}");
}

#[test]
fn labels_route_tasks_and_an_unmatched_one_waits_for_its_worker() {
    let ns = Namespace::new("cron-labels");
    let _master = ns.spawn_master("m1");
    let _gpu = ns.spawn(
        "w1",
        &[
            "worker", "--id", "w1", "--label", "gpu", "--label", "zone=eu",
        ],
    );
    let _plain = ns.spawn_worker("w2", 2);
    ns.wait_for_workers(&["w1", "w2"], secs(15));
    let on_gpu: Vec<String> = (0..6)
        .map(|_| {
            stdout(&ns.run(&["submit", "--on", "gpu", "--on", "zone=eu", "true"]))
                .trim()
                .to_string()
        })
        .collect();
    let tpu = stdout(&ns.run(&["submit", "--on", "tpu", "echo tpu"]))
        .trim()
        .to_string();
    for id in &on_gpu {
        let done = ns.wait_task_state(id, "done", secs(30));
        assert_eq!(done["worker"], "w1", "{done}");
    }
    let t = ns.task_json(&tpu);
    assert_eq!(t["state"], "pending", "{t}");
    assert_eq!(t["waiting_for"]["why"], "labels", "{t}");
    let human = stdout(&ns.run(&["status", &tpu]));
    assert!(human.contains("no live worker has it"), "{human}");
    let started = Instant::now();
    let _tpu_worker = ns.spawn("w3", &["worker", "--id", "w3", "--label", "tpu"]);
    let done = ns.wait_task_state(&tpu, "done", secs(20));
    assert_eq!(done["worker"], "w3", "{done}");
    eprintln!(
        "the tpu task ran {:?} after its worker started",
        started.elapsed()
    );
}

#[test]
fn bad_lock_names_keys_and_labels_are_refused() {
    let ns = Namespace::new("cron-bad");
    for args in [
        &["submit", "--lock", "a b", "true"][..],
        &["submit", "--lock", "a/b", "true"],
        &["submit", "--unique", "", "true"],
        &["submit", "--on", "gpu!", "true"],
        &["submit", "--on", "=eu", "true"],
        &["worker", "--id", "w1", "--label", "x".repeat(65).leak()],
        &["submit", "--skip-if-locked", "true"],
    ] {
        let out = ns.run(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", describe(&out));
        assert!(
            stderr(&out).starts_with("zkmw: "),
            "{args:?}: {}",
            describe(&out)
        );
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            describe(&out)
        );
    }
}
