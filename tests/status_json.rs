//! `zkmw status --json` and `zkmw status TASK --json` show what the test
//! made happen: who is master, which workers with how many threads, how many
//! tasks are where, and each task's state and result.

mod common;

use common::{Namespace, secs, stdout, wait_until};
use serde_json::Value;
use zkmw::zk::Op;

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

/// The ids listed under `standbys`.
fn standby_ids(status: &Value) -> Vec<String> {
    status["standbys"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A standby master is listed as one, and shown as the master once the
/// active one is stopped.
#[test]
fn a_standby_master_is_listed_and_becomes_master() {
    let ns = Namespace::new("status-standby");
    let mut first = ns.spawn_master("m-first");
    ns.wait_for_master("m-first", secs(15));
    let second = ns.spawn_master("m-second");
    let mut s = Value::Null;
    let listed = wait_until(secs(15), || {
        s = ns.status_json();
        standby_ids(&s) == ["m-second"]
    });
    assert!(listed, "m-second never listed as the one standby: {s}");
    assert_eq!(s["master"]["id"], "m-first", "{s}");
    assert_eq!(s["standbys"][0]["pid"], second.pid(), "{s}");
    let text = stdout(&ns.run(&["status"]));
    assert!(
        text.contains("standby") && text.contains("m-second"),
        "{text}"
    );

    first.term();
    assert!(first.wait_exit(secs(15)).is_some(), "m-first did not stop");
    let s = ns.wait_for_master("m-second", secs(15));
    assert_eq!(standby_ids(&s), Vec::<String>::new(), "{s}");
    assert_eq!(s["master"]["pid"], second.pid(), "{s}");
}

/// A worker draining after SIGTERM is still shown, `draining`, with the
/// job it still runs: the per-worker running counts add up to
/// `tasks.running`.
#[test]
fn a_draining_worker_is_shown_with_its_running_jobs() {
    let ns = Namespace::new("status-draining");
    let _master = ns.spawn_master("m1");
    let wa = ns.spawn(
        "wa",
        &[
            "worker",
            "--id",
            "wa",
            "--threads",
            "2",
            "--drain-timeout",
            "5m",
        ],
    );
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["wa"], secs(15));
    // Two long jobs on wa, then one on wb (the least loaded).
    ns.submit("sleep 60");
    ns.submit("sleep 60");
    let mut s = Value::Null;
    let loaded = wait_until(secs(15), || {
        s = ns.status_json();
        worker(&s, "wa")["running"] == 2
    });
    assert!(loaded, "wa never ran its 2 jobs: {s}");
    let _wb = ns.spawn_worker("wb", 1);
    ns.wait_for_workers(&["wa", "wb"], secs(15));
    ns.submit("sleep 60");
    let all_running = wait_until(secs(15), || {
        s = ns.status_json();
        s["tasks"]["running"] == 3 && worker(&s, "wb")["running"] == 1
    });
    assert!(all_running, "the 3 jobs never all ran: {s}");
    assert_eq!(worker(&s, "wa")["state"], "live", "{s}");

    let before_ms = common::now_ms();
    wa.term();
    let shown = wait_until(secs(15), || {
        s = ns.status_json();
        s["workers"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["id"] == "wa"))
            .is_some_and(|w| w["state"] == "draining")
    });
    assert!(shown, "wa was never shown draining: {s}");
    let wa_view = worker(&s, "wa");
    assert_eq!(wa_view["running"], 2, "wa still runs its jobs: {s}");
    assert!(
        wa_view["pid"].as_u64().is_some() && wa_view["threads"].as_u64().is_some(),
        "what it is: {s}"
    );
    let since = wa_view["since_ms"].as_u64().unwrap_or(0);
    assert!(
        since >= before_ms.saturating_sub(1000) && since <= common::now_ms() + 1000,
        "since_ms is when it began draining: {s}"
    );
    let sum: u64 = s["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["running"].as_u64()).sum())
        .unwrap_or(0);
    assert_eq!(
        Some(sum),
        s["tasks"]["running"].as_u64(),
        "per-worker running counts add up to tasks.running: {s}"
    );
    assert_eq!(sum, 3, "{s}");
    let text = stdout(&ns.run(&["status"]));
    let line = text.lines().find(|l| l.contains("wa")).unwrap_or_default();
    assert!(
        line.contains("draining") && line.contains("running 2"),
        "{text}"
    );
}

/// True when `text` holds a run of 12 or more digits: a raw unix time in
/// milliseconds.
fn has_raw_ms(text: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() >= 12)
}

