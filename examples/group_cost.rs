//! What grouping saves ZooKeeper, measured on the server's own CPU time:
//! N small creates (then N deletes) sent as N pipelined one-operation
//! transactions, against the same in transactions of K operations
//! (`Zk::commit`, what zkmw's roles send); and N reads of small nodes as N
//! pipelined requests against multi-reads of K. Prints one line per way:
//! `way=... zk_cpu_us_per_op=... wall_us_per_op=...`.
//!
//! Usage: cargo run --release --example group_cost -- ZK_HOSTS ROOT ZK_PID N K

use std::time::Instant;

use zkmw::zk::{ConnectOptions, Op, Zk};

/// The server's CPU seconds so far (user + system), from /proc.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// Runs `work` over `n` operations; prints the server's CPU and the wall
/// time per operation.
fn measure(way: &str, pid: &str, n: usize, work: impl FnOnce()) {
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    work();
    let cpu = cpu_seconds(pid) - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    println!(
        "way={way} zk_cpu_us_per_op={:.1} wall_us_per_op={:.1}",
        cpu * 1e6 / n as f64,
        wall * 1e6 / n as f64
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: group_cost ZK_HOSTS ROOT ZK_PID N K");
        std::process::exit(2);
    }
    let (hosts, root, pid) = (&args[1], &args[2], &args[3]);
    let n: usize = args[4].parse().unwrap_or(10_000);
    let k: usize = args[5].parse().unwrap_or(16).max(1);
    let zk = Zk::connect(&ConnectOptions::plain(hosts)).unwrap_or_else(|err| {
        eprintln!("group_cost: {err}");
        std::process::exit(1)
    });
    let _ = zk.ensure(root);
    let paths: Vec<String> = (0..n).map(|i| format!("{root}/n-{i}")).collect();
    let creates: Vec<Vec<Op>> = paths
        .iter()
        .map(|p| {
            vec![Op::Create {
                path: p.clone(),
                data: vec![b'x'; 200],
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
    // Pipelined in chunks of 256 in flight, as a busy role would have them.
    let pipelined = |txns: &[Vec<Op>]| {
        for chunk in txns.chunks(256) {
            zk.multi_many(chunk);
        }
    };
    let grouped = |steps: &[Vec<Op>]| {
        for chunk in steps.chunks(k) {
            zk.commit(&[], chunk, &|_| {});
        }
    };
    for round in 0..2 {
        let tag = if round == 0 { "warmup_" } else { "" };
        measure(&format!("{tag}pipelined_writes"), pid, 2 * n, || {
            pipelined(&creates);
            pipelined(&deletes);
        });
        measure(&format!("{tag}grouped_writes_by_{k}"), pid, 2 * n, || {
            grouped(&creates);
            grouped(&deletes);
        });
        pipelined(&creates);
        measure(&format!("{tag}pipelined_reads"), pid, n, || {
            for chunk in paths.chunks(256) {
                zk.get_many(chunk);
            }
        });
        measure(&format!("{tag}multi_reads_by_{k}"), pid, n, || {
            for chunk in paths.chunks(k) {
                let _ = zk.get_at_once(chunk);
            }
        });
        pipelined(&deletes);
    }
}
