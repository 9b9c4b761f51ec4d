//! The map keys and values, `#[repr(C)]`, in network byte order.
//!
//! Two hash maps carry a channel, one per direction:
//!
//! | map                | key                                         | value                                                  |
//! |--------------------|---------------------------------------------|--------------------------------------------------------|
//! | [`CLIENT_TO_PEER`] | [`ChannelKey`]: client, listener, channel   | [`ChannelValue`]: relayed address, peer, counter slot  |
//! | [`PEER_TO_CLIENT`] | [`PeerKey`]: relayed address, peer          | [`PeerValue`]: listener, client, channel, counter slot |
//!
//! A key's `family` is the family of the packet that arrives, a value's the family of the packet
//! that leaves; they differ when an IPv4 client talks to an IPv6 peer or the other way round.
//! Both values of a channel name the same slot of [`CHANNEL_STATS`], a per-CPU array of
//! [`ChannelStats`], so the kernel counts a channel's traffic without a second hash lookup;
//! [`TOTAL_STATS`] counts all of it in slot [`TOTAL_ALL`] and each kind of message in its own
//! slot ([`TOTAL_CHANNEL`], [`TOTAL_INDICATION`], [`TOTAL_SAME_RELAY`]), so the totals are read
//! in one go however many
//! channels there are.
//!
//! [`LISTENERS`] holds the TURN listening addresses (an unspecified address stands for every
//! address of its family), only so that what is *not* forwarded is counted under the right
//! [`Verdict`](crate::Verdict); [`ACTION_STATS`] counts every packet under its verdict, per CPU.
//! [`EGRESS`] is the device map of the interfaces the program is attached to, the only ones it
//! redirects to.
//!
//! Permissions (RFC 8656 §9: per peer IP, any port) live in [`PEER_TO_CLIENT`] too, under the
//! key of the relayed address and the peer's IP with port 0 ([`PeerKey::permission`]), their
//! value's `channel` 0: a datagram from a permitted peer on a port without a channel becomes a
//! Data indication to the client. [`ALLOCATIONS`] maps a client's 5-tuple to its relayed
//! addresses, for Send indications: the program takes the relayed address of the peer's
//! family, then checks the permission entry. Both get counter slots like channels do.
//!
//! [`INTERFACES`] says how the program runs on each interface it is attached to.
//!
//! [`NEXT_HOPS`] tells the program where a rewritten packet goes next, per destination address:
//! the interface, its MTU and the two MACs of the Ethernet header. Userspace resolves it from
//! the kernel's route and neighbour tables (as the relay's own output, so no host forwarding
//! setting is involved) for every address the other maps send to, and keeps it current; an
//! address without an entry goes up to userspace, whose socket send makes the kernel resolve
//! the neighbour.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `family` value for IPv4 (the Linux `AF_INET`).
pub const FAMILY_IPV4: u8 = 2;
/// `family` value for IPv6 (the Linux `AF_INET6`).
pub const FAMILY_IPV6: u8 = 10;

