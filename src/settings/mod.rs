//! Cluster-wide settings, zkmw's configuration centre: defaults that every
//! process of a namespace shares, changed with `zkmw config` and followed
//! live by the running roles.
//!
//! Each setting is named after the flag it stands in for and takes the same
//! values, checked by the same rule (the constants of [`crate::cli`]). For
//! each key a process uses the first of: its own flag or environment
//! variable (or a per-task submit option), the cluster's setting, the
//! built-in default ([`pick`]).
//!
//! The store is one znode, `<root>/config`, holding a JSON object of key
//! to value text (`{"retries":"5","result-ttl":"1d"}`); see `record.rs`.
//! One node rather than one per key: a role follows all of its settings with
//! one watch and one read, and every change is one write checked against
//! the node's version (compare-and-set), so two operators changing settings
//! at once never lose one of the changes. The I/O is in `store.rs`, the
//! command in `command.rs`; a role's live view is a [`Tuning`].

mod command;
mod record;
mod store;
mod tuning;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::cli::{self, CountIn, DurationIn};

pub use command::run as run_command;
pub use record::{Decoded, decode};
pub use store::{follow, read_cluster};
pub use tuning::{Tuning, Update};

/// A cluster setting, named after its flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// `submit --timeout`: the job's time limit.
    Timeout,
    /// `submit --retries`: re-runs after lost workers.
    Retries,
    /// `worker --output-cap`: bytes kept of each stream.
    OutputCap,
    /// `master --result-ttl`: how long results are kept.
    ResultTtl,
    /// `master --keep-results`: how many results are kept.
    KeepResults,
    /// `submit --max-pending`: the queue's limit.
    MaxPending,
    /// `worker --drain-timeout`: how long jobs may finish after SIGTERM.
    DrainTimeout,
}

/// Every key, in the order `config list` shows them.
pub const KEYS: [Key; 7] = [
    Key::Timeout,
    Key::Retries,
    Key::OutputCap,
    Key::ResultTtl,
    Key::KeepResults,
    Key::MaxPending,
    Key::DrainTimeout,
];

/// The keys a worker follows live.
pub const WORKER_KEYS: &[Key] = &[Key::OutputCap, Key::DrainTimeout];
/// The keys a master follows live.
pub const MASTER_KEYS: &[Key] = &[Key::ResultTtl, Key::KeepResults];

/// Per-process options that are not cluster settings, and why: `config
/// set` refuses them with that line.
const PER_PROCESS: &[(&str, &str)] = &[
    (
        "threads",
        "a worker's --threads sizes its thread pool at start",
    ),
    ("tick", "--tick is each role's own pace"),
    ("shell", "a worker's --shell is checked at start"),
    ("session-timeout", "--session-timeout is each session's own"),
    ("connect-timeout", "--connect-timeout is each command's own"),
    ("id", "--id names one process"),
    ("zk", "--zk says where the cluster settings are"),
    ("root", "--root says where the cluster settings are"),
];

/// How a key's values are checked.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Duration(DurationIn),
    Count(CountIn<u64>),
}

