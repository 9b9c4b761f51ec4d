//! Datagrams to clients, gathered while one batch of received packets is handled and then sent
//! together: one `sendmmsg` per listener socket and source address instead of one `sendmsg`
//! per datagram.
//!
//! Where batches form: a relay socket's `recvmmsg` brings several datagrams of one peer (the
//! packets of a video frame arrive back to back), and a listener's brings several clients'
//! requests; what the core answers to them leaves in one call. The event loop queues only
//! while it handles more than one received datagram, so at media rates, where a wake-up
//! usually brings one, nothing is copied and nothing waits.
//!
//! The source address: a listener bound to 0.0.0.0 or :: answers from the address the client
//! wrote to (`IP_PKTINFO` / `IPV6_PKTINFO`), so datagrams are grouped by listener and source
//! address, and a group shares one control message. (quinn-udp, which sends single datagrams
//! with that control message, has no multi-destination `sendmmsg`; rustix's has no
//! `IP_PKTINFO`; nix has both, without unsafe code here.)

use std::net::{IpAddr, SocketAddr};

/// Datagrams queued per flush at most; the event loop flushes when it is reached.
pub const CAPACITY: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Item {
    /// The listener socket (an index the event loop gives it).
    listener: usize,
    dest: SocketAddr,
    src: Option<IpAddr>,
    start: usize,
    len: usize,
}

