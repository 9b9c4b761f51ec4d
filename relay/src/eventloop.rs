//! The event loop: the only owner of sockets, timers and threads.
//!
//! One worker thread per core, each with a single-threaded runtime and its own protocol shard
//! ([`proto::Server`]). Every listening address is bound once per worker with SO_REUSEPORT, so
//! the kernel spreads clients over workers and keeps each client 5-tuple on one of them; the
//! relay sockets of an allocation live in the worker that owns it, so a packet is handled from
//! receive to send on one thread with no lock. Client-facing UDP is read in batches
//! (recvmmsg, GRO) with the destination address of each datagram (IP_PKTINFO), which is both
//! the 5-tuple's server address and the source address of the answer.

mod sendbatch;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::proto::{
    self, Action, BindFailure, BindResult, Buf, Event, FiveTuple, Inbound, Ledger, MAX_REPLY_LEN,
    PEER_HEADROOM, PEER_TAILROOM, PendingAllocation, RelayHandle, RelayRequest, Transport,
};
use crate::stun::{Class, Header, MAX_MESSAGE_LEN, stream_frame_len};
use crate::tls;

/// A stream connection that sends nothing for this long is closed (RFC 8656 allocations are
/// refreshed well within it).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Datagrams read per recvmmsg call.
const RECV_BATCH: usize = 8;
/// Each receive buffer holds one GRO train (at most 64 KiB).
const RECV_BUF: usize = 65_536;
/// Datagrams read from a relay socket per recvmmsg call.
const PEER_BATCH: usize = 4;
/// recvmmsg calls on one relay socket before it lets the worker's other tasks run.
const PEER_BUDGET: usize = 16;
/// One peer datagram's buffer: room for the ChannelData header in front (the datagram is
/// framed in place) and for stream padding behind.
const PEER_FRAME: usize = PEER_HEADROOM + MAX_MESSAGE_LEN + PEER_TAILROOM;
/// Frames queued towards one stream client before more are dropped.
const STREAM_QUEUE: usize = 512;
/// A TLS client must finish its handshake within this long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared state the main thread uses to steer the workers.
#[derive(Debug)]
pub struct Control {
    config: Mutex<Arc<proto::Config>>,
    generation: AtomicU64,
    draining: AtomicBool,
    stop: AtomicBool,
    /// The TLS certificate, when there are TLS listeners; reloaded in place.
    tls: Option<Arc<tls::Certificates>>,
}

impl Control {
    pub fn new(config: Arc<proto::Config>) -> Self {
        Self {
            config: Mutex::new(config),
            generation: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            tls: None,
        }
    }

    /// Serves TLS listeners with `certs`.
    pub fn with_tls(mut self, certs: Arc<tls::Certificates>) -> Self {
        self.tls = Some(certs);
        self
    }

    /// The TLS certificate holder (None without TLS listeners): reload it to swap certificates.
    pub fn tls(&self) -> Option<&tls::Certificates> {
        self.tls.as_deref()
    }

    /// Installs a new configuration; every worker picks it up within a second.
    pub fn set_config(&self, config: Arc<proto::Config>) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn config(&self) -> Arc<proto::Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stop accepting new allocations.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// End every allocation and stop the workers.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The relay port range, shared by all workers: which ports this process holds.
#[derive(Debug)]
pub struct RelayPorts {
    min: u16,
    max: u16,
    used: Mutex<HashSet<SocketAddr>>,
    next: std::sync::atomic::AtomicU32,
}

impl RelayPorts {
    pub fn new(min: u16, max: u16) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let seed = std::process::id() ^ nanos;
        Self {
            min,
            max,
            used: Mutex::new(HashSet::new()),
            next: std::sync::atomic::AtomicU32::new(seed),
        }
    }

    pub fn range(&self) -> (u16, u16) {
        (self.min, self.max)
    }

    /// Binds a relay socket on `ip`: an even port if asked, and with `reserve_next` the port
    /// after it as well.
    pub fn bind(
        &self,
        ip: IpAddr,
        even: bool,
        reserve_next: bool,
    ) -> Result<(std::net::UdpSocket, Option<std::net::UdpSocket>), BindFailure> {
        let ports = if reserve_next { 2 } else { 1 };
        self.bind_in_range(ip, even || reserve_next, ports, |addr| {
            let first = relay_socket(addr)?;
            let second = if reserve_next {
                // The first port bound, so the address is usable: any failure means the port
                // after it is taken, and the search moves on.
                let next = SocketAddr::new(ip, addr.port() + 1);
                let taken = |_| io::Error::from(io::ErrorKind::AddrInUse);
                Some(relay_socket(next).map_err(taken)?)
            } else {
                None
            };
            Ok((first, second))
        })
    }

