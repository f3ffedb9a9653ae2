//! The znode paths of one zkmw namespace, built in one place so no other
//! module formats a path by hand.
//!
//! ```text
//! <root>/master            ephemeral: the active master (MasterInfo)
//! <root>/epoch             persistent: its version is the fencing token
//! <root>/masters/<s>       ephemeral: a running master, by session (MasterInfo)
//! <root>/workers/<id>      ephemeral: a live worker (WorkerInfo)
//! <root>/away/<id>         ephemeral: a worker draining or paused (Away)
//! <root>/assign/<id>/<t>   a task assigned to worker <id> (Task)
//! <root>/tasks/<t>         persistent-sequential: a pending task (Task)
//! <root>/running/<t>       ephemeral: the claim of the worker running <t>
//! <root>/status/<t>        the final result of <t> (TaskResult)
//! <root>/cancel/<t>        a request to cancel <t> (CancelRequest)
//! <root>/locks/<name>      ephemeral: the running holder of a lock (LockHolder)
//! <root>/lockq/<name>/<k>  a task of that lock in flight, by its token (its id)
//! <root>/unique/<key>      the task that has this key (its id)
//! <root>/config            the cluster settings (see `settings`)
//! ```

/// Prefix of every task name; the rest is ZooKeeper's 10-digit sequence.
pub const TASK_PREFIX: &str = "task-";

/// The paths of a namespace rooted at an absolute path such as `/zkmw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

impl Layout {
    /// A layout under `root` (already validated: absolute, no trailing `/`).
    pub fn new(root: &str) -> Layout {
        Layout {
            root: root.trim_end_matches('/').to_string(),
        }
    }

    /// The namespace root.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The active master's ephemeral node.
    pub fn master(&self) -> String {
        format!("{}/master", self.root)
    }

    /// The fencing node: each new master bumps its version.
    pub fn epoch(&self) -> String {
        format!("{}/epoch", self.root)
    }

    /// Parent of every running master's ephemeral node, active or standby.
    pub fn masters(&self) -> String {
        format!("{}/masters", self.root)
    }

    /// A running master's node, named after its session (unique).
    pub fn master_candidate(&self, session: &str) -> String {
        format!("{}/masters/{session}", self.root)
    }

    /// Parent of the nodes of workers that are up but take no work.
    pub fn away(&self) -> String {
        format!("{}/away", self.root)
    }

    /// The node of a worker that is draining or paused.
    pub fn away_worker(&self, id: &str) -> String {
        format!("{}/away/{id}", self.root)
    }

    /// Parent of the live workers' ephemeral nodes.
    pub fn workers(&self) -> String {
        format!("{}/workers", self.root)
    }

    /// A live worker's ephemeral node.
    pub fn worker(&self, id: &str) -> String {
        format!("{}/workers/{id}", self.root)
    }

    /// Parent of every worker's assignment folder.
    pub fn assign(&self) -> String {
        format!("{}/assign", self.root)
    }

    /// One worker's assignment folder.
    pub fn assign_dir(&self, worker: &str) -> String {
        format!("{}/assign/{worker}", self.root)
    }

    /// One task assigned to one worker.
    pub fn assignment(&self, worker: &str, task: &str) -> String {
        format!("{}/assign/{worker}/{task}", self.root)
    }

    /// Parent of the pending tasks.
    pub fn tasks(&self) -> String {
        format!("{}/tasks", self.root)
    }

    /// One pending task.
    pub fn task(&self, task: &str) -> String {
        format!("{}/tasks/{task}", self.root)
    }

    /// The prefix a sequential create under /tasks takes.
    pub fn task_prefix(&self) -> String {
        format!("{}/tasks/{TASK_PREFIX}", self.root)
    }

    /// Parent of the claims of running tasks.
    pub fn running(&self) -> String {
        format!("{}/running", self.root)
    }

    /// The claim of one running task.
    pub fn running_task(&self, task: &str) -> String {
        format!("{}/running/{task}", self.root)
    }

    /// Parent of the final results.
    pub fn status(&self) -> String {
        format!("{}/status", self.root)
    }

    /// One task's final result.
    pub fn status_task(&self, task: &str) -> String {
        format!("{}/status/{task}", self.root)
    }

    /// Parent of the cancel requests.
    pub fn cancel(&self) -> String {
        format!("{}/cancel", self.root)
    }

    /// The request to cancel one task.
    pub fn cancel_task(&self, task: &str) -> String {
        format!("{}/cancel/{task}", self.root)
    }

    /// Parent of the held locks.
    pub fn locks(&self) -> String {
        format!("{}/locks", self.root)
    }

    /// A held lock: ephemeral, its holder's claim created it.
    pub fn lock(&self, name: &str) -> String {
        format!("{}/locks/{name}", self.root)
    }

