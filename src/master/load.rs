//! What the active master's gauges show (`zkmw_queue_depth`,
//! `zkmw_tasks_assigned`, `zkmw_tasks_running`, `zkmw_workers_live`),
//! measured from the snapshot a round decided on: no read of its own.

use super::plan::Snapshot;
use crate::obs::metrics::Load;

/// The load a round saw: the live workers, the queue (the head read this
/// round and the rest of the cached queue, `cached`), and the tasks held in
/// the live workers' folders, split into started (claimed) and not. A light
/// round reads no assignment in detail: it keeps the last full round's
/// count of started tasks, `last`.
pub fn measure(snap: &Snapshot, cached: usize, last: Load) -> Load {
    let held: Vec<_> = snap
        .assign_dirs
        .iter()
        .filter(|(w, _)| snap.live_workers.contains_key(*w))
        .flat_map(|(_, assigned)| assigned)
        .collect();
    let running = if snap.running.is_some() {
        held.iter()
            .filter(|a| a.detail.as_ref().is_some_and(|d| d.version > 0))
            .count()
    } else {
        last.running.min(held.len())
    };
    Load {
        workers: snap.live_workers.len(),
        pending: snap.pending.len() + cached,
        assigned: held.len() - running,
        running,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::master::plan::{Assigned, AssignedDetail};

    fn assigned(name: &str, version: Option<i32>) -> Assigned {
        Assigned {
            name: name.into(),
            detail: version.map(|version| AssignedDetail {
                version,
                task: Err("not needed".into()),
            }),
        }
    }

    #[test]
    fn a_full_round_counts_started_tasks_and_a_light_one_keeps_them() {
        let mut snap = Snapshot {
            live_workers: BTreeMap::from([("w1".to_string(), 2)]),
            running: Some(BTreeSet::new()),
            ..Snapshot::default()
        };
        snap.assign_dirs.insert(
            "w1".into(),
            vec![assigned("a", Some(1)), assigned("b", Some(0))],
        );
        // A gone worker's leftovers are not its load.
        snap.assign_dirs
            .insert("gone".into(), vec![assigned("c", Some(1))]);
        let full = measure(&snap, 5, Load::default());
        assert_eq!(
            full,
            Load {
                workers: 1,
                pending: 5,
                assigned: 1,
                running: 1
            }
        );
        snap.running = None;
        snap.assign_dirs
            .insert("w1".into(), vec![assigned("a", None), assigned("b", None)]);
        assert_eq!(measure(&snap, 4, full), Load { pending: 4, ..full });
    }
}
