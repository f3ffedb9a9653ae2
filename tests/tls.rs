//! TLS to ZooKeeper (`--tls-ca`, `--tls-cert`, `--tls-key`) against servers
//! of `scripts/zk.sh tls-start` that this test binary starts, on free ports,
//! in a private folder that also holds their throwaway certificates (see
//! [`Servers`]):
//!
//! - the main one: a client certificate is optional (`clientAuth=want`);
//! - one that requires a client certificate (`clientAuth=need`).
//!
//! They are shared by the tests running at the same time, and stopped when
//! the last of those ends, pass or fail.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use common::namespace::connect_options;
use common::servers::ZkServers;
use common::{COMMAND_LIMIT, Namespace, describe, parse_json, run_bounded, secs, stderr, stdout};
use common::{Proc, SESSION_TIMEOUT, delete_tree, free_port, wait_until};
use serde_json::Value;
use zkmw::zk::{ConnectOptions, Zk, ZkError};

/// `--connect-timeout` of the commands expected to be refused.
const CONNECT_TIMEOUT: &str = "3s";
/// How long such a command may take in all: the connect timeout and a margin.
const REFUSAL_LIMIT: Duration = Duration::from_secs(8);

/// The TLS servers of the tests running now and their certificates, in one
/// folder. Each server starts when a test first asks for it; dropping the
/// last reference (the last test holding a [`Server`] ends) stops them all
/// and removes the folder. A test that starts later gets new ones.
struct Servers {
    files: ZkServers,
    /// (plain, TLS) ports of the `want` and the `need` server, once started.
    want: OnceLock<(u16, u16)>,
    need: OnceLock<(u16, u16)>,
}

impl Servers {
    /// The servers in use, or new (not yet started) ones.
    fn current() -> Arc<Servers> {
        static CURRENT: Mutex<Weak<Servers>> = Mutex::new(Weak::new());
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        current.upgrade().unwrap_or_else(|| {
            let servers = Arc::new(Servers {
                files: ZkServers::new("tls"),
                want: OnceLock::new(),
                need: OnceLock::new(),
            });
            *current = Arc::downgrade(&servers);
            servers
        })
    }

    /// Runs `scripts/zk.sh tls-start` on two free ports with this
    /// `clientAuth`; (plain, TLS) ports.
    fn start(&self, client_auth: &str) -> (u16, u16) {
        let (plain, secure) = (free_port(), free_port());
        self.files.zk_sh(
            &[
                ("ZKMW_TLS_PLAIN_PORT", plain.to_string()),
                ("ZKMW_TLS_PORT", secure.to_string()),
                ("ZKMW_TLS_CLIENT_AUTH", client_auth.to_string()),
            ],
            &["tls-start"],
        );
        (plain, secure)
    }
}

/// A TLS server of `scripts/zk.sh tls-start`; the servers stay up while a
/// value of it lives.
struct Server {
    /// `127.0.0.1:PORT` of its TLS port.
    secure: String,
    /// `127.0.0.1:PORT` of its plain port (for cleanup and checks).
    plain: String,
    _servers: Arc<Servers>,
}

/// The server with `clientAuth=need` when `need`, else the main one.
fn tls_server(need: bool) -> Server {
    let servers = Servers::current();
    let (started, client_auth) = if need {
        (&servers.need, "need")
    } else {
        (&servers.want, "want")
    };
    let (plain, secure) = *started.get_or_init(|| servers.start(client_auth));
    Server {
        secure: format!("127.0.0.1:{secure}"),
        plain: format!("127.0.0.1:{plain}"),
        _servers: servers,
    }
}

/// The main TLS server (client certificate optional).
fn server() -> Server {
    tls_server(false)
}

/// The TLS server that requires a client certificate.
fn need_server() -> Server {
    tls_server(true)
}

/// A file of the servers' `tls/` folder (made by tls-start), while a test
/// holds them.
fn tls_file(name: &str) -> String {
    let path: PathBuf = Servers::current().files.dir.join("tls").join(name);
    path.to_str().expect("utf-8 path").to_string()
}

/// `--tls-ca` with the CA that signed the servers' certificates.
fn ca() -> Vec<String> {
    vec!["--tls-ca".into(), tls_file("ca.pem")]
}

