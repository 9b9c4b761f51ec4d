//! The event loop: the only owner of sockets, timers and threads.
//!
//! One worker thread per core, each with a single-threaded runtime and its own protocol shard
//! ([`proto::Server`]). Every listening address is bound once per worker with SO_REUSEPORT, so
//! the kernel spreads clients over workers and keeps each client 5-tuple on one of them; the
//! relay sockets of an allocation live in the worker that owns it, so a packet is handled from
//! receive to send on one thread with no lock. Client-facing UDP is read in batches
//! (recvmmsg, GRO) with the destination address of each datagram (IP_PKTINFO), which is both
//! the 5-tuple's server address and the source address of the answer.
//!
//! The parts: this module starts and steers the workers ([`Control`], [`Shared`], [`start`]);
//! `ports` holds the relay port range, `listeners` binds the listening addresses, `worker` is a
//! worker's state and applies what the protocol core decides, `udp` reads client and relay
//! sockets, `streams` serves TCP and TLS clients (`stream_queue` holds what waits to be written to each,
//! `admission` caps how many are open), `tcp_relay` the RFC 6062 peer connections,
//! `same_relay` hands data between two relayed addresses of this relay, `sendbatch` sends
//! datagrams to clients in batches, and `handover` gives each UDP client a socket of its own and
//! closes the listeners when another relay process takes the host ports over.

mod admission;
mod handover;
mod listeners;
mod ports;
mod same_relay;
mod sendbatch;
mod stream_queue;
mod streams;
mod tcp_relay;
mod udp;
mod worker;

pub use admission::Admission;
pub use listeners::{ListenerSet, TlsListenerSet, UDP_RECV_BUFFER, bind, bind_tls};
pub use ports::RelayPorts;
pub use same_relay::LocalRelays;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::IntGauge;
use quinn_udp::UdpSocketState;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::proto::{self, Ledger};
use crate::tls;

use streams::{serve_tcp, serve_tls};
use udp::{UdpListener, serve_udp};
use worker::Worker;

/// `tokio::task::spawn_local`, the task counted in `gauge` (`xdpturn_worker_tasks`) from its
/// spawn until it ends or is aborted (the future, and with it the count's guard, is dropped
/// either way). Every task of a worker is spawned so: the gauge follows the load (listeners,
/// connections, relayed sockets, users awaited) and a leak shows as a slope over hours.
pub(crate) fn spawn_counted<F>(gauge: IntGauge, future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    /// Counts a task while it is alive.
    struct Alive(IntGauge);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    gauge.inc();
    let alive = Alive(gauge);
    tokio::task::spawn_local(async move {
        let _alive = alive;
        future.await
    })
}

/// Shared state the main thread uses to steer the workers.
#[derive(Debug)]
pub struct Control {
    config: Mutex<Arc<proto::Config>>,
    generation: AtomicU64,
    draining: AtomicBool,
    /// Drained by SIGTERM (not only by a hand-over, which can be undone).
    terminating: AtomicBool,
    stop: AtomicBool,
    /// The TLS certificate, when there are TLS listeners; reloaded in place.
    tls: Option<Arc<tls::Certificates>>,
    /// Each worker's queue of hand-over steps, by worker index (eventloop/handover.rs).
    handover: Mutex<Vec<(usize, mpsc::UnboundedSender<handover::Step>)>>,
    /// During a hand-over, the worker that owns each UDP allocation, by (server, client)
    /// address: a datagram of one that reaches another worker is passed on to it.
    owners: Mutex<HashMap<(SocketAddr, SocketAddr), usize>>,
    /// Sockets that keep the listeners' SO_REUSEPORT groups choosing by score while the
    /// listeners are handed over (eventloop/handover.rs).
    markers: Mutex<Vec<std::net::UdpSocket>>,
}

