//! The suite's settings, from the environment (`scripts/chaos.sh` turns
//! its options into these variables).

use std::path::PathBuf;
use std::time::Duration;

/// What one run does.
pub struct Settings {
    /// Tasks to submit in total (`CHAOS_TASKS`; 1200, 300 with `CHAOS_SHORT=1`).
    pub tasks: u32,
    /// How long the submits are spread over (`CHAOS_LOAD_SECONDS`; 300 s, short 60 s).
    pub load: Duration,
    /// Submitters at once (`CHAOS_SUBMITTERS`; 4).
    pub submitters: u32,
    /// Masters (`CHAOS_MASTERS`; 3).
    pub masters: u32,
    /// Workers (`CHAOS_WORKERS`; 4).
    pub workers: u32,
    /// Threads per worker (`CHAOS_THREADS`; 4).
    pub threads: u32,
    /// How long a worker stays frozen (`CHAOS_FREEZE`; 5 s).
    pub freeze: Duration,
    /// How long to wait for the results after the chaos (`CHAOS_WAIT`; 120 s).
    pub wait: Duration,
    /// A ZooKeeper to use instead of an ensemble of the run's own, with no
    /// ZooKeeper faults then (`CHAOS_ZK`).
    pub external_zk: Option<String>,
    /// Seed of every random choice (`CHAOS_SEED`; random).
    pub seed: u64,
    /// Whether ensemble nodes are also frozen at times (`CHAOS_ZK_FREEZE=1`).
    pub zk_freeze: bool,
    /// `RUST_LOG` of the masters and workers (`CHAOS_LOG`; info).
    pub log: String,
    /// The run folder (`CHAOS_RUN_DIR`; `.zk/chaos-<time>-<pid>/` of the checkout).
    pub run_dir: Option<PathBuf>,
    /// The binary under test (`CHAOS_BIN`; the one cargo built with the suite).
    pub bin: Option<PathBuf>,
}

impl Settings {
    /// Reads the settings; what is wrong with one, if anything.
    pub fn from_env() -> Result<Settings, String> {
        let short = var("CHAOS_SHORT").is_some_and(|v| v == "1");
        let (tasks, load) = if short { (300, 60) } else { (1200, 300) };
        Ok(Settings {
            tasks: positive("CHAOS_TASKS", tasks)?,
            load: seconds("CHAOS_LOAD_SECONDS", load)?,
            submitters: positive("CHAOS_SUBMITTERS", 4)?,
            masters: positive("CHAOS_MASTERS", 3)?,
            workers: positive("CHAOS_WORKERS", 4)?,
            threads: positive("CHAOS_THREADS", 4)?,
            freeze: seconds("CHAOS_FREEZE", 5)?,
            wait: seconds("CHAOS_WAIT", 120)?,
            external_zk: var("CHAOS_ZK"),
            seed: match var("CHAOS_SEED") {
                Some(seed) => seed
                    .parse()
                    .map_err(|_| format!("CHAOS_SEED must be a number, got '{seed}'"))?,
                None => rand::random::<u32>().into(),
            },
            zk_freeze: var("CHAOS_ZK_FREEZE").is_some_and(|v| v == "1"),
            log: var("CHAOS_LOG").unwrap_or_else(|| "info".into()),
            run_dir: var("CHAOS_RUN_DIR").map(PathBuf::from),
            bin: var("CHAOS_BIN").map(PathBuf::from),
        })
    }
}

/// The variable `name`, when set and not empty.
fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The positive integer in `name`, or `default` when it is not set.
fn positive(name: &str, default: u32) -> Result<u32, String> {
    let Some(value) = var(name) else {
        return Ok(default);
    };
    match value.parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} must be a positive integer, got '{value}'")),
    }
}

/// Like [`positive`], as seconds.
fn seconds(name: &str, default: u32) -> Result<Duration, String> {
    positive(name, default).map(|s| Duration::from_secs(s.into()))
}
