//! Seeing and steering work in flight: a job's progress (seen by `status
//! TASK`, `tasks` and the live line of `submit --wait`, coalesced, gone
//! with its worker), `cancel` of a pending, an assigned and a running task
//! (racing the task's own end: one result each), a task claimed ahead of
//! a free thread (cancelled before its start, or released to an idle
//! worker), `tasks` with its filters, and the history of a task run twice.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::ensemble::four_letter_word;
use common::proxy::Proxy;
use common::servers::Standalone;
use common::{Namespace, Reaped, describe, group_alive, secs, stderr, stdout, wait_until};
use serde_json::Value;
use zkmw::master::plan::window;

/// The server's last zxid counter (its low 32 bits count transactions).
fn zxid(port: u16) -> u64 {
    four_letter_word(port, "srvr")
        .lines()
        .find_map(|l| l.strip_prefix("Zxid: 0x"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .map(|z| z & 0xffff_ffff)
        .expect("Zxid in srvr")
}

#[test]
fn progress_is_shown_coalesced_and_goes_with_its_worker() {
    let zk = Standalone::start("steering-progress");
    let ns = Namespace::on("steering-progress", &zk.hosts());
    let (_master, mut workers) = ns.spawn_cluster(&["w1"], 1);
    // 10,000 reports as fast as the shell can write them, then a last one.
    let before = zxid(zk.port());
    let out = ns.submit_wait(&[
        "i=0; while [ $i -lt 10000 ]; do echo \"$((i % 100)) busy\" >&$ZKMW_PROGRESS; i=$((i+1)); done; sleep 1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let written = zxid(zk.port()) - before;
    // The submit (session, create, close), assign, claim, finish, and the
    // relay's few writes a second: far fewer than 10,000.
    eprintln!("{written} transactions for 10,000 progress reports");
    assert!(written < 30, "{written} transactions for 10,000 reports");

    let id = ns.submit(&format!(
        "{} progress 42.5 copying table 3; sleep 60",
        common::BIN
    ));
    let mut seen = Value::Null;
    assert!(
        wait_until(secs(15), || {
            seen = ns.task_json(&id);
            seen["progress"] == 42.5
        }),
        "status never showed the progress: {seen}"
    );
    assert_eq!(seen["progress_message"], "copying table 3", "{seen}");
    let human = stdout(&ns.run(&["status", &id]));
    assert!(human.contains("42.5% copying table 3"), "{human}");
    let listed = stdout(&ns.run(&["tasks", "--state", "running"]));
    assert!(listed.contains("42.5% copying table 3"), "{listed}");
    workers.get_mut("w1").unwrap().kill9();
    assert!(
        wait_until(secs(15), || ns.task_json(&id)["progress"].is_null()),
        "the progress outlived its worker"
    );
}

#[test]
fn progress_outside_a_job_and_bad_values_are_refused() {
    let ns = Namespace::new("steering-progress-bad");
    let out = ns.run(&["progress", "40"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).starts_with("zkmw: not inside a zkmw job"),
        "{}",
        describe(&out)
    );
    for bad in ["101", "-1", "NaN", "text"] {
        let mut cmd = ns.raw_cmd();
        cmd.args(["progress", bad]).env("ZKMW_PROGRESS", "1");
        let out = common::run_bounded(cmd, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(125), "{bad}: {}", describe(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{bad}: {}", describe(&out));
    }
}

/// `submit --wait` of a task cancelled meanwhile exits 123.
#[test]
fn cancel_of_pending_assigned_and_running_tasks() {
    let ns = Namespace::new("steering-cancel");
    let pids = ns.dir.join("pids");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 1);
    let running = ns.submit(&format!(
        "echo $$ > '{}'; echo started; sleep 60",
        pids.display()
    ));
    ns.wait_task_state(&running, "running", secs(15));
    // w1's one thread is busy: the next ones wait assigned until its
    // window is full, the last pending.
    let assigned = ns.submit("sleep 1");
    ns.wait_task_state(&assigned, "assigned", secs(15));
    for _ in 2..window(1) {
        let filler = ns.submit("sleep 1");
        ns.wait_task_state(&filler, "assigned", secs(15));
    }
    let pending = ns.submit("sleep 1");
    ns.wait_task_state(&pending, "pending", secs(15));
    let mut waiter = ns.cmd();
    waiter
        .args(["wait", &pending])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let waiter = Reaped::spawn(&mut waiter).expect("zkmw wait");

    let out = ns.run(&["cancel", &pending, &assigned]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains("had not started"),
        "{}",
        describe(&out)
    );
    for id in [&pending, &assigned] {
        let t = ns.wait_task_state(id, "failed", secs(15));
        assert_eq!(t["reason"], "cancelled", "{t}");
        assert_eq!(t["attempts"], 0, "never ran: {t}");
    }
    let waited = waiter.wait_with_output().expect("zkmw wait ends");
    assert_eq!(waited.status.code(), Some(123), "{}", describe(&waited));

    let pgid: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = ns.run(&["cancel", "--wait", "--grace", "1s", &running]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        stdout(&out).contains(&format!("{running} cancelled")),
        "{}",
        describe(&out)
    );
    let t = ns.task_json(&running);
    assert_eq!(
        (t["state"].as_str(), t["reason"].as_str()),
        (Some("failed"), Some("cancelled")),
        "{t}"
    );
    assert_eq!(t["stdout"], "started\n", "its output so far: {t}");
    assert!(
        !group_alive(pgid),
        "the job's process group {pgid} is still there"
    );

    // A finished task, and an unknown one: 125, saying which.
    let out = ns.run(&["cancel", &running]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr(&out).contains("already"), "{}", describe(&out));
    let out = ns.run(&["cancel", "task-0099999999"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr(&out).contains("no task"), "{}", describe(&out));
}

/// A worker whose jobs were short claims one task ahead per thread; behind
/// a long job, that claim is cancelled without running, or released (its
/// run not counted) to a worker that joins, instead of waiting for the
/// long job.
#[test]
fn a_task_claimed_ahead_behind_a_long_job_is_cancelled_or_released() {
    let ns = Namespace::new("steering-ahead");
    let marker = ns.dir.join("ran");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 1);
    for _ in 0..3 {
        let out = ns.submit_wait(&["true"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    let long = ns.submit("sleep 20");
    ns.wait_task_state(&long, "running", secs(15));

    let cancelled = ns.submit(&format!("touch '{}'", marker.display()));
    let out = ns.run(&["cancel", &cancelled]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let t = ns.wait_task_state(&cancelled, "failed", secs(10));
    assert_eq!(t["reason"], "cancelled", "{t}");
    assert_eq!(t["attempts"], 0, "never ran: {t}");
    assert!(!marker.exists(), "the cancelled job ran");

    let released = ns.submit("true");
    let _w2 = ns.spawn_worker("w2", 1);
    let t = ns.wait_task_state(&released, "done", secs(15));
    assert_eq!(t["worker"], "w2", "it waited for w1's long job: {t}");
    assert_eq!(t["attempts"], 1, "the release counted a run: {t}");
    assert_eq!(ns.task_json(&long)["state"], "running");
}

/// Cancels racing the tasks' own ends, many times: one result each, and
/// it is either the job's or `cancelled`.
#[test]
fn cancel_racing_the_finish_leaves_one_result() {
    let ns = Namespace::new("steering-race");
    let ledger = ns.ledger();
    let (_master, _workers) = ns.spawn_cluster(&["w1", "w2"], 4);
    let ids: Vec<String> = (0..40)
        .map(|i| ns.submit(&format!("{}; sleep 0.{}", ledger.record(), i % 10)))
        .collect();
    for id in &ids {
        let out = ns.run(&["cancel", "--grace", "0s", id]);
        assert!(
            matches!(out.status.code(), Some(0 | 125)),
            "{id}: {}",
            describe(&out)
        );
    }
    ns.wait_finished(ids.len() as u64, secs(60));
    let zk = ns.connect();
    assert!(
        wait_until(secs(15), || ns
            .children(&zk, &format!("{}/cancel", ns.root))
            .is_empty()),
        "cancel requests were left behind"
    );
    let counts = ledger.counts();
    for id in &ids {
        let t = ns.task_json(id);
        let how = (
            t["state"].as_str(),
            t["reason"].as_str(),
            t["exit_code"].as_i64(),
        );
        assert!(
            matches!(
                how,
                (Some("done"), None, Some(0)) | (Some("failed"), Some("cancelled"), None)
            ),
            "{id}: {t}"
        );
        assert!(counts.get(id).copied().unwrap_or(0) <= 1, "{id} ran twice");
    }
}

/// A cancel made while the worker is cut off from ZooKeeper (for less than
/// its hold) takes effect once it is back.
#[test]
fn cancel_while_the_worker_is_cut_off_takes_effect_when_it_is_back() {
    let ns = Namespace::new("steering-cut-off");
    let proxy = Proxy::start(ns.hosts());
    let _master = ns.spawn_master("m1");
    let _w1 = ns.spawn_via("w1", &proxy.addr(), &["worker", "--id", "w1"]);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));
    let id = ns.submit("sleep 60");
    ns.wait_task_state(&id, "running", secs(15));
    proxy.blackhole();
    let out = ns.run(&["cancel", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    std::thread::sleep(Duration::from_secs(2));
    proxy.cut();
    proxy.pass();
    let t = ns.wait_task_state(&id, "failed", secs(20));
    assert_eq!(t["reason"], "cancelled", "{t}");
    assert_eq!(t["attempts"], 1, "{t}");
}

#[test]
fn tasks_lists_newest_first_with_filters_and_a_limit() {
    let ns = Namespace::new("steering-tasks");
    let (_master, _workers) = ns.spawn_cluster(&["w1", "w2"], 2);
    let done: Vec<String> = (0..6)
        .map(|i| ns.submit(&format!("exit {}", i % 2)))
        .collect();
    ns.wait_finished(6, secs(30));
    let rows = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["tasks", "--json"];
        all.extend_from_slice(args);
        let out = ns.run(&all);
        common::parse_json(&out, "zkmw tasks --json")
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let all = rows(&[]);
    let ids: Vec<&str> = all.iter().filter_map(|r| r["task"].as_str()).collect();
    let mut newest_first: Vec<&str> = done.iter().map(String::as_str).collect();
    newest_first.reverse();
    assert_eq!(ids, newest_first);
    assert_eq!(rows(&["--limit", "2"]).len(), 2);
    let failed = rows(&["--state", "failed"]);
    assert!(failed.is_empty(), "exit 1 is done, not failed: {failed:?}");
    let done_rows = rows(&["--state", "done"]);
    assert_eq!(done_rows.len(), 6);
    assert!(
        done_rows.iter().all(|r| r.get("stdout").is_none()),
        "no output in the list"
    );
    let on_w1 = rows(&["--worker", "w1"]);
    assert!(on_w1.iter().all(|r| r["worker"] == "w1"), "{on_w1:?}");
    let ran_on_w1 = all.iter().filter(|r| r["worker"] == "w1").count();
    assert_eq!(on_w1.len(), ran_on_w1, "every task w1 ran: {on_w1:?}");
    let human = stdout(&ns.run(&["tasks", "--limit", "3"]));
    assert_eq!(human.lines().count(), 3, "{human}");
    assert!(
        human
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with(newest_first[0]),
        "{human}"
    );
}

#[test]
fn a_task_run_twice_shows_both_runs_in_its_history() {
    let ns = Namespace::new("steering-history");
    let (_master, mut workers) = ns.spawn_cluster(&["w1"], 1);
    let id = ns.submit("if [ \"$ZKMW_ATTEMPT\" = 1 ]; then sleep 60; fi; echo second");
    ns.wait_task_state(&id, "running", secs(15));
    workers.get_mut("w1").unwrap().kill9();
    let _w2 = ns.spawn_worker("w2", 1);
    let t = ns.wait_task_state(&id, "done", secs(40));
    let history = t["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 2, "{t}");
    assert_eq!(history[0]["worker"], "w1", "{t}");
    assert_eq!(history[0]["end"]["how"], "interrupted", "{t}");
    assert_eq!(history[1]["worker"], "w2", "{t}");
    assert_eq!(history[1]["end"]["how"], "exited", "{t}");
    assert_eq!(history[1]["end"]["code"], 0, "{t}");
    let human = stdout(&ns.run(&["status", &id]));
    assert!(
        human.contains("interrupted: worker lost") && human.contains("exited 0"),
        "{human}"
    );
}

/// Runs `zkmw ARGS` of `ns` on a pseudo-terminal (`script(1)` gives it
/// one), `timeout` (if given, in seconds) ending it; its exit and what the
/// terminal showed.
fn on_a_terminal(ns: &Namespace, args: &str, timeout: Option<u32>) -> (Output, String) {
    let typescript = ns.dir.join("typescript");
    let timeout = timeout.map_or(String::new(), |s| format!("timeout {s} "));
    let command = format!(
        "{timeout}{} --zk {} --root {} {args}",
        common::BIN,
        ns.hosts(),
        ns.root
    );
    let mut script = std::process::Command::new("script");
    script.args(["-qfec", &command]).arg(&typescript);
    let out = common::run_bounded(script, Duration::from_secs(30));
    let seen = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).into_owned();
    (out, seen)
}

/// On a terminal, `submit --wait` keeps one line up to date; with stderr
/// a pipe it prints nothing of its own.
#[test]
fn the_live_line_shows_on_a_terminal_only() {
    let ns = Namespace::new("steering-live");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 1);
    let job = format!("{} progress 40 copying; sleep 2; echo out", common::BIN);
    let (out, seen) = on_a_terminal(&ns, &format!("submit --wait '{job}'"), None);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(seen.contains("running on w1"), "{seen}");
    assert!(seen.contains("40% copying"), "{seen}");
    let out = ns.submit_wait(&[&job]);
    assert_eq!(stdout(&out), "out\n");
    assert!(
        stderr(&out).is_empty(),
        "nothing extra off a terminal: {}",
        describe(&out)
    );
}

/// `status --watch` redraws the cluster, its running tasks and its last
/// failures, each frame from one read of the namespace.
#[test]
fn status_watch_shows_the_running_tasks_and_the_last_failures() {
    let ns = Namespace::new("status-watch");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 2);
    let failed = ns.submit("sleep 60");
    assert!(ns.run(&["cancel", &failed]).status.success());
    ns.wait_task_state(&failed, "failed", secs(15));
    let running = ns.submit("sleep 60");
    ns.wait_task_state(&running, "running", secs(15));
    // On a terminal, as it must be, for 3 s.
    let (_, screen) = on_a_terminal(&ns, "status --watch --interval 200ms", Some(3));
    for shown in ["running (1)", &running, "last failures", &failed] {
        assert!(screen.contains(shown), "{shown} not shown:\n{screen}");
    }
}
