//! One typed error for every ZooKeeper call, mirroring the server's error
//! codes the roles care about, with helpers that classify them.

use std::fmt;

/// Why a ZooKeeper call failed.
///
/// Outcome rules (see `is_unknown_outcome`): a write that failed with
/// `ConnectionLoss` or `Timeout` may or may not have been applied; the caller
/// must re-read before deciding anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZkError {
    /// The node to create is already there.
    NodeExists,
    /// The node (or, for a create, its parent) is not there.
    NoNode,
    /// A version check failed.
    BadVersion,
    /// A delete hit a node that still has children.
    NotEmpty,
    /// The session's identity may not do this (ACL).
    NoAuth,
    /// The server refused the session's credentials; the session is over.
    AuthFailed,
    /// The link to the server broke while the call was in flight: outcome unknown.
    ConnectionLoss,
    /// The call's own deadline ran out: outcome unknown.
    Timeout,
    /// The session expired (or the client was closed): build a new session.
    SessionExpired,
    /// No server could be reached while connecting.
    Unreachable(String),
    /// The connection settings cannot work (bad TLS files): not retryable.
    BadConfig(String),
    /// The request would pass the server's packet limit: it was not sent
    /// (the server would drop the connection, failing every call in flight).
    TooLarge {
        /// Its size, as estimated.
        bytes: usize,
    },
    /// Anything else, with the crate's description.
    Other(String),
    /// One operation of a transaction failed, so none was applied.
    TxnFailed {
        /// The index of the first failing operation in the caller's list.
        index: usize,
        /// Why that operation failed.
        cause: Box<ZkError>,
    },
}

impl ZkError {
    /// True when a write may or may not have been applied: re-read to know.
    pub fn is_unknown_outcome(&self) -> bool {
        matches!(
            self,
            ZkError::ConnectionLoss | ZkError::Timeout | ZkError::Other(_)
        )
    }

    /// True when the session is gone for good: start the role over.
    pub fn is_session_lost(&self) -> bool {
        matches!(self, ZkError::SessionExpired | ZkError::AuthFailed)
    }

    /// True when the call got no definite answer because the connection
    /// or the session went: a write may or may not have been applied, and
    /// a command goes on (after finding out) in a new session.
    pub fn is_cut_off(&self) -> bool {
        self.is_unknown_outcome() || self.is_session_lost()
    }

    /// For a failed transaction, the failing index and its cause; otherwise
    /// `None` and the error itself (the whole request failed).
    pub fn txn_cause(&self) -> (Option<usize>, &ZkError) {
        match self {
            ZkError::TxnFailed { index, cause } => (Some(*index), cause),
            other => (None, other),
        }
    }

    /// True when `txn_cause` is `(Some(index), wanted)`.
    pub fn is_txn_failure(&self, index: usize, wanted: &ZkError) -> bool {
        self.txn_cause() == (Some(index), wanted)
    }
}

impl fmt::Display for ZkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZkError::NodeExists => write!(f, "node already exists"),
            ZkError::NoNode => write!(f, "no such node"),
            ZkError::BadVersion => write!(f, "version changed underneath"),
            ZkError::NotEmpty => write!(f, "node has children"),
            ZkError::NoAuth => write!(f, "not authorized"),
            ZkError::AuthFailed => write!(f, "authentication failed"),
            ZkError::ConnectionLoss => write!(f, "connection to ZooKeeper lost"),
            ZkError::Timeout => write!(f, "ZooKeeper did not answer in time"),
            ZkError::SessionExpired => write!(f, "ZooKeeper session expired"),
            ZkError::Unreachable(why) => write!(f, "{why}"),
            ZkError::BadConfig(why) => write!(f, "{why}"),
            ZkError::TooLarge { bytes } => write!(
                f,
                "request of about {bytes} bytes is over ZooKeeper's limit (1 MiB); not sent"
            ),
            ZkError::Other(why) => write!(f, "ZooKeeper error: {why}"),
            ZkError::TxnFailed { index, cause } => {
                write!(f, "transaction operation {index} failed: {cause}")
            }
        }
    }
}

impl std::error::Error for ZkError {}

impl From<zookeeper_client::Error> for ZkError {
    fn from(err: zookeeper_client::Error) -> Self {
        use zookeeper_client::Error as E;
        match err {
            E::NodeExists => ZkError::NodeExists,
            E::NoNode => ZkError::NoNode,
            E::BadVersion => ZkError::BadVersion,
            E::NotEmpty => ZkError::NotEmpty,
            E::NoAuth | E::InvalidAcl => ZkError::NoAuth,
            E::AuthFailed => ZkError::AuthFailed,
            E::ConnectionLoss => ZkError::ConnectionLoss,
            E::Timeout => ZkError::Timeout,
            E::SessionExpired | E::ClientClosed => ZkError::SessionExpired,
            E::NoHosts => ZkError::Unreachable("no server accepted the connection".into()),
            other => ZkError::Other(other.to_string()),
        }
    }
}

impl From<zookeeper_client::MultiWriteError> for ZkError {
    fn from(err: zookeeper_client::MultiWriteError) -> Self {
        match err {
            zookeeper_client::MultiWriteError::RequestFailed { source } => source.into(),
            zookeeper_client::MultiWriteError::OperationFailed { index, source } => {
                ZkError::TxnFailed {
                    index,
                    cause: Box::new(source.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_outcomes() {
        assert!(ZkError::ConnectionLoss.is_unknown_outcome());
        assert!(ZkError::Timeout.is_unknown_outcome());
        assert!(!ZkError::NodeExists.is_unknown_outcome());
        assert!(ZkError::SessionExpired.is_session_lost());
        assert!(!ZkError::ConnectionLoss.is_session_lost());
    }

    #[test]
    fn maps_multi_failures_to_their_index() {
        let err: ZkError = zookeeper_client::MultiWriteError::OperationFailed {
            index: 2,
            source: zookeeper_client::Error::NodeExists,
        }
        .into();
        assert!(err.is_txn_failure(2, &ZkError::NodeExists));
        assert!(!err.is_txn_failure(1, &ZkError::NodeExists));
        assert_eq!(ZkError::NoNode.txn_cause(), (None, &ZkError::NoNode));
    }
}
