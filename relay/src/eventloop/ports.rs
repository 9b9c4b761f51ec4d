//! The relay port range, shared by all workers: which ports this process holds, and binding
//! UDP relay sockets (an even port, and the port after it reserved, when asked) and RFC 6062
//! TCP relay listeners in it.

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use socket2::{Domain, Protocol, Socket, Type};

use super::listeners::reuseport_socket;
use super::lock;
use crate::proto::BindFailure;

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
            // Another relay process of this user (one this relay took the host's ports over
            // from, serve/handover.rs) may hold the port with SO_REUSEPORT, which would let
            // this bind succeed and share its peers' connections: a plain bind tells first.
            let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            if addr.is_ipv6() {
                probe.set_only_v6(true)?;
            }
            probe.bind(&addr.into())?;
            drop(probe);
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
        let mut used = lock(&self.used);
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
        lock(&self.used).remove(&addr);
    }

    pub fn in_use(&self) -> usize {
        lock(&self.used).len()
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
