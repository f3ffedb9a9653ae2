//! The round trips a `zkmw submit --wait` cannot avoid, each timed through
//! zkmw's own client layer against the benchmark's server: opening a
//! session, a read, and a one-node transaction (fsynced by the server).
//!
//! Each is timed two ways, medians over RUNS tries:
//! - alone (`connect_ms`, `read_ms`, `write_ms`): 3 ms apart, so every
//!   request finds the client's and the server's threads asleep, as each
//!   step of a lone `submit --wait` does (each process waits for the
//!   previous one's notification);
//! - back to back (`read_busy_ms`, `write_busy_ms`): one request right after
//!   the other, with every thread on the way still awake.
//!
//! Usage: cargo run --release --example round_trips -- ZK_HOSTS ROOT RUNS

use std::time::{Duration, Instant};

use zkmw::zk::{ConnectOptions, Op, Zk};

/// The pause before each request timed "alone".
const APART: Duration = Duration::from_millis(3);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: round_trips ZK_HOSTS ROOT RUNS");
        std::process::exit(2);
    }
    let (hosts, root) = (&args[1], &args[2]);
    let runs: usize = args[3].parse().unwrap_or(100).max(1);
    let options = ConnectOptions::plain(hosts);
    let fail = |err: zkmw::zk::ZkError| -> ! {
        eprintln!("round_trips: {err}");
        std::process::exit(1)
    };
    let timed = |pause: Option<Duration>, f: &mut dyn FnMut()| {
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                if let Some(pause) = pause {
                    std::thread::sleep(pause);
                }
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let connect = timed(Some(APART), &mut || {
        drop(Zk::connect(&options).unwrap_or_else(|e| fail(e)))
    });
    let zk = Zk::connect(&options).unwrap_or_else(|e| fail(e));
    zk.ensure(root).unwrap_or_else(|e| fail(e));
    let mut read = || drop(zk.exists(root));
    let (read_alone, read_busy) = (timed(Some(APART), &mut read), timed(None, &mut read));
    let node = format!("{root}/n");
    let mut create = true;
    let mut write = || {
        let op = if create {
            Op::Create {
                path: node.clone(),
                data: b"x".to_vec(),
            }
        } else {
            Op::Delete {
                path: node.clone(),
                version: None,
            }
        };
        create = !create;
        drop(zk.multi(&[op]));
    };
    let (write_alone, write_busy) = (timed(Some(APART), &mut write), timed(None, &mut write));
    println!(
        "connect_ms={connect:.3} read_ms={read_alone:.3} write_ms={write_alone:.3} \
         read_busy_ms={read_busy:.3} write_busy_ms={write_busy:.3}"
    );
}
