//! Bad input is refused with exit code 125 and a message that names the
//! problem, and leaves nothing behind in ZooKeeper.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Namespace, describe, run_bounded, secs, stderr, stdout};

/// Exit code 125, no panic, and one line of stderr that holds every needle.
fn assert_refused(out: &Output, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(125),
        "expected exit code 125: {}",
        describe(out)
    );
    let err = stderr(out);
    assert!(!err.contains("panicked"), "zkmw panicked: {err}");
    assert!(
        err.lines()
            .any(|line| needles.iter().all(|n| line.contains(n))),
        "stderr should say, on one line, {needles:?}: {}",
        describe(out)
    );
}

/// Nothing was stored under the namespace's /tasks (or it does not exist).
fn assert_no_tasks(ns: &Namespace) {
    let zk = ns.connect();
    let tasks = ns.children(&zk, &ns.layout().tasks());
    assert!(tasks.is_empty(), "tasks were stored: {tasks:?}");
}

/// No worker registered in the namespace.
fn assert_no_workers(ns: &Namespace) {
    let zk = ns.connect();
    let workers = ns.children(&zk, &ns.layout().workers());
    assert!(workers.is_empty(), "workers registered: {workers:?}");
}

/// The longest single argument Linux passes to a program (MAX_ARG_STRLEN,
/// 32 pages, counting the terminating NUL).
fn max_arg_len() -> usize {
    // SAFETY: sysconf only reads a system setting.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096) * 32 - 1
}

/// The longest job zkmw accepts (README): what one argument of `sh -c JOB`
/// can hold on Linux, 131072 bytes with its terminating NUL.
const MAX_JOB_LEN: usize = 131_071;

/// A command that must be refused before any connection: run it, check it
/// took less than [`AT_ONCE`].
fn run_at_once(cmd: std::process::Command) -> Output {
    let started = Instant::now();
    let out = run_bounded(cmd, Duration::from_secs(15));
    let took = started.elapsed();
    assert!(took < AT_ONCE, "refused after {took:?}: {}", describe(&out));
    out
}

/// How long a refusal that needs no ZooKeeper may take, on a loaded machine.
const AT_ONCE: Duration = Duration::from_secs(5);

/// Exactly one line on stderr, starting with `zkmw: `.
fn assert_one_line(out: &Output) {
    let err = stderr(out);
    assert!(
        err.lines().count() == 1 && err.starts_with("zkmw: "),
        "not one line starting with `zkmw:`: {}",
        describe(out)
    );
}

#[test]
fn empty_job_is_refused() {
    let ns = Namespace::new("bad-empty-job");
    for job in ["", "   ", "\n\t"] {
        let out = ns.run(&["submit", job]);
        assert_refused(&out, &["job is empty"]);
        assert_eq!(stdout(&out), "", "no task id printed for {job:?}");
    }
    assert_no_tasks(&ns);
}

/// A job one byte over the limit cannot even reach zkmw from a command line
/// on Linux with 4 KiB pages: the kernel refuses any single argument longer
/// than MAX_ARG_STRLEN (32 pages: 128 KiB, with its NUL) with E2BIG
/// ("Argument list too long") before the program starts. Where pages are
/// bigger and the job does reach zkmw, zkmw must refuse it: no worker could
/// start it.
#[test]
fn job_over_the_argument_limit_is_refused() {
    let ns = Namespace::new("bad-huge-job");
    let job = format!(": {}", "x".repeat(MAX_JOB_LEN + 1 - 2));
    let mut cmd = ns.cmd();
    cmd.args(["submit", &job]);
    match common::try_run_bounded(cmd, common::COMMAND_LIMIT) {
        Err(err) => assert_eq!(
            err.raw_os_error(),
            Some(libc::E2BIG),
            "expected E2BIG (Argument list too long), got {err}"
        ),
        Ok(out) => assert_refused(&out, &["131072 bytes", "at most 131071"]),
    }
    assert_no_tasks(&ns);
}

/// `submit --stdin` carries jobs of any size, so there zkmw's own check
/// refuses a job no worker could start: the jobs before it (the longest
/// that can run among them) are stored and their ids printed, the broken
/// line is named by number, nothing after it is stored.
#[test]
fn job_over_the_argument_limit_on_stdin_is_refused_by_line() {
    let ns = Namespace::new("bad-huge-stdin");
    let longest = format!(": {}", "x".repeat(MAX_JOB_LEN - 2));
    let input = format!("echo a\n\n{longest}\n{longest}x\necho c\n");
    let out = ns.run_with_stdin(&["submit", "--stdin"], input.as_bytes());
    assert_refused(
        &out,
        &[
            "stdin line 4",
            "the job is 131072 bytes",
            "at most 131071 bytes",
        ],
    );
    assert_one_line(&out);
    let ids: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(
        ids.len(),
        2,
        "only the jobs before the broken line: {ids:?}"
    );
    let zk = ns.connect();
    let mut stored = ns.children(&zk, &ns.layout().tasks());
    stored.sort();
    assert_eq!(stored, ids, "only those jobs are stored");
    assert_eq!(ns.task_json(&ids[0])["job"], "echo a");
    assert_eq!(ns.task_json(&ids[1])["job"], longest.as_str());
}

