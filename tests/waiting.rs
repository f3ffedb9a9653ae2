//! Once `submit` has stored a task, its submitter never loses it: a wait
//! that ends without the result (the wait timeout, Ctrl-C, SIGTERM) names
//! the task in one line and says it goes on, `zkmw wait TASK` attaches to
//! it again, an outage longer than the connect timeout is waited out, and
//! a stdout that cannot be written is one line and exit 74, never a panic
//! or a silent 0.

mod common;

use std::fs::OpenOptions;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proxy::Proxy;
use common::{Namespace, Reaped, describe, secs, stderr, stdout, wait_until};

/// The one line a wait that ended without the result prints.
fn assert_names_the_task(err: &str, task: &str) {
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("zkmw: ") && err.contains(task) && err.contains("goes on"),
        "{err}"
    );
    assert!(err.contains(&format!("zkmw wait {task}")), "{err}");
}

/// The task id in a line like the one above.
fn task_in(err: &str) -> String {
    err.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .find(|w| zkmw::layout::is_task_name(w))
        .unwrap_or_else(|| panic!("no task id in {err:?}"))
        .to_string()
}

#[test]
fn wait_timeout_names_the_task_and_zkmw_wait_attaches_to_it_again() {
    let ns = Namespace::new("waiting-timeout");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 1);
    let out = ns.run(&[
        "submit",
        "--wait",
        "--wait-timeout",
        "500ms",
        "sleep 2; echo done; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(124), "{}", describe(&out));
    assert!(stdout(&out).is_empty(), "{}", describe(&out));
    let err = stderr(&out);
    let task = task_in(&err);
    assert_names_the_task(&err, &task);
    let out = ns.run(&["wait", &task]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "done\n");
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
}

/// Ctrl-C (SIGINT) and SIGTERM while waiting exit 130 and 143, naming the
/// task, which then finishes anyway.
#[test]
fn a_signal_while_waiting_exits_128_plus_it_naming_the_task() {
    let ns = Namespace::new("waiting-signal");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 2);
    for (signal, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let started = ns.dir.join(format!("started-{signal}"));
        let job = format!("touch '{}'; sleep 2; echo late", started.display());
        let mut cmd = ns.cmd();
        cmd.args(["submit", "--wait", &job])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = Reaped::spawn(&mut cmd).expect("submit --wait");
        assert!(
            wait_until(secs(15), || started.exists()),
            "the job never ran"
        );
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        let out = child.wait_with_output().expect("submit --wait ends");
        assert_eq!(out.status.code(), Some(code), "{}", describe(&out));
        let err = stderr(&out);
        let task = task_in(&err);
        assert_names_the_task(&err, &task);
        let done = ns.wait_task_state(&task, "done", secs(15));
        assert_eq!(done["stdout"], "late\n", "{done}");
    }
}

/// ZooKeeper unreachable for longer than the connect timeout and the
/// session: the wait reconnects with a new session and gets the result.
#[test]
fn an_outage_longer_than_the_connect_timeout_is_waited_out() {
    let ns = Namespace::new("waiting-outage");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 1);
    let proxy = Proxy::start(ns.hosts());
    let mut cmd = ns.cmd_via(&proxy.addr());
    cmd.args(["--connect-timeout", "1s", "submit", "--wait"])
        .args(["--wait-timeout", "40s", "sleep 6; echo after"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = Reaped::spawn(&mut cmd).expect("submit --wait");
    assert!(
        wait_until(secs(15), || ns.status_json()["tasks"]["running"] == 1),
        "the job never ran"
    );
    // Silent for longer than the session (3 s) and the connect timeout.
    proxy.blackhole();
    std::thread::sleep(Duration::from_secs(7));
    proxy.cut();
    proxy.pass();
    let out = child.wait_with_output().expect("submit --wait ends");
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "after\n", "{}", describe(&out));
}

#[test]
fn wait_for_a_task_that_is_not_there_is_refused() {
    let ns = Namespace::new("waiting-unknown");
    let out = ns.run(&["wait", "task-0000999999"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).starts_with("zkmw: no task"),
        "{}",
        describe(&out)
    );
    let out = ns.run(&["wait", "nonsense"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
}

/// `status`, `submit`, `submit --stdin` and `submit --wait` into a full
/// stdout: one `zkmw:` line, exit 74; the stored tasks are said to be.
#[test]
fn a_full_stdout_is_one_line_and_exit_74() {
    let ns = Namespace::new("waiting-full-stdout");
    let (_master, _workers) = ns.spawn_cluster(&["w1"], 2);
    let full = || {
        OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full")
    };
    let run_full = |args: &[&str], stdin: Stdio| {
        let mut cmd: Command = ns.cmd();
        cmd.args(args).stdin(stdin);
        let mut out = run_bounded_to(cmd, full());
        out.stdout.clear();
        out
    };
    for (args, stored) in [
        (&["status"][..], false),
        (&["submit", "echo hi"][..], true),
        (&["submit", "--wait", "echo hi"][..], true),
    ] {
        let out = run_full(args, Stdio::null());
        assert_eq!(out.status.code(), Some(74), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("zkmw: writing to stdout:"),
            "{args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert_eq!(err.contains("task-"), stored, "{args:?}: {err}");
    }
    let input = ns.dir.join("jobs");
    std::fs::write(&input, "echo a\necho b\n").unwrap();
    let out = run_full(
        &["submit", "--stdin"],
        std::fs::File::open(&input).unwrap().into(),
    );
    assert_eq!(out.status.code(), Some(74), "{}", describe(&out));
    assert!(
        stderr(&out).contains("2 tasks were stored"),
        "{}",
        describe(&out)
    );
}

/// Runs `cmd` with its stdout going to `stdout` (stderr captured), bounded.
fn run_bounded_to(mut cmd: Command, stdout: std::fs::File) -> std::process::Output {
    cmd.stdout(stdout).stderr(Stdio::piped());
    let child = Reaped::spawn(&mut cmd).expect("spawn");
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let done = wait_until(secs(20), || waiter.is_finished());
    if !done {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let out = waiter.join().expect("waiter").expect("wait");
    assert!(done, "still running after 20 s: {}", describe(&out));
    out
}
