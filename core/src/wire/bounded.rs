//! Length-bounded wrappers for every variable-sized field on the wire.
//!
//! Contract: a [`BoundedString<MAX>`] holds at most `MAX` bytes of UTF-8, a [`BoundedBytes<MAX>`]
//! at most `MAX` bytes, a [`BoundedVec<T, MAX>`] at most `MAX` elements. The checked constructors
//! and deserialisation are the only ways in. Deserialisation compares the length the peer declared
//! with the bound *before* copying or allocating, so a peer cannot make this side build a value
//! larger than the bound; a violation becomes [`WireError::TooLong`] out of
//! [`decode`](super::decode).
//!
//! On the wire each is exactly its unbounded counterpart (`String`, a serde byte string, `Vec<T>`):
//! postcard stores a varint length and then the bytes or elements.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::WireError;
use super::violation::{self, Violation};

/// Preallocation cap for a decoded list, in bytes. A declared length within the bound still only
/// reserves this much up front; the rest grows as elements actually arrive, so a short frame that
/// claims a long list cannot make us reserve memory for elements it does not contain.
const MAX_PREALLOC_BYTES: usize = 64 * 1024;

fn check_local(what: &'static str, max: usize, got: usize) -> Result<(), WireError> {
    if got > max {
        return Err(WireError::ValueTooLong { what, max, got });
    }
    Ok(())
}

fn check_peer<E: de::Error>(what: &'static str, max: usize, got: usize) -> Result<(), E> {
    if got > max {
        return Err(violation::reject(Violation::TooLong { what, max, got }));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

/// A UTF-8 string of at most `MAX` bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundedString<const MAX: usize>(String);

impl<const MAX: usize> BoundedString<MAX> {
    /// The bound, in bytes.
    pub const MAX_BYTES: usize = MAX;

    /// Wraps `value` if it is at most `MAX` bytes long, else [`WireError::ValueTooLong`].
    pub fn new(value: impl Into<String>) -> Result<Self, WireError> {
        let value = value.into();
        check_local("string", MAX, value.len())?;
        Ok(Self(value))
    }

    /// The longest prefix of `text` that fits, cut at a character boundary. For free-form text
    /// (error messages, reasons) where a shortened value beats no value.
    #[must_use]
    pub fn truncating(text: &str) -> Self {
        let mut end = text.len().min(MAX);
        // Index 0 is always a boundary, so this stops.
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        Self(text.get(..end).unwrap_or_default().to_owned())
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, unwrapped.
    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the string is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const MAX: usize> Deref for BoundedString<MAX> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> AsRef<str> for BoundedString<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> fmt::Display for BoundedString<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> PartialEq<str> for BoundedString<MAX> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl<const MAX: usize> PartialEq<&str> for BoundedString<MAX> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<const MAX: usize> TryFrom<String> for BoundedString<MAX> {
    type Error = WireError;

    fn try_from(value: String) -> Result<Self, WireError> {
        Self::new(value)
    }
}

impl<const MAX: usize> TryFrom<&str> for BoundedString<MAX> {
    type Error = WireError;

    fn try_from(value: &str) -> Result<Self, WireError> {
        Self::new(value)
    }
}

impl<const MAX: usize> From<BoundedString<MAX>> for String {
    fn from(value: BoundedString<MAX>) -> String {
        value.0
    }
}

impl<const MAX: usize> Serialize for BoundedString<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedString<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // postcard hands `visit_str` a view of the input: the length is checked before the copy.
        deserializer.deserialize_string(StringVisitor::<MAX>)
    }
}

struct StringVisitor<const MAX: usize>;

impl<const MAX: usize> Visitor<'_> for StringVisitor<MAX> {
    type Value = BoundedString<MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {MAX} bytes")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        check_peer("string", MAX, value.len())?;
        Ok(BoundedString(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Self::Value, E> {
        check_peer("string", MAX, value.len())?;
        Ok(BoundedString(value))
    }
}

// ---------------------------------------------------------------------------------------------

/// At most `MAX` bytes, shared without copying (`bytes::Bytes`).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundedBytes<const MAX: usize>(Bytes);

impl<const MAX: usize> BoundedBytes<MAX> {
    /// The bound, in bytes.
    pub const MAX_BYTES: usize = MAX;

    /// Wraps `value` if it is at most `MAX` bytes long, else [`WireError::ValueTooLong`].
    pub fn new(value: impl Into<Bytes>) -> Result<Self, WireError> {
        let value = value.into();
        check_local("bytes", MAX, value.len())?;
        Ok(Self(value))
    }

    /// Copies `value` if it is at most `MAX` bytes long (checked before copying).
    pub fn copy_from_slice(value: &[u8]) -> Result<Self, WireError> {
        check_local("bytes", MAX, value.len())?;
        Ok(Self(Bytes::copy_from_slice(value)))
    }

    /// The bytes as a cheaply clonable `Bytes`.
    #[must_use]
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The bytes, unwrapped.
    #[must_use]
    pub fn into_inner(self) -> Bytes {
        self.0
    }

    /// Length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const MAX: usize> Deref for BoundedBytes<MAX> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl<const MAX: usize> AsRef<[u8]> for BoundedBytes<MAX> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Shows the length and the first bytes only: bodies and blocks run to megabytes.
impl<const MAX: usize> fmt::Debug for BoundedBytes<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 16;
        let head = self.0.get(..SHOWN).unwrap_or(&self.0);
        let more = if self.0.len() > SHOWN { "…" } else { "" };
        write!(
            f,
            "BoundedBytes[{}]({}{more})",
            self.0.len(),
            hex::encode(head)
        )
    }
}

impl<const MAX: usize> TryFrom<Vec<u8>> for BoundedBytes<MAX> {
    type Error = WireError;

    fn try_from(value: Vec<u8>) -> Result<Self, WireError> {
        Self::new(value)
    }
}

impl<const MAX: usize> TryFrom<Bytes> for BoundedBytes<MAX> {
    type Error = WireError;

    fn try_from(value: Bytes) -> Result<Self, WireError> {
        Self::new(value)
    }
}

impl<const MAX: usize> From<BoundedBytes<MAX>> for Bytes {
    fn from(value: BoundedBytes<MAX>) -> Bytes {
        value.0
    }
}

impl<const MAX: usize> Serialize for BoundedBytes<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A byte string, not a sequence of u8: postcard stores varint length + raw bytes.
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for BoundedBytes<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor::<MAX>)
    }
}

