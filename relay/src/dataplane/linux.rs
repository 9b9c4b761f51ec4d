//! The dataplane on Linux, with aya.

use std::collections::HashMap;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, MutexGuard};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues, xdp::DevMapHash};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, TestRun as _, TestRunOptions, Xdp, XdpMode as AyaMode};
use aya::{Ebpf, EbpfLoader};
use relay_common::maps::{
    ACTION_STATS, CHANNEL_STATS, CLIENT_TO_PEER, EGRESS, LISTENERS, PEER_TO_CLIENT, PROGRAM,
    TOTAL_STATS,
};
use relay_common::{
    ChannelEntries, ChannelKey, ChannelStats, ChannelValue, ListenerKey, PeerKey, PeerValue,
};
use rustix::io::Errno;

use super::{
    Action, ActionCounts, Attachment, ChannelBinding, ChannelCounters, ChannelTraffic, Counters,
    DataplaneError, ProgramStats, TestRun, Totals, Traffic, XdpConfig, XdpMode,
};
use crate::proto::FiveTuple;

/// The program, when relay/build.rs found it.
#[cfg(xdpturn_ebpf)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("XDPTURN_EBPF_OBJECT")));
#[cfg(not(xdpturn_ebpf))]
const OBJECT: Option<&[u8]> = None;

/// `BPF_NOEXIST`: insert only.
const NO_EXIST: u64 = 1;

/// The XDP program, attached, and the only writer of its maps. Dropping it detaches the
/// program from every interface.
#[derive(Debug)]
pub struct Dataplane {
    inner: Mutex<Inner>,
    attachments: Vec<Attachment>,
    max_channels: u32,
}

struct Inner {
    // Declared first so it is dropped first: the links go before the maps (field order).
    ebpf: Ebpf,
    links: Vec<XdpLinkId>,
    client_to_peer: BpfHashMap<MapData, ChannelKey, ChannelValue>,
    peer_to_client: BpfHashMap<MapData, PeerKey, PeerValue>,
    channel_stats: PerCpuArray<MapData, ChannelStats>,
    total_stats: PerCpuArray<MapData, ChannelStats>,
    action_stats: PerCpuArray<MapData, u64>,
    /// The channels in the maps, with their counter slots.
    bound: HashMap<ChannelBinding, Bound>,
    /// Which channel holds each peer key (two channels cannot share one).
    peers: HashMap<PeerKey, ChannelBinding>,
    /// Counter slots of unbound channels, to reuse.
    free_slots: Vec<u32>,
    /// The next never-used counter slot.
    next_slot: u32,
    cpus: usize,
}

/// A channel in the maps.
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
            .field("next_slot", &self.next_slot)
            .finish_non_exhaustive()
    }
}

impl Dataplane {
    /// Loads the program with maps sized for `config.max_channels`, and attaches it to every
    /// interface in `config.interfaces` (none: loaded but not attached, which
    /// [`Dataplane::test_run`] can still run). Fails, saying why, without root (CAP_BPF and
    /// CAP_NET_ADMIN), when the kernel refuses the program, or when an interface cannot take
    /// it; nothing stays attached then.
    pub fn load(config: &XdpConfig) -> Result<Dataplane, DataplaneError> {
        let object = OBJECT.ok_or(DataplaneError::NotBuilt)?;
        let max_channels = config.max_channels.max(1);
        raise_memlock_limit();
        let interfaces = u32::try_from(config.interfaces.len().max(1)).unwrap_or(u32::MAX);
        let listeners = u32::try_from(config.listeners.len().max(1)).unwrap_or(u32::MAX);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(CLIENT_TO_PEER, max_channels)
            .map_max_entries(PEER_TO_CLIENT, max_channels)
            .map_max_entries(CHANNEL_STATS, max_channels)
            .map_max_entries(EGRESS, interfaces)
            .map_max_entries(LISTENERS, listeners)
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
        let mut egress: DevMapHash<MapData> = take(&mut ebpf, EGRESS)?;
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| DataplaneError::Load {
            reason: format!("counting the CPUs ({what})"),
            source: Some(Box::new(e)),
        })?;
        let mut inner = Inner {
            client_to_peer: take(&mut ebpf, CLIENT_TO_PEER)?,
            peer_to_client: take(&mut ebpf, PEER_TO_CLIENT)?,
            channel_stats: take(&mut ebpf, CHANNEL_STATS)?,
            total_stats: take(&mut ebpf, TOTAL_STATS)?,
            action_stats: take(&mut ebpf, ACTION_STATS)?,
            ebpf,
            links: Vec::new(),
            bound: HashMap::new(),
            peers: HashMap::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            cpus,
        };

