//! The XDP dataplane: loads relay-ebpf's programs (XDP, and TC where an interface gets tc
//! mode), attaches them to the NICs, and is the only writer of their maps (ARCHITECTURE.md,
//! "Kernel/user").
//!
//! ```text
//! Event::ChannelBound   ─► Dataplane::bind_channel   ─► NEXT_HOPS of client and peer (new
//!                                                    ones resolved), then CLIENT_TO_PEER +
//!                                                    PEER_TO_CLIENT
//! Event::ChannelUnbound ─► Dataplane::unbind_channel ─► both entries removed (totals keep
//!                                                    them), then next hops no channel uses
//! Event::Permission-    ─► Dataplane::install_permission ─► NEXT_HOPS of client and peer,
//!   Installed                                        then PEER_TO_CLIENT (peer port 0,
//!                                                    channel 0) with a counter slot
//! Event::Permission-    ─► Dataplane::remove_permission ─► that entry, then its next hops
//!   Removed
//! Event::Allocation-    ─► Dataplane::install_allocation ─► ALLOCATIONS: client 5-tuple ->
//!   Installed / Removed    / remove_allocation             relayed addresses (or removed)
//! own thread, 1/s, and  ─► refresh_next_hops         ─► NEXT_HOPS follows the kernel's
//! on route/link/neighbour                               route, link and neighbour tables
//! announcements
//! metrics export        ─► Dataplane::totals         ─► per-CPU counters, summed (per channel:
//!                                                    Dataplane::counters)
//! each worker, 1/s      ─► Dataplane::take_traffic   ─► per-channel and per-permission bytes
//!                                                    since the last read, charged to the
//!                                                    allocations' bandwidth budgets (over it:
//!                                                    the allocation leaves the kernel until
//!                                                    the budget recovers; see proto)
//! drop(Dataplane)       ─► the XDP and TC links are detached: nothing forwards behind the
//!                                                    relay
//! ```
//!
//! A `Dataplane` is `Send + Sync`; its methods take `&self` and serialise map writes behind one
//! lock, so workers can share it in an `Arc`. Only UDP channels, permissions and allocations
//! are offloaded; anything the
//! program does not forward (STUN, unknown channels, fragments, a destination whose next hop is
//! not known yet, ...) reaches the relay's sockets unchanged and is served in userspace, so a
//! channel whose [`Dataplane::bind_channel`] failed still works, just slower.
//!
//! Sizes: `max_channels` channels and as many permissions at most (PEER_TO_CLIENT and
//! CHANNEL_STATS hold twice `max_channels` entries: a channel and a permission each take one
//! entry there and one counter slot, from one pool), `max_channels` allocations (ALLOCATIONS),
//! and two next hops per channel or permission (NEXT_HOPS). A permission's entry has port 0,
//! a channel's the peer's port, so both live side by side for one peer.
//!
//! Next hops: the program sends a rewritten packet where `NEXT_HOPS` says its destination's
//! next hop is (interface, MTU, MACs). The dataplane resolves each address a bound channel
//! sends to as the kernel routes the relay's own output to it ([`nexthop`]: route, interface,
//! neighbour) and keeps the entries current from a thread of its own: those a route, link or
//! neighbour change concerns as soon as the kernel announces it, and every destination again
//! once a second (resolving costs about 5 µs a destination: beyond some 10,000 of them, less
//! often, within 1/20 of a core, while announcements arrive). Stale neighbour entries, which
//! the program's packets never confirm, are marked used so that the kernel confirms them as it
//! does for its own sends. A destination without a usable route or a known neighbour MAC has
//! no entry, and its packets go up to the relay's sockets (`pass_no_next_hop`), whose sends
//! make the kernel resolve the neighbour; the entry follows.
//!
//! The program is compiled into the relay when `cargo xtask build-ebpf` ran before the relay
//! was built (relay/build.rs); without it, and on other systems than Linux, [`Dataplane::load`]
//! says why there is no XDP and the relay serves everything in userspace.
//!
//! Detaching: the program is attached with BPF links (XDP: kernel 5.9+; TC: tcx links, kernel
//! 6.6+), which the kernel removes when the process exits however it exits, so a relay that is
//! killed leaves no forwarding behind either. (aya falls back to a netlink attach of XDP on
//! older kernels; there only `Drop` detaches, and the program of a relay that was killed stays
//! attached, so that a relay started after it waits for the interface until someone detaches
//! it (`ip link set dev IF xdpgeneric off`, or `xdpdrv off` in native mode). TC before 6.6 is
//! a cls_bpf filter on a clsact qdisc, which a killed relay leaves behind too, forwarding what
//! its maps last held; so `auto` uses TC only where tcx links exist, and `--xdp-mode tc` on an
//! older kernel says so when it attaches.)
//!
//! Waiting: an interface that has an XDP program already (EBUSY, or EEXIST in the other
//! mode) is no load failure. During a hand-over of the host ports (serve::handover) the old
//! relay's program stays attached until its process exits, minutes later; the new relay's
//! dataplane loads, leaves that interface [waiting](Dataplane::waiting), keeps its maps as if
//! attached, and [`Dataplane::attach_waiting`] (called periodically by serve::xdp) attaches it
//! once the interface is free. A TC attach never waits: programs on an ingress chain (tcx, or
//! cls_bpf filters one after the other), each forwards what its own maps hold and passes the
//! rest on, so two relays' TC programs, or one relay's XDP program and another's TC program,
//! serve side by side.
//!
//! Requirements on the host: root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON), nothing else. In particular
//! forwarding need not be enabled on the attached interfaces: the next hops come from
//! userspace's route lookups for the relay's own output, not from `bpf_fib_lookup` (which
//! refuses to route without forwarding), and what the program sends is what the relay's
//! sockets would have sent.
//!
//! Where things are: this file holds the configuration, the attach modes and the next-hop
//! values; `events` applies proto's events, `bindings` turns them into what the maps hold,
//! `counts` and `program` are what the dataplane reports, `error` why it could not do
//! something. `linux` is the dataplane itself (loader and map sync), `nexthop` its route and
//! neighbour resolver; `stub` stands in where there is no XDP. `object` says where the
//! program's object is built and found (relay/build.rs and xtask).

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub mod nexthop;
#[cfg(not(target_os = "linux"))]
mod stub;

