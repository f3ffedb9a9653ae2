//! Pending tasks the master read but cannot assign yet, with what they
//! wait for: a time (a failed run's re-run delay), a lock (another task of
//! it is assigned or running), or a worker with their labels. Kept out of
//! the queue's head so they never block the tasks behind them, and indexed
//! by what they wait for, so a round looks only at those whose wait may be
//! over: the due ones, the oldest of each lock that is free, and (when the
//! workers change) those whose labels a live worker now has. With no task
//! using delays, locks or labels, this is empty and costs nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::plan::Pending;
use crate::layout::task_sequence;

/// What a parked task waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Its re-run may not start before this time (unix ms).
    Until(u64),
    /// Another task of this lock is assigned or running.
    Lock(String),
    /// No live worker with room has all these labels.
    Labels(Vec<String>),
}

/// The parked tasks.
#[derive(Debug, Default)]
pub struct Parked {
    tasks: HashMap<String, (Pending, Wait)>,
    /// By time: (until, sequence, name).
    by_time: BTreeSet<(u64, i64, String)>,
    /// By lock: each lock's tasks, oldest first.
    by_lock: BTreeMap<String, BTreeSet<(i64, String)>>,
    /// By label set: each set's tasks.
    by_labels: BTreeMap<Vec<String>, BTreeSet<(i64, String)>>,
}

impl Parked {
    /// Whether `name` is parked.
    pub fn contains(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }

    /// How many tasks are parked.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Parks `pending` until `wait` is over (replacing an earlier parking).
    pub fn park(&mut self, pending: Pending, wait: Wait) {
        let name = pending.name.clone();
        self.unpark(&name);
        let key = (task_sequence(&name).unwrap_or(i64::MAX), name.clone());
        match &wait {
            Wait::Until(until) => {
                self.by_time.insert((*until, key.0, name.clone()));
            }
            Wait::Lock(lock) => {
                self.by_lock.entry(lock.clone()).or_default().insert(key);
            }
            Wait::Labels(labels) => {
                self.by_labels
                    .entry(labels.clone())
                    .or_default()
                    .insert(key);
            }
        }
        self.tasks.insert(name, (pending, wait));
    }

    /// Takes `name` out, if it is parked.
    pub fn unpark(&mut self, name: &str) -> Option<Pending> {
        let (pending, wait) = self.tasks.remove(name)?;
        let seq = task_sequence(name).unwrap_or(i64::MAX);
        let key = (seq, name.to_string());
        match wait {
            Wait::Until(until) => {
                self.by_time.remove(&(until, seq, name.to_string()));
            }
            Wait::Lock(lock) => remove_from(&mut self.by_lock, &lock, &key),
            Wait::Labels(labels) => remove_from(&mut self.by_labels, &labels, &key),
        }
        Some(pending)
    }

    /// Keeps only the parked tasks `keep` says are still pending.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.tasks.keys().filter(|n| !keep(n)).cloned().collect();
        for name in gone {
            self.unpark(&name);
        }
    }

    /// The earliest time a parked task's delay ends (unix ms).
    pub fn next_due(&self) -> Option<u64> {
        self.by_time.first().map(|(until, _, _)| *until)
    }

    /// Takes out the tasks whose wait may be over at `now_ms`: every due
    /// one, the oldest of each lock `held` does not hold, and, when
    /// `workers_changed`, those whose labels `has_match` says a live worker
    /// has. Oldest first.
    pub fn release(
        &mut self,
        now_ms: u64,
        held: &BTreeSet<String>,
        workers_changed: bool,
        has_match: impl Fn(&[String]) -> bool,
    ) -> Vec<Pending> {
        let mut names: Vec<String> = self
            .by_time
            .iter()
            .take_while(|(until, _, _)| *until <= now_ms)
            .map(|(_, _, name)| name.clone())
            .collect();
        for (lock, tasks) in &self.by_lock {
            if !held.contains(lock)
                && let Some((_, oldest)) = tasks.first()
            {
                names.push(oldest.clone());
            }
        }
        if workers_changed {
            for (labels, tasks) in &self.by_labels {
                if has_match(labels) {
                    names.extend(tasks.iter().map(|(_, name)| name.clone()));
                }
            }
        }
        let mut released: Vec<Pending> = names.iter().filter_map(|n| self.unpark(n)).collect();
        released.sort_by_key(|p| task_sequence(&p.name).unwrap_or(i64::MAX));
        released
    }
}

fn remove_from<K: Ord>(
    index: &mut BTreeMap<K, BTreeSet<(i64, String)>>,
    at: &K,
    key: &(i64, String),
) {
    if let Some(set) = index.get_mut(at) {
        set.remove(key);
        if set.is_empty() {
            index.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Task;

    fn pending(n: u32) -> Pending {
        Pending {
            name: format!("task-{n:010}"),
            version: 0,
            task: Ok(Task::default()),
        }
    }

    fn names(released: &[Pending]) -> Vec<&str> {
        released.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn releases_only_what_may_be_over() {
        let mut parked = Parked::default();
        parked.park(pending(1), Wait::Until(100));
        parked.park(pending(2), Wait::Until(200));
        parked.park(pending(3), Wait::Lock("nightly".into()));
        parked.park(pending(4), Wait::Lock("nightly".into()));
        parked.park(pending(5), Wait::Labels(vec!["gpu".into()]));
        assert_eq!(parked.next_due(), Some(100));
        let held: BTreeSet<String> = ["nightly".to_string()].into();
        let none = |_: &[String]| false;
        assert!(parked.release(50, &held, true, none).is_empty());
        // Due, and the lock free: only its oldest task comes out.
        let free = BTreeSet::new();
        let out = parked.release(150, &free, false, none);
        assert_eq!(names(&out), ["task-0000000001", "task-0000000003"]);
        // Labels are looked at only when the workers changed.
        let gpu = |l: &[String]| l == ["gpu"];
        assert!(parked.release(150, &held, false, gpu).is_empty());
        let out = parked.release(150, &held, true, gpu);
        assert_eq!(names(&out), ["task-0000000005"]);
        assert_eq!(parked.len(), 2);
        parked.retain(|n| n != "task-0000000004");
        assert_eq!(parked.len(), 1);
        assert!(parked.contains("task-0000000002"));
        assert!(parked.release(150, &free, true, gpu).is_empty());
    }
}
