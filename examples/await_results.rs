//! Waits until a namespace holds a given number of results, cheaply: it
//! reads only the stat of /status (its child count), every 2 ms, so the
//! benchmark's own waiting costs ZooKeeper almost nothing and ends within
//! 2 ms of the last result. Exits 0 when there are enough, 1 on timeout.
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
    while Instant::now() < deadline {
        if let Ok(Some(stat)) = zk.exists(&layout.status())
            && stat.num_children >= want
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("await_results: fewer than {want} results after {timeout:?}");
    std::process::exit(1);
}
