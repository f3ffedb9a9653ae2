//! `--log-format json`: every line a master and a worker write is one JSON
//! object with its time, level, role and id, and a line about a task
//! carries the task's id (so one grep tells a task's story across hosts),
//! a worker's lines its id, an active master's lines its epoch.

mod common;

use common::{Namespace, Proc, secs, wait_until};
use serde_json::Value;

/// Every line of `role`'s log, parsed; each must be a JSON object with
/// the fields every line has.
fn json_lines(role: &Proc) -> Vec<Value> {
    role.log()
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", role.name));
            for field in ["time", "level", "role", "id", "message"] {
                assert!(
                    value[field].is_string(),
                    "{}: no {field}: {line}",
                    role.name
                );
            }
            assert_eq!(value["id"], role.name.as_str(), "{line}");
            value
        })
        .collect()
}

/// The lines of `role` about `task` whose message contains `words`.
fn about(role: &Proc, task: &str, words: &str) -> Vec<Value> {
    json_lines(role)
        .into_iter()
        .filter(|l| l["task"] == task && l["message"].as_str().is_some_and(|m| m.contains(words)))
        .collect()
}

#[test]
fn json_logs_parse_line_by_line_and_carry_the_task() {
    let ns = Namespace::new("json-logs");
    let json = ["--log-format", "json"];
    let master = ns.spawn("m1", &[&json[..], &["master", "--id", "m1"]].concat());
    let worker_args = ["worker", "--id", "w1", "--drain-timeout", "0"];
    let mut worker = ns.spawn("w1", &[&json[..], &worker_args].concat());
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));

    let failing = ns.submit("exit 3");
    assert!(
        wait_until(secs(15), || !about(&worker, &failing, "exit 3").is_empty()),
        "no worker line about {failing} ending with exit 3:\n{}",
        worker.log()
    );
    // A task someone garbled: the master fails it, saying so.
    let garbled = "task-9000000001";
    let zk = ns.connect();
    zk.create(&ns.layout().task(garbled), b"{not json")
        .expect("creating a garbled task");
    assert!(
        wait_until(secs(15), || !about(&master, garbled, "failed").is_empty()),
        "no master line about failing {garbled}:\n{}",
        master.log()
    );
    let failed = &about(&master, garbled, "failed")[0];
    assert_eq!(failed["role"], "master");
    assert_eq!(failed["level"], "warn", "{failed}");
    assert!(failed["epoch"].as_i64().is_some_and(|e| e >= 1), "{failed}");
    // A stopping worker hands its running job back, saying so.
    let stopped = ns.submit("sleep 60");
    ns.wait_task_state(&stopped, "running", secs(15));
    worker.term();
    assert!(worker.wait_exit(secs(15)).is_some(), "the worker stopped");
    let handed = about(&worker, &stopped, "handed back");
    assert_eq!(handed.len(), 1, "{}", worker.log());
    assert_eq!(handed[0]["worker"], "w1");
    assert_eq!(handed[0]["role"], "worker");
}
