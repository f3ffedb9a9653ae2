//! What a job leaves behind: huge output is cut at the cap and marked,
//! bytes that are not UTF-8 come back as U+FFFD, a job whose shell is
//! missing fails with the reason while the worker keeps serving, and no
//! job process is left as a zombie of the worker.

mod common;

use common::{Namespace, describe, secs, stderr, stdout, wait_until};

#[test]
fn huge_output_is_capped_and_marked() {
    let ns = Namespace::new("job-output-huge");
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn("w1", &["worker", "--id", "w1", "--output-cap", "1000"]);
    ns.wait_for_workers(&["w1"], secs(15));

    // 5 MB on stdout, a little on stderr.
    let out = ns.submit_wait(&["head -c 5000000 /dev/zero | tr '\\0' x; echo small >&2"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "x".repeat(1000),
        "stdout should be cut at the cap"
    );
    assert!(stderr(&out).starts_with("small\n"), "{}", describe(&out));
    assert!(
        stderr(&out).contains("cut at"),
        "the cut should be said: {}",
        describe(&out)
    );
    let zk = ns.connect();
    let task = ns
        .children(&zk, &ns.layout().status())
        .pop()
        .expect("one result");
    let t = ns.task_json(&task);
    assert_eq!(t["stdout_truncated"], true, "{t}");
    assert_eq!(t["stderr_truncated"], false, "{t}");
}

#[test]
fn output_that_is_not_utf8_comes_back_replaced() {
    let ns = Namespace::new("job-output-bytes");
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn_worker("w1", 1);
    ns.wait_for_workers(&["w1"], secs(15));
    let out = ns.submit_wait(&["printf 'a\\377b'"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a\u{FFFD}b");
}

#[test]
fn missing_shell_fails_the_task_and_the_worker_keeps_going() {
    let ns = Namespace::new("job-output-noshell");
    let _master = ns.spawn_master("m1");
    let mut broken = ns.spawn(
        "w1",
        &["worker", "--id", "w1", "--shell", "/nonexistent/sh"],
    );
    ns.wait_for_workers(&["w1"], secs(15));
    let out = ns.submit_wait(&["echo never"]);
    assert_eq!(out.status.code(), Some(126), "{}", describe(&out));
    assert!(
        stderr(&out).contains("could not start"),
        "{}",
        describe(&out)
    );
    assert!(broken.is_running(), "the worker should keep serving");
    let out = ns.submit_wait(&["echo again"]);
    assert_eq!(
        out.status.code(),
        Some(126),
        "a second task is served too: {}",
        describe(&out)
    );
}

#[test]
fn finished_jobs_leave_no_zombie() {
    let ns = Namespace::new("job-output-zombies");
    let _master = ns.spawn_master("m1");
    let worker = ns.spawn_worker("w1", 4);
    ns.wait_for_workers(&["w1"], secs(15));
    for i in 0..10 {
        let out = ns.submit_wait(&[&format!("echo {i} & true")]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    // Children of every thread of the worker (jobs start on pool threads).
    let zombies = || {
        let threads = std::fs::read_dir(format!("/proc/{}/task", worker.pid()));
        let children: Vec<String> = threads
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|t| {
                let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                list.split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        children
            .iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    stat.rsplit(')')
                        .next()
                        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                })
            })
            .count()
    };
    assert!(
        wait_until(secs(5), || zombies() == 0),
        "the worker has {} zombie children",
        zombies()
    );
}
