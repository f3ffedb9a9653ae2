//! Garbage written into the namespace by someone else: each bad task ends as
//! failed "malformed task", and the cluster keeps serving normal jobs.

mod common;

use common::{Namespace, describe, secs, stdout, wait_until};
use serde_json::Value;

/// Waits for `status TASK --json` to show the task failed as malformed.
fn assert_failed_malformed(ns: &Namespace, task: &str) {
    let mut t = Value::Null;
    let failed = wait_until(secs(20), || {
        t = ns.task_json(task);
        t["state"] == "failed"
    });
    assert!(failed, "{task} never showed state failed; last: {t}");
    assert_eq!(t["reason"], "malformed task", "{task}: {t}");
    assert_eq!(t["task"], task, "{t}");
}

#[test]
fn garbage_tasks_fail_as_malformed_and_normal_jobs_still_run() {
    let ns = Namespace::new("malformed");
    let _cluster = ns.spawn_cluster(&["w1"], 2);

    let zk = ns.connect();
    let layout = ns.layout();
    let garbage: [(&str, &[u8]); 5] = [
        ("task-9000000001", b"{not json"),
        ("task-9000000002", b""),
        ("task-9000000003", b"\xff\xfe\x00\x01"),
        (
            "task-9000000004",
            b"{\"job\":\"   \",\"submitted_ms\":1,\"retries\":0,\"token\":\"x\"}",
        ),
        ("task-9000000005", b"[1,2,3]"),
    ];
    for (name, data) in garbage {
        zk.create(&layout.task(name), data)
            .unwrap_or_else(|e| panic!("creating /tasks/{name}: {e}"));
    }
    // And one handed straight to the worker, as a broken master might.
    zk.create(&layout.assignment("w1", "task-9000000006"), b"\x00garbage")
        .expect("creating an assignment");

    for (name, _) in garbage {
        assert_failed_malformed(&ns, name);
    }
    assert_failed_malformed(&ns, "task-9000000006");
    // Six results, nothing left queued or assigned.
    let s = ns.wait_finished(6, secs(20));
    assert_eq!(
        s["master"]["id"], "m1",
        "the master survived the garbage: {s}"
    );

    let out = ns.submit_wait(&["echo still works"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "still works\n");
}

#[test]
fn garbage_present_before_the_master_starts_fails_as_malformed() {
    let ns = Namespace::new("malformed-at-start");
    let zk = ns.connect_prepared();
    let layout = ns.layout();
    zk.create(&layout.task("task-9000000001"), b"{\"job\":")
        .expect("creating a garbage task");
    // A task name that is not one, holding a valid task: it must not run.
    let valid = br#"{"job":"echo should-not-run","submitted_ms":1,"retries":0,"token":"x"}"#;
    zk.create(&layout.task("not-a-task"), valid)
        .expect("creating a misnamed task");

    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn_worker("w1", 2);
    assert_failed_malformed(&ns, "task-9000000001");

    let mut statuses = Vec::new();
    let both = wait_until(secs(20), || {
        statuses = ns.children(&zk, &layout.status());
        statuses.len() == 2
    });
    assert!(both, "both bad tasks should get a result: {statuses:?}");
    let (data, _) = zk
        .get(&layout.status_task("not-a-task"))
        .expect("reading the misnamed task's result")
        .expect("the misnamed task has a result");
    let result: Value = serde_json::from_slice(&data).expect("a JSON result");
    assert_eq!(result["state"], "failed", "{result}");
    assert_eq!(result["reason"], "malformed task", "{result}");
    assert_eq!(
        result["stdout"], "",
        "the misnamed task did not run: {result}"
    );

    let out = ns.submit_wait(&["echo still works"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "still works\n");
}

/// Names a task carries become znode names (its lock, its key, and with a
/// lock its token): a task whose token ZooKeeper would refuse as a name
/// fails as malformed, pending or handed straight to a worker, instead of
/// running and then failing to store its result for good.
#[test]
fn a_task_whose_names_zookeeper_would_refuse_fails_as_malformed() {
    let ns = Namespace::new("malformed-names");
    let _cluster = ns.spawn_cluster(&["w1"], 2);
    let zk = ns.connect();
    let layout = ns.layout();
    let bad = br#"{"job":"true","submitted_ms":1,"retries":0,"token":"a/b/","lock":"nightly"}"#;
    zk.create(&layout.task("task-9000000001"), bad)
        .expect("creating a task with a bad token");
    zk.create(&layout.assignment("w1", "task-9000000002"), bad)
        .expect("creating an assignment with a bad token");
    assert_failed_malformed(&ns, "task-9000000001");
    assert_failed_malformed(&ns, "task-9000000002");
}
