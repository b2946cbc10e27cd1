//! A fault-injecting TCP proxy for cluster tests: put one between two
//! nodes (or a client and a node) and partition, delay or cut the link
//! while the real binaries run.
//!
//! A partition behaves like a network that stops delivering packets: bytes
//! already sent are held (not lost) and delivered in order once the link
//! heals, unless an end gives up and closes its connection first, exactly
//! as TCP retransmission would. New connections made during a partition
//! are accepted but carry nothing until it heals, so a peer sees its
//! requests time out, not a refused connection. `cut` is the other fault:
//! every open connection is reset and new ones are closed at once.
//!
//! Threads, not a runtime, so sync and async tests can both use it; each
//! connection is two pump threads, and every wait is bounded by a short
//! poll of the proxy's state.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const PASS: u8 = 0;
const PARTITIONED: u8 = 1;
const CUT: u8 = 2;

/// How often a held pump looks at the proxy's state again.
const POLL: Duration = Duration::from_millis(5);

struct Shared {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    stopped: AtomicBool,
    /// Both ends of every open connection, to reset them on `cut`/drop.
    open: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    /// Bytes delivered, both directions together.
    forwarded: AtomicU64,
}

impl Shared {
    fn mode(&self) -> u8 {
        self.mode.load(Ordering::SeqCst)
    }

    fn reset_all(&self) {
        let open = std::mem::take(&mut *self.open.lock().unwrap());
        for (_, a, b) in open {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

pub struct FaultProxy {
    port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(PASS),
            delay_ms: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            open: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
        });
        let accept_shared = shared.clone();
        thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || accept_loop(listener, target, accept_shared))
            .expect("spawn the proxy");
        FaultProxy { port, shared }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops delivering bytes in both directions; what is sent meanwhile
    /// is held and delivered after [`heal`](Self::heal).
    pub fn partition(&self) {
        self.shared.mode.store(PARTITIONED, Ordering::SeqCst);
    }

    /// Delivers again (held bytes first, in order).
    pub fn heal(&self) {
        self.shared.mode.store(PASS, Ordering::SeqCst);
    }

    /// Resets every open connection and closes new ones at once, until
    /// [`heal`](Self::heal).
    pub fn cut(&self) {
        self.shared.mode.store(CUT, Ordering::SeqCst);
        self.shared.reset_all();
    }

    /// Holds every chunk for `delay` before delivering it.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Connections open through the proxy.
    pub fn connections(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }

    /// Bytes delivered so far, both directions.
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.shared.reset_all();
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.mode() == CUT {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        // During a partition the upstream connection is made only once
        // the link heals, as a SYN would be retransmitted.
        let shared = shared.clone();
        let _ = thread::Builder::new()
            .name("fault-proxy-conn".into())
            .spawn(move || connect_and_pump(client, target, shared));
    }
}

fn connect_and_pump(client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    while shared.mode() == PARTITIONED && !shared.stopped.load(Ordering::SeqCst) {
        thread::sleep(POLL);
    }
    if shared.mode() == CUT || shared.stopped.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
    shared.open.lock().unwrap().push((id, c3, u3));
    let back = shared.clone();
    let _ = thread::Builder::new()
        .name("fault-proxy-back".into())
        .spawn(move || pump(id, u2, c2, back));
    pump(id, client, upstream, shared);
}

/// Copies `from` → `to` until either end closes, holding each chunk while
/// the link is partitioned.
fn pump(id: u64, mut from: TcpStream, mut to: TcpStream, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        loop {
            if shared.stopped.load(Ordering::SeqCst) || shared.mode() == CUT {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            if shared.mode() == PASS {
                break;
            }
            thread::sleep(POLL);
        }
        let delay = shared.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_millis(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        shared.forwarded.fetch_add(n as u64, Ordering::SeqCst);
    }
    let _ = to.shutdown(Shutdown::Write);
    // Forget this connection once one direction is done with it.
    shared
        .open
        .lock()
        .unwrap()
        .retain(|(open, _, _)| *open != id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a free port.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn exchange(conn: &mut TcpStream, msg: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
        conn.set_read_timeout(Some(timeout))?;
        conn.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        conn.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn bytes_pass_through_until_a_partition_holds_them_and_healing_delivers_them_in_order() {
        let proxy = FaultProxy::start(echo());
        let mut conn = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(
            exchange(&mut conn, b"hello", Duration::from_secs(5)).unwrap(),
            b"hello"
        );

        proxy.partition();
        let held = exchange(&mut conn, b"during", Duration::from_millis(300));
        assert!(held.is_err(), "nothing crosses a partition: {held:?}");

        proxy.heal();
        let mut late = vec![0u8; 6];
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.read_exact(&mut late).unwrap();
        assert_eq!(late, b"during", "held bytes arrive after the heal");
        assert_eq!(
            exchange(&mut conn, b"after", Duration::from_secs(5)).unwrap(),
            b"after"
        );
    }

    #[test]
    fn a_connection_made_during_a_partition_carries_nothing_until_it_heals() {
        let proxy = FaultProxy::start(echo());
        proxy.partition();
        let mut conn = TcpStream::connect(proxy.addr()).unwrap();
        assert!(exchange(&mut conn, b"x", Duration::from_millis(300)).is_err());
        proxy.heal();
        let mut got = [0u8; 1];
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"x");
    }

    #[test]
    fn a_cut_resets_open_connections_and_closes_new_ones_until_healed() {
        let proxy = FaultProxy::start(echo());
        let mut conn = TcpStream::connect(proxy.addr()).unwrap();
        exchange(&mut conn, b"up", Duration::from_secs(5)).unwrap();
        assert_eq!(proxy.connections(), 1);

        proxy.cut();
        let mut buf = [0u8; 1];
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let read = conn.read(&mut buf);
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the open connection ends: {read:?}"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).unwrap();
        fresh
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(matches!(fresh.read(&mut buf), Ok(0) | Err(_)));

        proxy.heal();
        let mut again = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(
            exchange(&mut again, b"back", Duration::from_secs(5)).unwrap(),
            b"back"
        );
    }

    #[test]
    fn a_delay_holds_every_chunk() {
        let proxy = FaultProxy::start(echo());
        proxy.set_delay(Duration::from_millis(100));
        let mut conn = TcpStream::connect(proxy.addr()).unwrap();
        let started = Instant::now();
        exchange(&mut conn, b"slow", Duration::from_secs(5)).unwrap();
        // One chunk each way.
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(proxy.forwarded_bytes() >= 8);
    }
}