/// Name of the client-to-peer hash map ([`ChannelKey`] -> [`ChannelValue`]).
pub const CLIENT_TO_PEER: &str = "CLIENT_TO_PEER";
/// Name of the peer-to-client hash map ([`PeerKey`] -> [`PeerValue`]).
pub const PEER_TO_CLIENT: &str = "PEER_TO_CLIENT";
/// Name of the listener hash map ([`ListenerKey`] -> `u32`, always 1).
pub const LISTENERS: &str = "LISTENERS";
/// Name of the per-CPU array of [`ChannelStats`], indexed by a value's `counter`.
pub const CHANNEL_STATS: &str = "CHANNEL_STATS";
/// Name of the one-slot per-CPU array of [`ChannelStats`] summing every channel.
pub const TOTAL_STATS: &str = "TOTAL_STATS";
/// [`TOTAL_STATS`] slot of everything the program forwarded.
pub const TOTAL_ALL: u32 = 0;
/// [`TOTAL_STATS`] slot of ChannelData, both ways.
pub const TOTAL_CHANNEL: u32 = 1;
/// [`TOTAL_STATS`] slot of Send indications (client to peer) and Data indications (peer to
/// client).
pub const TOTAL_INDICATION: u32 = 2;
/// [`TOTAL_STATS`] slot of same-relay packets: counted once each way, as the two passes of
/// userspace they replace (the first client's to its peer, that peer's to the second client).
pub const TOTAL_SAME_RELAY: u32 = 3;
/// The slots of [`TOTAL_STATS`].
pub const TOTAL_SLOTS: u32 = 4;
/// Name of the per-CPU array of packet counts (`u64`), indexed by [`Verdict`](crate::Verdict).
pub const ACTION_STATS: &str = "ACTION_STATS";
/// Name of the device map (`DEVMAP_HASH`, ifindex -> ifindex) of the interfaces redirected to.
pub const EGRESS: &str = "EGRESS";
/// Name of the allocation hash map ([`ClientKey`] -> [`AllocationValue`]).
pub const ALLOCATIONS: &str = "ALLOCATIONS";
/// The `channel` of a [`PeerValue`] that is a permission, not a channel: the peer's datagrams
/// go to the client as Data indications.
pub const NO_CHANNEL: u16 = 0;
/// Name of the next-hop hash map ([`NextHopKey`] -> [`NextHopValue`]).
pub const NEXT_HOPS: &str = "NEXT_HOPS";
/// Name of the hash map of the interfaces the program is attached to (ifindex -> flags,
/// `u32`s, host byte order): how it runs on each ([`IF_GENERIC`]).
pub const INTERFACES: &str = "INTERFACES";
/// [`INTERFACES`] flag: the program runs in generic (skb) mode on this interface, where a
/// packet keeps its skb's checksum offload state through the program.
pub const IF_GENERIC: u32 = 1;
/// Name of the XDP program in the object.
pub const PROGRAM: &str = "xdpturn";

/// A family mismatch: the two addresses of a key or value must be both IPv4 or both IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixedFamilies;

impl core::fmt::Display for MixedFamilies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the two addresses are of different families (IPv4 and IPv6)")
    }
}

/// Key of [`CLIENT_TO_PEER`]: a ChannelData packet from `client` to `listener` on `channel`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
// Debug only for userspace (and tests): the kernel side has no use for formatting code.
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelKey {
    /// The client's address (see the crate docs for the IPv4 layout).
    pub client_addr: [u8; 16],
    /// The relay's listening address the client sends to.
    pub listener_addr: [u8; 16],
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The relay's listening port, network byte order.
    pub listener_port: u16,
    /// The TURN channel number (0x4000-0x7FFF), network byte order.
    pub channel: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; client and listener share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: u8,
}

/// Value of [`CLIENT_TO_PEER`]: where the channel's data goes, from which relayed address.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelValue {
    /// The allocation's relayed address (the source of packets sent to the peer).
    pub relay_addr: [u8; 16],
    /// The peer's address.
    pub peer_addr: [u8; 16],
    /// The relayed port, network byte order.
    pub relay_port: u16,
    /// The peer's port, network byte order.
    pub peer_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; relay and peer share it (it may differ from the key's).
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding.
    pub _pad: [u8; 3],
    /// The channel's slot in [`CHANNEL_STATS`], host byte order (it is an index, not wire data).
    pub counter: u32,
}

/// Key of [`PEER_TO_CLIENT`]: a datagram from `peer` to the relayed address `relay`.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct PeerKey {
    /// The allocation's relayed address (where the peer sends to).
    pub relay_addr: [u8; 16],
    /// The peer's address.
    pub peer_addr: [u8; 16],
    /// The relayed port, network byte order.
    pub relay_port: u16,
    /// The peer's port, network byte order.
    pub peer_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; relay and peer share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: [u8; 3],
}

/// Value of [`PEER_TO_CLIENT`]: the client and channel a peer's datagrams go to, wrapped in
/// ChannelData and sent from the listener the client talks to.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct PeerValue {
    /// The listening address the client sent its ChannelData to (the source towards it).
    pub listener_addr: [u8; 16],
    /// The client's address.
    pub client_addr: [u8; 16],
    /// The listening port, network byte order.
    pub listener_port: u16,
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The TURN channel number, network byte order.
    pub channel: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; listener and client share it (it may differ from the
    /// key's).
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding.
    pub _pad: u8,
    /// The channel's slot in [`CHANNEL_STATS`], host byte order.
    pub counter: u32,
}

