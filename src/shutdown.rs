//! SIGINT/SIGTERM as a message in a role's control-loop channel, so a
//! service stops through the same loop that does everything else, and tests
//! can stop a role cleanly by signalling it.

use crossbeam_channel::Sender;
use log::warn;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// A request to stop, sent once per signal received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown;

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
            for _ in signals.forever() {
                if tx.send(M::from(Shutdown)).is_err() {
                    return;
                }
            }
        });
    if let Err(err) = spawned {
        warn!("cannot start signal thread ({err}); stop with SIGKILL");
    }
}
