//! The value carried by an operation: a small EDN-shaped data model that covers
//! registers, cas pairs, transactions, sets, counters, bank maps and keys.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thin_vec::ThinVec;

use crate::text::Text;

/// A value in a history.
///
/// Keywords and strings are distinct when read from EDN (so that EDN can be
/// written back as it was), but they compare and hash as equal: JSON has no
/// keywords, and `:x` and `"x"` name the same key in every workload we know.
#[derive(Debug, Clone, Default)]
pub enum Value {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Text),
    Keyword(Text),
    List(ThinVec<Value>),
    /// Elements kept sorted and unique so equal sets are equal values.
    Set(ThinVec<Value>),
    /// Entries in the order they were read.
    Map(ThinVec<(Value, Value)>),
}

// Values are most of a history's memory: keep them two words (one-word
// strings and lists, the tag beside them), and `Option<Value>` the same.
const _: () = assert!(std::mem::size_of::<Value>() == 16);
const _: () = assert!(std::mem::size_of::<Option<Value>>() == 16);

impl Value {
    pub fn set(items: impl IntoIterator<Item = Value>) -> Value {
        let mut items: ThinVec<Value> = items.into_iter().collect();
        items.sort();
        items.dedup();
        Value::Set(items)
    }

    pub fn list(items: impl Into<ThinVec<Value>>) -> Value {
        Value::List(items.into())
    }

    pub fn map(entries: impl Into<ThinVec<(Value, Value)>>) -> Value {
        Value::Map(entries.into())
    }

    pub fn str(s: &str) -> Value {
        Value::Str(Text::new(s))
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The text of a string or keyword.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Keyword(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of a list or set.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Set(v) => Some(v),
            _ => None,
        }
    }

    pub fn map_get(&self, key: &Value) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Nil => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Str(_) | Value::Keyword(_) => 3,
            Value::List(_) => 4,
            Value::Set(_) => 5,
            Value::Map(_) => 6,
        }
    }

    /// Parse a value written in EDN, e.g. `[:append 1 2]`.
    pub fn from_edn(text: &str) -> Result<Value, crate::edn::EdnError> {
        crate::edn::parse_value(text)
    }

    /// The value written as EDN.
    pub fn to_edn(&self) -> String {
        let mut out = String::new();
        crate::edn::write_value(&mut out, self);
        out
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Value {}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Nil, Nil) => Ordering::Equal,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int(a), Int(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Int(a), Float(b)) => (*a as f64).total_cmp(b),
            (Float(a), Int(b)) => a.total_cmp(&(*b as f64)),
            (Str(a) | Keyword(a), Str(b) | Keyword(b)) => a.cmp(b),
            (List(a), List(b)) | (Set(a), Set(b)) => a[..].cmp(&b[..]),
            (Map(a), Map(b)) => a[..].cmp(&b[..]),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Nil => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            // Integral floats hash like the integer they equal.
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    (*f as i64).hash(state)
                } else {
                    f.to_bits().hash(state)
                }
            }
            Value::Str(s) | Value::Keyword(s) => s.hash(state),
            Value::List(v) | Value::Set(v) => v[..].hash(state),
            Value::Map(m) => m[..].hash(state),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_edn())
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.into())
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Nil, Into::into)
    }
}

// JSON encoding: nil/bool/numbers/strings/lists are plain JSON; keywords become
// strings; sets are `{"#set": [...]}`; maps with string keys are objects and
// other maps are `{"#map": [[k, v], ...]}`.
const SET_TAG: &str = "#set";
const MAP_TAG: &str = "#map";

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(t) | Value::Keyword(t) => s.serialize_str(t),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Set(items) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(SET_TAG, &items[..])?;
                map.end()
            }
            Value::Map(entries) => {
                if entries.iter().all(|(k, _)| k.as_str().is_some()) {
                    let mut map = s.serialize_map(Some(entries.len()))?;
                    for (k, v) in entries {
                        map.serialize_entry(k.as_str().unwrap_or_default(), v)?;
                    }
                    map.end()
                } else {
                    struct Pairs<'a>(&'a [(Value, Value)]);
                    impl Serialize for Pairs<'_> {
                        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                            let mut seq = s.serialize_seq(Some(self.0.len()))?;
                            for (k, v) in self.0 {
                                seq.serialize_element(&(k, v))?;
                            }
                            seq.end()
                        }
                    }
                    let mut map = s.serialize_map(Some(1))?;
                    map.serialize_entry(MAP_TAG, &Pairs(entries))?;
                    map.end()
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a history value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        i64::try_from(u)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {u} is too large")))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::str(s))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        // A list read element by element grows by doubling; the value keeps
        // an exact copy instead (shrinking in place would not help: an
        // allocator may keep a block that is at most half empty).
        Ok(Value::List(ThinVec::from(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: ThinVec<(Value, Value)> = ThinVec::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let value: Value = map.next_value()?;
            entries.push((Value::str(&key), value));
        }
        if entries.len() == 1 {
            let tag = entries[0].0.as_str().unwrap_or_default().to_string();
            if tag == SET_TAG || tag == MAP_TAG {
                let is_set = tag == SET_TAG;
                let Value::List(items) = std::mem::take(&mut entries[0].1) else {
                    return Err(de::Error::custom(format!("{tag} must hold a list")));
                };
                if is_set {
                    return Ok(Value::set(items));
                }
                let mut pairs = ThinVec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::List(mut kv) if kv.len() == 2 => {
                            let v = kv.pop().unwrap_or_default();
                            let k = kv.pop().unwrap_or_default();
                            pairs.push((k, v));
                        }
                        _ => {
                            return Err(de::Error::custom(
                                "#map entries must be [key, value] pairs",
                            ))
                        }
                    }
                }
                return Ok(Value::Map(pairs));
            }
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_equal_strings() {
        assert_eq!(Value::Keyword("x".into()), Value::Str("x".into()));
        use std::collections::hash_map::DefaultHasher;
        let h = |v: &Value| {
            let mut s = DefaultHasher::new();
            v.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&Value::Keyword("x".into())), h(&Value::Str("x".into())));
    }

    #[test]
    fn json_round_trip() {
        let v = Value::list(vec![
            Value::Nil,
            Value::Int(-3),
            Value::set(vec![Value::Int(2), Value::Int(1)]),
            Value::map(vec![
                (Value::Int(0), Value::Int(10)),
                (Value::Int(1), Value::Int(90)),
            ]),
            Value::map(vec![(Value::str("a"), Value::Bool(true))]),
        ]);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(
            json,
            r##"[null,-3,{"#set":[1,2]},{"#map":[[0,10],[1,90]]},{"a":true}]"##
        );
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
    }
}