impl Key {
    /// Its name: its flag's, without the dashes.
    pub fn name(self) -> &'static str {
        match self {
            Key::Timeout => "timeout",
            Key::Retries => "retries",
            Key::OutputCap => "output-cap",
            Key::ResultTtl => "result-ttl",
            Key::KeepResults => "keep-results",
            Key::MaxPending => "max-pending",
            Key::DrainTimeout => "drain-timeout",
        }
    }

    /// The flag it stands in for.
    pub fn flag(self) -> String {
        format!("--{}", self.name())
    }

    /// The environment variable of that flag, if it has one.
    pub fn env(self) -> Option<&'static str> {
        match self {
            Key::Timeout | Key::Retries => None,
            Key::OutputCap => Some("ZKMW_OUTPUT_CAP"),
            Key::ResultTtl => Some("ZKMW_RESULT_TTL"),
            Key::KeepResults => Some("ZKMW_KEEP_RESULTS"),
            Key::MaxPending => Some("ZKMW_MAX_PENDING"),
            Key::DrainTimeout => Some("ZKMW_DRAIN_TIMEOUT"),
        }
    }

    /// The built-in default; `None` for `timeout` (no limit).
    pub fn default_value(self) -> Option<Value> {
        let secs = |s| Some(Value::Duration(Duration::from_secs(s)));
        match self {
            Key::Timeout => None,
            Key::Retries => Some(Value::Count(2)),
            Key::OutputCap => Some(Value::Count(65_536)),
            Key::ResultTtl => secs(7 * 86_400),
            Key::KeepResults => Some(Value::Count(100_000)),
            Key::MaxPending => Some(Value::Count(50_000)),
            Key::DrainTimeout => secs(30),
        }
    }

    /// Which command or role reads it.
    pub fn read_by(self) -> &'static str {
        match self {
            Key::Timeout | Key::Retries | Key::MaxPending => "submit",
            Key::OutputCap | Key::DrainTimeout => "worker",
            Key::ResultTtl | Key::KeepResults => "master",
        }
    }

    fn rule(self) -> Rule {
        let count = |max| Rule::Count(CountIn::up_to(max));
        match self {
            Key::Timeout => Rule::Duration(cli::JOB_TIMEOUT),
            Key::Retries => count(cli::RETRIES.max()),
            Key::OutputCap => count(cli::OUTPUT_CAP.max()),
            Key::ResultTtl => Rule::Duration(cli::RESULT_TTL),
            Key::KeepResults => count(cli::KEEP_RESULTS.max()),
            Key::MaxPending => count(cli::MAX_PENDING.max()),
            Key::DrainTimeout => Rule::Duration(cli::DRAIN_TIMEOUT),
        }
    }

    /// Parses a value by the rule of the key's flag; `name` names it in the
    /// message ("output-cap must be at most 400000, got 500000").
    pub fn parse_named(self, name: &str, text: &str) -> Result<Value, String> {
        match self.rule() {
            Rule::Duration(rule) => rule.check(name, text).map(Value::Duration),
            Rule::Count(rule) => rule.check(name, text).map(Value::Count),
        }
    }

    /// Parses a value of this key, named by the key in the message.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        self.parse_named(self.name(), text)
    }

    /// The key called `name`; the message says why there is none: an
    /// option that cannot change live, or a name unknown.
    pub fn from_name(name: &str) -> Result<Key, String> {
        if let Some(key) = KEYS.iter().find(|k| k.name() == name) {
            return Ok(*key);
        }
        let names: Vec<&str> = KEYS.iter().map(|k| k.name()).collect();
        let known = names.join(", ");
        let bare = name.trim_start_matches('-');
        Err(match PER_PROCESS.iter().find(|(n, _)| *n == bare) {
            Some((_, why)) => format!(
                "'{name}' cannot change live: {why} (set it on each process and restart it); the cluster settings are {known}"
            ),
            None => format!("'{name}' is not a cluster setting; they are {known}"),
        })
    }
}

/// A setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// A duration key's.
    Duration(Duration),
    /// A count key's.
    Count(u64),
}

impl Value {
    /// The duration, for a duration key.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Value::Duration(d) => Some(d),
            Value::Count(_) => None,
        }
    }

    /// The count, for a count key.
    pub fn count(self) -> Option<u64> {
        match self {
            Value::Count(n) => Some(n),
            Value::Duration(_) => None,
        }
    }
}

impl fmt::Display for Value {
    /// As the flag takes it, and as it is stored: `30s`, `7d`, `5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Duration(d) => f.write_str(&cli::show_duration(*d)),
            Value::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Settings by key.
pub type Values = BTreeMap<Key, Value>;

/// Where a process's value of a key comes from, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The process's own flag (or a per-task submit option).
    Flag,
    /// The process's environment variable of that flag.
    Env,
    /// The cluster's setting in `/config`.
    Cluster,
    /// The built-in default.
    Default,
}

impl Source {
    /// How `config list` and the roles' logs say it, for `key`.
    pub fn describe(self, key: Key) -> String {
        match self {
            Source::Flag => key.flag(),
            Source::Env => format!("env {}", key.env().unwrap_or("?")),
            Source::Cluster => "cluster".into(),
            Source::Default => "default".into(),
        }
    }
}

/// What a process was given itself, with where from (flag or env).
pub type Given = BTreeMap<Key, (Value, Source)>;

