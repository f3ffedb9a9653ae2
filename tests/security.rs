//! Digest auth (`--auth`, `--auth-file`) against the default test server:
//! with credentials, every node zkmw creates is readable and writable by
//! that identity only, so a client without them (or with a wrong password)
//! cannot read, submit, register a worker or take over `/master`, and is
//! told so at once with exit 125.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{COMMAND_LIMIT, Namespace, Proc, describe, parse_json, run_bounded, secs, stderr};
use common::{delete_tree, stdout, wait_until};
use serde_json::Value;
use zkmw::zk::{ConnectOptions, Op, Zk, ZkError};

/// The credentials of the protected namespaces.
const OPS: &str = "ops:secret";

/// How long a refused service may take to exit: it connects, is refused on
/// its first write, and exits; far below any connect or session timeout.
const REFUSAL_LIMIT: Duration = Duration::from_secs(6);

/// A namespace used with credentials. The harness cleans up without any
/// (and so cannot), so on a passing test this stops the services cleanly
/// (their ephemeral nodes go with their sessions) and deletes the tree with
/// the credentials.
struct Protected {
    ns: Namespace,
    creds: String,
    services: Vec<Proc>,
}

impl Protected {
    fn new(name: &str, creds: &str) -> Protected {
        let ns = Namespace::new(name);
        Protected {
            ns,
            creds: creds.to_string(),
            services: Vec::new(),
        }
    }

    fn root(&self) -> &str {
        &self.ns.root
    }

    /// Runs a command in this namespace as `creds` (`None`: no credentials).
    fn run_as(&self, creds: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = self.ns.cmd();
        if let Some(creds) = creds {
            cmd.args(["--auth", creds]);
        }
        cmd.args(args);
        run_bounded(cmd, COMMAND_LIMIT)
    }

    /// Runs a command with this namespace's own credentials.
    fn run(&self, args: &[&str]) -> Output {
        self.run_as(Some(&self.creds), args)
    }

    fn status_json(&self) -> Value {
        parse_json(&self.run(&["status", "--json"]), "zkmw status --json")
    }

    /// `submit JOB` with the credentials; must succeed; the task id.
    fn submit(&self, job: &str) -> String {
        let out = self.run(&["submit", job]);
        assert_eq!(out.status.code(), Some(0), "submit: {}", describe(&out));
        let id = stdout(&out).trim().to_string();
        assert!(zkmw::layout::is_task_name(&id), "not a task id: {id:?}");
        id
    }

    /// Starts a service with the credentials; it is stopped on drop.
    fn start(&mut self, name: &str, args: &[&str]) {
        let mut all = vec!["--auth", self.creds.as_str()];
        all.extend_from_slice(args);
        let proc = self.ns.spawn(name, &all);
        self.services.push(proc);
    }

    /// Starts master `m1` and worker `w1` and waits until both are live.
    fn start_cluster(&mut self) {
        self.start("m1", &["master", "--id", "m1"]);
        self.start("w1", &["worker", "--id", "w1", "--threads", "2"]);
        self.wait_for(secs(20), "master m1 and worker w1 live", |s| {
            s["master"]["id"] == "m1" && worker_ids(s) == ["w1"]
        });
    }

    /// Polls the authorized `status --json` until `cond` holds.
    fn wait_for(&self, deadline: Instant, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(deadline, || {
            last = self.status_json();
            cond(&last)
        });
        assert!(ok, "never saw {what}; last status: {last}");
        last
    }

    /// A library session with these credentials.
    fn library(&self) -> Zk {
        library(Some(&self.creds))
    }
}

impl Drop for Protected {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // Namespace keeps everything for inspection.
        }
        for service in &self.services {
            service.term();
        }
        for service in &mut self.services {
            service.wait_exit(secs(15));
        }
        let mut opts = options(Some(&self.creds));
        opts.connect_timeout = Some(Duration::from_secs(3));
        if let Ok(zk) = Zk::connect(&opts) {
            delete_tree(&zk, &self.ns.root);
        }
    }
}

