//! The XDP dataplane: loads relay-ebpf's program, attaches it to the NICs, and is the only
//! writer of its maps (ARCHITECTURE.md, "Kernel/user").
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
//! drop(Dataplane)       ─► the XDP links are detached: nothing forwards behind the relay
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
//! Detaching: the program is attached with BPF links (kernel 5.9+), which the kernel removes
//! when the process exits however it exits, so a relay that is killed leaves no forwarding
//! behind either. (aya falls back to a netlink attach on older kernels; there only `Drop`
//! detaches.)
//!
//! Requirements on the host: root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON), nothing else. In particular
//! forwarding need not be enabled on the attached interfaces: the next hops come from
//! userspace's route lookups for the relay's own output, not from `bpf_fib_lookup` (which
//! refuses to route without forwarding), and what the program sends is what the relay's
//! sockets would have sent.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub mod nexthop;
#[cfg(not(target_os = "linux"))]
mod stub;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[cfg(target_os = "linux")]
pub use linux::Dataplane;
pub use relay_common::Action;
use relay_common::NextHopValue;
#[cfg(not(target_os = "linux"))]
pub use stub::Dataplane;

use crate::proto::allocation::Relay;
use crate::proto::{Event, FiveTuple, Transport};

/// Whether this relay binary carries the XDP program (it was built after
/// `cargo xtask build-ebpf`, on Linux).
pub const PROGRAM_BUILT: bool = cfg!(all(target_os = "linux", xdpturn_ebpf));

/// How to attach the program: one enum with the TurnCluster spec's `xdp.mode` and the config
/// file's `xdp-mode` (names and aliases in `api`).
///
/// - `Native`: in the driver (`XDP_FLAGS_DRV_MODE`): the fast one; the NIC driver must support
///   XDP.
/// - `Skb`: generic XDP in the kernel stack (`XDP_FLAGS_SKB_MODE`): works on every interface,
///   but after the kernel has built a socket buffer, so most of the gain is gone.
/// - `Auto` (the default): native, and generic where native attach fails; logs which one each
///   interface got.
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
    /// The mode it got ([`XdpMode::Native`] or [`XdpMode::Skb`], never `Auto`).
    pub mode: XdpMode,
    /// Why that mode.
    pub why: ModeChoice,
}

/// Why an interface got its XDP mode: said at start-up and in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeChoice {
    /// `--xdp-mode native` or `skb` asked for it.
    Configured,
    /// `auto` on a virtual interface (veth, bridge, ...): generic mode, because native
    /// XDP_TX and redirects there drop frames unless the other end runs XDP too, and because
    /// generic mode keeps the packets' checksum offload state.
    VirtualInterface,
    /// `auto` on a device whose driver runs XDP natively.
    DriverSupportsNative,
    /// `auto` on a device whose driver refused native XDP: generic mode.
    DriverLacksNative,
}

