//! Parsing and rewriting, as plain functions on fixed-size byte arrays.
//!
//! The XDP program copies each header out of the packet into an array after one bounds check,
//! calls these functions, and copies the arrays they fill back in: the verifier sees constant
//! offsets only, and the same code runs under `cargo test` on packets built by hand. Nothing
//! here loops over a payload: a rewrite changes headers, and the UDP checksum is updated from
//! the old one (RFC 1624) with the words that changed, padding and ChannelData header included.
//!
//! A forwarded packet is rewritten in four steps, the same in both directions:
//! `bpf_xdp_adjust_head(`[`Rewrite::head_delta`]`)` so that the payload stays where it is and
//! the new headers fit in front of it; `bpf_xdp_adjust_tail` down to [`Rewrite::frame_len`]
//! (dropping ChannelData padding and Ethernet padding); then an Ethernet header with the MACs
//! the FIB lookup gave, followed by [`Rewrite::headers`].
//!
//! The rooms: `parse` (Ethernet, IP and UDP headers in), `channel` (ChannelData told from
//! STUN, and what goes up unmatched), `checksum` (how the arriving UDP checksum is read),
//! `route` (where a forwarded packet goes, from the map values), `rewrite` (the headers that
//! leave), and `decide` (the program's decision steps that need no packet memory).
// Which way a packet goes is decided by matching on enums here: every variant is named.
#![deny(clippy::wildcard_enum_match_arm)]

#[cfg(doc)]
use crate::verdict::Verdict;

mod channel;
mod checksum;
mod decide;
mod parse;
mod rewrite;
mod route;

pub use channel::*;
pub use checksum::*;
pub use decide::*;
pub use parse::*;
pub use rewrite::*;
pub use route::*;

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options (the only one the program forwards).
pub const IPV4_HLEN: usize = 20;
/// IPv6 fixed header length (the program forwards no extension headers).
pub const IPV6_HLEN: usize = 40;
/// UDP header length.
pub const UDP_HLEN: usize = 8;
/// ChannelData header length (channel number, length).
pub const CHANNEL_HLEN: usize = 4;
/// The longest frame the program handles; longer ones are passed ([`Verdict::PassTooBig`]).
/// Bounding offsets is what lets the verifier accept reads at a variable offset.
pub const MAX_FRAME: usize = 0x3FFF;
/// The most headers a rewrite writes after the Ethernet header: IPv6 + UDP + ChannelData.
pub const MAX_HEADERS: usize = IPV6_HLEN + UDP_HLEN + CHANNEL_HLEN;

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// EtherType of an 802.1Q VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETH_P_8021AD: u16 = 0x88A8;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv4 "don't fragment" flag, in the flags/fragment-offset word.
pub const IPV4_DF: u16 = 0x4000;
/// IPv4 "more fragments" flag and fragment offset mask.
const IPV4_MF_OFFSET: u16 = 0x3FFF;

#[cfg(test)]
mod tests;