fn options(creds: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        hosts: common::zk().to_string(),
        session_timeout: Duration::from_secs(3),
        call_timeout: Duration::from_secs(5),
        connect_timeout: Some(Duration::from_secs(10)),
        auth: creds.map(str::to_string),
        tls: None,
        service: false,
    }
}

/// A library session to the test server as `creds`.
fn library(creds: Option<&str>) -> Zk {
    Zk::connect(&options(creds)).expect("library session to ZooKeeper")
}

fn worker_ids(status: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = status["workers"]
        .as_array()
        .map(|ws| ws.iter().filter_map(|w| w["id"].as_str()).collect())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Sum of every task count of `status --json`.
fn task_total(status: &Value) -> u64 {
    ["pending", "assigned", "running", "finished"]
        .iter()
        .map(|k| status["tasks"][k].as_u64().unwrap_or(0))
        .sum()
}

/// The message every refusal starts with.
fn refusal(root: &str) -> String {
    format!("zkmw: not authorized for {root}:")
}

/// A command refused for lack of credentials: exit 125 and the message.
fn assert_not_authorized(out: &Output, root: &str, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(125),
        "{what} should be refused with 125: {}",
        describe(out)
    );
    assert!(
        stderr(out).starts_with(&refusal(root)),
        "{what}: stderr should start with {:?}: {}",
        refusal(root),
        describe(out)
    );
}

/// A service refused for lack of credentials: it exits 125 within
/// [`REFUSAL_LIMIT`] and logs the message.
fn assert_service_refused(proc: &mut Proc, started: Instant, root: &str, what: &str) {
    let status = proc.wait_exit(started + REFUSAL_LIMIT + Duration::from_secs(1));
    let took = started.elapsed();
    let log = proc.log();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(125),
        "{what} should exit 125 at once (after {took:?}: {status:?}); log:\n{log}"
    );
    assert!(
        took <= REFUSAL_LIMIT,
        "{what} took {took:?} to give up (limit {REFUSAL_LIMIT:?}); log:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with(&refusal(root))),
        "{what} should log a line starting with {:?}; log:\n{log}",
        refusal(root)
    );
}

