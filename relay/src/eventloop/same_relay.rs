//! Data between two relayed addresses of this relay (both parties of a call on it): handed
//! over inside the process, at once when the receiving relay socket is this worker's, through
//! the owning worker's inbox when it is another's, instead of through the loopback to a socket
//! of our own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use tokio::sync::mpsc;

use super::lock;
use super::worker::{Buffers, Worker};
use crate::proto::{PEER_HEADROOM, RelayHandle};

/// A datagram for another worker's relayed address: the handle of its relay socket, the
/// relayed address it comes from, and the data.
type Handoff = (RelayHandle, SocketAddr, Vec<u8>);

/// The relayed addresses of every worker, and each worker's inbox for datagrams another
/// worker's allocations send them (what would otherwise go through the loopback to the
/// relay's own socket).
#[derive(Debug, Default)]
pub struct LocalRelays {
    by_addr: RwLock<HashMap<SocketAddr, (usize, RelayHandle)>>,
    inboxes: Mutex<Vec<Option<mpsc::UnboundedSender<Handoff>>>>,
}

impl LocalRelays {
    pub(super) fn insert(&self, addr: SocketAddr, worker: usize, handle: RelayHandle) {
        self.by_addr
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(canonical_addr(addr), (worker, handle));
    }

    pub(super) fn remove(&self, addr: SocketAddr) {
        self.by_addr
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&canonical_addr(addr));
    }

    pub(super) fn get(&self, addr: SocketAddr) -> Option<(usize, RelayHandle)> {
        self.by_addr
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&canonical_addr(addr))
            .copied()
    }

    /// Registers worker `index`'s inbox; returns its receiving end.
    pub(super) fn open_inbox(&self, index: usize) -> mpsc::UnboundedReceiver<Handoff> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inboxes = lock(&self.inboxes);
        if inboxes.len() <= index {
            inboxes.resize_with(index + 1, || None);
        }
        inboxes[index] = Some(tx);
        rx
    }

    /// Hands `handoff` to worker `index`; false if it has no inbox (stopped).
    pub(super) fn send(&self, index: usize, handoff: Handoff) -> bool {
        let inboxes = lock(&self.inboxes);
        inboxes
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|tx| tx.send(handoff).is_ok())
    }
}

/// Datagrams other workers' allocations send to this worker's relayed addresses.
pub(super) async fn serve_inbox(worker: Rc<Worker>, mut inbox: mpsc::UnboundedReceiver<Handoff>) {
    while let Some((to, from, data)) = inbox.recv().await {
        worker.hand_over(to, from, &data);
        worker.apply_events();
    }
}

impl Worker {
    /// Data from one of this worker's allocations (relayed address `from`) to another of its
    /// relayed addresses (`to`): what that relay socket would receive from the loopback,
    /// handled at once, as the other allocation's peer data (its permissions, channels and
    /// bandwidth apply), without two system calls and a trip through the kernel.
    pub(super) fn relay_locally(self: &Rc<Self>, to: RelayHandle, from: SocketAddr, data: &[u8]) {
        self.shared.metrics.same_relay_local.inc();
        self.hand_over(to, from, data);
    }

    /// Runs `data` from relayed address `from` through the core as relay socket `to`'s peer
    /// datagram.
    fn hand_over(self: &Rc<Self>, to: RelayHandle, from: SocketAddr, data: &[u8]) {
        let Ok(mut bufs) = self.local_bufs.try_borrow_mut() else {
            // Only reachable if a hand-over led to another one, which peer data never does.
            self.send_failed("relay");
            return;
        };
        let Buffers { peer, out } = &mut *bufs;
        let Some(frame) = peer.get_mut(PEER_HEADROOM..PEER_HEADROOM + data.len()) else {
            self.send_failed("relay");
            return;
        };
        frame.copy_from_slice(data);
        let command =
            self.server
                .borrow_mut()
                .handle_peer(to, from, peer, data.len(), Instant::now(), out);
        self.apply(command, peer, out, None);
    }
}

/// `addr` with an IPv4-mapped IPv6 address as the IPv4 one: how relayed addresses are looked up.
pub(super) fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
