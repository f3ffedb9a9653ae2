//! A command's results on stdout, written and flushed with every error
//! checked: a full disk or a closed pipe becomes one `zkmw:` line and exit
//! 74, never a panic (as `println!` would) and never a silent exit 0.

use std::io::Write;

use crate::error::Error;

/// Writes `bytes` to stdout and flushes; `after` says what the user must
/// know if that fails (e.g. that the task was stored anyway).
pub fn write(bytes: &[u8], after: Option<&str>) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|err| Error::Stdout {
            err: err.to_string(),
            after: after.map(str::to_string),
        })
}

/// The width assumed for a terminal that does not say its own (a pty
/// whose size was never set, a serial console).
const DEFAULT_WIDTH: usize = 80;

/// The width of the terminal stdout is, if it is one.
pub fn terminal_width() -> Option<usize> {
    let out = std::io::stdout();
    if !rustix::termios::isatty(&out) {
        return None;
    }
    let cols = rustix::termios::tcgetwinsize(&out).map_or(0, |size| usize::from(size.ws_col));
    Some(if cols > 0 { cols } else { DEFAULT_WIDTH })
}

/// Writes one line of text to stdout; see [`write`].
pub fn line(text: &str, after: Option<&str>) -> Result<(), Error> {
    write(format!("{text}\n").as_bytes(), after)
}
