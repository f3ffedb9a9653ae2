//! What every long-running role does with a session: open it (retrying
//! until ZooKeeper answers, or until asked to stop), forward its state
//! changes into the role's channel, and make sure the namespace exists.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::warn;

use crate::error::Error;
use crate::exec::KILL_GRACE;
use crate::layout::Layout;
use crate::notify;
use crate::obs::Obs;
use crate::zk::{ConnectOptions, SessionEvent, Zk, ZkError};

/// How long a worker cut off from ZooKeeper keeps its jobs running, given
/// its session timeout `t`: `2t + 2 s` (12 s with the default 5 s), so a
/// ZooKeeper restart or an ensemble election of up to about 10 s kills
/// nothing (the server gives every session a fresh timeout when it comes
/// back, and the session is resumed, see `zk/keeper.rs`).
pub fn hold(t: Duration) -> Duration {
    t * 2 + Duration::from_secs(2)
}

/// How long the master waits, after it saw a worker's claim vanish, before
/// it runs the task again: long enough that the worker, cut off from
/// ZooKeeper, has killed the job (13 s with the default 5 s).
///
/// The worker counts its hold from the moment it saw the link go down,
/// which is at most 0.4 `t` after it last heard from the server (the
/// client's connection timeout); the server expires the session `t` after
/// it last heard from the worker, which is at most 0.15 `t` (the ping
/// interval) before that. So the claim vanishes at least 0.45 `t` after the
/// worker's hold started; the job is dead [`KILL_GRACE`] after the hold
/// ends; a second on top covers clock rates and scheduling.
pub fn rerun_grace(t: Duration) -> Duration {
    (hold(t) + KILL_GRACE + Duration::from_secs(1)).saturating_sub(t * 2 / 5)
}

/// What a role's session loop asks of the role's outer loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Stop the role: shutdown was asked.
    Stop,
    /// The session is over: open a new one and start over.
    Restart,
}

/// Opens a session for a long-running role. Keeps trying while ZooKeeper is
/// unreachable (logging what it waits for, see [`Quiet`]); returns
/// `Ok(None)` if a message for which `is_stop` holds arrives meanwhile. The
/// session is handed to `obs` (its health and metrics follow it).
pub fn open<M>(
    opts: &ConnectOptions,
    layout: &Layout,
    obs: &Obs,
    tx: &Sender<M>,
    rx: &Receiver<M>,
    is_stop: fn(&M) -> bool,
) -> Result<Option<Zk>, Error>
where
    M: From<SessionEvent> + Send + 'static,
{
    let attempt = ConnectOptions {
        connect_timeout: Some(opts.session_timeout + Duration::from_secs(2)),
        ..opts.clone()
    };
    notify::status(&format!("waiting for ZooKeeper at {}", opts.hosts));
    let mut quiet = Quiet::default();
    loop {
        obs.beat();
        if rx.try_iter().any(|m| is_stop(&m)) {
            return Ok(None);
        }
        let zk = match Zk::connect(&attempt) {
            Ok(zk) => zk,
            Err(err @ (ZkError::AuthFailed | ZkError::BadConfig(_))) => {
                return Err(Error::zk("connecting", err));
            }
            Err(err) => {
                if let Some(times) = quiet.say(Instant::now()) {
                    warn!("{err}; still trying{times}");
                }
                continue;
            }
        };
        zk.forward_session_events(tx.clone());
        obs.session_opened(&zk);
        match ensure_namespace(&zk, layout) {
            Ok(()) => return Ok(Some(zk)),
            Err(err @ (ZkError::NoAuth | ZkError::AuthFailed)) => {
                return Err(Error::zk(format!("creating {}", layout.root()), err));
            }
            Err(err) => warn!("cannot prepare {}: {err}; retrying", layout.root()),
        }
    }
}

