//! The dataplane on Linux, with aya: the [`Dataplane`] type, what it keeps beside the kernel
//! maps, and loading the program and its maps.
//!
//! The rest, one job a room: `attach` (interfaces, the mode each gets: native or generic XDP,
//! or the TC program, loaded only when an interface gets tc mode; detaching, their drop
//! counters), `entries` (the channel, permission and allocation entries of the maps),
//! `next_hops` (NEXT_HOPS kept in line with the kernel's routes and neighbours), `counters`
//! (reading the per-CPU counters), `test_run` (BPF_PROG_TEST_RUN) and `errors` (aya's and the
//! kernel's errors as [`DataplaneError`]s, with hints), `split` (the maps that come in two,
//! one per family, behind one handle).

mod attach;
mod counters;
mod entries;
mod errors;
mod next_hops;
mod split;
mod test_run;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, xdp::DevMapHash};
use aya::programs::{ProgramError, Xdp};
use aya::{Ebpf, EbpfLoader};
use relay_common::maps::{
    ACTION_STATS, ALLOCATIONS, ALLOCATIONS4, CHANNEL_STATS, CLIENT_TO_PEER, CLIENT_TO_PEER4,
    EGRESS, INTERFACES, LISTENERS, NEXT_HOPS, NEXT_HOPS4, PEER_TO_CLIENT, PEER_TO_CLIENT4, PROGRAM,
    TOTAL_STATS,
};
use relay_common::{
    AllocationValue, ChannelKey, ChannelStats, ChannelValue, ClientKey, ListenerKey, NextHopKey,
    NextHopValue, PeerKey, PeerValue,
};

pub use self::attach::tcx_links;
use self::attach::{Link, Try};
use self::errors::{load_error, map_error, netlink};
use self::next_hops::{Destination, keep_next_hops};
use self::split::Split;
use super::nexthop::{Events, Resolver};
use super::{Attachment, ChannelBinding, DataplaneError, PermissionBinding, XdpConfig, XdpMode};
use crate::proto::FiveTuple;

/// The program, when relay/build.rs found it.
#[cfg(xdpturn_ebpf)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("XDPTURN_EBPF_OBJECT")));
#[cfg(not(xdpturn_ebpf))]
const OBJECT: Option<&[u8]> = None;

/// Room in NEXT_HOPS besides two destinations per channel or permission.
const NEXT_HOPS_MARGIN: u32 = 64;
/// Entries of PEER_TO_CLIENT and slots of CHANNEL_STATS per channel the maps hold: one for
/// a channel, one for a permission (at most as many permissions as channels).
const PEER_ENTRIES_PER_CHANNEL: u32 = 2;

/// The XDP program (and the TC program where an interface runs in tc mode), attached, and the
/// only writer of their maps. Dropping it detaches the programs from every interface.
#[derive(Debug)]
pub struct Dataplane {
    shared: Arc<Shared>,
    max_channels: u32,
}

/// What the dataplane and its next-hop thread share. The thread holds it only while it
/// refreshes, and stops when the dataplane has been dropped.
#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    /// Resolves for refreshes, outside the `inner` lock, one refresh at a time (binds resolve
    /// their new destinations with `Inner::resolver`).
    refresher: Mutex<Resolver>,
}

struct Inner {
    // Declared first so it is dropped first: the links go before the maps (field order).
    ebpf: Ebpf,
    /// Where the program is attached, in the order it was.
    attachments: Vec<Attachment>,
    /// The XDP or TC links, one per attachment (in `attachments` order); `None` once
    /// detached (its sends failed, or a hand-over took it off).
    links: Vec<Option<Link>>,
    /// The TC program: loaded by the first attach in tc mode.
    tc: TcProgram,
    /// The configured interfaces that had another XDP program when the dataplane was loaded,
    /// not attached yet ([`Dataplane::attach_waiting`]).
    waiting: Vec<String>,
    /// The configured mode, for the interfaces attached late.
    mode: XdpMode,
    /// The attach mode of each attached interface (IF_GENERIC, IF_TC or 0), by ifindex: the
    /// TC program redirects only to the interfaces in it.
    modes: BpfHashMap<MapData, u32, u32>,
    /// LISTENERS, written once at load. Kept open, like every map taken out of the object:
    /// a program loaded later (the TC program, when an interface needs it) refers to the
    /// maps by the descriptors the object was relocated with.
    _listeners: BpfHashMap<MapData, ListenerKey, u32>,
    /// The device map of the interfaces the program redirects to.
    egress: DevMapHash<MapData>,
    /// Each attached interface's drop counters when the program was attached to it.
    drops_at_attach: Vec<Option<u64>>,
    client_to_peer: Split<ChannelKey, ChannelValue>,
    peer_to_client: Split<PeerKey, PeerValue>,
    channel_stats: PerCpuArray<MapData, ChannelStats>,
    total_stats: PerCpuArray<MapData, ChannelStats>,
    action_stats: PerCpuArray<MapData, u64>,
    /// The channels in the maps, with their counter slots.
    bound: HashMap<ChannelBinding, Bound>,
    /// Which channel holds each peer key (two channels cannot share one).
    peers: HashMap<PeerKey, ChannelBinding>,
    /// The permissions in PEER_TO_CLIENT, with their counter slots.
    permitted: HashMap<PermissionBinding, Bound>,
    /// Which permission holds each (port 0) peer key.
    permission_keys: HashMap<PeerKey, PermissionBinding>,
    allocations: Split<ClientKey, AllocationValue>,
    /// The allocations in ALLOCATIONS.
    offloaded: HashMap<ClientKey, AllocationValue>,
    /// Counter slots of unbound channels and removed permissions, to reuse.
    free_slots: Vec<u32>,
    /// The next never-used counter slot.
    next_slot: u32,
    cpus: usize,
    next_hops: Split<NextHopKey, NextHopValue>,
    /// Resolves the next hops of the destinations a bind adds.
    resolver: Resolver,
    /// Every address a bound channel sends to (its client's and its peer's), with what
    /// NEXT_HOPS holds for it.
    destinations: HashMap<IpAddr, Destination>,
    /// The stamp of the next destination added.
    next_stamp: u64,
    /// Resolving failed during a bind, and that was logged (once, until it works again).
    resolve_failing: bool,
}

