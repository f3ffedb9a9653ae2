//! A job's progress channel: the write end of a pipe the job finds open
//! at [`KEPT_FD`](super::KEPT_FD) (its number in `ZKMW_PROGRESS`), the
//! read end watched in the job's own `poll` with its output. Each line the
//! job writes, `PERCENT [MESSAGE]`, is one report; `zkmw progress` writes
//! them, and a job may write them itself (`echo "40 copying" >&3`). Lines
//! that are not reports are dropped: a job cannot make its worker write
//! anything but a number and a short message.

use std::os::fd::OwnedFd;

use rustix::io::Errno;

/// The longest progress message, in bytes of UTF-8; longer ones are cut.
pub const MAX_MESSAGE: usize = 200;

/// The longest line kept while it is being read; the rest is dropped.
const MAX_LINE: usize = 4096;

/// One progress report of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// How far it is: 0 to 100.
    pub percent: f64,
    /// What it is doing, at most [`MAX_MESSAGE`] bytes; may be empty.
    pub message: String,
}

impl Progress {
    /// Reads one report: `PERCENT`, then optionally a space and a message.
    /// `Err` says what is wrong (for `zkmw progress` to refuse it).
    pub fn parse(line: &str) -> Result<Progress, String> {
        let (number, message) = line.split_once(' ').unwrap_or((line, ""));
        let percent: f64 = number
            .trim()
            .parse()
            .map_err(|_| format!("'{number}' is not a percentage (a number from 0 to 100)"))?;
        if !(0.0..=100.0).contains(&percent) {
            return Err(format!("{number} is not between 0 and 100"));
        }
        Ok(Progress {
            percent,
            message: message.trim().to_string(),
        })
    }

    /// The report as the line a job writes.
    pub fn line(&self) -> String {
        format!("{} {}\n", self.percent, self.message)
    }
}

/// What a run does with its job's reports.
pub type ProgressSink = Box<dyn FnMut(Progress) + Send>;

/// The read end of a job's progress pipe and what is read of it so far.
pub struct Channel {
    fd: Option<OwnedFd>,
    line: Vec<u8>,
    sink: ProgressSink,
}

impl Channel {
    /// Watches `fd`, handing each report to `sink`.
    pub fn new(fd: OwnedFd, sink: ProgressSink) -> Channel {
        Channel {
            fd: Some(fd),
            line: Vec::new(),
            sink,
        }
    }

    /// The descriptor to poll, until end of file.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// One read, which poll said is ready; hands over each whole line.
    pub fn read(&mut self) {
        let Some(fd) = &self.fd else { return };
        let mut buf = [0u8; 4096];
        let n = match rustix::io::read(fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::INTR | Errno::AGAIN) => return,
            Err(_) => 0,
        };
        if n == 0 {
            self.fd = None;
            return;
        }
        for &byte in &buf[..n] {
            if byte == b'\n' {
                self.hand_over();
            } else if self.line.len() < MAX_LINE {
                self.line.push(byte);
            }
        }
    }

    fn hand_over(&mut self) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.line)).into_owned();
        match Progress::parse(&line) {
            Ok(mut report) => {
                let cut = report.message.floor_char_boundary(MAX_MESSAGE);
                report.message.truncate(cut);
                (self.sink)(report);
            }
            Err(why) => log::debug!("a job's progress line was dropped: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reports_and_refuses_what_is_not_one() {
        let p = Progress::parse("40 copying table 3").unwrap();
        assert_eq!((p.percent, p.message.as_str()), (40.0, "copying table 3"));
        assert_eq!(Progress::parse("12.5").unwrap().percent, 12.5);
        assert_eq!(Progress::parse("100").unwrap().message, "");
        for bad in ["101", "-1", "NaN", "inf", "text", "", " 5"] {
            assert!(Progress::parse(bad).is_err(), "{bad:?}");
        }
        let line = Progress::parse("7 x").unwrap().line();
        assert_eq!(Progress::parse(line.trim_end()).unwrap().percent, 7.0);
    }
}
