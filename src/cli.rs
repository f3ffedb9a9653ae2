//! The command line: clap definitions and the validation of every value, so
//! bad input is refused with a one-line message before any connection.

use std::ffi::OsStr;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::layout::check_znode_name;
use crate::obs::log::Format;
use crate::settings::{KEYS, Key};

/// Longest worker or master id accepted (it becomes a znode name).
pub const MAX_ID_LEN: usize = 128;

/// Shortest `--tick`: below it a role spends its time re-reading the namespace.
const MIN_TICK: Duration = Duration::from_millis(100);

/// The shortest session, connect, job and result timeouts.
const SECOND: Duration = Duration::from_secs(1);

/// The rule of `submit --timeout`, and of the cluster setting `timeout`.
pub const JOB_TIMEOUT: DurationIn = DurationIn::at_least(SECOND);
/// The rule of `submit --retries`, and of the cluster setting `retries`.
pub const RETRIES: CountIn<u32> = CountIn::up_to(u32::MAX as u64);
/// The rule of `worker --output-cap`, and of the cluster setting `output-cap`.
pub const OUTPUT_CAP: CountIn<u32> = CountIn::up_to(400_000);
/// The rule of `master --result-ttl`, and of the cluster setting `result-ttl`.
pub const RESULT_TTL: DurationIn = DurationIn::at_least(SECOND);
/// The rule of `master --keep-results`, and of the cluster setting `keep-results`.
pub const KEEP_RESULTS: CountIn<usize> = CountIn::up_to(u32::MAX as u64);
/// The rule of `submit --max-pending`, and of the cluster setting `max-pending`.
pub const MAX_PENDING: CountIn<usize> = CountIn::up_to(u32::MAX as u64);
/// The rule of `worker --drain-timeout`, and of the cluster setting `drain-timeout`.
pub const DRAIN_TIMEOUT: DurationIn = DurationIn::at_least(Duration::ZERO);

/// zkmw runs shell jobs across machines, coordinated by ZooKeeper.
#[derive(Debug, Parser)]
#[command(name = "zkmw", version, about)]
pub struct Cli {
    /// Options every role shares.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every role shares, each with an environment fallback: how to
/// reach ZooKeeper, shown under a heading of their own in `--help`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
pub struct GlobalArgs {
    /// ZooKeeper servers, a comma list of host:port (no chroot: use --root).
    #[arg(long = "zk", env = "ZKMW_ZK", default_value = "127.0.0.1:2181", global = true, value_parser = parse_hosts)]
    pub zk: String,
    /// Namespace root: an absolute znode path holding all of zkmw's nodes.
    #[arg(long, env = "ZKMW_ROOT", default_value = "/zkmw", global = true, value_parser = parse_root)]
    pub root: String,
    /// ZooKeeper session timeout: how soon a dead master or worker is noticed
    /// (1s to 1h; the server clamps it to its own limits too).
    #[arg(long, env = "ZKMW_SESSION_TIMEOUT", default_value = "5s", global = true, value_parser = DurationIn::between(SECOND, Duration::from_secs(3600)))]
    pub session_timeout: Duration,
    /// Digest credentials USER:PASSWORD: zkmw's nodes become readable and
    /// writable by this identity only.
    #[arg(long, env = "ZKMW_AUTH", global = true, hide_env_values = true, value_parser = parse_auth, conflicts_with = "auth_file")]
    pub auth: Option<String>,
    /// A file holding USER:PASSWORD (keeps the password out of `ps`).
    #[arg(long, env = "ZKMW_AUTH_FILE", global = true)]
    pub auth_file: Option<std::path::PathBuf>,
    /// Speak TLS to ZooKeeper (its secure client port), trusting this CA (PEM file).
    #[arg(long, env = "ZKMW_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate (PEM file) for servers that require one; needs --tls-key.
    #[arg(
        long,
        env = "ZKMW_TLS_CERT",
        global = true,
        requires = "tls_key",
        requires = "tls_ca"
    )]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Key of the client certificate (PEM file).
    #[arg(long, env = "ZKMW_TLS_KEY", global = true, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// How long a command (submit, status, tasks, purge...) keeps trying to
    /// reach ZooKeeper before exiting 125, and to read again when the
    /// connection drops under a read (at least 1s).
    #[arg(long, env = "ZKMW_CONNECT_TIMEOUT", default_value = "10s", global = true, value_parser = DurationIn::at_least(SECOND))]
    pub connect_timeout: Duration,
    /// How log lines are written: text (for people) or json (one object
    /// per line, for journald, Loki or ELK).
    #[arg(long, env = "ZKMW_LOG_FORMAT", default_value = "text", global = true, value_parser = Format::parse)]
    pub log_format: Format,
}

