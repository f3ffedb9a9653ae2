//! A task never waits behind a busy worker while another sits idle: an
//! unclaimed assignment moves to a worker with a free thread within a tick
//! or two.

mod common;

use std::time::Instant;

use common::{Namespace, secs};

#[test]
fn a_task_waiting_behind_a_busy_worker_moves_to_an_idle_one() {
    let ns = Namespace::new("rebalance");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 1);
    let sleeper = ns.submit("sleep 30");
    ns.wait_task_state(&sleeper, "running", secs(15));
    // w1's one thread is busy: this one waits in its window.
    let quick = ns.submit("echo quick");
    ns.wait_task_state(&quick, "assigned", secs(15));
    let _w2 = ns.spawn_worker("w2", 1);
    ns.wait_for_workers(&["w1", "w2"], secs(15));
    let joined = Instant::now();
    let done = ns.wait_task_state(&quick, "done", secs(20));
    assert_eq!(done["worker"], "w2", "{done}");
    // The tick is 1 s in tests: moved within a tick or two (and started).
    let took = joined.elapsed();
    assert!(
        took.as_secs_f64() < 5.0,
        "{quick} waited {took:?} behind w1"
    );
}
