//! Response frames that reference record bytes instead of copying them.
//!
//! `kafka-protocol` encodes a `Bytes` field with `put_slice` on the output
//! buffer. [`FrameBuf`] is an output buffer that recognises slices it was
//! told about in advance (the record sets read from segment files) by
//! address and length, and keeps a reference to those `Bytes` instead of
//! copying them. The result is a [`ResponseFrame`]: a list of chunks written
//! with one vectored write. A 50 MB fetch response thus costs no 50 MB
//! allocation and no extra copy.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a separate iovec is not worth it.
const ZERO_COPY_MIN_BYTES: usize = 4096;

/// An encode buffer that shares registered `Bytes` instead of copying them.
#[derive(Default)]
pub struct FrameBuf {
    done: Vec<Bytes>,
    done_len: usize,
    current: BytesMut,
    shared: Vec<Bytes>,
}

impl FrameBuf {
    pub fn new() -> Self {
        FrameBuf {
            current: BytesMut::with_capacity(512),
            ..Default::default()
        }
    }

    /// Declares bytes that will be encoded by reference when they are put.
    pub fn register(&mut self, bytes: &Bytes) {
        if bytes.len() >= ZERO_COPY_MIN_BYTES {
            self.shared.push(bytes.clone());
        }
    }

    fn seal_current(&mut self) {
        if !self.current.is_empty() {
            let chunk = self.current.split().freeze();
            self.done_len += chunk.len();
            self.done.push(chunk);
        }
    }

    /// Copies everything into `current`; the slow path for the (unused by
    /// message encoders) case of patching bytes already sealed.
    fn flatten(&mut self) {
        let mut all = BytesMut::with_capacity(self.done_len + self.current.len());
        for chunk in self.done.drain(..) {
            all.extend_from_slice(&chunk);
        }
        all.extend_from_slice(&self.current);
        self.done_len = 0;
        self.current = all;
    }

    /// The finished frame, preceded by Kafka's 4-byte size prefix.
    pub fn into_frame(mut self) -> ResponseFrame {
        self.seal_current();
        let size = self.done_len as i32;
        let mut parts: VecDeque<Bytes> = self.done.into();
        parts.push_front(Bytes::copy_from_slice(&size.to_be_bytes()));
        ResponseFrame { parts }
    }
}

// SAFETY: `chunk_mut` and `advance_mut` delegate to `BytesMut`, which
// upholds the contract; `put_slice` only appends.
unsafe impl BufMut for FrameBuf {
    fn remaining_mut(&self) -> usize {
        usize::MAX - self.done_len - self.current.len()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: forwarded; the caller initialised `cnt` bytes of the
        // slice returned by `chunk_mut`, which came from `current`.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.current.capacity() == self.current.len() {
            self.current.reserve(512);
        }
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= ZERO_COPY_MIN_BYTES {
            let found = self
                .shared
                .iter()
                .position(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len());
            if let Some(i) = found {
                let bytes = self.shared.swap_remove(i);
                self.seal_current();
                self.done_len += bytes.len();
                self.done.push(bytes);
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for FrameBuf {
    fn offset(&self) -> usize {
        self.done_len + self.current.len()
    }

    fn seek(&mut self, offset: usize) {
        if offset < self.done_len {
            self.flatten();
        }
        self.current.resize(offset - self.done_len, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        if r.start < self.done_len {
            self.flatten();
        }
        let base = self.done_len;
        &mut self.current[r.start - base..r.end - base]
    }
}

/// An encoded response: chunks to write back to back.
#[derive(Debug, Default)]
pub struct ResponseFrame {
    parts: VecDeque<Bytes>,
}

impl ResponseFrame {
    pub fn from_bytes(bytes: Bytes) -> Self {
        ResponseFrame {
            parts: VecDeque::from([bytes]),
        }
    }

    /// Total length, including the size prefix.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All bytes in one buffer (tests and tools).
    pub fn to_bytes(&self) -> Bytes {
        let mut all = BytesMut::with_capacity(self.len());
        for p in &self.parts {
            all.extend_from_slice(p);
        }
        all.freeze()
    }
}

impl Buf for ResponseFrame {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        self.parts
            .iter()
            .find(|p| !p.is_empty())
            .map(|p| &p[..])
            .unwrap_or(&[])
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if cnt < front.len() {
                front.advance(cnt);
                return;
            }
            cnt -= front.len();
            self.parts.pop_front();
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for p in self.parts.iter().filter(|p| !p.is_empty()) {
            if n == dst.len() {
                break;
            }
            dst[n] = IoSlice::new(p);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Encodable;

    #[test]
    fn registered_records_are_shared_and_the_frame_matches_a_plain_encode() {
        let records = Bytes::from(vec![7u8; 100_000]);
        let mut response = FetchResponse::default();
        let mut topic = FetchableTopicResponse::default();
        let mut p = PartitionData::default();
        p.records = Some(records.clone());
        topic.partitions.push(p);
        response.responses.push(topic);

        let mut plain = BytesMut::new();
        plain.put_i32(0);
        response.encode(&mut plain, 12).unwrap();
        let size = (plain.len() - 4) as i32;
        plain[..4].copy_from_slice(&size.to_be_bytes());

        let mut buf = FrameBuf::new();
        buf.register(&records);
        response.encode(&mut buf, 12).unwrap();
        let frame = buf.into_frame();
        assert_eq!(frame.to_bytes(), plain.freeze());
        assert!(
            frame.parts.iter().any(|p| p.as_ptr() == records.as_ptr()),
            "the record bytes must be referenced, not copied"
        );
    }

    #[test]
    fn a_frame_drains_across_chunk_boundaries() {
        let mut frame = ResponseFrame {
            parts: VecDeque::from([Bytes::from_static(b"abc"), Bytes::from_static(b"defg")]),
        };
        assert_eq!(frame.remaining(), 7);
        frame.advance(4);
        assert_eq!(frame.chunk(), b"efg");
        frame.advance(3);
        assert_eq!(frame.remaining(), 0);
    }
}
