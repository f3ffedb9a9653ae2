//! SIGINT/SIGTERM as a message in a role's control-loop channel, so a
//! service stops through the same loop that does everything else, and tests
//! can stop a role cleanly by signalling it.

use crossbeam_channel::Sender;
use log::warn;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A request to stop, sent once per signal received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    /// The signal: SIGINT or SIGTERM.
    pub signal: i32,
}

impl Shutdown {
    /// The exit code a command stopped by this signal ends with: 128 + the
    /// signal, as shells report (130 for Ctrl-C, 143 for SIGTERM).
    pub fn exit_code(&self) -> i32 {
        128 + self.signal
    }
}

/// Forwards every SIGINT and SIGTERM into `tx` as [`Shutdown`].
pub fn forward_signals<M>(tx: Sender<M>)
where
    M: From<Shutdown> + Send + 'static,
{
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(err) => {
            warn!("cannot install signal handlers ({err}); stop with SIGKILL");
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(M::from(Shutdown { signal })).is_err() {
                    return;
                }
            }
        });
    if let Err(err) = spawned {
        warn!("cannot start signal thread ({err}); stop with SIGKILL");
    }
}
