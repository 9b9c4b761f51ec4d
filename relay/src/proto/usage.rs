//! Usage reports: each allocation's life (new, refreshed, deleted) and the traffic it relayed,
//! as coturn's traffic records (`--redis-statsdb`) give them, for the event loop to publish.
//!
//! What is counted is application data, as the rest of the relay counts it (ChannelData
//! payload, a Send or Data indication's DATA, a peer datagram): on the client side what the
//! client sent for relaying and what was relayed to it, on the peer side what arrived from
//! peers and what was relayed to them. Userspace counts as it relays ([`Server`]'s data
//! paths); what the kernel fast path forwarded is added when the event loop reads its
//! counters ([`Server::count_offloaded`]), including, at a channel's or permission's removal,
//! what it forwarded since the last read. Reports are made only when the configuration asks
//! for them (`Config::report_usage`); otherwise nothing here costs anything.

use std::time::{Duration, Instant};

use super::{Event, FiveTuple, Server};

/// How often an allocation with new traffic reports it (coturn reports every 4,096 packets; a
/// period bounds both the delay and the rate of reports whatever the packet rate).
pub const USAGE_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Packets and application bytes, one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub packets: u64,
    pub bytes: u64,
}

impl Flow {
    /// One more packet of `bytes`.
    pub fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }

    fn plus(self, other: Flow) -> Flow {
        Flow {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
        }
    }

    fn minus(self, other: Flow) -> Flow {
        Flow {
            packets: self.packets.saturating_sub(other.packets),
            bytes: self.bytes.saturating_sub(other.bytes),
        }
    }
}

/// An allocation's traffic, both sides, both ways.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// From the client, relayed (coturn's `rcvp`/`rcvb` of `traffic`).
    pub from_client: Flow,
    /// Relayed to the client (`sentp`/`sentb` of `traffic`).
    pub to_client: Flow,
    /// From peers, relayed (`rcvp`/`rcvb` of `traffic/peer`).
    pub from_peers: Flow,
    /// Relayed to peers (`sentp`/`sentb` of `traffic/peer`).
    pub to_peers: Flow,
}

impl Usage {
    /// The sum of two.
    pub fn plus(self, other: Usage) -> Usage {
        Usage {
            from_client: self.from_client.plus(other.from_client),
            to_client: self.to_client.plus(other.to_client),
            from_peers: self.from_peers.plus(other.from_peers),
            to_peers: self.to_peers.plus(other.to_peers),
        }
    }

    /// What `self` has more than `earlier`.
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            from_client: self.from_client.minus(earlier.from_client),
            to_client: self.to_client.minus(earlier.to_client),
            from_peers: self.from_peers.minus(earlier.from_peers),
            to_peers: self.to_peers.minus(earlier.to_peers),
        }
    }

    /// Relayed from the client to a peer (`bytes` of data).
    pub fn client_to_peer(&mut self, bytes: usize) {
        self.from_client.add(bytes);
        self.to_peers.add(bytes);
    }

    /// Relayed from a peer to the client.
    pub fn peer_to_client(&mut self, bytes: usize) {
        self.from_peers.add(bytes);
        self.to_client.add(bytes);
    }

    /// Nothing counted.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }

    /// What the kernel forwarded: `client_to_peer` from the client to peers, `peer_to_client`
    /// the other way (each packets and bytes).
    pub fn forwarded(client_to_peer: Flow, peer_to_client: Flow) -> Usage {
        Usage {
            from_client: client_to_peer,
            to_peers: client_to_peer,
            from_peers: peer_to_client,
            to_client: peer_to_client,
        }
    }
}

/// One report about one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    /// The allocation's 5-tuple (for the event loop to add what the kernel forwarded last).
    pub tuple: FiveTuple,
    /// Unique among this relay's allocations, also across restarts (coturn's session id).
    pub id: u64,
    /// The username it was allocated with.
    pub username: String,
    pub kind: UsageKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageKind {
    /// Allocated for `lifetime` seconds.
    New { lifetime: u32 },
    /// Refreshed for `lifetime` seconds.
    Refreshed { lifetime: u32 },
    /// Traffic since the previous report.
    Traffic(Usage),
    /// Ended: the traffic since the previous report, and over its whole life.
    Deleted { last: Usage, total: Usage },
}

/// An allocation's usage state: its id, its counts, and what of them was reported.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageState {
    pub id: u64,
    pub total: Usage,
    reported: Usage,
    reported_at: Option<Instant>,
}

impl UsageState {
    pub fn new(id: u64, now: Instant) -> Self {
        Self {
            id,
            reported_at: Some(now),
            ..Self::default()
        }
    }

    /// What was counted since the last report, now reported.
    fn take(&mut self, now: Instant) -> Usage {
        let new = self.total.since(self.reported);
        self.reported = self.total;
        self.reported_at = Some(now);
        new
    }
}

