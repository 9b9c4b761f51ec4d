//! One worker's state, and applying what its protocol shard decides: the [`Command`] for a
//! packet (answers, relayed data, relay sockets to bind, connections to make) and the events it
//! queues (relay sockets and reservations released, channels, permissions and allocations
//! mirrored into the XDP maps, RFC 6062 connections closed).

use super::spawn_counted;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use quinn_udp::UdpSocketState;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use super::same_relay::canonical_addr;
use super::stream_queue::StreamQueue;
use super::tcp_relay::{serve_tcp_relay, tcp_connect};
use super::udp::{PEER_BATCH, PEER_FRAME, UdpListener, serve_relay};
use super::{Shared, lock, sendbatch};
use crate::proto::{
    self, BindFailure, BindResult, Buf, Command, Event, FiveTuple, Inbound, PendingAllocation,
    RelayHandle, RelayRequest, Transport,
};
use crate::stun::{Class, Header, MAX_MESSAGE_LEN, Message, Username};

struct RelaySocket {
    /// The UDP socket; None for a TCP relay (RFC 6062), whose listener lives in `task`.
    socket: Option<Rc<UdpSocket>>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Buffers shared by everything in one worker: used only between awaits.
pub(super) struct Buffers {
    /// [`PEER_BATCH`] frames of [`PEER_FRAME`] bytes.
    pub(super) peer: Vec<u8>,
    pub(super) out: Vec<u8>,
}

/// One worker thread's state: its protocol shard, sockets, streams and buffers.
pub(super) struct Worker {
    pub(super) server: RefCell<proto::Server>,
    pub(super) shared: Shared,
    /// The client-facing UDP sockets: the listeners, and after a hand-over the sockets of
    /// single clients (eventloop/handover.rs). Changed only between batches.
    pub(super) udp: RefCell<Vec<Rc<UdpListener>>>,
    /// The tasks serving the listeners (UDP, TCP, TLS), stopped at a hand-over.
    pub(super) listener_tasks: RefCell<Vec<JoinHandle<()>>>,
    /// The TCP and TLS listeners, for the connections queued on them at a hand-over.
    pub(super) stream_listeners: RefCell<Vec<super::handover::StreamListener>>,
    /// The tasks serving sockets of single clients, by (server, client) address.
    pub(super) pinned_tasks: RefCell<HashMap<(SocketAddr, SocketAddr), JoinHandle<()>>>,
    relays: RefCell<HashMap<RelayHandle, RelaySocket>>,
    /// This worker's UDP relayed addresses, for data from one of its allocations to another
    /// (both parties of a call on this relay): handed over in the process, not sent through
    /// the loopback to a socket of our own ([`Worker::relay_locally`]).
    relay_addrs: RefCell<HashMap<SocketAddr, RelayHandle>>,
    /// This worker's index among the workers (its inbox in `Shared::local_relays`).
    pub(super) index: usize,
    /// A hand-over is under way: client datagrams of another worker's allocations that reach
    /// this one are passed on (eventloop/handover.rs).
    pub(super) handing_over: Cell<bool>,
    /// The frame and output buffers of that hand-over: it runs while `bufs` is lent out.
    pub(super) local_bufs: RefCell<Buffers>,
    /// The output queues of this worker's TCP and TLS clients.
    pub(super) streams: RefCell<HashMap<FiveTuple, Rc<StreamQueue>>>,
    next_handle: Cell<u32>,
    /// Streams whose last request was a successful ConnectionBind: become pipes.
    pub(super) splice_requests: RefCell<HashMap<FiveTuple, u32>>,
    pub(super) bufs: RefCell<Buffers>,
    /// Reads relay sockets in batches. quinn-udp's `recv` is a plain `recvmmsg` that keeps no
    /// state of the socket it reads, so one state serves them all; it is made on a throwaway
    /// socket so that no relay socket gets the options `UdpSocketState::new` sets (GRO, and a
    /// DF policy that RFC 8656's DONT-FRAGMENT leaves to the client).
    pub(super) peer_recv: UdpSocketState,
    /// Datagrams to clients queued while a batch of received datagrams is handled (`batching`),
    /// sent together at its end (eventloop/sendbatch.rs).
    pub(super) outbox: RefCell<sendbatch::Outbox>,
    pub(super) batching: Cell<bool>,
    pub(super) generation: Cell<u64>,
    /// Requests waiting for the user database (`park`).
    parked: Cell<usize>,
    /// What the kernel forwarded for allocations that ended before it was read (their channels'
    /// and permissions' last counts, read at their removal), until their `Deleted` usage report
    /// takes it.
    kernel_leftovers: RefCell<HashMap<FiveTuple, proto::Usage>>,
}

impl Worker {
    /// A worker with its protocol shard, serving the client-facing UDP sockets `udp`.
    pub(super) fn new(index: usize, shared: Shared, udp: Vec<Rc<UdpListener>>) -> io::Result<Self> {
        let config = shared.control.config();
        let now = Instant::now();
        let unix = shared.clock.1 + now.saturating_duration_since(shared.clock.0).as_secs();
        let server = proto::Server::new(
            config,
            shared.ledger.clone(),
            shared.metrics.clone(),
            now,
            unix,
        );
        let throwaway = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        let peer_recv = UdpSocketState::new((&std::net::UdpSocket::from(throwaway)).into())?;
        Ok(Worker {
            server: RefCell::new(server),
            peer_recv,
            outbox: RefCell::new(sendbatch::Outbox::default()),
            batching: Cell::new(false),
            generation: Cell::new(shared.control.generation.load(Ordering::Acquire)),
            parked: Cell::new(0),
            kernel_leftovers: RefCell::new(HashMap::new()),
            shared,
            udp: RefCell::new(udp),
            listener_tasks: RefCell::new(Vec::new()),
            stream_listeners: RefCell::new(Vec::new()),
            pinned_tasks: RefCell::new(HashMap::new()),
            relays: RefCell::new(HashMap::new()),
            relay_addrs: RefCell::new(HashMap::new()),
            index,
            handing_over: Cell::new(false),
            local_bufs: RefCell::new(Buffers {
                peer: vec![0u8; PEER_FRAME],
                out: vec![0u8; MAX_MESSAGE_LEN + 64],
            }),
            streams: RefCell::new(HashMap::new()),
            next_handle: Cell::new(1),
            splice_requests: RefCell::new(HashMap::new()),
            bufs: RefCell::new(Buffers {
                peer: vec![0u8; PEER_BATCH * PEER_FRAME],
                out: vec![0u8; MAX_MESSAGE_LEN + 64],
            }),
        })
    }

