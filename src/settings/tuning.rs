//! A long-running role's live view of its settings: what the process was
//! given, the last good cluster settings, and the lines to log when they
//! change. Pure: the role reads the node (`store::follow`) and feeds its
//! data here.

use std::time::Duration;

use super::{Given, Key, Source, Value, Values, decode, pick};

/// The settings a role follows, as they stand.
#[derive(Debug, Clone)]
pub struct Tuning {
    keys: &'static [Key],
    given: Given,
    cluster: Values,
    /// The settings were logged once already.
    told: bool,
}

/// What one read of the config node changed, and what to log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Update {
    /// True when a value this role uses changed.
    pub changed: bool,
    /// The line to log at info: the settings (first read) or their changes.
    pub info: Option<String>,
    /// The line to log at warn: what in the node was ignored, and why.
    pub warn: Option<String>,
}

impl Tuning {
    /// The view of a role following `keys`, given `given` by its flags
    /// and environment; no cluster settings read yet.
    pub fn new(keys: &'static [Key], given: Given) -> Tuning {
        Tuning {
            keys,
            given,
            cluster: Values::new(),
            told: false,
        }
    }

    /// The value of `key` now, and where it comes from.
    pub fn get(&self, key: Key) -> (Option<Value>, Source) {
        pick(key, &self.given, &self.cluster)
    }

    /// The value of a duration key now (zero if it has none).
    pub fn duration(&self, key: Key) -> Duration {
        self.get(key)
            .0
            .and_then(Value::duration)
            .unwrap_or_default()
    }

    /// The value of a count key now (zero if it has none).
    pub fn count(&self, key: Key) -> u64 {
        self.get(key).0.and_then(Value::count).unwrap_or_default()
    }

    /// Every followed key with its value and source:
    /// `output-cap 65536 (default), drain-timeout 5s (cluster)`.
    pub fn summary(&self) -> String {
        let shown: Vec<String> = self
            .keys
            .iter()
            .map(|key| {
                let (value, source) = self.get(*key);
                format!("{} {} ({})", key.name(), show(value), source.describe(*key))
            })
            .collect();
        shown.join(", ")
    }

    /// Takes in the config node's data (empty when there is none). A node
    /// that is not a record changes nothing; a value its key's rule refuses
    /// keeps that key's last good value.
    pub fn update(&mut self, data: &[u8]) -> Update {
        let mut update = Update::default();
        let decoded = match decode(data) {
            Ok(decoded) => decoded,
            Err(why) => {
                update.warn = Some(format!("{why}; keeping the last good settings"));
                self.tell_first(&mut update);
                return update;
            }
        };
        let mut cluster = decoded.values;
        let mut problems = Vec::new();
        for (key, why) in decoded.problems {
            let Some(key) = key.filter(|k| self.keys.contains(k)) else {
                continue;
            };
            problems.push(match self.cluster.get(&key) {
                Some(last) => {
                    cluster.insert(key, *last);
                    format!("{why}, keeping {last}")
                }
                None => why,
            });
        }
        if !problems.is_empty() {
            update.warn = Some(problems.join("; "));
        }
        let changes = self.changes(&cluster);
        update.changed = self
            .keys
            .iter()
            .any(|k| pick(*k, &self.given, &cluster).0 != self.get(*k).0);
        self.cluster = cluster;
        if !self.tell_first(&mut update) && !changes.is_empty() {
            update.info = Some(format!("settings changed: {}", changes.join(", ")));
        }
        update
    }

    /// Puts the whole summary into `update` the first time; true if it did.
    fn tell_first(&mut self, update: &mut Update) -> bool {
        if self.told {
            return false;
        }
        self.told = true;
        update.info = Some(format!("settings: {}", self.summary()));
        true
    }