        // On error `inner` is dropped, which detaches what was attached so far.
        let mut attachments = Vec::new();
        for interface in &config.interfaces {
            let ifindex = ifindex(interface)?;
            let program = xdp_program(&mut inner.ebpf)?;
            let (link, mode) = attach(program, interface, ifindex, config.mode)?;
            inner.links.push(link);
            egress
                .insert(ifindex, ifindex, None, 0)
                .map_err(|e| map_error(EGRESS, e))?;
            let attachment = Attachment {
                interface: interface.clone(),
                ifindex,
                mode,
                ipv4_forwarding: forwarding("ipv4", interface),
                ipv6_forwarding: forwarding("ipv6", interface),
            };
            tracing::info!(interface, ifindex, %mode, "XDP program attached");
            if attachment.ipv4_forwarding == Some(false)
                || attachment.ipv6_forwarding == Some(false)
            {
                tracing::warn!(
                    interface,
                    ipv4 = ?attachment.ipv4_forwarding,
                    ipv6 = ?attachment.ipv6_forwarding,
                    "forwarding is disabled on this interface: bpf_fib_lookup will not route \
                     for the program, so that family is relayed in userspace \
                     (pass_fib_fwd_disabled); enable net.ipv4.conf.{interface}.forwarding / \
                     net.ipv6.conf.{interface}.forwarding"
                );
            }
            attachments.push(attachment);
        }
        // The device map is not needed here any more; the program keeps its own reference.
        drop(egress);
        drop(listener_map);