/// Where the TC program stands. It is loaded (the verifier: a second or two) only when an
/// interface gets tc mode, once; a failure is kept, so that `auto` on many interfaces tries
/// once and uses skb mode on all of them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TcProgram {
    /// Not needed yet.
    NotLoaded,
    /// Loaded into the kernel.
    Loaded,
    /// Missing from the object, or refused by the kernel: why.
    Unavailable(String),
}

/// A channel or a permission in the maps.
#[derive(Debug, Clone, Copy)]
struct Bound {
    /// Its counter slot in CHANNEL_STATS.
    slot: u32,
    /// The 5-tuple of its allocation, as the relay's core knows it.
    tuple: FiveTuple,
    /// What [`Dataplane::take_traffic`] has reported so far.
    reported: relay_common::ChannelStats,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("links", &self.links.len())
            .field("bound", &self.bound.len())
            .field("permitted", &self.permitted.len())
            .field("offloaded", &self.offloaded.len())
            .field("next_slot", &self.next_slot)
            .field("destinations", &self.destinations.len())
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the program with maps sized for `config.max_channels` channels, as many
    /// permissions and as many allocations, and attaches it to every
    /// interface in `config.interfaces` (none: loaded but not attached, which
    /// [`Dataplane::test_run`] can still run). Fails, saying why, without root (CAP_BPF,
    /// CAP_NET_ADMIN and CAP_PERFMON), when the kernel refuses the program, or when an interface cannot take
    /// it; nothing stays attached then. An interface that has another XDP program already is
    /// no failure: in an XDP mode it waits ([`Dataplane::waiting`],
    /// [`Dataplane::attach_waiting`]); in tc mode it is attached beside it. The TC program is
    /// loaded only if an interface gets tc mode.
    pub fn load(config: &XdpConfig) -> Result<Dataplane, DataplaneError> {
        let object = OBJECT.ok_or(DataplaneError::NotBuilt)?;
        let max_channels = config.max_channels.max(1);
        raise_memlock_limit();
        let interfaces = u32::try_from(config.interfaces.len().max(1)).unwrap_or(u32::MAX);
        let listeners = u32::try_from(config.listeners.len().max(1)).unwrap_or(u32::MAX);
        let peer_entries = max_channels.saturating_mul(PEER_ENTRIES_PER_CHANNEL);
        let next_hops = peer_entries
            .saturating_mul(2)
            .saturating_add(NEXT_HOPS_MARGIN);
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(CHANNEL_STATS, peer_entries)
            .map_max_entries(EGRESS, interfaces)
            .map_max_entries(LISTENERS, listeners);
        // Each family's map can take all of them: the maps are not preallocated, so the room
        // costs nothing until it is used.
        for (names, max) in [
            ([CLIENT_TO_PEER, CLIENT_TO_PEER4], max_channels),
            ([PEER_TO_CLIENT, PEER_TO_CLIENT4], peer_entries),
            ([ALLOCATIONS, ALLOCATIONS4], max_channels),
            ([NEXT_HOPS, NEXT_HOPS4], next_hops),
        ] {
            for name in names {
                loader.map_max_entries(name, max);
            }
        }
        let mut ebpf = loader
            .load(object)
            .map_err(|e| load_error("creating the maps", e))?;
        xdp_program(&mut ebpf)?
            .load()
            .map_err(|e| load_error("loading the program", e))?;

        let mut listener_map: BpfHashMap<MapData, ListenerKey, u32> = take(&mut ebpf, LISTENERS)?;
        for addr in &config.listeners {
            listener_map
                .insert(ListenerKey::new(*addr), 1, 0)
                .map_err(|e| map_error(LISTENERS, e))?;
        }
        let egress: DevMapHash<MapData> = take(&mut ebpf, EGRESS)?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Load {
            reason: format!("counting the CPUs ({what})"),
            source: Some(Box::new(e)),
        })?;
        let mut inner = Inner {
            client_to_peer: Split::take(&mut ebpf, [CLIENT_TO_PEER, CLIENT_TO_PEER4])?,
            peer_to_client: Split::take(&mut ebpf, [PEER_TO_CLIENT, PEER_TO_CLIENT4])?,
            allocations: Split::take(&mut ebpf, [ALLOCATIONS, ALLOCATIONS4])?,
            channel_stats: take(&mut ebpf, CHANNEL_STATS)?,
            total_stats: take(&mut ebpf, TOTAL_STATS)?,
            action_stats: take(&mut ebpf, ACTION_STATS)?,
            next_hops: Split::take(&mut ebpf, [NEXT_HOPS, NEXT_HOPS4])?,
            modes: take(&mut ebpf, INTERFACES)?,
            _listeners: listener_map,
            ebpf,
            attachments: Vec::new(),
            links: Vec::new(),
            tc: TcProgram::NotLoaded,
            waiting: Vec::new(),
            mode: config.mode,
            egress,
            drops_at_attach: Vec::new(),
            bound: HashMap::new(),
            peers: HashMap::new(),
            permitted: HashMap::new(),
            permission_keys: HashMap::new(),
            offloaded: HashMap::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            cpus,
            resolver: netlink(
                Resolver::new(),
                "opening a netlink socket to resolve next hops",
            )?,
            destinations: HashMap::new(),
            next_stamp: 0,
            resolve_failing: false,
        };
        let refresher = netlink(
            Resolver::new(),
            "opening a netlink socket to resolve next hops",
        )?;
        // Without announcements, changes are picked up by the periodic refresh only.
        let events = Events::subscribe()
            .inspect_err(|e| {
                tracing::warn!(
                    err = %e,
                    "cannot subscribe to route and neighbour changes: the XDP next hops follow \
                     them within a second instead of at once"
                );
            })
            .ok();

