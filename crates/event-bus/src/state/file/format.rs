//! What a state file holds, and reading it without losing any of it.
//!
//! A load must never return less than the file holds: the bus saves what
//! it loaded, so anything the load passed over would be erased from the
//! file by the next save. So, besides what does not parse:
//!
//! - a key given twice in one object is refused in every layout (JSON
//!   readers keep the last; `"subscriptions"` twice loaded the second list
//!   and the next save erased the first);
//! - in the versioned layout (`{"version": 1, "subscriptions": [...]}`,
//!   the only one this library writes, `version` optional), a field this
//!   library does not read is refused, naming it, where it is, and the field
//!   it may have meant (`"max_deliver": 3` was ignored, deliveries became
//!   unlimited, and the next save erased it); so is version 0, which no
//!   library wrote;
//! - in the unversioned layouts of earlier libraries (a bare array of
//!   records, an object mapping subscriber ids to records), such fields
//!   load with a warning naming them: those libraries wrote fields this one
//!   never read, and their files must keep loading. The options they wrote
//!   under other names and units (`ackWaitSecs`, `backoffSecs`) or with
//!   JetStream's special values (-1: unlimited) are converted first (see [`upgrade_legacy`]), so
//!   they load as meant instead of being passed over.
//!
//! A field counts as read when the record, as loaded and written back,
//! holds it, or when it is one the types declare (a known field written
//! at its default, `"maxDeliver": null`, which a save leaves out: nothing
//! is lost).

use event_core::{Error, Result, SubscribeOptions, SubscriptionFilter, SubscriptionRecord};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::text::{cut, quoted};

/// Version written into state files; newer files are refused, not misread.
pub(super) const FORMAT_VERSION: u64 = 1;

/// The keys of the versioned layout's top-level object.
const TOP_LEVEL: [&str; 2] = ["version", "subscriptions"];

/// A file that is not valid state (damaged, edited by hand, or written by
/// a newer version of this library: the reason says which it looks like).
fn corrupt(path: &Path, reason: impl fmt::Display) -> Error {
    Error::Serialization(format!(
        "state file {} cannot be read (left untouched): {reason}",
        path.display()
    ))
}

/// The subscriptions in `bytes`, the contents of the state file `path`.
pub(super) fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<SubscriptionRecord>> {
    let Unique(mut value) = serde_json::from_slice(bytes).map_err(|e| corrupt(path, e))?;
    // `at`: the array's JSON pointer, so that a record of the wrong shape
    // is named by where it is, not only by what serde expected
    let records = |v: &Value, at: &str| -> Result<Vec<SubscriptionRecord>> {
        let Value::Array(items) = v else {
            return Vec::<SubscriptionRecord>::deserialize(v).map_err(|e| corrupt(path, e));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                SubscriptionRecord::deserialize(item).map_err(|e| {
                    let id = match item.get("subscriberId").and_then(Value::as_str) {
                        Some(id) => format!(" (subscriber {})", quoted(id, 64)),
                        None => String::new(),
                    };
                    corrupt(path, format_args!("record {at}/{i}{id}: {e}"))
                })
            })
            .collect()
    };
    if !is_versioned(&value) {
        upgrade_legacy(path, &mut value)?;
    }
    match value {
        Value::Array(_) => {
            let loaded = records(&value, "")?;
            warn_unread(path, unread_records(&value, &loaded, ""));
            Ok(loaded)
        }
        // The versioned layout (see `is_versioned`).
        Value::Object(map) if versioned_map(&map) => {
            let version = match map.get("version") {
                None => FORMAT_VERSION,
                Some(v) => v.as_u64().ok_or_else(|| {
                    corrupt(path, format!("format version {v} is not a version number"))
                })?,
            };
            if version == 0 {
                return Err(corrupt(
                    path,
                    format!(
                        "format version 0 was never written (versions start at {FORMAT_VERSION})"
                    ),
                ));
            }
            if version > FORMAT_VERSION {
                return Err(corrupt(
                    path,
                    format!(
                        "format version {version} is newer than this library's {FORMAT_VERSION}"
                    ),
                ));
            }
            if let Some(key) = map.keys().find(|k| !TOP_LEVEL.contains(&k.as_str())) {
                return Err(corrupt(path, Unread::new("", key, &TOP_LEVEL)));
            }
            let subscriptions = map.get("subscriptions").unwrap_or(&Value::Null);
            let loaded = records(subscriptions, "/subscriptions")?;
            match unread_records(subscriptions, &loaded, "/subscriptions")
                .into_iter()
                .next()
            {
                Some(unread) => Err(corrupt(path, unread)),
                None => Ok(loaded),
            }
        }
        Value::Object(map) => {
            let mut by_id = BTreeMap::new();
            let mut unread = Vec::new();
            for (id, item) in &map {
                let record = SubscriptionRecord::deserialize(item)
                    .map_err(|e| corrupt(path, format_args!("subscriber {}: {e}", cut(id, 64))))?;
                if let Ok(back) = serde_json::to_value(&record) {
                    let at = format!("/{}", pointer_token(id));
                    unread_fields(item, &back, Level::Record, &at, &mut unread);
                }
                by_id.insert(id.as_str(), record);
            }
            warn_unread(path, unread);
            Ok(by_id.into_values().collect())
        }
        other => Err(corrupt(
            path,
            format!(
                "expected an object or an array, found {}",
                cut(&other.to_string(), 64)
            ),
        )),
    }
}

