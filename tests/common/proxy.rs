//! A TCP proxy between zkmw and ZooKeeper, to cause network faults on
//! purpose: plain std threads, one pair of pumps per connection.
//!
//! Its link can be switched at run time:
//! - [`Mode::Pass`]: bytes flow both ways.
//! - [`Mode::Blackhole`]: connections stay open but nothing is forwarded
//!   either way (nor read: the bytes wait in the kernel's buffers), and new
//!   connections are accepted but not forwarded; no RST, no FIN. A silent
//!   partition.
//! - [`Mode::MuteReplies`]: client requests reach the server; the server's
//!   replies are read and dropped. Requests take effect, their answers are
//!   lost: ambiguous writes.
//!
//! and [`Proxy::cut`] closes every connection at once (the proxy keeps
//! accepting new ones). After [`Mode::MuteReplies`] the client's byte stream
//! has holes: cut before passing again.
//!
//! [`Proxy::mute_replies_on`] arms a trigger: the first request frame from a
//! client that contains a given byte string switches the proxy to
//! [`Mode::MuteReplies`] before that frame is forwarded, so exactly that
//! request's reply (and everything after it) is lost. Requests are
//! ZooKeeper frames: a 4-byte big-endian length, then the body.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// What the proxy does with the bytes of its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward nothing, either way; keep every connection open.
    Blackhole,
    /// Forward client to server; drop server to client.
    MuteReplies,
}

/// How often an idle pump looks at the mode and at its connection.
const POLL: Duration = Duration::from_millis(20);

/// A running proxy; dropping it closes its listener and every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: Vec<SocketAddr>,
    mode: Mutex<Mode>,
    changed: Condvar,
    conns: Mutex<Vec<Arc<Conn>>>,
    stop: AtomicBool,
    trigger: Mutex<Option<Vec<u8>>>,
    triggered: AtomicBool,
    accepted: AtomicUsize,
}

/// One client connection and, once forwarded, its server connection.
struct Conn {
    client: TcpStream,
    server: Mutex<Option<TcpStream>>,
    closed: AtomicBool,
}

impl Conn {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        if let Some(server) = lock(&self.server).as_ref() {
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1, forwarding to `upstream`
    /// (`host:port`), in [`Mode::Pass`].
    pub fn start(upstream: &str) -> Proxy {
        Proxy::start_on(0, upstream)
    }

    /// A proxy listening on 127.0.0.1:`port` (0: any free port).
    pub fn start_on(port: u16, upstream: &str) -> Proxy {
        let upstream: Vec<SocketAddr> = upstream
            .to_socket_addrs()
            .unwrap_or_else(|e| panic!("proxy: cannot resolve {upstream}: {e}"))
            .collect();
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("proxy: cannot listen on 127.0.0.1:{port}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("proxy: non-blocking listener");
        let addr = listener.local_addr().expect("proxy: local address");
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            changed: Condvar::new(),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            trigger: Mutex::new(None),
            triggered: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        });
        let accept = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("proxy-accept".into())
                .spawn(move || accept_loop(&listener, &shared))
                .expect("proxy: accept thread")
        };
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `127.0.0.1:PORT`, for `--zk`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *lock(&self.shared.mode)
    }

    /// Switches the mode for every connection, present and future.
    pub fn set_mode(&self, mode: Mode) {
        *lock(&self.shared.mode) = mode;
        self.shared.changed.notify_all();
    }

    /// [`Mode::Pass`].
    pub fn pass(&self) {
        self.set_mode(Mode::Pass);
    }

    /// [`Mode::Blackhole`].
    pub fn blackhole(&self) {
        self.set_mode(Mode::Blackhole);
    }

    /// [`Mode::MuteReplies`].
    pub fn mute_replies(&self) {
        self.set_mode(Mode::MuteReplies);
    }

    /// Closes every connection now (FIN both ways); new ones are accepted.
    pub fn cut(&self) {
        let conns: Vec<Arc<Conn>> = lock(&self.shared.conns).drain(..).collect();
        for conn in conns {
            conn.close();
        }
        self.shared.changed.notify_all();
    }

    /// Cuts every connection, then passes again: a partition that heals
    /// with the old connections reset, so no stale bytes are delivered.
    pub fn heal(&self) {
        self.cut();
        self.pass();
    }

    /// Arms the trigger: the first client request containing `needle`
    /// switches the proxy to [`Mode::MuteReplies`] just before it is
    /// forwarded.
    pub fn mute_replies_on(&self, needle: &[u8]) {
        self.shared.triggered.store(false, Ordering::SeqCst);
        *lock(&self.shared.trigger) = Some(needle.to_vec());
    }

    /// True once the armed trigger fired.
    pub fn triggered(&self) -> bool {
        self.shared.triggered.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                let _ = client.set_nodelay(true);
                let conn = Arc::new(Conn {
                    client,
                    server: Mutex::new(None),
                    closed: AtomicBool::new(false),
                });
                lock(&shared.conns).push(conn.clone());
                let shared = shared.clone();
                let spawned = thread::Builder::new()
                    .name("proxy-conn".into())
                    .spawn(move || serve(&conn, &shared));
                if spawned.is_err() {
                    // No thread, no forwarding: the client sees a closed link.
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Waits while the proxy black-holes, then connects upstream and pumps
/// both ways until either side closes or the connection is cut.
fn serve(conn: &Arc<Conn>, shared: &Arc<Shared>) {
    // A black hole does not even reach the server.
    if !wait_while_blackhole(conn, shared) {
        return finish(conn, shared);
    }
    let server = shared
        .upstream
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, Duration::from_secs(2)).ok());
    let Some(server) = server else {
        return finish(conn, shared);
    };
    let _ = server.set_nodelay(true);
    let (Ok(server_read), Ok(client_read)) = (server.try_clone(), conn.client.try_clone()) else {
        return finish(conn, shared);
    };
    *lock(&conn.server) = Some(server);
    if conn.is_closed() {
        // Cut while we were connecting.
        return finish(conn, shared);
    }
    let replies = {
        let (conn, shared) = (conn.clone(), shared.clone());
        thread::Builder::new()
            .name("proxy-s2c".into())
            .spawn(move || {
                let to_client = conn.client.try_clone();
                if let Ok(to_client) = to_client {
                    pump(&conn, &shared, server_read, to_client, false);
                }
                conn.close();
            })
    };
    let to_server = lock(&conn.server).as_ref().map(TcpStream::try_clone);
    if let Some(Ok(to_server)) = to_server {
        pump(conn, shared, client_read, to_server, true);
    }
    conn.close();
    if let Ok(replies) = replies {
        let _ = replies.join();
    }
    finish(conn, shared);
}