    /// Binds a TCP relay listener on `ip` (RFC 6062), SO_REUSEPORT so that connections to
    /// peers can be made from the same address.
    pub fn bind_tcp(&self, ip: IpAddr) -> Result<std::net::TcpListener, BindFailure> {
        self.bind_in_range(ip, false, 1, |addr| {
            let socket = reuseport_socket(addr, Type::STREAM, Protocol::TCP)?;
            socket.listen(128)?;
            Ok(socket.into())
        })
    }

    /// Finds `ports` consecutive free ports on `ip` (the first one even if asked) that `bind`
    /// binds, given the first one's address, and holds them. Ports are tried from a rotating
    /// start, so consecutive allocations do not get predictable neighbours, and the kernel's
    /// bind is the arbiter with other programs: a port it refuses is skipped, an address it
    /// cannot bind at all (not on this host, or a family it lacks) ends the search.
    fn bind_in_range<T>(
        &self,
        ip: IpAddr,
        even: bool,
        ports: u16,
        mut bind: impl FnMut(SocketAddr) -> io::Result<T>,
    ) -> Result<T, BindFailure> {
        let span = u32::from(self.max - self.min) + 1;
        let start = self.next.fetch_add(7919, Ordering::Relaxed) % span;
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        for i in 0..span {
            let Ok(port) = u16::try_from(u32::from(self.min) + (start + i) % span) else {
                continue;
            };
            if even && port % 2 != 0 {
                continue;
            }
            let Some(last) = port.checked_add(ports - 1).filter(|&last| last <= self.max) else {
                continue;
            };
            let addrs = (port..=last).map(|p| SocketAddr::new(ip, p));
            if addrs.clone().any(|addr| used.contains(&addr)) {
                continue;
            }
            match bind(SocketAddr::new(ip, port)) {
                Ok(bound) => {
                    used.extend(addrs);
                    return Ok(bound);
                }
                // EADDRNOTAVAIL, or EAFNOSUPPORT (97).
                Err(e)
                    if e.kind() == io::ErrorKind::AddrNotAvailable
                        || e.raw_os_error() == Some(97) =>
                {
                    return Err(BindFailure::Family);
                }
                Err(_) => continue,
            }
        }
        Err(BindFailure::NoCapacity)
    }

    pub fn release(&self, addr: SocketAddr) {
        self.used
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&addr);
    }

    pub fn in_use(&self) -> usize {
        self.used.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn relay_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// One listening address, bound for UDP and TCP, once per worker (SO_REUSEPORT).
#[derive(Debug)]
pub struct ListenerSet {
    pub addr: SocketAddr,
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

fn reuseport_socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        // [::] and 0.0.0.0 are listened on separately, so each socket is one family.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn bind_set(addr: SocketAddr, workers: usize) -> io::Result<ListenerSet> {
    let first = reuseport_socket(addr, Type::DGRAM, Protocol::UDP)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    let mut udp = vec![std::net::UdpSocket::from(first)];
    let mut tcp = Vec::new();
    for i in 0..workers {
        if i > 0 {
            udp.push(reuseport_socket(bound, Type::DGRAM, Protocol::UDP)?.into());
        }
        let listener = reuseport_socket(bound, Type::STREAM, Protocol::TCP)?;
        listener.listen(1024)?;
        tcp.push(listener.into());
    }
    Ok(ListenerSet {
        addr: bound,
        udp,
        tcp,
    })
}

/// Binds `addr` for UDP and TCP, `workers` times. With port 0, finds a port free for both.
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<ListenerSet> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        match bind_set(addr, workers.max(1)) {
            Ok(set) => return Ok(set),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port free for both UDP and TCP")))
}

/// One STUN/TURN-over-TLS address: a TCP listener per worker (SO_REUSEPORT).
#[derive(Debug)]
pub struct TlsListenerSet {
    pub addr: SocketAddr,
    tcp: Vec<std::net::TcpListener>,
}

/// Binds `addr` for TLS (TCP), `workers` times; port 0 picks a free port.
pub fn bind_tls(addr: SocketAddr, workers: usize) -> io::Result<TlsListenerSet> {
    let mut tcp = Vec::new();
    let mut bound = addr;
    for _ in 0..workers.max(1) {
        let listener = reuseport_socket(bound, Type::STREAM, Protocol::TCP)?;
        listener.listen(1024)?;
        bound = listener
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("not an IP socket"))?;
        tcp.push(listener.into());
    }
    Ok(TlsListenerSet { addr: bound, tcp })
}

