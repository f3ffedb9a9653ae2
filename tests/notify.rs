//! The systemd notify protocol, with a Unix datagram socket of the test's
//! own standing in for the service manager: READY only once a worker is
//! registered (a master once active or a standby watching), STATUS lines
//! saying what it does, STOPPING on SIGTERM, and watchdog pings at the
//! rate asked while the control loop turns, none while it is stuck.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::{Namespace, SESSION_TIMEOUT, secs};

/// The service manager's socket: every datagram it gets, with its time.
struct Manager {
    /// What `NOTIFY_SOCKET` says: a path, or `@name` for an abstract socket.
    name: String,
    /// The socket's file, removed on drop.
    file: Option<PathBuf>,
    messages: Receiver<(Instant, String)>,
}

impl Manager {
    /// A socket at a path: short, under the system temp dir (a socket path
    /// has at most 107 bytes, and the tests' own folders are longer).
    fn at_path(name: &str) -> Manager {
        let path = std::env::temp_dir().join(format!("zkmw-{}-{name}.sock", unique()));
        let socket = UnixDatagram::bind(&path).expect("notify socket");
        Manager::reading(socket, path.display().to_string(), Some(path))
    }

    /// An abstract socket (`@name`), as service managers may give.
    fn abstract_named(name: &str) -> Manager {
        let name = format!("zkmw-{}-{name}", unique());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let socket = UnixDatagram::bind_addr(&addr).expect("notify socket");
        Manager::reading(socket, format!("@{name}"), None)
    }

    /// Reads `socket` on a thread, which ends once this value is dropped.
    fn reading(socket: UnixDatagram, name: String, file: Option<PathBuf>) -> Manager {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("read timeout");
        let (tx, messages) = channel();
        std::thread::spawn(move || {
            let mut buf = vec![0; 4096];
            loop {
                if let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if tx.send((Instant::now(), text)).is_err() {
                        return;
                    }
                } else if tx.send((Instant::now(), String::new())).is_err() {
                    // A timeout: sent empty, only to learn whether to end.
                    return;
                }
            }
        });
        Manager {
            name,
            file,
            messages,
        }
    }

    /// The `NOTIFY_SOCKET` value that names it.
    fn socket(&self) -> String {
        self.name.clone()
    }

    /// The next datagram holding a line that starts with `line`, or `None`
    /// at the deadline; the datagrams before it are dropped.
    fn wait_for(&self, line: &str, deadline: Instant) -> Option<String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok((_, text)) if text.lines().any(|l| l.starts_with(line)) => return Some(text),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The times of the watchdog pings received during `how_long`.
    fn pings(&self, how_long: Duration) -> Vec<Instant> {
        let end = Instant::now() + how_long;
        let mut times = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.messages.recv_timeout(left) {
                Ok((at, text)) if text.lines().any(|l| l == "WATCHDOG=1") => times.push(at),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        times
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            let _ = std::fs::remove_file(file);
        }
    }
}

/// A name no other test process uses.
fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{}-{nanos}", std::process::id())
}

/// The longest time between two of `times`, counting from `from`.
fn longest_gap(from: Instant, times: &[Instant]) -> Duration {
    let mut last = from;
    let mut longest = Duration::ZERO;
    for at in times {
        longest = longest.max(at.saturating_duration_since(last));
        last = *at;
    }
    longest
}

#[test]
fn a_worker_is_ready_once_registered_and_stopping_on_sigterm() {
    let ns = Namespace::new("notify-worker");
    let proxy = Proxy::start(common::zk());
    proxy.blackhole();
    let manager = Manager::at_path("w1");
    let socket = manager.socket();
    let mut w1 = ns.spawn_env(
        "w1",
        &proxy.addr(),
        SESSION_TIMEOUT,
        &[("NOTIFY_SOCKET", &socket)],
        &["worker", "--id", "w1"],
    );
    let waiting = format!("STATUS=waiting for ZooKeeper at {}", proxy.addr());
    assert!(
        manager.wait_for(&waiting, secs(10)).is_some(),
        "no waiting status: {}",
        w1.log()
    );
    // Up, but not serving: no READY.
    assert_eq!(manager.wait_for("READY=1", secs(3)), None);
    assert!(Namespace::live_workers(&ns.status_json()).is_empty());

    proxy.heal();
    let ready = manager
        .wait_for("READY=1", secs(20))
        .unwrap_or_else(|| panic!("never ready: {}", w1.log()));
    assert!(
        ready.contains("STATUS=worker w1: registered, 4 threads\n"),
        "{ready:?}"
    );
    assert_eq!(Namespace::live_workers(&ns.status_json()), ["w1"]);

    w1.term();
    let stopping = manager
        .wait_for("STOPPING=1", secs(10))
        .unwrap_or_else(|| panic!("no STOPPING: {}", w1.log()));
    assert!(
        stopping.contains("STATUS=worker w1: draining, 0 jobs to finish\n")
            && stopping.contains("EXTEND_TIMEOUT_USEC="),
        "{stopping:?}"
    );
    assert!(w1.wait_exit(secs(15)).is_some_and(|s| s.success()));
}

#[test]
fn a_master_is_ready_when_active_or_a_standby_watching() {
    let ns = Namespace::new("notify-master");
    let first = Manager::abstract_named("m1");
    let second = Manager::abstract_named("m2");
    let (s1, s2) = (first.socket(), second.socket());
    let start = |id: &str, socket: &str| {
        let env = [("NOTIFY_SOCKET", socket)];
        ns.spawn_env(
            id,
            ns.hosts(),
            SESSION_TIMEOUT,
            &env,
            &["master", "--id", id],
        )
    };
    let _m1 = start("m1", &s1);
    let ready = first.wait_for("READY=1", secs(15)).expect("m1 ready");
    assert!(ready.contains("STATUS=active master, epoch "), "{ready:?}");
    let _m2 = start("m2", &s2);
    let ready = second.wait_for("READY=1", secs(15)).expect("m2 ready");
    let standby = format!("STATUS=standby master, watching {}/master\n", ns.root);
    assert!(ready.contains(&standby), "{ready:?}");
}

#[test]
fn the_watchdog_is_pinged_by_the_control_loop_and_not_while_it_is_stuck() {
    let ns = Namespace::new("notify-watchdog");
    let proxy = Proxy::start(common::zk());
    let manager = Manager::abstract_named("w1");
    let socket = manager.socket();
    // A 1 s watchdog: a ping every 0.5 s. A 5 s session: a call stuck on a
    // silent network is given up after seconds.
    let env = [
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "1000000"),
    ];
    let w1 = ns.spawn_env("w1", &proxy.addr(), "5s", &env, &["worker", "--id", "w1"]);
    assert!(
        manager.wait_for("READY=1", secs(20)).is_some(),
        "{}",
        w1.log()
    );

    let from = Instant::now();
    let pings = manager.pings(Duration::from_secs(4));
    assert!(
        (6..=12).contains(&pings.len()),
        "{} pings in 4 s",
        pings.len()
    );
    let gap = longest_gap(from, &pings);
    assert!(gap < Duration::from_secs(1), "a {gap:?} gap while healthy");

    // A silent network: the loop's next round hangs in its call, and no
    // ping goes out meanwhile, past the watchdog's 1 s.
    proxy.blackhole();
    let from = Instant::now();
    let pings = manager.pings(Duration::from_secs(5));
    let gap = longest_gap(from, &pings);
    assert!(
        gap > Duration::from_millis(1500),
        "the pings went on while the loop was stuck (longest gap {gap:?}): {}",
        w1.log()
    );
    proxy.heal();
}