/// A NUL byte cannot be passed in an argument: a `--stdin` line holding one
/// is refused by number, after the lines before it are stored.
#[test]
fn nul_byte_on_stdin_is_refused_by_line() {
    let ns = Namespace::new("bad-nul-stdin");
    let out = ns.run_with_stdin(&["submit", "--stdin"], b"echo a\necho \0b\necho c\n");
    assert_refused(&out, &["stdin line 2", "NUL byte at byte 5"]);
    assert_one_line(&out);
    let ids: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(ids.len(), 1, "only the job before the broken line: {ids:?}");
    let zk = ns.connect();
    assert_eq!(ns.children(&zk, &ns.layout().tasks()), ids);
}

/// The largest job zkmw accepts is accepted and runs. It is made of
/// control characters, each stored as a 6-byte JSON escape, so the record
/// is about 6 x 128 KiB = 768 KiB, the biggest one job can make.
#[test]
fn largest_job_a_command_line_can_carry_runs() {
    let ns = Namespace::new("big-job");
    let _master = ns.spawn_master("m1");
    let _worker = ns.spawn_worker("w1", 1);
    ns.wait_for_workers(&["w1"], secs(15));
    let (head, tail) = (": ", "; echo big");
    let fill = "\u{1}".repeat(MAX_JOB_LEN - head.len() - tail.len());
    let job = format!("{head}{fill}{tail}");

    // One byte more and the kernel refuses to start zkmw at all.
    let mut cmd = ns.cmd();
    cmd.args(["submit", &format!("{job}x")]);
    if max_arg_len() == job.len() {
        let err = common::try_run_bounded(cmd, common::COMMAND_LIMIT)
            .expect_err("one byte over MAX_ARG_STRLEN");
        assert_eq!(err.raw_os_error(), Some(libc::E2BIG), "{err}");
    }

    let out = ns.submit_wait(&[&job]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "big\n");
    let zk = ns.connect();
    let done = ns.children(&zk, &ns.layout().status());
    assert_eq!(done.len(), 1, "one task finished: {done:?}");
    let t = ns.task_json(&done[0]);
    assert_eq!(t["state"], "done", "{}", t["state"]);
    assert!(
        t["job"].as_str() == Some(job.as_str()),
        "status shows the job byte for byte ({} bytes)",
        t["job"].as_str().map_or(0, str::len)
    );
}

#[test]
fn invalid_worker_ids_are_refused() {
    let ns = Namespace::new("bad-worker-id");
    let long = "x".repeat(200);
    let cases: [(&str, &str); 5] = [
        ("", "the id is empty"),
        ("a/b", "not a znode name"),
        ("..", "not a znode name"),
        ("has space", "has whitespace"),
        (&long, "longer than 128 bytes"),
    ];
    for (id, problem) in cases {
        let out = ns.run(&["worker", "--id", id]);
        assert_refused(&out, &[problem]);
    }
    assert_no_workers(&ns);
}

/// Roots and ids with a character ZooKeeper refuses used to spin (a master
/// logged 250 warnings a second, a submit retried for 10 s) or hang
/// silently (a worker never registered): now each is refused at once,
/// before anything is created.
#[test]
fn names_zookeeper_refuses_are_refused_at_once() {
    let ns = Namespace::new("bad-znode-name");
    let zk = common::zk();
    let inside = format!("{}/a😀", ns.root);
    let ffff = format!("{}/\u{ffff}", ns.root);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--root", "/😀", "master"], "U+1F600 at byte 0"),
        (vec!["--root", &inside, "master"], "U+1F600 at byte 1"),
        (
            vec!["--root", &ns.root, "worker", "--id", "w\u{e000}"],
            "U+E000 at byte 1",
        ),
        (
            vec!["--root", "/\u{ffff}", "submit", "true"],
            "U+FFFF at byte 0",
        ),
        (vec!["--root", &ffff, "submit", "true"], "U+FFFF at byte 0"),
    ];
    for (args, at) in cases {
        let mut cmd = ns.raw_cmd();
        cmd.args(["--zk", zk]).args(&args);
        let out = run_at_once(cmd);
        assert_refused(&out, &["has a character ZooKeeper refuses", at]);
        assert_one_line(&out);
        assert_eq!(stdout(&out), "", "{args:?}: nothing printed");
    }
    let session = ns.connect();
    let root = session.exists(&ns.root).expect("reading the root");
    assert_eq!(root, None, "{} was created", ns.root);
}