/// What the workers share.
#[derive(Debug, Clone)]
pub struct Shared {
    pub control: Arc<Control>,
    pub ledger: Arc<Ledger>,
    pub metrics: Arc<Metrics>,
    pub ports: Arc<RelayPorts>,
    /// Sockets held for reservations (EVEN-PORT's R bit), by address: owned by no worker
    /// until an Allocate with the token adopts one.
    pub held: Arc<Mutex<HashMap<SocketAddr, std::net::UdpSocket>>>,
    /// RFC 6062 peer data connections waiting for their ConnectionBind, by connection id: the
    /// client's data connection may be accepted by another worker, which takes the stream.
    pub tcp_pending: Arc<Mutex<HashMap<u32, std::net::TcpStream>>>,
    /// Spliced data connections, woken (from any worker) to close them.
    pub tcp_spliced: Arc<Mutex<HashMap<u32, Arc<tokio::sync::Notify>>>>,
    /// The XDP fast path, when attached: every channel bind and unbind goes through it (the
    /// only writer of its maps).
    pub dataplane: Option<Arc<crate::dataplane::Dataplane>>,
    /// Wall clock at `clock.0`.
    pub clock: (Instant, u64),
    /// Every worker's UDP relayed addresses, and a way to hand a datagram to each worker: for
    /// data from one allocation to another relayed address of this relay on another worker.
    pub local_relays: Arc<LocalRelays>,
}

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
    fn insert(&self, addr: SocketAddr, worker: usize, handle: RelayHandle) {
        self.by_addr
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(canonical_addr(addr), (worker, handle));
    }

    fn remove(&self, addr: SocketAddr) {
        self.by_addr
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&canonical_addr(addr));
    }

    fn get(&self, addr: SocketAddr) -> Option<(usize, RelayHandle)> {
        self.by_addr
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&canonical_addr(addr))
            .copied()
    }

    /// Registers worker `index`'s inbox; returns its receiving end.
    fn open_inbox(&self, index: usize) -> mpsc::UnboundedReceiver<Handoff> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        if inboxes.len() <= index {
            inboxes.resize_with(index + 1, || None);
        }
        inboxes[index] = Some(tx);
        rx
    }

    /// Hands `handoff` to worker `index`; false if it has no inbox (stopped).
    fn send(&self, index: usize, handoff: Handoff) -> bool {
        let inboxes = self.inboxes.lock().unwrap_or_else(|p| p.into_inner());
        inboxes
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|tx| tx.send(handoff).is_ok())
    }
}

