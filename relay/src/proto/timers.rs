//! Time and endings: expiry of allocations, permissions, channels, reservations and pending
//! RFC 6062 connections on each tick; the bandwidth budget of what a kernel fast path forwarded
//! (an allocation over it leaves the fast path until it recovers); a stream client's closed
//! connection; shutdown.

use std::time::{Duration, Instant};

use super::allocation::{self, channel_events, permission_events};
use super::{Event, FiveTuple, Server};

impl Server {
    /// Expires allocations, permissions, channels and reservations; call about once a second.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for tuple in expired {
            tracing::debug!(client = %tuple.client, "allocation expired");
            self.delete_allocation(&tuple);
        }
        let mut unbound = Vec::new();
        let mut revoked = Vec::new();
        for (tuple, a) in &mut self.allocations {
            // The kernel does not check permissions: a live channel whose permission expires
            // leaves it (a CreatePermission or ChannelBind brings it back).
            if !a.throttled {
                let unpermitted: Vec<_> = a
                    .channels
                    .iter()
                    .filter(|(_, c)| {
                        c.expires > now
                            && a.permissions.contains_key(&c.peer.ip())
                            && !a.has_permission(c.peer.ip(), now)
                    })
                    .map(|(&n, c)| (n, c.peer))
                    .collect();
                channel_events(&mut self.events, tuple, a, &unpermitted, false);
            }
            // Back under the bandwidth cap: the allocation, its permissions and its channels
            // return to the kernel.
            if a.throttled && a.bandwidth.as_mut().is_none_or(|b| b.recovered(now)) {
                a.throttled = false;
                self.events.push_back(Event::AllocationInstalled {
                    tuple: *tuple,
                    relays: a.relays.clone(),
                });
                let permissions = a.offloadable_permissions(now);
                permission_events(
                    &mut self.events,
                    tuple,
                    a,
                    &permissions,
                    true,
                    &self.config.policy,
                );
                let channels = a.offloadable(now);
                channel_events(&mut self.events, tuple, a, &channels, true);
                tracing::debug!(
                    client = %tuple.client,
                    permissions = permissions.len(),
                    channels = channels.len(),
                    "back within the bandwidth cap: the allocation returns to the XDP fast path"
                );
            }
            unbound.clear();
            revoked.clear();
            let (permissions, channels) = a.expire(now, &mut unbound, &mut revoked);
            self.counters.permissions_removed(permissions);
            self.counters.channels_removed(channels);
            channel_events(&mut self.events, tuple, a, &unbound, false);
            permission_events(
                &mut self.events,
                tuple,
                a,
                &revoked,
                false,
                &self.config.policy,
            );
        }
        for addr in self.ledger.expire_reservations(now) {
            self.events.push_back(Event::ReleaseReserved(addr));
        }
        self.recent.retain(|_, (at, _, _)| {
            now.saturating_duration_since(*at) < allocation::TRANSACTION_CACHE
        });
        self.ledger.failures.forget_idle(now);
        self.expire_tcp_connections(now);
        self.report_traffic(now);
    }

    /// Charges traffic the kernel forwarded for this allocation (on its channels, and as Send
    /// and Data indications under its permissions; both directions, application bytes) to its
    /// bandwidth budget, as userspace charges what it relays. Over the cap, the allocation
    /// leaves the kernel entirely: its channels (`ChannelUnbound`; counted as
    /// `xdpturn_xdp_fallbacks_total{reason="bandwidth"}`), its permissions
    /// (`PermissionRemoved`) and itself (`AllocationRemoved`), so its traffic is relayed in
    /// userspace, where the cap is enforced and the excess dropped and counted; [`Server::tick`]
    /// brings them back once the budget has recovered. An allocation without a cap, or gone,
    /// is not affected. (Data does not refresh allocations or permissions in TURN, so there is
    /// no other activity to record.)
    pub fn charge_offloaded(&mut self, tuple: &FiveTuple, bytes: u64, now: Instant) {
        let Some(a) = self.allocations.get_mut(tuple) else {
            return;
        };
        let Some(b) = a.bandwidth.as_mut() else {
            return;
        };
        b.charge(bytes, now);
        if a.throttled || !b.exceeded(now) {
            return;
        }
        let channels = a.offloadable(now);
        a.throttled = true;
        let n = channel_events(&mut self.events, tuple, a, &channels, false);
        permission_events(
            &mut self.events,
            tuple,
            a,
            &a.permitted(),
            false,
            &self.config.policy,
        );
        self.events
            .push_back(Event::AllocationRemoved { tuple: *tuple });
        self.counters.bandwidth_fallbacks(n);
        tracing::debug!(
            client = %tuple.client,
            channels = n,
            "over the bandwidth cap in the XDP fast path: channels relayed in userspace until \
             the budget recovers"
        );
    }

    /// A stream client's connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, tuple: &FiveTuple) {
        if let Some(id) = self.data_connections.remove(tuple) {
            // A client data connection (RFC 6062): its peer connection goes with it.
            self.tcp_connection_closed(id);
            self.events.push_back(Event::CloseTcp(id));
        }
        self.delete_allocation(tuple);
    }

    /// Ends every allocation at once (the relay is exiting): their relay sockets are released.
    pub fn shutdown(&mut self) {
        let tuples: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for tuple in tuples {
            self.delete_allocation(&tuple);
        }
        for addr in self.ledger.expire_reservations(now_far_future()) {
            self.events.push_back(Event::ReleaseReserved(addr));
        }
    }
}

/// A time after every reservation's expiry.
fn now_far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}
