//! `zkmw status --json` and `zkmw status TASK --json` show what the test
//! made happen: who is master, which workers with how many threads, how many
//! tasks are where, and each task's state and result.

mod common;

use common::{Namespace, secs, stdout, wait_until};
use serde_json::Value;

fn worker<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or_else(|| panic!("worker {id} not in status: {status}"))
}

#[test]
fn cluster_and_task_views_match_what_runs() {
    let ns = Namespace::new("status-json");
    let master = ns.spawn_master("m-status");
    let w1 = ns.spawn_worker("w1", 3);
    let w2 = ns.spawn_worker("w2", 2);
    ns.wait_for_master("m-status", secs(15));
    ns.wait_for_workers(&["w1", "w2"], secs(15));

    let s = ns.status_json();
    assert_eq!(s["root"], ns.root.as_str(), "{s}");
    assert_eq!(s["master"]["id"], "m-status", "{s}");
    assert_eq!(s["master"]["pid"], master.pid(), "{s}");
    assert!(s["master"]["epoch"].as_i64() >= Some(1), "{s}");
    assert_eq!(worker(&s, "w1")["threads"], 3, "{s}");
    assert_eq!(worker(&s, "w1")["pid"], w1.pid(), "{s}");
    assert_eq!(worker(&s, "w2")["threads"], 2, "{s}");
    assert_eq!(worker(&s, "w2")["pid"], w2.pid(), "{s}");

    // Two quick jobs first, and wait for them: then both workers are idle, so
    // the three blocking jobs are spread at most two per worker (the master
    // gives each new task to the least loaded worker), which both can run.
    let quick_ok = ns.submit("echo quick-1");
    let quick_fail = ns.submit("echo quick-2 >&2; exit 4");
    ns.wait_finished(2, secs(20));
    let sleepers: Vec<String> = (0..3).map(|_| ns.submit("sleep 30")).collect();

    let mut s = Value::Null;
    let all_running = wait_until(secs(20), || {
        s = ns.status_json();
        s["tasks"]["running"] == 3
    });
    assert!(all_running, "the 3 blocking jobs never all ran: {s}");
    let tasks = &s["tasks"];
    assert_eq!(tasks["finished"], 2, "{s}");
    assert_eq!(tasks["pending"], 0, "{s}");
    assert_eq!(tasks["assigned"], 0, "{s}");
    let on_w1 = worker(&s, "w1")["running"].as_u64().unwrap_or(99);
    let on_w2 = worker(&s, "w2")["running"].as_u64().unwrap_or(99);
    assert_eq!(on_w1 + on_w2, 3, "per-worker running counts add up: {s}");
    assert!(
        on_w1 <= 3 && on_w2 <= 2,
        "no worker runs more than its threads: {s}"
    );

    for id in &sleepers {
        let t = ns.task_json(id);
        assert_eq!(t["task"], id.as_str(), "{t}");
        assert_eq!(t["state"], "running", "{t}");
        assert_eq!(t["job"], "sleep 30", "{t}");
        assert_eq!(t["attempts"], 1, "{t}");
        assert!(t["started_ms"].as_u64().is_some(), "{t}");
        let w = t["worker"].as_str().unwrap_or_default();
        assert!(
            worker(&s, w)["running"].as_u64() >= Some(1),
            "{id} runs on {w}, which status shows running something: {t} / {s}"
        );
    }

    let t = ns.task_json(&quick_ok);
    assert_eq!(t["state"], "done", "{t}");
    assert_eq!(t["exit_code"], 0, "{t}");
    assert_eq!(t["stdout"], "quick-1\n", "{t}");
    assert_eq!(t["stderr"], "", "{t}");
    assert_eq!(t["job"], "echo quick-1", "{t}");
    let t = ns.task_json(&quick_fail);
    assert_eq!(
        t["state"], "done",
        "a job that exits non-zero is still done: {t}"
    );
    assert_eq!(t["exit_code"], 4, "{t}");
    assert_eq!(t["stdout"], "", "{t}");
    assert_eq!(t["stderr"], "quick-2\n", "{t}");

    // The view for people says the same.
    let text = stdout(&ns.run(&["status"]));
    assert!(text.contains("m-status"), "{text}");
    assert!(
        text.contains("running 3") && text.contains("finished 2"),
        "{text}"
    );
}

#[test]
fn without_a_master_tasks_stay_pending_until_one_starts() {
    let ns = Namespace::new("status-no-master");
    let _worker = ns.spawn_worker("w1", 2);
    ns.wait_for_workers(&["w1"], secs(15));
    let id = ns.submit("echo late");

    let s = ns.status_json();
    assert_eq!(s["master"], Value::Null, "no master runs: {s}");
    assert_eq!(s["tasks"]["pending"], 1, "{s}");
    assert_eq!(s["tasks"]["finished"], 0, "{s}");
    let t = ns.task_json(&id);
    assert_eq!(t["state"], "pending", "{t}");
    assert_eq!(t["job"], "echo late", "{t}");
    assert_eq!(t["attempts"], 0, "{t}");
    assert_eq!(t["worker"], Value::Null, "{t}");

    // The task waited, it was not lost: a master that starts later runs it.
    let _master = ns.spawn_master("m-late");
    ns.wait_finished(1, secs(20));
    let t = ns.task_json(&id);
    assert_eq!(t["state"], "done", "{t}");
    assert_eq!(t["stdout"], "late\n", "{t}");
}

/// `status` adds up: while tasks flow, pending + assigned + running +
/// finished never exceeds the tasks submitted. (It may fall short for a
/// moment: a task moving between two of the reads is seen in neither.)
#[test]
fn cluster_counts_never_exceed_the_tasks_submitted() {
    const TASKS: u64 = 300;
    let ns = Namespace::new("status-adds-up");
    let _cluster = ns.spawn_cluster(&["w1", "w2", "w3"], 4);
    let jobs = "true\n".repeat(TASKS as usize);
    let out = ns.run_with_stdin(&["submit", "--stdin"], jobs.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    assert_eq!(stdout(&out).lines().count() as u64, TASKS);

    let mut seen = Vec::new();
    let mut last = Value::Null;
    let done = wait_until(secs(40), || {
        last = ns.status_json();
        let t = &last["tasks"];
        let sum: u64 = ["pending", "assigned", "running", "finished"]
            .iter()
            .map(|k| t[k].as_u64().unwrap_or(0))
            .sum();
        if sum > TASKS {
            seen.push(t.clone());
        }
        t["finished"] == TASKS
    });
    assert!(done, "the tasks never all finished: {last}");
    assert!(
        seen.is_empty(),
        "status counted more than the {TASKS} tasks submitted, {} times, e.g. {}",
        seen.len(),
        seen[0]
    );
}
