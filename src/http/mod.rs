//! The HTTP endpoint of a long-running role (`--http ADDR`), served by
//! `tiny_http` (a small synchronous server) on threads of its own:
//!
//! - `/metrics`: the role's metrics, Prometheus text format;
//! - `/healthz`, `/readyz`: 200 `ok`, or 503 with a one-line reason;
//! - on a master, `/` the status page, `/api/status` and `/api/tasks` (what
//!   `zkmw status --json` and `zkmw tasks --json` print).
//!
//! A scrape or a health check reads only what the role's loops recorded
//! (`crate::obs`). The master's page and API read ZooKeeper through the
//! viewer's functions (`crate::status`, via [`glance`]), on these threads,
//! at most once a second: so this module, not the master, imports the
//! viewer, and the master's loop never waits for a request. The endpoint
//! has no authentication: see README for what it shows.

mod chart;
mod glance;
mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use log::{debug, warn};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::layout::Layout;
use crate::model;
use crate::obs::Obs;
use crate::obs::health::Stage;
use crate::obs::metrics::{Metrics, Role};
pub use glance::Glances;

/// Threads serving requests: a page waiting for ZooKeeper leaves the
/// others to scrapes and health checks.
const THREADS: usize = 4;

/// What the endpoint serves.
pub struct Endpoint {
    obs: Obs,
    /// The role's id, for the page.
    id: String,
    /// The master's view of the cluster; `None` on a worker.
    glances: Option<Glances>,
}

impl Endpoint {
    /// A worker's endpoint: metrics and health.
    pub fn worker(obs: Obs, id: &str) -> Endpoint {
        Endpoint {
            obs,
            id: id.to_string(),
            glances: None,
        }
    }

    /// A master's endpoint: metrics, health, and the page and API over
    /// the namespace `layout` (job output kept off them if `no_output`).
    pub fn master(obs: Obs, id: &str, layout: Layout, no_output: bool) -> Endpoint {
        Endpoint {
            glances: Some(Glances::new(layout, obs.clone(), no_output)),
            obs,
            id: id.to_string(),
        }
    }
}

/// An HTTP answer, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The Content-Type.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

impl Reply {
    fn new(status: u16, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body,
        }
    }

    /// 200 `ok`, or 503 with the reason.
    fn verdict(verdict: Result<(), String>) -> Reply {
        match verdict {
            Ok(()) => Reply::new(200, TEXT, "ok\n".into()),
            Err(why) => Reply::new(503, TEXT, format!("{why}\n")),
        }
    }
}