/// `status TASK` shows times as dates with how long ago, and durations;
/// neither view shows the internal token.
#[test]
fn task_views_show_readable_times_and_no_token() {
    let ns = Namespace::new("status-task-times");
    let _cluster = ns.spawn_cluster(&["w1"], 2);
    let done = ns.submit("echo hi");
    let running = ns.submit("sleep 60");
    ns.wait_task_state(&done, "done", secs(20));
    ns.wait_task_state(&running, "running", secs(20));

    for id in [&done, &running] {
        let t = ns.task_json(id);
        assert!(t.get("token").is_none(), "JSON shows the token: {t}");
        assert!(t["submitted_ms"].as_u64().is_some(), "{t}");
        assert!(t["started_ms"].as_u64().is_some(), "{t}");
        let out = ns.run(&["status", id]);
        assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
        let text = stdout(&out);
        assert!(!text.contains("token"), "{text}");
        assert!(!has_raw_ms(&text), "raw unix ms in:\n{text}");
        let submitted = text
            .lines()
            .find(|l| l.starts_with("submitted"))
            .unwrap_or_default();
        assert!(
            submitted.contains(" UTC (") && submitted.ends_with(" ago)"),
            "{text}"
        );
    }
    let text = stdout(&ns.run(&["status", &done]));
    assert!(text.lines().any(|l| l.starts_with("finished")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("took")), "{text}");
    let text = stdout(&ns.run(&["status", &running]));
    assert!(text.lines().any(|l| l.starts_with("running for")), "{text}");
}

/// A task whose result was purged and one that was never submitted get
/// different messages (both exit 125 with one `zkmw:` line).
#[test]
fn a_purged_task_and_one_never_submitted_say_which() {
    let ns = Namespace::new("status-purged");
    let _cluster = ns.spawn_cluster(&["w1"], 1);
    let id = ns.submit("echo gone");
    ns.wait_finished(1, secs(20));
    let out = ns.run(&["purge", "--keep", "0"]);
    assert_eq!(stdout(&out).trim(), "1", "{}", common::describe(&out));

    let seq = zkmw::layout::task_sequence(&id).expect("a task id");
    let after = format!("task-{:010}", seq + 1);
    let cases = [
        (id.as_str(), "purged"),
        ("task-9999999999", "no task with that id was ever submitted"),
        (after.as_str(), "no task with that id was ever submitted"),
    ];
    for (task, says) in cases {
        for json in [false, true] {
            let mut args = vec!["status", task];
            if json {
                args.push("--json");
            }
            let out = ns.run(&args);
            let err = common::stderr(&out);
            assert_eq!(out.status.code(), Some(125), "{}", common::describe(&out));
            assert_eq!(stdout(&out), "", "{}", common::describe(&out));
            assert!(
                err.starts_with(&format!("zkmw: no task '{task}': ")) && err.lines().count() == 1,
                "{err}"
            );
            assert!(err.contains(says), "{task}: expected {says:?} in {err}");
        }
    }
    let purged = common::stderr(&ns.run(&["status", &id]));
    assert!(
        purged.contains("--result-ttl") && purged.contains("--keep-results"),
        "says how results are kept: {purged}"
    );
}

/// Garbled records under /masters and /away, and in /status's own data,
/// never break status: it shows what it can.
#[test]
fn garbled_records_are_shown_as_far_as_they_can_be() {
    let ns = Namespace::new("status-garbled");
    let _master = ns.spawn_master("m1");
    ns.wait_for_master("m1", secs(15));
    let zk = ns.connect();
    let layout = ns.layout();
    zk.multi(&[
        Op::Create {
            path: layout.master_candidate("0xdead"),
            data: b"{not json".to_vec(),
        },
        Op::Create {
            path: layout.away_worker("wx"),
            data: b"\xff".to_vec(),
        },
        Op::SetData {
            path: layout.status(),
            data: b"garbage".to_vec(),
            version: None,
        },
    ])
    .expect("writing the garbled records");

    let s = ns.status_json();
    assert_eq!(s["master"]["id"], "m1", "{s}");
    assert_eq!(standby_ids(&s), Vec::<String>::new(), "{s}");
    assert_eq!(s["standbys"][0]["session"], "0xdead", "{s}");
    assert_eq!(worker(&s, "wx")["state"], "away", "{s}");
    let out = ns.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::describe(&out));
    let out = ns.run(&["status", "task-0000000005"]);
    assert!(
        common::stderr(&out).contains("was ever submitted"),
        "a garbled purge mark is ignored: {}",
        common::describe(&out)
    );
}
