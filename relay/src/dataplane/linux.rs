//! The dataplane on Linux, with aya.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues, xdp::DevMapHash};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode as AyaMode};
use aya::{Ebpf, EbpfLoader};
use relay_common::maps::{
    ACTION_STATS, ALLOCATIONS, CHANNEL_STATS, CLIENT_TO_PEER, EGRESS, IF_GENERIC, INTERFACES,
    LISTENERS, NEXT_HOPS, NO_CHANNEL, PEER_TO_CLIENT, PROGRAM, TOTAL_ALL, TOTAL_CHANNEL,
    TOTAL_INDICATION, TOTAL_SAME_RELAY, TOTAL_STATS,
};
use relay_common::{
    AllocationValue, ChannelEntries, ChannelKey, ChannelStats, ChannelValue, ClientKey,
    ListenerKey, NextHopKey, NextHopValue, PeerKey, PeerValue,
};
use rustix::io::Errno;

use super::nexthop::{Changes, Events, Resolution, Resolver, Via};
use super::{
    Action, ActionCounts, AllocationBinding, Attachment, ChannelBinding, ChannelCounters,
    ChannelTraffic, Counters, DataplaneError, KindTraffic, ModeChoice, NextHop, NextHopChanges,
    PeerEntry, PermissionBinding, PermissionCounters, ProgramStats, TestRun, Totals, Traffic,
    XdpConfig, XdpMode,
};
use crate::proto::FiveTuple;

/// The program, when relay/build.rs found it.
#[cfg(xdpturn_ebpf)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("XDPTURN_EBPF_OBJECT")));
#[cfg(not(xdpturn_ebpf))]
const OBJECT: Option<&[u8]> = None;

/// `BPF_NOEXIST`: insert only.
const NO_EXIST: u64 = 1;

/// Every destination is resolved again this often (besides when the kernel announces a change
/// that may concern it): no next hop stays wrong for longer.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// While announcements arrive, the periodic refresh (then a safety net, and what notices path
/// MTU changes, which are not announced) takes at most 1/20 of a core: about 5 µs per
/// destination, so above some 10,000 destinations it comes less often than every second.
const REFRESH_SHARE: u32 = 20;
/// How long announcements are collected after the first of a burst before resolving again.
const SETTLE: Duration = Duration::from_millis(20);
/// The least time between two refreshes of every destination: route and link announcements
/// can come in long bursts (an interface with many routes going down, containers coming and
/// going), and each refresh asks the kernel about every destination.
const FULL_REFRESH_GAP: Duration = Duration::from_millis(100);
/// Room in NEXT_HOPS besides two destinations per channel or permission.
const NEXT_HOPS_MARGIN: u32 = 64;
/// Entries of PEER_TO_CLIENT and slots of CHANNEL_STATS per channel the maps hold: one for
/// a channel, one for a permission (at most as many permissions as channels).
const PEER_ENTRIES_PER_CHANNEL: u32 = 2;

