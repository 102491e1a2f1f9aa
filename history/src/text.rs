//! A string in one machine word, for the strings and keywords inside values.
//!
//! A history of a million transactions holds millions of short strings
//! (`"append"`, `"r"`, key names) and values are the bulk of its memory: a
//! 24-byte string makes every value 32 bytes, this one lets a value be 16.
//! Strings of up to 7 bytes live inline; longer ones are boxed.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::mem::ManuallyDrop;
use std::ops::Deref;

const INLINE_MAX: usize = 7;
/// The byte holding the inline tag and length: the pointer's lowest byte, so
/// that a boxed string (whose pointer is 8-aligned) never has the tag bit set.
const TAG: usize = if cfg!(target_endian = "little") { 0 } else { 7 };
const DATA: usize = if TAG == 0 { 1 } else { 0 };

#[repr(C)]
union Repr {
    /// `Box<str>` is two words; boxing it again makes the pointer one.
    heap: ManuallyDrop<Box<Box<str>>>,
    /// `inline[TAG]` is `len << 1 | 1`; the bytes follow.
    inline: [u8; 8],
}

pub struct Text(Repr);

// One word, as promised above.
const _: () = assert!(std::mem::size_of::<Text>() == 8);

impl Text {
    pub fn new(s: &str) -> Text {
        if s.len() <= INLINE_MAX {
            let mut bytes = [0u8; 8];
            bytes[TAG] = ((s.len() as u8) << 1) | 1;
            bytes[DATA..DATA + s.len()].copy_from_slice(s.as_bytes());
            Text(Repr { inline: bytes })
        } else {
            Text(Repr {
                heap: ManuallyDrop::new(Box::new(Box::from(s))),
            })
        }
    }

    fn is_inline(&self) -> bool {
        // SAFETY: every bit pattern is a valid [u8; 8]; a boxed pointer is
        // 8-aligned, so its tag bit is 0.
        unsafe { self.0.inline[TAG] & 1 == 1 }
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: the tag says which field was written; inline bytes were
        // copied from a &str, so they are UTF-8.
        unsafe {
            if self.is_inline() {
                let len = (self.0.inline[TAG] >> 1) as usize;
                std::str::from_utf8_unchecked(&self.0.inline[DATA..DATA + len])
            } else {
                &self.0.heap
            }
        }
    }
}

impl Drop for Text {
    fn drop(&mut self) {
        if !self.is_inline() {
            // SAFETY: not inline, so `heap` holds the box, dropped once here.
            unsafe { ManuallyDrop::drop(&mut self.0.heap) }
        }
    }
}

impl Clone for Text {
    fn clone(&self) -> Text {
        if self.is_inline() {
            // SAFETY: inline, so the bytes are all there is.
            Text(Repr {
                inline: unsafe { self.0.inline },
            })
        } else {
            Text::new(self.as_str())
        }
    }
}

impl Default for Text {
    fn default() -> Text {
        Text::new("")
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Text {}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Text) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Text {
    fn cmp(&self, other: &Text) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Text {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As str hashes, so that Borrow<str> lookups work.
        self.as_str().hash(state)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text::new(s)
    }
}
impl From<String> for Text {
    fn from(s: String) -> Text {
        Text::new(&s)
    }
}
impl From<&String> for Text {
    fn from(s: &String) -> Text {
        Text::new(s)
    }
}
impl From<smol_str::SmolStr> for Text {
    fn from(s: smol_str::SmolStr) -> Text {
        Text::new(&s)
    }
}

impl serde::Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, s: &str) -> Result<Text, E> {
                Ok(Text::new(s))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_strings_round_trip() {
        for s in [
            "",
            "r",
            "append",
            "seven77",
            "eight888",
            "a much longer string, with ünïcödé",
        ] {
            let t = Text::new(s);
            assert_eq!(t.as_str(), s);
            assert_eq!(t.is_inline(), s.len() <= INLINE_MAX, "{s}");
            let c = t.clone();
            drop(t);
            assert_eq!(c.as_str(), s);
        }
    }

    #[test]
    fn order_and_hash_follow_str() {
        use std::collections::hash_map::DefaultHasher;
        let h = |x: &dyn Fn(&mut DefaultHasher)| {
            let mut s = DefaultHasher::new();
            x(&mut s);
            s.finish()
        };
        for (a, b) in [("a", "b"), ("abcdefgh", "abc"), ("zz", "aaaaaaaaaaaa")] {
            assert_eq!(Text::new(a).cmp(&Text::new(b)), a.cmp(b));
            let t = Text::new(a);
            assert_eq!(h(&|s| t.hash(s)), h(&|s| a.hash(s)));
        }
    }
}