struct BytesVisitor<const MAX: usize>;

impl<'de, const MAX: usize> Visitor<'de> for BytesVisitor<MAX> {
    type Value = BoundedBytes<MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a byte string of at most {MAX} bytes")
    }

    fn visit_bytes<E: de::Error>(self, value: &[u8]) -> Result<Self::Value, E> {
        check_peer("bytes", MAX, value.len())?;
        Ok(BoundedBytes(Bytes::copy_from_slice(value)))
    }

    fn visit_byte_buf<E: de::Error>(self, value: Vec<u8>) -> Result<Self::Value, E> {
        check_peer("bytes", MAX, value.len())?;
        Ok(BoundedBytes(Bytes::from(value)))
    }

    // Self-describing formats without a byte-string type (JSON) send an array of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(
            seq.size_hint()
                .unwrap_or(0)
                .min(MAX)
                .min(MAX_PREALLOC_BYTES),
        );
        while let Some(byte) = seq.next_element::<u8>()? {
            check_peer("bytes", MAX, out.len().saturating_add(1))?;
            out.push(byte);
        }
        Ok(BoundedBytes(Bytes::from(out)))
    }
}

// ---------------------------------------------------------------------------------------------

/// At most `MAX` elements.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BoundedVec<T, const MAX: usize>(Vec<T>);

impl<T, const MAX: usize> BoundedVec<T, MAX> {
    /// The bound, in elements.
    pub const MAX_LEN: usize = MAX;

    /// Wraps `items` if there are at most `MAX` of them, else [`WireError::ValueTooLong`].
    pub fn new(items: Vec<T>) -> Result<Self, WireError> {
        check_local("list", MAX, items.len())?;
        Ok(Self(items))
    }

    /// An empty list.
    #[must_use]
    pub fn empty() -> Self {
        Self(Vec::new())
    }

    /// Appends `item`, or returns [`WireError::ValueTooLong`] (and drops `item`) if the list is
    /// full.
    pub fn try_push(&mut self, item: T) -> Result<(), WireError> {
        check_local("list", MAX, self.0.len().saturating_add(1))?;
        self.0.push(item);
        Ok(())
    }

    /// The elements.
    #[must_use]
    pub fn as_slice(&self) -> &[T] {
        &self.0
    }

    /// The elements, unwrapped.
    #[must_use]
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the elements in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.0.iter()
    }
}

impl<T, const MAX: usize> Default for BoundedVec<T, MAX> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<T, const MAX: usize> Deref for BoundedVec<T, MAX> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const MAX: usize> AsRef<[T]> for BoundedVec<T, MAX> {
    fn as_ref(&self) -> &[T] {
        &self.0
    }
}

impl<T, const MAX: usize> TryFrom<Vec<T>> for BoundedVec<T, MAX> {
    type Error = WireError;

    fn try_from(items: Vec<T>) -> Result<Self, WireError> {
        Self::new(items)
    }
}

