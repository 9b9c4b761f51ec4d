//! The program's maps (userspace writes them, the program reads them and counts) and its
//! per-CPU scratch space.

use aya_ebpf::bindings::BPF_F_NO_PREALLOC;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{DevMapHash, HashMap, PerCpuArray};
use relay_common::indication::DataHeader;
use relay_common::maps::{ChannelKey4, ClientKey4, NextHopKey4, PeerKey4, TOTAL_SLOTS};
use relay_common::packet::{Ip, Rewrite, Route};
use relay_common::{
    AllocationValue, ChannelKey, ChannelStats, ChannelValue, ClientKey, FAMILY_IPV4, ListenerKey,
    NextHopKey, NextHopValue, PeerKey, PeerValue, Verdict,
};

// The sizes are placeholders: userspace sets the channel maps' and counters' size when it
// loads the program (`max_channels`). The names are relay_common::maps' constants.
//
// The four maps keyed by addresses come in two: the general one holds IPv6 keys, the one
// named with a 4 IPv4 keys, which are a third of the length (relay_common::maps::v4). The
// program looks a packet up in its family's map only, through the functions at the end.

/// Client to peer, IPv6 clients: ChannelKey -> ChannelValue. No preallocation, so an entry
/// userspace replaces is freed only after readers are done with it.
#[map]
pub(crate) static CLIENT_TO_PEER: HashMap<ChannelKey, ChannelValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Client to peer, IPv4 clients: ChannelKey4 -> ChannelValue.
#[map]
pub(crate) static CLIENT_TO_PEER4: HashMap<ChannelKey4, ChannelValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Peer to client, IPv6 relayed addresses: PeerKey -> PeerValue.
#[map]
pub(crate) static PEER_TO_CLIENT: HashMap<PeerKey, PeerValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Peer to client, IPv4 relayed addresses: PeerKey4 -> PeerValue.
#[map]
pub(crate) static PEER_TO_CLIENT4: HashMap<PeerKey4, PeerValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Where a rewritten packet goes next, per destination address: egress interface, MTU, MACs.
/// Userspace resolves it from the kernel's route and neighbour tables as the relay's own output
/// and keeps it current; the program only reads it. This is what frees the fast path from
/// `bpf_fib_lookup`, which refuses to route unless forwarding is enabled on the interface (a
/// host setting the relay must not need), and saves its cost per packet.
/// IPv6 destinations here, IPv4 ones in `NEXT_HOPS4`.
#[map]
pub(crate) static NEXT_HOPS: HashMap<NextHopKey, NextHopValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// `NEXT_HOPS` of IPv4 destinations: NextHopKey4 -> NextHopValue.
#[map]
pub(crate) static NEXT_HOPS4: HashMap<NextHopKey4, NextHopValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// An IPv6 client's 5-tuple -> its allocation's relayed addresses, for Send indications.
#[map]
pub(crate) static ALLOCATIONS: HashMap<ClientKey, AllocationValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// `ALLOCATIONS` of IPv4 clients: ClientKey4 -> AllocationValue.
#[map]
pub(crate) static ALLOCATIONS4: HashMap<ClientKey4, AllocationValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// The interfaces the program is attached to, with how it runs there (`IF_GENERIC`).
#[map]
pub(crate) static INTERFACES: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);

/// The TURN listeners, only to tell "not ours" from "ours, for userspace" in the counters.
#[map]
pub(crate) static LISTENERS: HashMap<ListenerKey, u32> = HashMap::with_max_entries(64, 0);

/// Per-CPU packets and bytes per channel, indexed by the values' `counter`.
#[map]
pub(crate) static CHANNEL_STATS: PerCpuArray<ChannelStats> = PerCpuArray::with_max_entries(1024, 0);

/// Per-CPU packets and bytes of every channel (one slot), so totals are one read.
#[map]
pub(crate) static TOTAL_STATS: PerCpuArray<ChannelStats> =
    PerCpuArray::with_max_entries(TOTAL_SLOTS, 0);

/// Per-CPU packets per verdict, indexed by `Verdict::index`.
#[map]
pub(crate) static ACTION_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(Verdict::COUNT as u32, 0);

/// The interfaces the program is attached to, the only ones it redirects to.
#[map]
pub(crate) static EGRESS: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// Per-CPU room for what does not fit the 512-byte stack: the parsed IP header, the route, the
/// planned rewrite and a bounce buffer for moving data within the packet. Programs do not migrate between CPUs during a run, so one slot per CPU
/// is private to the run.
#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
pub(crate) struct Scratch {
    pub(crate) ip: Ip,
    pub(crate) route: Route,
    pub(crate) rw: Rewrite,
    pub(crate) bounce: [u8; BOUNCE],
    pub(crate) data_header: DataHeader,
    pub(crate) keys: Keys,
}

/// Where the lookups build their keys: in map memory, which the verifier does not track slot by
/// slot as it does the stack, so that a lookup that goes to one of two maps by family leaves
/// the same state after both.
#[repr(C)]
pub(crate) struct Keys {
    c2p4: ChannelKey4,
    c2p: ChannelKey,
    p2c4: PeerKey4,
    p2c: PeerKey,
    a4: ClientKey4,
    a: ClientKey,
    nh4: NextHopKey4,
    nh: NextHopKey,
}