impl Control {
    pub fn new(config: Arc<proto::Config>) -> Self {
        Self {
            config: Mutex::new(config),
            generation: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            terminating: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            tls: None,
            handover: Mutex::new(Vec::new()),
            owners: Mutex::new(HashMap::new()),
            markers: Mutex::new(Vec::new()),
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
        *lock(&self.config) = config;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn config(&self) -> Arc<proto::Config> {
        lock(&self.config).clone()
    }

    /// Stop accepting new allocations.
    pub fn drain(&self) {
        self.terminating.store(true, Ordering::Release);
        self.draining.store(true, Ordering::Release);
    }

    /// Whether new allocations are refused (drain or hand-over).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Undoes [`Control::pin_clients`] when the other process went away before binding: new
    /// allocations are taken again (within a second) unless [`Control::drain`] was called.
    /// The clients' own sockets stay until their allocations end; they are harmless.
    pub fn resume(&self) {
        lock(&self.markers).clear();
        if !self.terminating.load(Ordering::Acquire) {
            self.draining.store(false, Ordering::Release);
        }
    }

    /// The first half of handing the listeners over to another relay process on the same
    /// ports (see eventloop/handover.rs): drains (no new allocations), gives every UDP client
    /// with an allocation a socket of its own, connected to it, in the worker that owns the
    /// allocation, then marks the SO_REUSEPORT group of each of `listeners` (the UDP listening
    /// addresses) so that the kernel chooses by score from then on. Returns how many clients
    /// got a socket. The other process may bind the ports once this has returned.
    pub async fn pin_clients(&self, listeners: &[SocketAddr]) -> usize {
        self.draining.store(true, Ordering::Release);
        // First who owns what (each worker drains as it answers), so that a datagram that
        // reaches the wrong worker while the sockets are made is passed on.
        let owned = self.each_worker(handover::Step::List).await;
        {
            let mut owners = lock(&self.owners);
            for (index, tuples) in owned {
                for t in tuples {
                    owners.insert((t.server, t.client), index);
                }
            }
        }
        let pinned = self
            .each_worker(handover::Step::Pin)
            .await
            .into_iter()
            .map(|(_, n)| n)
            .sum();
        for &addr in listeners {
            match handover::marker(addr) {
                Ok((socket, caught)) => {
                    lock(&self.markers).push(socket);
                    // (A wildcard marker leaves the group as it connects, and catches no
                    // client of an allocation: those have sockets on their own address.)
                    for (remote, data) in caught {
                        if !addr.ip().is_unspecified() {
                            self.pass_on(addr, remote, data);
                        }
                    }
                }
                Err(err) => tracing::warn!(%addr, %err, "cannot mark the listener's group"),
            }
        }
        pinned
    }

    /// The worker that owns the UDP allocation of (`local`, `remote`), during a hand-over.
    fn owner(&self, local: SocketAddr, remote: SocketAddr) -> Option<usize> {
        lock(&self.owners).get(&(local, remote)).copied()
    }

    /// Hands a client datagram to the worker that owns its allocation (any worker if none
    /// does: a request without state).
    fn pass_on(&self, local: SocketAddr, remote: SocketAddr, data: Vec<u8>) {
        let owner = self.owner(local, remote);
        let workers = lock(&self.handover);
        let to = workers
            .iter()
            .find(|(i, _)| owner.is_none_or(|o| o == *i))
            .map(|(_, tx)| tx);
        if let Some(tx) = to {
            let _ = tx.send(handover::Step::Datagram {
                local,
                remote,
                data,
            });
        }
    }

    /// The second half of a hand-over: every worker takes its UDP listeners out of the
    /// kernel's choice, handles what was queued on them and closes them, accepts what is
    /// queued on its TCP and TLS listeners and closes them. Returns the datagrams handled.
    pub async fn close_listeners(&self) -> usize {
        let drained = self
            .each_worker(handover::Step::Close)
            .await
            .into_iter()
            .map(|(_, n)| n)
            .sum();
        lock(&self.markers).clear();
        drained
    }

    /// Sends a step to every worker and waits for each to have taken it: (worker, answer).
    async fn each_worker<T>(
        &self,
        step: impl Fn(oneshot::Sender<T>) -> handover::Step,
    ) -> Vec<(usize, T)> {
        let mut waiting = Vec::new();
        for (index, worker) in lock(&self.handover).iter() {
            let (tx, rx) = oneshot::channel();
            if worker.send(step(tx)).is_ok() {
                waiting.push((*index, rx));
            }
        }
        let mut done = Vec::new();
        for (index, rx) in waiting {
            if let Ok(answer) = rx.await {
                done.push((index, answer));
            }
        }
        done
    }

    /// End every allocation and stop the workers.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
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
    /// coturn's user database, when configured: requests whose user it is looking up wait for
    /// it in a task of their own ([`Command::AwaitUser`](crate::proto::Command::AwaitUser)).
    pub userdb: Option<Arc<crate::userdb::UserDb>>,
    /// Open TCP and TLS client connections, per source and in total, against their caps.
    pub admission: Arc<Admission>,
    /// Where allocations' status and traffic reports go (`--redis-statsdb`), when configured.
    pub usage: Option<crate::userdb::statsdb::UsageSink>,
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

/// Turns UDP GRO off on a listener where the TC program is attached (`UdpSocketState::new`
/// turns it on). The TC hook runs after the stack's GRO, which merges consecutive datagrams
/// for a socket that asked for GRO into one skb; the program leaves such a batch to the stack
/// (and so to userspace), which on a NIC with GRO on (the default) would be nearly every
/// ChannelData message to the listener. XDP runs before GRO, and generic XDP turns it off on
/// its device, so only tc mode needs this. The listener then reads what userspace still gets
/// one datagram at a time.
fn without_udp_gro(socket: &std::net::UdpSocket, addr: SocketAddr, worker: usize) {
    #[cfg(target_os = "linux")]
    match nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::UdpGroSegment, &false) {
        Ok(()) if worker == 0 => tracing::info!(
            %addr,
            "UDP GRO off on the listener: the TC program sees each datagram"
        ),
        Ok(()) => {}
        Err(err) => tracing::warn!(
            %addr,
            %err,
            "cannot turn UDP GRO off on the listener; the TC program passes merged datagrams up"
        ),
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (socket, addr, worker);
}

async fn run_worker(
    index: usize,
    sockets: Vec<(SocketAddr, std::net::UdpSocket, std::net::TcpListener)>,
    tls_sockets: Vec<(SocketAddr, std::net::TcpListener)>,
    shared: Shared,
) -> io::Result<()> {
    let mut udp = Vec::new();
    let mut tcp = Vec::new();
    let tc = shared.dataplane.as_ref().is_some_and(|dp| {
        dp.attachments()
            .iter()
            .any(|a| a.mode == crate::dataplane::XdpMode::Tc)
    });
    for (addr, u, t) in sockets {
        let state = UdpSocketState::new((&u).into())?;
        if tc {
            without_udp_gro(&u, addr, index);
        }
        udp.push(Rc::new(UdpListener {
            socket: UdpSocket::from_std(u)?,
            state,
            addr,
            client: None,
        }));
        tcp.push((addr, Rc::new(TcpListener::from_std(t)?)));
    }
    let mut tls_tcp = Vec::new();
    for (addr, t) in tls_sockets {
        tls_tcp.push((addr, Rc::new(TcpListener::from_std(t)?)));
    }
    let worker = Rc::new(Worker::new(index, shared, udp)?);
    let mut tasks = Vec::new();
    let inbox = worker.shared.local_relays.open_inbox(index);
    tasks.push(spawn_counted(
        worker.shared.metrics.worker_tasks.clone(),
        same_relay::serve_inbox(worker.clone(), inbox),
    ));
    let (steps_tx, steps) = mpsc::unbounded_channel();
    lock(&worker.shared.control.handover).push((index, steps_tx));
    tasks.push(spawn_counted(
        worker.shared.metrics.worker_tasks.clone(),
        handover::serve_steps(worker.clone(), steps),
    ));
    let mut listener_tasks = Vec::new();
    let listeners: Vec<_> = worker.udp.borrow().clone();
    for listener in listeners {
        listener_tasks.push(spawn_counted(
            worker.shared.metrics.worker_tasks.clone(),
            serve_udp(worker.clone(), listener),
        ));
    }
    let mut stream_listeners = Vec::new();
    for (addr, listener) in tcp {
        stream_listeners.push(handover::StreamListener {
            listener: listener.clone(),
            tls: None,
        });
        listener_tasks.push(spawn_counted(
            worker.shared.metrics.worker_tasks.clone(),
            serve_tcp(worker.clone(), addr, listener),
        ));
    }
    if let Some(certs) = worker.shared.control.tls.clone() {
        for (addr, listener) in tls_tcp {
            stream_listeners.push(handover::StreamListener {
                listener: listener.clone(),
                tls: Some(certs.clone()),
            });
            listener_tasks.push(spawn_counted(
                worker.shared.metrics.worker_tasks.clone(),
                serve_tls(worker.clone(), addr, listener, certs.clone()),
            ));
        }
    }
    *worker.listener_tasks.borrow_mut() = listener_tasks;
    *worker.stream_listeners.borrow_mut() = stream_listeners;
    timers(&worker).await;
    for t in tasks
        .into_iter()
        .chain(worker.listener_tasks.take())
        .chain(worker.pinned_tasks.take().into_values())
    {
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
        // their allocations' bandwidth caps (read only when a cap is configured or usage is
        // reported): over it, the core takes the allocation out of the kernel until the budget
        // recovers. It is counted in the allocations' usage too.
        let capped = worker.server.borrow().config().quotas.max_bps != 0;
        let reported = worker.server.borrow().reports_usage();
        if let Some(dp) = &worker.shared.dataplane
            && (capped || reported)
        {
            let mut server = worker.server.borrow_mut();
            match dp.take_traffic(|tuple| server.allocation(tuple).is_some()) {
                Ok(taken) => {
                    for t in taken {
                        if capped {
                            server.charge_offloaded(&t.tuple, t.bytes(), now);
                        }
                        if reported {
                            server.count_offloaded(&t.tuple, t.usage());
                        }
                    }
                }
                Err(err) => tracing::debug!(%err, "reading the XDP channel counters"),
            }
        }
        worker.server.borrow_mut().tick(now);
        worker.apply_events();
        handover::close_ended(worker);
        worker.shared.admission.trim_after_flood();
    }
}

/// Locks `m`; a mutex poisoned by a thread that panicked while holding it is used as it is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
