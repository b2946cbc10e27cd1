//! Run plugin functions natively, in unit tests, through the same batch
//! encoding the host uses.
//!
//! Each helper encodes the records as an input batch (offsets from 0),
//! runs the kind's [`process`] function, decodes the output
//! and panics with a message if anything is malformed. Use them in a
//! plugin's `#[cfg(test)]` module and run `cargo test` with the normal
//! toolchain; the host's own tests load the built `.wasm` instead.
//!
//! ```
//! use runnel_plugin::{testing, OwnedRecord, Record};
//!
//! fn keep_long(record: &Record) -> bool {
//!     record.value().is_some_and(|v| v.len() > 3)
//! }
//!
//! let records = [
//!     OwnedRecord::new().with_value("tiny"),
//!     OwnedRecord::new().with_value("no"),
//! ];
//! assert_eq!(testing::run_filter(&records, keep_long), vec![0]);
//! ```

use std::collections::BTreeMap;
use std::vec::Vec;

use crate::process;
use crate::wire::{read_batch, read_indices, read_states, write_states, BatchWriter, StateEntry};
use crate::{OwnedRecord, Record};

/// Encodes `records` as an input batch; record `i` gets offset
/// `first_offset + i`.
pub fn input_batch(first_offset: i64, records: &[OwnedRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = BatchWriter::new(&mut out);
    for (i, record) in records.iter().enumerate() {
        writer
            .push_input(first_offset + i as i64, record)
            .unwrap_or_else(|e| panic!("cannot encode input record {i}: {e}"));
    }
    writer.finish();
    out
}

/// Runs a filter; returns the kept indices.
pub fn run_filter<F>(records: &[OwnedRecord], keep: F) -> Vec<u32>
where
    F: FnMut(&Record<'_>) -> bool,
{
    let mut out = Vec::new();
    process::filter(&input_batch(0, records), &mut out, keep)
        .unwrap_or_else(|e| panic!("filter failed: {e}"));
    read_indices(&out).unwrap_or_else(|e| panic!("invalid filter output: {e}"))
}

/// Runs a map; returns its records.
pub fn run_map<F>(records: &[OwnedRecord], f: F) -> Vec<OwnedRecord>
where
    F: FnMut(&Record<'_>) -> OwnedRecord,
{
    let mut out = Vec::new();
    process::map(&input_batch(0, records), &mut out, f)
        .unwrap_or_else(|e| panic!("map failed: {e}"));
    decode(&out).into_iter().map(|(_, r)| r).collect()
}

/// Runs a filter-map; returns `(source_index, record)` pairs.
pub fn run_filter_map<F>(records: &[OwnedRecord], f: F) -> Vec<(u32, OwnedRecord)>
where
    F: FnMut(&Record<'_>) -> Option<OwnedRecord>,
{
    let mut out = Vec::new();
    process::filter_map(&input_batch(0, records), &mut out, f)
        .unwrap_or_else(|e| panic!("filter-map failed: {e}"));
    decode(&out)
}

/// Runs a flat-map; returns `(source_index, record)` pairs.
pub fn run_flat_map<F, I>(records: &[OwnedRecord], f: F) -> Vec<(u32, OwnedRecord)>
where
    F: FnMut(&Record<'_>) -> I,
    I: IntoIterator<Item = OwnedRecord>,
{
    let mut out = Vec::new();
    process::flat_map(&input_batch(0, records), &mut out, f)
        .unwrap_or_else(|e| panic!("flat-map failed: {e}"));
    decode(&out)
}

/// Runs an aggregate the way the host does: passes the state of every
/// distinct key of `records` from `states`, then applies the returned
/// states to it (a missing state deletes the key). Returns the emitted
/// `(source_index, record)` pairs.
pub fn run_aggregate<F, I>(
    records: &[OwnedRecord],
    states: &mut BTreeMap<Option<Vec<u8>>, Vec<u8>>,
    f: F,
) -> Vec<(u32, OwnedRecord)>
where
    F: FnMut(&Record<'_>, &mut Option<Vec<u8>>) -> I,
    I: IntoIterator<Item = OwnedRecord>,
{
    let mut keys: Vec<Option<&[u8]>> = Vec::new();
    for record in records {
        let key = record.key.as_deref();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut input = input_batch(0, records);
    write_states(
        &mut input,
        keys.iter().map(|key| StateEntry {
            key: *key,
            state: states.get(&key.map(<[u8]>::to_vec)).map(Vec::as_slice),
        }),
    )
    .unwrap_or_else(|e| panic!("cannot encode states: {e}"));

    let mut out = Vec::new();
    process::aggregate(&input, &mut out, f).unwrap_or_else(|e| panic!("aggregate failed: {e}"));
    let (entries, rest) = read_states(&out).unwrap_or_else(|e| panic!("invalid states: {e}"));
    for entry in entries {
        let key = entry.key.map(<[u8]>::to_vec);
        match entry.state {
            Some(state) => states.insert(key, state.to_vec()),
            None => states.remove(&key),
        };
    }
    decode(rest)
}

/// Decodes an output record batch into `(source_index, record)` pairs.
pub fn decode(batch: &[u8]) -> Vec<(u32, OwnedRecord)> {
    let (records, rest) = read_batch(batch).unwrap_or_else(|e| panic!("invalid output batch: {e}"));
    assert!(
        rest.is_empty(),
        "{} bytes after the output batch",
        rest.len()
    );
    records
        .into_iter()
        .map(|r| (r.source_index(), r.into_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_aggregate_keeps_states_across_calls() {
        let count = |_: &Record<'_>, state: &mut Option<Vec<u8>>| {
            let n = state.as_ref().map_or(0, |s| s[0]) + 1;
            *state = (n < 3).then(|| vec![n]);
            [OwnedRecord::new().with_value(vec![n])]
        };
        let records = [
            OwnedRecord::new().with_key("a"),
            OwnedRecord::new().with_key("a"),
            OwnedRecord::new(),
        ];
        let mut states = BTreeMap::new();
        let emitted = run_aggregate(&records, &mut states, count);
        assert_eq!(
            emitted
                .iter()
                .map(|(i, r)| (*i, r.value.clone().unwrap()))
                .collect::<Vec<_>>(),
            vec![(0, vec![1]), (1, vec![2]), (2, vec![1])]
        );
        assert_eq!(states.get(&Some(b"a".to_vec())), Some(&vec![2]));
        assert_eq!(states.get(&None), Some(&vec![1]));

        // The third record for "a" deletes its state.
        run_aggregate(&records[..1], &mut states, count);
        assert_eq!(states.get(&Some(b"a".to_vec())), None);
    }
}
