//! Planned restarts are quick and crash restarts need no operator: a
//! master stopped with SIGTERM hands over within a second, a worker killed
//! with SIGKILL and started again at once under its id (as a service
//! manager does) waits for its old session and gets going by itself, and
//! a master asking for a session timeout the server clamps uses what the
//! server granted; and short commands close their sessions instead of
//! leaving them to expire.

mod common;

use std::time::Instant;

use common::ensemble::four_letter_word;
use common::servers::Standalone;
use common::{Namespace, secs, wait_until};

#[test]
fn a_standby_takes_over_within_a_second_of_a_sigterm() {
    let ns = Namespace::new("restart-master-term");
    let mut m1 = ns.spawn_master("m1");
    ns.wait_for_master("m1", secs(15));
    let _m2 = ns.spawn_master("m2");
    let zk = ns.connect();
    let masters = format!("{}/masters", ns.root);
    assert!(
        wait_until(secs(15), || ns.children(&zk, &masters).len() == 2),
        "m2 never registered as a standby"
    );
    m1.term();
    assert_eq!(
        m1.wait_exit(secs(10)).and_then(|s| s.code()),
        Some(0),
        "{}",
        m1.log()
    );
    let exited = Instant::now();
    ns.wait_for_master("m2", secs(15));
    let took = exited.elapsed();
    // The session timeout is 3 s: a session left to expire would take that.
    assert!(
        took.as_secs_f64() < 1.5,
        "m2 took over {took:?} after m1 exited"
    );
}

#[test]
fn a_worker_restarted_at_once_after_a_crash_waits_for_its_old_session() {
    let ns = Namespace::new("restart-worker-kill9");
    let (_master, mut workers) = ns.spawn_cluster(&["w1"], 1);
    workers.get_mut("w1").unwrap().kill9();
    let mut again = ns.spawn_worker("w1", 1);
    // Its old session holds /workers/w1 for up to a session timeout (3 s).
    assert!(
        wait_until(secs(20), || again.log_count("registered") == 1),
        "the restarted worker never registered:\n{}",
        again.log()
    );
    assert!(again.is_running(), "it must not exit:\n{}", again.log());
    assert!(
        again.log().contains("waiting for ZooKeeper to expire it"),
        "it says what it waits for:\n{}",
        again.log()
    );
    let out = ns.submit_wait(&["echo served"]);
    assert_eq!(
        common::stdout(&out),
        "served\n",
        "{}",
        common::describe(&out)
    );
}

/// The server clamps the session timeout to its maximum (20 s): the
/// master warns, and re-runs a dead worker's task after that worker's own
/// grace, not after the hour it asked for.
#[test]
fn a_clamped_session_timeout_is_used_as_granted() {
    let ns = Namespace::new("restart-clamped");
    let master = ns.spawn_with("m1", ns.hosts(), "1h", &["master", "--id", "m1"]);
    let mut w1 = ns.spawn_worker("w1", 1);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));
    let id = ns.submit("if [ \"$ZKMW_ATTEMPT\" = 1 ]; then sleep 60; fi; echo second");
    ns.wait_task_state(&id, "running", secs(15));
    let _w2 = ns.spawn_worker("w2", 1);
    ns.wait_for_workers(&["w1", "w2"], secs(15));
    w1.kill9();
    // w1's session (3 s) and its grace (about 10 s), then a tick.
    let done = ns.wait_task_state(&id, "done", secs(30));
    assert_eq!(done["worker"], "w2", "{done}");
    assert!(
        master.log().contains("granted a session timeout"),
        "the master warns about the clamp:\n{}",
        master.log()
    );
}

/// One of the server's `mntr` figures, `None` when it does not list it (a
/// summary appears only with its first sample). Asks again while the
/// server's answer is not a whole `mntr` (busy or just started).
fn mntr(port: u16, key: &str) -> Option<u64> {
    let mut answer = String::new();
    let whole = wait_until(secs(10), || {
        answer = four_letter_word(port, "mntr");
        answer.contains("zk_server_state")
    });
    assert!(whole, "mntr did not answer: {answer:?}");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

#[test]
fn short_commands_close_their_sessions() {
    let zk = Standalone::start("restart-short-sessions");
    let ns = Namespace::on("restart-short-sessions", &zk.hosts());
    // No session closed yet: the summary may not be listed.
    let closed = mntr(zk.port(), "zk_cnt_close_session_prep_time").unwrap_or(0);
    for _ in 0..3 {
        assert!(ns.run(&["status"]).status.success());
        ns.submit("true");
    }
    assert!(ns.run(&["purge", "--keep", "10"]).status.success());
    // Each closed its session (none is left for the server to expire).
    assert_eq!(mntr(zk.port(), "zk_global_sessions"), Some(0));
    let closes = mntr(zk.port(), "zk_cnt_close_session_prep_time").unwrap_or(0) - closed;
    assert!(closes >= 7, "{closes} sessions closed of 7");
}
