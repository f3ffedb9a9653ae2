//! `zkmw submit --wait` end to end, through one master and one worker: the
//! job's stdout, stderr and exit status come back as if it ran locally.

mod common;

use common::{Namespace, Proc, describe, secs, stderr, stdout};

/// One master and one worker, both registered.
fn cluster(name: &str) -> (Namespace, Proc, Proc) {
    let ns = Namespace::new(name);
    let master = ns.spawn_master("m1");
    let worker = ns.spawn_worker("w1", 2);
    ns.wait_for_master("m1", secs(15));
    ns.wait_for_workers(&["w1"], secs(15));
    (ns, master, worker)
}

#[test]
fn wait_passes_through_stdout_stderr_and_exit_code() {
    let (ns, _master, _worker) = cluster("round-trip-3");
    let out = ns.submit_wait(&["echo out; echo err >&2; exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "submit --wait should exit with the job's code 3: {}",
        describe(&out)
    );
    assert_eq!(stdout(&out), "out\n", "the job's stdout, exactly");
    assert!(
        stderr(&out).contains("err"),
        "the job's stderr should be passed through: {}",
        describe(&out)
    );
}

#[test]
fn wait_exits_zero_for_a_job_that_succeeds() {
    let (ns, _master, _worker) = cluster("round-trip-0");
    let out = ns.submit_wait(&["echo hello from $ZKMW_TASK_ID attempt $ZKMW_ATTEMPT"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("hello from task-") && text.ends_with(" attempt 1\n"),
        "the job should see its task id and attempt 1 in its environment, got {text:?}"
    );
    assert_eq!(stderr(&out), "", "nothing on stderr for a quiet job");
}

#[test]
fn wait_exits_128_plus_signal_for_a_killed_job() {
    let (ns, _master, _worker) = cluster("round-trip-signal");
    let out = ns.submit_wait(&["echo before; kill -9 $$; echo after"]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "a job killed by SIGKILL should give 128+9: {}",
        describe(&out)
    );
    assert_eq!(stdout(&out), "before\n", "output up to the kill is kept");
}

#[test]
fn submit_without_wait_prints_the_id_and_status_shows_the_result() {
    let (ns, _master, _worker) = cluster("round-trip-nowait");
    let id = ns.submit("printf 'a\\nb\\n'; exit 7");
    let mut last = serde_json::Value::Null;
    let done = common::wait_until(secs(20), || {
        last = ns.task_json(&id);
        last["state"] == "done"
    });
    assert!(done, "{id} never showed state done; last: {last}");
    assert_eq!(last["task"], id.as_str());
    assert_eq!(last["exit_code"], 7, "{last}");
    assert_eq!(last["stdout"], "a\nb\n", "{last}");
    assert_eq!(last["worker"], "w1", "{last}");
    assert_eq!(last["attempts"], 1, "{last}");
}
