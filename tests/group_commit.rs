//! Group commit, forced to fail part-way: steps that are ready at once share
//! a transaction, and when one of them cannot go through (its task already
//! has a result, another run holds its claim or its lock, another writer
//! moved its version, a cancel took it), the others of the transaction are
//! neither lost nor held up behind it; a batch larger than the size bound is
//! split and every task of it still runs exactly once.

mod common;

use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::proxy::Proxy;
use common::{Background, Namespace, describe, secs, stdout, wait_until};
use zkmw::layout::Layout;
use zkmw::model::{self, FailReason, Task, TaskResult};
use zkmw::zk::{Op, Zk};

/// A task record as a master hands it to a worker (its token is named
/// after the task, as a valid znode name).
fn record(task: &str, job: &str, lock: Option<&str>) -> Vec<u8> {
    model::encode(&Task {
        job: job.into(),
        token: format!("token-{task}"),
        lock: lock.map(String::from),
        ..Task::default()
    })
}

/// Whether the task has its result.
fn has_result(zk: &Zk, layout: &Layout, task: &str) -> bool {
    zk.exists(&layout.status_task(task))
        .expect("reading a result")
        .is_some()
}

/// The ids a successful `submit --stdin` printed: `n` of them, in input
/// order (task ids rise with each create).
fn ids_in_input_order(out: &Output, n: usize) -> Vec<String> {
    assert!(out.status.success(), "{}", describe(out));
    let ids: Vec<String> = stdout(out).lines().map(String::from).collect();
    assert_eq!(ids.len(), n, "{}", describe(out));
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ids are printed in input order");
    ids
}

/// The worker lists eight assignments at once and claims them in one
/// group: one already has its result, another run holds the claim of a
/// second, a third's lock is held. Those three fail inside the group; the
/// five others run at once, each exactly once, without waiting for them.
/// Once the claim and the lock are let go, their two tasks run too (at
/// the worker's next look, a tick later); the finished one never runs.
#[test]
fn claims_that_fail_inside_a_group_hold_up_none_of_the_others() {
    let ns = Namespace::new("group-claims");
    let layout = ns.layout();
    let ledger = ns.ledger();
    // A long tick: a step that had to wait for the worker's next look
    // would show as a delay of seconds.
    let _worker = ns.spawn(
        "w1",
        &["worker", "--id", "w1", "--threads", "8", "--tick", "15s"],
    );
    ns.wait_for_workers(&["w1"], secs(15));
    let zk = ns.connect();
    let names: Vec<String> = (1..=8).map(|n| format!("task-90000000{n:02}")).collect();
    let (finished, held, locked) = (&names[0], &names[1], &names[2]);

    // The obstacles first, then the eight assignments in one transaction,
    // so that the worker lists them together.
    let old = TaskResult::failed(None, FailReason::Cancelled, None, 1);
    let mut ops = vec![
        Op::Create {
            path: layout.status_task(finished),
            data: model::encode(&old),
        },
        Op::CreateEphemeral {
            path: layout.running_task(held),
            data: Vec::new(),
        },
        Op::CreateEphemeral {
            path: layout.lock("nightly"),
            data: Vec::new(),
        },
    ];
    zk.ensure(&layout.locks()).expect("the locks folder");
    zk.multi(&ops).expect("the obstacles");
    ops = names
        .iter()
        .map(|task| Op::Create {
            path: layout.assignment("w1", task),
            data: record(
                task,
                &ledger.record(),
                (task == locked).then_some("nightly"),
            ),
        })
        .collect();
    zk.multi(&ops)
        .expect("eight assignments in one transaction");

    let free: Vec<String> = names[3..].to_vec();
    let ran = wait_until(secs(5), || free.iter().all(|t| has_result(&zk, &layout, t)));
    assert!(
        ran,
        "the five free tasks did not all finish at once: {:?}",
        ledger.counts()
    );
    let counts = ledger.counts();
    for task in [finished, held, locked] {
        assert!(
            !counts.contains_key(task),
            "{task} ran while it could not: {counts:?}"
        );
    }

    // Let go of the claim and the lock: their tasks run, once each.
    zk.multi(&[
        Op::Delete {
            path: layout.running_task(held),
            version: None,
        },
        Op::Delete {
            path: layout.lock("nightly"),
            version: None,
        },
    ])
    .expect("letting go");
    let ran = wait_until(secs(40), || {
        [held, locked].iter().all(|t| has_result(&zk, &layout, t))
    });
    assert!(
        ran,
        "the held and the locked task did not finish: {:?}",
        ledger.counts()
    );
    ledger.assert_each_exactly_once(&names[1..]);
    let t = ns.task_json(finished);
    assert_eq!(t["reason"], "cancelled", "the earlier result stays: {t}");
    let gone = wait_until(secs(10), || {
        zk.exists(&layout.assignment("w1", finished))
            .expect("reading an assignment")
            .is_none()
    });
    assert!(gone, "the finished task's stray assignment was not removed");
}