fn finish(conn: &Arc<Conn>, shared: &Shared) {
    conn.close();
    lock(&shared.conns).retain(|c| !Arc::ptr_eq(c, conn));
}

/// Blocks while the mode is [`Mode::Blackhole`]; false when the connection
/// was closed (or the proxy stopped) meanwhile.
fn wait_while_blackhole(conn: &Conn, shared: &Shared) -> bool {
    let mut mode = lock(&shared.mode);
    loop {
        if conn.is_closed() || shared.stop.load(Ordering::SeqCst) {
            return false;
        }
        if *mode != Mode::Blackhole {
            return true;
        }
        mode = shared
            .changed
            .wait_timeout(mode, POLL)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Copies `from` to `to` as the mode allows, until either closes.
/// `requests`: client-to-server, where frames are checked for the trigger.
fn pump(conn: &Conn, shared: &Shared, mut from: TcpStream, mut to: TcpStream, requests: bool) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut chunk = vec![0u8; 64 * 1024];
    // Client bytes not forwarded yet: an incomplete frame.
    let mut partial: Vec<u8> = Vec::new();
    loop {
        if !wait_while_blackhole(conn, shared) {
            return;
        }
        let n = match from.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        // Bytes read just as a black hole began wait for it to end.
        if !wait_while_blackhole(conn, shared) {
            return;
        }
        if requests {
            partial.extend_from_slice(&chunk[..n]);
            let ready = take_frames(&mut partial, shared);
            if to.write_all(&ready).is_err() {
                return;
            }
        } else if *lock(&shared.mode) == Mode::MuteReplies {
            // Dropped: the client never hears of it.
        } else if to.write_all(&chunk[..n]).is_err() {
            return;
        }
    }
}

/// Takes the complete frames off the front of `partial`, firing the
/// trigger on the first that contains its needle.
fn take_frames(partial: &mut Vec<u8>, shared: &Shared) -> Vec<u8> {
    let mut end = 0;
    while partial.len() >= end + 4 {
        let len = u32::from_be_bytes([
            partial[end],
            partial[end + 1],
            partial[end + 2],
            partial[end + 3],
        ]) as usize;
        if len > 16 * 1024 * 1024 {
            // Not ZooKeeper framing after all: pass everything on as is.
            end = partial.len();
            break;
        }
        if partial.len() < end + 4 + len {
            break;
        }
        let frame = &partial[end..end + 4 + len];
        let mut trigger = lock(&shared.trigger);
        if let Some(needle) = trigger.as_ref()
            && frame.windows(needle.len()).any(|w| w == needle.as_slice())
        {
            *trigger = None;
            *lock(&shared.mode) = Mode::MuteReplies;
            shared.triggered.store(true, Ordering::SeqCst);
            shared.changed.notify_all();
        }
        end += 4 + len;
    }
    partial.drain(..end).collect()
}
