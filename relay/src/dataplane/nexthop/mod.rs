//! Next hops for the program: where the relay's own output to an address leaves, and the two
//! MACs of its Ethernet header, from the kernel's route, link and neighbour tables over
//! rtnetlink (what `ip route get`, `ip link show` and `ip neigh get` ask).
//!
//! The program looks every rewritten packet's destination up in `NEXT_HOPS`; the dataplane
//! writes the entries with what [`Resolver`] finds and keeps them current, and [`Events`] tells
//! it when the tables change. Resolving as the relay's own output (a route lookup without an
//! input interface) is what keeps the fast path independent of the host's forwarding settings:
//! a packet the program sends leaves as the relay's socket would have sent it, to the same next
//! hop.
//!
//! A destination has no next hop (its packets go up to the relay's sockets) when its route is
//! not unicast (local, broadcast, multicast, unreachable, blackhole, prohibit, ...), when the
//! route leaves through the loopback, an interface that is down or one without an Ethernet
//! address, and while the next hop's MAC is not known (its neighbour entry is missing or not in
//! a usable state: REACHABLE, STALE, DELAY, PROBE or PERMANENT). The relay's own send then makes
//! the kernel resolve the neighbour, and the next refresh finds it.

mod events;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_ROUTE};
use rustix::io::Errno;

pub use super::NextHop;
pub use events::{Changes, Events};

/// Where a unicast route leads, before the neighbour is asked: the egress interface and the
/// address whose MAC packets are sent to (the gateway, or the destination itself on a connected
/// network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Via {
    pub ifindex: u32,
    pub addr: IpAddr,
}

/// What resolving one destination found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Where its route leads, when it is a unicast route (also while the neighbour is unknown:
    /// that neighbour's changes are the ones to watch).
    pub via: Option<Via>,
    /// The next hop, when route, interface and neighbour are all usable.
    pub hop: Option<NextHop>,
    /// The next hop's neighbour entry is STALE: the kernel has not had it confirmed lately.
    /// Packets the program sends do not make the kernel confirm it as its own sends do;
    /// [`Resolver::use_neighbour`] does.
    pub stale: bool,
}

/// Asks the kernel where the relay's own packets to an address go. One netlink socket, in the
/// network namespace of the thread that created it, whichever thread uses it later.
#[derive(Debug)]
pub struct Resolver {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Whether the kernel answers a request for one neighbour (Linux 5.0+); before that, the
    /// neighbour table is dumped.
    neighbour_get: bool,
}

/// The largest netlink datagram read: the kernel fills dump datagrams up to 32 KiB, and a
/// link's answer (without per-VF information, which is not asked for) is a few KiB.
const BUF_LEN: usize = 64 * 1024;

/// `MSG_TRUNC`: recv returns the datagram's real length, longer than the buffer if it was cut.
const MSG_TRUNC: i32 = 0x20;
/// `MSG_DONTWAIT`.
const MSG_DONTWAIT: i32 = 0x40;

/// What the kernel answered a request with, besides the messages.
enum Outcome {
    Done,
    /// An error, as a positive errno.
    Errno(i32),
}

/// Neighbours asked about during one [`Resolver::resolve_all`].
#[derive(Default)]
struct Neighbours {
    macs: HashMap<Via, Option<Neighbour>>,
    /// The IPv4 (0) or IPv6 (1) table was dumped into `macs`: what of that family is not there
    /// has no usable entry.
    dumped: [bool; 2],
}

/// A neighbour entry the kernel sends to.
#[derive(Debug, Clone, Copy)]
struct Neighbour {
    mac: [u8; 6],
    stale: bool,
}

/// An interface packets can leave by.
#[derive(Debug, Clone, Copy)]
struct Link {
    mac: [u8; 6],
    mtu: u32,
}

/// A unicast route.
#[derive(Debug, Clone, Copy)]
struct Route {
    via: Via,
    mtu: Option<u32>,
}