/// `--tls-ca` and a client certificate from the same CA, with its key as
/// PKCS#8 (`client-key.pem`) or PKCS#1 (`client-key-rsa.pem`).
fn ca_and_cert(key: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        tls_file("ca.pem"),
        "--tls-cert".into(),
        tls_file("client.pem"),
        "--tls-key".into(),
        tls_file(key),
    ]
}

/// One test's namespace on one TLS server. Commands get `--zk` (the TLS
/// port), `--root`, the session timeout and a one-second tick, then the
/// TLS flags the test gives. On a passing test the services are stopped
/// cleanly and the namespace is deleted through the plain port.
struct TlsNs {
    ns: Namespace,
    /// Credentials the namespace was made with, for the cleanup.
    creds: Option<String>,
    services: Vec<Proc>,
    /// Last: the server may stop once the services are gone.
    server: Server,
}

impl TlsNs {
    fn new(name: &str, server: Server) -> TlsNs {
        TlsNs {
            ns: Namespace::on(name, &server.plain),
            creds: None,
            services: Vec::new(),
            server,
        }
    }

    fn cmd(&self, tls: &[String]) -> Command {
        let mut cmd = self.ns.raw_cmd();
        cmd.args(["--zk", &self.server.secure, "--root", &self.ns.root])
            .args(["--session-timeout", SESSION_TIMEOUT])
            .args(tls)
            .env("ZKMW_TICK", "1s");
        cmd
    }

    fn run(&self, tls: &[String], args: &[&str]) -> Output {
        let mut cmd = self.cmd(tls);
        cmd.args(args);
        run_bounded(cmd, COMMAND_LIMIT)
    }

    /// Starts a service with its stderr (RUST_LOG=info) in `<dir>/<name>.log`.
    fn spawn(&mut self, name: &str, tls: &[String], args: &[&str]) -> usize {
        let log = self.ns.dir.join(format!("{name}.log"));
        let mut cmd = self.cmd(tls);
        cmd.args(args).env("RUST_LOG", "info");
        self.services.push(Proc::spawn(name, cmd, &log));
        self.services.len() - 1
    }

    /// Polls `status --json` (with `tls`) until `cond` holds.
    fn wait_for(&self, tls: &[String], what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(secs(20), || {
            last = parse_json(&self.run(tls, &["status", "--json"]), "status --json");
            cond(&last)
        });
        assert!(ok, "never saw {what} over TLS; last status: {last}");
        last
    }

    /// Master m1 and worker w1, each with its TLS flags, both live.
    fn start_cluster(&mut self, master_tls: &[String], worker_tls: &[String]) {
        self.spawn("m1", master_tls, &["master", "--id", "m1"]);
        self.spawn(
            "w1",
            worker_tls,
            &["worker", "--id", "w1", "--threads", "2"],
        );
        self.wait_for(master_tls, "master m1 and worker w1 live", |s| {
            s["master"]["id"] == "m1"
                && s["workers"].as_array().is_some_and(|w| w.len() == 1)
                && s["workers"][0]["id"] == "w1"
        });
    }

    /// A library session through the plain port of the same server.
    fn plain_library(&self) -> Zk {
        Zk::connect(&ConnectOptions {
            auth: self.creds.clone(),
            ..connect_options(&self.server.plain)
        })
        .expect("library session to the TLS server's plain port")
    }
}

impl Drop for TlsNs {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("===== TLS server {}:", self.server.secure);
            for service in &self.services {
                eprintln!("----- {} -----\n{}", service.name, service.log());
            }
            return;
        }
        for service in &mut self.services {
            service.term();
        }
        for service in &mut self.services {
            service.wait_exit(secs(15));
        }
        delete_tree(&self.plain_library(), &self.ns.root);
    }
}

/// A command that must be refused: exit 125 within [`REFUSAL_LIMIT`], one
/// line on stderr starting `zkmw: ` naming the server. Returns the message.
fn assert_refused(t: &TlsNs, tls: &[String], args: &[&str], what: &str) -> String {
    let mut all = vec!["--connect-timeout", CONNECT_TIMEOUT];
    all.extend_from_slice(args);
    let started = Instant::now();
    let out = t.run(tls, &all);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(125), "{what}: {}", describe(&out));
    assert!(took < REFUSAL_LIMIT, "{what}: refused only after {took:?}");
    let err = stderr(&out);
    assert!(
        err.starts_with("zkmw: ") && err.contains(&t.server.secure),
        "{what}: one `zkmw: ` line naming {}: {}",
        t.server.secure,
        describe(&out)
    );
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err:?}");
    assert_eq!(stdout(&out), "", "{what}: nothing on stdout");
    eprintln!("{what}: refused after {took:.1?}: {}", err.trim_end());
    err
}

