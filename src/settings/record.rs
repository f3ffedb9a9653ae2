//! The data of `<root>/config`: a JSON object of key to value text, such
//! as `{"retries":"5","result-ttl":"1d"}`. Nothing in it is trusted: a
//! node that is not such an object, a key this version does not know, or
//! a value its key's rule refuses is reported, never a panic. Editing keeps
//! every other entry as it is, even those this version cannot read, so
//! processes of two versions can share a namespace.

use serde_json::{Map, Value as Json};

use super::{Key, Value, Values};

/// What a config node says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The values that passed their key's rule.
    pub values: Values,
    /// What was wrong with the others, each with its key (`None` for a
    /// key this version does not know).
    pub problems: Vec<(Option<Key>, String)>,
}

/// Decodes a config node's data; an error when it is not a record at all
/// (an empty node holds no settings).
pub fn decode(bytes: &[u8]) -> Result<Decoded, String> {
    let mut decoded = Decoded::default();
    for (name, raw) in entries(bytes)? {
        let Ok(key) = Key::from_name(&name) else {
            let why = format!("unknown setting '{}' (ignored)", name.escape_debug());
            decoded.problems.push((None, why));
            continue;
        };
        let parsed = text_of(&raw)
            .ok_or_else(|| format!("{name}: {raw} is not a value (ignored)"))
            .and_then(|text| key.parse(&text).map_err(|why| format!("{why} (ignored)")));
        match parsed {
            Ok(value) => {
                decoded.values.insert(key, value);
            }
            Err(why) => decoded.problems.push((Some(key), why)),
        }
    }
    Ok(decoded)
}

/// The node's entries, by name.
fn entries(bytes: &[u8]) -> Result<Map<String, Json>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Json>(bytes) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "not a settings record: a JSON object of settings was expected, found {}",
            kind(&other)
        )),
        Err(err) => Err(format!("not a settings record: {err}")),
    }
}

/// A value as text: a string as it is, a number (hand-edited) as written.
fn text_of(raw: &Json) -> Option<String> {
    match raw {
        Json::String(text) => Some(text.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// A config node's data after one change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The data to write.
    pub data: Vec<u8>,
    /// What the key held before, as stored.
    pub before: Option<String>,
    /// Why the node's old data was dropped, when it was not a record.
    pub replaced: Option<String>,
}

/// `bytes` with `key` set to `value`, or removed when `value` is `None`;
/// every other entry is kept as stored. Data that is not a record is
/// replaced (the reason is returned).
pub fn edit(bytes: &[u8], key: Key, value: Option<Value>) -> Edited {
    let (mut map, replaced) = match entries(bytes) {
        Ok(map) => (map, None),
        Err(why) => (Map::new(), Some(why)),
    };
    let before = match value {
        Some(value) => map.insert(key.name().to_string(), Json::String(value.to_string())),
        None => map.remove(key.name()),
    };
    Edited {
        // A map of strings and JSON values always serialises.
        data: serde_json::to_vec(&Json::Object(map)).unwrap_or_default(),
        before: before.map(|raw| text_of(&raw).unwrap_or_else(|| raw.to_string())),
        replaced,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn decodes_a_record_and_reports_what_it_cannot_use() {
        let bytes = br#"{"retries":"5","result-ttl":"1d","keep-results":10,
            "output-cap":"lots","timeout":true,"retires":"3"}"#;
        let decoded = decode(bytes).unwrap();
        assert_eq!(decoded.values.get(&Key::Retries), Some(&Value::Count(5)));
        assert_eq!(
            decoded.values.get(&Key::ResultTtl),
            Some(&Value::Duration(Duration::from_secs(86_400)))
        );
        assert_eq!(
            decoded.values.get(&Key::KeepResults),
            Some(&Value::Count(10))
        );
        assert_eq!(decoded.values.len(), 3);
        let problems: Vec<_> = decoded
            .problems
            .iter()
            .map(|(k, why)| (*k, why.as_str()))
            .collect();
        assert!(problems.contains(&(
            Some(Key::OutputCap),
            "output-cap must be a whole number, got 'lots' (ignored)"
        )));
        assert!(problems.contains(&(Some(Key::Timeout), "timeout: true is not a value (ignored)")));
        assert!(problems.contains(&(None, "unknown setting 'retires' (ignored)")));
    }

    #[test]
    fn an_empty_node_holds_no_settings() {
        assert_eq!(decode(b""), Ok(Decoded::default()));
        assert_eq!(decode(b" \n"), Ok(Decoded::default()));
        assert_eq!(decode(b"{}"), Ok(Decoded::default()));
    }

    #[test]
    fn garbage_is_no_record() {
        for bytes in [&b"{"[..], b"[1]", b"null", b"\"x\"", b"\xff\xfe", b"5"] {
            let why = decode(bytes).unwrap_err();
            assert!(why.starts_with("not a settings record"), "{bytes:?}: {why}");
        }
    }

    /// Every prefix and one-byte corruption of a record: a value or an
    /// error, never a panic.
    #[test]
    fn decoding_survives_every_prefix_and_byte_flip() {
        let bytes = br#"{"retries":"5","result-ttl":"1d","output-cap":65536}"#;
        for cut in 0..bytes.len() {
            for flip in [0x01, 0x5a, 0x80, 0xff] {
                let mut flipped = bytes.to_vec();
                flipped[cut] ^= flip;
                let _ = decode(&bytes[..cut]);
                let _ = decode(&flipped);
            }
        }
    }

    #[test]
    fn editing_keeps_the_other_entries_as_stored() {
        let bytes = br#"{"retries":"5","future-key":{"x":1},"keep-results":"bad"}"#;
        let set = edit(bytes, Key::Retries, Some(Value::Count(7)));
        assert_eq!(set.before.as_deref(), Some("5"));
        assert_eq!(set.replaced, None);
        let json: Json = serde_json::from_slice(&set.data).unwrap();
        assert_eq!(json["retries"], "7");
        assert_eq!(json["future-key"]["x"], 1);
        assert_eq!(json["keep-results"], "bad");
        let unset = edit(&set.data, Key::Retries, None);
        assert_eq!(unset.before.as_deref(), Some("7"));
        let json: Json = serde_json::from_slice(&unset.data).unwrap();
        assert!(json.get("retries").is_none());
        assert_eq!(edit(b"{}", Key::Retries, None).before, None);
    }

    #[test]
    fn editing_garbage_replaces_it() {
        let edited = edit(b"{oops", Key::MaxPending, Some(Value::Count(9)));
        assert!(
            edited
                .replaced
                .unwrap()
                .starts_with("not a settings record")
        );
        assert_eq!(edited.data, br#"{"max-pending":"9"}"#);
    }
}