impl ModeChoice {
    /// A bounded label value for the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeChoice::Configured => "configured",
            ModeChoice::VirtualInterface => "virtual_interface",
            ModeChoice::DriverSupportsNative => "driver_supports_native",
            ModeChoice::DriverLacksNative => "driver_lacks_native",
        }
    }

    /// What to tell the operator reading the log.
    pub fn describe(self) -> &'static str {
        match self {
            ModeChoice::Configured => "as configured (--xdp-mode)",
            ModeChoice::VirtualInterface => {
                "auto: a virtual interface (veth, bridge, ...) gets skb mode: native XDP_TX and \
                 redirects there drop frames unless the other end runs XDP too, and skb mode \
                 keeps the packets' checksum offload state"
            }
            ModeChoice::DriverSupportsNative => "auto: the driver runs XDP natively",
            ModeChoice::DriverLacksNative => "auto: the driver refused native XDP; skb mode",
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

/// Why the dataplane could not do something. Nothing here is fatal to the relay: it serves the
/// traffic concerned in userspace.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The relay was built without the program.
    #[error(
        "this relay was built without the XDP program: run `cargo xtask build-ebpf`, then \
         rebuild the relay (or point XDPTURN_EBPF_OBJECT at a built object when building it)"
    )]
    NotBuilt,
    /// XDP does not exist here.
    #[error("XDP is not available on this system ({0}); everything is relayed in userspace")]
    Unsupported(&'static str),
    /// The kernel refused the program or its maps.
    #[error("loading the XDP program failed: {reason}")]
    Load {
        /// What failed, with a hint (permissions, verifier log, ...).
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// An interface in the config does not exist.
    #[error("interface `{0}` does not exist")]
    UnknownInterface(String),
    /// Attaching to an interface failed.
    #[error("attaching the XDP program to {interface} in {mode} mode failed: {reason}")]
    Attach {
        interface: String,
        mode: XdpMode,
        /// What failed, with a hint (try skb mode, another program attached, ...).
        reason: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Channels on this transport stay in userspace (only UDP ChannelData is offloaded).
    #[error("channels over {} are relayed in userspace", .0.as_str())]
    Transport(Transport),
    /// An address the kernel cannot match (an unspecified listener or relayed address).
    #[error("cannot offload a channel with {what} {addr}: the kernel sees the actual address")]
    Address {
        what: &'static str,
        addr: SocketAddr,
    },
    /// The maps are full: the channel is relayed in userspace.
    #[error("the XDP channel maps are full ({max_channels} channels)")]
    Full { max_channels: u32 },
    /// The maps hold as many permissions or allocations as they can (`what`): its Send and
    /// Data indications are relayed in userspace.
    #[error("the XDP maps hold {max} {what}s already")]
    MapFull { what: &'static str, max: u32 },
    /// The peer of this channel is already bound, on the same relayed address, to another
    /// channel (TURN does not allow it; the maps could not hold both).
    #[error("peer {peer} is already bound to another channel on relayed address {relay}")]
    Conflict { relay: SocketAddr, peer: SocketAddr },
    /// A map operation failed.
    #[error("XDP map `{map}`: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A BPF_PROG_TEST_RUN failed.
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Asking the kernel for routes, interfaces or neighbours failed.
    #[error("resolving next hops over netlink: {0}")]
    NextHop(#[source] std::io::Error),
}

impl DataplaneError {
    /// A bounded label for metrics (e.g. a `reason` on a userspace-fallback counter).
    pub fn metric_label(&self) -> &'static str {
        match self {
            DataplaneError::NotBuilt => "not_built",
            DataplaneError::Unsupported(_) => "unsupported",
            DataplaneError::Load { .. } => "load",
            DataplaneError::UnknownInterface(_) => "unknown_interface",
            DataplaneError::Attach { .. } => "attach",
            DataplaneError::Transport(_) => "transport",
            DataplaneError::Address { .. } => "address",
            DataplaneError::Full { .. } | DataplaneError::MapFull { .. } => "full",
            DataplaneError::Conflict { .. } => "conflict",
            DataplaneError::Map { .. } => "map",
            DataplaneError::TestRun(_) => "test_run",
            DataplaneError::NextHop(_) => "next_hop",
        }
    }
}

/// One channel, as the maps hold it: ChannelData from `client` to `listener` on `channel` goes
/// from `relay` (the relayed address the socket is bound to, not the advertised one) to `peer`,
/// and the peer's datagrams to `relay` go back from `listener` to `client`. Families may differ
/// between the two sides. IPv4-mapped IPv6 addresses are taken as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelBinding {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    pub channel: u16,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

impl ChannelBinding {
    /// The binding of a channel from what `Event::ChannelBound` / `ChannelUnbound` carry.
    /// Fails for channels the kernel cannot serve: not UDP, or an unspecified address.
    pub fn new(
        tuple: &FiveTuple,
        channel: u16,
        relay: &Relay,
        peer: SocketAddr,
    ) -> Result<Self, DataplaneError> {
        if tuple.transport != Transport::Udp {
            return Err(DataplaneError::Transport(tuple.transport));
        }
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let binding = ChannelBinding {
            client: canonical(tuple.client),
            listener: canonical(tuple.server),
            channel,
            relay: canonical(relay.addr),
            peer: canonical(peer),
        };
        for (what, addr) in [
            ("listener address", binding.listener),
            ("relayed address", binding.relay),
            ("client address", binding.client),
            ("peer address", binding.peer),
        ] {
            if addr.ip().is_unspecified() {
                return Err(DataplaneError::Address { what, addr });
            }
        }
        Ok(binding)
    }
}

/// One permission, as the maps hold it: datagrams from any port of `peer` to `relay` (the
/// relayed address the socket is bound to, of the peer's family) go to `client` from `listener`
/// as Data indications, and the client's Send indications to `peer` leave from `relay`.
/// IPv4-mapped IPv6 addresses are taken as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermissionBinding {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    pub relay: SocketAddr,
    pub peer: IpAddr,
}

impl PermissionBinding {
    /// The binding of a permission from what `Event::PermissionInstalled` /
    /// `PermissionRemoved` carry. Fails for permissions the kernel cannot serve: not UDP, an
    /// unspecified address, or a relayed address of another family than the peer's.
    pub fn new(tuple: &FiveTuple, relay: &Relay, peer: IpAddr) -> Result<Self, DataplaneError> {
        let (client, listener) = udp_tuple(tuple)?;
        let relay = canonical(relay.addr);
        let peer = peer.to_canonical();
        unspecified("relayed address", relay)?;
        unspecified("peer address", SocketAddr::new(peer, 0))?;
        if relay.is_ipv4() != peer.is_ipv4() {
            return Err(DataplaneError::Address {
                what: "relayed address of another family than the peer's",
                addr: relay,
            });
        }
        Ok(PermissionBinding {
            client,
            listener,
            relay,
            peer,
        })
    }
}

/// One allocation, as ALLOCATIONS holds it: Send indications from `client` to `listener` leave
/// from the relayed address of the peer's family among `relays`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllocationBinding {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    /// The bound relayed addresses, at most one per family.
    pub relays: Vec<SocketAddr>,
}

impl AllocationBinding {
    /// The binding of an allocation from what `Event::AllocationInstalled` carries. Fails for
    /// allocations the kernel cannot serve: not UDP (RFC 6062 TCP allocations never are), or
    /// an unspecified address.
    pub fn new(tuple: &FiveTuple, relays: &[Relay]) -> Result<Self, DataplaneError> {
        let (client, listener) = udp_tuple(tuple)?;
        let relays: Vec<SocketAddr> = relays.iter().map(|r| canonical(r.addr)).collect();
        for r in &relays {
            unspecified("relayed address", *r)?;
        }
        Ok(AllocationBinding {
            client,
            listener,
            relays,
        })
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The client and listener of a 5-tuple the kernel can match: UDP, specified addresses.
fn udp_tuple(tuple: &FiveTuple) -> Result<(SocketAddr, SocketAddr), DataplaneError> {
    if tuple.transport != Transport::Udp {
        return Err(DataplaneError::Transport(tuple.transport));
    }
    let (client, listener) = (canonical(tuple.client), canonical(tuple.server));
    unspecified("listener address", listener)?;
    unspecified("client address", client)?;
    Ok((client, listener))
}

fn unspecified(what: &'static str, addr: SocketAddr) -> Result<(), DataplaneError> {
    if addr.ip().is_unspecified() {
        return Err(DataplaneError::Address { what, addr });
    }
    Ok(())
}

/// A PEER_TO_CLIENT entry, as read from the map ([`Dataplane::peer_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerEntry {
    /// Where the peer's datagrams go, and from which listening address.
    pub client: SocketAddr,
    pub listener: SocketAddr,
    /// The channel, or 0 for a permission (Data indications).
    pub channel: u16,
    /// The counter slot in CHANNEL_STATS.
    pub slot: u32,
}

/// Packets and bytes (application data, as the userspace datapath counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    /// What `self` has more than `earlier` (for turning totals into counter increments).
    pub fn since(self, earlier: Traffic) -> Traffic {
        Traffic {
            packets: self.packets.saturating_sub(earlier.packets),
            bytes: self.bytes.saturating_sub(earlier.bytes),
        }
    }
}

/// One bound channel's traffic through the program, since it was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelCounters {
    pub binding: ChannelBinding,
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
}

