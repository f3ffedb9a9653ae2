//! What the cluster looks like, read from ZooKeeper through the library by
//! a thread of its own, so that the schedule never waits on a read (a
//! frozen ensemble node makes reads hang until their deadline).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use zkmw::layout::Layout;
use zkmw::model::{self, MasterInfo};
use zkmw::zk::{ConnectOptions, Zk, ZkError};

use crate::common::background::Background;
use crate::common::namespace::connect_options;

/// How often the view is read again.
const EVERY: Duration = Duration::from_millis(200);

/// The cluster at one moment (each count read once, not atomically).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The pid in `/master`, when a master is active.
    pub master_pid: Option<u32>,
    /// Workers registered in `/workers`.
    pub live_workers: usize,
    /// Tasks not finished: pending in `/tasks` or under `/assign`.
    pub open: usize,
    /// Results in `/status`.
    pub finished: usize,
}

/// A thread reading the [`Snapshot`] again and again, until dropped.
pub struct Observer {
    latest: Arc<Mutex<Option<Snapshot>>>,
    _thread: Background<()>,
}

impl Observer {
    /// Starts reading the namespace of `layout` on `hosts`.
    pub fn start(hosts: &str, layout: Layout) -> Observer {
        let latest = Arc::new(Mutex::new(None));
        let thread = {
            let (latest, hosts) = (Arc::clone(&latest), hosts.to_string());
            Background::spawn(move |stop| observe(&hosts, &layout, &latest, stop))
        };
        Observer {
            latest,
            _thread: thread,
        }
    }

    /// The last snapshot read, if any was.
    pub fn latest(&self) -> Option<Snapshot> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The observer's loop: one session (a new one if it is lost), a snapshot
/// every [`EVERY`]; a read that fails leaves the last snapshot.
fn observe(hosts: &str, layout: &Layout, latest: &Mutex<Option<Snapshot>>, stop: &AtomicBool) {
    let mut zk: Option<Zk> = None;
    while !stop.load(Ordering::SeqCst) {
        if zk.as_ref().is_none_or(Zk::is_lost) {
            zk = Zk::connect(&options(hosts)).ok();
        }
        if let Some(found) = zk.as_ref().and_then(|zk| snapshot(zk, layout).ok()) {
            *latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(found);
        }
        thread::sleep(EVERY);
    }
}

/// A session that outlives the ensemble's faults (its 20 s is the servers'
/// maximum), with short calls.
fn options(hosts: &str) -> ConnectOptions {
    ConnectOptions {
        session_timeout: Duration::from_secs(20),
        call_timeout: Duration::from_secs(2),
        ..connect_options(hosts)
    }
}

/// Reads one snapshot: `/master`, then the stats of `/workers`, `/tasks`
/// and `/status`, then those of every `/assign/<worker>` (each step's
/// reads sent at once).
fn snapshot(zk: &Zk, layout: &Layout) -> Result<Snapshot, ZkError> {
    let master = zk.get(&layout.master())?;
    let master_pid = master
        .and_then(|(data, _)| model::decode::<MasterInfo>(&data).ok())
        .map(|m| m.pid);
    let folders = [layout.workers(), layout.tasks(), layout.status()];
    let counts = children_counts(zk, &folders)?;
    let assigned = match zk.children(&layout.assign()) {
        Err(ZkError::NoNode) => Vec::new(),
        listed => listed?,
    };
    let dirs: Vec<String> = assigned.iter().map(|w| layout.assign_dir(w)).collect();
    let in_assign: usize = children_counts(zk, &dirs)?.iter().sum();
    Ok(Snapshot {
        master_pid,
        live_workers: counts[0],
        open: counts[1] + in_assign,
        finished: counts[2],
    })
}

/// How many children each of `paths` has (0 when it is not there).
fn children_counts(zk: &Zk, paths: &[String]) -> Result<Vec<usize>, ZkError> {
    zk.exists_many(paths)
        .into_iter()
        .map(|stat| Ok(stat?.map_or(0, |s| s.num_children as usize)))
        .collect()
}
