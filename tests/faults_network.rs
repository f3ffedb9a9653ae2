//! Network faults between zkmw and ZooKeeper, made with the harness's TCP
//! proxy in front of the shared test server (the server itself is never
//! touched): connections cut, a silent partition, replies lost after a write
//! took effect, and no server at all when the services start.

mod common;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{
    Namespace, StopOnDrop, describe, free_port, now_ms, secs, stderr, stdout, wait_until,
};
use serde_json::Value;
use zkmw::zk::{Op, Zk};

/// The session that owns worker `id`'s ephemeral /workers node, if live.
fn worker_owner(ns: &Namespace, zk: &Zk, id: &str) -> Option<i64> {
    zk.exists(&ns.layout().worker(id))
        .unwrap_or_else(|e| panic!("reading /workers/{id}: {e}"))
        .map(|stat| stat.ephemeral_owner)
}

/// `finished` of `status --json`.
fn finished(status: &Value) -> u64 {
    status["tasks"]["finished"].as_u64().unwrap_or(0)
}

#[test]
fn connection_cuts_without_expiry_keep_sessions_and_run_each_task_once() {
    const MAX_TASKS: usize = 80;
    const CUTS: usize = 4;
    let ns = Namespace::new("net-cuts");
    let ledger = ns.ledger();
    let proxy = Proxy::start(common::zk());
    let via = proxy.addr();
    let master = ns.spawn_via("m1", &via, &["master", "--id", "m1"]);
    let worker = ns.spawn_via("w1", &via, &["worker", "--id", "w1", "--threads", "2"]);
    let before = ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));
    let zk = ns.connect();
    let owner_before = worker_owner(&ns, &zk, "w1").expect("w1 is live");

    let job = format!("sleep 0.2; {}", ledger.record());
    let stop = AtomicBool::new(false);
    let ids = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        let _stop_at_end = StopOnDrop(&stop);
        // Tasks keep coming until the faults are over.
        s.spawn(|| {
            for _ in 0..MAX_TASKS {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let id = ns.submit(&job);
                ids.lock().unwrap().push(id);
                std::thread::sleep(Duration::from_millis(100));
            }
        });

        // Cut both services' connections while tasks flow, each time once
        // more tasks finished and both are connected again; the last fault
        // is a 1.5 s silence (shorter than the session timeout) that ends
        // with the connections reset.
        let mut last_finished = 0;
        for round in 0..=CUTS {
            let mut status = Value::Null;
            let flowing = wait_until(secs(20), || {
                status = ns.status_json();
                finished(&status) > last_finished && proxy.connections() >= 2
            });
            assert!(
                flowing,
                "after fault {round}, tasks stopped finishing or a service did not reconnect ({} connections through the proxy); last status: {status}",
                proxy.connections()
            );
            last_finished = finished(&status);
            if round < CUTS {
                proxy.cut();
            } else {
                proxy.blackhole();
                std::thread::sleep(Duration::from_millis(1500));
                proxy.heal();
            }
        }
    });
    let ids = ids.into_inner().unwrap();
    ns.wait_finished(ids.len() as u64, secs(30));
    ledger.assert_each_exactly_once(&ids);
    for id in &ids {
        let t = ns.task_json(id);
        assert_eq!(t["state"], "done", "{id}: {t}");
        assert_eq!(t["attempts"], 1, "no run of {id} needed repeating: {t}");
    }

    // Same sessions all along: nothing had to register or be elected again.
    assert_eq!(
        worker_owner(&ns, &zk, "w1"),
        Some(owner_before),
        "w1's /workers node should still belong to its first session"
    );
    let after = ns.status_json();
    assert_eq!(
        after["master"]["session"], before["master"]["session"],
        "the master should have kept its session: before {before}, after {after}"
    );
    assert_eq!(after["master"]["epoch"], before["master"]["epoch"]);
    assert!(
        proxy.accepted() > 2 * CUTS,
        "the cuts should have made both services reconnect ({} connections accepted)",
        proxy.accepted()
    );
    for (proc, what) in [(&worker, "session lost"), (&master, "stepping down")] {
        assert_eq!(
            proc.log_count(what),
            0,
            "{} should not log {what:?}:\n{}",
            proc.name,
            proc.log()
        );
    }
}

