//! The write ceiling zkmw's throughput is measured against: small
//! transactions (one create, or one delete) pipelined through the same
//! client layer zkmw uses, from the same number of threads, against the same
//! server. Prints one line: `ceiling_txn_per_s=N`.
//!
//! Usage: cargo run --release --example ceiling -- ZK_HOSTS ROOT SECONDS THREADS [IN_FLIGHT]

use std::time::{Duration, Instant};

use zkmw::zk::{ConnectOptions, Op, Zk};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: ceiling ZK_HOSTS ROOT SECONDS THREADS [IN_FLIGHT]");
        std::process::exit(2);
    }
    let number =
        |i: usize, default: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (hosts, root) = (args[1].clone(), args[2].clone());
    let seconds = number(3, 5);
    let threads = number(4, 2) as usize;
    let in_flight = number(5, 64) as usize;
    let zk = Zk::connect(&ConnectOptions::plain(&hosts)).unwrap_or_else(|err| {
        eprintln!("ceiling: {err}");
        std::process::exit(1)
    });
    let _ = zk.ensure(&root);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let total: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let zk = zk.clone();
                let root = root.clone();
                scope.spawn(move || {
                    let mut done = 0;
                    let paths: Vec<String> = (0..in_flight)
                        .map(|i| format!("{root}/n-{t}-{i}"))
                        .collect();
                    while Instant::now() < deadline {
                        let creates: Vec<Vec<Op>> = paths
                            .iter()
                            .map(|p| {
                                vec![Op::Create {
                                    path: p.clone(),
                                    data: b"x".to_vec(),
                                }]
                            })
                            .collect();
                        let deletes: Vec<Vec<Op>> = paths
                            .iter()
                            .map(|p| {
                                vec![Op::Delete {
                                    path: p.clone(),
                                    version: None,
                                }]
                            })
                            .collect();
                        done += zk.multi_many(&creates).iter().filter(|r| r.is_ok()).count();
                        done += zk.multi_many(&deletes).iter().filter(|r| r.is_ok()).count();
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    let rate = total as f64 / started.elapsed().as_secs_f64();
    println!("ceiling_txn_per_s={rate:.0}");
}