#[test]
fn authorized_round_trip_and_the_result_is_protected() {
    let mut p = Protected::new("security-round-trip", OPS);
    p.start_cluster();
    let out = p.run(&[
        "submit",
        "--wait",
        "--wait-timeout",
        "30s",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n", "{}", describe(&out));
    assert!(stderr(&out).contains("err"), "{}", describe(&out));

    let status = p.wait_for(secs(10), "1 task finished", |s| s["tasks"]["finished"] == 1);
    assert_eq!(status["master"]["id"], "m1", "{status}");

    // The stored result itself is protected, not just the CLI's view of it.
    let layout = p.ns.layout();
    let done = p
        .library()
        .children(&layout.status())
        .expect("list /status");
    assert_eq!(done.len(), 1, "{done:?}");
    let path = layout.status_task(&done[0]);
    let (data, _) = p
        .library()
        .get(&path)
        .expect("read the result")
        .expect("the result exists");
    assert!(
        String::from_utf8_lossy(&data).contains("exit 3"),
        "job in the record"
    );
    for creds in [None, Some("ops:wrong")] {
        assert_eq!(
            library(creds).get(&path).map(|n| n.is_some()),
            Err(ZkError::NoAuth),
            "reading {path} as {creds:?}"
        );
    }
}

/// Everything an outsider (`creds`: none, or a wrong password) might try
/// against a running protected cluster is refused, and changes nothing.
fn outsider_is_refused(name: &str, creds: Option<&str>) {
    let mut p = Protected::new(name, OPS);
    p.start_cluster();
    let root = p.root().to_string();
    let out = p.run(&["submit", "--wait", "--wait-timeout", "30s", "echo done"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let before = p.wait_for(secs(10), "1 task finished", |s| s["tasks"]["finished"] == 1);
    let task = p
        .library()
        .children(&p.ns.layout().status())
        .expect("list /status")[0]
        .clone();
    let tasks_path = p.ns.layout().tasks();
    let tasks_stat = p.library().exists(&tasks_path).expect("stat /tasks");

    // Reading: one task, the cluster, as text or JSON.
    let started = Instant::now();
    let out = p.run_as(creds, &["status", &task]);
    assert_not_authorized(&out, &root, "status TASK");
    assert!(
        started.elapsed() < REFUSAL_LIMIT,
        "status TASK took {:?}",
        started.elapsed()
    );
    assert_not_authorized(
        &p.run_as(creds, &["status", &task, "--json"]),
        &root,
        "status TASK --json",
    );
    assert_not_authorized(&p.run_as(creds, &["status"]), &root, "status");
    assert_not_authorized(
        &p.run_as(creds, &["status", "--json"]),
        &root,
        "status --json",
    );

    // Writing: submit (with and without --wait) and purge.
    assert_not_authorized(
        &p.run_as(creds, &["submit", "echo intruder"]),
        &root,
        "submit",
    );
    assert_not_authorized(
        &p.run_as(creds, &["submit", "--wait", "echo intruder"]),
        &root,
        "submit --wait",
    );
    assert_not_authorized(&p.run_as(creds, &["purge", "--keep", "0"]), &root, "purge");

    // A worker cannot register, a master cannot take over.
    let mut intruders = Vec::new();
    for (name, args) in [
        ("w-intruder", vec!["worker", "--id", "w-intruder"]),
        ("m-intruder", vec!["master", "--id", "m-intruder"]),
    ] {
        let mut all: Vec<&str> = creds.map_or_else(Vec::new, |c| vec!["--auth", c]);
        all.extend(args);
        intruders.push((name, Instant::now(), p.ns.spawn(name, &all)));
    }
    for (name, started, proc) in &mut intruders {
        assert_service_refused(proc, *started, &root, name);
    }

    // Nothing changed: no task was added (not even created and removed:
    // /tasks's child version is the same), the worker set and the active
    // master (same epoch) are as before, the result is still there.
    let after = p.status_json();
    assert_eq!(task_total(&after), 1, "task counts changed: {after}");
    assert_eq!(after["tasks"]["finished"], 1, "{after}");
    let tasks_now = p.library().exists(&tasks_path).expect("stat /tasks");
    assert_eq!(
        tasks_now.map(|s| s.cversion),
        tasks_stat.map(|s| s.cversion),
        "{tasks_path} was changed"
    );
    assert_eq!(worker_ids(&after), ["w1"], "{after}");
    assert_eq!(after["master"]["id"], "m1", "{after}");
    assert_eq!(
        after["master"]["epoch"], before["master"]["epoch"],
        "{after}"
    );
    let assign = p
        .library()
        .children(&p.ns.layout().assign())
        .expect("list /assign");
    assert!(
        !assign.iter().any(|w| w == "w-intruder"),
        "the refused worker left {assign:?}"
    );
    // And the cluster still works for its owner.
    let out = p.run(&[
        "submit",
        "--wait",
        "--wait-timeout",
        "30s",
        "echo still fine",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "still fine\n");
}

#[test]
fn client_without_credentials_can_read_submit_register_or_lead_nothing() {
    outsider_is_refused("security-no-auth", None);
}

#[test]
fn wrong_password_is_refused_at_once_for_every_role() {
    outsider_is_refused("security-wrong-password", Some("ops:wrong"));
}

#[test]
fn task_data_is_protected_in_zookeeper_not_just_by_the_cli() {
    let p = Protected::new("security-library", OPS);
    let task = p.submit("echo confidential-job-text");
    let layout = p.ns.layout();
    let path = layout.task(&task);

    let (data, _) = p
        .library()
        .get(&path)
        .expect("the owner reads the task")
        .expect("the task is pending in /tasks");
    assert!(
        String::from_utf8_lossy(&data).contains("confidential-job-text"),
        "the task record holds the job"
    );

    for creds in [None, Some("ops:wrong"), Some("other:secret")] {
        let zk = library(creds);
        let who = format!("library session as {creds:?}");
        assert_eq!(
            zk.get(&path).map(|n| n.is_some()),
            Err(ZkError::NoAuth),
            "{who}: reading {path}"
        );
        assert_eq!(
            zk.children(&layout.tasks()),
            Err(ZkError::NoAuth),
            "{who}: listing /tasks"
        );
        assert_eq!(
            zk.get(p.root()).map(|n| n.is_some()),
            Err(ZkError::NoAuth),
            "{who}: reading the root"
        );
        // Nor can it change or remove the task, or add one.
        let writes = [
            Op::SetData {
                path: path.clone(),
                data: b"{}".to_vec(),
                version: None,
            },
            Op::Delete {
                path: path.clone(),
                version: None,
            },
            Op::Create {
                path: layout.task("task-9999999999"),
                data: b"{}".to_vec(),
            },
        ];
        for op in writes {
            let err = zk
                .multi(std::slice::from_ref(&op))
                .expect_err("must be refused");
            assert!(
                err.is_txn_failure(0, &ZkError::NoAuth) || err == ZkError::NoAuth,
                "{who}: {op:?} gave {err:?}, not NoAuth"
            );
        }
    }
    // Still there, unchanged.
    let (again, _) = p.library().get(&path).expect("read").expect("still there");
    assert_eq!(again, data);
}

/// A credentials file in the namespace's dir, readable by its owner only.
fn creds_file(ns: &Namespace, name: &str, text: &str) -> PathBuf {
    let path = ns.dir.join(name);
    fs::write(&path, text).expect("write credentials file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod 600");
    path
}

#[test]
fn auth_file_works_like_auth_and_keeps_the_password_out_of_argv() {
    let password = format!("pw-{}-file", std::process::id());
    let creds = format!("ops:{password}");
    let mut p = Protected::new("security-auth-file", &creds);
    let file = creds_file(&p.ns, "zk-creds", &format!("{creds}\n"));
    let file = file.to_str().expect("utf-8 path");
    p.services
        .push(p.ns.spawn("m1", &["--auth-file", file, "master", "--id", "m1"]));
    p.services
        .push(p.ns.spawn("w1", &["worker", "--id", "w1", "--auth-file", file]));
    // Same identity through --auth: the namespace is one and the same.
    p.wait_for(secs(20), "master m1 and worker w1 live", |s| {
        s["master"]["id"] == "m1" && worker_ids(s) == ["w1"]
    });
    for service in &p.services {
        let argv = fs::read(format!("/proc/{}/cmdline", service.pid())).expect("read cmdline");
        assert!(
            !String::from_utf8_lossy(&argv).contains(&password),
            "{}: the password is in its argv",
            service.name
        );
    }
    let out = p.run_as(
        None,
        &[
            "--auth-file",
            file,
            "submit",
            "--wait",
            "--wait-timeout",
            "30s",
            "echo via file; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    assert_eq!(stdout(&out), "via file\n");
    // Without the file, refused.
    assert_not_authorized(
        &p.run_as(None, &["status"]),
        p.root(),
        "status without credentials",
    );
}

#[test]
fn malformed_or_missing_auth_file_is_refused_naming_the_file() {
    let p = Protected::new("security-bad-auth-file", OPS);
    let missing = p.ns.dir.join("no-such-creds");
    let cases = [
        ("no colon", creds_file(&p.ns, "no-colon", "opssecret\n")),
        (
            "empty password",
            creds_file(&p.ns, "empty-password", "ops:\n"),
        ),
        ("empty file", creds_file(&p.ns, "empty", "")),
        ("missing file", missing),
    ];
    for (what, file) in &cases {
        let file = file.to_str().expect("utf-8 path");
        for role in [
            vec!["status"],
            vec!["submit", "true"],
            vec!["master", "--id", "m1"],
        ] {
            let mut args = vec!["--auth-file", file];
            args.extend(&role);
            let started = Instant::now();
            let out = p.run_as(None, &args);
            assert!(
                started.elapsed() < REFUSAL_LIMIT,
                "{what}, {role:?}: took {:?}",
                started.elapsed()
            );
            assert_eq!(
                out.status.code(),
                Some(125),
                "{what}, {role:?}: {}",
                describe(&out)
            );
            let err = stderr(&out);
            assert!(
                err.starts_with("zkmw: ") && err.contains(file),
                "{what}, {role:?}: the message should name {file}: {}",
                describe(&out)
            );
            assert_eq!(
                err.lines().count(),
                1,
                "{what}, {role:?}: one line: {err:?}"
            );
        }
    }
    // Nothing was created for any of them.
    assert_eq!(
        library(None).exists(p.root()),
        Ok(None),
        "{} was created",
        p.root()
    );
}

#[test]
fn namespaces_with_different_passwords_are_isolated() {
    let a = Protected::new("security-isolated-a", "ops:alpha");
    let b = Protected::new("security-isolated-b", "ops:beta");
    let task_a = a.submit("echo task of a");
    let task_b = b.submit("echo task of b");
    for (me, mine, other, theirs) in [(&a, &task_a, &b, &task_b), (&b, &task_b, &a, &task_a)] {
        let own = parse_json(&me.run(&["status", mine, "--json"]), "status own task");
        assert_eq!(own["state"], "pending", "{own}");
        let who = format!("{} in {}", me.creds, other.root());
        let creds = Some(me.creds.as_str());
        let before = other
            .library()
            .exists(&other.ns.layout().tasks())
            .expect("stat");

        let mut cmd = other.ns.cmd();
        cmd.args(["--auth", &me.creds, "status", theirs]);
        assert_not_authorized(
            &run_bounded(cmd, COMMAND_LIMIT),
            other.root(),
            &format!("{who}: status TASK"),
        );
        assert_not_authorized(
            &other.run_as(creds, &["status"]),
            other.root(),
            &format!("{who}: status"),
        );
        assert_not_authorized(
            &other.run_as(creds, &["submit", "echo x"]),
            other.root(),
            &format!("{who}: submit"),
        );

        let after = other
            .library()
            .exists(&other.ns.layout().tasks())
            .expect("stat");
        assert_eq!(
            after.map(|s| s.cversion),
            before.map(|s| s.cversion),
            "{who}: /tasks changed"
        );
        assert_eq!(
            me.library()
                .get(&other.ns.layout().task(theirs))
                .map(|n| n.is_some()),
            Err(ZkError::NoAuth),
            "{who}: library read of the other's task"
        );
    }
}

/// Creating a protected namespace also creates its missing ancestors; they
/// are shared, so they stay open: another identity (or none) can still make
/// its own namespace next to it. (Found with creator-only ancestors, which
/// locked everyone else out of `/a/*` once `--auth` had made `/a/b`.)
#[test]
fn ancestors_of_a_protected_root_stay_usable_by_others() {
    let p = Protected::new("security-ancestors", OPS);
    let team = format!("{}/team", p.root());
    let mine = format!("{team}/ops");
    let theirs = format!("{team}/dev");
    let mut cmd = p.ns.raw_cmd();
    cmd.args([
        "--zk",
        common::zk(),
        "--root",
        &mine,
        "--auth",
        OPS,
        "submit",
        "true",
    ]);
    let out = run_bounded(cmd, COMMAND_LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    for creds in [None, Some("dev:other")] {
        let mut cmd = p.ns.raw_cmd();
        cmd.args(["--zk", common::zk(), "--root", &theirs]);
        if let Some(creds) = creds {
            cmd.args(["--auth", creds]);
        }
        cmd.args(["submit", "true"]);
        let out = run_bounded(cmd, COMMAND_LIMIT);
        assert_eq!(
            out.status.code(),
            Some(0),
            "a namespace next to a protected one, as {creds:?}: {}",
            describe(&out)
        );
    }
    // Clean up what the open namespaces left (the protected part goes with p).
    let zk = library(None);
    delete_tree(&zk, &theirs);
    let zk = library(Some("dev:other"));
    delete_tree(&zk, &theirs);
}