/// The pacing of a repeated warning: said at once, then again only after
/// twice as long as the last gap (30 s, 1 min, 2 min, ... up to 10 min),
/// saying how many times it happened meanwhile. So an outage of a minute
/// logs a handful of lines, not one per attempt.
#[derive(Debug, Default)]
pub struct Quiet {
    /// When it was last said, and the gap until it may be said again.
    said: Option<(Instant, Duration)>,
    /// Times it happened since it was last said.
    unsaid: u64,
}

impl Quiet {
    /// The first gap.
    const FIRST: Duration = Duration::from_secs(30);
    /// The longest gap.
    const LONGEST: Duration = Duration::from_secs(600);

    /// Whether to say it now; `Some` with a note on how often it went
    /// unsaid since the last time.
    pub fn say(&mut self, now: Instant) -> Option<String> {
        let gap = match self.said {
            Some((at, gap)) if now < at + gap => {
                self.unsaid += 1;
                return None;
            }
            Some((_, gap)) => (gap * 2).min(Quiet::LONGEST),
            None => Quiet::FIRST,
        };
        self.said = Some((now, gap));
        Some(match std::mem::take(&mut self.unsaid) {
            0 => String::new(),
            n => format!(" (and {n} times more since the last such line)"),
        })
    }
}

/// How long a short command waits, when it ends, for ZooKeeper to confirm
/// the end of its session (an unconfirmed close still ends it; a session
/// left to expire instead would hold its nodes for the session timeout and
/// write a warning into the server's log).
pub const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// Opens a short command's session (`submit`, `status`, `purge`), giving
/// up after the user's `--connect-timeout`.
pub fn connect(opts: &ConnectOptions) -> Result<Zk, Error> {
    Zk::connect(opts)
        .map_err(|err| Error::zk(format!("connecting to ZooKeeper at {}", opts.hosts), err))
}

/// Creates every persistent node of the namespace that is missing: the
/// ancestors of the root open to all, the namespace itself with the
/// session's ACL.
pub fn ensure_namespace(zk: &Zk, layout: &Layout) -> Result<(), ZkError> {
    layout
        .ancestors()
        .iter()
        .try_for_each(|path| zk.ensure_open(path))?;
    layout
        .skeleton()
        .iter()
        .try_for_each(|path| zk.ensure(path))
}

/// This machine's host name, for the records people read in status.
pub fn host_name() -> String {
    // On Linux, the host name is the UTS name's nodename.
    let uname = rustix::system::uname();
    uname.nodename().to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
        assert_eq!(host_name(), kernel.trim_end());
    }

    /// A worker cut off from ZooKeeper has killed its job before the
    /// master may run it again, for any session timeout.
    #[test]
    fn a_cut_off_worker_stops_before_the_rerun() {
        for secs in [1, 2, 5, 10, 20, 40] {
            let t = Duration::from_secs(secs);
            // Earliest the claim can vanish, counted from the hold's start.
            let vanished = t * 45 / 100;
            let job_dead = hold(t) + KILL_GRACE;
            assert!(vanished + rerun_grace(t) > job_dead, "t = {t:?}");
        }
        let t = Duration::from_secs(5);
        assert_eq!(hold(t), Duration::from_secs(12));
        assert_eq!(rerun_grace(t), Duration::from_secs(13));
    }

    /// Attempts every 7 s for a minute and a half: said at 0, 35 and 98 s.
    #[test]
    fn a_repeated_warning_is_said_ever_more_rarely() {
        let t0 = Instant::now();
        let mut quiet = Quiet::default();
        let said: Vec<(u64, String)> = (0..15)
            .filter_map(|n| {
                quiet
                    .say(t0 + Duration::from_secs(n * 7))
                    .map(|note| (n * 7, note))
            })
            .collect();
        assert_eq!(
            said,
            [
                (0, String::new()),
                (35, " (and 4 times more since the last such line)".into()),
                (98, " (and 8 times more since the last such line)".into()),
            ]
        );
    }
}
