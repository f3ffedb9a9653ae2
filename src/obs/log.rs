//! The log's two formats (`--log-format text|json`) and the context every
//! line carries: this process's role and id, the master's epoch while it
//! leads, and the task a job thread works on. A line about a task names
//! it: in the message (zkmw's own lines say `task-0000000042: ...`), else
//! from the job thread's task, so `grep task-0000000042` finds every line
//! of that task in either format. [`fields`] builds a JSON line from plain
//! data.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};

use log::kv::{Error as KvError, Key, Value as KvValue, VisitSource};
use serde_json::Value;

use crate::layout::is_task_name;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// For people: `[time LEVEL target] message`.
    Text,
    /// One JSON object per line, for journald, Loki or ELK.
    Json,
}

impl Format {
    /// The format a `--log-format` word names.
    pub fn parse(word: &str) -> Result<Format, String> {
        match word {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("'{word}' is not a log format (text or json)")),
        }
    }
}

/// This process's role and id, once it runs one.
static PROCESS: OnceLock<(&'static str, String)> = OnceLock::new();

/// The epoch this master leads under; 0 when it does not.
static EPOCH: AtomicI64 = AtomicI64::new(0);

thread_local! {
    /// The task this thread works on, if any.
    static TASK: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Names this process's role and id in every later line.
pub fn set_process(role: &'static str, id: &str) {
    let _ = PROCESS.set((role, id.to_string()));
}

/// The epoch this master now leads under, or `None`.
pub fn set_epoch(epoch: Option<i32>) {
    EPOCH.store(epoch.map_or(0, i64::from), Ordering::Relaxed);
}

/// While this lives, the thread's lines are about `task`.
pub struct TaskScope(());

/// Marks the current thread's lines as being about `task` until the
/// returned scope is dropped.
pub fn task_scope(task: &str) -> TaskScope {
    TASK.with(|t| *t.borrow_mut() = Some(task.to_string()));
    TaskScope(())
}

impl Drop for TaskScope {
    fn drop(&mut self) {
        TASK.with(|t| *t.borrow_mut() = None);
    }
}

/// Sets up the logger: `default_level` unless `RUST_LOG` says otherwise,
/// in `format`.
pub fn init(format: Format, default_level: &str) {
    let env = env_logger::Env::default().default_filter_or(default_level);
    let mut builder = env_logger::Builder::from_env(env);
    match format {
        Format::Text => builder.format(|buf, record| {
            let style = buf.default_level_style(record.level());
            let line = Line::of(record);
            let task = line.task_prefix();
            writeln!(
                buf,
                "[{} {style}{:<5}{style:#} {}] {task}{}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                line.message
            )
        }),
        Format::Json => builder.format(|buf, record| {
            let mut line = Line::of(record);
            line.time = buf.timestamp_millis().to_string();
            writeln!(buf, "{}", json(&fields(&line)))
        }),
    };
    builder.init();
}

/// One log record and its context, as plain data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Line {
    /// RFC 3339, UTC, to the millisecond.
    pub time: String,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    /// The module that logged it.
    pub target: String,
    /// The message.
    pub message: String,
    /// The record's key-value pairs (`worker = ...`).
    pub pairs: Vec<(String, String)>,
    /// This process's role and id.
    pub process: Option<(&'static str, String)>,
    /// The epoch this master leads under.
    pub epoch: Option<i64>,
    /// The task the logging thread works on.
    pub thread_task: Option<String>,
}

impl Line {
    fn of(record: &log::Record) -> Line {
        let mut pairs = Pairs(Vec::new());
        let _ = record.key_values().visit(&mut pairs);
        Line {
            time: String::new(),
            level: record.level().as_str().to_lowercase(),
            target: record.target().to_string(),
            message: record.args().to_string(),
            pairs: pairs.0,
            process: PROCESS.get().cloned(),
            epoch: Some(EPOCH.load(Ordering::Relaxed)).filter(|e| *e > 0),
            thread_task: TASK.with(|t| t.borrow().clone()),
        }
    }

    /// `task-...: ` when the line is about the thread's task and its
    /// message does not name it.
    fn task_prefix(&self) -> String {
        match &self.thread_task {
            Some(task) if task_in(&self.message).is_none() => format!("{task}: "),
            _ => String::new(),
        }
    }
}

/// Collects a record's key-value pairs as strings.
struct Pairs(Vec<(String, String)>);

impl<'kvs> VisitSource<'kvs> for Pairs {
    fn visit_pair(&mut self, key: Key<'kvs>, value: KvValue<'kvs>) -> Result<(), KvError> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

/// The first task id in `text`.
pub fn task_in(text: &str) -> Option<&str> {
    text.match_indices("task-")
        .map(|(at, _)| &text[at..text.len().min(at + 15)])
        .find(|candidate| is_task_name(candidate))
}

/// The fields of a line's JSON object, in this order: time, level, role,
/// id, message, target, the record's pairs, the task it is about, the
/// worker (a worker's own id, unless the record names one), the master's
/// epoch. A key is given once (its first value).
pub fn fields(line: &Line) -> Vec<(String, Value)> {
    let mut map: Vec<(String, Value)> = Vec::new();
    let mut put = |key: &str, value: Value| {
        if !map.iter().any(|(k, _)| k == key) {
            map.push((key.to_string(), value));
        }
    };
    put("time", line.time.clone().into());
    put("level", line.level.clone().into());
    if let Some((role, id)) = &line.process {
        put("role", (*role).into());
        put("id", id.clone().into());
    }
    put("message", line.message.clone().into());
    put("target", line.target.clone().into());
    for (key, value) in &line.pairs {
        put(key, value.clone().into());
    }
    let task = task_in(&line.message).or(line.thread_task.as_deref());
    if let Some(task) = task {
        put("task", task.into());
    }
    if let Some(("worker", id)) = line.process.as_ref().map(|(r, id)| (*r, id)) {
        put("worker", id.clone().into());
    }
    if let Some(epoch) = line.epoch {
        put("epoch", epoch.into());
    }
    map
}

/// One JSON object of `fields`, keys in their order.
pub fn json(fields: &[(String, Value)]) -> String {
    let members: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}:{value}", Value::from(key.as_str())))
        .collect();
    format!("{{{}}}", members.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_task_a_message_names() {
        assert_eq!(
            task_in("master: requeued task-0000000042 from w1"),
            Some("task-0000000042")
        );
        assert_eq!(
            task_in("task-0000000007: finished"),
            Some("task-0000000007")
        );
        assert_eq!(task_in("task-12 is not one; task-x neither"), None);
        assert_eq!(task_in("no task here"), None);
    }

    #[test]
    fn a_json_line_carries_its_context() {
        let line = Line {
            time: "2026-12-01T10:00:00.123Z".into(),
            level: "info".into(),
            target: "zkmw::master::lead".into(),
            message: "master: requeued task-0000000042 from w1".into(),
            pairs: vec![("worker".into(), "w1".into())],
            process: Some(("master", "m1".into())),
            epoch: Some(4),
            thread_task: None,
        };
        let text = json(&fields(&line));
        assert!(text.starts_with(r#"{"time":"2026-12-01T10:00:00.123Z","level":"info","role":"master","id":"m1","message":"#), "{text}");
        let json: Value = serde_json::from_str(&text).expect("one JSON object");
        assert_eq!(json["role"], "master");
        assert_eq!(json["id"], "m1");
        assert_eq!(json["task"], "task-0000000042");
        assert_eq!(json["worker"], "w1");
        assert_eq!(json["epoch"], 4);
        assert_eq!(json["level"], "info");
        assert_eq!(json["time"], "2026-12-01T10:00:00.123Z");
    }

    /// A job thread's line that does not name its task still carries it;
    /// a worker's lines name the worker.
    #[test]
    fn a_job_threads_line_carries_its_task() {
        let line = Line {
            message: "reading job output: broken pipe".into(),
            process: Some(("worker", "w2".into())),
            thread_task: Some("task-0000000009".into()),
            ..Line::default()
        };
        let json: Value = serde_json::from_str(&json(&fields(&line))).expect("JSON");
        assert_eq!(json["task"], "task-0000000009");
        assert_eq!(json["worker"], "w2");
        assert!(json.get("epoch").is_none());
        assert_eq!(line.task_prefix(), "task-0000000009: ");
    }
}
