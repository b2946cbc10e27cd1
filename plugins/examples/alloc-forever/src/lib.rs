//! `alloc-forever`: a filter that allocates memory without bound.
//!
//! Exists for the host's tests of the linear-memory cap: the first batch
//! allocates (and touches) 1 MiB chunks until an allocation fails, which
//! aborts (a trap) once `memory.grow` is refused.

use runnel_plugin::{export_filter, Record};

const CHUNK_BYTES: usize = 1 << 20;

fn hoard(_record: &Record) -> bool {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; CHUNK_BYTES];
        // Touch the chunk so it cannot be optimized away.
        chunk[CHUNK_BYTES - 1] = 1;
        chunks.push(std::hint::black_box(chunk));
    }
}

export_filter!(hoard);
