//! The XDP dataplane: loads relay-ebpf's program, attaches it to the NICs, and is the only
//! writer of its maps (ARCHITECTURE.md, "Kernel/user").
//!
//! ```text
//! Event::ChannelBound   ─► Dataplane::bind_channel   ─► CLIENT_TO_PEER + PEER_TO_CLIENT
//! Event::ChannelUnbound ─► Dataplane::unbind_channel ─► both entries removed (totals keep them)
//! metrics export        ─► Dataplane::totals         ─► per-CPU counters, summed (per channel:
//!                                                    Dataplane::counters)
//! each worker, 1/s      ─► Dataplane::take_traffic   ─► per-channel bytes since the last read,
//!                                                    charged to the allocations' bandwidth
//!                                                    budgets (over it: channels unbound until
//!                                                    the budget recovers; see proto)
//! drop(Dataplane)       ─► the XDP links are detached: nothing forwards behind the relay
//! ```
//!
//! A `Dataplane` is `Send + Sync`; its methods take `&self` and serialise map writes behind one
//! lock, so workers can share it in an `Arc`. Only UDP channels are offloaded; anything the
//! program does not forward (STUN, unknown channels, fragments, a route that needs a neighbour
//! resolved, ...) reaches the relay's sockets unchanged and is served in userspace, so a
//! channel whose [`Dataplane::bind_channel`] failed still works, just slower.
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
//! Requirements on the host, besides root (or CAP_BPF + CAP_NET_ADMIN): forwarding enabled on
//! the attached interfaces (`net.ipv4.conf.<if>.forwarding=1`, and `net.ipv6.conf.<if>.forwarding=1`
//! for IPv6), because `bpf_fib_lookup`, which finds the next hop and its MAC, refuses to route
//! otherwise — every packet then goes up as `pass_fib_fwd_disabled`; see
//! [`Attachment::ipv4_forwarding`].

#[cfg(target_os = "linux")]
mod linux;
#[cfg(not(target_os = "linux"))]
mod stub;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

#[cfg(target_os = "linux")]
pub use linux::Dataplane;
pub use relay_common::Action;
#[cfg(not(target_os = "linux"))]
pub use stub::Dataplane;

use crate::proto::allocation::Relay;
use crate::proto::{Event, FiveTuple, Transport};

/// Whether this relay binary carries the XDP program (it was built after
/// `cargo xtask build-ebpf`, on Linux).
pub const PROGRAM_BUILT: bool = cfg!(all(target_os = "linux", xdpturn_ebpf));

/// How to attach the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`): the fast one; the NIC driver must support XDP.
    Native,
    /// Generic XDP in the kernel stack (`XDP_FLAGS_SKB_MODE`): works on every interface, but
    /// after the kernel has built a socket buffer, so most of the gain is gone.
    Skb,
    /// Native, and generic where native attach fails; logs which one each interface got.
    #[default]
    Auto,
}

impl XdpMode {
    /// The name used in flags, config files and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
            XdpMode::Auto => "auto",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for XdpMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" | "driver" | "drv" => Ok(XdpMode::Native),
            "skb" | "generic" => Ok(XdpMode::Skb),
            "auto" => Ok(XdpMode::Auto),
            _ => Err(format!(
                "unknown XDP mode `{s}` (expected native, skb or auto)"
            )),
        }
    }
}

/// What [`Dataplane::load`] loads and where it attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpConfig {
    /// The interfaces to attach to (where clients and peers are reached). They are also the
    /// only ones the program redirects to; a route out of any other goes through userspace.
    pub interfaces: Vec<String>,
    /// How to attach.
    pub mode: XdpMode,
    /// Size of the channel maps: at most this many channels are offloaded at once; binding one
    /// more fails with [`DataplaneError::Full`] and the channel stays in userspace.
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
    /// `net.ipv4.conf.<if>.forwarding`: without it IPv4 packets are not forwarded by the program
    /// (`pass_fib_fwd_disabled`). `None` if it could not be read.
    pub ipv4_forwarding: Option<bool>,
    /// `net.ipv6.conf.<if>.forwarding`, likewise for IPv6.
    pub ipv6_forwarding: Option<bool>,
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
            DataplaneError::Full { .. } => "full",
            DataplaneError::Conflict { .. } => "conflict",
            DataplaneError::Map { .. } => "map",
            DataplaneError::TestRun(_) => "test_run",
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

/// What the kernel forwarded on one channel since the last [`Dataplane::take_traffic`]: to be
/// charged to its allocation's bandwidth budget (`proto::Server::charge_offloaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelTraffic {
    /// The allocation's 5-tuple.
    pub tuple: FiveTuple,
    pub channel: u16,
    /// Application bytes, both directions.
    pub bytes: u64,
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
}

/// [`Totals`] and every bound channel's traffic: [`Dataplane::counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
    pub actions: ActionCounts,
    /// The channels bound now.
    pub channels: Vec<ChannelCounters>,
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
    /// Applies a channel event (the others are ignored): `ChannelBound` binds, `ChannelUnbound`
    /// unbinds. This is the one place the event loop needs to call.
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
            _ => Ok(()),
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
