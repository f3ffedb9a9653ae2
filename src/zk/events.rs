//! Forwarding the crate's notifications (fired watches, session state
//! changes) into the roles' crossbeam channels, all from one thread per
//! process: a worker or master arms a watch for almost every task, and a
//! thread per watch would cost a thread start each time.

use std::future::Future;
use std::sync::OnceLock;
use std::thread;

use async_executor::{Executor, Task};
use log::warn;

/// Runs every forwarding task; driven by the `zk-events` thread.
static EXECUTOR: Executor<'static> = Executor::new();

/// Runs `task` on the events thread (started on first use) until it ends.
/// If that thread cannot start, notifications are lost and the roles rely
/// on their periodic tick, which is said once in the log.
pub fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Some(task) = spawn_owned(task) {
        task.detach();
    }
}

/// Like [`spawn`], but `task` is cancelled when the returned handle is
/// dropped; `None` when the events thread cannot start.
pub fn spawn_owned(task: impl Future<Output = ()> + Send + 'static) -> Option<Task<()>> {
    static RUNNING: OnceLock<bool> = OnceLock::new();
    let running = *RUNNING.get_or_init(|| {
        thread::Builder::new()
            .name("zk-events".into())
            .spawn(|| {
                futures_lite::future::block_on(EXECUTOR.run(futures_lite::future::pending::<()>()))
            })
            .map_err(|err| {
                warn!(
                    "cannot start the ZooKeeper events thread: {err}; relying on the periodic tick"
                );
            })
            .is_ok()
    });
    running.then(|| EXECUTOR.spawn(task))
}
