//! Why no ZooKeeper server answered, host by host, for the message
//! [`super::Zk::connect`] gives up with: the client only says it timed
//! out, whether the name did not resolve, the port was closed or the
//! server was silent.

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long one TCP connect of the diagnosis may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the whole diagnosis may take (a name lookup has no timeout of
/// its own; hosts are probed at once, each in its own thread).
const DIAGNOSIS_LIMIT: Duration = Duration::from_secs(2);

/// One line, for each `host:port` of the comma list `hosts`, of what
/// connecting to it does now, e.g. `zk1:2181: cannot resolve host;
/// 127.0.0.1:2199: connection refused`. `waited` is how long the client
/// tried, for hosts that accept a connection and then say nothing.
pub fn unreachable(hosts: &str, waited: Duration) -> String {
    let deadline = Instant::now() + DIAGNOSIS_LIMIT;
    let probes: Vec<(String, mpsc::Receiver<String>)> = hosts
        .split(',')
        .map(|host| {
            let host = host.trim().to_string();
            let (tx, rx) = mpsc::channel();
            let target = host.clone();
            thread::spawn(move || tx.send(probe(&target, waited)));
            (host, rx)
        })
        .collect();
    let lines: Vec<String> = probes
        .into_iter()
        .map(|(host, rx)| {
            let left = deadline.saturating_duration_since(Instant::now());
            let what = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| format!("no answer within {} s", DIAGNOSIS_LIMIT.as_secs()));
            format!("{host}: {what}")
        })
        .collect();
    lines.join("; ")
}

/// What resolving `host` and connecting to each of its addresses does.
fn probe(host: &str, waited: Duration) -> String {
    let addrs: Vec<SocketAddr> = match host.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(_) => return "cannot resolve host".into(),
    };
    let mut failure = String::from("cannot resolve host");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => {
                return format!(
                    "accepts connections but did not answer within {:.1} s",
                    waited.as_secs_f64()
                );
            }
            Err(err) => failure = connect_failure(&err, waited),
        }
    }
    failure
}

/// A failed TCP connect in a few words.
fn connect_failure(err: &std::io::Error, waited: Duration) -> String {
    match err.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("did not answer within {:.1} s", waited.as_secs_f64())
        }
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const WAITED: Duration = Duration::from_secs(3);

    #[test]
    fn a_closed_port_is_refused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let host = format!("127.0.0.1:{port}");
        assert_eq!(
            unreachable(&host, WAITED),
            format!("{host}: connection refused")
        );
    }

    #[test]
    fn an_unknown_name_does_not_resolve() {
        assert_eq!(
            unreachable("no-such-host.invalid:2181", WAITED),
            "no-such-host.invalid:2181: cannot resolve host"
        );
    }

    #[test]
    fn a_listening_silent_server_did_not_answer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        assert_eq!(
            unreachable(&format!(" {host}"), WAITED),
            format!("{host}: accepts connections but did not answer within 3.0 s")
        );
    }

    #[test]
    fn each_host_is_reported_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let said = unreachable(&format!("no-such-host.invalid:1,{open}"), WAITED);
        let parts: Vec<&str> = said.split("; ").collect();
        assert_eq!(parts.len(), 2, "{said}");
        assert!(parts[0].ends_with("cannot resolve host"), "{said}");
        assert!(parts[1].starts_with(&open), "{said}");
    }
}
