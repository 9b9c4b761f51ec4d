//! Handing the listening ports over to another relay process on the same host, the workers'
//! side: every UDP client with an allocation gets a socket of its own, then the listeners
//! close. The two processes agree on when each step happens through serve/handover.rs.
//!
//! Why: two relay pods on one node with hostNetwork (the old one draining, the new one
//! starting) share the host ports. Both bind them with SO_REUSEPORT (same user), so their UDP
//! sockets form one reuseport group, and the kernel picks a group member for a datagram by a
//! hash of its 4-tuple modulo the group's size. When the new process binds, the size changes
//! and the kernel re-hashes every client: measured on Linux 6.18 with two processes on
//! 127.0.0.1 and on 0.0.0.0, 27 and 33 of 40 clients moved, about half of them to the new
//! process, which does not know their allocations (a Refresh there is answered 437, their
//! ChannelData is dropped). Established TCP and TLS connections are not affected; new ones are
//! spread over both processes' listeners.
//!
//! What keeps the old process's clients where their allocations are:
//! - **A socket per client** ([`Step::Pin`]): for each UDP allocation, the worker that owns it
//!   binds a socket to the 5-tuple's server address (the listener's port, the address the
//!   client reached) with SO_REUSEADDR only and connect()s it to the client. A connected
//!   socket scores higher in the kernel's UDP lookup (udp4_lib_lookup2, udp6 alike) than the
//!   unconnected ones, so it wins whenever the lookup scores; its datagrams take the same path
//!   as the listener's ([`super::udp::serve_udp`]). It is deliberately not in the reuseport
//!   group: a connected member would count in the group's size, and closing it when its
//!   allocation ends would re-hash the new process's clients again (measured: 15 of 20 moved
//!   between the new process's sockets; none with sockets outside the group).
//! - **A marker** ([`marker`]): the lookup returns the group's hashed choice without scoring
//!   unless the group "has connections" (`reuseport_has_conns`). So, once every client has its
//!   socket, one member of each listener's group is connected to its own address (it receives
//!   nothing); the kernel then scores the whole bucket, and the flag stays with the group (it is
//!   never cleared, measured) after the marker closes with the listeners. For listeners on
//!   0.0.0.0 or [::] the sockets of single clients are bound to a specific address, a bucket the
//!   kernel looks in first, so the marker is not even needed there.
//! - **Then the listeners close** ([`Step::Close`]), once the new process has bound its own:
//!   each UDP listener is first connected to its own address, which takes it out of the
//!   kernel's choice for every other datagram at once; what was already queued on it is read
//!   and handled as usual; then it is closed. TCP and TLS listeners have their queued
//!   connections accepted and served, then close (a handshake that completes in the
//!   microseconds between the last accept and the close is reset unless the host enables
//!   `net.ipv4.tcp_migrate_req`).
//!
//! - **Datagrams passed on**: a socket is bound before it is connected, and a thread can be
//!   preempted between the two calls; meanwhile the kernel may give the new socket (or a
//!   marker, or another worker's listener) datagrams of other clients. So before any socket is
//!   made, each worker says which UDP allocations it owns ([`Step::List`]), and from then on a
//!   datagram that reaches a worker for another worker's allocation is passed to that worker
//!   ([`Step::Datagram`]) and handled there as if it had arrived on its own socket.
//!
//! While the hand-over runs, the process drains: a client that starts an allocation on it is
//! refused (508), as on SIGTERM. The sockets of single clients are closed by the worker's
//! housekeeping once their allocation has ended ([`close_ended`]).
//!
//! The one moment the new process's clients can be re-hashed between its workers is when the
//! old process's listeners close: only clients that made an allocation in the milliseconds
//! between the new process binding and the old one closing are exposed.

use super::spawn_counted;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use quinn_udp::UdpSocketState;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::listeners::reuseport_socket;
use super::streams::{spawn_tcp, spawn_tls};
use super::udp::{UdpListener, drain_udp, serve_udp};
use super::worker::{Worker, handle_client};
use crate::proto::{FiveTuple, Inbound, MAX_REPLY_LEN, Transport};
use crate::tls;