/// Jobs of about 100 KB each, printing 100 KB each: eight of them make
/// batches several times the size bound at every step (the submit's
/// creates, the master's assignments, the worker's claims and results).
/// Each batch is split; every task runs exactly once, keeps its whole
/// output, and the ids come back in input order.
#[test]
fn batches_past_the_size_bound_are_split_and_every_task_runs_once() {
    let ns = Namespace::new("group-size");
    let ledger = ns.ledger();
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn(
        "w1",
        &[
            "worker",
            "--id",
            "w1",
            "--threads",
            "8",
            "--output-cap",
            "200000",
        ],
    );
    ns.wait_for_workers(&["w1"], secs(15));
    let pad = "x".repeat(100_000);
    let lines: Vec<String> = (0..8)
        .map(|n| {
            format!(
                ": {n} {pad}; {}; head -c 100000 /dev/zero | tr '\\0' {}",
                ledger.record(),
                (b'a' + n) as char
            )
        })
        .collect();
    let out = ns.run_with_stdin(&["submit", "--stdin"], (lines.join("\n") + "\n").as_bytes());
    let ids = ids_in_input_order(&out, 8);

    ns.wait_finished(8, secs(30));
    ledger.assert_each_exactly_once(&ids);
    for (n, id) in ids.iter().enumerate() {
        let t = ns.task_json(id);
        assert_eq!(t["state"], "done", "{t}");
        assert!(
            t["job"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!(": {n} ")),
            "{id}: job of line {n}"
        );
        let out = t["stdout"].as_str().unwrap_or("");
        let letter = ((b'a' + n as u8) as char).to_string();
        assert_eq!(out.len(), 100_000, "{id}: whole output");
        assert_eq!(
            out.matches(letter.as_str()).count(),
            100_000,
            "{id}: its own output"
        );
    }
}

/// `submit --stdin` of 1,000 jobs, whose second batch's transaction takes
/// effect but loses its reply (through a proxy): the submit finds out by
/// its tokens that the whole batch was stored and stores nothing twice.
/// Each job is stored exactly once and the ids come in input order.
#[test]
fn a_batch_whose_reply_is_lost_is_stored_once() {
    let ns = Namespace::new("group-lost-reply");
    let layout = ns.layout();
    let zk = ns.connect();
    let proxy = Proxy::start(ns.hosts());
    // Line 700 is in the second batch (512 lines each, one transaction).
    proxy.mute_replies_on(b"line-0700");
    let input: String = (0..1000).map(|n| format!("echo line-{n:04}\n")).collect();
    let path = common::scratch_dir("lost-reply").join("stdin");
    std::fs::write(&path, &input).expect("writing the input");
    let stdin = std::fs::File::open(&path).expect("opening the input");
    // Waits for the second batch to go through the proxy.
    let submit = ns.submit_until_triggered(&proxy, &["--stdin"], stdin.into());
    // The muted transaction took effect: 1,000 tasks are there.
    let stored = wait_until(secs(10), || ns.children(&zk, &layout.tasks()).len() == 1000);
    assert!(stored, "the second batch was not applied");
    proxy.cut();
    proxy.pass();
    let out = submit.wait_with_output().expect("the submit's end");
    let ids = ids_in_input_order(&out, 1000);
    let tasks = ns.children(&zk, &layout.tasks());
    assert_eq!(tasks.len(), 1000, "no task stored twice");
    for (n, id) in ids.iter().enumerate().step_by(97) {
        let (data, _) = zk
            .get(&layout.task(id))
            .expect("reading a task")
            .expect("the task is there");
        let task: Task = model::decode(&data).expect("a task record");
        assert_eq!(task.job, format!("echo line-{n:04}"), "{id}");
    }
}