/// The XDP program, attached, and the only writer of its maps. Dropping it detaches the
/// program from every interface.
#[derive(Debug)]
pub struct Dataplane {
    shared: Arc<Shared>,
    attachments: Vec<Attachment>,
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
    /// The XDP links, one per attachment (in `Dataplane::attachments` order); `None` once
    /// detached because its sends failed.
    links: Vec<Option<XdpLinkId>>,
    /// The device map of the interfaces the program redirects to.
    egress: DevMapHash<MapData>,
    /// Each attached interface's drop counters when the program was attached to it.
    drops_at_attach: Vec<Option<u64>>,
    client_to_peer: BpfHashMap<MapData, ChannelKey, ChannelValue>,
    peer_to_client: BpfHashMap<MapData, PeerKey, PeerValue>,
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
    allocations: BpfHashMap<MapData, ClientKey, AllocationValue>,
    /// The allocations in ALLOCATIONS.
    offloaded: HashMap<ClientKey, AllocationValue>,
    /// Counter slots of unbound channels and removed permissions, to reuse.
    free_slots: Vec<u32>,
    /// The next never-used counter slot.
    next_slot: u32,
    cpus: usize,
    next_hops: BpfHashMap<MapData, NextHopKey, NextHopValue>,
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

/// An address bound channels send to.
#[derive(Debug, Clone, Copy)]
struct Destination {
    /// How many channel directions and permission directions send to it. At zero it is
    /// deleted; it stays here only if
    /// deleting its entry failed, for the next refresh to try again.
    refs: u32,
    /// Unique to this addition of the address: a refresh that resolved an earlier one does not
    /// write over a later one's entry.
    stamp: u64,
    /// Where its route led when last resolved: announcements about that neighbour concern it.
    via: Option<Via>,
    /// What NEXT_HOPS holds for it.
    hop: Option<NextHop>,
}

/// A channel or a permission in the maps.
#[derive(Debug, Clone, Copy)]
struct Bound {
    /// Its counter slot in CHANNEL_STATS.
    slot: u32,
    /// The 5-tuple of its allocation, as the relay's core knows it.
    tuple: FiveTuple,
    /// The bytes (both directions) [`Dataplane::take_traffic`] has reported so far.
    reported: u64,
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
    /// it; nothing stays attached then.
    pub fn load(config: &XdpConfig) -> Result<Dataplane, DataplaneError> {
        let object = OBJECT.ok_or(DataplaneError::NotBuilt)?;
        let max_channels = config.max_channels.max(1);
        raise_memlock_limit();
        let interfaces = u32::try_from(config.interfaces.len().max(1)).unwrap_or(u32::MAX);
        let listeners = u32::try_from(config.listeners.len().max(1)).unwrap_or(u32::MAX);
        let peer_entries = max_channels.saturating_mul(PEER_ENTRIES_PER_CHANNEL);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(CLIENT_TO_PEER, max_channels)
            .map_max_entries(PEER_TO_CLIENT, peer_entries)
            .map_max_entries(CHANNEL_STATS, peer_entries)
            .map_max_entries(ALLOCATIONS, max_channels)
            .map_max_entries(EGRESS, interfaces)
            .map_max_entries(LISTENERS, listeners)
            .map_max_entries(
                NEXT_HOPS,
                peer_entries
                    .saturating_mul(2)
                    .saturating_add(NEXT_HOPS_MARGIN),
            )
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
            client_to_peer: take(&mut ebpf, CLIENT_TO_PEER)?,
            peer_to_client: take(&mut ebpf, PEER_TO_CLIENT)?,
            allocations: take(&mut ebpf, ALLOCATIONS)?,
            channel_stats: take(&mut ebpf, CHANNEL_STATS)?,
            total_stats: take(&mut ebpf, TOTAL_STATS)?,
            action_stats: take(&mut ebpf, ACTION_STATS)?,
            next_hops: take(&mut ebpf, NEXT_HOPS)?,
            ebpf,
            links: Vec::new(),
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

        // On error `inner` is dropped, which detaches what was attached so far.
        let mut modes: BpfHashMap<MapData, u32, u32> = take(&mut inner.ebpf, INTERFACES)?;
        let mut attachments = Vec::new();
        for interface in &config.interfaces {
            let ifindex = ifindex(interface)?;
            let program = xdp_program(&mut inner.ebpf)?;
            let (link, mode, why) = attach(program, interface, ifindex, config.mode)?;
            inner.links.push(Some(link));
            inner
                .egress
                .insert(ifindex, ifindex, None, 0)
                .map_err(|e| map_error(EGRESS, e))?;
            let flags = if mode == XdpMode::Skb { IF_GENERIC } else { 0 };
            inner.drops_at_attach.push(interface_drops(interface));
            modes
                .insert(ifindex, flags, 0)
                .map_err(|e| map_error(INTERFACES, e))?;
            tracing::info!(
                interface,
                ifindex,
                %mode,
                why = why.describe(),
                "XDP program attached"
            );
            attachments.push(Attachment {
                interface: interface.clone(),
                ifindex,
                mode,
                why,
            });
        }
        drop(modes);
        drop(listener_map);

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
            attachments,
            max_channels,
        })
    }

    /// Where the program is attached.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Frames each attachment's interface dropped since the program was attached to it (in
    /// [`Dataplane::attachments`] order): its receive and transmit drop counters, where a
    /// frame the program returned XDP_TX or XDP_REDIRECT for and that did not leave is counted
    /// (a native veth counts a failed redirect or XDP_TX as a receive drop, generic mode a
    /// failed transmit as a transmit drop). Read from the relay's own network namespace
    /// (`/sys/class/net`), so other namespaces' interfaces never count. `None` for an
    /// interface whose counters cannot be read.
    pub fn interface_drops(&self) -> Vec<Option<u64>> {
        let inner = self.lock();
        self.attachments
            .iter()
            .zip(&inner.drops_at_attach)
            .map(|(a, at)| Some(interface_drops(&a.interface)?.saturating_sub((*at)?)))
            .collect()
    }

    /// Takes the program off attachment `index`'s interface (its sends fail: its traffic goes
    /// to userspace from now on) and stops redirecting to it. True if it was attached.
    pub fn detach(&self, index: usize) -> Result<bool, DataplaneError> {
        let Some(attachment) = self.attachments.get(index) else {
            return Ok(false);
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(link) = inner.links.get_mut(index).and_then(Option::take) else {
            return Ok(false);
        };
        // The redirect target first, so that no other interface's packets are sent there.
        if let Err(e) = inner.egress.remove(attachment.ifindex) {
            tracing::warn!(err = %e, interface = attachment.interface, "removing from EGRESS");
        }
        xdp_program(&mut inner.ebpf)?
            .detach(link)
            .map_err(|e| attach_error(&attachment.interface, attachment.mode, e))?;
        Ok(true)
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

    /// What PEER_TO_CLIENT holds for datagrams from `peer` to relayed address `relay` (read
    /// from the map itself); a permission's entry is the one for peer port 0.
    pub fn peer_entry(
        &self,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> Result<Option<PeerEntry>, DataplaneError> {
        let (relay, peer) = (canonical(relay), canonical(peer));
        let key = PeerKey::new(relay.ip(), relay.port(), peer.ip(), peer.port())
            .map_err(|e| mixed(PEER_TO_CLIENT, e))?;
        match self.lock().peer_to_client.get(&key, 0) {
            Ok(v) => {
                let (Some(client), Some(listener)) = (v.client_addr(), v.listener_addr()) else {
                    return Ok(None);
                };
                Ok(Some(PeerEntry {
                    client: SocketAddr::new(client, v.client_port()),
                    listener: SocketAddr::new(listener, v.listener_port()),
                    channel: v.channel(),
                    slot: v.counter,
                }))
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(PEER_TO_CLIENT, e)),
        }
    }

    /// What ALLOCATIONS holds for the client `client` talking to `listener` (read from the map
    /// itself): the relayed addresses, IPv4 first.
    pub fn allocation_entry(
        &self,
        client: SocketAddr,
        listener: SocketAddr,
    ) -> Result<Option<Vec<SocketAddr>>, DataplaneError> {
        let key = client_key(canonical(client), canonical(listener))?;
        match self.lock().allocations.get(&key, 0) {
            Ok(v) => Ok(Some(
                [relay_common::FAMILY_IPV4, relay_common::FAMILY_IPV6]
                    .into_iter()
                    .filter_map(|family| {
                        let (bytes, port) = v.relayed(family)?;
                        Some(SocketAddr::new(
                            relay_common::maps::addr_from(family, bytes)?,
                            port,
                        ))
                    })
                    .collect(),
            )),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(ALLOCATIONS, e)),
        }
    }

    /// What the kernel says about the loaded program (verified instructions, size).
    pub fn program_stats(&self) -> Result<ProgramStats, DataplaneError> {
        let mut inner = self.lock();
        let info = xdp_program(&mut inner.ebpf)?
            .info()
            .map_err(|e| load_error("reading the program info", e))?;
        Ok(ProgramStats {
            verified_instructions: info.verified_instruction_count(),
            translated_bytes: info.size_translated(),
            run_time: info.run_time(),
            run_count: info.run_count(),
        })
    }

    pub(super) fn bind(
        &self,
        binding: ChannelBinding,
        tuple: FiveTuple,
    ) -> Result<(), DataplaneError> {
        let entries_for = |slot| channel_entries(&binding, slot);
        let mut inner = self.lock();
        if inner.bound.contains_key(&binding) {
            // A refresh: the entries are there and unchanged.
            return Ok(());
        }
        let peer_key = entries_for(0)?.peer_key;
        if inner.peers.contains_key(&peer_key) || inner.permission_keys.contains_key(&peer_key) {
            return Err(DataplaneError::Conflict {
                relay: binding.relay,
                peer: binding.peer,
            });
        }
        // The same channel of the same client, moved to another peer or relayed address:
        // out with the old entries first.
        let moved = inner
            .bound
            .keys()
            .find(|b| {
                b.client == binding.client
                    && b.listener == binding.listener
                    && b.channel == binding.channel
            })
            .copied();
        if let Some(old) = moved {
            inner.remove(&old)?;
        }

        let full = DataplaneError::Full {
            max_channels: self.max_channels,
        };
        if inner.bound.len() >= self.max_channels as usize {
            return Err(full);
        }
        let slot = inner.take_slot(self.max_channels).ok_or(full)?;
        let entries = match entries_for(slot) {
            Ok(e) => e,
            Err(e) => {
                inner.free_slots.push(slot);
                return Err(e);
            }
        };
        // The next hops first, so that the channel's first packet finds them.
        let destinations = destinations(&binding);
        if let Err(e) = inner.reference(destinations, self.max_channels) {
            inner.free_slots.push(slot);
            return Err(e);
        }
        if let Err(e) = inner.write(&entries, slot, self.max_channels) {
            if let Err(undo) = inner.release(destinations) {
                tracing::debug!(err = %undo, "deleting next hops of a channel not bound");
            }
            inner.free_slots.push(slot);
            return Err(e);
        }
        inner.bound.insert(
            binding,
            Bound {
                slot,
                tuple,
                reported: 0,
            },
        );
        inner.peers.insert(entries.peer_key, binding);
        Ok(())
    }

    pub(super) fn unbind(&self, binding: &ChannelBinding) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        if inner.bound.contains_key(binding) {
            inner.remove(binding)?;
        }
        Ok(())
    }

    pub(super) fn permit(
        &self,
        binding: PermissionBinding,
        tuple: FiveTuple,
    ) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        if inner.permitted.contains_key(&binding) {
            // A refresh: the entry is there and unchanged.
            return Ok(());
        }
        let key = permission_key(&binding)?;
        if inner.permission_keys.contains_key(&key) || inner.peers.contains_key(&key) {
            return Err(DataplaneError::Conflict {
                relay: binding.relay,
                peer: SocketAddr::new(binding.peer, 0),
            });
        }
        let full = DataplaneError::MapFull {
            what: "permission",
            max: self.max_channels,
        };
        if inner.permitted.len() >= self.max_channels as usize {
            return Err(full);
        }
        let slot = inner.take_slot(self.max_channels).ok_or(full)?;
        let value = match PeerValue::new(
            binding.listener.ip(),
            binding.listener.port(),
            binding.client.ip(),
            binding.client.port(),
            NO_CHANNEL,
            slot,
        ) {
            Ok(v) => v,
            Err(e) => {
                inner.free_slots.push(slot);
                return Err(mixed(PEER_TO_CLIENT, e));
            }
        };
        // The next hops first, so that the first indication finds them.
        let destinations = [binding.client.ip(), binding.peer];
        if let Err(e) = inner.reference(destinations, self.max_channels) {
            inner.free_slots.push(slot);
            return Err(e);
        }
        let written = inner.zero_slot(slot).and_then(|()| {
            inner
                .peer_to_client
                .insert(key, value, NO_EXIST)
                .map_err(|e| match full_or(PEER_TO_CLIENT, e, self.max_channels) {
                    DataplaneError::Full { .. } => DataplaneError::MapFull {
                        what: "permission",
                        max: self.max_channels,
                    },
                    e => e,
                })
        });
        if let Err(e) = written {
            if let Err(undo) = inner.release(destinations) {
                tracing::debug!(err = %undo, "deleting next hops of a permission not installed");
            }
            inner.free_slots.push(slot);
            return Err(e);
        }
        inner.permitted.insert(
            binding,
            Bound {
                slot,
                tuple,
                reported: 0,
            },
        );
        inner.permission_keys.insert(key, binding);
        Ok(())
    }

    pub(super) fn revoke(&self, binding: &PermissionBinding) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        let Some(slot) = inner.permitted.get(binding).map(|b| b.slot) else {
            return Ok(());
        };
        let key = permission_key(binding)?;
        remove_entry(&mut inner.peer_to_client, &key, PEER_TO_CLIENT)?;
        inner.permitted.remove(binding);
        inner.permission_keys.remove(&key);
        // Zeroed when it is reused.
        inner.free_slots.push(slot);
        // After the entry, which sends to them.
        inner.release([binding.client.ip(), binding.peer])
    }

    pub(super) fn offload(&self, binding: AllocationBinding) -> Result<(), DataplaneError> {
        let key = client_key(binding.client, binding.listener)?;
        let value = AllocationValue::new(&binding.relays);
        let mut inner = self.lock();
        match inner.offloaded.get(&key) {
            // A refresh.
            Some(v) if *v == value => return Ok(()),
            // The same 5-tuple with other relayed addresses: written over.
            Some(_) => {}
            None if inner.offloaded.len() >= self.max_channels as usize => {
                return Err(DataplaneError::MapFull {
                    what: "allocation",
                    max: self.max_channels,
                });
            }
            None => {}
        }
        inner.allocations.insert(key, value, 0).map_err(|e| {
            match full_or(ALLOCATIONS, e, self.max_channels) {
                DataplaneError::Full { .. } => DataplaneError::MapFull {
                    what: "allocation",
                    max: self.max_channels,
                },
                e => e,
            }
        })?;
        inner.offloaded.insert(key, value);
        Ok(())
    }

    pub(super) fn unload(&self, binding: &AllocationBinding) -> Result<(), DataplaneError> {
        let key = client_key(binding.client, binding.listener)?;
        let mut inner = self.lock();
        if inner.offloaded.contains_key(&key) {
            remove_entry(&mut inner.allocations, &key, ALLOCATIONS)?;
            inner.offloaded.remove(&key);
        }
        Ok(())
    }

    /// Reads the totals: traffic forwarded in each direction and packets per action, since the
    /// program was loaded. A fixed handful of syscalls, whatever the number of channels: the
    /// one to poll for metrics.
    pub fn totals(&self) -> Result<Totals, DataplaneError> {
        self.lock().totals()
    }

    /// Reads the totals and every bound channel's and installed permission's traffic (one more
    /// syscall per channel and per permission).
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let inner = self.lock();
        let totals = inner.totals()?;
        let mut channels = Vec::with_capacity(inner.bound.len());
        for (binding, bound) in &inner.bound {
            let t = traffic(read_slot(&inner.channel_stats, CHANNEL_STATS, bound.slot)?);
            channels.push(ChannelCounters {
                binding: *binding,
                client_to_peer: t.client_to_peer,
                peer_to_client: t.peer_to_client,
            });
        }
        let mut permissions = Vec::with_capacity(inner.permitted.len());
        for (binding, bound) in &inner.permitted {
            let t = traffic(read_slot(&inner.channel_stats, CHANNEL_STATS, bound.slot)?);
            permissions.push(PermissionCounters {
                binding: *binding,
                client_to_peer: t.client_to_peer,
                peer_to_client: t.peer_to_client,
            });
        }
        Ok(Counters {
            client_to_peer: totals.client_to_peer,
            peer_to_client: totals.peer_to_client,
            actions: totals.actions,
            channels,
            permissions,
        })
    }

    /// What the kernel forwarded on each bound channel and under each installed permission
    /// (Send and Data indications; `channel` [`ChannelTraffic::PERMISSION`]) since the
    /// previous call (bytes of application data, both directions), for those whose allocation
    /// `owned` accepts (each worker of the relay takes its own allocations'; the others are
    /// left for their owner). Only those with new traffic are listed. One syscall per channel
    /// or permission taken.
    pub fn take_traffic(
        &self,
        mut owned: impl FnMut(&FiveTuple) -> bool,
    ) -> Result<Vec<ChannelTraffic>, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut taken = Vec::new();
        let channels = inner.bound.iter_mut().map(|(b, bound)| (b.channel, bound));
        let permissions = inner
            .permitted
            .values_mut()
            .map(|bound| (ChannelTraffic::PERMISSION, bound));
        for (channel, bound) in channels.chain(permissions) {
            if !owned(&bound.tuple) {
                continue;
            }
            let stats = read_slot(&inner.channel_stats, CHANNEL_STATS, bound.slot)?;
            let total = stats
                .client_to_peer_bytes
                .saturating_add(stats.peer_to_client_bytes);
            let bytes = total.saturating_sub(bound.reported);
            bound.reported = total;
            if bytes > 0 {
                taken.push(ChannelTraffic {
                    tuple: bound.tuple,
                    channel,
                    bytes,
                });
            }
        }
        Ok(taken)
    }

    /// Resolves every destination of the bound channels again (their route, interface and
    /// neighbour) and brings NEXT_HOPS in line: entries whose next hop changed are rewritten,
    /// those that no longer resolve are deleted, those that now do are added. The dataplane
    /// does this itself once a second (see `REFRESH_SHARE`), and at once when the kernel
    /// announces a route, link or neighbour change; this is for callers that changed something
    /// and cannot wait. If
    /// resolving fails (twice), every entry is deleted: their packets go up to userspace,
    /// which is always right, until a refresh works again.
    pub fn refresh_next_hops(&self) -> Result<NextHopChanges, DataplaneError> {
        self.shared.refresh(None)
    }

    /// What NEXT_HOPS holds for `dst` (read from the map itself).
    pub fn next_hop(&self, dst: IpAddr) -> Result<Option<NextHop>, DataplaneError> {
        match self.lock().next_hops.get(&NextHopKey::new(dst), 0) {
            Ok(v) => Ok(Some(NextHop::from_value(&v))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(NEXT_HOPS, e)),
        }
    }

    /// Runs the program on `frame` with BPF_PROG_TEST_RUN, `repeat` times (at least once), as
    /// if it had arrived on interface `ingress_ifindex` of the calling thread's network
    /// namespace (0: the namespace's loopback). For tests and benchmarks: the kernel returns
    /// the verdict and the rewritten packet but sends nothing; the counters count every run.
    pub fn test_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<TestRun, DataplaneError> {
        let mut inner = self.lock();
        let program = xdp_program(&mut inner.ebpf)?;
        let ctx = xdp_md(frame, ingress_ifindex)?;
        // Room for the largest growth (a ChannelData header and an IPv6 header instead of an
        // IPv4 one).
        let mut out = vec![0u8; frame.len() + 64];
        let result = program
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|e| DataplaneError::TestRun(e.into()))?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRun {
            verdict: result.return_value,
            output: out,
            duration: result.duration,
        })
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

    /// Resolves the destinations again, all of them or those whose route leads through one
    /// of `vias`, and updates NEXT_HOPS where the answer changed. Resolving happens outside
    /// the map lock, so binds do not wait for it.
    fn refresh(&self, vias: Option<&[Via]>) -> Result<NextHopChanges, DataplaneError> {
        let mut resolver = self.refresher.lock().unwrap_or_else(|p| p.into_inner());
        let vias: Option<HashSet<&Via>> = vias.map(|v| v.iter().collect());
        let wanted: Vec<(IpAddr, u64)> = self
            .lock()
            .destinations
            .iter()
            .filter(|(_, d)| match &vias {
                None => true,
                Some(vias) => d.via.is_some_and(|v| vias.contains(&v)),
            })
            .map(|(addr, d)| (*addr, d.stamp))
            .collect();
        if wanted.is_empty() {
            return Ok(NextHopChanges::default());
        }
        let addrs: Vec<IpAddr> = wanted.iter().map(|(addr, _)| *addr).collect();
        // Once more on error: an interrupted exchange leaves nothing behind (answers to it are
        // told apart by their sequence number).
        let resolved = resolver
            .resolve_all(&addrs)
            .or_else(|_| resolver.resolve_all(&addrs));
        let mut inner = self.lock();
        match resolved {
            Ok(resolved) => {
                let changes = inner.apply(&wanted, &resolved);
                drop(inner);
                // The program's packets leave the kernel's neighbour entries unconfirmed: have
                // the kernel confirm the stale ones it holds as its own sends would.
                let stale: HashSet<Via> = resolved
                    .iter()
                    .filter(|r| r.stale && r.hop.is_some())
                    .filter_map(|r| r.via)
                    .collect();
                for via in stale {
                    if let Err(e) = resolver.use_neighbour(via) {
                        tracing::debug!(err = %e, ?via, "marking a neighbour used");
                    }
                }
                changes
            }
            Err(e) => {
                // When unsure, delete: the packets go up, which is always right.
                let none = vec![Resolution::default(); wanted.len()];
                let _ = inner.apply(&wanted, &none);
                Err(DataplaneError::NextHop(e))
            }
        }
    }
}

