//! One test's namespace (`--root`) and the commands of the binary under
//! test, run in it: services started as [`Proc`]s, short commands run with
//! a bounded time, `status` parsed.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use zkmw::layout::Layout;
use zkmw::zk::{ConnectOptions, Op, Zk, ZkError};

use super::command::{describe, parse_json, run_bounded};
use super::ledger::Ledger;
use super::process::{Proc, Reaped};
use super::proxy::Proxy;
use super::scratch::{scratch_folder, unique};
use super::server::zk;
use super::wait::{secs, wait_until};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_zkmw");

/// Session timeout given to every process: a dead master or worker is
/// noticed within about this long.
pub const SESSION_TIMEOUT: &str = "3s";

/// Longest a short-lived command (`submit`, `status`) may take.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(20);

/// Environment variables of the test runner that would change what the
/// binary does; removed from every command so only explicit flags count.
const SCRUBBED_ENV: &[&str] = &[
    "ZKMW_ZK",
    "ZKMW_ROOT",
    "ZKMW_SESSION_TIMEOUT",
    "ZKMW_CONNECT_TIMEOUT",
    "ZKMW_TICK",
    "ZKMW_SHELL",
    "ZKMW_AUTH",
    "ZKMW_AUTH_FILE",
    "ZKMW_TLS_CA",
    "ZKMW_TLS_CERT",
    "ZKMW_TLS_KEY",
    "ZKMW_RESULT_TTL",
    "ZKMW_KEEP_RESULTS",
    "ZKMW_MAX_PENDING",
    "ZKMW_OUTPUT_CAP",
    "ZKMW_DRAIN_TIMEOUT",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "ZKMW_HTTP",
    "ZKMW_HTTP_NO_OUTPUT",
    "ZKMW_LOG_FORMAT",
    "RUST_LOG",
];

/// One test's namespace: a unique `--root` and a folder for its files.
pub struct Namespace {
    /// The `--root` every command of this test gets.
    pub root: String,
    /// Folder of the service logs and ledgers.
    pub dir: PathBuf,
    /// The ZooKeeper connect string of this namespace's server(s).
    hosts: String,
    /// The binary its commands run.
    bin: PathBuf,
    /// True when `dir` is the caller's: then files and znodes are left as
    /// they are when it is dropped.
    kept: bool,
}

impl Namespace {
    /// A fresh namespace for the test `name`, on the shared test server.
    pub fn new(name: &str) -> Namespace {
        Namespace::on(name, zk())
    }

    /// A fresh namespace for the test `name` on the servers `hosts` (a
    /// connect string), e.g. the ensemble's.
    pub fn on(name: &str, hosts: &str) -> Namespace {
        let id = unique(name);
        let dir = scratch_folder(&format!("zkmw-test-{id}"));
        Namespace {
            root: format!("/zkmw-test/{id}"),
            dir,
            hosts: hosts.to_string(),
            bin: PathBuf::from(BIN),
            kept: false,
        }
    }

    /// A fresh namespace for the test `name` on `hosts`, whose commands run
    /// `bin` and whose files go to the caller's folder `dir`; dropping it
    /// leaves its files and znodes for inspection (the fault suite's).
    pub fn in_folder(name: &str, hosts: &str, dir: PathBuf, bin: PathBuf) -> Namespace {
        Namespace {
            root: format!("/zkmw-test/{}", unique(name)),
            dir,
            hosts: hosts.to_string(),
            bin,
            kept: true,
        }
    }

