//! The primitives of the internal topics' record formats (Kafka's own:
//! `__consumer_offsets` in `crate::group::records`, `__transaction_state`
//! in `crate::txn::records`), and the partition a key lives in.
//!
//! All integers are big-endian; `string` is an i16 length then UTF-8 bytes
//! (-1 for null); `bytes` is an i32 length then the bytes.

use bytes::{BufMut, Bytes, BytesMut};

/// Java's `String.hashCode`, over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The partition of an internal topic that holds `key`'s records (a group
/// id, a transactional id): `abs(javaHash(key)) % partitions`, the same
/// partition Kafka would pick.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    // Kafka's Utils.abs: i32::MIN maps to 0 rather than overflowing.
    let h = java_string_hash(key);
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// Writes a `string` (at most `i16::MAX` bytes, cut at a character
/// boundary), or null.
pub fn put_string(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => {
            let mut len = s.len().min(i16::MAX as usize);
            while !s.is_char_boundary(len) {
                len -= 1;
            }
            buf.put_i16(len as i16);
            buf.put_slice(&s.as_bytes()[..len]);
        }
        None => buf.put_i16(-1),
    }
}

/// Writes `bytes`.
pub fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

/// Reads the primitives from a record's key or value; every read is
/// bounds-checked (`None` past the end or for a negative length where
/// none is allowed).
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| b[0] as i8)
    }
    pub fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    pub fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
    }
    pub fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let raw = self.take(len as usize)?;
        Some(Some(String::from_utf8(raw.to_vec()).ok()?))
    }
    pub fn string(&mut self) -> Option<String> {
        self.nullable_string()?
    }
    pub fn bytes(&mut self) -> Option<Bytes> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Bytes::new());
        }
        self.take(len as usize).map(Bytes::copy_from_slice)
    }
    /// An array's element count: non-negative and no more elements than
    /// bytes left (each takes at least one), so a hostile count cannot
    /// make a large allocation. -1 (a null array) reads as 0.
    pub fn count(&mut self) -> Option<usize> {
        let n = self.i32()?;
        if n == -1 {
            return Some(0);
        }
        let n = usize::try_from(n).ok()?;
        (n <= self.0.len()).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_on_the_partition_kafka_would_choose() {
        // Values from Java: "".hashCode() == 0, "a".hashCode() == 97.
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
        assert_eq!(partition_for("ab", 50), (97 * 31 + 98) % 50);
        for g in ["x", "console-consumer-1234", "payments"] {
            assert!((0..50).contains(&partition_for(g, 50)));
        }
    }

    #[test]
    fn strings_are_cut_at_a_character_boundary_and_read_back() {
        let long = "é".repeat(20_000);
        let mut buf = BytesMut::new();
        put_string(&mut buf, Some(&long));
        put_string(&mut buf, None);
        let mut r = Reader(&buf);
        let read = r.string().unwrap();
        assert!(read.len() <= i16::MAX as usize && long.starts_with(&read));
        assert_eq!(r.nullable_string(), Some(None));
        assert_eq!(
            Reader(&[0, 0, 0, 9, 1]).count(),
            None,
            "more elements than bytes"
        );
    }
}