/// Datagrams waiting to be sent, and what sending them needs.
#[derive(Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    items: Vec<Item>,
    /// Scratch of `flush`, kept to reuse its allocations: the group being sent, and which
    /// items have gone.
    group: Vec<usize>,
    done: Vec<bool>,
    #[cfg(target_os = "linux")]
    headers: linux::Headers,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("datagrams", &self.items.len())
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Queues a copy of `bytes` for `dest`, from `src` if given, on listener `listener`.
    pub fn push(&mut self, listener: usize, dest: SocketAddr, src: Option<IpAddr>, bytes: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        self.items.push(Item {
            listener,
            dest,
            src,
            start,
            len: bytes.len(),
        });
    }

    /// Sends everything queued, one group (same listener and source) at a time, groups in the
    /// order their first datagram was queued and datagrams in queued order. `socket` gives
    /// a listener's socket. Returns how many datagrams could not be sent.
    pub fn flush<S: std::os::fd::AsFd>(&mut self, socket: impl Fn(usize) -> Option<S>) -> usize {
        let mut failed = 0;
        let done = &mut self.done;
        done.clear();
        done.resize(self.items.len(), false);
        for first in 0..self.items.len() {
            if done[first] {
                continue;
            }
            let key = (self.items[first].listener, self.items[first].src);
            self.group.clear();
            for (i, item) in self.items.iter().enumerate().skip(first) {
                if !done[i] && (item.listener, item.src) == key {
                    done[i] = true;
                    self.group.push(i);
                }
            }
            let datagrams: Vec<(SocketAddr, &[u8])> = self
                .group
                .iter()
                .map(|&i| {
                    let it = &self.items[i];
                    (it.dest, &self.bytes[it.start..it.start + it.len])
                })
                .collect();
            let sent = match socket(key.0) {
                #[cfg(target_os = "linux")]
                Some(s) => linux::send(s.as_fd(), key.1, &datagrams, &mut self.headers),
                #[cfg(not(target_os = "linux"))]
                Some(s) => portable::send(s.as_fd(), &datagrams),
                None => 0,
            };
            failed += datagrams.len() - sent;
        }
        self.items.clear();
        self.bytes.clear();
        failed
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::IoSlice;
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, BorrowedFd};

    use nix::cmsg_space;
    use nix::libc;
    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};

    use super::CAPACITY;

    /// `sendmmsg` headers, one set per control message shape (none, IPv4 or IPv6 source): nix
    /// gives every header its control buffer's whole length, so the buffer must fit exactly.
    pub struct Headers {
        plain: MultiHeaders<SockaddrStorage>,
        v4: MultiHeaders<SockaddrStorage>,
        v6: MultiHeaders<SockaddrStorage>,
    }

    impl Default for Headers {
        fn default() -> Self {
            Self {
                plain: MultiHeaders::preallocate(CAPACITY, None),
                v4: MultiHeaders::preallocate(CAPACITY, Some(cmsg_space!(libc::in_pktinfo))),
                v6: MultiHeaders::preallocate(CAPACITY, Some(cmsg_space!(libc::in6_pktinfo))),
            }
        }
    }

    /// Sends `datagrams` from `src` (when given) with `sendmmsg`, as many calls as it takes;
    /// returns how many were sent (they go in order: a refusal stops the rest).
    pub fn send(
        socket: BorrowedFd<'_>,
        src: Option<IpAddr>,
        datagrams: &[(SocketAddr, &[u8])],
        headers: &mut Headers,
    ) -> usize {
        let v4_info;
        let v6_info;
        let (cmsg, headers) = match src {
            None => (None, &mut headers.plain),
            Some(IpAddr::V4(ip)) => {
                v4_info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(ip).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                (
                    Some(ControlMessage::Ipv4PacketInfo(&v4_info)),
                    &mut headers.v4,
                )
            }
            Some(IpAddr::V6(ip)) => {
                v6_info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: ip.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                (
                    Some(ControlMessage::Ipv6PacketInfo(&v6_info)),
                    &mut headers.v6,
                )
            }
        };
        let mut sent = 0;
        for chunk in datagrams.chunks(CAPACITY) {
            let iovs: Vec<[IoSlice<'_>; 1]> =
                chunk.iter().map(|(_, b)| [IoSlice::new(b)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk
                .iter()
                .map(|(dest, _)| Some(SockaddrStorage::from(*dest)))
                .collect();
            let n = match sendmmsg(
                socket.as_raw_fd(),
                headers,
                &iovs,
                &addrs,
                cmsg.as_slice(),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(results) => results.count(),
                Err(_) => 0,
            };
            sent += n;
            if n < chunk.len() {
                break;
            }
        }
        sent
    }
}

#[cfg(not(target_os = "linux"))]
mod portable {
    use std::net::SocketAddr;
    use std::os::fd::BorrowedFd;

    /// One `send_to` per datagram, from the address the system picks (the relay's XDP and
    /// batching are Linux's; elsewhere it only has to work).
    pub fn send(socket: BorrowedFd<'_>, datagrams: &[(SocketAddr, &[u8])]) -> usize {
        let Ok(owned) = socket.try_clone_to_owned() else {
            return 0;
        };
        let socket = std::net::UdpSocket::from(owned);
        datagrams
            .iter()
            .take_while(|(dest, bytes)| socket.send_to(bytes, dest).is_ok())
            .count()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
    use std::time::Duration;

    use super::*;

    fn receiver(ip: IpAddr) -> UdpSocket {
        let s = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("bind receiver");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s
    }

    fn recv(s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).expect("datagram");
        (buf[..n].to_vec(), from)
    }

    /// Two listeners (one bound to 0.0.0.0, answering from 127.0.0.1; one bound to
    /// 127.0.0.1, no control message), datagrams interleaved over two receivers: each arrives,
    /// in order, from the right address.
    #[test]
    fn groups_arrive_in_order_from_their_source() {
        let wild = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let bound = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sockets = [&wild, &bound];
        let a = receiver(Ipv4Addr::LOCALHOST.into());
        let b = receiver(Ipv4Addr::LOCALHOST.into());
        let mut outbox = Outbox::default();
        let lo = Some(IpAddr::from(Ipv4Addr::LOCALHOST));
        for i in 0..6u8 {
            let dest = if i % 2 == 0 { &a } else { &b };
            let dest = dest.local_addr().expect("addr");
            outbox.push(0, dest, lo, &[i; 100]);
            outbox.push(1, dest, None, &[100 + i; 50]);
        }
        assert_eq!(outbox.len(), 12);
        assert_eq!(outbox.flush(|i| sockets.get(i).copied()), 0);
        assert_eq!(outbox.len(), 0);
        let wild_port = wild.local_addr().expect("addr").port();
        let bound_addr = bound.local_addr().expect("addr");
        for (rx, parity) in [(&a, 0u8), (&b, 1u8)] {
            let mut from_wild = Vec::new();
            let mut from_bound = Vec::new();
            for _ in 0..6 {
                let (bytes, from) = recv(rx);
                if from == bound_addr {
                    from_bound.push(bytes);
                } else {
                    assert_eq!(from, SocketAddr::new(Ipv4Addr::LOCALHOST.into(), wild_port));
                    from_wild.push(bytes);
                }
            }
            let want_wild: Vec<Vec<u8>> = (0..6u8)
                .filter(|i| i % 2 == parity)
                .map(|i| vec![i; 100])
                .collect();
            let want_bound: Vec<Vec<u8>> = (0..6u8)
                .filter(|i| i % 2 == parity)
                .map(|i| vec![100 + i; 50])
                .collect();
            assert_eq!(from_wild, want_wild);
            assert_eq!(from_bound, want_bound);
        }
    }

    /// More than one `sendmmsg` worth, over IPv6 with a source address.
    #[test]
    fn more_than_a_call_over_ipv6() {
        let Ok(wild) = UdpSocket::bind("[::]:0") else {
            eprintln!("no IPv6 on this host: skipped");
            return;
        };
        let rx = receiver(Ipv6Addr::LOCALHOST.into());
        let dest = rx.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        let total = CAPACITY + 7;
        for i in 0..total {
            outbox.push(
                0,
                dest,
                Some(Ipv6Addr::LOCALHOST.into()),
                &(i as u32).to_be_bytes(),
            );
        }
        assert_eq!(outbox.flush(|_| Some(&wild)), 0);
        for i in 0..total {
            let (bytes, from) = recv(&rx);
            assert_eq!(bytes, (i as u32).to_be_bytes());
            assert_eq!(from.ip(), IpAddr::from(Ipv6Addr::LOCALHOST));
        }
    }

    /// A source address the host does not have is refused by the kernel: counted as not sent,
    /// and the outbox is empty afterwards all the same.
    #[test]
    fn refused_datagrams_are_counted() {
        let wild = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let rx = receiver(Ipv4Addr::LOCALHOST.into());
        let dest = rx.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        let foreign = Some(IpAddr::from(Ipv4Addr::new(192, 0, 2, 1)));
        outbox.push(0, dest, foreign, b"one");
        outbox.push(0, dest, foreign, b"two");
        outbox.push(7, dest, None, b"no such listener");
        assert_eq!(outbox.flush(|i| (i == 0).then_some(&wild)), 3);
        assert_eq!(outbox.len(), 0);
    }
}