/// Starts one worker thread per element of each listener set; returns their handles.
pub fn start(
    listeners: Vec<ListenerSet>,
    tls_listeners: Vec<TlsListenerSet>,
    workers: usize,
    shared: Shared,
) -> io::Result<Vec<std::thread::JoinHandle<()>>> {
    let mut per_worker: Vec<Vec<(SocketAddr, std::net::UdpSocket, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for set in listeners {
        for (i, (udp, tcp)) in set.udp.into_iter().zip(set.tcp).enumerate() {
            per_worker[i].push((set.addr, udp, tcp));
        }
    }
    let mut tls_per_worker: Vec<Vec<(SocketAddr, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for set in tls_listeners {
        for (i, tcp) in set.tcp.into_iter().enumerate() {
            tls_per_worker[i].push((set.addr, tcp));
        }
    }
    let mut handles = Vec::new();
    for (i, (sockets, tls_sockets)) in per_worker.into_iter().zip(tls_per_worker).enumerate() {
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("xdpturn-worker-{i}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(err) => {
                        tracing::error!(%err, worker = i, "cannot start a worker runtime");
                        return;
                    }
                };
                let local = tokio::task::LocalSet::new();
                if let Err(err) =
                    local.block_on(&runtime, run_worker(i, sockets, tls_sockets, shared))
                {
                    tracing::error!(%err, worker = i, "worker stopped");
                }
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// A client-facing UDP socket of this worker.
struct UdpListener {
    socket: UdpSocket,
    state: UdpSocketState,
    addr: SocketAddr,
}

struct RelaySocket {
    /// The UDP socket; None for a TCP relay (RFC 6062), whose listener lives in `task`.
    socket: Option<Rc<UdpSocket>>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Buffers shared by everything in one worker: used only between awaits.
struct Buffers {
    /// [`PEER_BATCH`] frames of [`PEER_FRAME`] bytes.
    peer: Vec<u8>,
    out: Vec<u8>,
}

struct Worker {
    server: RefCell<proto::Server>,
    shared: Shared,
    udp: Vec<Rc<UdpListener>>,
    relays: RefCell<HashMap<RelayHandle, RelaySocket>>,
    /// This worker's UDP relayed addresses, for data from one of its allocations to another
    /// (both parties of a call on this relay): handed over in the process, not sent through
    /// the loopback to a socket of our own ([`Worker::relay_locally`]).
    relay_addrs: RefCell<HashMap<SocketAddr, RelayHandle>>,
    /// This worker's index among the workers (its inbox in `Shared::local_relays`).
    index: usize,
    /// The frame and output buffers of that hand-over: it runs while `bufs` is lent out.
    local_bufs: RefCell<Buffers>,
    streams: RefCell<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    next_handle: Cell<u32>,
    /// Streams whose last request was a successful ConnectionBind: become pipes.
    splice_requests: RefCell<HashMap<FiveTuple, u32>>,
    bufs: RefCell<Buffers>,
    /// Reads relay sockets in batches. quinn-udp's `recv` is a plain `recvmmsg` that keeps no
    /// state of the socket it reads, so one state serves them all; it is made on a throwaway
    /// socket so that no relay socket gets the options `UdpSocketState::new` sets (GRO, and a
    /// DF policy that RFC 8656's DONT-FRAGMENT leaves to the client).
    peer_recv: UdpSocketState,
    /// Datagrams to clients queued while a batch of received datagrams is handled (`batching`),
    /// sent together at its end (eventloop/sendbatch.rs).
    outbox: RefCell<sendbatch::Outbox>,
    batching: Cell<bool>,
    generation: Cell<u64>,
}

async fn run_worker(
    index: usize,
    sockets: Vec<(SocketAddr, std::net::UdpSocket, std::net::TcpListener)>,
    tls_sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    shared: Shared,
) -> io::Result<()> {
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
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    for (addr, u, t) in sockets {
        let state = UdpSocketState::new((&u).into())?;
        udp.push(Rc::new(UdpListener {
            socket: UdpSocket::from_std(u)?,
            state,
            addr,
        }));
        tcp.push((addr, TcpListener::from_std(t)?));
    }
    let mut tls_tcp = Vec::new();
    for (addr, t) in tls_sockets {
        tls_tcp.push((addr, TcpListener::from_std(t)?));
    }
    let throwaway = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let peer_recv = UdpSocketState::new((&std::net::UdpSocket::from(throwaway)).into())?;
    let worker = Rc::new(Worker {
        server: RefCell::new(server),
        peer_recv,
        outbox: RefCell::new(sendbatch::Outbox::default()),
        batching: Cell::new(false),
        generation: Cell::new(shared.control.generation.load(Ordering::Acquire)),
        shared,
        udp,
        relays: RefCell::new(HashMap::new()),
        relay_addrs: RefCell::new(HashMap::new()),
        index,
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
    });
    let mut tasks = Vec::new();
    let inbox = worker.shared.local_relays.open_inbox(index);
    tasks.push(tokio::task::spawn_local(serve_inbox(worker.clone(), inbox)));
    for i in 0..worker.udp.len() {
        tasks.push(tokio::task::spawn_local(serve_udp(worker.clone(), i)));
    }
    for (addr, listener) in tcp {
        tasks.push(tokio::task::spawn_local(serve_tcp(
            worker.clone(),
            addr,
            listener,
        )));
    }
    if let Some(certs) = worker.shared.control.tls.clone() {
        for (addr, listener) in tls_tcp {
            tasks.push(tokio::task::spawn_local(serve_tls(
                worker.clone(),
                addr,
                listener,
                certs.clone(),
            )));
        }
    }
    timers(&worker).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// The once-a-second housekeeping; returns when the relay stops.
async fn timers(worker: &Rc<Worker>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let control = &worker.shared.control;
        let generation = control.generation.load(Ordering::Acquire);
        if generation != worker.generation.get() {
            worker.generation.set(generation);
            worker.server.borrow_mut().set_config(control.config());
        }
        let draining = control.draining.load(Ordering::Acquire);
        worker.server.borrow_mut().set_draining(draining);
        if control.stop.load(Ordering::Acquire) {
            worker.server.borrow_mut().shutdown();
            worker.apply_events();
            return;
        }
        let now = Instant::now();
        // What the kernel forwarded on this worker's channels and permissions counts toward
        // their allocations' bandwidth caps (read only when a cap is configured): over it, the
        // core takes the allocation out of the kernel until the budget recovers.
        if let Some(dp) = &worker.shared.dataplane
            && worker.server.borrow().config().quotas.max_bps != 0
        {
            let mut server = worker.server.borrow_mut();
            match dp.take_traffic(|tuple| server.allocation(tuple).is_some()) {
                Ok(taken) => {
                    for t in taken {
                        server.charge_offloaded(&t.tuple, t.bytes, now);
                    }
                }
                Err(err) => tracing::debug!(%err, "reading the XDP channel counters"),
            }
        }
        worker.server.borrow_mut().tick(now);
        worker.apply_events();
    }
}

impl Worker {
    fn apply_events(&self) {
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
                    if self
                        .shared
                        .held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&addr)
                        .is_some()
                    {
                        self.shared.ports.release(addr);
                    }
                }
                // Mirrored into the kernel by the XDP dataplane when it is attached.
                Event::ChannelBound { .. } | Event::ChannelUnbound { .. } => {
                    if let Some(dp) = &self.shared.dataplane
                        && let Err(err) = dp.apply(&event)
                    {
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
                // Send and Data indications in the kernel: mirrored like channels.
                Event::PermissionInstalled { .. }
                | Event::PermissionRemoved { .. }
                | Event::AllocationInstalled { .. }
                | Event::AllocationRemoved { .. } => {
                    if let Some(dp) = &self.shared.dataplane
                        && let Err(err) = dp.apply(&event)
                    {
                        // Its indications keep working in userspace.
                        tracing::debug!(%err, "permission or allocation not offloaded to XDP");
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

    /// Applies what the core decided for a packet. `input` is the packet's buffer (for
    /// in-place forwarding), `out` the core's output buffer; `reply_to` is the client the packet
    /// came from, where a Reply goes: None for a peer's packet, which the core never answers
    /// (a Reply to no client would be counted as a send error).
    fn apply(
        self: &Rc<Self>,
        action: Action,
        input: &[u8],
        out: &mut [u8],
        reply_to: Option<&FiveTuple>,
    ) {
        match action {
            Action::None => {}
            Action::Reply { len } => self.reply(reply_to, &out[..len]),
            Action::ToPeer { relay, peer, range } => {
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
            Action::ToClient { tuple, data } => {
                let bytes = match data {
                    Buf::Input(range) => &input[range],
                    Buf::Output(len) => &out[..len],
                };
                self.to_client(&tuple, bytes);
            }
            Action::BindRelays(pending) => {
                let action = self.bind_relays(*pending, out);
                // The completion only ever sends to the client (from `out`).
                self.apply(action, &[], out, reply_to);
            }
            Action::Connect(pending) => {
                tokio::task::spawn_local(tcp_connect(self.clone(), *pending));
            }
            Action::BindData { len, connection_id } => {
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
    fn reply(&self, reply_to: Option<&FiveTuple>, bytes: &[u8]) {
        match reply_to {
            Some(tuple) => self.to_client(tuple, bytes),
            None => self.send_failed("relay"),
        }
    }

    fn send_failed(&self, transport: &str) {
        self.shared
            .metrics
            .send_errors
            .with_label_values(&[transport])
            .inc();
    }

    fn to_client(&self, tuple: &FiveTuple, bytes: &[u8]) {
        let ok = match tuple.transport {
            Transport::Udp => self.udp_send(tuple, bytes),
            Transport::Tcp | Transport::Tls => {
                let streams = self.streams.borrow();
                streams
                    .get(tuple)
                    .is_some_and(|tx| tx.try_send(bytes.to_vec()).is_ok())
            }
        };
        if !ok {
            self.send_failed(tuple.transport.as_str());
        }
    }

    fn udp_send(&self, tuple: &FiveTuple, bytes: &[u8]) -> bool {
        let server = tuple.server;
        let Some(index) = self.udp.iter().position(|l| {
            l.addr.port() == server.port()
                && l.addr.is_ipv4() == server.is_ipv4()
                && (l.addr.ip().is_unspecified() || l.addr.ip() == server.ip())
        }) else {
            return false;
        };
        let l = &self.udp[index];
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
        let failed = self
            .outbox
            .borrow_mut()
            .flush(|i| self.udp.get(i).map(|l| &l.socket));
        for _ in 0..failed {
            self.send_failed(Transport::Udp.as_str());
        }
    }

    fn bind_relays(self: &Rc<Self>, pending: PendingAllocation, out: &mut [u8]) -> Action {
        let ports = &self.shared.ports;
        let mut reserved = None;
        if pending.tcp {
            let primary = match pending.primary {
                RelayRequest::Bind { ip, .. } => {
                    ports.bind_tcp(ip).and_then(|l| self.register_tcp_relay(l))
                }
                RelayRequest::Reserved(_) => Err(BindFailure::NoCapacity),
            };
            let result = BindResult {
                primary,
                additional: None,
                reserved: None,
            };
            let action =
                self.server
                    .borrow_mut()
                    .complete_allocate(pending, result, Instant::now(), out);
            self.apply_events();
            return action;
        }
        let primary = match pending.primary {
            RelayRequest::Reserved(addr) => {
                let held = self
                    .shared
                    .held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&addr);
                held.ok_or(BindFailure::NoCapacity)
                    .and_then(|socket| self.register_relay(socket))
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
                        self.shared
                            .held
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(addr, next);
                        reserved = Some(addr);
                    }
                    self.register_relay(socket)
                }
                Err(e) => Err(e),
            },
        };
        let additional = pending.additional.map(|ip| {
            ports
                .bind(ip, false, false)
                .and_then(|(s, _)| self.register_relay(s))
        });
        let result = BindResult {
            primary,
            additional,
            reserved,
        };
        let action =
            self.server
                .borrow_mut()
                .complete_allocate(pending, result, Instant::now(), out);
        self.apply_events();
        action
    }

    /// Takes ownership of a bound relay socket: a handle, and a task reading it.
    fn register_relay(
        self: &Rc<Self>,
        socket: std::net::UdpSocket,
    ) -> Result<(RelayHandle, SocketAddr), BindFailure> {
        let addr = socket.local_addr().map_err(|_| BindFailure::NoCapacity)?;
        let socket = match UdpSocket::from_std(socket) {
            Ok(s) => Rc::new(s),
            Err(_) => {
                self.shared.ports.release(addr);
                return Err(BindFailure::NoCapacity);
            }
        };
        let handle = RelayHandle(self.next_handle.get());
        self.next_handle
            .set(self.next_handle.get().wrapping_add(1).max(1));
        let task = tokio::task::spawn_local(serve_relay(self.clone(), handle, socket.clone()));
        self.relay_addrs
            .borrow_mut()
            .insert(canonical_addr(addr), handle);
        self.shared.local_relays.insert(addr, self.index, handle);
        self.relays.borrow_mut().insert(
            handle,
            RelaySocket {
                socket: Some(socket),
                addr,
                task,
            },
        );
        Ok((handle, addr))
    }

    /// Data from one of this worker's allocations (relayed address `from`) to another of its
    /// relayed addresses (`to`): what that relay socket would receive from the loopback,
    /// handled at once, as the other allocation's peer data (its permissions, channels and
    /// bandwidth apply), without two system calls and a trip through the kernel.
    fn relay_locally(self: &Rc<Self>, to: RelayHandle, from: SocketAddr, data: &[u8]) {
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
        let action =
            self.server
                .borrow_mut()
                .handle_peer(to, from, peer, data.len(), Instant::now(), out);
        self.apply(action, peer, out, None);
    }

    /// Takes ownership of a TCP relay listener (RFC 6062): a handle, and a task accepting peers.
    fn register_tcp_relay(
        self: &Rc<Self>,
        listener: std::net::TcpListener,
    ) -> Result<(RelayHandle, SocketAddr), BindFailure> {
        let addr = listener.local_addr().map_err(|_| BindFailure::NoCapacity)?;
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(_) => {
                self.shared.ports.release(addr);
                return Err(BindFailure::NoCapacity);
            }
        };
        let handle = RelayHandle(self.next_handle.get());
        self.next_handle
            .set(self.next_handle.get().wrapping_add(1).max(1));
        let task = tokio::task::spawn_local(serve_tcp_relay(self.clone(), handle, listener));
        self.relays.borrow_mut().insert(
            handle,
            RelaySocket {
                socket: None,
                addr,
                task,
            },
        );
        Ok((handle, addr))
    }
}

/// Reads one client-facing UDP socket in batches.
async fn serve_udp(worker: Rc<Worker>, index: usize) {
    let listener = worker.udp[index].clone();
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
        let now = Instant::now();
        // More than one datagram (several entries, or one GRO train): answers go out together.
        worker.begin_batch(
            meta.iter()
                .take(n)
                .map(|m| m.len.div_ceil(m.stride.max(1)))
                .sum(),
        );
        for (m, buf) in meta.iter().take(n).zip(storage.chunks_mut(RECV_BUF)) {
            let local = SocketAddr::new(
                m.dst_ip.map_or(listener.addr.ip(), |ip| ip.to_canonical()),
                listener.addr.port(),
            );
            let stride = m.stride.max(1);
            // A GRO train carries several datagrams of `stride` bytes (the last may be shorter).
            for datagram in buf[..m.len].chunks_mut(stride) {
                let inbound = Inbound {
                    transport: Transport::Udp,
                    local,
                    remote: m.addr,
                    packet: datagram,
                };
                handle_client(&worker, &inbound, now, &mut out);
            }
        }
        worker.end_batch();
    }
}

/// One client packet through the core, timing requests.
fn handle_client(worker: &Rc<Worker>, inbound: &Inbound<'_>, now: Instant, out: &mut [u8]) {
    let request = Header::peek(inbound.packet)
        .filter(|h| h.typ.class == Class::Request)
        .map(|h| h.typ.method);
    let started = request.map(|_| Instant::now());
    let action = worker.server.borrow_mut().handle_client(inbound, now, out);
    trace_action(inbound, &action, out);
    worker.apply(action, inbound.packet, out, Some(&inbound.tuple()));
    if let (Some(method), Some(started)) = (request, started) {
        worker
            .shared
            .metrics
            .request_duration(method)
            .observe(started.elapsed().as_secs_f64());
    }
    worker.apply_events();
}

/// One debug line per answered request: filtered out (and nearly free) at the default level.
fn trace_action(inbound: &Inbound<'_>, action: &Action, out: &[u8]) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let transport = inbound.transport.as_str();
    let remote = inbound.remote;
    if let Action::Reply { len } = action
        && let Ok(msg) = crate::stun::Message::decode(&out[..*len])
    {
        let code = msg
            .get::<crate::stun::ErrorCode>()
            .and_then(Result::ok)
            .map_or(0, |e| e.code);
        tracing::debug!(transport, %remote, method = msg.method().as_str(), code, "answered");
    }
}

/// Reads one relay socket: datagrams from peers, [`PEER_BATCH`] per `recvmmsg`.
///
/// A batch shorter than [`PEER_BATCH`] means the socket's queue was empty when it was read, so
/// the socket's readiness is cleared then and there (by answering `WouldBlock` to `try_io`)
/// instead of by one more read that would only return EAGAIN: at media rates most wake-ups
/// bring one datagram, and that extra read cost one syscall per wake-up. The clear is
/// race-free: tokio clears only the readiness it handed out, so a datagram that arrived after
/// the read (epoll is edge-triggered: every arrival is a new event) wakes the task again.
async fn serve_relay(worker: Rc<Worker>, handle: RelayHandle, socket: Rc<UdpSocket>) {
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

/// Datagrams other workers' allocations send to this worker's relayed addresses.
async fn serve_inbox(worker: Rc<Worker>, mut inbox: mpsc::UnboundedReceiver<Handoff>) {
    while let Some((to, from, data)) = inbox.recv().await {
        worker.hand_over(to, from, &data);
        worker.apply_events();
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
        let action = worker
            .server
            .borrow_mut()
            .handle_peer(handle, m.addr, frame, m.len, now, out);
        worker.apply(action, frame, out, None);
        worker.apply_events();
    }
    worker.end_batch();
    more
}

/// The next client connection on a TCP or TLS listener bound to `addr`, with Nagle off: the
/// stream, the client's address and the local address it reached.
async fn accept_client(
    listener: &TcpListener,
    addr: SocketAddr,
    what: &str,
) -> (tokio::net::TcpStream, SocketAddr, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().unwrap_or(addr);
                return (stream, remote, local);
            }
            Err(err) => {
                // Out of file descriptors and the like: wait a moment rather than spin.
                tracing::warn!(%err, %addr, "accepting a {what} connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_tcp(worker: Rc<Worker>, addr: SocketAddr, listener: TcpListener) {
    loop {
        let (stream, remote, local) = accept_client(&listener, addr, "TCP").await;
        let worker = worker.clone();
        tokio::task::spawn_local(async move {
            serve_stream(
                worker,
                stream,
                FiveTuple {
                    transport: Transport::Tcp,
                    client: remote,
                    server: local,
                },
            )
            .await;
        });
    }
}

/// Accepts TLS connections: each handshake runs in its own task, bounded in time, and a
/// finished one is served like TCP. Failed handshakes (scanners, plain TCP, wrong versions) are
/// counted and logged at debug level only.
async fn serve_tls(
    worker: Rc<Worker>,
    addr: SocketAddr,
    listener: TcpListener,
    certs: Arc<tls::Certificates>,
) {
    loop {
        let (stream, remote, local) = accept_client(&listener, addr, "TLS").await;
        let worker = worker.clone();
        let certs = certs.clone();
        tokio::task::spawn_local(async move {
            match tls::accept(&certs, stream, TLS_HANDSHAKE_TIMEOUT).await {
                Ok(stream) => {
                    let tuple = FiveTuple {
                        transport: Transport::Tls,
                        client: remote,
                        server: local,
                    };
                    serve_stream(worker, stream, tuple).await;
                }
                Err(err) => {
                    worker
                        .shared
                        .metrics
                        .tls_handshake_failed(err.metric_label());
                    tracing::debug!(%remote, %local, %err, "TLS handshake failed");
                }
            }
        });
    }
}

/// Serves one stream connection (TCP or TLS): frames STUN and ChannelData (RFC 8656 §12.5),
/// answers through a queue that also carries relayed data, and ends the connection's
/// allocation when it closes.
async fn serve_stream<S>(worker: Rc<Worker>, stream: S, tuple: FiveTuple)
where
    S: AsyncRead + AsyncWrite + 'static,
{
    let metrics = worker.shared.metrics.clone();
    let gauge = metrics
        .connections
        .with_label_values(&[tuple.transport.as_str()]);
    gauge.inc();
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(STREAM_QUEUE);
    let writer_tx = tx.clone();
    worker.streams.borrow_mut().insert(tuple, tx);
    let writer = tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
            // TLS holds records back until flushed: flush once the queue is empty.
            if rx.is_empty() && wr.flush().await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });

    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut filled = 0;
    let mut out = vec![0u8; MAX_REPLY_LEN];
    'conn: loop {
        let mut start = 0;
        loop {
            let frame_len = match stream_frame_len(&buf[start..filled]) {
                Ok(Some(n)) if n <= filled - start => n,
                Ok(_) => break,
                Err(_) => {
                    metrics.dropped(tuple.transport, proto::DropReason::NotStun);
                    break 'conn;
                }
            };
            let inbound = Inbound {
                transport: tuple.transport,
                local: tuple.server,
                remote: tuple.client,
                packet: &buf[start..start + frame_len],
            };
            handle_client(&worker, &inbound, Instant::now(), &mut out);
            start += frame_len;
            let spliced = worker.splice_requests.borrow_mut().remove(&tuple);
            if let Some(id) = spliced {
                // ConnectionBind succeeded: from here on this connection is a raw pipe to the
                // peer, starting with whatever followed the request in the buffer.
                let rest = buf[start..filled].to_vec();
                worker.streams.borrow_mut().remove(&tuple);
                splice(&worker, id, tuple, rd, writer_tx, rest).await;
                worker.server.borrow_mut().tcp_connection_closed(id);
                worker.apply_events();
                let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
                gauge.dec();
                return;
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        // A frame is at most 20 + 65535 bytes, which the buffer holds: it never fills up.
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, rd.read(&mut buf[filled..])).await {
            Ok(Ok(n)) if n > 0 => filled += n,
            _ => break,
        }
    }
    worker.streams.borrow_mut().remove(&tuple);
    worker.server.borrow_mut().client_closed(&tuple);
    worker.apply_events();
    // Let queued answers go out, then close.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
    gauge.dec();
}

// ---------------------------------------------------------------------------------------------
// RFC 6062 TCP relaying

/// How long an outgoing Connect may take (RFC 6062 §5.2: at least 30 s).
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts peers on a TCP relayed address; the core decides (permission) and announces them.
async fn serve_tcp_relay(worker: Rc<Worker>, handle: RelayHandle, listener: TcpListener) {
    let mut out = vec![0u8; MAX_REPLY_LEN];
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let decided =
            worker
                .server
                .borrow_mut()
                .peer_connected(handle, peer, Instant::now(), &mut out);
        match decided {
            Some((id, action)) => {
                let _ = stream.set_nodelay(true);
                if let Ok(stream) = stream.into_std() {
                    lock(&worker.shared.tcp_pending).insert(id, stream);
                }
                worker.apply(action, &[], &mut out, None);
            }
            None => drop(stream),
        }
        worker.apply_events();
    }
}

/// Makes the outgoing connection of a Connect request, from the relayed address.
async fn tcp_connect(worker: Rc<Worker>, pending: proto::PendingConnect) {
    let connect = async {
        let socket = if pending.peer.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(pending.relay_addr)?;
        socket.connect(pending.peer).await
    };
    let stream = match tokio::time::timeout(TCP_CONNECT_TIMEOUT, connect).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(peer = %pending.peer, %err, "Connect failed");
            None
        }
        Err(_) => None,
    };
    let tuple = pending.tuple;
    let mut out = vec![0u8; MAX_REPLY_LEN];
    let (action, id) = worker.server.borrow_mut().complete_connect(
        pending,
        stream.is_some(),
        Instant::now(),
        &mut out,
    );
    if let (Some(id), Some(stream)) = (id, stream) {
        let _ = stream.set_nodelay(true);
        if let Ok(stream) = stream.into_std() {
            lock(&worker.shared.tcp_pending).insert(id, stream);
        }
    }
    worker.apply(action, &[], &mut out, Some(&tuple));
    worker.apply_events();
}

/// Pipes a bound client data connection and its peer data connection together until either
/// closes or the core closes them.
async fn splice<R>(
    worker: &Rc<Worker>,
    id: u32,
    tuple: FiveTuple,
    mut client_rd: R,
    to_client: mpsc::Sender<Vec<u8>>,
    first: Vec<u8>,
) where
    R: AsyncRead + Unpin,
{
    let Some(peer) = lock(&worker.shared.tcp_pending).remove(&id) else {
        return;
    };
    let Ok(peer) = tokio::net::TcpStream::from_std(peer) else {
        return;
    };
    let notify = Arc::new(tokio::sync::Notify::new());
    lock(&worker.shared.tcp_spliced).insert(id, notify.clone());
    let metrics = worker.shared.metrics.clone();
    let up = metrics
        .relayed(
            crate::metrics::Datapath::Userspace,
            tuple.transport,
            crate::metrics::Direction::ClientToPeer,
        )
        .clone();
    let down = metrics
        .relayed(
            crate::metrics::Datapath::Userspace,
            tuple.transport,
            crate::metrics::Direction::PeerToClient,
        )
        .clone();
    let (mut peer_rd, mut peer_wr) = peer.into_split();
    let client_to_peer = async {
        if !first.is_empty() {
            peer_wr.write_all(&first).await?;
            up.packets.inc();
            up.bytes.inc_by(first.len() as u64);
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            peer_wr.write_all(&buf[..n]).await?;
            up.packets.inc();
            up.bytes.inc_by(n as u64);
        }
    };
    let peer_to_client = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = peer_rd.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, io::Error>(());
            }
            if to_client.send(buf[..n].to_vec()).await.is_err() {
                return Ok(());
            }
            down.packets.inc();
            down.bytes.inc_by(n as u64);
        }
    };
    tokio::select! {
        _ = client_to_peer => {}
        _ = peer_to_client => {}
        _ = notify.notified() => {}
    }
    lock(&worker.shared.tcp_spliced).remove(&id);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `addr` with an IPv4-mapped IPv6 address as the IPv4 one: how relayed addresses are looked up.
fn canonical_addr(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