/// The HTTP endpoint of a master or a worker.
#[derive(Debug, Args)]
pub struct HttpArgs {
    /// Serve /metrics, /healthz, /readyz (and on a master the status page
    /// and /api/) at HOST:PORT; a bare PORT listens on 127.0.0.1 only.
    /// Unauthenticated: see README. Off by default.
    #[arg(long = "http", env = "ZKMW_HTTP", value_parser = parse_http_addr)]
    pub addr: Option<SocketAddr>,
    /// Keep job output (stderr lines of failures) off the status page
    /// (a worker's endpoint never shows any).
    #[arg(long, env = "ZKMW_HTTP_NO_OUTPUT")]
    pub http_no_output: bool,
}

/// The four roles.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a master (active or hot standby) until SIGINT/SIGTERM.
    Master(MasterArgs),
    /// Run a worker until SIGINT/SIGTERM.
    Worker(WorkerArgs),
    /// Store a job as a task; print its id, or with --wait its result.
    Submit(SubmitArgs),
    /// Wait for a stored task; print its output and exit with its code.
    Wait(WaitArgs),
    /// From inside a job: report how far it is (shown by status and tasks).
    Progress(ProgressArgs),
    /// Cancel tasks: those not started at once, running ones by their worker.
    Cancel(CancelArgs),
    /// Show the cluster, or one task.
    Status(StatusArgs),
    /// List tasks, newest first.
    Tasks(TasksArgs),
    /// Delete old results from /status now.
    Purge(PurgeArgs),
    /// Read and change the cluster-wide settings, live (`/config`).
    Config(ConfigArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(CompletionsArgs),
    /// Print a manual page (roff), generated from these definitions.
    Man(ManArgs),
}