/// One installed permission's traffic through the program (Send indications client to peer,
/// Data indications peer to client), since it was installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionCounters {
    pub binding: PermissionBinding,
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
}

/// What the kernel forwarded on one channel, or under one permission (as Send and Data
/// indications), since the last [`Dataplane::take_traffic`]: to be charged to its allocation's
/// bandwidth budget (`proto::Server::charge_offloaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelTraffic {
    /// The allocation's 5-tuple.
    pub tuple: FiveTuple,
    /// The channel, or [`ChannelTraffic::PERMISSION`] for a permission's indications.
    pub channel: u16,
    /// Application bytes, both directions.
    pub bytes: u64,
}

impl ChannelTraffic {
    /// The `channel` of a permission's traffic (no channel number is 0; the maps use it the
    /// same way).
    pub const PERMISSION: u16 = relay_common::maps::NO_CHANNEL;

    /// Whether this is a permission's traffic (Send and Data indications).
    pub fn is_permission(&self) -> bool {
        self.channel == Self::PERMISSION
    }
}

/// Packets per [`Action`], summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActionCounts([u64; Action::COUNT]);

impl ActionCounts {
    /// Packets counted under `action`.
    pub fn get(&self, action: Action) -> u64 {
        self.0[action.index() as usize]
    }