/// Listens on `addr` and serves `endpoint` on threads of their own for as
/// long as the process runs; the address it listens on (the port chosen,
/// for port 0).
pub fn start(addr: SocketAddr, endpoint: Endpoint) -> Result<SocketAddr, String> {
    let server =
        Server::http(addr).map_err(|err| format!("--http {addr}: cannot listen: {err}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("--http {addr}: not an IP address"))?;
    let server = Arc::new(server);
    let endpoint = Arc::new(endpoint);
    for n in 0..THREADS {
        let (server, endpoint) = (server.clone(), endpoint.clone());
        let started = thread::Builder::new()
            .name(format!("http-{n}"))
            .spawn(move || serve(&server, &endpoint));
        if let Err(err) = started {
            warn!("cannot start an HTTP thread: {err}");
        }
    }
    Ok(bound)
}

/// Answers requests until the server fails.
fn serve(server: &Server, endpoint: &Endpoint) {
    while let Ok(request) = server.recv() {
        respond(request, endpoint);
    }
}

fn respond(request: Request, endpoint: &Endpoint) {
    let head = *request.method() == Method::Head;
    let reply = match request.method() {
        Method::Get | Method::Head => reply(endpoint, request.url()),
        _ => Reply::new(405, TEXT, "only GET and HEAD\n".into()),
    };
    let mut response = Response::from_string(if head { String::new() } else { reply.body })
        .with_status_code(reply.status);
    for (name, value) in [
        ("Content-Type", reply.content_type),
        ("Cache-Control", "no-store"),
    ] {
        if let Ok(header) = Header::from_bytes(name, value) {
            response.add_header(header);
        }
    }
    if let Err(err) = request.respond(response) {
        debug!("HTTP: answering a request: {err}");
    }
}

/// The answer to a GET of `url`.
pub fn reply(endpoint: &Endpoint, url: &str) -> Reply {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let obs = &endpoint.obs;
    match (path, &endpoint.glances) {
        ("/metrics", _) => Reply::new(200, Metrics::CONTENT_TYPE, obs.metrics().encode()),
        ("/healthz", _) => Reply::verdict(obs.health().healthy()),
        ("/readyz", _) => Reply::verdict(obs.health().ready()),
        ("/", Some(glances)) => {
            let me = format!("{} ({})", endpoint.id, master_stage(obs));
            Reply::new(
                200,
                HTML,
                page::render(&glances.sight(), &me, model::now_ms()),
            )
        }
        ("/api/status", Some(glances)) => api(glances, |g| serde_json::to_string(&g.cluster)),
        ("/api/tasks", Some(glances)) => api(glances, |g| serde_json::to_string(&g.tasks)),
        _ => Reply::new(404, TEXT, index(obs.role())),
    }
}

/// A JSON view of a fresh read, or 503 with why there is none.
fn api(glances: &Glances, json: impl Fn(&glance::Glance) -> serde_json::Result<String>) -> Reply {
    let sight = glances.sight();
    match (sight.glance, sight.trouble) {
        (Some(glance), None) => Reply::new(200, JSON, json(&glance).unwrap_or_default() + "\n"),
        (_, trouble) => Reply::new(
            503,
            TEXT,
            format!("{}\n", trouble.unwrap_or_else(|| "no view yet".into())),
        ),
    }
}

/// A master's stage in a word, for the page.
fn master_stage(obs: &Obs) -> &'static str {
    match obs.health().facts().stage {
        Stage::Active => "active",
        Stage::Standby => "standby",
        _ => "not active",
    }
}

/// What a path that names nothing gets: the paths there are.
fn index(role: Role) -> String {
    match role {
        Role::Master => "not found: try /, /api/status, /api/tasks, /metrics, /healthz, /readyz\n",
        Role::Worker => "not found: try /metrics, /healthz, /readyz\n",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn worker() -> Endpoint {
        let obs = Obs::new(Role::Worker, Duration::from_secs(2), Duration::from_secs(5));
        Endpoint::worker(obs, "w1")
    }

    #[test]
    fn routes_what_each_role_serves() {
        let w = worker();
        let metrics = reply(&w, "/metrics");
        assert_eq!(metrics.status, 200);
        assert!(
            metrics.body.contains("zkmw_worker_threads"),
            "{}",
            metrics.body
        );
        assert_eq!(reply(&w, "/metrics?x=1").status, 200);
        assert_eq!(
            reply(&w, "/healthz"),
            Reply::new(503, TEXT, "not connected to ZooKeeper yet\n".into())
        );
        assert_eq!(
            reply(&w, "/readyz"),
            Reply::new(503, TEXT, "connecting to ZooKeeper\n".into())
        );
        assert_eq!(reply(&w, "/").status, 404, "a worker has no page");
        assert_eq!(reply(&w, "/api/status").status, 404);
    }

    /// The page of a master with no session yet says so, and its API
    /// answers 503 rather than stale or empty JSON.
    #[test]
    fn a_master_without_a_session_says_so() {
        let obs = Obs::new(Role::Master, Duration::from_secs(2), Duration::from_secs(5));
        let m = Endpoint::master(obs, "m1", Layout::new("/zkmw"), false);
        let page = reply(&m, "/");
        assert_eq!((page.status, page.content_type), (200, HTML));
        assert!(
            page.body.contains("not connected to ZooKeeper"),
            "{}",
            page.body
        );
        assert_eq!(reply(&m, "/api/tasks").status, 503);
    }

    #[test]
    fn listens_on_the_port_it_was_given_or_one_it_chose() {
        let bound = start("127.0.0.1:0".parse().expect("addr"), worker()).expect("listens");
        assert_ne!(bound.port(), 0);
        let taken = start(bound, worker()).expect_err("the port is taken");
        assert!(
            taken.starts_with(&format!("--http {bound}: cannot listen")),
            "{taken}"
        );
    }
}