/// `zkmw master`.
#[derive(Debug, Args)]
pub struct MasterArgs {
    /// This master's id, shown in status [default: HOST-PID].
    #[arg(long, value_parser = parse_id)]
    pub id: Option<String>,
    /// Re-read the whole namespace at least this often, whatever the watches
    /// say (at least 100ms).
    #[arg(long, env = "ZKMW_TICK", default_value = "2s", value_parser = DurationIn::at_least(MIN_TICK))]
    pub tick: Duration,
    /// Delete results older than this (checked every minute; at least 1s)
    /// [default: the cluster's result-ttl, else 7d].
    #[arg(long, env = "ZKMW_RESULT_TTL", value_parser = RESULT_TTL)]
    pub result_ttl: Option<Duration>,
    /// Keep at most this many results (the newest) [default: the cluster's
    /// keep-results, else 100000].
    #[arg(long, env = "ZKMW_KEEP_RESULTS", value_parser = KEEP_RESULTS)]
    pub keep_results: Option<usize>,
    /// The HTTP endpoint.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// `zkmw worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// This worker's id: unique among live workers.
    #[arg(long, value_parser = parse_id)]
    pub id: String,
    /// How many jobs run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Re-read the assignments at least this often, whatever the watches say
    /// (at least 100ms).
    #[arg(long, env = "ZKMW_TICK", default_value = "2s", value_parser = DurationIn::at_least(MIN_TICK))]
    pub tick: Duration,
    /// On SIGTERM, how long running jobs may take to finish before they are
    /// killed (0 kills them at once) [default: the cluster's drain-timeout,
    /// else 30s].
    #[arg(long, env = "ZKMW_DRAIN_TIMEOUT", value_parser = DRAIN_TIMEOUT)]
    pub drain_timeout: Option<Duration>,
    /// The shell that runs each job as `SHELL -c JOB`.
    #[arg(long, env = "ZKMW_SHELL", default_value = "sh")]
    pub shell: String,
    /// A label this worker has (repeat for more): tasks submitted with
    /// `--on` run only on workers with all of theirs.
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<String>,
    /// Bytes of stdout, and of stderr, kept from each job (at most 400000)
    /// [default: the cluster's output-cap, else 65536].
    #[arg(long, env = "ZKMW_OUTPUT_CAP", value_parser = OUTPUT_CAP)]
    pub output_cap: Option<u32>,
    /// The HTTP endpoint.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// `zkmw submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The shell command to run (`sh -c JOB`).
    #[arg(required_unless_present = "stdin", conflicts_with = "stdin")]
    pub job: Option<String>,
    /// Read one job per line from stdin; print one task id per line.
    #[arg(long, conflicts_with = "wait")]
    pub stdin: bool,
    /// Wait for the result; print the job's output and exit with its code.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long, exit 124 (the task stays queued;
    /// at least 100ms).
    #[arg(long, value_parser = DurationIn::at_least(Duration::from_millis(100)), requires = "wait")]
    pub wait_timeout: Option<Duration>,
    /// Kill the job if it runs longer than this; it then fails "timed out"
    /// (at least 1s) [default: the cluster's timeout, else no limit].
    #[arg(long, value_parser = JOB_TIMEOUT)]
    pub timeout: Option<Duration>,
    /// Re-runs allowed when the worker running the job dies [default: the
    /// cluster's retries, else 2].
    #[arg(long, value_parser = RETRIES)]
    pub retries: Option<u32>,
    /// Refuse (exit 75) when this many tasks are already pending [default:
    /// the cluster's max-pending, else 50000].
    #[arg(long, env = "ZKMW_MAX_PENDING", value_parser = MAX_PENDING)]
    pub max_pending: Option<usize>,
    /// Never run at the same time as another task of this lock.
    #[arg(long, value_parser = parse_lock, conflicts_with = "stdin")]
    pub lock: Option<String>,
    /// With --lock: store nothing and exit 122 when a task of that lock is
    /// pending, assigned or running.
    #[arg(long, requires = "lock")]
    pub skip_if_locked: bool,
    /// At most one task per key: a second submit finds the first.
    #[arg(long, value_parser = parse_unique, conflicts_with = "stdin")]
    pub unique: Option<String>,
    /// Run a job that exited non-zero, timed out or could not start up to
    /// this many more times.
    #[arg(long, default_value_t = 0, value_parser = CountIn::<u32>::up_to(100))]
    pub retry_failed: u32,
    /// With --retry-failed: the wait before the first re-run; it doubles
    /// each time, up to 1h.
    #[arg(long, default_value = "10s", value_parser = DurationIn::between(Duration::ZERO, Duration::from_secs(3600)))]
    pub retry_delay: Duration,
    /// Run only on a worker with this label (repeat: all of them).
    #[arg(long = "on", value_parser = parse_label)]
    pub on: Vec<String>,
}

/// `zkmw wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The task id (task-NNNNNNNNNN), as `zkmw submit` printed it.
    pub task: String,
    /// Give up after this long, exit 124 (the task goes on; at least 100ms).
    #[arg(long, value_parser = DurationIn::at_least(Duration::from_millis(100)))]
    pub wait_timeout: Option<Duration>,
}

/// `zkmw cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The task ids.
    #[arg(required = true)]
    pub tasks: Vec<String>,
    /// For a running job: time between SIGTERM and SIGKILL (at most 1d).
    #[arg(long, default_value = "10s", value_parser = DurationIn::between(Duration::ZERO, Duration::from_secs(86_400)))]
    pub grace: Duration,
    /// Return once each running task has its final result.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long, exit 124 (at least 100ms).
    #[arg(long, value_parser = DurationIn::at_least(Duration::from_millis(100)), requires = "wait")]
    pub wait_timeout: Option<Duration>,
}

/// `zkmw progress`.
#[derive(Debug, Args)]
pub struct ProgressArgs {
    /// How far the job is: a number from 0 to 100 (decimals allowed).
    #[arg(allow_hyphen_values = true)]
    pub percent: String,
    /// What it is doing (at most 200 bytes).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub message: Vec<String>,
}