    /// What a change of the cluster settings to `cluster` does to each
    /// followed key, one phrase per key it touches.
    fn changes(&self, cluster: &Values) -> Vec<String> {
        let mut phrases = Vec::new();
        for key in self.keys {
            let (old, new) = (self.cluster.get(key), cluster.get(key));
            if old == new {
                continue;
            }
            let (before, _) = self.get(*key);
            let (after, source) = pick(*key, &self.given, cluster);
            let name = key.name();
            phrases.push(if before != after {
                format!(
                    "{name} {} -> {} ({})",
                    show(before),
                    show(after),
                    source.describe(*key)
                )
            } else {
                format!(
                    "{name} stays {} ({} beats the cluster's {})",
                    show(after),
                    source.describe(*key),
                    new.map_or("unset".into(), Value::to_string)
                )
            });
        }
        phrases
    }
}

/// A value as shown: `none` for no value (no job timeout).
pub fn show(value: Option<Value>) -> String {
    value.map_or_else(|| "none".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::WORKER_KEYS;

    fn worker(given: Given) -> Tuning {
        Tuning::new(WORKER_KEYS, given)
    }

    #[test]
    fn the_first_read_tells_every_setting() {
        let mut t = worker(Given::new());
        let u = t.update(br#"{"output-cap":"5"}"#);
        assert!(u.changed);
        assert_eq!(
            u.info.as_deref(),
            Some("settings: output-cap 5 (cluster), drain-timeout 30s (default)")
        );
        assert_eq!(u.warn, None);
        assert_eq!(t.count(Key::OutputCap), 5);
    }

    #[test]
    fn a_change_is_one_line_saying_what_changed() {
        let mut t = worker(Given::new());
        t.update(b"");
        let u = t.update(br#"{"output-cap":"5","drain-timeout":"1s"}"#);
        assert_eq!(
            u.info.as_deref(),
            Some(
                "settings changed: output-cap 65536 -> 5 (cluster), drain-timeout 30s -> 1s (cluster)"
            )
        );
        assert!(u.changed);
        assert_eq!(t.duration(Key::DrainTimeout), Duration::from_secs(1));
        let u = t.update(br#"{"drain-timeout":"1s"}"#);
        assert_eq!(
            u.info.as_deref(),
            Some("settings changed: output-cap 5 -> 65536 (default)")
        );
        // Keys other roles follow change nothing here.
        let u = t.update(br#"{"drain-timeout":"1s","retries":"9"}"#);
        assert_eq!(u, Update::default());
    }

    #[test]
    fn the_process_beats_the_cluster_and_says_so() {
        let mut given = Given::new();
        given.insert(Key::OutputCap, (Value::Count(10), Source::Flag));
        let mut t = worker(given);
        t.update(b"{}");
        let u = t.update(br#"{"output-cap":"5"}"#);
        assert!(!u.changed);
        assert_eq!(
            u.info.as_deref(),
            Some("settings changed: output-cap stays 10 (--output-cap beats the cluster's 5)")
        );
        assert_eq!(t.count(Key::OutputCap), 10);
    }

    /// A garbled node, or a garbled value, keeps the last good values.
    #[test]
    fn garbage_keeps_the_last_good_values() {
        let mut t = worker(Given::new());
        t.update(br#"{"output-cap":"5","drain-timeout":"2s"}"#);
        let u = t.update(b"{\"output-cap\":");
        assert!(!u.changed && u.info.is_none());
        assert!(
            u.warn
                .as_deref()
                .is_some_and(|w| w.starts_with("not a settings record")
                    && w.ends_with("; keeping the last good settings")),
            "{u:?}"
        );
        assert_eq!(t.count(Key::OutputCap), 5);
        let u = t.update(br#"{"output-cap":"huge","drain-timeout":"3s"}"#);
        assert_eq!(
            u.warn.as_deref(),
            Some("output-cap must be a whole number, got 'huge' (ignored), keeping 5")
        );
        assert_eq!(
            u.info.as_deref(),
            Some("settings changed: drain-timeout 2s -> 3s (cluster)")
        );
        assert_eq!(t.count(Key::OutputCap), 5);
    }

    #[test]
    fn a_garbled_first_read_still_tells_the_settings() {
        let mut t = worker(Given::new());
        let u = t.update(b"[");
        assert!(u.warn.is_some());
        assert_eq!(
            u.info.as_deref(),
            Some("settings: output-cap 65536 (default), drain-timeout 30s (default)")
        );
    }
}
