//! Telling the service manager how a service stands: the systemd notify
//! protocol (`sd_notify(3)`), one datagram of `NAME=value` lines to the
//! Unix socket named in `NOTIFY_SOCKET`, so a `Type=notify` unit knows
//! when zkmw really serves (`READY=1`), what it is doing (`STATUS=`), that
//! it is stopping (`STOPPING=1`), and, with `WatchdogSec=`, that its
//! control loop still turns (`WATCHDOG=1`, sent from the loop itself, so a
//! wedged loop stops sending and is restarted).
//!
//! Outside systemd (no `NOTIFY_SOCKET`) every call does nothing. The
//! protocol is per process, so the state is too: one lazily made sender.

use std::ffi::OsStr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use log::debug;

/// The socket to notify, and the watchdog's pace.
struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// How often to ping: half the watchdog timeout, as systemd advises.
    ping_every: Option<Duration>,
    /// When the next ping is due.
    next_ping: Mutex<Instant>,
}

/// This process's notifier, made from the environment on first use.
fn notifier() -> Option<&'static Notifier> {
    static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();
    NOTIFIER
        .get_or_init(|| {
            let addr = socket_addr(&std::env::var_os("NOTIFY_SOCKET")?)?;
            let socket = UnixDatagram::unbound().ok()?;
            let timeout = watchdog_timeout(
                std::env::var("WATCHDOG_USEC").ok().as_deref(),
                std::env::var("WATCHDOG_PID").ok().as_deref(),
                std::process::id(),
            );
            Some(Notifier {
                socket,
                addr,
                ping_every: timeout.map(|t| t / 2),
                next_ping: Mutex::new(Instant::now()),
            })
        })
        .as_ref()
}

/// The address `NOTIFY_SOCKET` names: a path, or an abstract socket
/// (`@name`); `None` for anything else.
fn socket_addr(name: &OsStr) -> Option<SocketAddr> {
    let bytes = name.as_bytes();
    match bytes.first()? {
        b'@' => SocketAddr::from_abstract_name(&bytes[1..]).ok(),
        b'/' => SocketAddr::from_pathname(name).ok(),
        _ => None,
    }
}

/// The watchdog timeout systemd asks for (`WATCHDOG_USEC`), when it is
/// meant for this process (`WATCHDOG_PID`, when set, is `pid`).
fn watchdog_timeout(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if for_pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(pid)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// One datagram: the fields as `NAME=value` lines; a status is kept to one
/// line (a newline would start a field).
fn message(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(name, value)| format!("{name}={}\n", value.replace('\n', " ")))
        .collect()
}

fn send(fields: &[(&str, &str)]) {
    let Some(n) = notifier() else { return };
    if let Err(err) = n.socket.send_to_addr(message(fields).as_bytes(), &n.addr) {
        debug!("cannot notify the service manager: {err}");
    }
}

/// The service serves now; `status` says how.
pub fn ready(status: &str) {
    send(&[("READY", "1"), ("STATUS", status)]);
}

/// What the service is doing, in one line.
pub fn status(status: &str) {
    send(&[("STATUS", status)]);
}

/// The service is stopping; it needs up to `within` more to be done (the
/// manager extends its stop timeout by as much).
pub fn stopping(status: &str, within: Duration) {
    let usec = within.as_micros().to_string();
    send(&[
        ("STOPPING", "1"),
        ("STATUS", status),
        ("EXTEND_TIMEOUT_USEC", &usec),
    ]);
}

/// From a control loop, on each turn: pings the watchdog when a ping is
/// due. Nothing when no watchdog is asked for.
pub fn watchdog() {
    let Some(n) = notifier() else { return };
    let Some(every) = n.ping_every else { return };
    let mut next = n.next_ping.lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    if now >= *next {
        *next = now + every;
        drop(next);
        send(&[("WATCHDOG", "1")]);
    }
}

/// When the next watchdog ping is due, for a control loop's wake-up.
pub fn next_ping() -> Option<Instant> {
    let n = notifier()?;
    n.ping_every?;
    Some(*n.next_ping.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The earlier of `deadline` and the next ping: how long a control loop
/// may wait for a message.
pub fn wake_by(deadline: Instant) -> Instant {
    next_ping().map_or(deadline, |ping| ping.min(deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_for_this_process_only() {
        let half = Some(Duration::from_millis(500));
        assert_eq!(watchdog_timeout(Some("500000"), None, 7), half);
        assert_eq!(watchdog_timeout(Some("500000"), Some("7"), 7), half);
        assert_eq!(watchdog_timeout(Some("500000"), Some("8"), 7), None);
        for bad in [None, Some("0"), Some("x"), Some("-5"), Some("")] {
            assert_eq!(watchdog_timeout(bad, None, 7), None, "{bad:?}");
        }
    }

    #[test]
    fn sockets_are_paths_or_abstract() {
        let path = socket_addr(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_ = socket_addr(OsStr::new("@notify/1")).unwrap();
        assert_eq!(abstract_.as_abstract_name(), Some(&b"notify/1"[..]));
        for bad in ["", "relative/path", "x"] {
            assert!(socket_addr(OsStr::new(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_message_is_one_line_per_field() {
        assert_eq!(
            message(&[("READY", "1"), ("STATUS", "active master,\nepoch 7")]),
            "READY=1\nSTATUS=active master, epoch 7\n"
        );
    }
}