    pub(super) fn apply_events(&self) {
        loop {
            let Some(event) = self.server.borrow_mut().poll_event() else {
                break;
            };
            match event {
                Event::ReleaseRelay(handle) => {
                    if let Some(relay) = self.relays.borrow_mut().remove(&handle) {
                        if self
                            .relay_addrs
                            .borrow_mut()
                            .remove(&canonical_addr(relay.addr))
                            .is_some()
                        {
                            self.shared.local_relays.remove(relay.addr);
                        }
                        relay.task.abort();
                        self.shared.ports.release(relay.addr);
                    }
                }
                Event::ReleaseReserved(addr) => {
                    if lock(&self.shared.held).remove(&addr).is_some() {
                        self.shared.ports.release(addr);
                    }
                }
                // Mirrored into the kernel by the XDP dataplane when it is attached.
                Event::ChannelBound { .. } | Event::ChannelUnbound { .. } => {
                    if let Some(dp) = &self.shared.dataplane {
                        match dp.apply(&event) {
                            Ok(last) => self.count_last_offloaded(last),
                            Err(err) => {
                                // The channel keeps working in userspace.
                                if matches!(event, Event::ChannelBound { .. }) {
                                    self.shared
                                        .metrics
                                        .xdp_fallbacks
                                        .with_label_values(&[err.metric_label()])
                                        .inc();
                                }
                                tracing::debug!(%err, "channel not offloaded to XDP");
                            }
                        }
                    }
                }
                // Send and Data indications in the kernel: mirrored like channels.
                Event::PermissionInstalled { .. }
                | Event::PermissionRemoved { .. }
                | Event::AllocationInstalled { .. }
                | Event::AllocationRemoved { .. } => {
                    if let Some(dp) = &self.shared.dataplane {
                        match dp.apply(&event) {
                            Ok(last) => self.count_last_offloaded(last),
                            // Its indications keep working in userspace.
                            Err(err) => tracing::debug!(
                                %err,
                                "permission or allocation not offloaded to XDP"
                            ),
                        }
                    }
                }
                Event::Usage(mut report) => {
                    let leftover = self.kernel_leftovers.borrow_mut().remove(&report.tuple);
                    if let (Some(k), proto::UsageKind::Deleted { last, total }) =
                        (leftover, &mut report.kind)
                    {
                        *last = last.plus(k);
                        *total = total.plus(k);
                    }
                    if let Some(sink) = &self.shared.usage {
                        sink.send(report);
                    }
                }
                Event::CloseTcp(id) => {
                    lock(&self.shared.tcp_pending).remove(&id);
                    if let Some(notify) = lock(&self.shared.tcp_spliced).remove(&id) {
                        notify.notify_one();
                    }
                }
            }
        }
    }

