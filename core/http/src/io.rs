//! The socket as hyper sees it: [`GuardedIo`] notes whether a client sent
//! anything since its last answer, cuts a client that stops reading its
//! answer, and puts the JSON error body into the answers hyper writes on
//! its own.
//!
//! hyper answers a request head it cannot parse (400), whose target is
//! longer than it accepts (414) or that exceeds its header limits (431)
//! before any service sees the request, and those answers have no body.
//! Every error of Runnel's REST APIs is `{"error_code": N, "message":
//! "..."}`, so these are recognised on their way out and replaced by the
//! same status with that body. They are recognisable: hyper writes such an
//! answer as a head of its own (the first buffer of a write) with
//! `content-length: 0`, and [`crate::guard`] gives every error that passes
//! through a service a JSON body, so no other answer of status 400, 414 or
//! 431 has an empty body. hyper closes the connection after such an
//! answer; the replacement says `connection: close`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What happened on one connection, read after hyper is done with it.
#[derive(Default)]
pub(crate) struct ConnState {
    /// The client sent bytes after the last answer (a half-sent request
    /// rather than an idle keep-alive connection).
    pub read_since_write: AtomicBool,
    /// The status of an automatic answer of hyper that was replaced (0:
    /// none).
    pub automatic_answer: AtomicU16,
    /// The client did not read its answer in time.
    pub write_timed_out: AtomicBool,
}

/// Renders the JSON answer that replaces hyper's empty one for `status`.
pub(crate) type AnswerFn = dyn Fn(u16) -> Bytes + Send + Sync;

pub(crate) struct GuardedIo<T> {
    inner: T,
    state: Arc<ConnState>,
    answer: Arc<AnswerFn>,
    /// How long a write may make no progress.
    write_timeout: Duration,
    write_stall: Option<Pin<Box<Sleep>>>,
    /// The replacement answer and how much of it is written.
    replacement: Option<(Bytes, usize)>,
}

impl<T> GuardedIo<T> {
    pub fn new(
        inner: T,
        state: Arc<ConnState>,
        answer: Arc<AnswerFn>,
        write_timeout: Duration,
    ) -> Self {
        GuardedIo {
            inner,
            state,
            answer,
            write_timeout,
            write_stall: None,
            replacement: None,
        }
    }
}

/// The status of an answer hyper wrote on its own (a whole head with
/// `content-length: 0` and status 400, 414 or 431), if `head` is one.
pub(crate) fn automatic_answer(head: &[u8]) -> Option<u16> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        b"400 " => 400,
        b"414 " => 414,
        b"431 " => 431,
        _ => return None,
    };
    let whole_head = head.ends_with(b"\r\n\r\n");
    let empty = memchr::memmem::find(head, b"\r\ncontent-length: 0\r\n").is_some();
    (whole_head && empty).then_some(status)
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Reports a stalled write as an error once it made no progress for
    /// the write timeout.
    fn stall_guard<R>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.write_stall = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.write_timeout;
                let stall = self
                    .write_stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_ready() {
                    self.state.write_timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client did not read its answer",
                    )));
                }
                Poll::Pending
            }
        }
    }

    /// Writes what is left of a replacement answer.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written >= bytes.len() {
                self.replacement = None;
                break;
            }
            let rest = bytes.slice(*written..);
            let poll = Pin::new(&mut self.inner).poll_write(cx, &rest);
            let n = ready!(self.stall_guard(cx, poll))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            if let Some((_, written)) = &mut self.replacement {
                *written += n;
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Takes `head` for written and queues the JSON answer in its place,
    /// if it is an automatic answer of hyper's.
    fn replace(&mut self, cx: &mut Context<'_>, head: &[u8]) -> Option<Poll<io::Result<usize>>> {
        let status = automatic_answer(head)?;
        self.state.automatic_answer.store(status, Ordering::Relaxed);
        self.replacement = Some(((self.answer)(status), 0));
        // What is not written now is written by the flush that follows.
        if let Poll::Ready(Err(e)) = self.poll_replacement(cx) {
            return Some(Poll::Ready(Err(e)));
        }
        Some(Poll::Ready(Ok(head.len())))
    }

    fn wrote(&self, poll: &Poll<io::Result<usize>>) {
        if matches!(poll, Poll::Ready(Ok(n)) if *n > 0) {
            self.state.read_since_write.store(false, Ordering::Relaxed);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_since_write.store(true, Ordering::Relaxed);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        if let Some(poll) = this.replace(cx, buf) {
            return poll;
        }
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        let poll = this.stall_guard(cx, poll);
        this.wrote(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        if let Some(head) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(poll) = this.replace(cx, head) {
                return poll;
            }
        }
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let poll = this.stall_guard(cx, poll);
        this.wrote(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.stall_guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_replacement(cx))?;
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.stall_guard(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_hypers_empty_400_414_431_heads_are_automatic_answers() {
        let head = |status: &str, length: &str| {
            format!("HTTP/1.1 {status}\r\n{length}\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n")
        };
        let empty = "content-length: 0";
        assert_eq!(
            automatic_answer(head("431 Request Header Fields Too Large", empty).as_bytes()),
            Some(431)
        );
        assert_eq!(
            automatic_answer(head("414 URI Too Long", empty).as_bytes()),
            Some(414)
        );
        assert_eq!(
            automatic_answer(head("400 Bad Request", empty).as_bytes()),
            Some(400)
        );
        // A JSON error answer has a body.
        assert_eq!(
            automatic_answer(head("400 Bad Request", "content-length: 42").as_bytes()),
            None
        );
        // Other statuses, body bytes and partial heads are left alone.
        assert_eq!(
            automatic_answer(head("404 Not Found", empty).as_bytes()),
            None
        );
        assert_eq!(automatic_answer(b"{\"error_code\":400}"), None);
        assert_eq!(
            automatic_answer(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
            ),
            None
        );
    }

    #[tokio::test]
    async fn an_automatic_answer_goes_out_with_the_json_body_instead() {
        let (client, server) = tokio::io::duplex(4096);
        let state = Arc::new(ConnState::default());
        let answer: Arc<AnswerFn> = Arc::new(|status| {
            Bytes::from(format!(
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\n\r\n{{}}"
            ))
        });
        let mut io = GuardedIo::new(server, state.clone(), answer, Duration::from_secs(5));
        io.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        let mut got = String::new();
        let mut client = client;
        client.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "HTTP/1.1 431 X\r\ncontent-length: 2\r\n\r\n{}");
        assert_eq!(state.automatic_answer.load(Ordering::Relaxed), 431);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_after_the_write_timeout() {
        // A 16-byte pipe that nobody reads.
        let (_client, server) = tokio::io::duplex(16);
        let state = Arc::new(ConnState::default());
        let answer: Arc<AnswerFn> = Arc::new(|_| Bytes::new());
        let mut io = GuardedIo::new(server, state.clone(), answer, Duration::from_millis(200));
        let err = io.write_all(&[b'x'; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(state.write_timed_out.load(Ordering::Relaxed));
    }
}
