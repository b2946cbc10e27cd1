//! `running-count`: an aggregate that counts records per key.
//!
//! State per key: the count so far, a `u64` little-endian (8 bytes). For
//! each input record it emits one record with the same key (and timestamp)
//! whose value is the key's new count as a decimal string: `a, b, a` emits
//! `a→1, b→1, a→2`. The null key is counted like any other key. No
//! configuration.
//!
//! A state that is not 8 bytes long fails the batch rather than restarting
//! the count silently.

use runnel_plugin::{export_aggregate, fail, OwnedRecord, Record};

fn count(record: &Record, state: &mut Option<Vec<u8>>) -> Option<OwnedRecord> {
    let previous = match state.as_deref() {
        None => 0,
        Some(bytes) => match <[u8; 8]>::try_from(bytes) {
            Ok(le) => u64::from_le_bytes(le),
            Err(_) => fail!(
                "state of key {:?} is {} bytes, not an 8-byte count",
                record.key_str().unwrap_or("<binary or null>"),
                bytes.len()
            ),
        },
    };
    let count = previous + 1;
    *state = Some(count.to_le_bytes().to_vec());
    let mut emitted = OwnedRecord::new()
        .with_value(count.to_string())
        .with_timestamp(record.timestamp());
    emitted.key = record.key().map(<[u8]>::to_vec);
    Some(emitted)
}

export_aggregate!(count);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use runnel_plugin::{testing, OwnedRecord};

    fn keyed(key: &str) -> OwnedRecord {
        OwnedRecord::new().with_key(key).with_value("x")
    }

    #[test]
    fn counts_per_key_across_batches() {
        let mut states = BTreeMap::new();
        let first = testing::run_aggregate(
            &[keyed("a"), keyed("b"), keyed("a")],
            &mut states,
            super::count,
        );
        let values: Vec<(&[u8], &[u8])> = first
            .iter()
            .map(|(_, r)| (r.key.as_deref().unwrap(), r.value.as_deref().unwrap()))
            .collect();
        assert_eq!(
            values,
            vec![(&b"a"[..], &b"1"[..]), (b"b", b"1"), (b"a", b"2")]
        );
        let second = testing::run_aggregate(&[keyed("a")], &mut states, super::count);
        assert_eq!(second[0].1.value.as_deref(), Some(&b"3"[..]));
        assert_eq!(states[&Some(b"a".to_vec())], 3u64.to_le_bytes());
    }
}