/// Whether the file is in the versioned layout, the one this library
/// writes: an object with a `subscriptions` array or a `version` number
/// (a legacy map may hold subscribers named "subscriptions" or "version",
/// whose values are objects).
fn is_versioned(file: &Value) -> bool {
    matches!(file, Value::Object(map) if versioned_map(map))
}

fn versioned_map(map: &Map<String, Value>) -> bool {
    map.get("subscriptions").is_some_and(Value::is_array)
        || map.get("version").is_some_and(|v| !v.is_object())
}

/// Converts the options of an unversioned file's records (a bare array, or
/// an object by subscriber id) from the original library's names and
/// units, in place, so that they load as they were meant rather than being
/// passed over. That library passed its options to JetStream as they were,
/// so JetStream's meanings apply:
///
/// - `ackWaitSecs` (seconds) becomes `ackWaitMs`; 0 (JetStream's default
///   wait) becomes no `ackWaitMs` (the provider's default);
/// - `backoffSecs` (a list of seconds) becomes `backoffMs`;
/// - `maxDeliver` of zero or less (unlimited) becomes no `maxDeliver`
///   (unlimited here too);
/// - `maxAckPending` of -1 (unlimited) becomes the largest count
///   (unlimited), and 0 (JetStream's default) no `maxAckPending`.
///
/// A record holding both a name and its replacement is refused, as is a
/// value of the wrong shape or one that does not fit, naming the field as
/// written.
fn upgrade_legacy(path: &Path, file: &mut Value) -> Result<()> {
    let records: Vec<(String, &mut Value)> = match file {
        Value::Array(items) => items
            .iter_mut()
            .enumerate()
            .map(|(i, item)| (format!("/{i}"), item))
            .collect(),
        Value::Object(map) => map
            .iter_mut()
            .map(|(id, item)| (format!("/{}", pointer_token(id)), item))
            .collect(),
        _ => return Ok(()),
    };
    for (at, record) in records {
        let Some(Value::Object(options)) = record.get_mut("options") else {
            continue;
        };
        let at = format!("{at}/options");
        let refuse = |field: &str, value: &Value, wanted: &str| {
            corrupt(
                path,
                format_args!(
                    "`{at}/{field}` is {}, not {wanted}",
                    cut(&value.to_string(), 64)
                ),
            )
        };
        let millis = |field: &str, v: &Value| {
            v.as_u64()
                .and_then(|secs| secs.checked_mul(1_000))
                .map(Value::from)
                .ok_or_else(|| refuse(field, v, "a number of seconds this library can hold"))
        };
        for (old, new) in [("ackWaitSecs", "ackWaitMs"), ("backoffSecs", "backoffMs")] {
            let Some(secs) = options.remove(old) else {
                continue;
            };
            if options.contains_key(new) {
                return Err(corrupt(
                    path,
                    format_args!("`{at}` holds both `{old}` and `{new}`: keep one"),
                ));
            }
            let converted = match (old, &secs) {
                ("backoffSecs", Value::Array(steps)) => Value::Array(
                    steps
                        .iter()
                        .map(|step| millis(old, step))
                        .collect::<Result<_>>()?,
                ),
                ("backoffSecs", other) => return Err(refuse(old, other, "a list of seconds")),
                (_, single) => millis(old, single)?,
            };
            if converted != 0 {
                options.insert(new.to_owned(), converted);
            }
        }
        let count =
            |field: &str, options: &Map<String, Value>| options.get(field).and_then(Value::as_i64);
        if count("maxDeliver", options).is_some_and(|n| n <= 0) {
            options.remove("maxDeliver");
        }
        match count("maxAckPending", options) {
            Some(0) => {
                options.remove("maxAckPending");
            }
            Some(n) if n < 0 => {
                options.insert("maxAckPending".to_owned(), Value::from(u64::MAX));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Logs the fields of an unversioned file that the load passes over.
fn warn_unread(path: &Path, unread: Vec<Unread>) {
    if unread.is_empty() {
        return;
    }
    let fields: Vec<String> = unread.iter().take(10).map(Unread::to_string).collect();
    tracing::warn!(
        path = %path.display(),
        count = unread.len(),
        fields = %fields.join("; "),
        "state file in an earlier, unversioned layout holds fields this library does not read: they are left out, and the next save drops them"
    );
}

/// A field of the file that the load passes over.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Unread {
    /// The field.
    field: String,
    /// JSON pointer to the object holding it (`""`: the top level).
    at: String,
    /// A field the object does read that it may have meant.
    meant: Option<&'static str>,
}

impl Unread {
    fn new(at: &str, field: &str, known: &[&'static str]) -> Self {
        let squashed = |s: &str| {
            s.chars()
                .filter(|c| !matches!(c, '_' | '-' | ' '))
                .flat_map(char::to_lowercase)
                .collect::<String>()
        };
        let wanted = squashed(field);
        let meant = known
            .iter()
            .find(|k| {
                let k = squashed(k);
                k == wanted || k.trim_end_matches('s') == wanted.trim_end_matches('s')
            })
            .copied();
        Self {
            field: cut(field, 64).into_owned(),
            at: at.to_owned(),
            meant,
        }
    }
}

impl fmt::Display for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown field `{}` ", self.field)?;
        if self.at.is_empty() {
            f.write_str("at the top level")?;
        } else {
            write!(f, "at `{}`", self.at)?;
        }
        f.write_str(
            ": this library does not read it, so the next save would drop it \
             (a file written by a newer version: run that version, or remove the field)",
        )?;
        match self.meant {
            Some(meant) => write!(f, " (did you mean `{meant}`?)"),
            None => Ok(()),
        }
    }
}

/// Where in a record a JSON object is, for the fields it may hold.
#[derive(Debug, Clone, Copy)]
enum Level {
    /// A record: the filter's fields and `options`.
    Record,
    /// A record's `options`.
    Options,
    /// Anything inside (a deliver policy).
    Inner,
}

impl Level {
    /// The fields an object at this level is read with, beyond those the
    /// record written back holds (fields at their defaults are left out).
    fn known(self) -> Vec<&'static str> {
        match self {
            Self::Record => {
                let mut known = declared_fields::<SubscriptionFilter>().to_vec();
                // `SubscriptionRecord` flattens the filter, so serde does
                // not list its fields; `options` is its only other field
                known.push("options");
                known
            }
            Self::Options => declared_fields::<SubscribeOptions>().to_vec(),
            Self::Inner => Vec::new(),
        }
    }

    fn inside(self, key: &str) -> Self {
        match (self, key) {
            (Self::Record, "options") => Self::Options,
            _ => Self::Inner,
        }
    }
}

/// The fields of `file` (an array of records, as the file holds them) that
/// `loaded` (the same records, as loaded) does not hold, and that are not
/// fields the types declare. `at` is the array's JSON pointer.
fn unread_records(file: &Value, loaded: &[SubscriptionRecord], at: &str) -> Vec<Unread> {
    let (Value::Array(items), Ok(Value::Array(back))) = (file, serde_json::to_value(loaded)) else {
        return Vec::new();
    };
    let mut unread = Vec::new();
    for (n, (item, back)) in items.iter().zip(&back).enumerate() {
        unread_fields(item, back, Level::Record, &format!("{at}/{n}"), &mut unread);
    }
    unread
}

/// Adds to `unread` the fields of `file` that `back` (the same value as
/// loaded and written back) lacks and `level` does not declare, inside
/// objects and arrays too.
fn unread_fields(file: &Value, back: &Value, level: Level, at: &str, unread: &mut Vec<Unread>) {
    match (file, back) {
        (Value::Object(file), Value::Object(back)) => {
            for (key, value) in file {
                match back.get(key) {
                    Some(written) => {
                        let inner = format!("{at}/{}", pointer_token(key));
                        unread_fields(value, written, level.inside(key), &inner, unread);
                    }
                    None => {
                        let known = level.known();
                        if !known.contains(&key.as_str()) {
                            unread.push(Unread::new(at, key, &known));
                        }
                    }
                }
            }
        }
        (Value::Array(file), Value::Array(back)) => {
            for (n, (item, written)) in file.iter().zip(back).enumerate() {
                unread_fields(item, written, Level::Inner, &format!("{at}/{n}"), unread);
            }
        }
        _ => {}
    }
}

/// `key` as a JSON pointer token (RFC 6901), cut to 64 characters.
fn pointer_token(key: &str) -> String {
    cut(key, 64).replace('~', "~0").replace('/', "~1")
}

/// The field names serde's derive declares for `T` (what it reads from a
/// JSON object); empty for a type that declares none.
fn declared_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    // the derive hands its field list to `deserialize_struct`, which keeps
    // it and stops there
    let _ = T::deserialize(FieldNames(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the fields a struct asks for.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// A JSON value whose objects were each read with no key given twice.
struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Unique::deserialize(deserializer).map(|Unique(v)| v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "`{}` given twice in one object (a reader would keep one and drop the other)",
                    cut(&key, 64)
                )));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_fields_are_those_serde_reads() {
        assert_eq!(
            declared_fields::<SubscriptionFilter>(),
            ["subscriberId", "subjects", "durable"]
        );
        let options = declared_fields::<SubscribeOptions>();
        for field in [
            "maxDeliver",
            "backoffMs",
            "maxAckPending",
            "deliverPolicy",
            "ackWaitMs",
        ] {
            assert!(options.contains(&field), "{field} in {options:?}");
        }
        // a flattened struct declares none (hence `Level::Record`'s own list)
        assert!(declared_fields::<SubscriptionRecord>().is_empty());
        // every field a record is written with is one `Level::Record` knows
        let record = SubscriptionRecord {
            filter: SubscriptionFilter {
                subscriber_id: "a".into(),
                subjects: vec![],
                durable: true,
            },
            options: Some(SubscribeOptions::default()),
        };
        let Value::Object(written) = serde_json::to_value(&record).unwrap() else {
            panic!("a record is an object");
        };
        let known = Level::Record.known();
        assert!(
            written.keys().all(|k| known.contains(&k.as_str())),
            "{written:?}"
        );
    }

    #[test]
    fn unique_reads_json_as_serde_json_does() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#;
        let Unique(value) = serde_json::from_str(text).unwrap();
        assert_eq!(value, serde_json::from_str::<Value>(text).unwrap());
        let err = serde_json::from_str::<Unique>(r#"{"a":{"b":1,"b":2}}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`b` given twice"), "{err}");
    }

    #[test]
    fn a_misspelt_field_names_the_one_meant() {
        let known = Level::Options.known();
        for (typo, meant) in [
            ("max_deliver", "maxDeliver"),
            ("MaxDeliver", "maxDeliver"),
            ("backoff_ms", "backoffMs"),
            ("ack-wait-ms", "ackWaitMs"),
        ] {
            assert_eq!(Unread::new("", typo, &known).meant, Some(meant), "{typo}");
        }
        assert_eq!(Unread::new("", "rateLimit", &known).meant, None);
    }
}