/// The value of `key` for a process that was given `given` and sees
/// `cluster`, and where it comes from: the process, the cluster, the
/// default (`None` only for `timeout`: no limit).
pub fn pick(key: Key, given: &Given, cluster: &Values) -> (Option<Value>, Source) {
    if let Some((value, source)) = given.get(&key) {
        return (Some(*value), *source);
    }
    match cluster.get(&key) {
        Some(value) => (Some(*value), Source::Cluster),
        None => (key.default_value(), Source::Default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_after_their_flags() {
        for key in KEYS {
            assert_eq!(Key::from_name(key.name()), Ok(key));
            assert_eq!(key.flag(), format!("--{}", key.name()));
        }
        assert_eq!(Value::Count(5).to_string(), "5");
        assert_eq!(
            Value::Duration(Duration::from_secs(7 * 86_400)).to_string(),
            "7d"
        );
        assert_eq!(
            Value::Duration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }

    /// Each key takes what its flag takes, and refuses the same, with the
    /// flag's message naming the key.
    #[test]
    fn values_follow_their_flags_rules() {
        let ok = [
            (Key::Timeout, "1s", Value::Duration(Duration::from_secs(1))),
            (Key::Retries, "0", Value::Count(0)),
            (Key::OutputCap, "400000", Value::Count(400_000)),
            (
                Key::ResultTtl,
                "1d",
                Value::Duration(Duration::from_secs(86_400)),
            ),
            (Key::KeepResults, " 7 ", Value::Count(7)),
            (Key::MaxPending, "0", Value::Count(0)),
            (Key::DrainTimeout, "0", Value::Duration(Duration::ZERO)),
        ];
        for (key, text, value) in ok {
            assert_eq!(key.parse(text), Ok(value), "{key:?} {text}");
        }
        let refused = [
            (
                Key::Timeout,
                "500ms",
                "timeout must be at least 1s, got 500ms",
            ),
            (
                Key::OutputCap,
                "400001",
                "output-cap must be at most 400000, got 400001",
            ),
            (
                Key::Retries,
                "-1",
                "retries must be a whole number, got '-1'",
            ),
            (
                Key::Retries,
                "4294967296",
                "retries must be at most 4294967295, got 4294967296",
            ),
            (Key::ResultTtl, "0", "result-ttl must be at least 1s, got 0"),
            (
                Key::KeepResults,
                "many",
                "keep-results must be a whole number, got 'many'",
            ),
            (
                Key::DrainTimeout,
                "soon",
                "drain-timeout: 'soon' is not a duration (examples: 500ms, 30s, 5m, 1h, 7d)",
            ),
        ];
        for (key, text, why) in refused {
            assert_eq!(key.parse(text), Err(why.to_string()), "{key:?} {text}");
        }
    }

    /// The flag's own parser says the same as the setting, naming the flag.
    #[test]
    fn the_flag_refuses_what_the_setting_refuses() {
        use clap::Parser;
        let err = crate::cli::Cli::try_parse_from([
            "zkmw",
            "worker",
            "--id",
            "w",
            "--output-cap",
            "400001",
        ])
        .expect_err("refused");
        assert!(
            err.to_string()
                .contains("--output-cap must be at most 400000, got 400001"),
            "{err}"
        );
    }

    #[test]
    fn per_process_options_are_refused_saying_why() {
        let why = Key::from_name("threads").unwrap_err();
        assert!(
            why.starts_with("'threads' cannot change live: a worker's --threads"),
            "{why}"
        );
        assert!(why.contains("timeout, retries, output-cap"), "{why}");
        let why = Key::from_name("retires").unwrap_err();
        assert!(
            why.starts_with("'retires' is not a cluster setting"),
            "{why}"
        );
    }

    /// The process beats the cluster, which beats the default.
    #[test]
    fn precedence_is_process_cluster_default() {
        let mut given = Given::new();
        let mut cluster = Values::new();
        assert_eq!(
            pick(Key::Retries, &given, &cluster),
            (Some(Value::Count(2)), Source::Default)
        );
        assert_eq!(
            pick(Key::Timeout, &given, &cluster),
            (None, Source::Default)
        );
        cluster.insert(Key::Retries, Value::Count(5));
        assert_eq!(
            pick(Key::Retries, &given, &cluster),
            (Some(Value::Count(5)), Source::Cluster)
        );
        given.insert(Key::Retries, (Value::Count(0), Source::Flag));
        assert_eq!(
            pick(Key::Retries, &given, &cluster),
            (Some(Value::Count(0)), Source::Flag)
        );
    }
}
