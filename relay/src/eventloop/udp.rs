//! UDP: the client-facing sockets, read in batches (recvmmsg, GRO, with each datagram's
//! destination address from IP_PKTINFO) and written directly or through the outbox, and the
//! relay sockets, whose peer datagrams are read in batches into frames with room for the
//! ChannelData header.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::net::UdpSocket;

use super::sendbatch;
use super::worker::{Buffers, Worker, handle_client};
use crate::proto::{
    FiveTuple, Inbound, MAX_REPLY_LEN, PEER_HEADROOM, PEER_TAILROOM, RelayHandle, Transport,
};
use crate::stun::MAX_MESSAGE_LEN;

/// Datagrams read per recvmmsg call.
const RECV_BATCH: usize = 8;
/// Each receive buffer holds one GRO train (at most 64 KiB).
const RECV_BUF: usize = 65_536;
/// Datagrams read from a relay socket per recvmmsg call.
pub(super) const PEER_BATCH: usize = 4;
/// recvmmsg calls on one relay socket before it lets the worker's other tasks run.
const PEER_BUDGET: usize = 16;
/// One peer datagram's buffer: room for the ChannelData header in front (the datagram is
/// framed in place) and for stream padding behind.
pub(super) const PEER_FRAME: usize = PEER_HEADROOM + MAX_MESSAGE_LEN + PEER_TAILROOM;

/// A client-facing UDP socket of this worker: a listener, or a socket of one client made when
/// the listeners are handed over to another relay process (eventloop/handover.rs).
pub(super) struct UdpListener {
    pub(super) socket: UdpSocket,
    pub(super) state: UdpSocketState,
    pub(super) addr: SocketAddr,
    /// The client the socket is connected to; None for a listener.
    pub(super) client: Option<SocketAddr>,
}

impl Worker {
    /// Sends `bytes` to a UDP client from the listener its 5-tuple names (queued while a batch
    /// is handled); false if there is no such listener or the kernel refused it.
    pub(super) fn udp_send(&self, tuple: &FiveTuple, bytes: &[u8]) -> bool {
        let server = tuple.server;
        let udp = self.udp.borrow();
        let serves = |l: &UdpListener| {
            l.addr.port() == server.port()
                && l.addr.is_ipv4() == server.is_ipv4()
                && (l.addr.ip().is_unspecified() || l.addr.ip() == server.ip())
        };
        // The client's own socket after a hand-over, else the listener. Only then a socket
        // connected to another client (it sends to any address just as well, with the same
        // source): not first, because a connected UDP socket takes the ICMP errors of its
        // peer, and once that client has gone, the next send through its socket fails with
        // ECONNREFUSED, whoever it is for (measured: one message lost in a call).
        let index = udp
            .iter()
            .position(|l| l.client == Some(tuple.client) && serves(l))
            .or_else(|| udp.iter().position(|l| l.client.is_none() && serves(l)))
            .or_else(|| udp.iter().position(|l| serves(l)));
        let Some(index) = index else {
            return false;
        };
        let l = &udp[index];
        let src_ip = l.addr.ip().is_unspecified().then_some(server.ip());
        if self.batching.get() {
            let full = {
                let mut outbox = self.outbox.borrow_mut();
                outbox.push(index, tuple.client, src_ip, bytes);
                outbox.len() >= sendbatch::CAPACITY
            };
            if full {
                self.flush_outbox();
            }
            return true;
        }
        let transmit = Transmit {
            destination: tuple.client,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip,
        };
        l.state.try_send((&l.socket).into(), &transmit).is_ok()
    }

    /// Queues what goes to UDP clients from here to [`Worker::end_batch`], when there is more
    /// than one received datagram to handle.
    fn begin_batch(&self, datagrams: usize) {
        self.batching.set(datagrams > 1);
    }

    fn end_batch(&self) {
        if self.batching.replace(false) {
            self.flush_outbox();
        }
    }

    /// Sends the queued datagrams; those the kernel refused count as UDP send errors.
    fn flush_outbox(&self) {
        let udp = self.udp.borrow();
        let failed = self
            .outbox
            .borrow_mut()
            .flush(|i| udp.get(i).map(|l| &l.socket));
        for _ in 0..failed {
            self.send_failed(Transport::Udp.as_str());
        }
    }
}

/// Reads one client-facing UDP socket in batches.
pub(super) async fn serve_udp(worker: Rc<Worker>, listener: Rc<UdpListener>) {
    let mut storage = vec![0u8; RECV_BATCH * RECV_BUF];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut out = vec![0u8; MAX_REPLY_LEN];
    loop {
        if listener.socket.readable().await.is_err() {
            return;
        }
        // A short batch clears the readiness at once, as in `serve_relay`.
        let mut short = 0;
        let received = {
            // On the stack: no allocation per receive.
            let mut chunks = storage.chunks_exact_mut(RECV_BUF);
            let mut slices: [IoSliceMut<'_>; RECV_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            listener.socket.try_io(tokio::io::Interest::READABLE, || {
                let n = listener
                    .state
                    .recv((&listener.socket).into(), &mut slices, &mut meta)?;
                if n < RECV_BATCH {
                    short = n;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            })
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => short,
            Err(e) => {
                tracing::debug!(err = %e, "UDP receive");
                continue;
            }
        };
        handle_received(&worker, &listener, &meta[..n], &mut storage, &mut out);
    }
}