mod bindings;
mod counts;
mod error;
mod events;
pub mod object;
mod program;

use std::net::SocketAddr;

pub use bindings::{AllocationBinding, ChannelBinding, PeerEntry, PermissionBinding};
pub use counts::{
    ChannelCounters, ChannelTraffic, Counters, KindTraffic, MessageKind, PermissionCounters,
    Totals, Traffic, VerdictCounts,
};
pub use error::DataplaneError;
#[cfg(target_os = "linux")]
pub use linux::{Dataplane, tcx_links};
pub use program::{ProgramStats, TestRun};
use relay_common::NextHopValue;
pub use relay_common::Verdict;
#[cfg(not(target_os = "linux"))]
pub use stub::{Dataplane, tcx_links};

/// Whether this relay binary carries the XDP program (it was built after
/// `cargo xtask build-ebpf`, on Linux).
pub const PROGRAM_BUILT: bool = cfg!(all(target_os = "linux", xdpturn_ebpf));

/// How to attach the program: one enum with the TurnCluster spec's `xdp.mode` and the config
/// file's `xdp-mode` (names and aliases in `api`).
///
/// - `Native`: XDP in the driver (`XDP_FLAGS_DRV_MODE`): the fast one; the NIC driver must
///   support XDP.
/// - `Tc`: the TC program (relay-common's `TC_PROGRAM`, same object, same maps) on the
///   interface's ingress: a tcx link on kernels 6.6 and later, a cls_bpf filter on a clsact
///   qdisc before. Works on every interface, on the socket buffer as the kernel built it, and
///   chains with other programs there (what it does not forward goes on to the next one), so
///   it never waits for another relay's program.
/// - `Skb`: generic XDP in the kernel stack (`XDP_FLAGS_SKB_MODE`): works on every interface,
///   but after the kernel has built a socket buffer, and linearizes each one first, so most of
///   the gain is gone; slower than `Tc`.
/// - `Auto` (the default): the fastest that works on each interface: native where the driver
///   runs XDP, else TC (on kernels with tcx links), else skb; logs which one each interface
///   got and why ([`ModeChoice`]).
pub use api::XdpMode;

/// What [`Dataplane::load`] loads and where it attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interfaces to attach to (where clients and peers are reached). They are also the
    /// only ones the program redirects to; a route out of any other goes through userspace.
    pub interfaces: Vec<String>,
    /// How to attach.
    pub mode: XdpMode,
    /// Size of the maps: at most this many channels are offloaded at once, and as many
    /// permissions and allocations; binding one more channel fails with
    /// [`DataplaneError::Full`] (one more permission or allocation with
    /// [`DataplaneError::MapFull`]) and it stays in userspace.
    pub max_channels: u32,
    /// The relay's UDP listening addresses (an unspecified address stands for all of its
    /// family). Only used to count what is not forwarded under the right action (`pass_stun`
    /// and `pass_unknown_channel` rather than `pass_not_for_us`).
    pub listeners: Vec<SocketAddr>,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            interfaces: Vec::new(),
            mode: XdpMode::Auto,
            max_channels: 65_536,
            listeners: Vec::new(),
        }
    }
}

/// Where the program is attached, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The interface name.
    pub interface: String,
    /// Its index.
    pub ifindex: u32,
    /// The mode it got ([`XdpMode::Native`], [`XdpMode::Tc`] or [`XdpMode::Skb`], never
    /// `Auto`).
    pub mode: XdpMode,
    /// Why that mode.
    pub why: ModeChoice,
}

