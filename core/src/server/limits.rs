//! What the Kafka listener lets clients hold: connections per client
//! address, and the memory of requests being read, counted as their bytes
//! arrive.
//!
//! Two budgets bound request memory, both counted in KiB permits of a
//! semaphore: the broker's (`max_inflight_request_bytes`) and each client
//! IP address's (`max_inflight_request_bytes_per_ip`). A request takes
//! permits for each chunk *before* reading it from the socket, so what a
//! connection holds is what it has sent, not what its size prefix claims;
//! when a budget is spent, readers stop reading (TCP pushes back on the
//! client) until handled requests give permits back. One connection holds
//! at most one request at a time (requests on a connection are handled in
//! order), so `max_request_bytes` bounds a connection.
//!
//! A request always takes the address's permits before the broker's, so
//! the two semaphores are never waited for in opposite orders. Requests
//! that are only partly read can still hold a budget that others wait for
//! (each holding some and waiting for more); the request read timeout ends
//! that: the oldest request is closed when its time is up, and its permits
//! go to the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::broker::BrokerMetrics;

/// Budget permits are KiB: a `u32` of them covers any configured budget.
pub(super) fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).min(u32::MAX as usize) as u32
}

/// The client addresses with open connections: how many each has open and
/// its request memory budget.
pub(super) struct Peers {
    max_connections_per_ip: usize,
    budget_per_ip_kib: u32,
    open: Mutex<HashMap<IpAddr, PeerEntry>>,
}

struct PeerEntry {
    connections: usize,
    budget: Arc<Semaphore>,
}

impl Peers {
    pub(super) fn new(max_connections_per_ip: usize, budget_per_ip_bytes: usize) -> Arc<Peers> {
        Arc::new(Peers {
            max_connections_per_ip,
            budget_per_ip_kib: kib(budget_per_ip_bytes),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Registers a new connection from `ip`, or `None` when the address
    /// already has `max_connections_per_ip` open.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<PeerConnection> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let entry = open.entry(ip).or_insert_with(|| PeerEntry {
            connections: 0,
            budget: Arc::new(Semaphore::new(self.budget_per_ip_kib as usize)),
        });
        if entry.connections >= self.max_connections_per_ip {
            return None;
        }
        entry.connections += 1;
        Some(PeerConnection {
            peers: self.clone(),
            ip,
            budget: entry.budget.clone(),
        })
    }

    /// Addresses with connections open now.
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One admitted connection; gives its slot back when dropped.
pub(super) struct PeerConnection {
    peers: Arc<Peers>,
    ip: IpAddr,
    budget: Arc<Semaphore>,
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = open.get_mut(&self.ip) {
            entry.connections -= 1;
            if entry.connections == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The memory budgets a connection's requests draw from.
pub(super) struct Budgets {
    pub(super) broker: Arc<Semaphore>,
    pub(super) address: Arc<Semaphore>,
}

impl Budgets {
    pub(super) fn for_peer(broker: Arc<Semaphore>, peer: &PeerConnection) -> Budgets {
        Budgets {
            broker,
            address: peer.budget.clone(),
        }
    }
}

/// The permits one request holds, grown as its bytes arrive and given back
/// (with the in-flight gauge) when it is dropped after handling.
pub(super) struct RequestBudget<'a> {
    budgets: &'a Budgets,
    metrics: &'a BrokerMetrics,
    held: Option<(SemaphorePermit<'a>, SemaphorePermit<'a>)>,
    held_kib: u32,
}

/// The budget's semaphores were closed (the listener is shutting down).
#[derive(Debug)]
pub(super) struct BudgetClosed;

impl<'a> RequestBudget<'a> {
    pub(super) fn new(budgets: &'a Budgets, metrics: &'a BrokerMetrics) -> RequestBudget<'a> {
        RequestBudget {
            budgets,
            metrics,
            held: None,
            held_kib: 0,
        }
    }

    /// Makes the budget cover `bytes`, waiting for permits when the
    /// address's or the broker's budget is spent.
    pub(super) async fn cover(&mut self, bytes: usize) -> Result<(), BudgetClosed> {
        let want = kib(bytes);
        if want <= self.held_kib {
            return Ok(());
        }
        let more = want - self.held_kib;
        // Always the address first, then the broker (see the module docs).
        let address = self
            .budgets
            .address
            .acquire_many(more)
            .await
            .map_err(|_| BudgetClosed)?;
        let broker = self
            .budgets
            .broker
            .acquire_many(more)
            .await
            .map_err(|_| BudgetClosed)?;
        match &mut self.held {
            Some((a, b)) => {
                a.merge(address);
                b.merge(broker);
            }
            None => self.held = Some((address, broker)),
        }
        self.held_kib = want;
        self.metrics
            .inflight_request_bytes
            .fetch_add(u64::from(more) * 1024, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for RequestBudget<'_> {
    fn drop(&mut self) {
        if self.held_kib > 0 {
            self.metrics
                .inflight_request_bytes
                .fetch_sub(u64::from(self.held_kib) * 1024, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_at_most_its_connections_and_gives_them_back() {
        let peers = Peers::new(2, 1 << 20);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = peers.admit(a).expect("first");
        let second = peers.admit(a).expect("second");
        assert!(peers.admit(a).is_none(), "a third from the same address");
        let other = peers.admit(b).expect("another address is not affected");
        drop(first);
        let third = peers.admit(a).expect("a slot was given back");
        drop((second, third, other));
        assert_eq!(peers.addresses(), 0, "no entry outlives its connections");
    }
}
