//! `zkmw config set|get|unset|list`: the operator's side of the cluster
//! settings. Every value is checked by its flag's rule before anything is
//! sent, so a refused value changes nothing.

use serde_json::{Map, Value as Json, json};

use super::tuning::show;
use super::{Given, KEYS, Key, Source, Value, Values, pick, record, store};
use crate::cli::ConfigAction;
use crate::error::Error;
use crate::layout::Layout;
use crate::output;
use crate::session;
use crate::zk::ConnectOptions;

/// Runs one `zkmw config` action.
pub fn run(connect: &ConnectOptions, layout: &Layout, action: &ConfigAction) -> Result<(), Error> {
    let key_of = |name: &str| Key::from_name(name).map_err(Error::BadInput);
    // Everything that can be refused is refused before connecting.
    let request = match action {
        ConfigAction::Set { key, value } => {
            let key = key_of(key)?;
            let value = key
                .parse(value)
                .map_err(|why| Error::BadInput(format!("{why}; nothing was changed")))?;
            Request::Edit(key, Some(value))
        }
        ConfigAction::Unset { key } => Request::Edit(key_of(key)?, None),
        ConfigAction::Get { key } => Request::Get(key_of(key)?),
        ConfigAction::List { json } => Request::List { json: *json },
    };
    let given = env_given()?;
    let zk = session::connect(connect)?;
    let text = match request {
        Request::Edit(key, value) => store::edit(&zk, layout, key, value)
            .map(|edited| edit_line(layout, key, value, &edited)),
        Request::Get(key) => cluster(&zk, layout).map(|c| show(pick(key, &given, &c).0) + "\n"),
        Request::List { json } => cluster(&zk, layout).map(|c| list(&given, &c, json)),
    };
    zk.close(session::CLOSE_WAIT);
    output::write(text?.as_bytes(), None)
}

/// One action, checked.
enum Request {
    Edit(Key, Option<Value>),
    Get(Key),
    List { json: bool },
}

/// What this process was given itself: the keys' environment variables
/// (it has none of their flags). A value its key refuses is refused, as the
/// role reading it would refuse it.
fn env_given() -> Result<Given, Error> {
    let mut given = Given::new();
    for key in KEYS {
        let Some(env) = key.env() else { continue };
        let Ok(text) = std::env::var(env) else {
            continue;
        };
        let value = key
            .parse_named(&format!("{} (from {env})", key.flag()), &text)
            .map_err(Error::BadInput)?;
        given.insert(key, (value, Source::Env));
    }
    Ok(given)
}

/// The cluster settings; what in the node cannot be used is said on
/// stderr, one `zkmw:` line each, and left out.
fn cluster(zk: &crate::zk::Zk, layout: &Layout) -> Result<Values, Error> {
    let path = layout.config();
    let (data, _) =
        store::read_raw(zk, layout).map_err(|err| Error::zk(format!("reading {path}"), err))?;
    match record::decode(&data) {
        Ok(decoded) => {
            for (_, why) in decoded.problems {
                eprintln!("zkmw: {path}: {why}");
            }
            Ok(decoded.values)
        }
        Err(why) => {
            eprintln!("zkmw: {path}: {why}; shown without cluster settings");
            Ok(Values::new())
        }
    }
}

/// What `config set` or `config unset` did, for the user.
fn edit_line(layout: &Layout, key: Key, value: Option<Value>, edited: &record::Edited) -> String {
    if let Some(why) = &edited.replaced {
        eprintln!(
            "zkmw: {} held no settings record ({why}); it was replaced",
            layout.config()
        );
    }
    let name = key.name();
    let was = edited.before.as_deref().unwrap_or("unset");
    match value {
        Some(value) => format!("{name} set to {value} (was {was})\n"),
        None if edited.before.is_none() => format!("{name} was not set; nothing changed\n"),
        None => format!(
            "{name} unset (was {was}); the default applies: {}\n",
            show(key.default_value())
        ),
    }
}

/// `config list`: every key's value for this process, where it comes
/// from, the cluster's value and who reads it.
fn list(given: &Given, cluster: &Values, json: bool) -> String {
    if json {
        let mut all = Map::new();
        for key in KEYS {
            let (value, source) = pick(key, given, cluster);
            let text = |v: Option<Value>| v.map(|v| v.to_string());
            all.insert(
                key.name().to_string(),
                json!({
                    "value": text(value),
                    "source": source.describe(key),
                    "cluster": text(cluster.get(&key).copied()),
                    "default": text(key.default_value()),
                    "read_by": key.read_by(),
                }),
            );
        }
        return format!("{}\n", Json::Object(all));
    }
    let mut text = String::new();
    for key in KEYS {
        let (value, source) = pick(key, given, cluster);
        let mut line = format!(
            "{:<14} {:<10} {:<24} read by {}",
            key.name(),
            show(value),
            source.describe(key),
            key.read_by()
        );
        if let (Source::Flag | Source::Env, Some(theirs)) = (source, cluster.get(&key)) {
            line.push_str(&format!(" (cluster: {theirs})"));
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn list_shows_each_value_with_its_source() {
        let mut given = Given::new();
        given.insert(Key::MaxPending, (Value::Count(7), Source::Env));
        let mut cluster = Values::new();
        cluster.insert(Key::Retries, Value::Count(5));
        cluster.insert(Key::MaxPending, Value::Count(9));
        let text = list(&given, &cluster, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), KEYS.len());
        assert_eq!(
            lines[0],
            "timeout        none       default                  read by submit"
        );
        assert!(
            lines[1].starts_with("retries        5          cluster "),
            "{text}"
        );
        assert!(
            lines[5].starts_with("max-pending    7          env ZKMW_MAX_PENDING")
                && lines[5].ends_with("read by submit (cluster: 9)"),
            "{text}"
        );
        let json: Json = serde_json::from_str(&list(&given, &cluster, true)).unwrap();
        assert_eq!(json["retries"]["value"], "5");
        assert_eq!(json["retries"]["source"], "cluster");
        assert_eq!(json["retries"]["default"], "2");
        assert_eq!(json["timeout"]["value"], Json::Null);
        assert_eq!(json["max-pending"]["source"], "env ZKMW_MAX_PENDING");
        assert_eq!(json["max-pending"]["cluster"], "9");
        assert_eq!(json["drain-timeout"]["read_by"], "worker");
    }

    #[test]
    fn edits_say_what_they_did() {
        let layout = Layout::new("/z");
        let edited = |before: Option<&str>| record::Edited {
            data: Vec::new(),
            before: before.map(str::to_string),
            replaced: None,
        };
        let ttl = Some(Value::Duration(Duration::from_secs(86_400)));
        assert_eq!(
            edit_line(&layout, Key::ResultTtl, ttl, &edited(None)),
            "result-ttl set to 1d (was unset)\n"
        );
        assert_eq!(
            edit_line(&layout, Key::Retries, None, &edited(Some("5"))),
            "retries unset (was 5); the default applies: 2\n"
        );
        assert_eq!(
            edit_line(&layout, Key::Timeout, None, &edited(None)),
            "timeout was not set; nothing changed\n"
        );
    }
}
