//! `fail-on-poison`: a filter that keeps every record, except that a record
//! whose value is exactly `poison` fails the batch through `runnel_fail`.
//!
//! Exists for the host's tests of deliberate failures (as opposed to
//! traps): the message names the record's offset.

use runnel_plugin::{export_filter, fail, Record};

fn keep_unless_poison(record: &Record) -> bool {
    if record.value() == Some(b"poison") {
        fail!("poison record at offset {}", record.offset());
    }
    true
}

export_filter!(keep_unless_poison);