/// `zkmw status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A task id (task-NNNNNNNNNN); without it, the whole cluster.
    pub task: Option<String>,
    /// Print JSON (the shape is documented in README).
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Redraw the cluster view in place on the terminal until Ctrl-C.
    #[arg(long, conflicts_with = "task")]
    pub watch: bool,
    /// With --watch: time between two redraws (at least 100ms).
    #[arg(long, default_value = "2s", value_parser = DurationIn::at_least(Duration::from_millis(100)), requires = "watch")]
    pub interval: Duration,
}

/// `zkmw tasks`.
#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only tasks in this state.
    #[arg(long, value_parser = ["pending", "assigned", "running", "done", "failed"])]
    pub state: Option<String>,
    /// Only tasks assigned to this worker, or last run by it.
    #[arg(long, value_parser = parse_id)]
    pub worker: Option<String>,
    /// At most this many (1 to 100000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: u32,
    /// Print JSON: an array of tasks (the fields are documented in README).
    #[arg(long)]
    pub json: bool,
}

/// `zkmw purge`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("policy").required(true).multiple(true))]
pub struct PurgeArgs {
    /// Delete results stored longer ago than this (0 deletes them all).
    #[arg(long, value_parser = DurationIn::at_least(Duration::ZERO), group = "policy")]
    pub older_than: Option<Duration>,
    /// Keep only this many results (the newest).
    #[arg(long, group = "policy")]
    pub keep: Option<usize>,
}

/// `zkmw config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do with the settings.
    #[command(subcommand)]
    pub action: ConfigAction,
}

/// The actions of `zkmw config`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Store a cluster setting (validated as its flag is); running roles
    /// pick it up within a second or two.
    Set {
        /// The setting, named after its flag (timeout, retries, ...).
        key: String,
        /// Its value, as its flag takes it (30s, 5, ...).
        value: String,
    },
    /// Print the value this process would use (flag/env, cluster, default).
    Get {
        /// The setting.
        key: String,
    },
    /// Remove a cluster setting: the default applies again.
    Unset {
        /// The setting.
        key: String,
    },
    /// Every setting, its value for this process and where it comes from.
    List {
        /// Print JSON: an object of settings (fields documented in README).
        #[arg(long)]
        json: bool,
    },
}

/// `zkmw completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_parser = ["bash", "zsh", "fish"])]
    pub shell: String,
}

/// `zkmw man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// A command's own page (`zkmw man worker` is zkmw-worker(1)); without
    /// it, zkmw(1).
    pub command: Option<String>,
}

/// A comma list of host:port, each with a non-empty host and a valid port.
/// A chroot suffix (`host:port/path`) is refused: zkmw's namespace is `--root`.
pub fn parse_hosts(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("empty ZooKeeper host list (expected host:port[,host:port...])".into());
    }
    for entry in s.split(',') {
        if let Some(at) = entry.find('/') {
            let chroot = &entry[at..];
            return Err(format!(
                "'{entry}' has a chroot path ('{chroot}'): zkmw does not support chroots; drop it from --zk and give the path with --root instead (e.g. --root {}/zkmw)",
                chroot.trim_end_matches('/')
            ));
        }
        let (host, port) = entry
            .trim()
            .rsplit_once(':')
            .ok_or_else(|| format!("'{entry}' is not host:port"))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(format!("'{entry}' has no valid host"));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(format!("'{entry}' has no valid port (1-65535)")),
        }
    }
    Ok(s.split(',').map(str::trim).collect::<Vec<_>>().join(","))
}

/// Where to listen: `HOST:PORT`, or a bare `PORT` (or `:PORT`) on the
/// loopback address only, since the endpoint has no authentication.
pub fn parse_http_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    let port_only = s.strip_prefix(':').unwrap_or(s);
    let full = if port_only.parse::<u16>().is_ok() {
        format!("127.0.0.1:{port_only}")
    } else {
        s.to_string()
    };
    let bad =
        || format!("'{s}' is not an address to listen on: HOST:PORT or PORT (e.g. 127.0.0.1:9464)");
    full.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// Digest credentials: `user:password`, both non-empty.
pub fn parse_auth(s: &str) -> Result<String, String> {
    match s.split_once(':') {
        Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(s.to_string()),
        _ => Err("credentials must be USER:PASSWORD, both non-empty".into()),
    }
}

