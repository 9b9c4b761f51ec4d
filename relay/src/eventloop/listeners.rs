//! The listening addresses: each bound once per worker with SO_REUSEPORT, for UDP and TCP
//! ([`bind`]) or for TLS ([`bind_tls`]), before the workers start.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// One listening address, bound for UDP and TCP, once per worker (SO_REUSEPORT).
#[derive(Debug)]
pub struct ListenerSet {
    pub addr: SocketAddr,
    /// The receive buffer each UDP socket got, in bytes as the kernel counts them (twice the
    /// payload it holds; see [`UDP_RECV_BUFFER`]).
    pub udp_recv_buffer: usize,
    pub(super) udp: Vec<std::net::UdpSocket>,
    pub(super) tcp: Vec<std::net::TcpListener>,
}

/// The receive buffer each UDP listener asks for: 4 MiB, about 5,000 media datagrams, so that
/// a worker kept off the CPU for a few hundred milliseconds (a busy shared host, a flood being
/// answered) loses none of its clients' packets; the default (`net.core.rmem_default`, 208
/// KiB) holds about 270, a tenth of a second of a worker's traffic at a few thousand packets a
/// second. The kernel caps SO_RCVBUF at `net.core.rmem_max` (208 KiB unless raised);
/// SO_RCVBUFFORCE goes past it with CAP_NET_ADMIN, which the XDP fast path needs anyway. The
/// kernel doubles what it is given, for its bookkeeping, and reports the doubled size.
pub const UDP_RECV_BUFFER: usize = 4 << 20;

/// Asks for [`UDP_RECV_BUFFER`] on a UDP listener; returns what it got (kernel-counted).
fn size_recv_buffer(socket: &Socket) -> usize {
    // Failing to resize is no reason not to serve: the socket keeps the default.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    #[cfg(target_os = "linux")]
    if socket.recv_buffer_size().unwrap_or(0) < 2 * UDP_RECV_BUFFER {
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(socket, UDP_RECV_BUFFER);
    }
    socket.recv_buffer_size().unwrap_or(0)
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
    let mut udp_recv_buffer = size_recv_buffer(&first);
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("not an IP socket"))?;
    let mut udp = vec![std::net::UdpSocket::from(first)];
    let mut tcp = Vec::new();
    for i in 0..workers {
        if i > 0 {
            let socket = reuseport_socket(bound, Type::DGRAM, Protocol::UDP)?;
            udp_recv_buffer = udp_recv_buffer.min(size_recv_buffer(&socket));
            udp.push(socket.into());
        }
        let listener = reuseport_socket(bound, Type::STREAM, Protocol::TCP)?;
        listener.listen(1024)?;
        tcp.push(listener.into());
    }
    Ok(ListenerSet {
        addr: bound,
        udp_recv_buffer,
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
