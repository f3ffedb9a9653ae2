//! Outages shorter than a session's hold kill no job: a ZooKeeper restart
//! of 10 s (with the default 5 s session timeout) leaves every session,
//! every job and the active master as they were; and a real partition,
//! where the server expires the worker's session, ends the worker's job
//! before the master starts it again.

mod common;

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::proxy::Proxy;
use common::servers::Standalone;
use common::{Namespace, Reaped, describe, group_alive, secs, stdout, wait_until};

/// The session timeout users get by default.
const DEFAULT_SESSION: &str = "5s";

#[test]
fn a_zookeeper_restart_of_ten_seconds_kills_no_job_and_reruns_nothing() {
    let started = Instant::now();
    let zk = Standalone::start("outage-restart");
    let start_takes = started.elapsed();
    let hosts = zk.hosts();
    let ns = Namespace::on("outage-restart", &hosts);
    let ledger = ns.ledger();
    let master = ns.spawn_with("m1", &hosts, DEFAULT_SESSION, &["master", "--id", "m1"]);
    let worker = ns.spawn_with("w1", &hosts, DEFAULT_SESSION, &["worker", "--id", "w1"]);
    let epoch = ns.wait_for_master("m1", secs(15))["master"]["epoch"].clone();
    ns.wait_for_workers(&["w1"], secs(15));
    let mut cmd = ns.cmd_with(&hosts, DEFAULT_SESSION);
    cmd.args([
        "submit",
        "--wait",
        &format!("{}; sleep 15; echo done", ledger.record()),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let submitter = Reaped::spawn(&mut cmd).expect("submit --wait");
    assert!(
        wait_until(secs(15), || ns.status_json()["tasks"]["running"] == 1),
        "the job never ran"
    );
    // Down for 10 s, counting the time the server takes to start again.
    let down = Instant::now();
    zk.stop();
    std::thread::sleep(Duration::from_secs(10).saturating_sub(start_takes + down.elapsed()));
    zk.restart();
    let outage = down.elapsed();
    eprintln!("ZooKeeper was down for {outage:?}");
    let out = submitter.wait_with_output().expect("submit --wait ends");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "done\n", "{}", describe(&out));
    ledger.assert_each_exactly_once(&[ledger.counts().keys().next().cloned().unwrap_or_default()]);
    for role in [&worker, &master] {
        assert!(
            role.log().contains("resumed"),
            "{} resumed its session:\n{}",
            role.name,
            role.log()
        );
        assert!(
            !role.log().contains("session lost") && !role.log().contains("giving up"),
            "{} kept its session:\n{}",
            role.name,
            role.log()
        );
    }
    let after = ns.status_json();
    assert_eq!(after["master"]["epoch"], epoch, "no new election: {after}");
}

/// Unix nanoseconds, the clock the jobs' `date +%s%N` uses.
fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The line a job wrote to `path`, once it is there.
fn wait_line(path: &Path) -> Option<String> {
    let mut line = None;
    wait_until(secs(60), || {
        line = fs::read_to_string(path).ok().filter(|s| s.ends_with('\n'));
        line.is_some()
    });
    line
}

/// The worker is cut off (silently) while the server stays up: the server
/// expires its session, and the master runs the task again only after the
/// worker's grace, by which time the worker has killed the first run. The
/// first run's process group is gone before the second run starts.
#[test]
fn a_partition_ends_the_job_before_its_rerun_starts() {
    let ns = Namespace::new("outage-partition");
    let proxy = Proxy::start(ns.hosts());
    let _master = ns.spawn_master("m1");
    let w1 = ns.spawn_via(
        "w1",
        &proxy.addr(),
        &["worker", "--id", "w1", "--threads", "1"],
    );
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));
    let first = ns.dir.join("first");
    let second = ns.dir.join("second");
    let job = format!(
        "if [ \"$ZKMW_ATTEMPT\" = 1 ]; then echo $$ > '{}'; sleep 60; else date +%s%N > '{}'; fi",
        first.display(),
        second.display()
    );
    let id = ns.submit(&job);
    let pgid: i32 = wait_line(&first)
        .and_then(|l| l.trim().parse().ok())
        .expect("the first run started");
    let _w2 = ns.spawn_worker("w2", 1);
    ns.wait_for_workers(&["w1", "w2"], secs(15));
    proxy.blackhole();
    let mut died_ns = 0;
    assert!(
        wait_until(secs(60), || {
            died_ns = now_ns();
            !group_alive(pgid)
        }),
        "the cut-off worker never killed its job:\n{}",
        w1.log()
    );
    let rerun_ns: u128 = wait_line(&second)
        .and_then(|l| l.trim().parse().ok())
        .expect("the task ran again");
    assert!(
        rerun_ns > died_ns,
        "the re-run started {} ms before the first run ended",
        (died_ns - rerun_ns) / 1_000_000
    );
    eprintln!(
        "the re-run started {} ms after the first run ended",
        (rerun_ns - died_ns) / 1_000_000
    );
    let done = ns.wait_task_state(&id, "done", secs(30));
    assert_eq!(done["worker"], "w2", "{done}");
}
