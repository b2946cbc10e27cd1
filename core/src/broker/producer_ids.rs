//! Producer ids for idempotent producers (InitProducerId).
//!
//! Ids come in blocks from the metadata quorum
//! (`controller::decisions::allocate_producer_ids`): every block is a
//! record of the metadata log, so no two brokers — and no two incarnations
//! of one broker — ever hand out the same id. A broker asks for a new block
//! when its current one is used up; a restart starts with a new block and
//! never reuses an id a producer may still hold.
//!
//! An older version kept the end of its current block in the file
//! `producer-id-block`; [`legacy_block_end`] reads it so the quorum can
//! continue after it (see `Metadata::migrate_producer_ids`).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use crate::controller::decisions::ProducerIdBlock;
use crate::error::BrokerError;

const LEGACY_FILE_NAME: &str = "producer-id-block";

/// The path of an older version's producer id block file.
pub fn legacy_path(data_dir: &Path) -> PathBuf {
    data_dir.join(LEGACY_FILE_NAME)
}

/// The end of the block an older version stored in `producer-id-block`,
/// if the file is there. A damaged file yields an end derived from the
/// clock (ms x 1000): ids handed out by the clock-derived fallback of
/// older versions only grew, so this stays beyond them.
pub fn legacy_block_end(data_dir: &Path) -> io::Result<Option<i64>> {
    let path = legacy_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => {
                let fallback = crate::util::now_ms().saturating_mul(1000);
                tracing::warn!(path = %path.display(), fallback, "producer id block file is damaged; continuing from a clock-derived id");
                Ok(Some(fallback))
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Hands out ids of the block it holds, asking for a new block when it is
/// used up.
#[derive(Default)]
pub struct ProducerIdAllocator {
    /// (next id, end of the block).
    block: tokio::sync::Mutex<(i64, i64)>,
}

impl ProducerIdAllocator {
    pub fn new() -> ProducerIdAllocator {
        ProducerIdAllocator::default()
    }

    /// The next unused producer id; `next_block` is asked for a new block
    /// when the current one is used up (and before the first id).
    pub async fn allocate<F, Fut>(&self, next_block: F) -> Result<i64, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ProducerIdBlock, BrokerError>>,
    {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let new = next_block().await?;
            *block = (
                new.first_producer_id,
                new.first_producer_id.saturating_add(new.size),
            );
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(first: i64, size: i64) -> ProducerIdBlock {
        ProducerIdBlock {
            broker_id: 1,
            first_producer_id: first,
            size,
        }
    }

    #[tokio::test]
    async fn ids_come_from_the_block_and_a_used_up_block_is_replaced() {
        let allocator = ProducerIdAllocator::new();
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let mut ids = Vec::new();
        for _ in 0..5 {
            let id = allocator
                .allocate(|| async {
                    let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as i64;
                    Ok(block(1000 * (n + 1), 2))
                })
                .await
                .unwrap();
            ids.push(id);
        }
        assert_eq!(ids, vec![1000, 1001, 2000, 2001, 3000]);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_block_is_an_error_and_the_next_call_asks_again() {
        let allocator = ProducerIdAllocator::new();
        let err = allocator
            .allocate(|| async { Err(BrokerError::MetadataTimeout("no quorum".into())) })
            .await
            .unwrap_err();
        assert!(matches!(err, BrokerError::MetadataTimeout(_)));
        let id = allocator
            .allocate(|| async { Ok(block(7000, 10)) })
            .await
            .unwrap();
        assert_eq!(id, 7000);
    }

    #[test]
    fn an_older_versions_block_file_is_read_and_a_damaged_one_is_far_beyond() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_block_end(dir.path()).unwrap(), None);
        std::fs::write(legacy_path(dir.path()), "3000\n").unwrap();
        assert_eq!(legacy_block_end(dir.path()).unwrap(), Some(3000));
        std::fs::write(legacy_path(dir.path()), "garbage").unwrap();
        assert!(legacy_block_end(dir.path()).unwrap().unwrap() > 1_000_000_000_000);
    }
}
