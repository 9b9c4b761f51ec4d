//! The program's maps (userspace writes them, the program reads them and counts) and its
//! per-CPU scratch space.

use aya_ebpf::bindings::BPF_F_NO_PREALLOC;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{DevMapHash, HashMap, PerCpuArray};
use relay_common::indication::DataHeader;
use relay_common::maps::TOTAL_SLOTS;
use relay_common::packet::{Ip, Rewrite, Route};
use relay_common::{
    AllocationValue, ChannelKey, ChannelStats, ChannelValue, ClientKey, ListenerKey, NextHopKey,
    NextHopValue, PeerKey, PeerValue, Verdict,
};

// The sizes are placeholders: userspace sets the channel maps' and counters' size when it
// loads the program (`max_channels`). The names are relay_common::maps' constants.

/// Client to peer: ChannelKey -> ChannelValue. No preallocation, so an entry userspace
/// replaces is freed only after readers are done with it.
#[map]
pub(crate) static CLIENT_TO_PEER: HashMap<ChannelKey, ChannelValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Peer to client: PeerKey -> PeerValue.
#[map]
pub(crate) static PEER_TO_CLIENT: HashMap<PeerKey, PeerValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Where a rewritten packet goes next, per destination address: egress interface, MTU, MACs.
/// Userspace resolves it from the kernel's route and neighbour tables as the relay's own output
/// and keeps it current; the program only reads it. This is what frees the fast path from
/// `bpf_fib_lookup`, which refuses to route unless forwarding is enabled on the interface (a
/// host setting the relay must not need), and saves its cost per packet.
#[map]
pub(crate) static NEXT_HOPS: HashMap<NextHopKey, NextHopValue> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// A client's 5-tuple -> its allocation's relayed addresses, for Send indications.
#[map]
pub(crate) static ALLOCATIONS: HashMap<ClientKey, AllocationValue> =
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
}

/// The bounce buffer's size: the chunk in which data moves within a packet.
pub(crate) const BOUNCE: usize = 512;
/// 8-byte blocks of the longest message whose FINGERPRINT the program checks (1,504 bytes:
/// an Ethernet MTU's worth).
pub(crate) const CRC_BLOCKS: usize = 188;
/// The most data a partial-checksum packet in generic mode may carry to be forwarded: what
/// [`move_data`] moves (media and data channels stay under 1,200 bytes; longer data goes up).
pub(crate) const MOVE_MAX: usize = 4 * BOUNCE;

/// `PEER_TO_CLIENT`'s value for `key`, for the decision steps of `relay_common::packet` that
/// take their lookups as closures.
#[inline(always)]
pub(crate) fn peer_to_client(key: &PeerKey) -> Option<&'static PeerValue> {
    let value = PEER_TO_CLIENT.get_ptr(key)?;
    // SAFETY: a map value pointer from a successful lookup. The map is not preallocated, so a
    // value userspace replaces or deletes meanwhile is freed only after this program is done
    // with it (RCU).
    #[allow(unsafe_code)]
    Some(unsafe { &*value })
}
