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
//!
//! **IPv4 has maps of its own** with short keys ([`CLIENT_TO_PEER4`], [`PEER_TO_CLIENT4`],
//! [`ALLOCATIONS4`], [`NEXT_HOPS4`]: 14, 12, 12 and 4 bytes where the general keys have 40,
//! 40, 40 and 20), because the kernel hashes and compares every byte of a key on every lookup;
//! the four general maps above hold the IPv6 entries. The key's family picks the map, the
//! values are the same ([`v4`] has the keys and the rule).
//!
//! One room per map's key and value: `channel` (`CLIENT_TO_PEER`, and a channel's four
//! entries), `peer` (`PEER_TO_CLIENT`), `allocation` (`ALLOCATIONS`), `next_hop`
//! (`NEXT_HOPS`), `listener` (`LISTENERS`), `stats` (the counters), `v4` (the IPv4 maps'
//! keys), and `addr` (the 16-byte address layout).

mod addr;
mod allocation;
mod channel;
mod listener;
mod next_hop;
mod peer;
mod stats;
pub mod v4;

pub use addr::{addr_bytes, addr_from};
pub use allocation::{AllocationValue, ClientKey};
pub use channel::{ChannelEntries, ChannelKey, ChannelValue};
pub use listener::ListenerKey;
pub use next_hop::{NextHopKey, NextHopValue};
pub use peer::{PeerKey, PeerValue};
pub use stats::ChannelStats;
pub use v4::{ChannelKey4, ClientKey4, Narrow, NextHopKey4, PeerKey4};

/// `family` value for IPv4 (the Linux `AF_INET`).
pub const FAMILY_IPV4: u8 = 2;
/// `family` value for IPv6 (the Linux `AF_INET6`).
pub const FAMILY_IPV6: u8 = 10;

/// Name of the client-to-peer hash map of IPv6 clients ([`ChannelKey`] -> [`ChannelValue`]).
pub const CLIENT_TO_PEER: &str = "CLIENT_TO_PEER";
/// Name of the client-to-peer hash map of IPv4 clients ([`ChannelKey4`] -> [`ChannelValue`]).
pub const CLIENT_TO_PEER4: &str = "CLIENT_TO_PEER4";
/// Name of the peer-to-client hash map of IPv6 relayed addresses ([`PeerKey`] ->
/// [`PeerValue`]).
pub const PEER_TO_CLIENT: &str = "PEER_TO_CLIENT";
/// Name of the peer-to-client hash map of IPv4 relayed addresses ([`PeerKey4`] ->
/// [`PeerValue`]).
pub const PEER_TO_CLIENT4: &str = "PEER_TO_CLIENT4";
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
/// Name of the allocation hash map of IPv6 clients ([`ClientKey`] -> [`AllocationValue`]).
pub const ALLOCATIONS: &str = "ALLOCATIONS";
/// Name of the allocation hash map of IPv4 clients ([`ClientKey4`] -> [`AllocationValue`]).
pub const ALLOCATIONS4: &str = "ALLOCATIONS4";
/// The `channel` of a [`PeerValue`] that is a permission, not a channel: the peer's datagrams
/// go to the client as Data indications.
pub const NO_CHANNEL: u16 = 0;
/// Name of the next-hop hash map of IPv6 destinations ([`NextHopKey`] -> [`NextHopValue`]).
pub const NEXT_HOPS: &str = "NEXT_HOPS";
/// Name of the next-hop hash map of IPv4 destinations ([`NextHopKey4`] -> [`NextHopValue`]).
pub const NEXT_HOPS4: &str = "NEXT_HOPS4";
/// Name of the hash map of the interfaces the program is attached to (ifindex -> flags,
/// `u32`s, host byte order): how it runs on each ([`IF_GENERIC`]).
pub const INTERFACES: &str = "INTERFACES";
/// [`INTERFACES`] flag: the program runs in generic (skb) mode on this interface, where a
/// packet keeps its skb's checksum offload state through the program.
pub const IF_GENERIC: u32 = 1;
/// [`INTERFACES`] flag: the TC program ([`TC_PROGRAM`]) is attached to this interface's
/// ingress (clsact or tcx) instead of the XDP program. The TC program redirects only to
/// interfaces in [`INTERFACES`].
pub const IF_TC: u32 = 2;
/// Name of the XDP program in the object.
pub const PROGRAM: &str = "xdpturn";
/// Name of the TC (sched_cls) program in the same object: the same pipeline on an skb, for
/// drivers whose XDP cannot serve (no head adjustment) or where generic XDP is slower.
pub const TC_PROGRAM: &str = "xdpturn_tc";

/// A family mismatch: the two addresses of a key or value must be both IPv4 or both IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixedFamilies;

impl core::fmt::Display for MixedFamilies {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("the two addresses are of different families (IPv4 and IPv6)")
    }
}

// SAFETY (all impls): the types are #[repr(C)], contain only integers and byte arrays, have
// explicit padding fields so no byte is uninitialised (ChannelKey 16+16+2+2+2+1+1 = 40 bytes,
// align 2; ChannelValue 16+16+2+2+1+3+4 = 44, align 4; PeerKey 16+16+2+2+1+3 = 40, align 2;
// PeerValue 16+16+2+2+2+1+1+4 = 44, align 4; ListenerKey 16+2+1+1 = 20, align 2; ChannelStats
// 4 x u64 = 32, align 8; NextHopKey 16+1+3 = 20, align 1; NextHopValue 4+4+6+6 = 20, align 4;
// ClientKey 16+16+2+2+1+3 = 40, align 2; AllocationValue 16+16+2+2 = 36, align 2;
// ChannelKey4 4+4+2+2+2 = 14, align 2; PeerKey4 and ClientKey4 4+4+2+2 = 12, align 2;
// NextHopKey4 4, align 1; the layout test checks every size), and every bit pattern is a valid
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
    unsafe impl aya::Pod for super::ChannelKey4 {}
    unsafe impl aya::Pod for super::PeerKey4 {}
    unsafe impl aya::Pod for super::ClientKey4 {}
    unsafe impl aya::Pod for super::NextHopKey4 {}
}

#[cfg(test)]
mod tests;
