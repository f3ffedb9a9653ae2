//! Operations of a ZooKeeper transaction, as plain data, so roles can build
//! and unit-test the writes they plan without a server.

use zookeeper_client::{Acls, CreateMode, MultiWriter};

use super::ZkError;

/// One operation of a transaction (`Zk::multi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a persistent node.
    Create { path: String, data: Vec<u8> },
    /// Create an ephemeral node, owned by this session.
    CreateEphemeral { path: String, data: Vec<u8> },
    /// Create a persistent node named `prefix` and the next sequence number.
    CreateSequential { prefix: String, data: Vec<u8> },
    /// Delete a node, at this version if one is given.
    Delete { path: String, version: Option<i32> },
    /// Replace a node's data, at this version if one is given.
    SetData {
        path: String,
        data: Vec<u8>,
        version: Option<i32>,
    },
    /// Fail the transaction unless the node is at this version.
    Check { path: String, version: i32 },
}

/// A generous estimate of an operation's bytes in a request besides its
/// path and data: headers, version, flags and one ACL.
const OP_OVERHEAD: usize = 64;

/// How many bytes `ops` take as one request, over-estimated a little: what
/// is checked against the server's packet limit before sending.
pub fn request_bytes(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| {
            let data = match op {
                Op::Create { data, .. }
                | Op::CreateEphemeral { data, .. }
                | Op::CreateSequential { data, .. }
                | Op::SetData { data, .. } => data.len(),
                Op::Delete { .. } | Op::Check { .. } => 0,
            };
            op.path().len() + data + OP_OVERHEAD
        })
        .sum()
}

impl Op {
    /// The path this operation touches.
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. }
            | Op::CreateEphemeral { path, .. }
            | Op::CreateSequential { prefix: path, .. }
            | Op::Delete { path, .. }
            | Op::SetData { path, .. }
            | Op::Check { path, .. } => path,
        }
    }

    pub(super) fn add_to(
        &self,
        writer: &mut MultiWriter<'_>,
        acls: Acls<'static>,
    ) -> Result<(), ZkError> {
        let added = match self {
            Op::Create { path, data } => {
                writer.add_create(path, data, &CreateMode::Persistent.with_acls(acls))
            }
            Op::CreateEphemeral { path, data } => {
                writer.add_create(path, data, &CreateMode::Ephemeral.with_acls(acls))
            }
            Op::CreateSequential { prefix, data } => writer.add_create(
                prefix,
                data,
                &CreateMode::PersistentSequential.with_acls(acls),
            ),
            Op::Delete { path, version } => writer.add_delete(path, *version),
            Op::SetData {
                path,
                data,
                version,
            } => writer.add_set_data(path, data, *version),
            Op::Check { path, version } => writer.add_check_version(path, *version),
        };
        added.map_err(ZkError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_paths_data_and_overhead() {
        let ops = [
            Op::Check {
                path: "/e".into(),
                version: 1,
            },
            Op::Create {
                path: "/abc".into(),
                data: vec![0; 100],
            },
        ];
        assert_eq!(request_bytes(&ops), 2 + 4 + 100 + 2 * OP_OVERHEAD);
    }
}