    /// The connect string commands of this namespace get by default.
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// The binary with a scrubbed environment and no flags.
    pub fn raw_cmd(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        for name in SCRUBBED_ENV {
            cmd.env_remove(name);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// The binary with `--zk`, `--root`, a short session timeout and a
    /// one-second tick, ready for a role and its arguments.
    pub fn cmd(&self) -> Command {
        self.cmd_via(&self.hosts)
    }

    /// Like [`Namespace::cmd`], with `--zk HOSTS` (e.g. a [`proxy::Proxy`]).
    pub fn cmd_via(&self, hosts: &str) -> Command {
        self.cmd_with(hosts, SESSION_TIMEOUT)
    }

    /// Like [`Namespace::cmd`], with `--zk HOSTS` and `--session-timeout D`.
    pub fn cmd_with(&self, hosts: &str, session_timeout: &str) -> Command {
        let mut cmd = self.raw_cmd();
        cmd.args(["--zk", hosts, "--root", &self.root])
            .args(["--session-timeout", session_timeout])
            .env("ZKMW_TICK", "1s");
        cmd
    }

    /// Starts a service (`master ...` or `worker ...`) with its stderr (at
    /// RUST_LOG=info, or the level in env `ZKMW_TEST_LOG`) in
    /// `<dir>/<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str]) -> Proc {
        self.spawn_via(name, &self.hosts, args)
    }

    /// Like [`Namespace::spawn`], connecting to `hosts` (e.g. a proxy). A
    /// name used before gets a fresh log (`<name>.log` is overwritten).
    pub fn spawn_via(&self, name: &str, hosts: &str, args: &[&str]) -> Proc {
        self.spawn_with(name, hosts, SESSION_TIMEOUT, args)
    }

    /// Like [`Namespace::spawn_via`], with `--session-timeout D`.
    pub fn spawn_with(
        &self,
        name: &str,
        hosts: &str,
        session_timeout: &str,
        args: &[&str],
    ) -> Proc {
        self.spawn_env(name, hosts, session_timeout, &[], args)
    }

    /// Like [`Namespace::spawn_with`], with the variables `env` set (e.g.
    /// systemd's `NOTIFY_SOCKET`).
    pub fn spawn_env(
        &self,
        name: &str,
        hosts: &str,
        session_timeout: &str,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Proc {
        let mut cmd = self.cmd_with(hosts, session_timeout);
        cmd.envs(env.iter().copied());
        cmd.args(args).env(
            "RUST_LOG",
            std::env::var("ZKMW_TEST_LOG").unwrap_or_else(|_| "info".into()),
        );
        Proc::spawn(name, cmd, &self.dir.join(format!("{name}.log")))
    }

    /// Starts `zkmw master --id ID`.
    pub fn spawn_master(&self, id: &str) -> Proc {
        self.spawn(id, &["master", "--id", id])
    }

    /// Master `m1` and workers `ids` (`threads` each, by id), waited for
    /// until all are up.
    pub fn spawn_cluster(&self, ids: &[&str], threads: u16) -> (Proc, BTreeMap<String, Proc>) {
        let master = self.spawn_master("m1");
        let workers = ids
            .iter()
            .map(|id| (id.to_string(), self.spawn_worker(id, threads)))
            .collect();
        self.wait_for_master("m1", secs(15));
        self.wait_for_workers(ids, secs(15));
        (master, workers)
    }

    /// Starts `zkmw worker --id ID --threads N`.
    pub fn spawn_worker(&self, id: &str, threads: u16) -> Proc {
        let threads = threads.to_string();
        self.spawn(id, &["worker", "--id", id, "--threads", &threads])
    }

    /// Runs the binary with this namespace's flags and `args`; it must exit
    /// within [`COMMAND_LIMIT`].
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_via(&self.hosts, args)
    }

    /// Like [`Namespace::run`], connecting to `hosts` (e.g. a proxy).
    pub fn run_via(&self, hosts: &str, args: &[&str]) -> Output {
        let mut cmd = self.cmd_via(hosts);
        cmd.args(args);
        run_bounded(cmd, COMMAND_LIMIT)
    }

    /// Starts `submit ARGS` through `proxy` (patient: 30 s to connect),
    /// `stdin` on its stdin, and waits until the proxy's trigger has fired
    /// on one of its requests.
    pub fn submit_until_triggered(&self, proxy: &Proxy, args: &[&str], stdin: Stdio) -> Reaped {
        let mut cmd = self.cmd_via(&proxy.addr());
        cmd.args(["--connect-timeout", "30s", "submit"])
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let submit = Reaped::spawn(&mut cmd).expect("submit through the proxy");
        assert!(
            wait_until(secs(10), || proxy.triggered()),
            "no request of `submit {args:?}` went through the proxy's trigger"
        );
        submit
    }

    /// Runs the binary with this namespace's flags and `args`, `input` on
    /// its stdin; it must exit within [`COMMAND_LIMIT`].
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let path = self.dir.join(format!("{}.stdin", unique("input")));
        fs::write(&path, input).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut cmd = self.cmd();
        cmd.args(args).stdin(file);
        run_bounded(cmd, COMMAND_LIMIT)
    }

    /// `zkmw submit JOB`: must succeed; returns the task id it printed.
    pub fn submit(&self, job: &str) -> String {
        let out = self.run(&["submit", job]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "`zkmw submit {job:?}` failed: {}",
            describe(&out)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            zkmw::layout::is_task_name(&id),
            "`zkmw submit` printed {id:?}, not a task id"
        );
        id
    }