/// The next-hop thread: resolves every destination again each [`REFRESH_EVERY`] (less often
/// with very many, see [`REFRESH_SHARE`]), and those a route, link or neighbour announcement
/// concerns as soon as it arrives (after a short [`SETTLE`], so that a burst costs one
/// refresh). Stops when the dataplane is gone. Errors are
/// logged once, and once more when refreshing works again.
fn keep_next_hops(shared: Weak<Shared>, mut events: Option<Events>) {
    let mut next_full = Instant::now() + REFRESH_EVERY;
    let mut last_full = Instant::now();
    let mut failing = false;
    loop {
        let mut changes = Changes::default();
        let wait = next_full.saturating_duration_since(Instant::now());
        match &mut events {
            Some(announced) => {
                let waited = announced.wait(wait, &mut changes).and_then(|read| {
                    if read {
                        announced.wait(SETTLE, &mut changes)?;
                    }
                    // Everything again, but not more often than every FULL_REFRESH_GAP: what
                    // is announced meanwhile joins this refresh.
                    while changes.all
                        && let Some(left) =
                            (last_full + FULL_REFRESH_GAP).checked_duration_since(Instant::now())
                        && !left.is_zero()
                    {
                        announced.wait(left, &mut changes)?;
                    }
                    Ok(())
                });
                if let Err(e) = waited {
                    tracing::warn!(
                        err = %e,
                        "reading route and neighbour changes failed: the XDP next hops follow \
                         them within a second from now on"
                    );
                    events = None;
                }
            }
            None => std::thread::sleep(wait),
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let result = if changes.all || Instant::now() >= next_full {
            last_full = Instant::now();
            let result = shared.refresh(None);
            let period = match events {
                Some(_) => REFRESH_EVERY.max(last_full.elapsed() * REFRESH_SHARE),
                None => REFRESH_EVERY,
            };
            next_full = last_full + period;
            result
        } else if changes.any() {
            shared.refresh(Some(&changes.neighbours))
        } else {
            continue;
        };
        drop(shared);
        match result {
            Ok(changed) => {
                if failing {
                    tracing::info!("resolving the XDP next hops works again");
                    failing = false;
                }
                if changed != NextHopChanges::default() {
                    tracing::debug!(?changed, "XDP next hops updated");
                }
            }
            Err(e) if !failing => {
                tracing::warn!(
                    err = %e,
                    "resolving the XDP next hops failed: their packets are relayed in userspace \
                     until it works again"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// The addresses a channel sends to: its client's (peer to client) and its peer's.
fn destinations(binding: &ChannelBinding) -> [IpAddr; 2] {
    [binding.client.ip(), binding.peer.ip()]
}

/// A netlink socket or its error, as a load error.
fn netlink<T>(result: io::Result<T>, what: &str) -> Result<T, DataplaneError> {
    result.map_err(|e| DataplaneError::Load {
        reason: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    })
}

/// The map entries of a channel binding, counting into stats slot `slot`.
fn channel_entries(binding: &ChannelBinding, slot: u32) -> Result<ChannelEntries, DataplaneError> {
    ChannelEntries::new(
        binding.client,
        binding.listener,
        binding.channel,
        binding.relay,
        binding.peer,
        slot,
    )
    // Client and listener come from one 5-tuple, relay and peer from one allocation family:
    // this cannot fail, but an error is better than a panic.
    .map_err(|e| DataplaneError::Map {
        map: CLIENT_TO_PEER,
        source: e.to_string().into(),
    })
}

/// The PEER_TO_CLIENT key of a permission: its relayed address, the peer's IP, port 0.
fn permission_key(binding: &PermissionBinding) -> Result<PeerKey, DataplaneError> {
    // `PermissionBinding::new` checked the families: this cannot fail, but an error is better
    // than a panic.
    PeerKey::permission(binding.relay.ip(), binding.relay.port(), binding.peer)
        .map_err(|e| mixed(PEER_TO_CLIENT, e))
}

/// The ALLOCATIONS key of a client's 5-tuple.
fn client_key(client: SocketAddr, listener: SocketAddr) -> Result<ClientKey, DataplaneError> {
    ClientKey::new(client.ip(), client.port(), listener.ip(), listener.port())
        .map_err(|e| mixed(ALLOCATIONS, e))
}

/// A key or value of mixed families (which the bindings rule out) as a map error.
fn mixed(map: &'static str, e: relay_common::maps::MixedFamilies) -> DataplaneError {
    DataplaneError::Map {
        map,
        source: e.to_string().into(),
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The `struct xdp_md` a test run starts from: data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex.
fn xdp_md(frame: &[u8], ingress_ifindex: u32) -> Result<Vec<u8>, DataplaneError> {
    let len = u32::try_from(frame.len()).map_err(|e| DataplaneError::TestRun(e.into()))?;
    let mut ctx = Vec::with_capacity(24);
    for field in [0, len, 0, ingress_ifindex, 0, 0] {
        ctx.extend_from_slice(&field.to_ne_bytes());
    }
    Ok(ctx)
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        // The next-hop thread may hold the maps a moment longer; the links go now.
        let mut guard = self.lock();
        let inner = &mut *guard;
        let links = std::mem::take(&mut inner.links);
        if let Ok(program) = xdp_program(&mut inner.ebpf) {
            for link in links.into_iter().flatten() {
                if let Err(e) = program.detach(link) {
                    tracing::warn!(err = %e, "detaching the XDP program");
                }
            }
        }
        for a in &self.attachments {
            tracing::info!(interface = a.interface, "XDP program detached");
        }
    }
}

impl Inner {
    /// A free counter slot (of `max_channels` times [`PEER_ENTRIES_PER_CHANNEL`]).
    fn take_slot(&mut self, max_channels: u32) -> Option<u32> {
        if let Some(slot) = self.free_slots.pop() {
            return Some(slot);
        }
        if self.next_slot < max_channels.saturating_mul(PEER_ENTRIES_PER_CHANNEL) {
            self.next_slot += 1;
            return Some(self.next_slot - 1);
        }
        None
    }

    /// Zeroes a counter slot, for its new channel or permission.
    fn zero_slot(&mut self, slot: u32) -> Result<(), DataplaneError> {
        let zeroes = PerCpuValues::try_from(vec![ChannelStats::default(); self.cpus])
            .map_err(|e| map_error(CHANNEL_STATS, e))?;
        self.channel_stats
            .set(slot, zeroes, 0)
            .map_err(|e| map_error(CHANNEL_STATS, e))
    }

    /// Writes a channel's entries: counters zeroed, then peer-to-client, then client-to-peer.
    /// On error the maps are as before.
    fn write(
        &mut self,
        entries: &ChannelEntries,
        slot: u32,
        max_channels: u32,
    ) -> Result<(), DataplaneError> {
        self.zero_slot(slot)?;
        self.peer_to_client
            .insert(entries.peer_key, entries.peer_value, NO_EXIST)
            .map_err(|e| full_or(PEER_TO_CLIENT, e, max_channels))?;
        if let Err(e) =
            self.client_to_peer
                .insert(entries.channel_key, entries.channel_value, NO_EXIST)
        {
            let _ = self.peer_to_client.remove(&entries.peer_key);
            return Err(full_or(CLIENT_TO_PEER, e, max_channels));
        }
        Ok(())
    }

    /// Removes a bound channel's entries (its traffic stays in TOTAL_STATS).
    fn remove(&mut self, binding: &ChannelBinding) -> Result<(), DataplaneError> {
        let Some(slot) = self.bound.get(binding).map(|b| b.slot) else {
            return Ok(());
        };
        let entries = channel_entries(binding, slot)?;
        // Client-to-peer first, the reverse of `write`.
        remove_entry(
            &mut self.client_to_peer,
            &entries.channel_key,
            CLIENT_TO_PEER,
        )?;
        remove_entry(&mut self.peer_to_client, &entries.peer_key, PEER_TO_CLIENT)?;
        self.bound.remove(binding);
        self.peers.remove(&entries.peer_key);
        // Zeroed when it is reused (`write`).
        self.free_slots.push(slot);
        // After the channel's entries, which send to them.
        self.release(destinations(binding))
    }

    /// Counts a reference to each of `dsts` (the addresses a channel sends to), resolving the
    /// next hop of each new one and writing it into NEXT_HOPS when it has one. On error
    /// nothing has changed. A failure to resolve is not one: the entry is added by a refresh
    /// once resolving works (logged once).
    fn reference(&mut self, dsts: [IpAddr; 2], max_channels: u32) -> Result<(), DataplaneError> {
        let mut new: Vec<IpAddr> = dsts
            .into_iter()
            .filter(|d| !self.destinations.contains_key(d))
            .collect();
        new.dedup();
        let resolved = if new.is_empty() {
            Vec::new()
        } else {
            match self.resolver.resolve_all(&new) {
                Ok(resolved) => {
                    if self.resolve_failing {
                        tracing::info!("resolving the XDP next hops works again");
                        self.resolve_failing = false;
                    }
                    resolved
                }
                Err(e) => {
                    if !self.resolve_failing {
                        tracing::warn!(
                            err = %e,
                            "resolving the next hops of a bound channel failed: its packets go \
                             up to userspace until a refresh resolves them"
                        );
                        self.resolve_failing = true;
                    }
                    vec![Resolution::default(); new.len()]
                }
            }
        };
        for (i, (addr, resolution)) in new.iter().zip(&resolved).enumerate() {
            if let Some(hop) = resolution.hop
                && let Err(e) = self
                    .next_hops
                    .insert(NextHopKey::new(*addr), hop.value(), 0)
            {
                // Out with the ones added before it.
                for added in &new[..i] {
                    if let Some(d) = self.destinations.remove(added)
                        && d.hop.is_some()
                    {
                        let _ =
                            remove_entry(&mut self.next_hops, &NextHopKey::new(*added), NEXT_HOPS);
                    }
                }
                return Err(full_or(NEXT_HOPS, e, max_channels));
            }
            self.next_stamp += 1;
            self.destinations.insert(
                *addr,
                Destination {
                    refs: 0,
                    stamp: self.next_stamp,
                    via: resolution.via,
                    hop: resolution.hop,
                },
            );
        }
        for addr in dsts {
            if let Some(d) = self.destinations.get_mut(&addr) {
                d.refs += 1;
            }
        }
        Ok(())
    }

    /// Drops a reference to each of `dsts`; the last one deletes the destination's entry.
    fn release(&mut self, dsts: [IpAddr; 2]) -> Result<(), DataplaneError> {
        let mut result = Ok(());
        for addr in dsts {
            let Some(d) = self.destinations.get_mut(&addr) else {
                continue;
            };
            d.refs = d.refs.saturating_sub(1);
            if d.refs > 0 {
                continue;
            }
            if d.hop.is_some()
                && let Err(e) = remove_entry(&mut self.next_hops, &NextHopKey::new(addr), NEXT_HOPS)
            {
                // Kept, unreferenced, for the next refresh to delete.
                result = result.and(Err(e));
                continue;
            }
            self.destinations.remove(&addr);
        }
        result
    }

    /// Writes what resolving `wanted` (address and stamp of each destination, when the refresh
    /// began) found, where it differs from what NEXT_HOPS holds; destinations since removed or
    /// added again are left alone, and unreferenced ones are deleted. An entry that cannot be
    /// written is deleted.
    fn apply(
        &mut self,
        wanted: &[(IpAddr, u64)],
        resolved: &[Resolution],
    ) -> Result<NextHopChanges, DataplaneError> {
        let mut changes = NextHopChanges::default();
        let mut result = Ok(());
        for ((addr, stamp), resolution) in wanted.iter().zip(resolved) {
            let Some(d) = self.destinations.get_mut(addr) else {
                continue;
            };
            if d.stamp != *stamp {
                continue;
            }
            let hop = if d.refs == 0 { None } else { resolution.hop };
            d.via = resolution.via;
            if d.hop != hop {
                let key = NextHopKey::new(*addr);
                let written = match hop {
                    Some(h) => self
                        .next_hops
                        .insert(key, h.value(), 0)
                        .map_err(|e| map_error(NEXT_HOPS, e)),
                    None => remove_entry(&mut self.next_hops, &key, NEXT_HOPS),
                };
                match written {
                    Ok(()) => {
                        match (d.hop, hop) {
                            (None, Some(_)) => changes.added += 1,
                            (Some(_), Some(_)) => changes.updated += 1,
                            _ => changes.removed += 1,
                        }
                        d.hop = hop;
                    }
                    Err(e) => {
                        if hop.is_some()
                            && remove_entry(&mut self.next_hops, &key, NEXT_HOPS).is_ok()
                        {
                            if d.hop.is_some() {
                                changes.removed += 1;
                            }
                            d.hop = None;
                        }
                        result = result.and(Err(e));
                    }
                }
            }
            if d.refs == 0 && d.hop.is_none() {
                self.destinations.remove(addr);
            }
        }
        result.map(|()| changes)
    }

    fn totals(&self) -> Result<Totals, DataplaneError> {
        let mut actions = ActionCounts::default();
        for action in Action::ALL {
            let values = self
                .action_stats
                .get(&action.index(), 0)
                .map_err(|e| map_error(ACTION_STATS, e))?;
            actions.set(action, values.iter().sum());
        }
        let both = |slot| read_slot(&self.total_stats, TOTAL_STATS, slot).map(traffic);
        let total = both(TOTAL_ALL)?;
        Ok(Totals {
            client_to_peer: total.client_to_peer,
            peer_to_client: total.peer_to_client,
            actions,
            kinds: [
                both(TOTAL_CHANNEL)?,
                both(TOTAL_INDICATION)?,
                both(TOTAL_SAME_RELAY)?,
            ],
        })
    }
}

/// A stats slot's traffic, each way.
fn traffic(stats: ChannelStats) -> KindTraffic {
    KindTraffic {
        client_to_peer: Traffic {
            packets: stats.client_to_peer_packets,
            bytes: stats.client_to_peer_bytes,
        },
        peer_to_client: Traffic {
            packets: stats.peer_to_client_packets,
            bytes: stats.peer_to_client_bytes,
        },
    }
}

/// A slot of a per-CPU stats array, summed over CPUs.
fn read_slot(
    map: &PerCpuArray<MapData, ChannelStats>,
    name: &'static str,
    slot: u32,
) -> Result<ChannelStats, DataplaneError> {
    let values = map.get(&slot, 0).map_err(|e| map_error(name, e))?;
    Ok(values
        .iter()
        .fold(ChannelStats::default(), |sum, cpu| sum.plus(*cpu)))
}

fn remove_entry<K: aya::Pod, V: aya::Pod>(
    map: &mut BpfHashMap<MapData, K, V>,
    key: &K,
    name: &'static str,
) -> Result<(), DataplaneError> {
    match map.remove(key) {
        Ok(()) => Ok(()),
        // Already gone: the wanted state.
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(e) => Err(map_error(name, e)),
    }
}

/// An interface's receive and transmit drops (`/sys/class/net/<if>/statistics`), if readable.
fn interface_drops(interface: &str) -> Option<u64> {
    let read = |name: &str| -> Option<u64> {
        let path = format!("/sys/class/net/{interface}/statistics/{name}");
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    };
    Some(read("rx_dropped")? + read("tx_dropped")?)
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

/// Attaches in `mode`, and says why that mode. `Auto` uses native mode only where its
/// packets are known to arrive: on an interface backed by a device (a NIC, virtio), whose
/// driver sends what XDP_TX and redirects hand it. A virtual interface without one (veth,
/// bridge, a CNI's pod interface) gets generic mode: native XDP_TX or a redirect on a veth
/// drops the frames silently unless the other end runs an XDP program too, which the relay
/// cannot know or arrange, and a generic-mode packet keeps its skb, so the checksum offload
/// state of a container's packets survives the program (see relay-ebpf's `forward`).
fn attach(
    program: &mut Xdp,
    interface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(XdpLinkId, XdpMode, ModeChoice), DataplaneError> {
    let try_mode = |program: &mut Xdp, mode: XdpMode| {
        let aya_mode = match mode {
            XdpMode::Skb => AyaMode::Skb,
            _ => AyaMode::Driver,
        };
        program.attach_to_if_index(ifindex, aya_mode)
    };
    match mode {
        XdpMode::Native | XdpMode::Skb => try_mode(program, mode)
            .map(|link| (link, mode, ModeChoice::Configured))
            .map_err(|e| attach_error(interface, mode, e)),
        XdpMode::Auto if !has_device(interface) => try_mode(program, XdpMode::Skb)
            .map(|link| (link, XdpMode::Skb, ModeChoice::VirtualInterface))
            .map_err(|e| attach_error(interface, XdpMode::Skb, e)),
        XdpMode::Auto => match try_mode(program, XdpMode::Native) {
            Ok(link) => Ok((link, XdpMode::Native, ModeChoice::DriverSupportsNative)),
            Err(native) => {
                tracing::info!(
                    interface,
                    err = %native,
                    "native XDP attach failed (the driver may not support XDP); trying skb mode"
                );
                try_mode(program, XdpMode::Skb)
                    .map(|link| (link, XdpMode::Skb, ModeChoice::DriverLacksNative))
                    .map_err(|e| attach_error(interface, XdpMode::Skb, e))
            }
        },
    }
}

/// Whether `interface` is backed by a device (`/sys/class/net/<if>/device`): a NIC or a
/// virtual machine's NIC, not a veth, bridge, bond or tunnel.
fn has_device(interface: &str) -> bool {
    std::path::Path::new("/sys/class/net")
        .join(interface)
        .join("device")
        .exists()
}

fn attach_error(interface: &str, mode: XdpMode, e: ProgramError) -> DataplaneError {
    let hint = match (&e, mode) {
        (_, XdpMode::Native) => {
            "; the driver may not support native XDP: try mode skb (generic XDP works everywhere)"
        }
        (ProgramError::SyscallError(s), _) if errno(&s.io_error) == Some(Errno::BUSY) => {
            "; another XDP program is attached to this interface (EBUSY)"
        }
        _ => "",
    };
    DataplaneError::Attach {
        interface: interface.to_owned(),
        mode,
        reason: format!("{e}{hint}"),
        source: Some(Box::new(e)),
    }
}

/// A load error with what to do about the usual causes.
fn load_error<E>(what: &str, e: E) -> DataplaneError
where
    E: std::error::Error + Send + Sync + 'static,
{
    // The whole chain: aya's map and program errors keep the errno (EPERM...) in their source.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    let hint = if text.contains("Operation not permitted")
        || text.contains("Permission denied")
        || text.contains("EPERM")
        || text.contains("EACCES")
    {
        if text.contains("!root") || text.contains("pointer") {
            " (the verifier refused pointer arithmetic it allows only with CAP_PERFMON: needs \
             root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
        } else {
            " (needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
        }
    } else if text.contains("Invalid argument") {
        " (the kernel refused it: too old for the program, or the verifier's log above says why)"
    } else {
        ""
    };
    DataplaneError::Load {
        reason: format!("{what}: {text}{hint}"),
        source: Some(Box::new(e)),
    }
}

fn map_error<E>(map: &'static str, e: E) -> DataplaneError
where
    E: std::error::Error + Send + Sync + 'static,
{
    DataplaneError::Map {
        map,
        source: Box::new(e),
    }
}

/// E2BIG from an insert means the map is full.
fn full_or(map: &'static str, e: aya::maps::MapError, max_channels: u32) -> DataplaneError {
    match &e {
        aya::maps::MapError::SyscallError(s) if errno(&s.io_error) == Some(Errno::TOOBIG) => {
            DataplaneError::Full { max_channels }
        }
        _ => map_error(map, e),
    }
}

fn errno(e: &io::Error) -> Option<Errno> {
    Errno::from_io_error(e)
}

/// The index of `interface` in the calling thread's network namespace.
fn ifindex(interface: &str) -> Result<u32, DataplaneError> {
    let socket: OwnedFd = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .map_err(|e| DataplaneError::Load {
        reason: "opening a socket to look interfaces up".to_owned(),
        source: Some(Box::new(io::Error::from(e))),
    })?;
    rustix::net::netdevice::name_to_index(&socket, interface)
        .map_err(|_| DataplaneError::UnknownInterface(interface.to_owned()))
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
    fn unknown_interfaces_are_named() {
        match ifindex("xdpturn-nonexistent0") {
            Err(DataplaneError::UnknownInterface(name)) => {
                assert_eq!(name, "xdpturn-nonexistent0");
            }
            other => panic!("expected UnknownInterface, got {other:?}"),
        }
    }

    #[test]
    fn only_interfaces_with_a_device_count_as_hardware() {
        assert!(!has_device("lo"));
        assert!(!has_device("xdpturn-nonexistent0"));
    }

    #[test]
    fn without_the_object_load_says_how_to_build_it() {
        if OBJECT.is_none() {
            let err = Dataplane::load(&XdpConfig::default()).unwrap_err();
            assert!(err.to_string().contains("cargo xtask build-ebpf"));
        }
    }
}