/// Key of [`LISTENERS`]: a TURN listening address; an unspecified `addr` matches every address
/// of the family.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ListenerKey {
    /// The listening address (all zero: any address of `family`).
    pub addr: [u8; 16],
    /// The listening port, network byte order.
    pub port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding.
    pub _pad: u8,
}

/// One CPU's counts for one channel, in [`CHANNEL_STATS`], or for all of them, in
/// [`TOTAL_STATS`]. Bytes are the application data (ChannelData payload), as the userspace
/// datapath counts them.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelStats {
    /// ChannelData packets forwarded from the client to the peer.
    pub client_to_peer_packets: u64,
    /// Their data bytes.
    pub client_to_peer_bytes: u64,
    /// Peer datagrams forwarded to the client as ChannelData.
    pub peer_to_client_packets: u64,
    /// Their data bytes.
    pub peer_to_client_bytes: u64,
}

impl ChannelStats {
    /// The sum of two counts (per-CPU values are summed this way).
    pub const fn plus(self, other: Self) -> Self {
        Self {
            client_to_peer_packets: self.client_to_peer_packets + other.client_to_peer_packets,
            client_to_peer_bytes: self.client_to_peer_bytes + other.client_to_peer_bytes,
            peer_to_client_packets: self.peer_to_client_packets + other.peer_to_client_packets,
            peer_to_client_bytes: self.peer_to_client_bytes + other.peer_to_client_bytes,
        }
    }
}

impl ChannelKey {
    /// Builds a key from host-order ports and channel number.
    pub fn new(
        client: IpAddr,
        client_port: u16,
        listener: IpAddr,
        listener_port: u16,
        channel: u16,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(client, listener)?;
        Ok(Self::from_packet(
            family,
            addr_bytes(client),
            client_port,
            addr_bytes(listener),
            listener_port,
            channel,
        ))
    }

    /// Builds a key from what the program read: addresses in the crate's 16-byte layout,
    /// host-order ports and channel.
    #[inline(always)]
    pub const fn from_packet(
        family: u8,
        client: [u8; 16],
        client_port: u16,
        listener: [u8; 16],
        listener_port: u16,
        channel: u16,
    ) -> Self {
        Self {
            client_addr: client,
            listener_addr: listener,
            client_port: client_port.to_be(),
            listener_port: listener_port.to_be(),
            channel: channel.to_be(),
            family,
            _pad: 0,
        }
    }

    /// The client's address, or `None` if `family` is not a known value.
    pub fn client_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.client_addr)
    }

    /// The client's port, host order.
    pub fn client_port(&self) -> u16 {
        u16::from_be(self.client_port)
    }

    /// The listening address, or `None` if `family` is not a known value.
    pub fn listener_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.listener_addr)
    }

    /// The listening port, host order.
    pub fn listener_port(&self) -> u16 {
        u16::from_be(self.listener_port)
    }

    /// The channel number, host order.
    pub fn channel(&self) -> u16 {
        u16::from_be(self.channel)
    }
}

impl ChannelValue {
    /// Builds a value from host-order ports and the channel's counter slot.
    pub fn new(
        relay: IpAddr,
        relay_port: u16,
        peer: IpAddr,
        peer_port: u16,
        counter: u32,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(relay, peer)?;
        Ok(Self {
            relay_addr: addr_bytes(relay),
            peer_addr: addr_bytes(peer),
            relay_port: relay_port.to_be(),
            peer_port: peer_port.to_be(),
            family,
            _pad: [0; 3],
            counter,
        })
    }

    /// The relayed address, or `None` if `family` is not a known value.
    pub fn relay_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.relay_addr)
    }

    /// The relayed port, host order.
    pub fn relay_port(&self) -> u16 {
        u16::from_be(self.relay_port)
    }

    /// The peer's address, or `None` if `family` is not a known value.
    pub fn peer_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.peer_addr)
    }

    /// The peer's port, host order.
    pub fn peer_port(&self) -> u16 {
        u16::from_be(self.peer_port)
    }
}

impl PeerKey {
    /// Builds a key from host-order ports.
    pub fn new(
        relay: IpAddr,
        relay_port: u16,
        peer: IpAddr,
        peer_port: u16,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(relay, peer)?;
        Ok(Self::from_packet(
            family,
            addr_bytes(relay),
            relay_port,
            addr_bytes(peer),
            peer_port,
        ))
    }