/// Reads what is queued on a client-facing UDP socket, to the end, and handles it as
/// [`serve_udp`] does (bypassing the runtime's readiness: the socket is about to be closed and
/// its serving task is gone). Returns how many datagrams (or GRO trains) it read.
pub(super) fn drain_udp(worker: &Rc<Worker>, listener: &UdpListener) -> usize {
    let mut storage = vec![0u8; RECV_BATCH * RECV_BUF];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut out = vec![0u8; MAX_REPLY_LEN];
    let mut total = 0;
    loop {
        let received = {
            let mut chunks = storage.chunks_exact_mut(RECV_BUF);
            let mut slices: [IoSliceMut<'_>; RECV_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
            listener
                .state
                .recv((&listener.socket).into(), &mut slices, &mut meta)
        };
        match received {
            Ok(0) => return total,
            Ok(n) => {
                total += n;
                handle_received(worker, listener, &meta[..n], &mut storage, &mut out);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // An ICMP error queued on the socket, say: what follows is still there.
                tracing::debug!(err = %e, "UDP receive while handing over");
            }
        }
    }
}

/// Hands the datagrams of one receive (`meta`, in `storage`) to the core.
fn handle_received(
    worker: &Rc<Worker>,
    listener: &UdpListener,
    meta: &[RecvMeta],
    storage: &mut [u8],
    out: &mut [u8],
) {
    let now = Instant::now();
    // More than one datagram (several entries, or one GRO train): answers go out together.
    worker.begin_batch(meta.iter().map(|m| m.len.div_ceil(m.stride.max(1))).sum());
    for (m, buf) in meta.iter().zip(storage.chunks_mut(RECV_BUF)) {
        let local = SocketAddr::new(
            m.dst_ip.map_or(listener.addr.ip(), |ip| ip.to_canonical()),
            listener.addr.port(),
        );
        let stride = m.stride.max(1);
        // A GRO train carries several datagrams of `stride` bytes (the last may be shorter).
        for datagram in buf[..m.len].chunks_mut(stride) {
            if worker.handing_over.get() && worker.pass_on(local, m.addr, datagram) {
                continue;
            }
            let inbound = Inbound {
                transport: Transport::Udp,
                local,
                remote: m.addr,
                packet: datagram,
            };
            handle_client(worker, &inbound, now, out);
        }
    }
    worker.end_batch();
}

/// Reads one relay socket: datagrams from peers, [`PEER_BATCH`] per `recvmmsg`.
///
/// A batch shorter than [`PEER_BATCH`] means the socket's queue was empty when it was read, so
/// the socket's readiness is cleared then and there (by answering `WouldBlock` to `try_io`)
/// instead of by one more read that would only return EAGAIN: at media rates most wake-ups
/// bring one datagram, and that extra read cost one syscall per wake-up. The clear is
/// race-free: tokio clears only the readiness it handed out, so a datagram that arrived after
/// the read (epoll is edge-triggered: every arrival is a new event) wakes the task again.
pub(super) async fn serve_relay(worker: Rc<Worker>, handle: RelayHandle, socket: Rc<UdpSocket>) {
    let mut meta = [RecvMeta::default(); PEER_BATCH];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        // Bounded work per wake-up, so that one busy peer cannot starve the rest.
        let mut budget = PEER_BUDGET;
        while relay_batch(&worker, handle, &socket, &mut meta) {
            budget -= 1;
            if budget == 0 {
                tokio::task::yield_now().await;
                budget = PEER_BUDGET;
            }
        }
    }
}

/// One `recvmmsg` on a relay socket and its datagrams through the core; false when the
/// socket's queue is empty (its readiness then cleared).
fn relay_batch(
    worker: &Rc<Worker>,
    handle: RelayHandle,
    socket: &UdpSocket,
    meta: &mut [RecvMeta; PEER_BATCH],
) -> bool {
    let mut bufs = worker.bufs.borrow_mut();
    let Buffers { peer, out } = &mut *bufs;
    let mut short = 0;
    let read = socket.try_io(tokio::io::Interest::READABLE, || {
        let mut frames = peer.chunks_exact_mut(PEER_FRAME);
        let mut slices: [IoSliceMut<'_>; PEER_BATCH] = std::array::from_fn(|_| {
            let frame = frames.next().unwrap_or_default();
            let end = frame.len().saturating_sub(PEER_TAILROOM);
            IoSliceMut::new(frame.get_mut(PEER_HEADROOM..end).unwrap_or_default())
        });
        // The relay socket never had UDP_GRO turned on (only the listeners have a
        // `UdpSocketState` of their own), so every entry is one datagram.
        let n = worker.peer_recv.recv(socket.into(), &mut slices, meta)?;
        if n < PEER_BATCH {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    let (n, more) = match read {
        Ok(n) => (n, true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (short, false),
        Err(e) => {
            tracing::debug!(err = %e, "relay socket receive");
            (0, true)
        }
    };
    let now = Instant::now();
    worker.begin_batch(n);
    for (m, frame) in meta.iter().take(n).zip(peer.chunks_exact_mut(PEER_FRAME)) {
        let command = worker
            .server
            .borrow_mut()
            .handle_peer(handle, m.addr, frame, m.len, now, out);
        worker.apply(command, frame, out, None);
        worker.apply_events();
    }
    worker.end_batch();
    more
}