    /// Counts what the kernel forwarded on a channel or under a permission between the last
    /// read of its counters and its removal in its allocation's usage (when usage is
    /// reported), or keeps it for the allocation's `Deleted` report when the allocation has
    /// ended already (its report follows its removals).
    fn count_last_offloaded(&self, last: Option<crate::dataplane::ChannelTraffic>) {
        let Some(t) = last else {
            return;
        };
        let mut server = self.server.borrow_mut();
        if !server.reports_usage()
            || (t.client_to_peer.packets == 0 && t.peer_to_client.packets == 0)
        {
            return;
        }
        if !server.count_offloaded(&t.tuple, t.usage()) {
            let mut leftovers = self.kernel_leftovers.borrow_mut();
            let entry = leftovers.entry(t.tuple).or_default();
            *entry = entry.plus(t.usage());
        }
    }

    /// Applies what the core decided for a packet. `input` is the packet's buffer (for
    /// in-place forwarding), `out` the core's output buffer; `reply_to` is the client the packet
    /// came from, where a Reply goes: None for a peer's packet, which the core never answers
    /// (a Reply to no client would be counted as a send error).
    pub(super) fn apply(
        self: &Rc<Self>,
        command: Command,
        input: &[u8],
        out: &mut [u8],
        reply_to: Option<&FiveTuple>,
    ) {
        match command {
            Command::None => {}
            Command::Reply { len } => self.reply(reply_to, &out[..len]),
            Command::ToPeer { relay, peer, range } => {
                let relays = self.relays.borrow();
                let Some(from) = relays.get(&relay) else {
                    self.send_failed("relay");
                    return;
                };
                let local = self
                    .relay_addrs
                    .borrow()
                    .get(&canonical_addr(peer))
                    .copied();
                if let Some(to) = local {
                    let from = from.addr;
                    drop(relays);
                    self.relay_locally(to, from, &input[range]);
                    return;
                }
                // Another worker's relayed address: into its inbox (a copy, where the loopback
                // took two system calls and a trip through the kernel).
                if let Some((worker, to)) = self.shared.local_relays.get(peer)
                    && worker != self.index
                    && self
                        .shared
                        .local_relays
                        .send(worker, (to, from.addr, input[range.clone()].to_vec()))
                {
                    self.shared.metrics.same_relay_local.inc();
                    return;
                }
                let sent = from
                    .socket
                    .as_ref()
                    .map(|socket| socket.try_send_to(&input[range], peer));
                if !matches!(sent, Some(Ok(_))) {
                    self.send_failed("relay");
                }
            }
            Command::ToClient { tuple, data } => {
                let bytes = match data {
                    Buf::Input(range) => &input[range],
                    Buf::Output(len) => &out[..len],
                };
                self.to_client(&tuple, bytes, false);
            }
            Command::BindRelays(pending) => {
                let command = self.bind_relays(*pending, out);
                // The completion only ever sends to the client (from `out`).
                self.apply(command, &[], out, reply_to);
            }
            Command::Connect(pending) => {
                spawn_counted(
                    self.shared.metrics.worker_tasks.clone(),
                    tcp_connect(self.clone(), *pending),
                );
            }
            // Parked by `handle_client`; from elsewhere (never the case) dropped: the client
            // retransmits.
            Command::AwaitUser => {}
            Command::BindData { len, connection_id } => {
                self.reply(reply_to, &out[..len]);
                if let Some(tuple) = reply_to {
                    self.splice_requests
                        .borrow_mut()
                        .insert(*tuple, connection_id);
                }
            }
        }
    }

    /// Sends an answer to the client a packet came from.
    pub(super) fn reply(&self, reply_to: Option<&FiveTuple>, bytes: &[u8]) {
        match reply_to {
            Some(tuple) => self.to_client(tuple, bytes, true),
            None => self.send_failed("relay"),
        }
    }

    pub(super) fn send_failed(&self, transport: &str) {
        self.shared
            .metrics
            .send_errors
            .with_label_values(&[transport])
            .inc();
    }

