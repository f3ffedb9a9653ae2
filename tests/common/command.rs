//! Short commands run to completion with a bounded time, and their output
//! described for failure messages.

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::Reaped;

/// Runs `cmd` to completion with its output captured; SIGKILLs it and
/// panics if it is still running after `limit`.
pub fn run_bounded(cmd: Command, limit: Duration) -> Output {
    let what = describe_cmd(&cmd);
    try_run_bounded(cmd, limit).unwrap_or_else(|e| panic!("cannot start {what}: {e}"))
}

/// Like [`run_bounded`], but returns the error when the program cannot be
/// started at all (e.g. E2BIG: an argument over the kernel's limit).
pub fn try_run_bounded(cmd: Command, limit: Duration) -> std::io::Result<Output> {
    let what = describe_cmd(&cmd);
    let out = run_within(cmd, limit)?;
    Ok(out.unwrap_or_else(|| panic!("{what} still running after {limit:?}; killed")))
}

/// Runs `cmd` with its output captured: its output, or `None` when it was
/// still running after `limit` (it is then SIGKILLed and reaped).
pub fn run_within(mut cmd: Command, limit: Duration) -> std::io::Result<Option<Output>> {
    let mut child = Reaped::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()))?;
    let out_reader = reader(child.stdout.take());
    let err_reader = reader(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait()? {
            Some(status) => break status,
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            None => return Ok(None),
        }
    };
    Ok(Some(Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }))
}

/// A command line for messages, cut to a readable length.
fn describe_cmd(cmd: &Command) -> String {
    let what = format!("{cmd:?}");
    if what.len() > 300 {
        format!("{}...", &what[..what.floor_char_boundary(300)])
    } else {
        what
    }
}

fn reader(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Parses a command's stdout as JSON; the command must have exited 0.
pub fn parse_json(out: &Output, what: &str) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "`{what}` failed: {}",
        describe(out)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("`{what}` printed no JSON ({e}): {}", describe(out)))
}

/// Exit status, stdout and stderr of a command, for failure messages.
pub fn describe(out: &Output) -> String {
    let cut = |b: &[u8]| {
        let s = String::from_utf8_lossy(b);
        if s.len() > 2000 {
            format!(
                "{}... ({} bytes)",
                &s[..s.floor_char_boundary(2000)],
                s.len()
            )
        } else {
            s.into_owned()
        }
    };
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        cut(&out.stdout),
        cut(&out.stderr)
    )
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}
