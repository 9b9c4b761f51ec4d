//! The listening addresses: each bound once per worker with SO_REUSEPORT, for UDP and TCP
//! ([`bind`]) or for TLS ([`bind_tls`]), before the workers start.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// One listening address, bound for UDP and TCP, once per worker (SO_REUSEPORT).
#[derive(Debug)]
pub struct ListenerSet {
    pub addr: SocketAddr,
    pub(super) udp: Vec<std::net::UdpSocket>,
    pub(super) tcp: Vec<std::net::TcpListener>,
}

pub(super) fn reuseport_socket(
    addr: SocketAddr,
    ty: Type,
    protocol: Protocol,
) -> io::Result<Socket> {
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
    pub(super) tcp: Vec<std::net::TcpListener>,
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
