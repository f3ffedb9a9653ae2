//! A persistent watch on a folder's children: it names each child created
//! or deleted, and stays armed without a listing. A one-shot child watch
//! fires on any change, the watcher's own deletions included, and costs a
//! listing to arm again; a worker deletes each assignment it finishes, so
//! one-shot watches cost it a listing for about every other task.
//!
//! The crate's persistent watches have two flaws (see the project notes):
//! they are not restored after a reconnect, and reading one after its
//! session ended panics. So a watch here ends at the first change of its
//! session's state, says so ([`ChildEvent::Ended`]), and is never read
//! again; its owner adds a new one, then lists the folder, which covers
//! whatever happened between the two watches.

use std::sync::atomic::{AtomicU64, Ordering};

use async_executor::Task;
use crossbeam_channel::Sender;
use zookeeper_client::{AddWatchMode, EventType};

use super::{Zk, ZkError, events};

/// What a [`ChildWatch`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEvent {
    /// A child of this name was created.
    Created(String),
    /// A child of this name was deleted.
    Deleted(String),
    /// The watch with this [`ChildWatch::id`] reports nothing more: its
    /// session changed state, or the folder itself was created or deleted.
    /// List the folder (after watching it again) to learn what it missed.
    Ended(u64),
}

/// A live persistent watch; dropping it stops its reports.
pub struct ChildWatch {
    id: u64,
    /// The task forwarding its events; `None` if the events thread could
    /// not start (then it reports nothing, and its owner's tick stands in).
    _forwarder: Option<Task<()>>,
}

impl ChildWatch {
    /// Tells this watch's [`ChildEvent::Ended`] from an earlier one's.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Zk {
    /// Watches the children of `path` (which need not exist yet), sending
    /// each [`ChildEvent`] into `tx` until the watch ends or is dropped.
    pub fn watch_children<M>(&self, path: &str, tx: &Sender<M>) -> Result<ChildWatch, ZkError>
    where
        M: From<ChildEvent> + Send + 'static,
    {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (client, deadline) = self.client()?;
        let watch = client.watch(path, AddWatchMode::PersistentRecursive);
        let mut watcher = self.wait(watch, deadline)?;
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (path, tx) = (path.to_string(), tx.clone());
        let forwarder = events::spawn_owned(async move {
            loop {
                let event = watcher.changed().await;
                let Some(change) = child_event(&path, id, event.event_type, &event.path) else {
                    continue;
                };
                let ended = matches!(change, ChildEvent::Ended(_));
                if tx.send(M::from(change)).is_err() || ended {
                    break;
                }
            }
        });
        Ok(ChildWatch {
            id,
            _forwarder: forwarder,
        })
    }
}

/// What an event of the recursive watch `id` on `watched` says of its
/// children; `None` for what it also reports and is not about them (data
/// changes, grandchildren).
fn child_event(watched: &str, id: u64, kind: EventType, path: &str) -> Option<ChildEvent> {
    let child = path
        .strip_prefix(watched)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|name| !name.is_empty() && !name.contains('/'));
    match (kind, child) {
        (EventType::Session, _) => Some(ChildEvent::Ended(id)),
        (EventType::NodeCreated, Some(name)) => Some(ChildEvent::Created(name.to_string())),
        (EventType::NodeDeleted, Some(name)) => Some(ChildEvent::Deleted(name.to_string())),
        (EventType::NodeCreated | EventType::NodeDeleted, None) if path == watched => {
            Some(ChildEvent::Ended(id))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "/zkmw/assign/w1";

    #[test]
    fn a_child_created_or_deleted_is_named() {
        let created = child_event(DIR, 7, EventType::NodeCreated, "/zkmw/assign/w1/task-1");
        assert_eq!(created, Some(ChildEvent::Created("task-1".into())));
        let deleted = child_event(DIR, 7, EventType::NodeDeleted, "/zkmw/assign/w1/task-1");
        assert_eq!(deleted, Some(ChildEvent::Deleted("task-1".into())));
    }

    #[test]
    fn a_session_change_or_the_folder_itself_ends_the_watch() {
        assert_eq!(
            child_event(DIR, 7, EventType::Session, ""),
            Some(ChildEvent::Ended(7))
        );
        for kind in [EventType::NodeCreated, EventType::NodeDeleted] {
            assert_eq!(child_event(DIR, 7, kind, DIR), Some(ChildEvent::Ended(7)));
        }
    }

    #[test]
    fn data_changes_grandchildren_and_lookalike_folders_are_not_children() {
        let ignored = [
            (EventType::NodeDataChanged, "/zkmw/assign/w1/task-1"),
            (EventType::NodeCreated, "/zkmw/assign/w1/task-1/x"),
            (EventType::NodeCreated, "/zkmw/assign/w10/task-1"),
            (EventType::NodeDataChanged, DIR),
        ];
        for (kind, path) in ignored {
            assert_eq!(child_event(DIR, 7, kind, path), None, "{kind:?} {path}");
        }
    }
}
