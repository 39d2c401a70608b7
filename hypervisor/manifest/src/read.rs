//! Reading a manifest's text with the `toml` crate into spanned tables: the document's
//! top-level keys, its `[[partition]]` tables, and each value reduced to what the checks need.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use crate::TOP_KEYS;

/// A value as written, reduced to what the checks need (smaller in the hypervisor than
/// `toml::Value`, whose tables, floats and dates it never uses).
#[derive(Debug)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Boolean,
    Array(Vec<Value>),
    /// A float, a date-time or a table: only its kind is shown.
    Other(&'static str),
}

impl Value {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// How toml hands a date-time to serde: a map with this one key.
const DATETIME_KEY: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.into()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Integer(n))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(i64::try_from(n).map_or(Value::Other("an integer"), Value::Integer))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Other("a float"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Boolean)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Nesting is bounded before parsing (`depth`), so this recursion is too.
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kind = "a table";
        while let Some(key) = map.next_key::<String>()? {
            if key == DATETIME_KEY {
                kind = "a date-time";
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(Value::Other(kind))
    }
}

/// A table's keys and values, each with its place, in no particular order.
#[derive(Default)]
pub(crate) struct Table(Vec<(Spanned<String>, Spanned<Value>)>);

impl Table {
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(Spanned<String>, Spanned<Value>)> {
        self.0.iter()
    }
}

impl<'de> Deserialize<'de> for Table {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(TableVisitor)
    }
}

struct TableVisitor;

impl<'de> Visitor<'de> for TableVisitor {
    type Value = Table;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Table, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value::<Spanned<Value>>()?));
        }
        Ok(Table(entries))
    }
}

/// The document as written: the top-level keys with their places, the partition tables, and
/// the first unknown key.
#[derive(Default)]
pub(crate) struct Doc {
    pub(crate) top: Vec<(Spanned<String>, Spanned<Value>)>,
    pub(crate) partitions: Vec<Spanned<Table>>,
    /// Where `partition` is not an array of tables: its key and why.
    pub(crate) bad_partition: Option<(Range<usize>, &'static str)>,
    pub(crate) unknown: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a manifest")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
        let mut doc = Doc::default();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            match key.get_ref().as_str() {
                "partition" => match map.next_value::<Partitions>()? {
                    Partitions::Tables(tables) => doc.partitions = tables,
                    Partitions::Not(found) => {
                        doc.bad_partition = Some((key.span(), found));
                    }
                },
                k if TOP_KEYS.contains(&k) => {
                    let value = map.next_value::<Spanned<Value>>()?;
                    doc.top.push((key, value));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    if doc.unknown.as_ref().is_none_or(|u| u.span().start > key.span().start) {
                        doc.unknown = Some(key);
                    }
                }
            }
        }
        doc.top.sort_by_key(|(k, _)| k.span().start);
        Ok(doc)
    }
}

/// The value of `partition`: its tables, or what was found instead of an array of tables.
enum Partitions {
    Tables(Vec<Spanned<Table>>),
    Not(&'static str),
}

impl<'de> Deserialize<'de> for Partitions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PartitionsVisitor)
    }
}

struct PartitionsVisitor;

impl<'de> Visitor<'de> for PartitionsVisitor {
    type Value = Partitions;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[[partition]] tables")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Partitions, A::Error> {
        let mut tables = Vec::new();
        while let Some(t) = seq.next_element::<Spanned<Table>>()? {
            tables.push(t);
        }
        Ok(Partitions::Tables(tables))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Partitions, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Partitions::Not("a single table [partition]"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Partitions, E> {
        Ok(Partitions::Not("a string"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Partitions, E> {
        Ok(Partitions::Not("an integer"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Partitions, E> {
        Ok(Partitions::Not("a float"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Partitions, E> {
        Ok(Partitions::Not("a boolean"))
    }
}