/// [`assert_refused`] for several commands at once (each waits out its
/// connect timeout, so they run side by side). Messages in order.
fn assert_all_refused(t: &TlsNs, cases: &[(&[String], &[&str], &str)]) -> Vec<String> {
    std::thread::scope(|s| {
        let running: Vec<_> = cases
            .iter()
            .map(|(tls, args, what)| s.spawn(move || assert_refused(t, tls, args, what)))
            .collect();
        running
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[test]
fn round_trip_over_tls() {
    let mut t = TlsNs::new("tls-round-trip", server());
    t.start_cluster(&ca(), &ca());
    let out = t.run(
        &ca(),
        &["submit", "--wait", "--wait-timeout", "30s", "echo tls"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "tls\n", "{}", describe(&out));
    let out = t.run(
        &ca(),
        &[
            "submit",
            "--wait",
            "--wait-timeout",
            "30s",
            "echo e >&2; exit 5",
        ],
    );
    assert_eq!(out.status.code(), Some(5), "{}", describe(&out));
    assert!(stderr(&out).contains('e'), "{}", describe(&out));

    // It all happened on that server: two results under the namespace.
    let results = t
        .plain_library()
        .children(&t.ns.layout().status())
        .expect("list /status through the plain port");
    assert_eq!(results.len(), 2, "{results:?}");
}

#[test]
fn client_without_the_ca_is_refused_in_bounded_time() {
    let t = TlsNs::new("tls-no-ca", server());
    // No --tls-ca: plain ZooKeeper protocol to the TLS port.
    assert_all_refused(
        &t,
        &[
            (&[], &["status"], "status without --tls-ca"),
            (&[], &["submit", "echo x"], "submit without --tls-ca"),
        ],
    );
    assert_eq!(
        t.plain_library().exists(&t.ns.root),
        Ok(None),
        "nothing may be created"
    );
}

#[test]
fn client_with_the_wrong_ca_is_refused_saying_tls() {
    let t = TlsNs::new("tls-wrong-ca", server());
    let wrong = vec!["--tls-ca".to_string(), tls_file("other-ca.pem")];
    let messages = assert_all_refused(
        &t,
        &[
            (&wrong, &["status"], "status with the wrong CA"),
            (&wrong, &["submit", "echo x"], "submit with the wrong CA"),
        ],
    );
    for err in messages {
        assert!(err.contains("TLS"), "the message should mention TLS: {err}");
        assert!(
            err.contains("--tls-ca"),
            "the message should point at --tls-ca: {err}"
        );
    }
    assert_eq!(t.plain_library().exists(&t.ns.root), Ok(None));
}

#[test]
fn master_with_the_wrong_ca_never_leads_and_says_tls() {
    let mut t = TlsNs::new("tls-wrong-ca-master", server());
    let wrong = vec!["--tls-ca".to_string(), tls_file("other-ca.pem")];
    let i = t.spawn("m-wrong-ca", &wrong, &["master", "--id", "m-wrong-ca"]);
    let said = wait_until(secs(20), || t.services[i].log().contains("TLS"));
    assert!(
        said,
        "a master that cannot complete the TLS handshake should say TLS in its log:\n{}",
        t.services[i].log()
    );
    let status = parse_json(&t.run(&ca(), &["status", "--json"]), "status --json");
    assert_eq!(status["master"], Value::Null, "{status}");
    // It has no session to close: SIGKILL rather than wait for it to notice
    // SIGTERM between two connection attempts.
    drop(t.services.remove(i));
}

#[test]
fn client_certificate_is_accepted_with_pkcs8_and_pkcs1_keys() {
    let mut t = TlsNs::new("tls-client-cert", server());
    let pkcs8 = ca_and_cert("client-key.pem");
    let pkcs1 = ca_and_cert("client-key-rsa.pem");
    t.start_cluster(&pkcs8, &pkcs1);
    for tls in [&pkcs8, &pkcs1] {
        let out = t.run(
            tls,
            &["submit", "--wait", "--wait-timeout", "30s", "echo cert"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        assert_eq!(stdout(&out), "cert\n");
    }
}

#[test]
fn client_certificate_from_an_unknown_ca_is_refused() {
    let t = TlsNs::new("tls-untrusted-cert", server());
    let untrusted = vec![
        "--tls-ca".to_string(),
        tls_file("ca.pem"),
        "--tls-cert".into(),
        tls_file("other-client.pem"),
        "--tls-key".into(),
        tls_file("other-client-key.pem"),
    ];
    let err = assert_refused(
        &t,
        &untrusted,
        &["status"],
        "status with an untrusted certificate",
    );
    assert!(err.contains("TLS"), "the message should mention TLS: {err}");
}

#[test]
fn server_requiring_a_client_certificate() {
    let mut t = TlsNs::new("tls-need", need_server());
    let no_cert = ca();
    let messages = assert_all_refused(
        &t,
        &[
            (&no_cert, &["status"], "status without a certificate (need)"),
            (
                &no_cert,
                &["submit", "echo x"],
                "submit without a certificate (need)",
            ),
        ],
    );
    for err in messages {
        assert!(err.contains("TLS"), "the message should mention TLS: {err}");
    }

    let cert = ca_and_cert("client-key.pem");
    t.start_cluster(&cert, &ca_and_cert("client-key-rsa.pem"));
    let out = t.run(
        &cert,
        &["submit", "--wait", "--wait-timeout", "30s", "echo need"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(stdout(&out), "need\n");
}

#[test]
fn unusable_tls_files_are_refused_at_once() {
    let t = TlsNs::new("tls-bad-files", server());
    let missing = t.ns.dir.join("missing.pem");
    let missing = missing.to_str().expect("utf-8 path").to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tls-ca".into(), missing.clone()],
            "cannot read --tls-ca",
        ),
        (
            vec!["--tls-ca".into(), tls_file("client-key.pem")],
            "the TLS CA is not a usable PEM certificate",
        ),
        (
            [ca(), vec!["--tls-cert".into(), tls_file("client.pem")]].concat(),
            "--tls-key",
        ),
        (
            [
                ca(),
                vec![
                    "--tls-cert".into(),
                    tls_file("client.pem"),
                    "--tls-key".into(),
                    tls_file("ca.pem"),
                ],
            ]
            .concat(),
            "the TLS client certificate or key is not usable PEM",
        ),
    ];
    for (tls, want) in &cases {
        for role in [vec!["status"], vec!["master", "--id", "m1"]] {
            let started = Instant::now();
            let out = t.run(tls, &role);
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(125),
                "{tls:?} {role:?}: {}",
                describe(&out)
            );
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{tls:?} {role:?}: took {:?}",
                started.elapsed()
            );
            assert!(
                err.starts_with("zkmw: ") && err.contains(want),
                "{tls:?} {role:?}: expected a message with {want:?}: {}",
                describe(&out)
            );
        }
    }
}

#[test]
fn auth_and_tls_together() {
    let mut t = TlsNs::new("tls-auth", server());
    let creds = "ops:tls-secret";
    t.creds = Some(creds.to_string());
    let with_auth = [ca(), vec!["--auth".into(), creds.into()]].concat();
    let out = t.run(&with_auth, &["submit", "echo both"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let task = stdout(&out).trim().to_string();
    let view = parse_json(
        &t.run(&with_auth, &["status", &task, "--json"]),
        "status TASK",
    );
    assert_eq!(view["state"], "pending", "{view}");
    let out = t.run(&ca(), &["status", &task]);
    assert_eq!(out.status.code(), Some(125), "{}", describe(&out));
    assert!(
        stderr(&out).starts_with(&format!("zkmw: not authorized for {}:", t.ns.root)),
        "{}",
        describe(&out)
    );
    let mut anonymous = connect_options(&t.server.plain);
    let zk = Zk::connect(&anonymous).expect("plain session");
    assert_eq!(
        zk.get(&t.ns.layout().task(&task)).map(|n| n.is_some()),
        Err(ZkError::NoAuth)
    );
    anonymous.auth = Some(creds.to_string());
    let zk = Zk::connect(&anonymous).expect("plain session with auth");
    assert!(matches!(zk.get(&t.ns.layout().task(&task)), Ok(Some(_))));
}