    /// Sends `bytes` to a client: an answer (`reply`), which a stream client's queue always
    /// takes, or relayed data, which it drops when too much waits (eventloop/stream_queue.rs).
    pub(super) fn to_client(&self, tuple: &FiveTuple, bytes: &[u8], reply: bool) {
        let ok = match tuple.transport {
            Transport::Udp => self.udp_send(tuple, bytes),
            Transport::Tcp | Transport::Tls => {
                let streams = self.streams.borrow();
                streams.get(tuple).is_some_and(|queue| {
                    if reply {
                        queue.push_reply(bytes.to_vec())
                    } else {
                        queue.push_data(bytes)
                    }
                })
            }
        };
        if !ok {
            self.send_failed(tuple.transport.as_str());
        }
    }

    fn bind_relays(self: &Rc<Self>, pending: PendingAllocation, out: &mut [u8]) -> Command {
        let ports = &self.shared.ports;
        let mut reserved = None;
        if pending.tcp {
            let primary = match pending.primary {
                RelayRequest::Bind { ip, .. } => ports
                    .bind_tcp(ip)
                    .and_then(|l| self.register(Bound::Tcp(l))),
                RelayRequest::Reserved(_) => Err(BindFailure::NoCapacity),
            };
            let result = BindResult {
                primary,
                additional: None,
                reserved: None,
            };
            let command =
                self.server
                    .borrow_mut()
                    .complete_allocate(pending, result, Instant::now(), out);
            self.apply_events();
            return command;
        }
        let primary = match pending.primary {
            RelayRequest::Reserved(addr) => {
                let held = lock(&self.shared.held).remove(&addr);
                held.ok_or(BindFailure::NoCapacity)
                    .and_then(|socket| self.register(Bound::Udp(socket)))
            }
            RelayRequest::Bind {
                ip,
                even,
                reserve_next,
            } => match ports.bind(ip, even, reserve_next) {
                Ok((socket, next)) => {
                    if let Some(next) = next
                        && let Ok(addr) = next.local_addr()
                    {
                        lock(&self.shared.held).insert(addr, next);
                        reserved = Some(addr);
                    }
                    self.register(Bound::Udp(socket))
                }
                Err(e) => Err(e),
            },
        };
        let additional = pending.additional.map(|ip| {
            ports
                .bind(ip, false, false)
                .and_then(|(s, _)| self.register(Bound::Udp(s)))
        });
        let result = BindResult {
            primary,
            additional,
            reserved,
        };
        let command =
            self.server
                .borrow_mut()
                .complete_allocate(pending, result, Instant::now(), out);
        self.apply_events();
        command
    }

