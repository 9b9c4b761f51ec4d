//! What the XDP program (`relay-ebpf`) and userspace (`relay`'s dataplane) share.
//!
//! - [`maps`]: the map keys and values, `#[repr(C)]`. Every field that is a port or channel
//!   number is stored in **network byte order**, exactly as it appears in packets, so the
//!   kernel compares and copies without swapping. Addresses are 16 bytes: IPv6 as is, IPv4 in
//!   the first 4 bytes with the rest zero (`family` says which). Build values with the
//!   constructors, which take host-order numbers and `core::net` addresses, and read them back
//!   with the accessors; the raw fields are public for the kernel side.
//! - [`Verdict`]: what the program did with a packet and why, the index of its counters.
//! - [`csum`] and [`packet`]: the program's parsing, rewriting and checksum arithmetic as plain
//!   functions on fixed-size arrays, so `cargo test -p relay-common` tests them on real packets.
//! - [`indication`]: TURN Send indications parsed, their FINGERPRINT's CRC-32, Data indications.
//!
//! The `user` feature adds `aya::Pod` and `Debug` impls (and is the only part that needs `std`).

#![no_std]

pub mod csum;
pub mod indication;
pub mod maps;
pub mod packet;
pub mod verdict;

pub use maps::{
    AllocationValue, ChannelEntries, ChannelKey, ChannelStats, ChannelValue, ClientKey,
    FAMILY_IPV4, FAMILY_IPV6, ListenerKey, MixedFamilies, NextHopKey, NextHopValue, PeerKey,
    PeerValue,
};
pub use verdict::Verdict;