/// Reads credentials from a file: its first line, as USER:PASSWORD.
pub fn read_auth_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read --auth-file {}: {err}", path.display()))?;
    let line = text.lines().next().unwrap_or("").trim();
    parse_auth(line).map_err(|err| format!("--auth-file {}: {err}", path.display()))
}

/// An absolute znode path, not `/` itself nor inside `/zookeeper`, each of
/// whose segments passes [`check_znode_name`].
pub fn parse_root(s: &str) -> Result<String, String> {
    let trimmed = s.trim_end_matches('/');
    if !s.starts_with('/') {
        return Err(format!("'{s}' is not an absolute path (example: /zkmw)"));
    }
    if trimmed.is_empty() {
        return Err("the root must not be '/' itself (example: /zkmw)".into());
    }
    if trimmed == "/zookeeper" || trimmed.starts_with("/zookeeper/") {
        return Err(format!(
            "'{s}' is inside /zookeeper, the server's own tree (example: /zkmw)"
        ));
    }
    trimmed[1..]
        .split('/')
        .try_for_each(|part| check_znode_name("a segment", part))?;
    Ok(trimmed.to_string())
}

/// A worker or master id: a single znode name, without whitespace.
pub fn parse_id(s: &str) -> Result<String, String> {
    if s.len() > MAX_ID_LEN {
        return Err(format!("the id is longer than {MAX_ID_LEN} bytes"));
    }
    if s.contains(char::is_whitespace) {
        return Err(format!("the id '{}' has whitespace", s.escape_debug()));
    }
    check_znode_name("the id", s)?;
    Ok(s.to_string())
}

/// A lock name (`submit --lock`): a znode name of 1-128 bytes, no
/// whitespace.
pub fn parse_lock(s: &str) -> Result<String, String> {
    parse_name("the lock name", s)
}

/// A unique key (`submit --unique`): a znode name of 1-128 bytes, no
/// whitespace.
pub fn parse_unique(s: &str) -> Result<String, String> {
    parse_name("the unique key", s)
}

/// A name that becomes a znode name: at most [`MAX_ID_LEN`] bytes, no
/// whitespace, and the server's rules.
fn parse_name(what: &str, s: &str) -> Result<String, String> {
    if s.len() > MAX_ID_LEN {
        return Err(format!("{what} is longer than {MAX_ID_LEN} bytes"));
    }
    if s.contains(char::is_whitespace) {
        return Err(format!("{what} '{}' has whitespace", s.escape_debug()));
    }
    check_znode_name(what, s)?;
    Ok(s.to_string())
}

/// Longest worker label.
pub const MAX_LABEL_LEN: usize = 64;

/// A worker label (`worker --label`, `submit --on`): `NAME` or
/// `NAME=VALUE`, each made of ASCII letters, digits, `.`, `_` and `-`,
/// 1-64 bytes in all.
pub fn parse_label(s: &str) -> Result<String, String> {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    let (name, value) = s.split_once('=').unwrap_or((s, "x"));
    if s.len() > MAX_LABEL_LEN || !word(name) || !word(value) {
        return Err(format!(
            "'{}' is not a label: NAME or NAME=VALUE, of letters, digits, '.', '_' and '-', at most {MAX_LABEL_LEN} bytes",
            s.escape_debug()
        ));
    }
    Ok(s.to_string())
}

