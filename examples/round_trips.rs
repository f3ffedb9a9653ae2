//! The round trips a `zkmw submit --wait` cannot avoid, each timed alone
//! through zkmw's own client layer against the benchmark's server: opening
//! a session, a read, and a one-node transaction (fsynced by the server).
//! Prints medians over RUNS tries: `connect_ms=A read_ms=B write_ms=C`.
//!
//! Usage: cargo run --release --example round_trips -- ZK_HOSTS ROOT RUNS

use std::time::Instant;

use zkmw::zk::{ConnectOptions, Op, Zk};

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
    let timed = |f: &mut dyn FnMut()| {
        let mut times: Vec<f64> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    let connect = timed(&mut || drop(Zk::connect(&options).unwrap_or_else(|e| fail(e))));
    let zk = Zk::connect(&options).unwrap_or_else(|e| fail(e));
    zk.ensure(root).unwrap_or_else(|e| fail(e));
    let read = timed(&mut || drop(zk.exists(root)));
    let node = format!("{root}/n");
    let mut create = true;
    let write = timed(&mut || {
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
    });
    println!("connect_ms={connect:.3} read_ms={read:.3} write_ms={write:.3}");
}