/// One step of a hand-over, sent to every worker; each answers when done.
#[derive(Debug)]
pub(super) enum Step {
    /// Drain, and say which UDP allocations are this worker's (answer: their 5-tuples).
    List(oneshot::Sender<Vec<FiveTuple>>),
    /// Give every UDP client with an allocation a socket of its own (answer: how many got
    /// one).
    Pin(oneshot::Sender<usize>),
    /// A client datagram of one of this worker's allocations that reached another socket.
    Datagram {
        local: SocketAddr,
        remote: SocketAddr,
        data: Vec<u8>,
    },
    /// Close the listeners, handling what is queued on them (answer: datagrams handled).
    Close(oneshot::Sender<usize>),
}

/// A TCP or TLS listener of a worker (TLS when it has certificates).
pub(super) struct StreamListener {
    pub(super) listener: Rc<TcpListener>,
    pub(super) tls: Option<Arc<tls::Certificates>>,
}

/// Takes the steps of hand-overs for one worker, in order.
pub(super) async fn serve_steps(worker: Rc<Worker>, mut steps: mpsc::UnboundedReceiver<Step>) {
    let mut out = vec![0u8; MAX_REPLY_LEN];
    while let Some(step) = steps.recv().await {
        match step {
            Step::List(done) => {
                worker.server.borrow_mut().set_draining(true);
                worker.handing_over.set(true);
                let _ = done.send(worker.server.borrow().udp_tuples().copied().collect());
            }
            Step::Datagram {
                local,
                remote,
                mut data,
            } => {
                let inbound = Inbound {
                    transport: Transport::Udp,
                    local,
                    remote,
                    packet: &mut data,
                };
                handle_client(&worker, &inbound, Instant::now(), &mut out);
            }
            Step::Pin(done) => {
                let _ = done.send(pin_clients(&worker));
            }
            Step::Close(done) => {
                let _ = done.send(close_listeners(&worker));
            }
        }
    }
}

/// A socket of one client: the 5-tuple's server address, connected to the client.
fn client_socket(server: SocketAddr, client: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(server),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if server.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // SO_REUSEADDR (which the listeners have too) and not SO_REUSEPORT: outside the group.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&server.into())?;
    socket.connect(&client.into())?;
    Ok(socket.into())
}

/// Where a socket bound to `addr` is connected to take it out of the kernel's choice: its
/// own address (loopback for a wildcard one), from which no client sends.
fn own_address(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// A member of the reuseport group of the UDP listener `addr`, connected to its own address:
/// the group then chooses by score (see the module's doc). Also returns the datagrams the
/// kernel gave it before it was connected, to be passed on (client and bytes).
pub(super) fn marker(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, Vec<Caught>)> {
    let socket: std::net::UdpSocket = reuseport_socket(addr, Type::DGRAM, Protocol::UDP)?.into();
    socket.connect(own_address(addr))?;
    let mut caught = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => caught.push((from, buf[..n].to_vec())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: all read. Others (ICMP errors): nothing more to read.
            Err(_) => break,
        }
    }
    Ok((socket, caught))
}

/// A datagram a marker caught: the client's address and the bytes.
pub(super) type Caught = (SocketAddr, Vec<u8>);

impl Worker {
    /// During a hand-over: passes a client datagram on to the worker that owns its
    /// allocation, if that is another one (true then).
    pub(super) fn pass_on(&self, local: SocketAddr, remote: SocketAddr, data: &[u8]) -> bool {
        let control = &self.shared.control;
        match control.owner(local, remote) {
            Some(owner) if owner != self.index => {
                control.pass_on(local, remote, data.to_vec());
                true
            }
            _ => false,
        }
    }
}