/// A duration: a number with an optional unit ms, s, m, h or d (default s).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (examples: 500ms, 30s, 5m, 1h, 7d)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("'{s}' has an unknown unit (use ms, s, m, h or d)")),
    };
    if !seconds.is_finite() || seconds > 1e9 {
        return Err(format!("'{s}' is too long"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The value parser of a duration flag: [`parse_duration`], then the flag's
/// bounds. Its messages name the flag (and the env var, when the value came
/// from there), e.g. "--tick must be at least 100ms, got 1ms".
#[derive(Debug, Clone, Copy)]
pub struct DurationIn {
    min: Duration,
    max: Duration,
}

impl DurationIn {
    /// At least `min`, and no longer than [`parse_duration`] allows.
    pub const fn at_least(min: Duration) -> Self {
        DurationIn {
            min,
            max: Duration::MAX,
        }
    }

    /// From `min` to `max`, both included.
    pub const fn between(min: Duration, max: Duration) -> Self {
        DurationIn { min, max }
    }

    /// The duration `text` says, if it lies within the bounds; `flag` names
    /// the value in the message (a flag, or a cluster setting's key).
    pub fn check(&self, flag: &str, text: &str) -> Result<Duration, String> {
        let value = parse_duration(text).map_err(|err| format!("{flag}: {err}"))?;
        let text = text.trim();
        if value < self.min {
            return Err(format!(
                "{flag} must be at least {}, got {text}",
                show_duration(self.min)
            ));
        }
        if value > self.max {
            return Err(format!(
                "{flag} must be at most {}, got {text}",
                show_duration(self.max)
            ));
        }
        Ok(value)
    }
}

impl TypedValueParser for DurationIn {
    type Value = Duration;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<Duration, clap::Error> {
        let flag = value_name(arg, value, "the duration");
        self.check(&flag, &value.to_string_lossy())
            .map_err(|msg| clap::Error::raw(ErrorKind::ValueValidation, msg).with_cmd(cmd))
    }
}

/// How a value parser's message names the value: its flag, and the
/// environment variable when the value came from there
/// (`--keep-results (from ZKMW_KEEP_RESULTS)`), else `fallback`.
fn value_name(arg: Option<&Arg>, value: &OsStr, fallback: &str) -> String {
    let mut flag = arg
        .and_then(Arg::get_long)
        .map_or_else(|| fallback.to_string(), |long| format!("--{long}"));
    if let Some(env) = arg.and_then(Arg::get_env)
        && std::env::var_os(env).as_deref() == Some(value)
    {
        flag = format!("{flag} (from {})", env.to_string_lossy());
    }
    flag
}

/// The value parser of a count flag: a whole number from 0 to a bound,
/// with messages that name the flag, like [`DurationIn`]'s
/// ("--output-cap must be at most 400000, got 500000").
#[derive(Debug)]
pub struct CountIn<T> {
    max: u64,
    kind: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for CountIn<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for CountIn<T> {}

impl<T> CountIn<T> {
    /// From 0 to `max`, both included.
    pub const fn up_to(max: u64) -> Self {
        CountIn {
            max,
            kind: std::marker::PhantomData,
        }
    }

    /// The bound.
    pub const fn max(&self) -> u64 {
        self.max
    }

    /// The count `text` says, if it is at most the bound; `name` names the
    /// value in the message (a flag, or a cluster setting's key).
    pub fn check(&self, name: &str, text: &str) -> Result<u64, String> {
        let text = text.trim();
        let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse::<u64>() {
            Ok(n) if digits && n <= self.max => Ok(n),
            _ if digits => Err(format!("{name} must be at most {}, got {text}", self.max)),
            _ => Err(format!("{name} must be a whole number, got '{text}'")),
        }
    }
}

impl<T> TypedValueParser for CountIn<T>
where
    T: TryFrom<u64> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = value_name(arg, value, "the count");
        let refuse = |msg| clap::Error::raw(ErrorKind::ValueValidation, msg).with_cmd(cmd);
        let n = self
            .check(&name, &value.to_string_lossy())
            .map_err(refuse)?;
        T::try_from(n).map_err(|_| refuse(format!("{name} is too large for this machine")))
    }
}

/// A duration in the largest unit that shows it whole (100ms, 1s, 1h): for
/// bounds in messages, and for settings as zkmw shows and stores them.
pub fn show_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}s", d.as_secs_f64());
    }
    let ms = d.as_millis();
    let units = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ];
    units
        .iter()
        .find(|(_, size)| ms >= *size && ms.is_multiple_of(*size))
        .map_or_else(
            || format!("{ms}ms"),
            |(unit, size)| format!("{}{unit}", ms / size),
        )
}

/// The command line, parsed, and which of the cluster settings it gives
/// came from their environment variable rather than their flag (clap
/// knows; the roles' logs say it).
pub struct Parsed {
    /// The command and its options.
    pub cli: Cli,
    /// The settings whose value is their environment variable's.
    pub from_env: Vec<Key>,
}