    /// Builds a key from what the program read (host-order ports).
    #[inline(always)]
    pub const fn from_packet(
        family: u8,
        relay: [u8; 16],
        relay_port: u16,
        peer: [u8; 16],
        peer_port: u16,
    ) -> Self {
        Self {
            relay_addr: relay,
            peer_addr: peer,
            relay_port: relay_port.to_be(),
            peer_port: peer_port.to_be(),
            family,
            _pad: [0; 3],
        }
    }

    /// The key of a permission: the relayed address and the permitted peer IP, port 0 (a
    /// permission covers every port of the IP, RFC 8656 §9).
    pub fn permission(relay: IpAddr, relay_port: u16, peer: IpAddr) -> Result<Self, MixedFamilies> {
        Self::new(relay, relay_port, peer, 0)
    }

    /// [`PeerKey::permission`] from what the program read.
    #[inline(always)]
    pub const fn permission_from_packet(
        family: u8,
        relay: [u8; 16],
        relay_port: u16,
        peer: [u8; 16],
    ) -> Self {
        Self::from_packet(family, relay, relay_port, peer, 0)
    }

    /// The relayed address, or `None` if `family` is not a known value.
    pub fn relay_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.relay_addr)
    }

    /// The relayed port, host order.
    pub fn relay_port(&self) -> u16 {
        u16::from_be(self.relay_port)
    }

    /// The peer's address, or `None` if `family` is not a known value.
    pub fn peer_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.peer_addr)
    }

    /// The peer's port, host order.
    pub fn peer_port(&self) -> u16 {
        u16::from_be(self.peer_port)
    }
}

impl PeerValue {
    /// Builds a value from host-order ports and channel number, and the counter slot.
    pub fn new(
        listener: IpAddr,
        listener_port: u16,
        client: IpAddr,
        client_port: u16,
        channel: u16,
        counter: u32,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(listener, client)?;
        Ok(Self {
            listener_addr: addr_bytes(listener),
            client_addr: addr_bytes(client),
            listener_port: listener_port.to_be(),
            client_port: client_port.to_be(),
            channel: channel.to_be(),
            family,
            _pad: 0,
            counter,
        })
    }

    /// The listening address, or `None` if `family` is not a known value.
    pub fn listener_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.listener_addr)
    }

    /// The listening port, host order.
    pub fn listener_port(&self) -> u16 {
        u16::from_be(self.listener_port)
    }

    /// The client's address, or `None` if `family` is not a known value.
    pub fn client_addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.client_addr)
    }

    /// The client's port, host order.
    pub fn client_port(&self) -> u16 {
        u16::from_be(self.client_port)
    }

    /// The channel number, host order.
    pub fn channel(&self) -> u16 {
        u16::from_be(self.channel)
    }
}

impl ListenerKey {
    /// Builds a key from a listening socket address (unspecified address: any of its family).
    pub fn new(listener: SocketAddr) -> Self {
        let ip = listener.ip().to_canonical();
        Self::from_packet(family_of(ip), addr_bytes(ip), listener.port())
    }

    /// Builds a key from what the program read (host-order port).
    #[inline(always)]
    pub const fn from_packet(family: u8, addr: [u8; 16], port: u16) -> Self {
        Self {
            addr,
            port: port.to_be(),
            family,
            _pad: 0,
        }
    }

    /// The listening address, or `None` if `family` is not a known value.
    pub fn addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.addr)
    }

    /// The listening port, host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.port)
    }
}