    /// `zkmw submit --wait --wait-timeout 15s ARGS...` (it gives up, exit
    /// 124, before [`COMMAND_LIMIT`] would kill it).
    pub fn submit_wait(&self, args: &[&str]) -> Output {
        let mut all = vec!["submit", "--wait", "--wait-timeout", "15s"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `zkmw status --json`, parsed; the command must succeed.
    pub fn status_json(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        parse_json(&out, "zkmw status --json")
    }

    /// `zkmw status TASK --json`, parsed; the command must succeed.
    pub fn task_json(&self, task: &str) -> Value {
        let out = self.run(&["status", task, "--json"]);
        parse_json(&out, &format!("zkmw status {task} --json"))
    }

    /// `tasks.finished` of `status --json`.
    pub fn finished(&self) -> u64 {
        self.status_json()["tasks"]["finished"]
            .as_u64()
            .unwrap_or(0)
    }

    /// Waits until `status --json` lists exactly these worker ids live.
    pub fn wait_for_workers(&self, ids: &[&str], deadline: Instant) {
        let mut last = Value::Null;
        let mut want: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        want.sort_unstable();
        let ok = wait_until(deadline, || {
            last = self.status_json();
            Namespace::live_workers(&last) == want
        });
        assert!(
            ok,
            "status never listed exactly the workers {ids:?} live; last status: {last}"
        );
    }

    /// Waits until `status --json` shows master `id` active.
    pub fn wait_for_master(&self, id: &str, deadline: Instant) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(deadline, || {
            last = self.status_json();
            last["master"]["id"] == id
        });
        assert!(ok, "status never showed master {id} active; last: {last}");
        last
    }

    /// Waits until `status --json` shows `n` tasks finished and none
    /// pending, assigned or running: all the work is done.
    ///
    /// (Waiting on `finished` alone is not enough to then assert the other
    /// counts: `status` reads /assign, /running, /tasks and /status one after
    /// the other, so a task that finishes meanwhile can be counted twice.)
    pub fn wait_finished(&self, n: u64, deadline: Instant) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(deadline, || {
            last = self.status_json();
            let t = &last["tasks"];
            t["finished"].as_u64() == Some(n)
                && t["pending"] == 0
                && t["assigned"] == 0
                && t["running"] == 0
        });
        assert!(
            ok,
            "status never showed {n} tasks finished and none in flight; last: {last}"
        );
        last
    }

    /// A new, empty ledger file in this namespace's dir.
    pub fn ledger(&self) -> Ledger {
        Ledger::create(self.dir.join(format!("{}.ledger", unique("ledger"))))
    }

    /// The znode paths of this namespace.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.root)
    }

    /// A library session to the test server, to look at or tamper with the
    /// namespace directly.
    pub fn connect(&self) -> Zk {
        Zk::connect(&connect_options(&self.hosts)).expect("test session to ZooKeeper")
    }

    /// Like [`Namespace::connect`], with the namespace's own nodes made
    /// first, for a test that writes into it before any role runs.
    pub fn connect_prepared(&self) -> Zk {
        let zk = self.connect();
        zkmw::session::ensure_namespace(&zk, &self.layout()).expect("the namespace");
        zk
    }

    /// Waits until task `id` is in `state` (`status TASK --json`); the
    /// task's view then.
    pub fn wait_task_state(&self, id: &str, state: &str, deadline: Instant) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(deadline, || {
            last = self.task_json(id);
            last["state"] == state
        });
        assert!(ok, "{id} never reached state {state}; last: {last}");
        last
    }

    /// The ids of the live workers in a `status --json` view, sorted.
    pub fn live_workers(status: &Value) -> Vec<String> {
        let mut ids: Vec<String> = status["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter(|w| w["state"] == "live")
                    .filter_map(|w| w["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Children of a node of this namespace; empty when it does not exist.
    pub fn children(&self, zk: &Zk, path: &str) -> Vec<String> {
        match zk.children(path) {
            Ok(names) => names,
            Err(ZkError::NoNode) => Vec::new(),
            Err(err) => panic!("listing {path}: {err}"),
        }
    }

    /// Every service log of this namespace, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return out;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            out.push_str(&format!("----- {} -----\n{text}", log.display()));
        }
        out
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if thread::panicking() {
            // An empty dir has nothing to inspect.
            let _ = fs::remove_dir(&self.dir);
            let files = if self.dir.exists() {
                format!(", files in {}", self.dir.display())
            } else {
                String::new()
            };
            eprintln!(
                "===== kept for inspection: znodes under {}{files}; service logs:\n{}",
                self.root,
                self.logs()
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
        // Best effort: the processes are gone, remove what they left.
        let mut opts = connect_options(&self.hosts);
        opts.connect_timeout = Some(Duration::from_secs(3));
        if let Ok(zk) = Zk::connect(&opts) {
            delete_tree(&zk, &self.root);
        }
    }
}

/// The options of the harness's own sessions to `hosts`: no auth, no TLS,
/// a 3 s session, 5 s calls, 10 s to connect.
pub fn connect_options(hosts: &str) -> ConnectOptions {
    ConnectOptions {
        hosts: hosts.to_string(),
        session_timeout: Duration::from_secs(3),
        call_timeout: Duration::from_secs(5),
        connect_timeout: Some(Duration::from_secs(10)),
        auth: None,
        tls: None,
        service: false,
    }
}

/// Deletes `path` and everything under it, as far as `zk` may.
pub fn delete_tree(zk: &Zk, path: &str) {
    let Ok(children) = zk.children(path) else {
        return;
    };
    for child in children {
        delete_tree(zk, &format!("{path}/{child}"));
    }
    let _ = zk.multi(&[Op::Delete {
        path: path.to_string(),
        version: None,
    }]);
}
