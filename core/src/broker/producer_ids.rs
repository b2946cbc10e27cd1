//! Producer ids for idempotent producers (InitProducerId).
//!
//! Ids are handed out from blocks: the end of the current block is stored
//! in `producer-id-block` (one decimal number) before any id of the block is
//! used, so a restart — even after a crash — continues after the block and
//! never reuses an id that a producer may still hold.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::storage::checkpoint::write_atomically;

const BLOCK_SIZE: i64 = 1000;
const FILE_NAME: &str = "producer-id-block";

pub struct ProducerIdAllocator {
    path: PathBuf,
    state: Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn open(data_dir: &Path) -> io::Result<ProducerIdAllocator> {
        let path = data_dir.join(FILE_NAME);
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => match text.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => {
                    // Written atomically, so only outside damage gets here.
                    // Continue far beyond any id handed out so far: ids
                    // derived from the clock (ms x 1000) only grow.
                    let fallback = crate::util::now_ms().saturating_mul(1000);
                    tracing::warn!(path = %path.display(), fallback, "producer id block file is damaged; continuing from a clock-derived id");
                    fallback
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        Ok(ProducerIdAllocator {
            path,
            state: Mutex::new((start, start)),
        })
    }

    /// The next unused producer id.
    pub fn allocate(&self) -> io::Result<i64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (next, block_end) = *state;
        if next >= block_end {
            let new_end = next + BLOCK_SIZE;
            write_atomically(&self.path, new_end.to_string().as_bytes())?;
            *state = (next, new_end);
        }
        state.0 += 1;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIdAllocator::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(a);
        let b = ProducerIdAllocator::open(dir.path()).unwrap();
        let next = b.allocate().unwrap();
        assert!(
            next >= BLOCK_SIZE,
            "a restart skips the whole used block, got {next}"
        );
    }
}
