//! The integration-test harness: a real ZooKeeper server, the real `zkmw`
//! binary run as processes, one namespace (`--root`) per test.
//!
//! - [`zk`]: the shared server's connect string: env `ZKMW_TEST_ZK` (which
//!   `scripts/test.sh` sets to the standalone server it started), checked
//!   once with `ruok`; without it, a standalone server of this test process
//!   on a free port, stopped when the process exits.
//! - [`Namespace`]: a unique root and a temp dir for logs and ledgers; builds
//!   commands for the binary, starts masters and workers as [`Proc`]s, runs
//!   `submit` and `status` with a bounded time. On a failing test it prints
//!   the services' logs; on a passing one it removes its znodes and files.
//! - [`Proc`]: a started service, SIGKILLed and reaped on drop (with the job
//!   process groups it started), even when the test panics.
//! - [`Ledger`]: a file jobs append their task id to, to count runs.
//! - [`wait_until`]: the bounded poll every "it eventually happens" uses.
//! - [`proxy::Proxy`]: a TCP proxy between zkmw and ZooKeeper whose link can
//!   be cut, black-holed or muted at run time (network faults).
//! - [`ensemble::Ensemble`]: a 3-node ensemble of the test's own, with nodes
//!   stopped and started by number.
//! - [`http`]: GETs and scrapes of zkmw's HTTP endpoint, and a headless
//!   Chromium to load its status page.
//! - [`servers::ZkServers`]: a private folder of `scripts/zk.sh` servers,
//!   stopped and removed on drop.
//! - [`scratch_dir`]: where all of these keep their files: under the run
//!   folder of `scripts/test.sh` (env `ZKMW_TEST_RUN_DIR`), or else under
//!   the system temp dir.
//! - [`free_port`]: a port nothing listens on, that no other test process
//!   on this machine takes meanwhile.

#![allow(dead_code)]

pub mod ensemble;
pub mod http;
pub mod proxy;
pub mod servers;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use zkmw::layout::Layout;
use zkmw::zk::{ConnectOptions, Op, Zk, ZkError};

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
    "ZKMW_HTTP",
    "ZKMW_HTTP_NO_OUTPUT",
    "ZKMW_LOG_FORMAT",
    "RUST_LOG",
];

/// The ZooKeeper connect string for tests: `ZKMW_TEST_ZK` when set (a
/// server given by the user or by `scripts/test.sh`, reused and left alone;
/// it must answer `ruok` with `imok`), else a standalone server this test
/// process starts on a free port on first use and stops when it exits.
pub fn zk() -> &'static str {
    static ZK: OnceLock<String> = OnceLock::new();
    ZK.get_or_init(|| {
        let Ok(hosts) = std::env::var("ZKMW_TEST_ZK") else {
            return own_standalone();
        };
        let first = hosts.split(',').next().unwrap_or_default().trim();
        assert!(
            ruok(first),
            "ZKMW_TEST_ZK={hosts}: {first} does not answer `ruok` with `imok` (unset \
             ZKMW_TEST_ZK, or run scripts/test.sh, to have the tests start their own server)"
        );
        hosts
    })
}

/// Starts this process's standalone server (see [`zk`]); `atexit` stops it.
fn own_standalone() -> String {
    static SERVER: OnceLock<servers::ZkServers> = OnceLock::new();
    extern "C" fn stop_at_exit() {
        if let Some(server) = SERVER.get() {
            server.stop_and_remove();
        }
    }
    let port = free_port();
    let server = SERVER.get_or_init(|| servers::ZkServers::new("standalone"));
    // SAFETY: registers a function that takes no arguments and never unwinds.
    unsafe { libc::atexit(stop_at_exit) };
    server.zk_sh(&[("ZKMW_ZK_PORT", port.to_string())], &["start"]);
    format!("127.0.0.1:{port}")
}

/// True when the server at `host:port` answers the four-letter word `ruok`.
fn ruok(hostport: &str) -> bool {
    let Ok(addrs) = hostport.to_socket_addrs() else {
        return false;
    };
    for addr in addrs {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut reply = String::new();
        if stream.write_all(b"ruok").is_ok()
            && stream.read_to_string(&mut reply).is_ok()
            && reply == "imok"
        {
            return true;
        }
    }
    false
}

