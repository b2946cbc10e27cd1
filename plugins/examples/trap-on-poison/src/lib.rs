//! `trap-on-poison`: a filter that keeps every record, except that a record
//! whose value is exactly `poison` makes it panic.
//!
//! Exists for the host's tests of traps: the panic message (naming the
//! offset) is logged through `runnel_log` at error level by the SDK's panic
//! hook, then the abort traps.

use runnel_plugin::{export_filter, Record};

fn keep_unless_poison(record: &Record) -> bool {
    if record.value() == Some(b"poison") {
        panic!("poison record at offset {}", record.offset());
    }
    true
}

export_filter!(keep_unless_poison);