/// The bounce buffer's size: the chunk in which data moves within a packet.
pub(crate) const BOUNCE: usize = 512;
/// 8-byte blocks of the longest message whose FINGERPRINT the program checks (1,504 bytes:
/// an Ethernet MTU's worth).
pub(crate) const CRC_BLOCKS: usize = 188;
/// The most data a partial-checksum packet in generic mode may carry to be forwarded: what
/// [`move_data`] moves (media and data channels stay under 1,200 bytes; longer data goes up).
pub(crate) const MOVE_MAX: usize = 4 * BOUNCE;

/// A value pointer from a successful lookup as a reference.
#[inline(always)]
fn found_ref<V>(value: Option<*const V>) -> Option<&'static V> {
    // SAFETY: a map value pointer from a successful lookup. The maps are not preallocated, so a
    // value userspace replaces or deletes meanwhile is freed only after this program is done
    // with it (RCU).
    #[allow(unsafe_code)]
    value.map(|v| unsafe { &*v })
}

/// A value from a successful lookup, copied out at once. Where a lookup goes to one of two
/// maps by family, a pointer into either would make the verifier walk the rest of the program
/// once per map (the two pointers are states it cannot merge); a copy on the stack is the same
/// state after both.
#[inline(always)]
fn found<V: Copy + 'static>(value: Option<*const V>) -> Option<V> {
    found_ref(value).copied()
}

/// The channel bound for ChannelData from `client` to `listener` (`CLIENT_TO_PEER4` or
/// `CLIENT_TO_PEER` by `family`; host-order ports and channel).
#[inline(always)]
pub(crate) fn client_to_peer(
    keys: &mut Keys,
    family: u8,
    client: &[u8; 16],
    client_port: u16,
    listener: &[u8; 16],
    listener_port: u16,
    channel: u16,
) -> Option<ChannelValue> {
    found(if family == FAMILY_IPV4 {
        keys.c2p4 = ChannelKey4::from_packet(client, client_port, listener, listener_port, channel);
        CLIENT_TO_PEER4.get_ptr(&keys.c2p4)
    } else {
        keys.c2p = ChannelKey::from_packet(
            family,
            *client,
            client_port,
            *listener,
            listener_port,
            channel,
        );
        CLIENT_TO_PEER.get_ptr(&keys.c2p)
    })
}

/// The channel (or, with `peer_port` 0, the permission) for datagrams from `peer` to the
/// relayed address `relay` (`PEER_TO_CLIENT4` or `PEER_TO_CLIENT` by `family`; host-order
/// ports).
#[inline(always)]
pub(crate) fn peer_entry(
    keys: &mut Keys,
    family: u8,
    relay: &[u8; 16],
    relay_port: u16,
    peer: &[u8; 16],
    peer_port: u16,
) -> Option<PeerValue> {
    found(if family == FAMILY_IPV4 {
        keys.p2c4 = PeerKey4::from_packet(relay, relay_port, peer, peer_port);
        PEER_TO_CLIENT4.get_ptr(&keys.p2c4)
    } else {
        keys.p2c = PeerKey::from_packet(family, *relay, relay_port, *peer, peer_port);
        PEER_TO_CLIENT.get_ptr(&keys.p2c)
    })
}

/// The allocation of the client `client` talking to `listener` (`ALLOCATIONS4` or
/// `ALLOCATIONS` by `family`; host-order ports).
#[inline(always)]
pub(crate) fn allocation(
    keys: &mut Keys,
    family: u8,
    client: &[u8; 16],
    client_port: u16,
    listener: &[u8; 16],
    listener_port: u16,
) -> Option<AllocationValue> {
    found(if family == FAMILY_IPV4 {
        keys.a4 = ClientKey4::from_packet(client, client_port, listener, listener_port);
        ALLOCATIONS4.get_ptr(&keys.a4)
    } else {
        keys.a = ClientKey::from_packet(family, *client, client_port, *listener, listener_port);
        ALLOCATIONS.get_ptr(&keys.a)
    })
}

/// The next hop of the destination `addr` (`NEXT_HOPS4` or `NEXT_HOPS` by `family`).
#[inline(always)]
pub(crate) fn next_hop_of(keys: &mut Keys, family: u8, addr: &[u8; 16]) -> Option<NextHopValue> {
    found(if family == FAMILY_IPV4 {
        keys.nh4 = NextHopKey4::from_packet(addr);
        NEXT_HOPS4.get_ptr(&keys.nh4)
    } else {
        keys.nh = NextHopKey::from_packet(family, *addr);
        NEXT_HOPS.get_ptr(&keys.nh)
    })
}

/// The peer-to-client value for `key`, for the decision steps of `relay_common::packet` that
/// take their lookups as closures over the general key.
#[inline(always)]
pub(crate) fn peer_to_client(key: &PeerKey) -> Option<&'static PeerValue> {
    found_ref(if key.family == FAMILY_IPV4 {
        PEER_TO_CLIENT4.get_ptr(&PeerKey4::from_packet(
            &key.relay_addr,
            u16::from_be(key.relay_port),
            &key.peer_addr,
            u16::from_be(key.peer_port),
        ))
    } else {
        PEER_TO_CLIENT.get_ptr(key)
    })
}