impl Resolver {
    /// Opens the netlink socket, in the calling thread's network namespace.
    pub fn new() -> io::Result<Resolver> {
        let socket = route_socket()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Resolver {
            socket,
            seq: 0,
            buf: Vec::with_capacity(BUF_LEN),
            neighbour_get: true,
        })
    }

    /// The next hop of the relay's own packets to `dst`, or `None` when the program is not to
    /// send there (see the module docs). An error is about asking (the socket), not the answer.
    pub fn resolve(&mut self, dst: IpAddr) -> io::Result<Option<NextHop>> {
        Ok(self.resolve_all(&[dst])?.pop().and_then(|r| r.hop))
    }

    /// Resolves every destination in `dsts` (the answers in the same order), asking about each
    /// interface and each neighbour once.
    pub fn resolve_all(&mut self, dsts: &[IpAddr]) -> io::Result<Vec<Resolution>> {
        let mut links: HashMap<u32, Option<Link>> = HashMap::new();
        let mut neighbours = Neighbours::default();
        let mut out = Vec::with_capacity(dsts.len());
        for &dst in dsts {
            let Some(route) = self.route(dst.to_canonical())? else {
                out.push(Resolution::default());
                continue;
            };
            let via = route.via;
            let link = match links.get(&via.ifindex) {
                Some(link) => *link,
                None => {
                    let link = self.link(via.ifindex)?;
                    links.insert(via.ifindex, link);
                    link
                }
            };
            let neighbour = match link {
                Some(_) => self.neighbour(via, &mut neighbours)?,
                None => None,
            };
            let hop = link.zip(neighbour).map(|(link, neighbour)| NextHop {
                ifindex: via.ifindex,
                mtu: route.mtu.unwrap_or(link.mtu),
                smac: link.mac,
                dmac: neighbour.mac,
            });
            out.push(Resolution {
                via: Some(via),
                hop,
                stale: neighbour.is_some_and(|n| n.stale),
            });
        }
        Ok(out)
    }

    /// The route of the relay's own output to `dst`, if it is a unicast one.
    fn route(&mut self, dst: IpAddr) -> io::Result<Option<Route>> {
        let mut request = RouteMessage::default();
        let (family, prefix, addr) = match dst {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        request.header.address_family = family;
        request.header.destination_prefix_length = prefix;
        request.attributes.push(RouteAttribute::Destination(addr));
        let mut answer = None;
        let outcome = self.exchange(RouteNetlinkMessage::GetRoute(request), 0, |m| {
            if let RouteNetlinkMessage::NewRoute(route) = m {
                answer = Some(route);
            }
        })?;
        // An error is the kernel's answer for this destination: no route (unreachable,
        // blackhole and prohibit routes answer so for IPv4), nothing the program can use.
        let (Outcome::Done, Some(route)) = (outcome, answer) else {
            return Ok(None);
        };
        Ok(unicast_route(&route, dst))
    }

    /// The interface `ifindex`, if packets can leave by it with an Ethernet header.
    fn link(&mut self, ifindex: u32) -> io::Result<Option<Link>> {
        let mut request = LinkMessage::default();
        request.header.index = ifindex;
        let mut answer = None;
        let outcome = self.exchange(RouteNetlinkMessage::GetLink(request), 0, |m| {
            if let RouteNetlinkMessage::NewLink(link) = m {
                answer = Some(link);
            }
        })?;
        let (Outcome::Done, Some(link)) = (outcome, answer) else {
            // Gone since the route was looked up.
            return Ok(None);
        };
        Ok(usable_link(&link))
    }

    /// Tells the kernel that the relay sends to neighbour `via` (`NTF_USE`, as `ip neigh change
    /// ADDR dev IF use` does): a STALE entry is then confirmed (DELAY, PROBE) as it is when the
    /// kernel itself sends to it, and updated or failed if the neighbour has moved or gone.
    /// Nothing else about the entry changes.
    pub fn use_neighbour(&mut self, via: Via) -> io::Result<()> {
        let mut request = NeighbourMessage::default();
        request.header.family = family_of(via.addr);
        request.header.ifindex = via.ifindex;
        request.header.flags = NeighbourFlags::Use;
        request
            .attributes
            .push(NeighbourAttribute::Destination(neighbour_address(via.addr)));
        match self.exchange(
            RouteNetlinkMessage::NewNeighbour(request),
            NLM_F_ACK,
            |_| {},
        )? {
            Outcome::Done => Ok(()),
            Outcome::Errno(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Neighbour `via`, if its entry is usable.
    fn neighbour(&mut self, via: Via, known: &mut Neighbours) -> io::Result<Option<Neighbour>> {
        if let Some(mac) = known.macs.get(&via) {
            return Ok(*mac);
        }
        let family = usize::from(via.addr.is_ipv6());
        if known.dumped[family] {
            return Ok(None);
        }
        if self.neighbour_get {
            let mut request = NeighbourMessage::default();
            request.header.family = family_of(via.addr);
            request.header.ifindex = via.ifindex;
            request
                .attributes
                .push(NeighbourAttribute::Destination(neighbour_address(via.addr)));
            let mut found = None;
            let outcome = self.exchange(RouteNetlinkMessage::GetNeighbour(request), 0, |m| {
                if let RouteNetlinkMessage::NewNeighbour(n) = m {
                    found = usable_neighbour(&n).map(|(_, neighbour)| neighbour);
                }
            })?;
            match outcome {
                Outcome::Errno(e) if e == Errno::OPNOTSUPP.raw_os_error() => {
                    // Before Linux 5.0: only dumps.
                    self.neighbour_get = false;
                }
                // ENOENT: no entry at all.
                Outcome::Errno(_) | Outcome::Done => {
                    known.macs.insert(via, found);
                    return Ok(found);
                }
            }
        }
        let mut request = NeighbourMessage::default();
        request.header.family = family_of(via.addr);
        let macs = &mut known.macs;
        self.exchange(
            RouteNetlinkMessage::GetNeighbour(request),
            NLM_F_DUMP,
            |m| {
                if let RouteNetlinkMessage::NewNeighbour(n) = m
                    && let Some((via, neighbour)) = usable_neighbour(&n)
                {
                    macs.insert(via, Some(neighbour));
                }
            },
        )?;
        known.dumped[family] = true;
        Ok(known.macs.get(&via).copied().flatten())
    }

    /// Sends one request (`flags` besides NLM_F_REQUEST) and passes each message of its answer
    /// to `each`: one message, every message of a dump, or none before an acknowledgement.
    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<Outcome> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        loop {
            receive(&self.socket, &mut self.buf, 0)?;
            for raw in messages(&self.buf) {
                // What is left of an answer an error cut short.
                if raw.seq != seq {
                    continue;
                }
                let message = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw.bytes) {
                    Ok(message) => message,
                    Err(e) => {
                        // Something this parser does not know (an exotic route's attributes):
                        // that entry cannot be used, the rest can.
                        tracing::debug!(err = %e, "an rtnetlink answer that does not parse");
                        if dump {
                            continue;
                        }
                        return Ok(Outcome::Errno(Errno::BADMSG.raw_os_error()));
                    }
                };
                match message.payload {
                    NetlinkPayload::Done(done) if done.code != 0 => {
                        return Ok(Outcome::Errno(done.code.saturating_abs()));
                    }
                    NetlinkPayload::Done(_) => return Ok(Outcome::Done),
                    NetlinkPayload::Error(e) => {
                        return Ok(match e.code {
                            Some(code) => Outcome::Errno(code.get().saturating_abs()),
                            None => Outcome::Done,
                        });
                    }
                    NetlinkPayload::InnerMessage(m) => {
                        each(m);
                        if !dump {
                            return Ok(Outcome::Done);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// A bound NETLINK_ROUTE socket.
fn route_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    Ok(socket)
}

/// Receives one datagram into `buf` (replacing what it held), retrying when interrupted.
fn receive(socket: &Socket, buf: &mut Vec<u8>, flags: i32) -> io::Result<()> {
    loop {
        buf.clear();
        match socket.recv(buf, flags | MSG_TRUNC) {
            Ok(len) if len > buf.len() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a netlink message of {len} bytes, longer than {BUF_LEN}"),
                ));
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One netlink message of a datagram, not parsed yet.
struct Raw<'a> {
    seq: u32,
    bytes: &'a [u8],
}

/// The messages of a datagram (struct nlmsghdr: length, type, flags, sequence, port).
fn messages(datagram: &[u8]) -> impl Iterator<Item = Raw<'_>> {
    let mut rest = datagram;
    std::iter::from_fn(move || {
        let len = u32::from_ne_bytes(rest.get(0..4)?.try_into().ok()?) as usize;
        let seq = u32::from_ne_bytes(rest.get(8..12)?.try_into().ok()?);
        if len < 16 || len > rest.len() {
            return None;
        }
        let bytes = &rest[..len];
        // NLMSG_ALIGN.
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
        Some(Raw { seq, bytes })
    })
}

/// What a route answer says, if it is a unicast route the program can use.
fn unicast_route(route: &RouteMessage, dst: IpAddr) -> Option<Route> {
    if route.header.kind != RouteType::Unicast {
        return None;
    }
    let mut ifindex = None;
    let mut gateway = None;
    let mut mtu = None;
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            // A gateway of the other family (an IPv4 route via an IPv6 neighbour).
            RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
            RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
            RouteAttribute::Metrics(metrics) => {
                for metric in metrics {
                    if let RouteMetric::Mtu(m) = metric
                        && *m > 0
                    {
                        mtu = Some(*m);
                    }
                }
            }
            _ => {}
        }
    }
    Some(Route {
        via: Via {
            ifindex: ifindex.filter(|&i| i != 0)?,
            addr: gateway.map_or(dst, |g| g.to_canonical()),
        },
        mtu,
    })
}

/// An interface packets can leave by with an Ethernet header: up, Ethernet, not the loopback.
fn usable_link(link: &LinkMessage) -> Option<Link> {
    let header = &link.header;
    if header.link_layer_type != LinkLayerType::Ether
        || header.flags.contains(LinkFlags::Loopback)
        || !header.flags.contains(LinkFlags::Up)
    {
        return None;
    }
    let mut mac = None;
    let mut mtu = None;
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::Address(a) => mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            _ => {}
        }
    }
    let mac = mac.filter(|m| *m != [0; 6])?;
    Some(Link { mac, mtu: mtu? })
}

/// The neighbour an entry is about, for IP neighbours.
fn neighbour_of(n: &NeighbourMessage) -> Option<Via> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(Via {
            ifindex: n.header.ifindex,
            addr: IpAddr::V4(*a),
        }),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(Via {
            ifindex: n.header.ifindex,
            addr: IpAddr::V6(*a),
        }),
        _ => None,
    })
}