impl Server {
    fn report(&mut self, tuple: &FiveTuple, kind: UsageKind) {
        if !self.config.report_usage {
            return;
        }
        let Some(a) = self.allocations.get(tuple) else {
            return;
        };
        self.events.push_back(Event::Usage(UsageReport {
            tuple: *tuple,
            id: a.usage.id,
            username: a.username.clone(),
            kind,
        }));
    }

    /// Reports a new allocation (after it is in `allocations`).
    pub(super) fn report_new(&mut self, tuple: &FiveTuple, lifetime: u32) {
        self.report(tuple, UsageKind::New { lifetime });
    }

    /// Reports a refreshed allocation.
    pub(super) fn report_refreshed(&mut self, tuple: &FiveTuple, lifetime: u32) {
        self.report(tuple, UsageKind::Refreshed { lifetime });
    }

    /// The report of the end of an allocation, made before it leaves `allocations` (and
    /// queued by [`Server::delete_allocation`] after its channels and permissions have left
    /// the kernel): what it relayed since the last report, and in total.
    pub(super) fn deleted_report(&mut self, tuple: &FiveTuple) -> Option<UsageReport> {
        if !self.config.report_usage {
            return None;
        }
        let a = self.allocations.get_mut(tuple)?;
        let last = a.usage.total.since(a.usage.reported);
        a.usage.reported = a.usage.total;
        Some(UsageReport {
            tuple: *tuple,
            id: a.usage.id,
            username: a.username.clone(),
            kind: UsageKind::Deleted {
                last,
                total: a.usage.total,
            },
        })
    }

