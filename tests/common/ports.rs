//! Free ports for the servers tests start, that no other test process on
//! this machine takes meanwhile.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

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
