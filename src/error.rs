//! The errors a role ends with, each a one-line message and a documented
//! exit code (the codes follow coreutils `timeout`).

use std::fmt;

use crate::zk::ZkError;

/// Exit code when `--wait-timeout` ran out, or the job hit its `--timeout`.
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit code for zkmw's own failure: bad input, ZooKeeper unreachable, not
/// authorized, or a task that zkmw failed (worker lost, malformed).
pub const EXIT_ZKMW_FAILED: i32 = 125;
/// Exit code when the queue is full: a temporary failure, try again later
/// (EX_TEMPFAIL of sysexits.h).
pub const EXIT_QUEUE_FULL: i32 = 75;
/// Exit code when the job could not be started on the worker.
pub const EXIT_CANNOT_START: i32 = 126;
/// Exit code of `submit --lock --skip-if-locked` when a task of the lock is
/// in flight: nothing was stored.
pub const EXIT_LOCKED: i32 = 122;
/// Exit code of `submit --wait` and `wait` for a task that was cancelled.
pub const EXIT_CANCELLED: i32 = 123;
/// Exit code when stdout could not be written (a full disk, a closed pipe):
/// EX_IOERR of sysexits.h.
pub const EXIT_OUTPUT: i32 = 74;

/// Why a command stopped short.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The user's input is wrong; the message says what to change.
    BadInput(String),
    /// A ZooKeeper call failed while doing something.
    Zk {
        /// What zkmw was doing, for the message.
        doing: String,
        /// The failure.
        err: ZkError,
    },
    /// The namespace is protected and these credentials (or none) may not use it.
    NotAuthorized(String),
    /// /tasks holds as many pending tasks as it may.
    QueueFull {
        /// Tasks pending now.
        pending: usize,
        /// Tasks this command was about to add.
        adding: usize,
        /// The limit (`--max-pending`).
        limit: usize,
    },
    /// A worker with this id is already live.
    WorkerIdTaken(String),
    /// No task with this id exists in the namespace.
    NoSuchTask {
        /// The id asked for.
        task: String,
        /// What is known about it.
        why: Missing,
    },
    /// A task to cancel has its result already.
    AlreadyFinished {
        /// The task.
        task: String,
        /// How it ended.
        how: String,
    },
    /// Writing the command's results to stdout failed.
    Stdout {
        /// Why.
        err: String,
        /// What still holds, for the user (e.g. the task was stored).
        after: Option<String>,
    },
}

impl Error {
    /// Wraps a ZooKeeper failure with what was being done.
    pub fn zk(doing: impl Into<String>, err: ZkError) -> Error {
        Error::Zk {
            doing: doing.into(),
            err,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Stdout { .. } => EXIT_OUTPUT,
            Error::QueueFull { .. } => EXIT_QUEUE_FULL,
            _ => EXIT_ZKMW_FAILED,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadInput(msg) => write!(f, "{msg}"),
            Error::NotAuthorized(root) => write!(
                f,
                "not authorized for {root}: the namespace is protected; give its credentials with --auth or --auth-file"
            ),
            Error::Zk {
                err: ZkError::Unreachable(why),
                ..
            } => write!(f, "{why}"),
            Error::Zk { doing, err } => write!(f, "{doing}: {err}"),
            Error::QueueFull {
                pending,
                adding,
                limit,
            } => write!(
                f,
                "the queue is full: {pending} tasks pending, {adding} more would pass the limit of {limit} (--max-pending); these were not stored, try again later"
            ),
            Error::WorkerIdTaken(id) => write!(
                f,
                "worker id '{id}' is already live: stop that worker or pick another --id"
            ),
            Error::NoSuchTask { task, why } => write!(f, "no task '{task}': {why}"),
            Error::AlreadyFinished { task, how } => {
                write!(f, "{task} is not cancelled: {how} already")
            }
            Error::Stdout { err, after: None } => write!(f, "writing to stdout: {err}"),
            Error::Stdout {
                err,
                after: Some(after),
            } => write!(f, "writing to stdout: {err}; {after}"),
        }
    }
}

impl std::error::Error for Error {}

/// Why a task id names nothing in the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Its result was deleted by retention: results of tasks up to this
    /// id have been.
    Purged {
        /// The highest task id purged so far.
        through: String,
    },
    /// No task ever had this id (as far as the purge mark tells: it is
    /// above every purged id, and not found).
    NeverSubmitted {
        /// Whether the namespace has a task folder at all.
        namespace: bool,
    },
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Purged { through } => write!(
                f,
                "it was purged (results of tasks up to {through} have been deleted; the active master keeps them for its --result-ttl and at most its --keep-results, and `zkmw purge` deletes them sooner)"
            ),
            Missing::NeverSubmitted { namespace: true } => write!(
                f,
                "no task with that id was ever submitted here (check --root)"
            ),
            Missing::NeverSubmitted { namespace: false } => write!(
                f,
                "no task with that id was ever submitted here (no task was ever submitted in this namespace; check --root)"
            ),
        }
    }
}