    /// Every action with its count, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Action, u64)> + '_ {
        Action::ALL.iter().map(|&a| (a, self.get(a)))
    }

    /// Every packet the program saw.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn set(&mut self, action: Action, count: u64) {
        self.0[action.index() as usize] = count;
    }
}

/// What the program counted since it was loaded, summed over CPUs: [`Dataplane::totals`]. The
/// traffic includes channels since unbound, so it only grows: feed its increase to
/// `relayed(Datapath::Xdp, Transport::Udp, direction)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
    pub actions: ActionCounts,
    /// The same traffic by kind of message (each counted once per direction it stands for).
    pub kinds: [KindTraffic; MessageKind::ALL.len()],
}

/// What the program forwards, by kind: the label of `xdpturn_xdp_forwarded_packets_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// ChannelData, both ways.
    Channel,
    /// Send indications (client to peer) and Data indications (peer to client).
    Indication,
    /// From a client straight to another client of this relay: counted both ways, as the two
    /// passes of userspace it replaces.
    SameRelay,
}

impl MessageKind {
    /// Every kind, in the order of [`Totals::kinds`].
    pub const ALL: [MessageKind; 3] = [
        MessageKind::Channel,
        MessageKind::Indication,
        MessageKind::SameRelay,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Channel => "channel",
            MessageKind::Indication => "indication",
            MessageKind::SameRelay => "same_relay",
        }
    }
}

/// One kind's traffic through the program, each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindTraffic {
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
}

/// [`Totals`] and every bound channel's traffic: [`Dataplane::counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
    pub actions: ActionCounts,
    /// The channels bound now.
    pub channels: Vec<ChannelCounters>,
    /// The permissions installed now.
    pub permissions: Vec<PermissionCounters>,
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The XDP verdict (`XDP_PASS` = 2, `XDP_TX` = 3, `XDP_REDIRECT` = 4, `XDP_DROP` = 1).
    pub verdict: u32,
    /// The packet as the program left it.
    pub output: Vec<u8>,
    /// Average time per run, as the kernel measured it.
    pub duration: Duration,
}

/// What the kernel says about the loaded program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgramStats {
    /// Instructions the verifier processed (kernel 5.16+).
    pub verified_instructions: Option<u32>,
    /// Size of the program after the verifier's rewrites, in bytes.
    pub translated_bytes: Option<u32>,
    /// Time spent in the program and runs of it, counted by the kernel only while BPF run-time
    /// statistics are on (`kernel.bpf_stats_enabled`, or a `BPF_ENABLE_STATS` fd held open):
    /// the program's own cost per packet, without anything around it.
    pub run_time: Duration,
    pub run_count: u64,
}

impl Dataplane {
    /// Applies a channel, permission or allocation event (the others are ignored):
    /// `ChannelBound` binds, `ChannelUnbound` unbinds, `PermissionInstalled` and
    /// `AllocationInstalled` install, `PermissionRemoved` and `AllocationRemoved` remove. This
    /// is the one place the event loop needs to call.
    pub fn apply(&self, event: &Event) -> Result<(), DataplaneError> {
        match event {
            Event::ChannelBound {
                tuple,
                channel,
                relay,
                peer,
                ..
            } => self.bind_channel(tuple, *channel, relay, *peer),
            Event::ChannelUnbound {
                tuple,
                channel,
                relay,
                peer,
            } => self.unbind_channel(tuple, *channel, relay, *peer),
            Event::PermissionInstalled {
                tuple, relay, peer, ..
            } => self.install_permission(tuple, relay, *peer),
            Event::PermissionRemoved { tuple, relay, peer } => {
                self.remove_permission(tuple, relay, *peer)
            }
            Event::AllocationInstalled { tuple, relays } => self.install_allocation(tuple, relays),
            Event::AllocationRemoved { tuple } => self.remove_allocation(tuple),
            _ => Ok(()),
        }
    }

