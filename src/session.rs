//! What every long-running role does with a session: open it (retrying
//! until ZooKeeper answers, or until asked to stop), forward its state
//! changes into the role's channel, and make sure the namespace exists.

use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use log::warn;

use crate::error::Error;
use crate::layout::Layout;
use crate::zk::{ConnectOptions, SessionEvent, Zk, ZkError};

/// What a role's session loop asks of the role's outer loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Stop the role: shutdown was asked.
    Stop,
    /// The session is over: open a new one and start over.
    Restart,
}

/// Opens a session for a long-running role. Keeps trying while ZooKeeper is
/// unreachable (logging what it waits for); returns `Ok(None)` if a message
/// for which `is_stop` holds arrives meanwhile.
pub fn open<M>(
    opts: &ConnectOptions,
    layout: &Layout,
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
    loop {
        if rx.try_iter().any(|m| is_stop(&m)) {
            return Ok(None);
        }
        let zk = match Zk::connect(&attempt) {
            Ok(zk) => zk,
            Err(err @ (ZkError::AuthFailed | ZkError::BadConfig(_))) => {
                return Err(Error::zk("connecting", err));
            }
            Err(err) => {
                warn!("{err}; still trying");
                continue;
            }
        };
        zk.forward_session_events(tx.clone());
        match ensure_namespace(&zk, layout) {
            Ok(()) => return Ok(Some(zk)),
            Err(err @ (ZkError::NoAuth | ZkError::AuthFailed)) => {
                return Err(Error::zk(format!("creating {}", layout.root()), err));
            }
            Err(err) => warn!("cannot prepare {}: {err}; retrying", layout.root()),
        }
    }
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
    #[test]
    fn host_name_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("host name");
        assert_eq!(super::host_name(), kernel.trim_end());
    }
}