/// Key of [`ALLOCATIONS`]: a client's 5-tuple over UDP (client and the listener it talks to).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ClientKey {
    /// The client's address.
    pub client_addr: [u8; 16],
    /// The relay's listening address the client sends to.
    pub listener_addr: [u8; 16],
    /// The client's port, network byte order.
    pub client_port: u16,
    /// The listening port, network byte order.
    pub listener_port: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`]; client and listener share it.
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: [u8; 3],
}

impl ClientKey {
    /// The key of a client's 5-tuple (host-order ports).
    pub fn new(
        client: IpAddr,
        client_port: u16,
        listener: IpAddr,
        listener_port: u16,
    ) -> Result<Self, MixedFamilies> {
        let family = same_family(client, listener)?;
        Ok(Self::from_packet(
            family,
            addr_bytes(client),
            client_port,
            addr_bytes(listener),
            listener_port,
        ))
    }

    /// Builds a key from what the program read (host-order ports).
    #[inline(always)]
    pub const fn from_packet(
        family: u8,
        client: [u8; 16],
        client_port: u16,
        listener: [u8; 16],
        listener_port: u16,
    ) -> Self {
        Self {
            client_addr: client,
            listener_addr: listener,
            client_port: client_port.to_be(),
            listener_port: listener_port.to_be(),
            family,
            _pad: [0; 3],
        }
    }
}

/// Value of [`ALLOCATIONS`]: the allocation's relayed addresses, one per family (an RFC 8656
/// dual allocation has both); a port of 0 means none of that family.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct AllocationValue {
    /// The IPv4 relayed address (in the first 4 bytes), if `relay4_port` is not 0.
    pub relay4_addr: [u8; 16],
    /// The IPv6 relayed address, if `relay6_port` is not 0.
    pub relay6_addr: [u8; 16],
    /// The IPv4 relayed port, network byte order; 0: none.
    pub relay4_port: u16,
    /// The IPv6 relayed port, network byte order; 0: none.
    pub relay6_port: u16,
}

impl AllocationValue {
    /// The value of an allocation with these relayed addresses (at most one per family; a
    /// later one of the same family replaces an earlier one).
    pub fn new(relayed: &[core::net::SocketAddr]) -> Self {
        let mut v = Self {
            relay4_addr: [0; 16],
            relay6_addr: [0; 16],
            relay4_port: 0,
            relay6_port: 0,
        };
        for r in relayed {
            let ip = r.ip().to_canonical();
            if ip.is_ipv4() {
                v.relay4_addr = addr_bytes(ip);
                v.relay4_port = r.port().to_be();
            } else {
                v.relay6_addr = addr_bytes(ip);
                v.relay6_port = r.port().to_be();
            }
        }
        v
    }

    /// The relayed address of `family`, as (address bytes, host-order port), if there is one.
    #[inline(always)]
    pub const fn relayed(&self, family: u8) -> Option<([u8; 16], u16)> {
        let (addr, port) = if family == FAMILY_IPV6 {
            (self.relay6_addr, self.relay6_port)
        } else {
            (self.relay4_addr, self.relay4_port)
        };
        if port == 0 {
            None
        } else {
            Some((addr, u16::from_be(port)))
        }
    }
}

/// Key of [`NEXT_HOPS`]: a destination address the program sends to (a client's or a peer's).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct NextHopKey {
    /// The destination address (see the crate docs for the IPv4 layout).
    pub addr: [u8; 16],
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// Zero. Explicit so the struct has no uninitialised padding (hash keys compare bytes).
    pub _pad: [u8; 3],
}

impl NextHopKey {
    /// The key of a destination address (IPv4-mapped IPv6 addresses as IPv4).
    pub fn new(addr: IpAddr) -> Self {
        let ip = addr.to_canonical();
        Self::from_packet(family_of(ip), addr_bytes(ip))
    }

    /// Builds a key from what the program has (the rewrite's destination).
    #[inline(always)]
    pub const fn from_packet(family: u8, addr: [u8; 16]) -> Self {
        Self {
            addr,
            family,
            _pad: [0; 3],
        }
    }

    /// The destination address, or `None` if `family` is not a known value.
    pub fn addr(&self) -> Option<IpAddr> {
        addr_from(self.family, self.addr)
    }
}

/// Value of [`NEXT_HOPS`]: how a packet to the key's address leaves.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct NextHopValue {
    /// The egress interface's index, host byte order.
    pub ifindex: u32,
    /// The egress interface's MTU (largest IP packet), host byte order: a rewritten packet
    /// longer than this goes up instead (the kernel fragments or answers with ICMP).
    pub mtu: u32,
    /// The egress interface's MAC: the Ethernet source.
    pub smac: [u8; 6],
    /// The next hop's MAC (the gateway's, or the destination's own on a connected network):
    /// the Ethernet destination.
    pub dmac: [u8; 6],
}

/// The four map entries of one channel: both directions' keys and values.
#[derive(Clone, Copy, PartialEq, Eq)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelEntries {
    /// Key of [`CLIENT_TO_PEER`].
    pub channel_key: ChannelKey,
    /// Value of [`CLIENT_TO_PEER`].
    pub channel_value: ChannelValue,
    /// Key of [`PEER_TO_CLIENT`].
    pub peer_key: PeerKey,
    /// Value of [`PEER_TO_CLIENT`].
    pub peer_value: PeerValue,
}

impl ChannelEntries {
    /// The entries for a channel: ChannelData from `client` to `listener` on `channel` goes from
    /// `relay` to `peer`, and datagrams from `peer` to `relay` go back from `listener` to
    /// `client`. IPv4-mapped IPv6 addresses are taken as the IPv4 addresses they are.
    pub fn new(
        client: SocketAddr,
        listener: SocketAddr,
        channel: u16,
        relay: SocketAddr,
        peer: SocketAddr,
        counter: u32,
    ) -> Result<Self, MixedFamilies> {
        let (client_ip, listener_ip) = (client.ip().to_canonical(), listener.ip().to_canonical());
        let (relay_ip, peer_ip) = (relay.ip().to_canonical(), peer.ip().to_canonical());
        Ok(Self {
            channel_key: ChannelKey::new(
                client_ip,
                client.port(),
                listener_ip,
                listener.port(),
                channel,
            )?,
            channel_value: ChannelValue::new(
                relay_ip,
                relay.port(),
                peer_ip,
                peer.port(),
                counter,
            )?,
            peer_key: PeerKey::new(relay_ip, relay.port(), peer_ip, peer.port())?,
            peer_value: PeerValue::new(
                listener_ip,
                listener.port(),
                client_ip,
                client.port(),
                channel,
                counter,
            )?,
        })
    }
}

fn family_of(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => FAMILY_IPV4,
        IpAddr::V6(_) => FAMILY_IPV6,
    }
}

fn same_family(a: IpAddr, b: IpAddr) -> Result<u8, MixedFamilies> {
    match (a, b) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Ok(FAMILY_IPV4),
        (IpAddr::V6(_), IpAddr::V6(_)) => Ok(FAMILY_IPV6),
        _ => Err(MixedFamilies),
    }
}

/// An address in the crate's 16-byte layout: IPv6 as is, IPv4 in the first 4 bytes.
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut out = [0; 16];
            out[..4].copy_from_slice(&v4.octets());
            out
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address that `bytes` holds for `family`, or `None` for an unknown family.
pub fn addr_from(family: u8, bytes: [u8; 16]) -> Option<IpAddr> {
    match family {
        FAMILY_IPV4 => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        FAMILY_IPV6 => Some(IpAddr::V6(Ipv6Addr::from(bytes))),
        _ => None,
    }
}

// SAFETY (all impls): the types are #[repr(C)], contain only integers and byte arrays, have
// explicit padding fields so no byte is uninitialised (ChannelKey 16+16+2+2+2+1+1 = 40 bytes,
// align 2; ChannelValue 16+16+2+2+1+3+4 = 44, align 4; PeerKey 16+16+2+2+1+3 = 40, align 2;
// PeerValue 16+16+2+2+2+1+1+4 = 44, align 4; ListenerKey 16+2+1+1 = 20, align 2; ChannelStats
// 4 x u64 = 32, align 8; NextHopKey 16+1+3 = 20, align 1; NextHopValue 4+4+6+6 = 20, align 4;
// ClientKey 16+16+2+2+1+3 = 40, align 2; AllocationValue 16+16+2+2 = 36, align 2; the
// layout test checks every size), and every bit pattern is a valid
// value, which is what aya::Pod requires.
#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod pod {
    unsafe impl aya::Pod for super::ChannelKey {}
    unsafe impl aya::Pod for super::ChannelValue {}
    unsafe impl aya::Pod for super::PeerKey {}
    unsafe impl aya::Pod for super::PeerValue {}
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::ChannelStats {}
    unsafe impl aya::Pod for super::NextHopKey {}
    unsafe impl aya::Pod for super::ClientKey {}
    unsafe impl aya::Pod for super::AllocationValue {}
    unsafe impl aya::Pod for super::NextHopValue {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use core::mem::{align_of, size_of};

    const V4_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
    const V4_LISTENER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const V6_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
    const V6_LISTENER: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));

    #[test]
    fn layout_has_no_implicit_padding() {
        assert_eq!((size_of::<ChannelKey>(), align_of::<ChannelKey>()), (40, 2));
        assert_eq!(
            (size_of::<ChannelValue>(), align_of::<ChannelValue>()),
            (44, 4)
        );
        assert_eq!((size_of::<PeerKey>(), align_of::<PeerKey>()), (40, 2));
        assert_eq!((size_of::<PeerValue>(), align_of::<PeerValue>()), (44, 4));
        assert_eq!(
            (size_of::<ListenerKey>(), align_of::<ListenerKey>()),
            (20, 2)
        );
        assert_eq!(
            (size_of::<ChannelStats>(), align_of::<ChannelStats>()),
            (32, 8)
        );
        assert_eq!((size_of::<NextHopKey>(), align_of::<NextHopKey>()), (20, 1));
        assert_eq!((size_of::<ClientKey>(), align_of::<ClientKey>()), (40, 2));
        assert_eq!(
            (size_of::<AllocationValue>(), align_of::<AllocationValue>()),
            (36, 2)
        );
        assert_eq!(
            (size_of::<NextHopValue>(), align_of::<NextHopValue>()),
            (20, 4)
        );
    }

    #[test]
    fn next_hop_keys_take_canonical_addresses() {
        let v4 = NextHopKey::new(V4_CLIENT);
        assert_eq!((v4.family, v4.addr()), (FAMILY_IPV4, Some(V4_CLIENT)));
        assert_eq!(v4.addr[..4], [198, 51, 100, 7]);
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        assert_eq!(NextHopKey::new(mapped), v4);
        let v6 = NextHopKey::new(V6_CLIENT);
        assert_eq!((v6.family, v6.addr()), (FAMILY_IPV6, Some(V6_CLIENT)));
    }

    #[test]
    fn key_round_trips_v4_in_network_order() {
        let key = ChannelKey::new(V4_CLIENT, 50_000, V4_LISTENER, 3478, 0x4001).unwrap();
        assert_eq!(key.family, FAMILY_IPV4);
        assert_eq!(key.client_addr[..4], [198, 51, 100, 7]);
        assert_eq!(key.client_addr[4..], [0; 12]);
        // Raw fields hold the bytes as they are on the wire.
        assert_eq!(key.listener_port.to_ne_bytes(), 3478u16.to_be_bytes());
        assert_eq!(key.client_port.to_ne_bytes(), 50_000u16.to_be_bytes());
        assert_eq!(key.channel.to_ne_bytes(), [0x40, 0x01]);
        assert_eq!(key.client_addr(), Some(V4_CLIENT));
        assert_eq!(key.client_port(), 50_000);
        assert_eq!(key.listener_addr(), Some(V4_LISTENER));
        assert_eq!(key.listener_port(), 3478);
        assert_eq!(key.channel(), 0x4001);
    }

    #[test]
    fn key_round_trips_v6() {
        let key = ChannelKey::new(V6_CLIENT, 1, V6_LISTENER, 65535, 0x4FFF).unwrap();
        assert_eq!(key.family, FAMILY_IPV6);
        assert_eq!(key.client_addr(), Some(V6_CLIENT));
        assert_eq!(key.listener_addr(), Some(V6_LISTENER));
        assert_eq!(key.client_port(), 1);
        assert_eq!(key.listener_port(), 65535);
        assert_eq!(key.channel(), 0x4FFF);
    }

    #[test]
    fn value_round_trips_both_families() {
        let v = ChannelValue::new(V4_LISTENER, 49_152, V4_CLIENT, 9, 7).unwrap();
        assert_eq!(v.family, FAMILY_IPV4);
        assert_eq!(v.relay_port.to_ne_bytes(), 49_152u16.to_be_bytes());
        assert_eq!(v.relay_addr(), Some(V4_LISTENER));
        assert_eq!(v.relay_port(), 49_152);
        assert_eq!(v.peer_addr(), Some(V4_CLIENT));
        assert_eq!(v.peer_port(), 9);
        assert_eq!(v.counter, 7);

        let v = ChannelValue::new(V6_LISTENER, 60_000, V6_CLIENT, 443, 0).unwrap();
        assert_eq!(v.family, FAMILY_IPV6);
        assert_eq!(v.relay_addr(), Some(V6_LISTENER));
        assert_eq!(v.peer_addr(), Some(V6_CLIENT));
        assert_eq!((v.relay_port(), v.peer_port()), (60_000, 443));
    }

    #[test]
    fn peer_key_and_value_round_trip() {
        let k = PeerKey::new(V6_LISTENER, 50_001, V6_CLIENT, 5000).unwrap();
        assert_eq!(k.family, FAMILY_IPV6);
        assert_eq!(k.relay_port.to_ne_bytes(), 50_001u16.to_be_bytes());
        assert_eq!(
            (k.relay_addr(), k.relay_port(), k.peer_addr(), k.peer_port()),
            (Some(V6_LISTENER), 50_001, Some(V6_CLIENT), 5000)
        );
        let v = PeerValue::new(V4_LISTENER, 3478, V4_CLIENT, 40_000, 0x7FFF, 3).unwrap();
        assert_eq!(v.family, FAMILY_IPV4);
        assert_eq!(v.channel.to_ne_bytes(), [0x7F, 0xFF]);
        assert_eq!(
            (
                v.listener_addr(),
                v.listener_port(),
                v.client_addr(),
                v.client_port()
            ),
            (Some(V4_LISTENER), 3478, Some(V4_CLIENT), 40_000)
        );
        assert_eq!((v.channel(), v.counter), (0x7FFF, 3));
    }

    #[test]
    fn listener_key_takes_wildcards_and_mapped_addresses() {
        let any = ListenerKey::new(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 3478));
        assert_eq!(
            (any.family, any.addr, any.port()),
            (FAMILY_IPV4, [0; 16], 3478)
        );
        let mapped = ListenerKey::new(SocketAddr::new(
            IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
            3478,
        ));
        assert_eq!(mapped.addr(), Some(V4_LISTENER));
        assert_eq!(mapped.family, FAMILY_IPV4);
        let v6 = ListenerKey::new(SocketAddr::new(V6_LISTENER, 5349));
        assert_eq!((v6.addr(), v6.port()), (Some(V6_LISTENER), 5349));
    }

    #[test]
    fn entries_allow_a_family_change_between_client_and_peer() {
        let client = SocketAddr::new(V4_CLIENT, 40_000);
        let listener = SocketAddr::new(V4_LISTENER, 3478);
        let relay = SocketAddr::new(V6_LISTENER, 50_000);
        let peer = SocketAddr::new(V6_CLIENT, 6000);
        let e = ChannelEntries::new(client, listener, 0x4000, relay, peer, 11).unwrap();
        assert_eq!(e.channel_key.family, FAMILY_IPV4);
        assert_eq!(e.channel_value.family, FAMILY_IPV6);
        assert_eq!(e.peer_key.family, FAMILY_IPV6);
        assert_eq!(e.peer_value.family, FAMILY_IPV4);
        assert_eq!(e.channel_value.counter, e.peer_value.counter);
        assert_eq!(e.peer_value.channel(), 0x4000);
        assert_eq!(e.peer_key.peer_port(), 6000);
        // A client and listener of different families cannot be one 5-tuple.
        assert_eq!(
            ChannelEntries::new(client, relay, 0x4000, relay, peer, 0),
            Err(MixedFamilies)
        );
    }

    #[test]
    fn mixed_families_are_refused() {
        assert_eq!(
            ChannelKey::new(V4_CLIENT, 1, V6_LISTENER, 2, 0x4000),
            Err(MixedFamilies)
        );
        assert_eq!(
            ChannelValue::new(V6_LISTENER, 1, V4_CLIENT, 2, 0),
            Err(MixedFamilies)
        );
        assert_eq!(
            PeerKey::new(V6_LISTENER, 1, V4_CLIENT, 2),
            Err(MixedFamilies)
        );
    }

    #[test]
    fn unknown_family_reads_as_none() {
        let mut key = ChannelKey::new(V4_CLIENT, 1, V4_LISTENER, 2, 0x4000).unwrap();
        key.family = 0;
        assert_eq!(key.client_addr(), None);
        assert_eq!(key.listener_addr(), None);
    }

    #[test]
    fn stats_add_up() {
        let a = ChannelStats {
            client_to_peer_packets: 1,
            client_to_peer_bytes: 10,
            peer_to_client_packets: 2,
            peer_to_client_bytes: 20,
        };
        assert_eq!(
            a.plus(a),
            ChannelStats {
                client_to_peer_packets: 2,
                client_to_peer_bytes: 20,
                peer_to_client_packets: 4,
                peer_to_client_bytes: 40,
            }
        );
    }
}
