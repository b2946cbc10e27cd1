//! `spin-forever`: a filter that never returns from a batch.
//!
//! Exists for the host's tests of the per-batch deadline (epoch
//! interruption): every call spins until the host interrupts it.

use runnel_plugin::{export_filter, Record};

fn spin(record: &Record) -> bool {
    let mut turns: u64 = 0;
    loop {
        // black_box keeps the loop from being optimized into anything the
        // host could not interrupt-check; Rust loops may run forever.
        turns = std::hint::black_box(turns.wrapping_add(record.offset() as u64 | 1));
    }
}

export_filter!(spin);
