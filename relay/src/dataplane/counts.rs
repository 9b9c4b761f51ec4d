//! What the program counted, as the dataplane reports it: traffic each way, packets per
//! [`Verdict`], by kind of message, per channel and permission, and the bytes to charge to
//! the allocations' bandwidth budgets.

use super::{ChannelBinding, PermissionBinding, Verdict};
use crate::proto::FiveTuple;

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
/// indications), since the last [`Dataplane::take_traffic`] (or, from a removal, since then
/// until the entry left the maps): to be charged to its allocation's bandwidth budget
/// (`proto::Server::charge_offloaded`) and counted in its usage
/// (`proto::Server::count_offloaded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelTraffic {
    /// The allocation's 5-tuple.
    pub tuple: FiveTuple,
    /// The channel, or [`ChannelTraffic::PERMISSION`] for a permission's indications.
    pub channel: u16,
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
}

impl ChannelTraffic {
    /// The `channel` of a permission's traffic (no channel number is 0; the maps use it the
    /// same way).
    pub const PERMISSION: u16 = relay_common::maps::NO_CHANNEL;

    /// Whether this is a permission's traffic (Send and Data indications).
    pub fn is_permission(&self) -> bool {
        self.channel == Self::PERMISSION
    }

    /// Application bytes, both directions.
    pub fn bytes(&self) -> u64 {
        self.client_to_peer
            .bytes
            .saturating_add(self.peer_to_client.bytes)
    }

    /// As an allocation's usage counts it.
    pub fn usage(&self) -> crate::proto::Usage {
        let flow = |t: Traffic| crate::proto::Flow {
            packets: t.packets,
            bytes: t.bytes,
        };
        crate::proto::Usage::forwarded(flow(self.client_to_peer), flow(self.peer_to_client))
    }
}

/// Packets per [`Verdict`], summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounts([u64; Verdict::COUNT]);

impl VerdictCounts {
    /// Packets counted under `verdict`.
    pub fn get(&self, verdict: Verdict) -> u64 {
        self.0[verdict.index() as usize]
    }

    /// Every verdict with its count, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Verdict, u64)> + '_ {
        Verdict::ALL.iter().map(|&a| (a, self.get(a)))
    }

    /// Every packet the program saw.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn set(&mut self, verdict: Verdict, count: u64) {
        self.0[verdict.index() as usize] = count;
    }
}

/// What the program counted since it was loaded, summed over CPUs: [`Dataplane::totals`]. The
/// traffic includes channels since unbound, so it only grows: feed its increase to
/// `relayed(Datapath::Xdp, Transport::Udp, direction)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub client_to_peer: Traffic,
    pub peer_to_client: Traffic,
    pub verdicts: VerdictCounts,
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
    pub verdicts: VerdictCounts,
    /// The channels bound now.
    pub channels: Vec<ChannelCounters>,
    /// The permissions installed now.
    pub permissions: Vec<PermissionCounters>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::dataplane::DataplaneError;
    use crate::proto::Transport;

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
            client_to_peer: Traffic {
                packets: 1,
                bytes: 3,
            },
            peer_to_client: Traffic {
                packets: 2,
                bytes: 4,
            },
        };
        assert!(t(ChannelTraffic::PERMISSION).is_permission());
        assert_eq!(t(1).bytes(), 7);
        let usage = t(1).usage();
        assert_eq!((usage.from_client.packets, usage.to_peers.bytes), (1, 3));
        assert_eq!((usage.from_peers.packets, usage.to_client.bytes), (2, 4));
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
    fn verdict_counts_by_verdict() {
        let mut c = VerdictCounts::default();
        c.set(Verdict::PassStun, 3);
        c.set(Verdict::ForwardedTx, 4);
        assert_eq!(c.get(Verdict::PassStun), 3);
        assert_eq!(c.total(), 7);
        assert_eq!(c.iter().count(), Verdict::COUNT);
    }
}
