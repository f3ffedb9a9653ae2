//! Health checks through a ZooKeeper outage of a minute: `/healthz` turns
//! 503 (saying why) while the server is down and 200 again once it is
//! back, `/readyz` with it; and the outage costs each role a handful of
//! log lines, not one per retry.

mod common;

use std::time::{Duration, Instant};

use common::http::{get, status_of};
use common::servers::Standalone;
use common::{Namespace, Proc, free_port, secs, wait_until};

/// The session timeout users get by default.
const DEFAULT_SESSION: &str = "5s";

/// How long ZooKeeper stays down.
const OUTAGE: Duration = Duration::from_secs(60);

/// Most log lines a role may write about one outage.
const HANDFUL: usize = 8;

/// Waits until both endpoints answer `path` with `status`.
fn wait_for(ports: [u16; 2], path: &str, status: u16, deadline: Instant) {
    let mut last = Vec::new();
    let ok = wait_until(deadline, || {
        last = ports.iter().map(|p| get(*p, path)).collect();
        ports.iter().all(|p| status_of(*p, path) == status)
    });
    assert!(
        ok,
        "{path} never answered {status} on {ports:?}; last: {last:?}"
    );
}

fn lines(role: &Proc) -> usize {
    role.log().lines().count()
}

#[test]
fn health_follows_a_zookeeper_outage_and_the_outage_logs_a_handful_of_lines() {
    let zk = Standalone::start("health-outage");
    let hosts = zk.hosts();
    let ns = Namespace::on("health-outage", &hosts);
    let ports = [free_port(), free_port()];
    let (m, w) = (ports[0].to_string(), ports[1].to_string());
    let master = ns.spawn_with(
        "m1",
        &hosts,
        DEFAULT_SESSION,
        &["master", "--id", "m1", "--http", &m],
    );
    let worker = ns.spawn_with(
        "w1",
        &hosts,
        DEFAULT_SESSION,
        &["worker", "--id", "w1", "--http", &w],
    );
    wait_for(ports, "/healthz", 200, secs(20));
    wait_for(ports, "/readyz", 200, secs(20));
    let before = [lines(&master), lines(&worker)];

    let down = Instant::now();
    zk.stop();
    wait_for(ports, "/healthz", 503, secs(15));
    for port in ports {
        let (_, why) = get(port, "/healthz").unwrap_or_default();
        assert!(
            why.starts_with("not connected to ZooKeeper for "),
            "{why:?}"
        );
    }
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    zk.restart();
    wait_for(ports, "/healthz", 200, secs(30));
    // The worker gave its session up during the outage: ready once it
    // registered again.
    wait_for(ports, "/readyz", 200, secs(30));

    for (role, before) in [(&master, before[0]), (&worker, before[1])] {
        let said = lines(role) - before;
        eprintln!(
            "{}: {said} log lines about an outage of {OUTAGE:?}",
            role.name
        );
        assert!(
            said <= HANDFUL,
            "{} wrote {said} lines about the outage:\n{}",
            role.name,
            role.log()
        );
    }
}
