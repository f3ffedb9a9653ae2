//! Waits until a namespace holds a given number of results, cheaply: it
//! reads only the stat of /status (its child count), every 5 ms, so the
//! benchmark's own waiting costs ZooKeeper almost nothing and ends within
//! 5 ms of the last result. Prints `reads=K`, how many reads it made (the
//! benchmark takes them out of zkmw's count). Exits 0 when there are
//! enough, 1 on timeout.
//!
//! Usage: cargo run --release --example await_results -- ZK_HOSTS ROOT N TIMEOUT_SECONDS

use std::time::{Duration, Instant};

use zkmw::layout::Layout;
use zkmw::zk::{ConnectOptions, Zk};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: await_results ZK_HOSTS ROOT N TIMEOUT_SECONDS");
        std::process::exit(2);
    }
    let want: i32 = args[3].parse().unwrap_or(i32::MAX);
    let timeout = Duration::from_secs(args[4].parse().unwrap_or(600));
    let layout = Layout::new(&args[2]);
    let zk = Zk::connect(&ConnectOptions::plain(&args[1])).unwrap_or_else(|err| {
        eprintln!("await_results: {err}");
        std::process::exit(1)
    });
    let deadline = Instant::now() + timeout;
    let mut reads = 0u64;
    while Instant::now() < deadline {
        reads += 1;
        if let Ok(Some(stat)) = zk.exists(&layout.status())
            && stat.num_children >= want
        {
            println!("reads={reads}");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("await_results: fewer than {want} results after {timeout:?}");
    std::process::exit(1);
}
