//! The cluster settings (`zkmw config`): validated as their flags are,
//! never losing a change to a concurrent one, followed live by running
//! workers and masters, read by submit, beaten by a process's own flags
//! and environment, and survived when the node is garbled.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    COMMAND_LIMIT, Namespace, Reaped, describe, run_bounded, secs, stderr, stdout, wait_until,
};
use serde_json::Value;
use zkmw::zk::Op;

/// `zkmw config ARGS...`: must succeed; its stdout.
fn config(ns: &Namespace, args: &[&str]) -> String {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let out = ns.run(&all);
    assert_eq!(
        out.status.code(),
        Some(0),
        "config {args:?}: {}",
        describe(&out)
    );
    stdout(&out)
}

/// `config list --json`, parsed.
fn listed(ns: &Namespace) -> Value {
    serde_json::from_str(&config(ns, &["list", "--json"])).expect("config list --json is JSON")
}

/// Writes `data` into the config node by hand, as an operator's editor would.
fn write_node(ns: &Namespace, data: &[u8]) {
    let zk = ns.connect();
    zk.multi(&[Op::SetData {
        path: ns.layout().config(),
        data: data.to_vec(),
        version: None,
    }])
    .expect("hand-written config node");
    zk.close(Duration::from_millis(500));
}

#[test]
fn a_refused_value_changes_nothing_and_says_why_like_the_flag() {
    let ns = Namespace::new("config-refused");
    config(&ns, &["set", "output-cap", "1000"]);
    let refused = [
        (
            vec!["set", "output-cap", "400001"],
            "zkmw: output-cap must be at most 400000, got 400001; nothing was changed",
        ),
        (
            vec!["set", "timeout", "500ms"],
            "zkmw: timeout must be at least 1s, got 500ms; nothing was changed",
        ),
        (
            vec!["set", "threads", "8"],
            "zkmw: 'threads' cannot change live",
        ),
        (
            vec!["get", "retires"],
            "zkmw: 'retires' is not a cluster setting",
        ),
    ];
    for (args, said) in refused {
        let mut all = vec!["config"];
        all.extend_from_slice(&args);
        let out = ns.run(&all);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", describe(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with(said) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    // The flag refuses the same value with the same words.
    let out = ns.run(&["worker", "--id", "w1", "--output-cap", "400001"]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(stderr(&out).contains("--output-cap must be at most 400000, got 400001"));
    assert_eq!(config(&ns, &["get", "output-cap"]), "1000\n");
}

/// Operators changing settings at once: every change is kept.
#[test]
fn concurrent_changes_are_all_kept() {
    let ns = Namespace::new("config-concurrent");
    let rounds = [
        [
            ("timeout", "1m"),
            ("retries", "4"),
            ("output-cap", "123"),
            ("result-ttl", "2d"),
            ("keep-results", "77"),
            ("max-pending", "999"),
            ("drain-timeout", "9s"),
        ],
        [
            ("timeout", "2h"),
            ("retries", "0"),
            ("output-cap", "0"),
            ("result-ttl", "1s"),
            ("keep-results", "0"),
            ("max-pending", "1"),
            ("drain-timeout", "0ms"),
        ],
    ];
    for sets in rounds {
        let children: Vec<_> = sets
            .iter()
            .map(|(key, value)| {
                let mut cmd = ns.cmd();
                cmd.args(["config", "set", key, value])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                Reaped::spawn(&mut cmd).expect("config set")
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().expect("config set ends");
            assert!(out.status.success(), "{}", describe(&out));
        }
        let all = listed(&ns);
        for (key, value) in sets {
            assert_eq!(all[key]["cluster"], value, "{key}: {all}");
            assert_eq!(all[key]["source"], "cluster", "{all}");
        }
    }
}

#[test]
fn a_running_worker_follows_its_settings_live() {
    let ns = Namespace::new("config-worker-live");
    let (_master, mut workers) = ns.spawn_cluster(&["w1"], 2);
    let w1 = workers.get_mut("w1").expect("w1");
    let out = ns.submit_wait(&["echo 1234567890"]);
    assert_eq!(stdout(&out), "1234567890\n", "{}", describe(&out));

    let changed = Instant::now();
    config(&ns, &["set", "output-cap", "5"]);
    config(&ns, &["set", "drain-timeout", "1s"]);
    assert!(
        w1.wait_log(
            "settings changed: drain-timeout 30s -> 1s (cluster)",
            0,
            secs(5)
        ),
        "the worker never logged the change: {}",
        w1.log()
    );
    assert!(w1.log_count("settings changed: output-cap 65536 -> 5 (cluster)") == 1);
    assert!(
        changed.elapsed() < Duration::from_secs(4),
        "{:?}",
        changed.elapsed()
    );
    let out = ns.submit_wait(&["echo 1234567890"]);
    assert_eq!(stdout(&out), "12345", "{}", describe(&out));

    // The drain timeout of now: a long job is killed after 1 s, not 30.
    let task = ns.submit("sleep 60");
    ns.wait_task_state(&task, "running", secs(15));
    let stopping = Instant::now();
    w1.term();
    assert!(
        w1.wait_exit(secs(15)).is_some_and(|s| s.success()),
        "{}",
        w1.log()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
    assert!(
        w1.log_count("drain timeout; killing 1 jobs") == 1,
        "{}",
        w1.log()
    );
}

#[test]
fn the_process_beats_the_cluster_which_beats_the_default() {
    let ns = Namespace::new("config-precedence");
    let _master = ns.spawn_master("m1");
    let w1 = ns.spawn("w1", &["worker", "--id", "w1", "--output-cap", "8"]);
    ns.wait_for_workers(&["w1"], secs(15));
    config(&ns, &["set", "output-cap", "3"]);
    assert!(
        w1.wait_log(
            "output-cap stays 8 (--output-cap beats the cluster's 3)",
            0,
            secs(5)
        ),
        "{}",
        w1.log()
    );
    let out = ns.submit_wait(&["echo 1234567890"]);
    assert_eq!(stdout(&out), "12345678", "{}", describe(&out));

    // submit: the cluster's timeout applies, unless the submit's own wins.
    config(&ns, &["set", "timeout", "1s"]);
    let out = ns.submit_wait(&["sleep 3"]);
    assert_eq!(out.status.code(), Some(124), "{}", describe(&out));
    let out = ns.submit_wait(&["--timeout", "20s", "sleep 2; echo slept"]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "slept\n"),
        "{}",
        describe(&out)
    );

    // max-pending: the cluster's refuses, the environment's wins.
    config(&ns, &["set", "max-pending", "0"]);
    let out = ns.run(&["submit", "true"]);
    assert_eq!(out.status.code(), Some(75), "{}", describe(&out));
    let with_env = |args: &[&str]| {
        let mut cmd: Command = ns.cmd();
        cmd.env("ZKMW_MAX_PENDING", "10").args(args);
        run_bounded(cmd, COMMAND_LIMIT)
    };
    let out = with_env(&["submit", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let list = stdout(&with_env(&["config", "list"]));
    let line = |key: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{key} ")))
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        line("max-pending"),
        "max-pending 10 env ZKMW_MAX_PENDING",
        "{list}"
    );
    assert_eq!(line("output-cap"), "output-cap 3 cluster read", "{list}");
    assert_eq!(line("retries"), "retries 2 default read", "{list}");
    assert!(list.contains("(cluster: 0)"), "{list}");
}

/// A role says where each of its own settings came from: its flag, or its
/// environment variable (as the command line parser saw it).
#[test]
fn a_role_names_the_flag_or_the_variable_its_settings_came_from() {
    let ns = Namespace::new("config-sources");
    let args = ["worker", "--id", "w1", "--output-cap", "5"];
    let env = [("ZKMW_DRAIN_TIMEOUT", "7s")];
    let w1 = ns.spawn_env("w1", ns.hosts(), "5s", &env, &args);
    let said = "settings: output-cap 5 (--output-cap), drain-timeout 7s (env ZKMW_DRAIN_TIMEOUT)";
    assert!(w1.wait_log(said, 0, secs(15)), "{}", w1.log());
}

#[test]
fn the_active_master_applies_a_retention_change_at_once() {
    let ns = Namespace::new("config-master-live");
    let (master, _workers) = ns.spawn_cluster(&["w1"], 2);
    for _ in 0..3 {
        let out = ns.submit_wait(&["true"]);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    assert_eq!(ns.finished(), 3);
    config(&ns, &["set", "keep-results", "1"]);
    assert!(
        wait_until(secs(5), || ns.finished() == 1),
        "the master kept {} results: {}",
        ns.finished(),
        master.log()
    );
    assert_eq!(
        master.log_count("settings changed: keep-results 100000 -> 1 (cluster)"),
        1,
        "{}",
        master.log()
    );
}

#[test]
fn a_garbled_node_keeps_the_last_good_values() {
    let ns = Namespace::new("config-garbled");
    let (mut master, mut workers) = ns.spawn_cluster(&["w1"], 2);
    let w1 = workers.get_mut("w1").expect("w1");
    config(&ns, &["set", "output-cap", "5"]);
    assert!(
        w1.wait_log("output-cap 65536 -> 5", 0, secs(5)),
        "{}",
        w1.log()
    );

    write_node(&ns, b"{\"output-cap\": ");
    let said = "not a settings record";
    assert!(w1.wait_log(said, 0, secs(5)), "{}", w1.log());
    assert!(master.wait_log(said, 0, secs(5)), "{}", master.log());
    assert_eq!(w1.log_count(said), 1, "one line: {}", w1.log());
    let out = ns.submit_wait(&["echo 1234567890"]);
    assert_eq!(stdout(&out), "12345", "{}", describe(&out));
    let out = ns.run(&["config", "list"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(stderr(&out).starts_with("zkmw: "), "{}", describe(&out));

    write_node(&ns, br#"{"output-cap":"lots"}"#);
    let kept = "output-cap must be a whole number, got 'lots' (ignored), keeping 5";
    assert!(w1.wait_log(kept, 0, secs(5)), "{}", w1.log());
    let out = ns.submit_wait(&["echo 1234567890"]);
    assert_eq!(stdout(&out), "12345", "{}", describe(&out));
    assert!(master.is_running() && w1.is_running(), "{}", master.log());
}
