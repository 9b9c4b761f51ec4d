//! Reading what the program counted: the per-CPU totals and verdict counts, each channel's
//! and permission's traffic (and what of it is new, for the bandwidth budgets), and the
//! kernel's own statistics of the program.

use aya::maps::{MapData, PerCpuArray};
use relay_common::ChannelStats;
use relay_common::maps::{
    ACTION_STATS, CHANNEL_STATS, TOTAL_ALL, TOTAL_CHANNEL, TOTAL_INDICATION, TOTAL_SAME_RELAY,
    TOTAL_STATS,
};

use super::attach::load_tc_program;
use super::errors::{load_error, map_error};
use super::{Bound, Dataplane, Inner, xdp_program};
use crate::dataplane::{
    ChannelCounters, ChannelTraffic, Counters, DataplaneError, KindTraffic, PermissionCounters,
    ProgramStats, Totals, Traffic, Verdict, VerdictCounts,
};
use crate::proto::FiveTuple;

impl Dataplane {
    /// Reads the totals: traffic forwarded in each direction and packets per verdict, since the
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
            verdicts: totals.verdicts,
            channels,
            permissions,
        })
    }

    /// What the kernel forwarded on each bound channel and under each installed permission
    /// (Send and Data indications; `channel` [`ChannelTraffic::PERMISSION`]) since the
    /// previous call (packets and bytes of application data, each way), for those whose allocation
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
            let t = unread(&inner.channel_stats, channel, bound)?;
            if t.client_to_peer.packets > 0 || t.peer_to_client.packets > 0 {
                taken.push(t);
            }
        }
        Ok(taken)
    }

    /// What the kernel says about the loaded program (verified instructions, size).
    pub fn program_stats(&self) -> Result<ProgramStats, DataplaneError> {
        let mut inner = self.lock();
        let info = xdp_program(&mut inner.ebpf)?
            .info()
            .map_err(|e| load_error("reading the program info", e))?;
        Ok(stats(&info))
    }

    /// [`Dataplane::program_stats`] of the TC program, loaded first if it is not yet.
    pub fn tc_program_stats(&self) -> Result<ProgramStats, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let info = load_tc_program(&mut inner.ebpf, &mut inner.tc)?
            .info()
            .map_err(|e| load_error("reading the TC program info", e))?;
        Ok(stats(&info))
    }
}

/// The figures of a program's info.
fn stats(info: &aya::programs::ProgramInfo) -> ProgramStats {
    ProgramStats {
        verified_instructions: info.verified_instruction_count(),
        translated_bytes: info.size_translated(),
        jited_bytes: info.size_jitted(),
        run_time: info.run_time(),
        run_count: info.run_count(),
    }
}

/// What the kernel forwarded on a channel (or under a permission) since the last read, now
/// read.
pub(super) fn unread(
    channel_stats: &PerCpuArray<MapData, ChannelStats>,
    channel: u16,
    bound: &mut Bound,
) -> Result<ChannelTraffic, DataplaneError> {
    let stats = read_slot(channel_stats, CHANNEL_STATS, bound.slot)?;
    let now = traffic(stats);
    let before = traffic(bound.reported);
    bound.reported = stats;
    Ok(ChannelTraffic {
        tuple: bound.tuple,
        channel,
        client_to_peer: now.client_to_peer.since(before.client_to_peer),
        peer_to_client: now.peer_to_client.since(before.peer_to_client),
    })
}

impl Inner {
    fn totals(&self) -> Result<Totals, DataplaneError> {
        let mut verdicts = VerdictCounts::default();
        for verdict in Verdict::ALL {
            let values = self
                .action_stats
                .get(&verdict.index(), 0)
                .map_err(|e| map_error(ACTION_STATS, e))?;
            verdicts.set(verdict, values.iter().sum());
        }
        let both = |slot| read_slot(&self.total_stats, TOTAL_STATS, slot).map(traffic);
        let total = both(TOTAL_ALL)?;
        Ok(Totals {
            client_to_peer: total.client_to_peer,
            peer_to_client: total.peer_to_client,
            verdicts,
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