/// The neighbour and its MAC, if the entry is in a state the kernel sends to.
fn usable_neighbour(n: &NeighbourMessage) -> Option<(Via, Neighbour)> {
    let usable = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
    );
    if !usable {
        return None;
    }
    let via = neighbour_of(n)?;
    let mac = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
        _ => None,
    })?;
    let stale = n.header.state == NeighbourState::Stale;
    Some((via, Neighbour { mac, stale }))
}

fn family_of(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn neighbour_address(addr: IpAddr) -> NeighbourAddress {
    match addr {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn header(len: u32, seq: u32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&len.to_ne_bytes());
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&[0; 4]);
        h
    }

    #[test]
    fn datagrams_split_into_aligned_messages() {
        let mut d = header(18, 7);
        d.extend_from_slice(&[1, 2, 0, 0]); // 2 bytes of payload, 2 of alignment
        d.extend(header(16, 8));
        let seqs: Vec<(u32, usize)> = messages(&d).map(|m| (m.seq, m.bytes.len())).collect();
        assert_eq!(seqs, [(7, 18), (8, 16)]);
        // A length beyond the datagram, or shorter than a header, ends it.
        assert_eq!(messages(&header(40, 1)).count(), 0);
        assert_eq!(messages(&header(4, 1)).count(), 0);
        assert_eq!(messages(&[1, 2]).count(), 0);
    }

    fn route(kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut r = RouteMessage::default();
        r.header.kind = kind;
        r.attributes = attributes;
        r
    }

    #[test]
    fn routes_lead_to_the_gateway_or_the_destination() {
        let dst: IpAddr = "198.51.100.20".parse().unwrap();
        let connected = route(RouteType::Unicast, vec![RouteAttribute::Oif(3)]);
        let r = unicast_route(&connected, dst).unwrap();
        assert_eq!((r.via.ifindex, r.via.addr, r.mtu), (3, dst, None));

        let gw = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Oif(4),
                RouteAttribute::Gateway(RouteAddress::Inet("192.0.2.254".parse().unwrap())),
                RouteAttribute::Metrics(vec![RouteMetric::Mtu(1300)]),
            ],
        );
        let r = unicast_route(&gw, dst).unwrap();
        assert_eq!(r.via.addr, "192.0.2.254".parse::<IpAddr>().unwrap());
        assert_eq!(r.mtu, Some(1300));

        let v6_gw = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Oif(4),
                RouteAttribute::Via(RouteVia::Inet6("fe80::1".parse().unwrap())),
            ],
        );
        assert_eq!(
            unicast_route(&v6_gw, dst).unwrap().via.addr,
            "fe80::1".parse::<IpAddr>().unwrap()
        );

        for kind in [
            RouteType::Local,
            RouteType::Broadcast,
            RouteType::Multicast,
            RouteType::Unreachable,
            RouteType::BlackHole,
            RouteType::Prohibit,
        ] {
            assert!(unicast_route(&route(kind, vec![RouteAttribute::Oif(3)]), dst).is_none());
        }
        // No interface: nothing to send by.
        assert!(unicast_route(&route(RouteType::Unicast, vec![]), dst).is_none());
    }

    fn link(kind: LinkLayerType, flags: LinkFlags, mac: &[u8]) -> LinkMessage {
        let mut l = LinkMessage::default();
        l.header.link_layer_type = kind;
        l.header.flags = flags;
        l.attributes = vec![
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::Mtu(1500),
        ];
        l
    }

    #[test]
    fn only_ethernet_interfaces_that_are_up() {
        let mac = [2, 0, 0, 0, 1, 0];
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        let l = usable_link(&link(LinkLayerType::Ether, up, &mac)).unwrap();
        assert_eq!((l.mac, l.mtu), (mac, 1500));
        assert!(usable_link(&link(LinkLayerType::Ether, LinkFlags::empty(), &mac)).is_none());
        assert!(usable_link(&link(LinkLayerType::Loopback, up, &[0; 6])).is_none());
        assert!(usable_link(&link(LinkLayerType::Ether, up | LinkFlags::Loopback, &mac)).is_none());
        assert!(usable_link(&link(LinkLayerType::None, up, &[])).is_none());
        assert!(usable_link(&link(LinkLayerType::Ether, up, &[0; 6])).is_none());
    }

    #[test]
    fn only_neighbours_the_kernel_sends_to() {
        let mac = [2, 0, 0, 0, 0, 0x0a];
        let entry = |state| {
            let mut n = NeighbourMessage::default();
            n.header.ifindex = 5;
            n.header.state = state;
            n.attributes = vec![
                NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    "192.0.2.10".parse().unwrap(),
                )),
                NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
            ];
            n
        };
        let via = Via {
            ifindex: 5,
            addr: "192.0.2.10".parse().unwrap(),
        };
        for state in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
        ] {
            let (found, neighbour) = usable_neighbour(&entry(state)).unwrap();
            assert_eq!(
                (found, neighbour.mac, neighbour.stale),
                (via, mac, state == NeighbourState::Stale),
                "{state:?}"
            );
        }
        for state in [
            NeighbourState::Incomplete,
            NeighbourState::Failed,
            NeighbourState::Noarp,
            NeighbourState::None,
        ] {
            assert!(usable_neighbour(&entry(state)).is_none(), "{state:?}");
        }
        assert_eq!(neighbour_of(&entry(NeighbourState::Failed)), Some(via));
    }
}
