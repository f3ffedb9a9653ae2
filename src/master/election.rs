//! Leader election: every master registers under /masters (so `status`
//! lists the standbys), then tries to create /master and bump /epoch's
//! version in one transaction; the new version is its fencing token.
//! Standbys watch /master and run again when it disappears.

use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{info, warn};

use super::{MasterConfig, Msg};
use crate::layout::Layout;
use crate::model::{self, MasterInfo};
use crate::notify;
use crate::obs::health::Stage;
use crate::session::{self, Next};
use crate::zk::{Op, Zk, ZkError};

/// What the campaign ended with.
pub enum Elected {
    /// This session is the master, under this epoch.
    Yes(i32),
    /// Stop, or start over with a new session.
    No(Next),
}

/// Stays a standby until elected, the session is lost or a stop is asked.
pub fn campaign(cfg: &MasterConfig, zk: &Zk, tx: &Sender<Msg>, rx: &Receiver<Msg>) -> Elected {
    // True while a watch on /master is armed and has not fired: one watch
    // at a time, however many ticks pass.
    let mut watching = false;
    let mut announced = false;
    let mut registered = false;
    loop {
        cfg.obs.beat();
        if zk.is_lost() {
            return Elected::No(Next::Restart);
        }
        if zk.is_connected() {
            if !registered {
                registered = register_candidate(cfg, zk);
            }
            match run_for_master(cfg, zk) {
                Ok(Some(epoch)) => return Elected::Yes(epoch),
                Ok(None) if watching => {}
                Ok(None) => match zk.exists_watch(&cfg.layout.master(), tx) {
                    Ok(Some(_)) => {
                        watching = true;
                        cfg.obs.stage(Stage::Standby);
                        if !announced {
                            info!("master {}: standby", cfg.id);
                            notify::ready(&format!(
                                "standby master, watching {}",
                                cfg.layout.master()
                            ));
                            announced = true;
                        }
                    }
                    Ok(None) => continue,
                    Err(err) => warn!("master {}: cannot watch /master: {err}", cfg.id),
                },
                Err(err) => warn!("master {}: election attempt failed: {err}", cfg.id),
            }
        }
        match rx.recv_deadline(notify::wake_by(Instant::now() + cfg.tick)) {
            Ok(Msg::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                return Elected::No(Next::Stop);
            }
            Ok(Msg::Watch(event)) if event.path == cfg.layout.master() => watching = false,
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// This master's record, under `epoch` (0 for a standby).
fn info(cfg: &MasterConfig, zk: &Zk, epoch: i32) -> MasterInfo {
    MasterInfo {
        id: cfg.id.clone(),
        host: session::host_name(),
        pid: std::process::id(),
        session: format!("{:#x}", zk.session_id()),
        epoch,
    }
}

/// Creates `/masters/<session>`, ephemeral: how status knows the standbys.
fn register_candidate(cfg: &MasterConfig, zk: &Zk) -> bool {
    let path = cfg
        .layout
        .master_candidate(&format!("{:#x}", zk.session_id()));
    let op = Op::CreateEphemeral {
        path,
        data: model::encode(&info(cfg, zk, 0)),
    };
    match cfg.obs.metrics().txn("candidate", zk.multi(&[op])) {
        Ok(()) => true,
        Err(err) if err.is_txn_failure(0, &ZkError::NodeExists) => true,
        Err(err) => {
            warn!("master {}: cannot register as a candidate: {err}", cfg.id);
            false
        }
    }
}

/// One election attempt: `Some(epoch)` when this session is now the master.
fn run_for_master(cfg: &MasterConfig, zk: &Zk) -> Result<Option<i32>, ZkError> {
    let layout = &cfg.layout;
    if let Some(epoch) = held_epoch(zk, layout)? {
        return Ok(Some(epoch));
    }
    let Some((_, epoch_stat)) = zk.get(&layout.epoch())? else {
        return Err(ZkError::NoNode);
    };
    let epoch = epoch_stat.version + 1;
    let txn = [
        Op::CreateEphemeral {
            path: layout.master(),
            data: model::encode(&info(cfg, zk, epoch)),
        },
        Op::SetData {
            path: layout.epoch(),
            data: Vec::new(),
            version: Some(epoch_stat.version),
        },
    ];
    match cfg.obs.metrics().txn("elect", zk.multi(&txn)) {
        Ok(()) => Ok(Some(epoch)),
        Err(err) if err.is_txn_failure(0, &ZkError::NodeExists) => Ok(None),
        Err(err) if err.is_txn_failure(1, &ZkError::BadVersion) => Ok(None),
        // Unknown outcome: the next attempt finds /master if it was ours.
        Err(err) => Err(err),
    }
}

/// The epoch this session holds if /master is already its own (an earlier
/// election whose reply was lost).
fn held_epoch(zk: &Zk, layout: &Layout) -> Result<Option<i32>, ZkError> {
    match zk.get(&layout.master())? {
        Some((data, stat)) if stat.ephemeral_owner == zk.session_id() => {
            Ok(model::decode::<MasterInfo>(&data)
                .ok()
                .map(|info| info.epoch))
        }
        _ => Ok(None),
    }
}
