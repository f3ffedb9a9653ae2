//! A 3-node ZooKeeper ensemble losing nodes under a running cluster: the
//! node a worker is connected to dies (work goes on), then a second one
//! (no quorum: commands fail in bounded time, nothing is corrupted), then
//! both come back (the same processes resume their roles).
//!
//! Each test starts an ensemble of its own (`scripts/zk.sh ensemble-start`
//! on free ports, in a private folder: see `common::ensemble`), which is
//! stopped when the test ends, pass or fail.

mod common;

use std::time::{Duration, Instant};

use common::ensemble::Ensemble;
use common::{Namespace, describe, secs, stderr, wait_until};

/// Session timeout of the services in the test that expects their sessions
/// to ride out the quorum loss (the server's maximum is 20 s; the client
/// gives a session up 1.4 x that long after its last reply).
const LONG_SESSION: &str = "20s";

#[test]
fn ensemble_losing_a_node_then_its_quorum_briefly_loses_and_repeats_nothing() {
    lose_a_node_then_the_quorum(LONG_SESSION, true);
}

#[test]
fn ensemble_quorum_lost_past_the_session_timeout_roles_come_back_in_the_same_processes() {
    lose_a_node_then_the_quorum(common::SESSION_TIMEOUT, false);
}

/// The worker's node dies (work goes on), then a second node (no quorum:
/// a command fails in bounded time), then both come back: the same
/// processes carry on, and every task ran exactly once. With
/// `sessions_survive`, the services kept their sessions all along.
fn lose_a_node_then_the_quorum(session_timeout: &str, sessions_survive: bool) {
    let mut ensemble = Ensemble::start();
    let hosts = ensemble.hosts();
    let ns = Namespace::on("ensemble", &hosts);
    let ledger = ns.ledger();
    let job = ledger.record();
    let mut master = ns.spawn_with("m1", &hosts, session_timeout, &["master", "--id", "m1"]);
    let mut worker = ns.spawn_with(
        "w1",
        &hosts,
        session_timeout,
        &["worker", "--id", "w1", "--threads", "2"],
    );
    let before = ns.wait_for_master("m1", secs(20));
    ns.wait_for_workers(&["w1"], secs(20));
    let mut ids: Vec<String> = (0..5).map(|_| ns.submit(&job)).collect();
    ns.wait_finished(5, secs(20));

    // The node the worker's session is connected to dies.
    let owner = || {
        let zk = ns.connect();
        zk.exists(&ns.layout().worker("w1"))
            .expect("reading /workers/w1")
            .map(|s| s.ephemeral_owner)
    };
    let sid = owner().expect("w1 is live");
    let mut first = None;
    assert!(
        wait_until(secs(10), || {
            first = ensemble.node_of_session(sid);
            first.is_some()
        }),
        "no node lists w1's session {sid:#x} in `cons`"
    );
    let first = first.unwrap_or_default();
    ensemble.stop_node(first);
    eprintln!("stopped node {first}, which served w1's session {sid:#x}");

    // Work goes on, with the same sessions: nothing registers again.
    ids.extend((0..5).map(|_| ns.submit(&job)));
    ns.wait_finished(10, secs(30));
    assert_eq!(owner(), Some(sid), "w1 should have kept its session");

    // A second node dies: no quorum. A command fails within its connect
    // timeout, with the documented code.
    let second = (1..=3).find(|n| *n != first).unwrap_or(1);
    ensemble.stop_node(second);
    eprintln!("stopped node {second}: no quorum");
    let started = Instant::now();
    let out = ns.run(&["--connect-timeout", "3s", "submit", &job]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).starts_with("zkmw: "),
        "one zkmw error line: {}",
        describe(&out)
    );
    assert!(
        took < Duration::from_secs(8),
        "submit took {took:?} with --connect-timeout 3s"
    );

    // The nodes come back: the same processes carry on.
    ensemble.start_node(first);
    ensemble.start_node(second);
    eprintln!("nodes {first} and {second} back");
    let status = ns.wait_for_master("m1", secs(30));
    assert_eq!(status["master"]["pid"], master.pid(), "{status}");
    ns.wait_for_workers(&["w1"], secs(30));
    ids.extend((0..5).map(|_| ns.submit(&job)));
    let status = ns.wait_finished(15, secs(30));
    assert_eq!(status["workers"][0]["pid"], worker.pid(), "{status}");
    assert!(master.is_running(), "m1 exited:\n{}", master.log());
    assert!(worker.is_running(), "w1 exited:\n{}", worker.log());
    if sessions_survive {
        assert_eq!(owner(), Some(sid), "w1 should have kept its session");
        assert_eq!(
            status["master"]["session"], before["master"]["session"],
            "m1 should have kept its session: {status}"
        );
    }
    ledger.assert_each_exactly_once(&ids);
}

/// With the default 5 s session timeout, the ensemble without a quorum for
/// 10 s (two of its three nodes down, then a leader election) kills no
/// job: every role resumes its session, and the job runs once.
#[test]
fn ensemble_without_a_quorum_for_ten_seconds_kills_no_job() {
    let mut ensemble = Ensemble::start();
    let hosts = ensemble.hosts();
    let ns = Namespace::on("ensemble-ten", &hosts);
    let ledger = ns.ledger();
    let master = ns.spawn_with("m1", &hosts, "5s", &["master", "--id", "m1"]);
    let worker = ns.spawn_with("w1", &hosts, "5s", &["worker", "--id", "w1"]);
    let before = ns.wait_for_master("m1", secs(20));
    ns.wait_for_workers(&["w1"], secs(20));
    let id = ns.submit(&format!("{}; sleep 16", ledger.record()));
    ns.wait_task_state(&id, "running", secs(20));
    let down = Instant::now();
    ensemble.stop_node(1);
    ensemble.stop_node(2);
    std::thread::sleep(Duration::from_secs(8).saturating_sub(down.elapsed()));
    ensemble.start_node(1);
    ensemble.start_node(2);
    eprintln!("no quorum for {:?}", down.elapsed());
    let done = ns.wait_task_state(&id, "done", secs(40));
    assert_eq!(done["attempts"], 1, "{done}");
    ledger.assert_each_exactly_once(&[id]);
    let after = ns.wait_for_master("m1", secs(20));
    assert_eq!(
        after["master"]["epoch"], before["master"]["epoch"],
        "{after}"
    );
    for role in [&master, &worker] {
        assert!(
            !role.log().contains("session lost") && !role.log().contains("giving up"),
            "{} kept its session:\n{}",
            role.name,
            role.log()
        );
    }
}