/// A tick or timeout of 0 (or 1 ms) made each role burn a quarter of a core,
/// or killed every job at once: each duration has a minimum (and the
/// session timeout a maximum), checked for the flag and its env fallback.
#[test]
fn durations_out_of_bounds_are_refused_at_once() {
    let ns = Namespace::new("bad-duration");
    // Each case is run like env(1) runs a command: NAME=VALUE items first.
    let cases: [(&[&str], &str); 6] = [
        (
            &["worker", "--id", "w1", "--tick", "1ms"],
            "--tick must be at least 100ms, got 1ms",
        ),
        (
            &["ZKMW_TICK=0", "master", "--id", "m1"],
            "--tick (from ZKMW_TICK) must be at least 100ms, got 0",
        ),
        (
            &["submit", "--timeout", "0", "true"],
            "--timeout must be at least 1s, got 0",
        ),
        (
            &["submit", "--wait", "--wait-timeout", "10ms", "true"],
            "--wait-timeout must be at least 100ms, got 10ms",
        ),
        (
            &["--session-timeout", "2h", "status"],
            "--session-timeout must be at most 1h, got 2h",
        ),
        (
            &["ZKMW_CONNECT_TIMEOUT=500ms", "status"],
            "--connect-timeout (from ZKMW_CONNECT_TIMEOUT) must be at least 1s, got 500ms",
        ),
    ];
    for (case, problem) in cases {
        let (env, args): (Vec<&str>, Vec<&str>) = case.iter().partition(|a| a.starts_with("ZKMW_"));
        let mut cmd = ns.raw_cmd();
        cmd.args(["--zk", common::zk(), "--root", &ns.root])
            .args(&args);
        cmd.envs(env.iter().filter_map(|e| e.split_once('=')));
        let out = run_at_once(cmd);
        assert_refused(&out, &[problem]);
        assert_one_line(&out);
        assert_eq!(stdout(&out), "", "{case:?}: nothing printed");
    }
    assert_no_tasks(&ns);
    assert_no_workers(&ns);
}

/// Bare `zkmw` printed its description as if it were an error.
#[test]
fn a_missing_command_is_named() {
    let ns = Namespace::new("bad-no-command");
    let out = run_at_once(ns.raw_cmd());
    assert_refused(
        &out,
        &[
            "zkmw: missing command: one of master, worker, submit, wait, progress, cancel, status, tasks, purge",
        ],
    );
    assert_one_line(&out);
}

/// `--zk host:port/chroot` said "no valid port": it names the chroot and
/// points to --root.
#[test]
fn a_chroot_in_the_host_list_is_refused_with_the_way_out() {
    let ns = Namespace::new("bad-chroot");
    let mut cmd = ns.raw_cmd();
    let hosts = format!("{}/app", common::zk());
    cmd.args(["--zk", &hosts, "--root", &ns.root, "submit", "true"]);
    let out = run_at_once(cmd);
    assert_refused(&out, &["does not support chroots", "--root /app/zkmw"]);
    assert_one_line(&out);
    assert_no_tasks(&ns);
}

#[test]
fn relative_root_is_refused() {
    let ns = Namespace::new("bad-root");
    let mut cmd = ns.raw_cmd();
    cmd.args(["--zk", common::zk(), "--root", "zkmw", "submit", "echo hi"]);
    let out = run_bounded(cmd, common::COMMAND_LIMIT);
    assert_refused(&out, &["'zkmw' is not an absolute path"]);
}

#[test]
fn malformed_zookeeper_addresses_are_refused() {
    let ns = Namespace::new("bad-zk");
    for (zk, problem) in [
        ("nohost", "'nohost' is not host:port"),
        ("a:99999", "'a:99999' has no valid port"),
        ("", "empty ZooKeeper host list"),
    ] {
        let mut cmd = ns.raw_cmd();
        cmd.args(["--zk", zk, "--root", &ns.root, "submit", "echo hi"]);
        let out = run_bounded(cmd, common::COMMAND_LIMIT);
        assert_refused(&out, &[problem]);
    }
    assert_no_tasks(&ns);
}

#[test]
fn unknown_flag_is_refused() {
    let ns = Namespace::new("bad-flag");
    let out = ns.run(&["submit", "--bogus", "echo hi"]);
    assert_refused(&out, &["--bogus"]);
    let out = ns.run(&["--bogus", "status"]);
    assert_refused(&out, &["--bogus"]);
    assert_no_tasks(&ns);
}