/// Why an interface got its mode: said at start-up and in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChoice {
    /// `--xdp-mode native`, `tc` or `skb` asked for it.
    Configured,
    /// `auto` on a device whose driver runs XDP natively: native.
    DriverSupportsNative,
    /// `auto` on a device whose driver refused native XDP: TC, faster than generic XDP.
    DriverLacksNative,
    /// `auto` on a virtual interface (veth, bridge, ...): skb, because native XDP_TX and
    /// redirects there drop frames unless the other end runs XDP too, and because generic XDP
    /// costs the relay's core less than TC there (measured on veth by `cargo xtask bench-xdp`:
    /// TC pays the stack's GRO pass per packet, which generic XDP turns off on its device).
    VirtualInterface,
    /// `auto` on a device whose driver refused native XDP, where TC is unavailable (a kernel
    /// without tcx links, or a TC program that could not be loaded or attached): skb.
    DriverLacksNativeWithoutTc,
}

impl ModeChoice {
    /// A bounded label value for the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeChoice::Configured => "configured",
            ModeChoice::DriverSupportsNative => "driver_supports_native",
            ModeChoice::DriverLacksNative => "driver_lacks_native",
            ModeChoice::VirtualInterface => "virtual_interface",
            ModeChoice::DriverLacksNativeWithoutTc => "driver_lacks_native_without_tc",
        }
    }

    /// What to tell the operator reading the log.
    pub fn describe(self) -> &'static str {
        match self {
            ModeChoice::Configured => "as configured (--xdp-mode)",
            ModeChoice::DriverSupportsNative => "auto: the driver runs XDP natively",
            ModeChoice::DriverLacksNative => {
                "auto: the driver refused native XDP; tc mode (faster than skb mode, which \
                 copies each packet)"
            }
            ModeChoice::VirtualInterface => {
                "auto: a virtual interface (veth, bridge, ...) gets skb mode: native XDP_TX and \
                 redirects there drop frames unless the other end runs XDP too, and generic XDP \
                 costs less than tc mode there (no GRO pass per packet)"
            }
            ModeChoice::DriverLacksNativeWithoutTc => {
                "auto: the driver refused native XDP and tc is unavailable (the kernel has no \
                 tcx links before 6.6, or the TC program could not be loaded or attached: see \
                 above); skb mode"
            }
        }
    }
}

/// How packets to one destination leave: what the program writes into their Ethernet header
/// and where it sends them (a `NEXT_HOPS` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NextHop {
    /// The egress interface's index.
    pub ifindex: u32,
    /// The largest IP packet that leaves: the route's MTU if it has one, else the interface's.
    pub mtu: u32,
    /// The egress interface's MAC (the Ethernet source).
    pub smac: [u8; 6],
    /// The next hop's MAC (the Ethernet destination): the gateway's, or the destination's own
    /// on a connected network.
    pub dmac: [u8; 6],
}

impl NextHop {
    /// The `NEXT_HOPS` value.
    pub fn value(&self) -> NextHopValue {
        NextHopValue {
            ifindex: self.ifindex,
            mtu: self.mtu,
            smac: self.smac,
            dmac: self.dmac,
        }
    }

    /// From a `NEXT_HOPS` value.
    pub fn from_value(v: &NextHopValue) -> NextHop {
        NextHop {
            ifindex: v.ifindex,
            mtu: v.mtu,
            smac: v.smac,
            dmac: v.dmac,
        }
    }
}

/// What [`Dataplane::refresh_next_hops`] changed in `NEXT_HOPS`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextHopChanges {
    /// Entries of destinations that resolve now and did not.
    pub added: usize,
    /// Entries whose next hop changed (interface, MTU or a MAC).
    pub updated: usize,
    /// Entries of destinations that no longer resolve (or that no channel sends to).
    pub removed: usize,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for m in [XdpMode::Native, XdpMode::Skb, XdpMode::Tc, XdpMode::Auto] {
            assert_eq!(m.as_str().parse::<XdpMode>(), Ok(m));
        }
        assert_eq!("generic".parse::<XdpMode>(), Ok(XdpMode::Skb));
        assert_eq!("tc".parse::<XdpMode>(), Ok(XdpMode::Tc));
        let err = "fast".parse::<XdpMode>().unwrap_err();
        assert!(err.contains("native, tc, skb or auto"), "{err}");
        assert_eq!(XdpMode::default(), XdpMode::Auto);
    }

    #[test]
    fn mode_choices_have_distinct_labels_and_say_their_mode() {
        let all = [
            ModeChoice::Configured,
            ModeChoice::DriverSupportsNative,
            ModeChoice::DriverLacksNative,
            ModeChoice::VirtualInterface,
            ModeChoice::DriverLacksNativeWithoutTc,
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), all.len());
        for (choice, mode) in [
            (ModeChoice::DriverLacksNative, "tc mode"),
            (ModeChoice::VirtualInterface, "skb mode"),
            (ModeChoice::DriverLacksNativeWithoutTc, "skb mode"),
        ] {
            assert!(choice.describe().contains(mode), "{choice:?}");
        }
    }
}