    /// Parent of the lock queues.
    pub fn lockq(&self) -> String {
        format!("{}/lockq", self.root)
    }

    /// One lock's queue: a child per task of that lock in flight.
    pub fn lockq_dir(&self, name: &str) -> String {
        format!("{}/lockq/{name}", self.root)
    }

    /// One task's place in its lock's queue, named by its token.
    pub fn lockq_member(&self, name: &str, token: &str) -> String {
        format!("{}/lockq/{name}/{token}", self.root)
    }

    /// Parent of the unique keys.
    pub fn unique(&self) -> String {
        format!("{}/unique", self.root)
    }

    /// The node of one unique key.
    pub fn unique_key(&self, key: &str) -> String {
        format!("{}/unique/{key}", self.root)
    }

    /// The cluster settings, followed live by masters and workers.
    pub fn config(&self) -> String {
        format!("{}/config", self.root)
    }

    /// The nodes above the root (`/a` for root `/a/b`), parents first. They
    /// are shared with whatever else lives there, so zkmw creates them open.
    pub fn ancestors(&self) -> Vec<String> {
        let mut paths = Vec::new();
        let mut prefix = String::new();
        let parts: Vec<&str> = self.root.split('/').filter(|p| !p.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            prefix.push('/');
            prefix.push_str(part);
            paths.push(prefix.clone());
        }
        paths
    }

    /// The namespace's own persistent nodes, parents first: the root, then
    /// /epoch and the folders.
    pub fn skeleton(&self) -> Vec<String> {
        vec![
            self.root.clone(),
            self.epoch(),
            self.masters(),
            self.workers(),
            self.away(),
            self.assign(),
            self.tasks(),
            self.running(),
            self.status(),
            self.cancel(),
            self.locks(),
            self.lockq(),
            self.unique(),
        ]
    }
}

/// True for a well-formed task name: `task-` and ten or more digits.
pub fn is_task_name(name: &str) -> bool {
    name.strip_prefix(TASK_PREFIX)
        .is_some_and(|digits| digits.len() >= 10 && digits.bytes().all(|b| b.is_ascii_digit()))
}

/// The sequence number of a task name, if it is one.
pub fn task_sequence(name: &str) -> Option<i64> {
    if is_task_name(name) {
        name[TASK_PREFIX.len()..].parse().ok()
    } else {
        None
    }
}

/// The task name of a sequence number: `task-` and ten digits or more.
pub fn task_name(seq: i64) -> String {
    format!("{TASK_PREFIX}{seq:010}")
}

/// Checks one znode name (one segment of a path) by the rules of ZooKeeper's
/// server (`PathUtils.validatePath`), so that a name it would refuse on
/// every call is refused once, up front. `what` names the value in the
/// message ("the id"); the message says which character is refused and at
/// which byte of `name`.
pub fn check_znode_name(what: &str, name: &str) -> Result<(), String> {
    let shown = name.escape_debug();
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if name == "." || name == ".." || name.contains('/') {
        return Err(format!(
            "{what} '{shown}' is not a znode name: no '/', not '.' or '..'"
        ));
    }
    match name.char_indices().find(|(_, c)| refused_by_zookeeper(*c)) {
        Some((at, c)) => Err(format!(
            "{what} '{shown}' has a character ZooKeeper refuses: U+{:04X} at byte {at}",
            u32::from(c)
        )),
        None => Ok(()),
    }
}

/// The characters ZooKeeper refuses in a path: U+0000-U+001F, U+007F-U+009F,
/// U+D800-U+F8FF and U+FFF0-U+FFFF. Java strings are UTF-16, so every
/// character beyond U+FFFF arrives as surrogates (U+D800-U+DFFF): refused.
fn refused_by_zookeeper(c: char) -> bool {
    matches!(
        u32::from(c),
        0x0000..=0x001F | 0x007F..=0x009F | 0xD800..=0xF8FF | 0xFFF0..
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_paths_under_the_root() {
        let l = Layout::new("/a/b/");
        assert_eq!(
            l.assignment("w1", "task-0000000001"),
            "/a/b/assign/w1/task-0000000001"
        );
        assert_eq!(l.task_prefix(), "/a/b/tasks/task-");
        assert_eq!(l.ancestors(), ["/a"]);
        assert_eq!(&l.skeleton()[..2], ["/a/b", "/a/b/epoch"]);
        assert!(Layout::new("/zkmw").ancestors().is_empty());
    }

    #[test]
    fn recognises_task_names() {
        assert!(is_task_name("task-0000000042"));
        assert_eq!(task_sequence("task-0000000042"), Some(42));
        assert_eq!(task_name(42), "task-0000000042");
        for bad in ["task-42", "task-000000004x", "tusk-0000000042", "", "task-"] {
            assert!(!is_task_name(bad), "{bad}");
        }
    }
}
