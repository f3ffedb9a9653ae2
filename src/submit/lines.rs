//! `submit --stdin`: one job per line, stored [`BATCH`] at a time with the
//! creates pipelined, ids printed in input order. Blank lines are skipped.
//! At the first line that cannot be a task, the jobs before it are stored
//! and the line is reported by number; a signal stops the reading the same
//! way, after the batch in flight is stored and its ids printed.

use std::io::BufRead;

use crossbeam_channel::Receiver;

use super::store::store;
use super::{SubmitConfig, Wake, check_task, new_task};
use crate::error::Error;
use crate::model::Task;
use crate::output;
use crate::session;

/// How many tasks of a `--stdin` submission are in flight at once.
pub const BATCH: usize = 512;

/// Reads jobs from `input` until its end; returns the exit code.
pub fn submit_lines(
    cfg: &SubmitConfig,
    input: impl BufRead,
    rx: &Receiver<Wake>,
) -> Result<i32, Error> {
    let mut zk = session::connect(&cfg.connect)?;
    let cfg = &super::settle(&zk, cfg).inspect_err(|_| zk.close(session::CLOSE_WAIT))?;
    let mut lines = input.split(b'\n').enumerate();
    let mut stored = 0usize;
    loop {
        let (tasks, datas, broken) = read_batch(cfg, &mut lines)?;
        if !tasks.is_empty() {
            let (next, names) = store(zk, cfg, &tasks, &datas)?;
            zk = next;
            stored += names.len();
            let after = format!(
                "{stored} tasks were stored, the last {} of them not printed",
                names.len()
            );
            output::write(names.join("\n").as_bytes(), Some(&after))?;
            output::write(b"\n", Some(&after))?;
        }
        if let Some(stop) = rx.try_iter().find_map(Wake::stop) {
            eprintln!(
                "zkmw: stopped (signal {}) after storing {stored} tasks",
                stop.signal
            );
            zk.close(session::CLOSE_WAIT);
            return Ok(stop.exit_code());
        }
        match broken {
            Some(err) => {
                zk.close(session::CLOSE_WAIT);
                return Err(err);
            }
            None if tasks.len() < BATCH => {
                zk.close(session::CLOSE_WAIT);
                return Ok(0);
            }
            None => {}
        }
    }
}

/// One batch of tasks and their records, and the error of the line that
/// ended it early, if one did.
type Batch = (Vec<Task>, Vec<Vec<u8>>, Option<Error>);

/// Reads up to [`BATCH`] jobs from `lines`.
fn read_batch(
    cfg: &SubmitConfig,
    lines: &mut impl Iterator<Item = (usize, std::io::Result<Vec<u8>>)>,
) -> Result<Batch, Error> {
    let mut tasks = Vec::new();
    let mut datas = Vec::new();
    for (index, line) in lines.by_ref() {
        let line = line.map_err(|err| Error::BadInput(format!("reading stdin: {err}")))?;
        let checked = std::str::from_utf8(&line)
            .map_err(|_| Error::BadInput("not valid UTF-8".into()))
            .map(|job| job.trim_end_matches('\r'))
            .and_then(|job| {
                if job.trim().is_empty() {
                    return Ok(None);
                }
                let task = new_task(cfg, job);
                check_task(&task).map(|data| Some((task, data)))
            });
        match checked {
            Ok(None) => continue,
            Ok(Some((task, data))) => {
                tasks.push(task);
                datas.push(data);
            }
            Err(err) => {
                let broken = Error::BadInput(format!("stdin line {}: {err}", index + 1));
                return Ok((tasks, datas, Some(broken)));
            }
        }
        if tasks.len() == BATCH {
            break;
        }
    }
    Ok((tasks, datas, None))
}
