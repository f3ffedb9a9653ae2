//! Reading, following and changing `<root>/config`: one read for
//! `submit`, a watch and a read for the roles, and compare-and-set writes
//! for `zkmw config`.

use crossbeam_channel::Sender;
use log::{info, warn};

use super::record::{self, Edited};
use super::{Key, Tuning, Value, Values};
use crate::error::Error;
use crate::layout::Layout;
use crate::session;
use crate::zk::{Op, WatchEvent, Zk, ZkError};

/// How many times a write is tried against other writers.
const ATTEMPTS: usize = 20;

/// The config node's data, and its version (`None`: there is no node).
pub fn read_raw(zk: &Zk, layout: &Layout) -> Result<(Vec<u8>, Option<i32>), ZkError> {
    Ok(match zk.get(&layout.config())? {
        Some((data, stat)) => (data, Some(stat.version)),
        None => (Vec::new(), None),
    })
}

/// The cluster settings as a command reads them, once: what in the node
/// cannot be used is logged and left out.
pub fn read_cluster(zk: &Zk, layout: &Layout) -> Result<Values, ZkError> {
    let (data, _) = read_raw(zk, layout)?;
    match record::decode(&data) {
        Ok(decoded) => {
            for (_, why) in &decoded.problems {
                warn!("{}: {why}", layout.config());
            }
            Ok(decoded.values)
        }
        Err(why) => {
            warn!("{}: {why}; using no cluster settings", layout.config());
            Ok(Values::new())
        }
    }
}

/// Arms a watch on the config node (it sends one [`WatchEvent`] into `tx`
/// when the node is created, changed or deleted), reads it into `tuning`,
/// and logs what changed as `who` ("worker w1"). True when a value the
/// role uses changed.
pub fn follow<M>(
    zk: &Zk,
    layout: &Layout,
    tx: &Sender<M>,
    tuning: &mut Tuning,
    who: &str,
) -> Result<bool, ZkError>
where
    M: From<WatchEvent> + Send + 'static,
{
    let path = layout.config();
    // The watch first: a change after this read fires it, so none is missed.
    let data = match zk.exists_watch(&path, tx)? {
        Some(_) => zk.get(&path)?.map(|(data, _)| data).unwrap_or_default(),
        None => Vec::new(),
    };
    let update = tuning.update(&data);
    if let Some(line) = update.warn {
        warn!("{who}: {path}: {line}");
    }
    if let Some(line) = update.info {
        info!("{who}: {line}");
    }
    Ok(update.changed)
}

/// Sets `key` to `value` (or removes it, for `None`) in the config node,
/// keeping every other entry: read, change, write back at the version read,
/// again while another writer got in between. A write whose outcome is
/// unknown is made again, which changes nothing if it was applied.
pub fn edit(zk: &Zk, layout: &Layout, key: Key, value: Option<Value>) -> Result<Edited, Error> {
    let path = layout.config();
    let failed = |err| Error::zk(format!("writing {path}"), err);
    for _ in 0..ATTEMPTS {
        let (data, version) =
            read_raw(zk, layout).map_err(|err| Error::zk(format!("reading {path}"), err))?;
        let edited = record::edit(&data, key, value);
        let written = match version {
            Some(version) => zk.multi(&[Op::SetData {
                path: path.clone(),
                data: edited.data.clone(),
                version: Some(version),
            }]),
            None if value.is_none() => return Ok(edited),
            None => zk.create(&path, &edited.data),
        };
        match written {
            Ok(()) => return Ok(edited),
            Err(err)
                if err.is_txn_failure(0, &ZkError::BadVersion)
                    || err.is_txn_failure(0, &ZkError::NoNode)
                    || err == ZkError::NodeExists
                    || err.is_unknown_outcome() => {}
            Err(ZkError::NoNode) => session::ensure_namespace(zk, layout).map_err(failed)?,
            Err(err) => return Err(failed(err)),
        }
    }
    Err(Error::BadInput(format!(
        "{path} kept changing under {ATTEMPTS} attempts to write it; nothing was changed: try again"
    )))
}