/// Polls `cond` every 50 ms until it holds (true) or `deadline` passes
/// (false; `cond` is tried one last time at the deadline).
pub fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `Instant::now() + secs`, for deadlines.
pub fn secs(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

/// A new, empty folder `zkmw-NAME-...` for a test's files: under
/// `$ZKMW_TEST_RUN_DIR/tmp` when `scripts/test.sh` runs the tests (its
/// cleanup then stops anything a killed test left running there), else
/// under the system temp dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    scratch_folder(&format!("zkmw-{}", unique(name)))
}

/// Creates the folder `leaf` where [`scratch_dir`] puts its folders.
fn scratch_folder(leaf: &str) -> PathBuf {
    let base = match std::env::var_os("ZKMW_TEST_RUN_DIR") {
        Some(run) => PathBuf::from(run).join("tmp"),
        None => std::env::temp_dir(),
    };
    let dir = base.join(leaf);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A name no other test (nor another run of this one) uses.
fn unique(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{name}-{}-{nanos}-{n}", std::process::id())
}

/// One test's namespace: a unique `--root` and a temp dir.
pub struct Namespace {
    /// The `--root` every command of this test gets.
    pub root: String,
    /// Temp dir for service logs and ledgers.
    pub dir: PathBuf,
    /// The ZooKeeper connect string of this namespace's server(s).
    hosts: String,
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
        }
    }

    /// The connect string commands of this namespace get by default.
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// The binary with a scrubbed environment and no flags.
    pub fn raw_cmd(&self) -> Command {
        let mut cmd = Command::new(BIN);
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
        let log = self.dir.join(format!("{name}.log"));
        let file = File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let child = self
            .cmd_with(hosts, session_timeout)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("ZKMW_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
            exited: None,
            orphans: Vec::new(),
        }
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
        let path = self.dir.join(format!("{}.ledger", unique("ledger")));
        File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Ledger { path }
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

fn connect_options(hosts: &str) -> ConnectOptions {
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

/// Deletes `path` and everything under it, ignoring failures.
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

/// Parses a command's stdout as JSON; the command must have exited 0.
pub fn parse_json(out: &Output, what: &str) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "`{what}` failed: {}",
        describe(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("`{what}` printed no JSON ({e}): {}", describe(out)))
}

/// Exit status, stdout and stderr of a command, for failure messages.
pub fn describe(out: &Output) -> String {
    let cut = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        if s.len() > 2000 {
            format!(
                "{}... ({} bytes)",
                &s[..s.floor_char_boundary(2000)],
                s.len()
            )
        } else {
            s.into_owned()
        }
    };
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        cut(&out.stdout),
        cut(&out.stderr)
    )
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` to completion with its output captured; SIGKILLs it and
/// panics if it is still running after `limit`.
pub fn run_bounded(cmd: Command, limit: Duration) -> Output {
    let what = describe_cmd(&cmd);
    try_run_bounded(cmd, limit).unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// Like [`run_bounded`], but returns the error when the program cannot be
/// started at all (e.g. E2BIG: an argument over the kernel's limit).
pub fn try_run_bounded(mut cmd: Command, limit: Duration) -> std::io::Result<Output> {
    let what = describe_cmd(&cmd);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut guard = KillOnDrop(child);
    let out_reader = reader(guard.0.stdout.take());
    let err_reader = reader(guard.0.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match guard.0.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            Ok(None) => panic!("{what} still running after {limit:?}; killed"),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    Ok(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// A command line for messages, cut to a readable length.
fn describe_cmd(cmd: &Command) -> String {
    let what = format!("{cmd:?}");
    if what.len() > 300 {
        format!("{}...", &what[..what.floor_char_boundary(300)])
    } else {
        what
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// A child that is SIGKILLed and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// A service the test started. Dropping it SIGKILLs it (and the job process
/// groups it started) and reaps it.
pub struct Proc {
    /// The name its log is under (its id).
    pub name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
    /// Job process groups it left running when it was SIGKILLed.
    orphans: Vec<i32>,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would, and reap it. Its jobs (each in its own
    /// process group) are left running, as they would be after a crash of
    /// the worker process alone; they are killed when the Proc is dropped.
    pub fn kill9(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.orphans.extend(job_groups(self.pid() as i32));
        let _ = self.child.kill();
        self.exited = self.child.wait().ok();
    }

    /// SIGTERM: the clean stop.
    pub fn term(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGSTOP: freeze it (its session then expires).
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT: thaw it.
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if self.exited.is_none() {
            // SAFETY: kill only sends a signal to our own unreaped child.
            unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
        }
    }

    /// Waits until the kernel shows it stopped (after [`Proc::stop`]).
    pub fn wait_stopped(&self, deadline: Instant) -> bool {
        wait_until(deadline, || {
            proc_stat(self.pid() as i32).is_some_and(|s| s.state == 'T')
        })
    }

    /// Waits for it to exit by itself; its status, or `None` at the deadline.
    pub fn wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        if self.exited.is_none() {
            wait_until(deadline, || {
                self.exited = self.child.try_wait().ok().flatten();
                self.exited.is_some()
            });
        }
        self.exited
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many lines of its log contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until its log has more than `seen` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, seen: usize, deadline: Instant) -> bool {
        wait_until(deadline, || self.log_count(needle) > seen)
    }

    /// True while it has not exited (a stopped process counts as running).
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited.is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            // Its jobs first, while it still holds them (unreaped), so their
            // group ids cannot name anything else.
            for pgid in job_groups(self.pid() as i32) {
                // SAFETY: killpg only sends a signal.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pgid in std::mem::take(&mut self.orphans) {
            // Only if that group still is a zkmw job (not a reused pid).
            let still_a_job = fs::read(format!("/proc/{pgid}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(b"ZKMW_TASK_ID="))
            }) && proc_stat(pgid).is_some_and(|s| s.pgrp == pgid);
            if still_a_job {
                // SAFETY: killpg only sends a signal.
                unsafe { libc::killpg(pgid, libc::SIGKILL) };
            }
        }
    }
}

/// The fields of /proc/PID/stat the harness uses.
struct ProcStat {
    state: char,
    ppid: i32,
    pgrp: i32,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ...": comm may hold anything, even ")".
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

/// True while process `pid` exists and is not a zombie. (Orphaned jobs are
/// reparented to pid 1, which on some machines never reaps them: a zombie
/// is gone for every purpose but this one.)
pub fn pid_alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// True while any process of group `pgid` exists and is not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .any(|pid| {
            proc_stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z' && s.state != 'X')
        })
}

/// Now, in unix milliseconds (the clock `status` times use).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A TCP port on 127.0.0.1 where nothing listens. It is taken below the
/// kernel's ephemeral range (32768 and up), so no outgoing connection gets
/// it as its own port meanwhile (nor connects to itself through it), and it
/// stays this process's (see [`reserve_port`]) even while the server given
/// it is stopped.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()) * 7919
        + SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos().into());
    for _ in 0..1000 {
        let n = seed + NEXT.fetch_add(1, Ordering::SeqCst) * 104_729;
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && reserve_port(port) {
            return port;
        }
    }
    panic!("no free port found in 20000..32000");
}

/// Takes `port` for this process until it exits: an exclusive flock on
/// `<temp dir>/zkmw-ports/<port>`, which every test process (and
/// `scripts/zk.sh free-ports`) checks, so that no other run on this machine
/// starts a server on a port of a node this one has stopped for a while.
/// False when another process holds it.
fn reserve_port(port: u16) -> bool {
    static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("zkmw-ports");
    let _ = fs::create_dir_all(&dir);
    let path = dir.join(port.to_string());
    let Ok(file) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .or_else(|_| File::open(&path))
    else {
        return false;
    };
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return false;
    }
    HELD.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(file);
    true
}

/// The job process groups `pid` started: its children leading their own group.
fn job_groups(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| proc_stat(child).is_some_and(|s| s.ppid == pid && s.pgrp == child))
        .collect()
}

/// A file jobs append their `$ZKMW_TASK_ID` to: one line per run.
pub struct Ledger {
    /// The file.
    pub path: PathBuf,
}

impl Ledger {
    /// The shell command that records one run of the current task.
    pub fn record(&self) -> String {
        format!("echo $ZKMW_TASK_ID >> '{}'", self.path.display())
    }

    /// How many runs each task id recorded.
    pub fn counts(&self) -> BTreeMap<String, usize> {
        let text = fs::read_to_string(&self.path).unwrap_or_default();
        let mut counts = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            *counts.entry(line.to_string()).or_default() += 1;
        }
        counts
    }

    /// Asserts that the ledger holds exactly `ids`, each once.
    pub fn assert_each_exactly_once(&self, ids: &[String]) {
        let counts = self.counts();
        let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "tasks that ran more than once: {twice:?}");
        let missing: Vec<_> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
        assert!(missing.is_empty(), "tasks that never ran: {missing:?}");
        let unknown: Vec<_> = counts.keys().filter(|id| !ids.contains(id)).collect();
        assert!(
            unknown.is_empty(),
            "runs of tasks nobody submitted: {unknown:?}"
        );
    }
}
