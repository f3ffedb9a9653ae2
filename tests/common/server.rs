//! The shared test server: env `ZKMW_TEST_ZK` (which `scripts/test.sh` sets
//! to the standalone server it started), checked once with `ruok`; without
//! it, a standalone server of this test process on a free port, stopped
//! when the process exits.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use super::ports::free_port;
use super::servers::ZkServers;

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
    static SERVER: OnceLock<ZkServers> = OnceLock::new();
    extern "C" fn stop_at_exit() {
        if let Some(server) = SERVER.get() {
            server.stop_and_remove();
        }
    }
    let port = free_port();
    let server = SERVER.get_or_init(|| ZkServers::new("standalone"));
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