    /// Takes ownership of a bound relayed address: a handle, and a task serving it (reading a
    /// UDP relay socket, or accepting peers on a TCP relay listener, RFC 6062). A UDP relayed
    /// address is also listed for data handed over between this relay's allocations.
    fn register(self: &Rc<Self>, bound: Bound) -> Result<(RelayHandle, SocketAddr), BindFailure> {
        let addr = match &bound {
            Bound::Udp(socket) => socket.local_addr(),
            Bound::Tcp(listener) => listener.local_addr(),
        }
        .map_err(|_| BindFailure::NoCapacity)?;
        let served = match bound {
            Bound::Udp(socket) => UdpSocket::from_std(socket).map(|s| Served::Udp(Rc::new(s))),
            Bound::Tcp(listener) => TcpListener::from_std(listener).map(Served::Tcp),
        };
        let Ok(served) = served else {
            self.shared.ports.release(addr);
            return Err(BindFailure::NoCapacity);
        };
        let handle = RelayHandle(self.next_handle.get());
        self.next_handle
            .set(self.next_handle.get().wrapping_add(1).max(1));
        let (socket, task) = match served {
            Served::Udp(socket) => {
                let task = spawn_counted(
                    self.shared.metrics.worker_tasks.clone(),
                    serve_relay(self.clone(), handle, socket.clone()),
                );
                self.relay_addrs
                    .borrow_mut()
                    .insert(canonical_addr(addr), handle);
                self.shared.local_relays.insert(addr, self.index, handle);
                (Some(socket), task)
            }
            Served::Tcp(listener) => {
                let task = spawn_counted(
                    self.shared.metrics.worker_tasks.clone(),
                    serve_tcp_relay(self.clone(), handle, listener),
                );
                (None, task)
            }
        };
        self.relays
            .borrow_mut()
            .insert(handle, RelaySocket { socket, addr, task });
        Ok((handle, addr))
    }
}

/// A bound relayed address, as the port range hands it out.
enum Bound {
    Udp(std::net::UdpSocket),
    /// A TCP relay listener (RFC 6062).
    Tcp(std::net::TcpListener),
}

/// A relayed address on the worker's runtime, ready to be served.
enum Served {
    Udp(Rc<UdpSocket>),
    Tcp(TcpListener),
}

/// One client packet through the core, timing requests.
pub(super) fn handle_client(
    worker: &Rc<Worker>,
    inbound: &Inbound<'_>,
    now: Instant,
    out: &mut [u8],
) {
    handle_client_once(worker, inbound, now, out, true);
}

/// [`handle_client`]; `may_park`: a request whose user is being looked up may wait for it
/// (once: a request handed in again after its wait does not wait again).
fn handle_client_once(
    worker: &Rc<Worker>,
    inbound: &Inbound<'_>,
    now: Instant,
    out: &mut [u8],
    may_park: bool,
) {
    let request = Header::peek(inbound.packet)
        .filter(|h| h.typ.class == Class::Request)
        .map(|h| h.typ.method);
    let started = request.map(|_| Instant::now());
    let command = worker.server.borrow_mut().handle_client(inbound, now, out);
    if matches!(command, Command::AwaitUser) {
        if may_park {
            park(worker, inbound);
        }
        worker.apply_events();
        return;
    }
    trace_command(inbound, &command, out);
    worker.apply(command, inbound.packet, out, Some(&inbound.tuple()));
    if let (Some(method), Some(started)) = (request, started) {
        worker
            .shared
            .metrics
            .request_duration(method)
            .observe(started.elapsed().as_secs_f64());
    }
    worker.apply_events();
}

/// Requests parked at most per worker while their user is looked up; beyond, they are dropped
/// (the client retransmits).
const MAX_PARKED: usize = 1024;
/// How long a parked request waits for its lookup; then it is dropped (the client retransmits).
const PARK_TIMEOUT: Duration = Duration::from_secs(4);

/// Parks a request whose user the user database is looking up (userdb/mod.rs): a task of its
/// own waits for the lookup, then hands the same request to the core again. The worker goes on
/// meanwhile.
fn park(worker: &Rc<Worker>, inbound: &Inbound<'_>) {
    let Some(db) = worker.shared.userdb.clone() else {
        return;
    };
    let username = Message::decode(inbound.packet).ok().and_then(|m| {
        m.get::<Username>()
            .and_then(Result::ok)
            .map(|u| u.0.to_owned())
    });
    let Some(username) = username else {
        return;
    };
    if worker.parked.get() >= MAX_PARKED {
        worker
            .shared
            .metrics
            .dropped(inbound.transport, proto::DropReason::UserSourceBusy);
        return;
    }
    let waiter = db.waiter(&username);
    let (transport, local, remote) = (inbound.transport, inbound.local, inbound.remote);
    let packet = inbound.packet.to_vec();
    let worker = worker.clone();
    worker.parked.set(worker.parked.get() + 1);
    spawn_counted(worker.shared.metrics.worker_tasks.clone(), async move {
        let answered = match waiter {
            Some(mut rx) => tokio::time::timeout(PARK_TIMEOUT, rx.wait_for(|done| *done))
                .await
                .is_ok_and(|r| r.is_ok()),
            // Answered between the core's question and now.
            None => true,
        };
        worker.parked.set(worker.parked.get().saturating_sub(1));
        if !answered {
            return;
        }
        let inbound = Inbound {
            transport,
            local,
            remote,
            packet: &packet,
        };
        let mut out = vec![0u8; MAX_MESSAGE_LEN + 64];
        handle_client_once(&worker, &inbound, Instant::now(), &mut out, false);
    });
}

/// One debug line per answered request: filtered out (and nearly free) at the default level.
fn trace_command(inbound: &Inbound<'_>, command: &Command, out: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let transport = inbound.transport.as_str();
    let remote = inbound.remote;
    if let Command::Reply { len } = command
        && let Ok(msg) = crate::stun::Message::decode(&out[..*len])
    {
        let code = msg
            .get::<crate::stun::ErrorCode>()
            .and_then(Result::ok)
            .map_or(0, |e| e.code);
        tracing::debug!(transport, %remote, method = msg.method().as_str(), code, "answered");
    }
}