#[test]
fn services_started_before_zookeeper_answers_wait_and_then_work() {
    let ns = Namespace::new("net-late-server");
    let port = free_port();
    let nowhere = format!("127.0.0.1:{port}");
    let mut master = ns.spawn_via("m1", &nowhere, &["master", "--id", "m1"]);
    let mut worker = ns.spawn_via("w1", &nowhere, &["worker", "--id", "w1", "--threads", "2"]);

    // Both say what they wait for, and outlast a whole connect attempt.
    for proc in [&master, &worker] {
        assert!(
            proc.wait_log("still trying", 0, secs(20)),
            "{} should log that it keeps trying to reach ZooKeeper:\n{}",
            proc.name,
            proc.log()
        );
        assert!(
            proc.log()
                .contains(&format!("{nowhere}: connection refused")),
            "{}'s log should say {nowhere} refuses connections:\n{}",
            proc.name,
            proc.log()
        );
    }
    assert!(master.is_running(), "the master exited:\n{}", master.log());
    assert!(worker.is_running(), "the worker exited:\n{}", worker.log());

    // A server appears on that port: they register and work.
    let _proxy = Proxy::start_on(port, common::zk());
    ns.wait_for_master("m1", secs(20));
    ns.wait_for_workers(&["w1"], secs(20));
    let out = ns.submit_wait(&["echo late but fine"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "late but fine\n");
}

/// Every node of the namespace holding a task or result whose job is `job`:
/// (path, name).
fn nodes_with_job(ns: &Namespace, zk: &Zk, job: &str) -> Vec<(String, String)> {
    let layout = ns.layout();
    let mut paths = Vec::new();
    for name in ns.children(zk, &layout.tasks()) {
        paths.push((layout.task(&name), name));
    }
    for worker in ns.children(zk, &layout.assign()) {
        for name in ns.children(zk, &layout.assign_dir(&worker)) {
            paths.push((layout.assignment(&worker, &name), name));
        }
    }
    for name in ns.children(zk, &layout.status()) {
        paths.push((layout.status_task(&name), name));
    }
    paths
        .into_iter()
        .filter(|(path, _)| {
            let Ok(Some((data, _))) = zk.get(path) else {
                return false;
            };
            serde_json::from_slice::<Value>(&data).is_ok_and(|v| v["job"] == job)
        })
        .collect()
}

/// Submits `job` (which holds `marker`) through a proxy that loses the
/// reply to its create after the server applied it, runs `meanwhile` before
/// submit may look for its task; checks that submit found its task and that
/// exactly one task holds the job. Returns its id.
fn submit_with_its_reply_lost(
    ns: &Namespace,
    zk: &Zk,
    job: &str,
    marker: &str,
    meanwhile: impl FnOnce(),
) -> String {
    let proxy = Proxy::start(common::zk());
    // The create carrying this job reaches the server; its reply is lost.
    proxy.mute_replies_on(marker.as_bytes());

    let out = std::thread::scope(|s| {
        let submit = s.spawn(|| ns.run_via(&proxy.addr(), &["submit", job]));
        let muted = wait_until(secs(15), || proxy.triggered());
        let stored = wait_until(secs(15), || !nodes_with_job(ns, zk, job).is_empty());
        meanwhile();
        // Whatever happened, let submit finish.
        proxy.heal();
        let out = submit.join().expect("submit thread");
        assert!(muted, "submit never sent its create: {}", describe(&out));
        assert!(
            stored,
            "the create whose reply was lost should have been applied: {}",
            describe(&out)
        );
        out
    });
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    eprintln!("submit through the muted proxy: {}", describe(&out));
    assert!(
        stderr(&out).contains("checking whether"),
        "submit should have met the unknown outcome and looked for its task: {}",
        describe(&out)
    );
    let printed = stdout(&out);
    let ids: Vec<&str> = printed.lines().collect();
    assert_eq!(ids.len(), 1, "one id printed: {printed:?}");
    let id = ids[0].to_string();
    assert_only_task_with_job(ns, zk, job, &id);
    id
}

/// Exactly one node of the namespace holds `job`: task `id`'s.
fn assert_only_task_with_job(ns: &Namespace, zk: &Zk, job: &str, id: &str) {
    let stored = nodes_with_job(ns, zk, job);
    assert_eq!(
        stored
            .iter()
            .map(|(_, name)| name.as_str())
            .collect::<Vec<_>>(),
        [id],
        "exactly one task holds the job, the one submit printed: {stored:?}"
    );
}

#[test]
fn create_whose_reply_is_lost_stores_the_task_exactly_once() {
    let ns = Namespace::new("net-ambiguous");
    let ledger = ns.ledger();
    let zk = ns.connect_prepared();
    let marker = format!("ambiguous-{}", now_ms());
    let job = format!("{}; : {marker}", ledger.record());
    let id = submit_with_its_reply_lost(&ns, &zk, &job, &marker, || {});

    // And it runs once.
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn_worker("w1", 1);
    ns.wait_task_state(&id, "done", secs(20));
    ns.wait_finished(1, secs(10));
    ledger.assert_each_exactly_once(&[id]);
    assert_eq!(nodes_with_job(&ns, &zk, &job).len(), 1);
}

/// Runs `args` through a proxy that loses the reply to the first request
/// naming `needle`, then cuts that connection (as a server of an ensemble
/// stopping does to a read in flight) and lets the reconnect through.
fn run_with_a_read_cut_off(ns: &Namespace, needle: &str, args: &[&str]) -> std::process::Output {
    let proxy = Proxy::start(common::zk());
    proxy.mute_replies_on(needle.as_bytes());
    std::thread::scope(|s| {
        let run = s.spawn(|| ns.run_via(&proxy.addr(), args));
        let muted = wait_until(secs(15), || proxy.triggered());
        proxy.heal();
        let out = run.join().expect("command thread");
        assert!(muted, "the command never read {needle}: {}", describe(&out));
        out
    })
}

#[test]
fn a_read_cut_off_mid_call_fails_neither_submit_nor_status() {
    let ns = Namespace::new("net-read-cut");
    let zk = ns.connect_prepared();
    let job = format!("echo read-cut-{}", now_ms());

    // submit reads the cluster settings first: that read is cut off.
    let config = ns.layout().config();
    let out = run_with_a_read_cut_off(&ns, &config, &["submit", &job]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_only_task_with_job(&ns, &zk, &job, stdout(&out).trim());

    // status's first read of the namespace is cut off.
    let out = run_with_a_read_cut_off(&ns, &ns.layout().tasks(), &["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).expect("status --json is JSON");
    assert_eq!(status["tasks"]["pending"], 1, "{status}");
}

/// Tasks leaving the queue (the master assigning them) move /tasks' child
/// version on, but not the sequence numbers of the tasks created next: the
/// search for a task whose create's reply was lost must not start at the
/// child version, or it misses the task and stores it again. Seen in a
/// fault run: a `submit --stdin` batch of 20 stored twice, each run twice.
#[test]
fn create_whose_reply_is_lost_is_found_after_tasks_left_the_queue() {
    let ns = Namespace::new("net-ambiguous-moved");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    let left: Vec<String> = zk
        .create_sequential_many(&layout.task_prefix(), &vec![b"{}".to_vec(); 5])
        .into_iter()
        .map(|created| created.expect("creating a task"))
        .collect();
    let deletes: Vec<Op> = left
        .iter()
        .map(|name| Op::Delete {
            path: layout.task(name),
            version: None,
        })
        .collect();
    zk.multi(&deletes)
        .expect("taking the tasks out of the queue");
    let marker = format!("ambiguous-moved-{}", now_ms());
    let job = format!("echo {marker}");
    submit_with_its_reply_lost(&ns, &zk, &job, &marker, || {});
}

/// The search reads the newest records first, a chunk at a time: a task
/// with more tasks created after it than one chunk holds is still found.
#[test]
fn create_whose_reply_is_lost_is_found_behind_many_newer_tasks() {
    let ns = Namespace::new("net-ambiguous-behind");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    let marker = format!("ambiguous-behind-{}", now_ms());
    let job = format!("echo {marker}");
    submit_with_its_reply_lost(&ns, &zk, &job, &marker, || {
        let newer =
            vec![br#"{"job":"true","submitted_ms":1,"retries":0,"token":"other"}"#.to_vec(); 600];
        for created in zk.create_sequential_many(&layout.task_prefix(), &newer) {
            created.expect("creating a newer task");
        }
    });
}

#[test]
fn silent_partition_expires_the_worker_and_its_tasks_finish_once() {
    const FIRST: usize = 8;
    const LATER: usize = 4;
    let ns = Namespace::new("net-blackhole");
    let ledger = ns.ledger();
    let proxy = Proxy::start(common::zk());
    let _master = ns.spawn_master("m1");
    let w1 = ns.spawn_via(
        "w1",
        &proxy.addr(),
        &["worker", "--id", "w1", "--threads", "2"],
    );
    let _w2 = ns.spawn_worker("w2", 2);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1", "w2"], secs(15));

    let job = format!("sleep 2; {}", ledger.record());
    let mut ids: Vec<String> = (0..FIRST).map(|_| ns.submit(&job)).collect();
    let mut status = Value::Null;
    let busy = wait_until(secs(15), || {
        status = ns.status_json();
        status["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(|w| w["id"] == "w1" && w["running"] == 2))
    });
    assert!(busy, "w1 never ran two tasks: {status}");

    // Silence: no RST, no FIN, nothing. The server expires w1's session
    // after the session timeout, and w1's client must find out by itself.
    let lost_before = w1.log_count("session lost");
    proxy.blackhole();
    let silent_at = Instant::now();
    let noticed = w1.wait_log("session lost", lost_before, secs(15));
    let noticed_after = silent_at.elapsed();
    assert!(
        noticed,
        "w1 never noticed that its session was lost:\n{}",
        w1.log()
    );
    // 3 s session: the client gives up on it ~4.2 s after its last reply.
    assert!(
        noticed_after < Duration::from_secs(10),
        "w1 took {noticed_after:?} to notice"
    );
    let mut live = Vec::new();
    let expired = wait_until(secs(5), || {
        live = Namespace::live_workers(&ns.status_json());
        live == ["w2"]
    });
    assert!(
        expired,
        "the server should have expired w1's session: live {live:?}"
    );
    // The partition heals as soon as w1 knows: w1 registers again, promptly,
    // typically before the master has taken back the tasks it was running
    // (it waits a session timeout after their claims vanished), and may get
    // them back under the same names.
    proxy.heal();
    let healed_at = Instant::now();
    ns.wait_for_workers(&["w1", "w2"], secs(10));
    eprintln!(
        "w1 noticed after {noticed_after:?}, live again {:?} after the heal",
        healed_at.elapsed()
    );
    ids.extend((0..LATER).map(|_| ns.submit(&job)));
    ns.wait_finished((FIRST + LATER) as u64, secs(40));

    // One result each; a task ran more than once only if its result says
    // it was started again, and the partition did interrupt some.
    let counts = ledger.counts();
    let mut rerun = 0;
    let mut attempts_of = BTreeMap::new();
    for id in &ids {
        let t = ns.task_json(id);
        assert_eq!(t["state"], "done", "{id}: {t}");
        let attempts = t["attempts"].as_u64().unwrap_or(0) as usize;
        let runs = counts.get(id).copied().unwrap_or(0);
        assert!(
            runs >= 1 && runs <= attempts,
            "{id} ran {runs} times but its result counts {attempts} attempts: {t}"
        );
        if attempts > 1 {
            rerun += 1;
        }
        attempts_of.insert(id.clone(), attempts);
    }
    assert!(
        rerun >= 1,
        "the tasks w1 was running should have been run again: {attempts_of:?}"
    );
    let unknown: Vec<_> = counts.keys().filter(|id| !ids.contains(id)).collect();
    assert!(unknown.is_empty(), "runs of unknown tasks: {unknown:?}");
    assert!(
        w1.log().contains("killed its jobs"),
        "w1 should say it killed its jobs:\n{}",
        w1.log()
    );
}

/// Whether the server holds a watch of session `owner` on `path`: its
/// `wchc` lists each session (in hex) with the paths it watches under it.
fn server_watches(owner: i64, path: &str) -> bool {
    let port: u16 = common::zk()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let report = common::ensemble::four_letter_word(port, "wchc");
    let session = format!("{owner:#x}");
    let mut ours = false;
    for line in report.lines() {
        match line.strip_prefix('\t') {
            Some(watched) if ours && watched.trim() == path => return true,
            Some(_) => {}
            None => ours = line.trim() == session,
        }
    }
    false
}

/// A worker's watch on its assignments outlives a reconnect (the client
/// crate does not restore it: the worker adds it again): after each cut of
/// its connection (its session lives on), the server holds the watch again
/// and a new task reaches the worker long before its tick (60 s) would
/// list the folder.
#[test]
fn a_worker_cut_off_and_back_watches_its_assignments_again() {
    let ns = Namespace::new("net-cut-watch");
    let proxy = Proxy::start(common::zk());
    let _master = ns.spawn_master("m1");
    let args = ["worker", "--id", "w1", "--threads", "2", "--tick", "60s"];
    let w1 = ns.spawn_via("w1", &proxy.addr(), &args);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));
    let zk = ns.connect();
    let owner = worker_owner(&ns, &zk, "w1").expect("w1 is live");
    let folder = ns.layout().assign_dir("w1");
    for cut in 0..=2 {
        if cut > 0 {
            proxy.cut();
        }
        let watched = wait_until(secs(15), || server_watches(owner, &folder));
        assert!(watched, "cut {cut}: no watch on {folder}:\n{}", w1.log());
        let out = ns.submit_wait(&["true"]);
        assert_eq!(out.status.code(), Some(0), "cut {cut}: {}", describe(&out));
    }
    assert_eq!(
        worker_owner(&ns, &zk, "w1"),
        Some(owner),
        "the same session"
    );
}

/// A worker cut off from ZooKeeper starts nothing new, not even a task it
/// claimed ahead of a free thread: when the job before it ends during the
/// cut, the claimed one waits, and runs (once) only when the worker is
/// back.
#[test]
fn a_worker_cut_off_starts_no_job_it_claimed_ahead() {
    let ns = Namespace::new("net-cut-ahead");
    let proxy = Proxy::start(common::zk());
    let _master = ns.spawn_master("m1");
    let args = ["worker", "--id", "w1", "--threads", "1"];
    let w1 = ns.spawn_via("w1", &proxy.addr(), &args);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));
    // Short jobs in a row: w1 claims one ahead of its one thread.
    for _ in 0..3 {
        let out = ns.submit_wait(&["true"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let gate = ns.dir.join("gate");
    let marker = ns.dir.join("ran");
    let first = ns.submit(&format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done",
        gate.display()
    ));
    let ahead = ns.submit(&format!("touch '{}'", marker.display()));
    ns.wait_task_state(&first, "running", secs(15));
    ns.wait_task_state(&ahead, "running", secs(15));
    assert!(!marker.exists(), "both ran at once on one thread");

    // Cut off for less than the session timeout (3 s): the session lives.
    proxy.blackhole();
    proxy.cut();
    std::fs::write(&gate, b"").expect("open the gate");
    let started = wait_until(Instant::now() + Duration::from_millis(1500), || {
        marker.exists()
    });
    assert!(
        !started,
        "a job claimed ahead started while cut off:\n{}",
        w1.log()
    );
    proxy.heal();

    let t = ns.wait_task_state(&ahead, "done", secs(20));
    assert!(marker.exists(), "{t}");
    assert_eq!(t["attempts"], 1, "{t}");
    assert_eq!(ns.wait_task_state(&first, "done", secs(10))["attempts"], 1);
}
