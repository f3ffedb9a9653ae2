//! `submit --timeout`: a job past its time limit is killed, with every
//! process it started, and the task fails "timed out" (exit 124).

mod common;

use std::time::Instant;

use common::{Namespace, describe, group_alive, secs, stderr, stdout, wait_until};

#[test]
fn job_past_its_timeout_is_killed_with_its_process_group() {
    let ns = Namespace::new("job-timeout");
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn_worker("w1", 1);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));

    // The shell prints its pid (its process group) and leaves a background
    // child behind as well as the foreground one.
    let started = Instant::now();
    let out = ns.submit_wait(&["--timeout", "1s", "echo $$; sleep 30 & sleep 30"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", describe(&out));
    // --wait-timeout is 15 s: this is the job's own timeout, long before.
    assert!(
        took.as_secs_f64() < 8.0,
        "submit --wait took {took:?} for a 1 s timeout: {}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("timed out"),
        "stderr should say the job timed out: {}",
        describe(&out)
    );
    let pgid: i32 = stdout(&out)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the job should have printed its pid: {}", describe(&out)));
    assert!(
        wait_until(secs(5), || !group_alive(pgid)),
        "the job's process group {pgid} should be gone"
    );

    let zk = ns.connect();
    let tasks = ns.children(&zk, &ns.layout().status());
    assert_eq!(tasks.len(), 1, "one result: {tasks:?}");
    let t = ns.task_json(&tasks[0]);
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["reason"], "timed out", "{t}");
    assert_eq!(t["attempts"], 1, "{t}");
    assert_eq!(t["stdout"], format!("{pgid}\n"), "{t}");
}