    /// Offloads a permission's Send and Data indications (`Event::PermissionInstalled`; a
    /// refresh of one already there changes nothing). On error the maps are as before and
    /// the indications are relayed in userspace.
    pub fn install_permission(
        &self,
        tuple: &FiveTuple,
        relay: &Relay,
        peer: IpAddr,
    ) -> Result<(), DataplaneError> {
        self.permit(PermissionBinding::new(tuple, relay, peer)?, *tuple)
    }

    /// Removes a permission (`Event::PermissionRemoved`); its counts are kept in the totals.
    /// One that was not offloaded is not an error.
    pub fn remove_permission(
        &self,
        tuple: &FiveTuple,
        relay: &Relay,
        peer: IpAddr,
    ) -> Result<(), DataplaneError> {
        match PermissionBinding::new(tuple, relay, peer) {
            Ok(binding) => self.revoke(&binding),
            Err(DataplaneError::Transport(_) | DataplaneError::Address { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Offloads an allocation's Send indications (`Event::AllocationInstalled`; a refresh
    /// changes nothing). On error the maps are as before.
    pub fn install_allocation(
        &self,
        tuple: &FiveTuple,
        relays: &[Relay],
    ) -> Result<(), DataplaneError> {
        self.offload(AllocationBinding::new(tuple, relays)?)
    }

    /// Removes an allocation (`Event::AllocationRemoved`). One that was not offloaded is not
    /// an error.
    pub fn remove_allocation(&self, tuple: &FiveTuple) -> Result<(), DataplaneError> {
        match AllocationBinding::new(tuple, &[]) {
            Ok(binding) => self.unload(&binding),
            Err(DataplaneError::Transport(_) | DataplaneError::Address { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Offloads a channel (`Event::ChannelBound`; a refresh of a bound channel changes
    /// nothing). On error the maps are as before and the channel is relayed in userspace.
    pub fn bind_channel(
        &self,
        tuple: &FiveTuple,
        channel: u16,
        relay: &Relay,
        peer: SocketAddr,
    ) -> Result<(), DataplaneError> {
        self.bind(ChannelBinding::new(tuple, channel, relay, peer)?, *tuple)
    }

    /// Removes a channel (`Event::ChannelUnbound`); its counts are kept in the totals. A
    /// channel that was not offloaded is not an error.
    pub fn unbind_channel(
        &self,
        tuple: &FiveTuple,
        channel: u16,
        relay: &Relay,
        peer: SocketAddr,
    ) -> Result<(), DataplaneError> {
        match ChannelBinding::new(tuple, channel, relay, peer) {
            Ok(binding) => self.unbind(&binding),
            // Never offloaded, so nothing to remove.
            Err(DataplaneError::Transport(_) | DataplaneError::Address { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::proto::RelayHandle;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn relay(addr: SocketAddr) -> Relay {
        Relay {
            handle: RelayHandle(1),
            addr,
            advertised: "203.0.113.1:50000".parse().unwrap(),
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [XdpMode::Native, XdpMode::Skb, XdpMode::Auto] {
            assert_eq!(m.as_str().parse::<XdpMode>(), Ok(m));
        }
        assert_eq!("generic".parse::<XdpMode>(), Ok(XdpMode::Skb));
        assert!("fast".parse::<XdpMode>().is_err());
        assert_eq!(XdpMode::default(), XdpMode::Auto);
    }

    #[test]
    fn bindings_take_the_bound_address_and_canonical_ips() {
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        let tuple = FiveTuple {
            transport: Transport::Udp,
            client: SocketAddr::new(mapped, 40_000),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        let b = ChannelBinding::new(
            &tuple,
            0x4000,
            &relay("[2001:db8::1]:50000".parse().unwrap()),
            "[2001:db8::2]:6000".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(b.client, "198.51.100.7:40000".parse().unwrap());
        // The bound address, not the advertised one: that is what packets arrive at.
        assert_eq!(b.relay, "[2001:db8::1]:50000".parse().unwrap());
    }

    #[test]
    fn bindings_refuse_what_the_kernel_cannot_match() {
        let mut tuple = FiveTuple {
            transport: Transport::Tcp,
            client: "198.51.100.7:40000".parse().unwrap(),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        let r = relay("192.0.2.1:50000".parse().unwrap());
        let peer = "192.0.2.9:6000".parse().unwrap();
        let err = ChannelBinding::new(&tuple, 0x4000, &r, peer).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
        assert_eq!(
            err.to_string(),
            "channels over tcp are relayed in userspace"
        );
        tuple.transport = Transport::Udp;
        tuple.server = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 3478);
        let err = ChannelBinding::new(&tuple, 0x4000, &r, peer).unwrap_err();
        assert_eq!(err.metric_label(), "address");
    }

    #[test]
    fn permissions_take_the_bound_address_and_refuse_what_the_kernel_cannot_match() {
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        let mut tuple = FiveTuple {
            transport: Transport::Udp,
            client: SocketAddr::new(mapped, 40_000),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        let v4 = relay("192.0.2.1:50000".parse().unwrap());
        let peer_mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
        let p = PermissionBinding::new(&tuple, &v4, peer_mapped).unwrap();
        assert_eq!(p.client, "198.51.100.7:40000".parse().unwrap());
        assert_eq!(p.relay, v4.addr);
        assert_eq!(p.peer, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
        let v6_peer: IpAddr = "2001:db8::2".parse().unwrap();
        let err = PermissionBinding::new(&tuple, &v4, v6_peer).unwrap_err();
        assert_eq!(err.metric_label(), "address");
        let err = PermissionBinding::new(&tuple, &v4, Ipv4Addr::UNSPECIFIED.into()).unwrap_err();
        assert_eq!(err.metric_label(), "address");

        let v6 = relay("[2001:db8::1]:50001".parse().unwrap());
        let a = AllocationBinding::new(&tuple, &[v4, v6]).unwrap();
        assert_eq!(a.relays, [v4.addr, v6.addr]);
        let unspecified = relay("0.0.0.0:50000".parse().unwrap());
        let err = AllocationBinding::new(&tuple, &[unspecified]).unwrap_err();
        assert_eq!(err.metric_label(), "address");

        tuple.transport = Transport::Tls;
        let err = PermissionBinding::new(&tuple, &v4, peer_mapped).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
        let err = AllocationBinding::new(&tuple, &[v4]).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
    }

    #[test]
    fn permission_traffic_is_told_from_channel_traffic() {
        let tuple = FiveTuple {
            transport: Transport::Udp,
            client: "198.51.100.7:40000".parse().unwrap(),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        let t = |channel| ChannelTraffic {
            tuple,
            channel,
            bytes: 1,
        };
        assert!(t(ChannelTraffic::PERMISSION).is_permission());
        assert!(!t(0x4000).is_permission());
        let err = DataplaneError::MapFull {
            what: "permission",
            max: 3,
        };
        assert_eq!(err.metric_label(), "full");
        assert_eq!(err.to_string(), "the XDP maps hold 3 permissions already");
    }

    #[test]
    fn traffic_increases() {
        let a = Traffic {
            packets: 5,
            bytes: 500,
        };
        let b = Traffic {
            packets: 7,
            bytes: 900,
        };
        assert_eq!(
            b.since(a),
            Traffic {
                packets: 2,
                bytes: 400
            }
        );
        assert_eq!(a.since(b), Traffic::default());
    }

    #[test]
    fn action_counts_by_action() {
        let mut c = ActionCounts::default();
        c.set(Action::PassStun, 3);
        c.set(Action::ForwardedTx, 4);
        assert_eq!(c.get(Action::PassStun), 3);
        assert_eq!(c.total(), 7);
        assert_eq!(c.iter().count(), Action::COUNT);
    }

    #[test]
    fn not_built_says_what_to_run() {
        let msg = DataplaneError::NotBuilt.to_string();
        assert!(msg.contains("cargo xtask build-ebpf"), "{msg}");
    }
}