        if config.mode == XdpMode::Auto && !config.interfaces.is_empty() && !tcx_links() {
            tracing::info!(
                "this kernel has no tcx links (Linux 6.6+): auto does not use tc mode, as a \
                 cls_bpf filter would outlive a relay that is killed; --xdp-mode tc uses one \
                 anyway"
            );
        }
        // On error `inner` is dropped, which detaches what was attached so far. An interface
        // with another program waits for it to go (see `Dataplane::attach_waiting`).
        for interface in &config.interfaces {
            match inner.attach(interface, Try::First) {
                Ok(_) => {}
                Err(e @ DataplaneError::Busy { .. }) => {
                    tracing::debug!(err = %e, "waiting for the interface");
                    inner.waiting.push(interface.clone());
                }
                Err(e) => return Err(e),
            }
        }

        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            refresher: Mutex::new(refresher),
        });
        let weak = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("xdpturn-nexthop".to_owned())
            .spawn(move || keep_next_hops(weak, events))
            .map_err(|e| DataplaneError::Load {
                reason: "starting the next-hop thread".to_owned(),
                source: Some(Box::new(e)),
            })?;
        Ok(Dataplane {
            shared,
            max_channels,
        })
    }

    /// Where the program is attached, in the order it was (the interfaces attached at load in
    /// the configured order, then those [`Dataplane::attach_waiting`] attached).
    pub fn attachments(&self) -> Vec<Attachment> {
        self.lock().attachments.clone()
    }

    /// The most channels the maps hold.
    pub fn max_channels(&self) -> u32 {
        self.max_channels
    }

    /// How many channels are offloaded now.
    pub fn bound_channels(&self) -> usize {
        self.lock().bound.len()
    }

    /// How many permissions are offloaded now.
    pub fn installed_permissions(&self) -> usize {
        self.lock().permitted.len()
    }

    /// How many allocations are offloaded now.
    pub fn installed_allocations(&self) -> usize {
        self.lock().offloaded.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the bookkeeping as consistent as the maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(|| DataplaneError::Load {
            reason: format!("the object has no program `{PROGRAM}`"),
            source: None,
        })?
        .try_into()
        .map_err(|e: ProgramError| load_error("the program is not an XDP program", e))
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, DataplaneError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| DataplaneError::Load {
        reason: format!("the object has no map `{name}`"),
        source: None,
    })?;
    T::try_from(map).map_err(|e| map_error(name, e))
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK, which is small by default; raise
/// it as far as allowed. Later kernels account BPF memory to the cgroup and ignore it.
fn raise_memlock_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Memlock);
    let wanted = Rlimit {
        current: current.maximum,
        maximum: current.maximum,
    };
    if wanted != current
        && let Err(e) = setrlimit(Resource::Memlock, wanted)
    {
        tracing::debug!(err = %e, "raising RLIMIT_MEMLOCK");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn without_the_object_load_says_how_to_build_it() {
        if OBJECT.is_none() {
            let err = Dataplane::load(&XdpConfig::default()).unwrap_err();
            assert!(err.to_string().contains("cargo xtask build-ebpf"));
        }
    }
}