/// Another writer keeps moving the versions of pending tasks (an operator's
/// script rewriting them as they were), and cancels take a tenth of the
/// tasks, while the master assigns in groups and the workers claim and
/// store in groups: steps fail inside the groups all the time. Every task
/// still ends exactly once: the cancelled ones cancelled (or done, if
/// their run finished first), all the others done after one run.
#[test]
fn versions_moved_and_cancels_under_the_groups_lose_and_repeat_nothing() {
    let ns = Namespace::new("group-meddled");
    let layout = ns.layout();
    let ledger = ns.ledger();
    let (_master, _workers) = ns.spawn_cluster(&["w1", "w2"], 4);
    ns.wait_for_workers(&["w1", "w2"], secs(15));
    let jobs = format!("{}\n", ledger.job("sleep 0.02")).repeat(300);

    let moved = Arc::new(AtomicUsize::new(0));
    let meddler = {
        let (zk, layout) = (ns.connect(), layout.clone());
        let moved = Arc::clone(&moved);
        Background::spawn(move |stop| {
            while !stop.load(Ordering::SeqCst) {
                move_versions(&zk, &layout, &moved);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let out = ns.run_with_stdin(
        &["submit", "--stdin", "--max-pending", "1000"],
        jobs.as_bytes(),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let ids: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(ids.len(), 300);
    let cancelled: Vec<&str> = ids.iter().step_by(10).map(String::as_str).collect();
    let mut args = vec!["cancel"];
    args.extend(&cancelled);
    let out = ns.run(&args);
    meddler.stop().expect("the meddler");
    // Some cancels may come after their task finished: those are errors
    // of `cancel`, and the task stays done.
    assert!(
        matches!(out.status.code(), Some(0) | Some(125)),
        "{}",
        describe(&out)
    );

    ns.wait_finished(300, secs(60));
    let counts = ledger.counts();
    for id in &ids {
        let t = ns.task_json(id);
        let runs = counts.get(id).copied().unwrap_or(0);
        if cancelled.contains(&id.as_str()) {
            assert!(runs <= 1, "{id} ran {runs} times: {t}");
            let ok = t["reason"] == "cancelled" || (t["state"] == "done" && runs == 1);
            assert!(ok, "{id}: cancelled, or done after its one run: {t}");
        } else {
            assert_eq!(runs, 1, "{id} ran {runs} times: {t}");
            assert_eq!(t["state"], "done", "{t}");
        }
    }
    assert!(
        moved.load(Ordering::SeqCst) > 0,
        "the meddler moved no version"
    );
}

/// Rewrites each pending task as it is (its version moves, its data stays).
fn move_versions(zk: &Zk, layout: &Layout, moved: &AtomicUsize) {
    let Ok(pending) = zk.children(&layout.tasks()) else {
        return;
    };
    for task in pending.iter().step_by(3) {
        let Ok(Some((data, _))) = zk.get(&layout.task(task)) else {
            continue;
        };
        let rewrite = Op::SetData {
            path: layout.task(task),
            data,
            version: None,
        };
        if zk.multi(&[rewrite]).is_ok() {
            moved.fetch_add(1, Ordering::SeqCst);
        }
    }
}