    /// Reports the traffic of every allocation that relayed something since its last report,
    /// at most every [`USAGE_REPORT_INTERVAL`] (from [`Server::tick`]).
    pub(super) fn report_traffic(&mut self, now: Instant) {
        if !self.config.report_usage {
            return;
        }
        let due: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| {
                a.usage.total != a.usage.reported
                    && a.usage
                        .reported_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= USAGE_REPORT_INTERVAL)
            })
            .map(|(t, _)| *t)
            .collect();
        for tuple in due {
            if let Some(a) = self.allocations.get_mut(&tuple) {
                let new = a.usage.take(now);
                self.report(&tuple, UsageKind::Traffic(new));
            }
        }
    }

    /// Counts what the kernel forwarded for the allocation of `tuple` (since the previous
    /// read). False if there is no such allocation (it ended: the event loop adds it to the
    /// allocation's last report itself).
    pub fn count_offloaded(&mut self, tuple: &FiveTuple, usage: Usage) -> bool {
        match self.allocations.get_mut(tuple) {
            Some(a) => {
                a.usage.total = a.usage.total.plus(usage);
                true
            }
            None => false,
        }
    }

    /// Whether usage is reported (the event loop reads the kernel's counters for it).
    pub fn reports_usage(&self) -> bool {
        self.config.report_usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::tests::{UNIX, config, server_with};
    use crate::proto::turn_tests::{
        Client, allocate, bind_channel, code, events, from_peer, response,
    };
    use crate::proto::{Command, Config, Inbound, MAX_REPLY_LEN};
    use crate::stun::{ChannelData, Lifetime, Method};

    fn reports(server: &mut Server) -> Vec<UsageReport> {
        events(server)
            .into_iter()
            .filter_map(|e| match e {
                Event::Usage(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    /// ChannelData on channel 0x4000 from `c`, which the core must relay.
    fn channel_data(server: &mut Server, c: &Client, data: &[u8], now: Instant) {
        let mut header = [0u8; 4];
        ChannelData::write_header(0x4000, data.len() as u16, &mut header);
        let packet = [&header[..], data].concat();
        let inbound = Inbound {
            transport: c.transport,
            local: c.local,
            remote: c.remote,
            packet: &packet,
        };
        let mut out = [0u8; MAX_REPLY_LEN];
        let command = server.handle_client(&inbound, now, &mut out);
        assert!(matches!(command, Command::ToPeer { .. }), "{command:?}");
    }

    #[test]
    fn an_allocation_reports_its_life_and_traffic_userspace_and_kernel() {
        let (mut server, _, now) = server_with(Config {
            report_usage: true,
            ..config()
        });
        let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
        allocate(&mut server, &mut c, now, 4, 50002);
        let new = reports(&mut server);
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0].kind, UsageKind::New { lifetime: 600 });
        assert_eq!(new[0].username, "alice");
        assert!(new[0].id > UNIX * 1_000_000, "{}", new[0].id);
        let id = new[0].id;

        bind_channel(&mut server, &mut c, now);
        channel_data(&mut server, &c, &[1; 100], now);
        channel_data(&mut server, &c, &[2; 20], now);
        let (command, _, _) = from_peer(&mut server, 4, "198.51.100.20:6000", &[3; 7], now);
        assert!(matches!(command, Command::ToClient { .. }), "{command:?}");
        // What the kernel forwarded, read by the event loop.
        let kernel = Usage::forwarded(
            Flow {
                packets: 5,
                bytes: 500,
            },
            Flow {
                packets: 1,
                bytes: 9,
            },
        );
        assert!(server.count_offloaded(&c.tuple(), kernel));

        // Not before the interval, then once.
        server.tick(now + USAGE_REPORT_INTERVAL - Duration::from_secs(1));
        assert_eq!(reports(&mut server), []);
        let later = now + USAGE_REPORT_INTERVAL;
        server.tick(later);
        let traffic = reports(&mut server);
        let mut userspace = Usage::default();
        userspace.client_to_peer(100);
        userspace.client_to_peer(20);
        userspace.peer_to_client(7);
        let first = userspace.plus(kernel);
        assert_eq!(
            first.from_client,
            Flow {
                packets: 7,
                bytes: 620
            }
        );
        assert_eq!(
            first.to_client,
            Flow {
                packets: 2,
                bytes: 16
            }
        );
        assert_eq!(
            traffic
                .iter()
                .map(|r| (r.id, r.kind.clone()))
                .collect::<Vec<_>>(),
            [(id, UsageKind::Traffic(first))]
        );
        server.tick(later + USAGE_REPORT_INTERVAL);
        assert_eq!(reports(&mut server), [], "nothing new, nothing said");

        let r = response(c.request(&mut server, Method::REFRESH, later, &|e| {
            e.add(&Lifetime(300)).expect("lt")
        }));
        assert_eq!(code(&r), None);
        let refreshed = reports(&mut server);
        assert_eq!(refreshed.len(), 1);
        // The lifetime granted: a shorter one than the default gets the default (RFC 8656 §7.2).
        assert_eq!(refreshed[0].kind, UsageKind::Refreshed { lifetime: 600 });

        // The end: what is new since the last report, the total, after the removals.
        channel_data(&mut server, &c, &[4; 10], later);
        let r = response(c.request(&mut server, Method::REFRESH, later, &|e| {
            e.add(&Lifetime(0)).expect("lt")
        }));
        assert_eq!(code(&r), None);
        let ev = events(&mut server);
        let at = |f: fn(&Event) -> bool| ev.iter().position(f).expect("event");
        let usage_at = at(|e| matches!(e, Event::Usage(_)));
        assert!(at(|e| matches!(e, Event::ChannelUnbound { .. })) < usage_at);
        assert!(at(|e| matches!(e, Event::AllocationRemoved { .. })) < usage_at);
        let Event::Usage(deleted) = &ev[usage_at] else {
            unreachable!()
        };
        let mut last = Usage::default();
        last.client_to_peer(10);
        assert_eq!(deleted.id, id);
        assert_eq!(
            deleted.kind,
            UsageKind::Deleted {
                last,
                total: first.plus(last)
            }
        );
        // Gone: the kernel's last counts are the event loop's to add.
        assert!(!server.count_offloaded(&c.tuple(), kernel));
    }

    #[test]
    fn nothing_is_reported_unless_asked() {
        let (mut server, _, now) = server_with(config());
        let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
        allocate(&mut server, &mut c, now, 4, 50002);
        bind_channel(&mut server, &mut c, now);
        channel_data(&mut server, &c, &[1; 100], now);
        server.tick(now + USAGE_REPORT_INTERVAL);
        server.tick(now + Duration::from_secs(600));
        assert_eq!(server.allocation_count(), 0);
        assert_eq!(reports(&mut server), []);
    }

    #[test]
    fn usage_adds_and_subtracts_per_side() {
        let mut u = Usage::default();
        u.client_to_peer(100);
        u.client_to_peer(50);
        u.peer_to_client(10);
        assert_eq!(
            u.from_client,
            Flow {
                packets: 2,
                bytes: 150
            }
        );
        assert_eq!(u.to_peers, u.from_client);
        assert_eq!(
            u.to_client,
            Flow {
                packets: 1,
                bytes: 10
            }
        );
        let kernel = Usage::forwarded(
            Flow {
                packets: 3,
                bytes: 30,
            },
            Flow {
                packets: 1,
                bytes: 7,
            },
        );
        let sum = u.plus(kernel);
        assert_eq!(
            sum.from_client,
            Flow {
                packets: 5,
                bytes: 180
            }
        );
        assert_eq!(
            sum.to_client,
            Flow {
                packets: 2,
                bytes: 17
            }
        );
        assert_eq!(sum.since(u), kernel);
        assert!(u.since(sum).is_empty());
    }
}