        Ok(Dataplane {
            inner: Mutex::new(inner),
            attachments,
            max_channels,
        })
    }

    /// Where the program is attached.
    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// The most channels the maps hold.
    pub fn max_channels(&self) -> u32 {
        self.max_channels
    }

    /// How many channels are offloaded now.
    pub fn bound_channels(&self) -> usize {
        self.lock().bound.len()
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
        if inner.peers.contains_key(&peer_key) {
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

        let slot = match inner.free_slots.pop() {
            Some(slot) => slot,
            None if inner.next_slot < self.max_channels => {
                inner.next_slot += 1;
                inner.next_slot - 1
            }
            None => {
                return Err(DataplaneError::Full {
                    max_channels: self.max_channels,
                });
            }
        };
        let entries = match entries_for(slot) {
            Ok(e) => e,
            Err(e) => {
                inner.free_slots.push(slot);
                return Err(e);
            }
        };
        if let Err(e) = inner.write(&entries, slot, self.max_channels) {
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

    /// Reads the totals: traffic forwarded in each direction and packets per action, since the
    /// program was loaded. A fixed handful of syscalls, whatever the number of channels: the
    /// one to poll for metrics.
    pub fn totals(&self) -> Result<Totals, DataplaneError> {
        self.lock().totals()
    }

    /// Reads the totals and every bound channel's traffic (one more syscall per channel).
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let inner = self.lock();
        let totals = inner.totals()?;
        let mut channels = Vec::with_capacity(inner.bound.len());
        for (binding, bound) in &inner.bound {
            let stats = read_slot(&inner.channel_stats, CHANNEL_STATS, bound.slot)?;
            channels.push(ChannelCounters {
                binding: *binding,
                client_to_peer: Traffic {
                    packets: stats.client_to_peer_packets,
                    bytes: stats.client_to_peer_bytes,
                },
                peer_to_client: Traffic {
                    packets: stats.peer_to_client_packets,
                    bytes: stats.peer_to_client_bytes,
                },
            });
        }
        Ok(Counters {
            client_to_peer: totals.client_to_peer,
            peer_to_client: totals.peer_to_client,
            actions: totals.actions,
            channels,
        })
    }

    /// What the kernel forwarded on each bound channel since the previous call (bytes of
    /// application data, both directions), for the channels whose allocation `owned` accepts
    /// (each worker of the relay takes its own allocations'; the others are left for their
    /// owner). Only channels with new traffic are listed. One syscall per channel taken.
    pub fn take_traffic(
        &self,
        mut owned: impl FnMut(&FiveTuple) -> bool,
    ) -> Result<Vec<ChannelTraffic>, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut taken = Vec::new();
        for (binding, bound) in &mut inner.bound {
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
                    channel: binding.channel,
                    bytes,
                });
            }
        }
        Ok(taken)
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
        // A panic while holding the lock leaves the bookkeeping as consistent as the maps.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
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
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        let links = std::mem::take(&mut inner.links);
        if let Ok(program) = xdp_program(&mut inner.ebpf) {
            for link in links {
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
    /// Writes a channel's entries: counters zeroed, then peer-to-client, then client-to-peer.
    /// On error the maps are as before.
    fn write(
        &mut self,
        entries: &ChannelEntries,
        slot: u32,
        max_channels: u32,
    ) -> Result<(), DataplaneError> {
        let zeroes = PerCpuValues::try_from(vec![ChannelStats::default(); self.cpus])
            .map_err(|e| map_error(CHANNEL_STATS, e))?;
        self.channel_stats
            .set(slot, zeroes, 0)
            .map_err(|e| map_error(CHANNEL_STATS, e))?;
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
        Ok(())
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
        let total = read_slot(&self.total_stats, TOTAL_STATS, 0)?;
        Ok(Totals {
            client_to_peer: Traffic {
                packets: total.client_to_peer_packets,
                bytes: total.client_to_peer_bytes,
            },
            peer_to_client: Traffic {
                packets: total.peer_to_client_packets,
                bytes: total.peer_to_client_bytes,
            },
            actions,
        })
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

/// Attaches in `mode`; `Auto` tries native first and falls back to generic, saying so.
fn attach(
    program: &mut Xdp,
    interface: &str,
    ifindex: u32,
    mode: XdpMode,
) -> Result<(XdpLinkId, XdpMode), DataplaneError> {
    let try_mode = |program: &mut Xdp, mode: XdpMode| {
        let aya_mode = match mode {
            XdpMode::Skb => AyaMode::Skb,
            _ => AyaMode::Driver,
        };
        program
            .attach_to_if_index(ifindex, aya_mode)
            .map(|link| (link, mode))
    };
    match mode {
        XdpMode::Native | XdpMode::Skb => {
            try_mode(program, mode).map_err(|e| attach_error(interface, mode, e))
        }
        XdpMode::Auto => match try_mode(program, XdpMode::Native) {
            Ok(ok) => Ok(ok),
            Err(native) => {
                tracing::info!(
                    interface,
                    err = %native,
                    "native XDP attach failed (the driver may not support XDP); trying skb mode"
                );
                try_mode(program, XdpMode::Skb)
                    .map_err(|e| attach_error(interface, XdpMode::Skb, e))
            }
        },
    }
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
    let text = e.to_string();
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        " (needs root, or CAP_BPF and CAP_NET_ADMIN)"
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

/// `net.<family>.conf.<interface>.forwarding`, if readable.
fn forwarding(family: &str, interface: &str) -> Option<bool> {
    let path = format!("/proc/sys/net/{family}/conf/{interface}/forwarding");
    std::fs::read_to_string(path).ok().map(|v| v.trim() != "0")
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
    fn forwarding_reads_the_sysctl() {
        // Whatever its value, `lo` exists wherever /proc is mounted.
        if std::path::Path::new("/proc/sys/net/ipv4/conf/lo/forwarding").exists() {
            assert!(forwarding("ipv4", "lo").is_some());
        }
        assert_eq!(forwarding("ipv4", "xdpturn-nonexistent0"), None);
    }

    #[test]
    fn without_the_object_load_says_how_to_build_it() {
        if OBJECT.is_none() {
            let err = Dataplane::load(&XdpConfig::default()).unwrap_err();
            assert!(err.to_string().contains("cargo xtask build-ebpf"));
        }
    }
}