/// [`Step::Pin`] on one worker: refuses new allocations from now on (the worker sees the
/// control's drain within a second; this makes it immediate), then gives each UDP client with
/// an allocation of this worker a socket of its own, served like a listener.
fn pin_clients(worker: &Rc<Worker>) -> usize {
    let tuples: Vec<FiveTuple> = worker.server.borrow().udp_tuples().copied().collect();
    let mut pinned = 0;
    for tuple in tuples {
        let key = (tuple.server, tuple.client);
        if worker.pinned_tasks.borrow().contains_key(&key) {
            continue;
        }
        let listener = client_socket(tuple.server, tuple.client).and_then(|socket| {
            let state = UdpSocketState::new((&socket).into())?;
            Ok(Rc::new(UdpListener {
                socket: UdpSocket::from_std(socket)?,
                state,
                addr: tuple.server,
                client: Some(tuple.client),
            }))
        });
        match listener {
            Ok(listener) => {
                worker.udp.borrow_mut().push(listener.clone());
                let task = spawn_counted(
                    worker.shared.metrics.worker_tasks.clone(),
                    serve_udp(worker.clone(), listener),
                );
                worker.pinned_tasks.borrow_mut().insert(key, task);
                pinned += 1;
            }
            Err(err) => tracing::warn!(
                client = %tuple.client,
                server = %tuple.server,
                %err,
                "cannot give a client a socket of its own; it may lose packets to the new relay"
            ),
        }
    }
    pinned
}

/// [`Step::Close`] on one worker: its listeners out of the kernel's choice, what is queued on
/// them handled, then closed.
fn close_listeners(worker: &Rc<Worker>) -> usize {
    let listeners: Vec<Rc<UdpListener>> = worker
        .udp
        .borrow()
        .iter()
        .filter(|l| l.client.is_none())
        .cloned()
        .collect();
    for l in &listeners {
        // A connected socket receives only from its peer: from now on nothing new is queued.
        if let Err(err) = SockRef::from(&l.socket).connect(&own_address(l.addr).into()) {
            tracing::debug!(addr = %l.addr, %err, "cannot connect the listener before closing it");
        }
    }
    for task in worker.listener_tasks.take() {
        task.abort();
    }
    let mut drained = 0;
    for l in &listeners {
        drained += drain_udp(worker, l);
    }
    for s in worker.stream_listeners.take() {
        accept_queued(worker, &s);
    }
    worker.udp.borrow_mut().retain(|l| l.client.is_some());
    drained
}

/// Accepts and serves the connections queued on a stream listener about to close.
fn accept_queued(worker: &Rc<Worker>, s: &StreamListener) {
    loop {
        let accepted = SockRef::from(&*s.listener)
            .accept()
            .and_then(|(socket, _)| {
                socket.set_nonblocking(true)?;
                let stream = TcpStream::from_std(socket.into())?;
                let _ = stream.set_nodelay(true);
                Ok((stream.peer_addr()?, stream.local_addr()?, stream))
            });
        match accepted {
            Ok((remote, local, stream)) => match &s.tls {
                Some(certs) => spawn_tls(worker, stream, remote, local, certs.clone()),
                None => spawn_tcp(worker, stream, remote, local),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                tracing::debug!(%err, "accepting a queued connection while handing over");
                return;
            }
        }
    }
}

/// Closes the sockets of single clients whose allocation has ended (run between batches, by
/// the worker's housekeeping: the outbox holds indexes into the socket list during a batch).
pub(super) fn close_ended(worker: &Rc<Worker>) {
    if worker.pinned_tasks.borrow().is_empty() {
        return;
    }
    let ended: Vec<(SocketAddr, SocketAddr)> = {
        let server = worker.server.borrow();
        worker
            .pinned_tasks
            .borrow()
            .keys()
            .filter(|(server_addr, client)| {
                let tuple = FiveTuple {
                    transport: Transport::Udp,
                    client: *client,
                    server: *server_addr,
                };
                server.allocation(&tuple).is_none()
            })
            .copied()
            .collect()
    };
    for key in ended {
        if let Some(task) = worker.pinned_tasks.borrow_mut().remove(&key) {
            task.abort();
        }
        worker
            .udp
            .borrow_mut()
            .retain(|l| l.client.is_none_or(|c| (l.addr, c) != key));
    }
}