/// Both used to read "did not answer in time": the message says, per host,
/// what connecting does, after the connect timeout and not much later.
#[test]
fn unreachable_zookeeper_exits_125_in_bounded_time_saying_why() {
    let ns = Namespace::new("bad-unreachable");
    let closed = format!("127.0.0.1:{}", common::free_port());
    for (hosts, why) in [
        (closed.as_str(), format!("{closed}: connection refused")),
        (
            "no-such-host.invalid:2181",
            "no-such-host.invalid:2181: cannot resolve host".to_string(),
        ),
    ] {
        let mut cmd = ns.raw_cmd();
        cmd.args(["--zk", hosts, "--connect-timeout", "2s"])
            .args(["--root", &ns.root, "submit", "true"]);
        let started = Instant::now();
        let out = run_bounded(cmd, Duration::from_secs(30));
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "gave up after {took:?}, expected about the 2 s connect timeout"
        );
        assert_refused(
            &out,
            &["zkmw: no ZooKeeper server answered within 2.0 s", &why],
        );
        assert_one_line(&out);
        assert_eq!(stdout(&out), "", "no task id printed");
    }
}

#[test]
fn second_worker_with_a_live_id_is_refused() {
    let ns = Namespace::new("bad-dup-worker");
    let first = ns.spawn_worker("w1", 1);
    ns.wait_for_workers(&["w1"], secs(15));
    let out = ns.run(&["worker", "--id", "w1"]);
    assert_refused(&out, &["'w1'", "already live"]);
    let s = ns.status_json();
    let workers = s["workers"].as_array().cloned().unwrap_or_default();
    assert_eq!(workers.len(), 1, "{s}");
    assert_eq!(
        workers[0]["pid"],
        first.pid(),
        "the first w1 is still the one registered: {s}"
    );
}

#[test]
fn status_of_an_unknown_or_invalid_task_is_refused() {
    let ns = Namespace::new("bad-status-task");
    let out = ns.run(&["status", "task-9999999999"]);
    assert_refused(&out, &["no task 'task-9999999999'"]);
    let out = ns.run(&["status", "task-9999999999", "--json"]);
    assert_refused(&out, &["no task 'task-9999999999'"]);
    assert_eq!(stdout(&out), "", "no JSON for a task that does not exist");
    let out = ns.run(&["status", "bogus"]);
    assert_refused(&out, &["'bogus' is not a task id"]);
}

/// README: "Every error is one line on stderr starting with `zkmw:`".
/// Checked for every kind of error above, all at once, so one run lists
/// every case that breaks the promise.
#[test]
fn every_error_is_one_line_starting_with_zkmw() {
    let ns = Namespace::new("bad-one-line");
    let long = "x".repeat(200);
    let zk = common::zk();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--zk", zk, "--root", &ns.root, "submit", ""],
        vec!["--zk", zk, "--root", &ns.root, "worker", "--id", ""],
        vec!["--zk", zk, "--root", &ns.root, "worker", "--id", "a/b"],
        vec!["--zk", zk, "--root", &ns.root, "worker", "--id", ".."],
        vec!["--zk", zk, "--root", &ns.root, "worker", "--id", &long],
        vec!["--zk", zk, "--root", "zkmw", "submit", "echo hi"],
        vec!["--zk", "nohost", "--root", &ns.root, "submit", "echo hi"],
        vec!["--zk", "a:99999", "--root", &ns.root, "submit", "echo hi"],
        vec!["--zk", zk, "--root", &ns.root, "submit", "--bogus", "echo"],
        vec!["--zk", zk, "--root", &ns.root, "status", "task-9999999999"],
        vec![
            "--zk",
            "127.0.0.1:1",
            "--connect-timeout",
            "1s",
            "--root",
            &ns.root,
            "submit",
            "true",
        ],
        vec![],
        vec!["--zk", "a:1/app", "status"],
        vec!["--zk", zk, "--root", "/a\u{1}", "status"],
        vec!["--zk", zk, "--root", &ns.root, "worker", "--id", "a\nb"],
        vec!["--zk", zk, "--root", &ns.root, "master", "--tick", "0"],
    ];
    let mut broken = Vec::new();
    for args in cases {
        let mut cmd = ns.raw_cmd();
        cmd.args(&args);
        let out = run_bounded(cmd, common::COMMAND_LIMIT);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        if err.lines().count() != 1 || !err.starts_with("zkmw: ") {
            broken.push(format!("zkmw {}\n{err}", args.join(" ")));
        }
    }
    assert!(
        broken.is_empty(),
        "{} errors are not one line starting with `zkmw:`:\n\n{}",
        broken.len(),
        broken.join("\n")
    );
}