/// Parses `args` (the program's name first) into [`Parsed`].
pub fn parse_from<I, T>(args: I) -> Result<Parsed, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let from_env = match matches.subcommand() {
        Some((_, command)) => KEYS
            .iter()
            .copied()
            .filter(|key| came_from_env(command, *key))
            .collect(),
        None => Vec::new(),
    };
    Ok(Parsed { cli, from_env })
}

/// Whether `key`'s option is one of this command's and took its value from
/// its environment variable.
fn came_from_env(command: &ArgMatches, key: Key) -> bool {
    let id = key.name().replace('-', "_");
    command.ids().any(|given| given.as_str() == id)
        && command.value_source(&id) == Some(ValueSource::EnvVariable)
}

/// The one line zkmw prints for a command line clap refused (after `zkmw: `):
/// clap's first paragraph, or, when no role was given, the roles there are.
pub fn usage_error(err: &clap::Error) -> String {
    if matches!(
        err.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let roles: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|role| role.get_name().to_string())
            .collect();
        return format!(
            "missing command: one of {} (see zkmw --help)",
            roles.join(", ")
        );
    }
    let rendered = err.render().to_string();
    let paragraph: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = paragraph.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    format!("{message} (see zkmw --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_hosts() {
        assert_eq!(parse_hosts("a:1, b:2").unwrap(), "a:1,b:2");
        for bad in ["", "a", "a:", ":1", "a:0", "a:99999", "a:1,,b:2", "a:1/x"] {
            assert!(parse_hosts(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_chroot_in_the_host_list_points_to_root() {
        let why = parse_hosts("a:1,b:2/app").unwrap_err();
        assert!(why.contains("does not support chroots"), "{why}");
        assert!(why.contains("--root /app/zkmw"), "{why}");
    }

    #[test]
    fn an_http_port_alone_listens_on_loopback() {
        for given in ["9464", ":9464", " 9464 "] {
            assert_eq!(
                parse_http_addr(given),
                Ok("127.0.0.1:9464".parse().unwrap())
            );
        }
        assert_eq!(
            parse_http_addr("0.0.0.0:80"),
            Ok("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(parse_http_addr("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        for bad in ["", "x", "99999", "127.0.0.1", "1.2.3.4:x"] {
            let why = parse_http_addr(bad).unwrap_err();
            assert!(why.contains("not an address to listen on"), "{bad}: {why}");
        }
    }

    #[test]
    fn validates_credentials() {
        assert!(parse_auth("ops:s3cret:with:colons").is_ok());
        for bad in ["", "ops", "ops:", ":pw"] {
            assert!(parse_auth(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validates_roots() {
        assert_eq!(parse_root("/zkmw/").unwrap(), "/zkmw");
        assert_eq!(parse_root("/a/b").unwrap(), "/a/b");
        assert_eq!(parse_root("/zookeeperx").unwrap(), "/zookeeperx");
        assert_eq!(parse_root("/a b/é").unwrap(), "/a b/é");
        for bad in ["zkmw", "/", "", "/a//b", "/a/../b", "/a/.", "/a/\u{1}"] {
            assert!(parse_root(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_roots_zookeeper_refuses_or_owns() {
        let why = parse_root("/zkmw/a😀").unwrap_err();
        assert_eq!(
            why,
            "a segment 'a😀' has a character ZooKeeper refuses: U+1F600 at byte 1"
        );
        for owned in ["/zookeeper", "/zookeeper/", "/zookeeper/quota/x"] {
            let why = parse_root(owned).unwrap_err();
            assert!(why.contains("inside /zookeeper"), "{owned}: {why}");
        }
    }

    #[test]
    fn validates_ids() {
        assert!(parse_id("w-1.example").is_ok());
        assert!(parse_id("wörker-ß").is_ok());
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in ["", ".", "..", "a/b", "a b", "a\u{2028}b", long.as_str()] {
            assert!(parse_id(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_id("w\u{e000}").unwrap_err(),
            "the id 'w\\u{e000}' has a character ZooKeeper refuses: U+E000 at byte 1"
        );
    }

    /// The first character of each range ZooKeeper refuses, the last one,
    /// and the characters just outside.
    #[test]
    fn znode_names_follow_zookeepers_character_ranges() {
        let refused = [
            '\u{0}',
            '\u{1}',
            '\u{1f}',
            '\u{7f}',
            '\u{9f}',
            '\u{e000}',
            '\u{f8ff}',
            '\u{fff0}',
            '\u{ffff}',
            '\u{10000}',
            '\u{1f600}',
            '\u{10ffff}',
        ];
        for c in refused {
            let why = check_znode_name("the name", &format!("ab{c}")).unwrap_err();
            let code = format!("U+{:04X} at byte 2", u32::from(c));
            assert!(why.ends_with(&code), "{c:?}: {why}");
        }
        let accepted = [' ', '~', '\u{a0}', '\u{d7ff}', '\u{f900}', '\u{ffef}'];
        for c in accepted {
            assert_eq!(
                check_znode_name("the name", &format!("a{c}")),
                Ok(()),
                "{c:?}"
            );
        }
    }

    #[test]
    fn znode_names_are_one_segment() {
        for (name, why) in [
            ("", "the name is empty"),
            (".", "the name '.' is not a znode name"),
            ("..", "the name '..' is not a znode name"),
            ("a/b", "the name 'a/b' is not a znode name"),
        ] {
            let said = check_znode_name("the name", name).unwrap_err();
            assert!(said.starts_with(why), "{name:?}: {said}");
        }
        assert_eq!(check_znode_name("the name", "..."), Ok(()));
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86400)
        );
        for bad in ["", "x", "5w", "-1", "1e999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_keep_within_their_flags_bounds() {
        let tick = DurationIn::at_least(MIN_TICK);
        assert_eq!(tick.check("--tick", "100ms"), Ok(MIN_TICK));
        assert_eq!(
            tick.check("--tick", " 1ms"),
            Err("--tick must be at least 100ms, got 1ms".into())
        );
        assert_eq!(
            tick.check("--tick", "x"),
            Err("--tick: 'x' is not a duration (examples: 500ms, 30s, 5m, 1h, 7d)".into())
        );
        let session = DurationIn::between(SECOND, Duration::from_secs(3600));
        assert_eq!(session.check("--s", "1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            session.check("--s", "61m"),
            Err("--s must be at most 1h, got 61m".into())
        );
        assert_eq!(
            session.check("--s", "0.5"),
            Err("--s must be at least 1s, got 0.5".into())
        );
        let drain = DurationIn::at_least(Duration::ZERO);
        assert_eq!(drain.check("--drain-timeout", "0"), Ok(Duration::ZERO));
    }

    #[test]
    fn every_duration_flag_checks_its_bounds() {
        let refused = [
            vec!["master", "--tick", "99ms"],
            vec!["worker", "--id", "w", "--tick", "0"],
            vec!["master", "--result-ttl", "999ms"],
            vec!["--session-timeout", "999ms", "status"],
            vec!["--session-timeout", "3601s", "status"],
            vec!["--connect-timeout", "0", "status"],
            vec!["submit", "--timeout", "0", "true"],
            vec!["submit", "--wait", "--wait-timeout", "99ms", "true"],
        ];
        for args in refused {
            let err = Cli::try_parse_from(std::iter::once("zkmw").chain(args.clone()))
                .expect_err("refused");
            assert!(err.to_string().contains("must be at"), "{args:?}: {err}");
        }
        let accepted = [
            vec![
                "worker",
                "--id",
                "w",
                "--drain-timeout",
                "0",
                "--tick",
                "100ms",
            ],
            vec!["purge", "--older-than", "0"],
            vec![
                "--session-timeout",
                "1h",
                "--connect-timeout",
                "1s",
                "status",
            ],
        ];
        for args in accepted {
            let parsed = Cli::try_parse_from(std::iter::once("zkmw").chain(args.clone()));
            assert!(parsed.is_ok(), "{args:?}: {:?}", parsed.err());
        }
    }

    #[test]
    fn a_missing_command_says_which_there_are() {
        for args in [&["zkmw"][..], &["zkmw", "--zk", "a:1"]] {
            let err = Cli::try_parse_from(args).expect_err("no command");
            assert_eq!(
                usage_error(&err),
                "missing command: one of master, worker, submit, wait, progress, cancel, status, tasks, purge, config, completions, man (see zkmw --help)"
            );
        }
    }
}