impl<T, const MAX: usize> From<BoundedVec<T, MAX>> for Vec<T> {
    fn from(value: BoundedVec<T, MAX>) -> Vec<T> {
        value.0
    }
}

impl<T, const MAX: usize> IntoIterator for BoundedVec<T, MAX> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a, T, const MAX: usize> IntoIterator for &'a BoundedVec<T, MAX> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Serialize, const MAX: usize> Serialize for BoundedVec<T, MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de, T: Deserialize<'de>, const MAX: usize> Deserialize<'de> for BoundedVec<T, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(VecVisitor::<T, MAX>(PhantomData))
    }
}

struct VecVisitor<T, const MAX: usize>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const MAX: usize> Visitor<'de> for VecVisitor<T, MAX> {
    type Value = BoundedVec<T, MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {MAX} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // postcard declares the length up front (it reports no hint when the declared length
        // exceeds the remaining input, which then fails as truncated); reject before reading.
        let declared = seq.size_hint().unwrap_or(0);
        check_peer("list", MAX, declared)?;
        let prealloc = MAX_PREALLOC_BYTES / size_of::<T>().max(1);
        let mut items = Vec::with_capacity(declared.min(prealloc));
        while let Some(item) = seq.next_element()? {
            check_peer("list", MAX, items.len().saturating_add(1))?;
            items.push(item);
        }
        Ok(BoundedVec(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_string_new_accepts_the_bound_and_rejects_one_more_byte() {
        assert_eq!(BoundedString::<3>::new("abc").unwrap().as_str(), "abc");
        assert_eq!(
            BoundedString::<3>::new("abcd"),
            Err(WireError::ValueTooLong {
                what: "string",
                max: 3,
                got: 4
            })
        );
    }

    #[test]
    fn bounded_string_bound_counts_utf8_bytes_not_chars() {
        // "é" is two bytes.
        assert!(BoundedString::<2>::new("é").is_ok());
        assert!(BoundedString::<2>::new("éa").is_err());
    }

    #[test]
    fn truncating_cuts_at_a_char_boundary_within_the_bound() {
        assert_eq!(BoundedString::<3>::truncating("aéb").as_str(), "aé");
        assert_eq!(BoundedString::<2>::truncating("aéb").as_str(), "a");
        assert_eq!(BoundedString::<0>::truncating("é").as_str(), "");
        assert_eq!(BoundedString::<9>::truncating("short").as_str(), "short");
    }

    #[test]
    fn bounded_bytes_new_accepts_the_bound_and_rejects_one_more_byte() {
        assert_eq!(
            BoundedBytes::<2>::new(vec![1, 2]).unwrap().as_ref(),
            &[1, 2]
        );
        assert_eq!(
            BoundedBytes::<2>::copy_from_slice(&[1, 2, 3]),
            Err(WireError::ValueTooLong {
                what: "bytes",
                max: 2,
                got: 3
            })
        );
    }

    #[test]
    fn bounded_vec_try_push_stops_at_the_bound() {
        let mut list = BoundedVec::<u8, 2>::empty();
        list.try_push(1).unwrap();
        list.try_push(2).unwrap();
        assert_eq!(
            list.try_push(3),
            Err(WireError::ValueTooLong {
                what: "list",
                max: 2,
                got: 3
            })
        );
        assert_eq!(list.as_slice(), &[1, 2]);
        assert!(BoundedVec::<u8, 2>::new(vec![1, 2, 3]).is_err());
    }

    #[test]
    fn bounded_bytes_are_a_postcard_byte_string() {
        let value = BoundedBytes::<8>::new(vec![7, 8, 9]).unwrap();
        assert_eq!(postcard::to_allocvec(&value).unwrap(), vec![3, 7, 8, 9]);
    }

    #[test]
    fn bounded_bytes_debug_shows_length_and_head_only() {
        let value = BoundedBytes::<64>::new(vec![0xab; 40]).unwrap();
        let shown = format!("{value:?}");
        assert!(shown.starts_with("BoundedBytes[40](abab"), "{shown}");
        assert!(shown.ends_with("…)"), "{shown}");
    }

    #[test]
    fn bounds_are_enforced_for_self_describing_formats_too() {
        let long: Result<BoundedString<2>, _> = serde_json::from_str("\"abc\"");
        assert!(long.is_err());
        let list: Result<BoundedVec<u8, 2>, _> = serde_json::from_str("[1,2,3]");
        assert!(list.is_err());
        let bytes: Result<BoundedBytes<2>, _> = serde_json::from_str("[1,2,3]");
        assert!(bytes.is_err());
        let ok: BoundedBytes<2> = serde_json::from_str("[1,2]").unwrap();
        assert_eq!(ok.as_ref(), &[1, 2]);
    }
}
