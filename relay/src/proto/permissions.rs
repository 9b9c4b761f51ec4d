//! Requests on an existing allocation (RFC 8656 §7.3, §9, §11): Refresh (and deletion with
//! lifetime 0), CreatePermission, ChannelBind; the ownership, peer address and permission quota
//! checks they share with Connect.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::allocation::{self, channel_events, permission_events};
use super::auth::Authenticated;
use super::{Command, Ctx, FiveTuple, Inbound, QuotaKind, Refusal, Server};
use crate::stun::{
    AddressFamily, ChannelData, ChannelNumber, Lifetime, Message, RequestedAddressFamily,
    XorPeerAddress,
};

impl Server {
    /// The allocation of this 5-tuple, if it belongs to the authenticated user.
    pub(super) fn owned_allocation(
        &self,
        tuple: &FiveTuple,
        auth: &Authenticated,
    ) -> Result<(), Refusal> {
        match self.allocations.get(tuple) {
            None => Err((437, "Allocation Mismatch")),
            Some(a) if a.username != auth.username => Err((441, "Wrong Credentials")),
            Some(_) => Ok(()),
        }
    }

    /// Refresh (RFC 8656 §7.3): a new lifetime, or with lifetime 0 the allocation's end.
    pub(super) fn refresh(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let tuple = inbound.tuple();
        if let Err((code, reason)) = self.owned_allocation(&tuple, auth) {
            return self.reject(ctx, out, code, reason);
        }
        if let Some(Ok(RequestedAddressFamily(family))) = msg.get::<RequestedAddressFamily>()
            && !self.allocations[&tuple]
                .relays
                .iter()
                .any(|r| AddressFamily::of(r.addr.ip()) == family)
        {
            return self.reject(ctx, out, 443, "Peer Address Family Mismatch");
        }
        let delete = matches!(msg.get::<Lifetime>(), Some(Ok(Lifetime(0))));
        let lifetime = if delete {
            Duration::ZERO
        } else {
            self.lifetime(msg)
        };
        let secs = lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        let command = self.success(ctx, out, |e| e.add(&Lifetime(secs)));
        let Command::Reply { len } = command else {
            return command;
        };
        if delete {
            self.delete_allocation(&tuple);
            self.recent
                .insert(tuple, (now, ctx.header.tid, out[..len].to_vec()));
        } else if let Some(a) = self.allocations.get_mut(&tuple) {
            a.expires = now + lifetime;
            a.cache_response(ctx.header.tid, &out[..len], now);
            self.report_refreshed(&tuple, secs);
        }
        command
    }

    /// Checks a peer for CreatePermission, ChannelBind and Connect: family and policy. The
    /// policy judges the whole address, port included, for all three alike: the relay's own
    /// endpoints are refused, and its own addresses are peers on the relay ports only (the
    /// permission such a peer gets covers its IP, but what arrives from that IP on another port
    /// is dropped, see [`Server::handle_peer`]).
    fn check_peer(&self, tuple: &FiveTuple, peer: SocketAddr) -> Result<(), Refusal> {
        let a = &self.allocations[tuple];
        if a.relay_for(peer).is_none() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        self.config.policy.check(peer).map_err(|denial| {
            self.counters.peer_denied(denial);
            (403, "Forbidden: peer address not allowed")
        })
    }

    /// The one XOR-PEER-ADDRESS of a ChannelBind or Connect, checked for family and policy.
    pub(super) fn checked_peer(
        &self,
        msg: &Message<'_>,
        tuple: &FiveTuple,
    ) -> Result<SocketAddr, Refusal> {
        let peer = match msg.get::<XorPeerAddress>() {
            Some(Ok(XorPeerAddress(p))) => p,
            _ => return Err((400, "Bad Request: XOR-PEER-ADDRESS is required")),
        };
        self.check_peer(tuple, peer)?;
        Ok(peer)
    }

    /// Room for `new` more permissions under the cap?
    fn permission_room(&self, tuple: &FiveTuple, new: usize) -> bool {
        let cap = self.config.quotas.permissions_per_allocation;
        cap == 0 || self.allocations[tuple].permissions.len() + new <= cap as usize
    }

    /// CreatePermission (RFC 8656 §9): permissions for one or more peer IPs.
    pub(super) fn create_permission(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let tuple = inbound.tuple();
        if let Err((code, reason)) = self.owned_allocation(&tuple, auth) {
            return self.reject(ctx, out, code, reason);
        }
        let mut peers = Vec::new();
        for peer in msg.get_all::<XorPeerAddress>() {
            match peer {
                Ok(XorPeerAddress(p)) => peers.push(p),
                Err(_) => {
                    return self.reject(ctx, out, 400, "Bad Request: malformed XOR-PEER-ADDRESS");
                }
            }
        }
        if peers.is_empty() {
            return self.reject(ctx, out, 400, "Bad Request: XOR-PEER-ADDRESS is required");
        }
        for &peer in &peers {
            if let Err((code, reason)) = self.check_peer(&tuple, peer) {
                return self.reject(ctx, out, code, reason);
            }
        }
        let a = &self.allocations[&tuple];
        let mut fresh: Vec<IpAddr> = peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| !a.permissions.contains_key(ip))
            .collect();
        fresh.sort();
        fresh.dedup();
        if !self.permission_room(&tuple, fresh.len()) {
            self.counters.quota_rejected(QuotaKind::Permissions);
            return self.reject(ctx, out, 508, "Insufficient Capacity: too many permissions");
        }
        let command = self.success(ctx, out, |_| Ok(()));
        let Command::Reply { len } = command else {
            return command;
        };
        let expires = now + self.config.lifetimes.permission;
        if let Some(a) = self.allocations.get_mut(&tuple) {
            for peer in &peers {
                a.permissions.insert(peer.ip(), expires);
            }
            a.cache_response(ctx.header.tid, &out[..len], now);
            // A throttled allocation's permissions return to the kernel when its budget
            // recovers.
            if !a.throttled {
                let mut ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
                ips.sort();
                ips.dedup();
                permission_events(&mut self.events, &tuple, a, &ips, true, &self.config.policy);
            }
            // Channels whose permission had expired go back to the kernel (a refresh of the
            // others changes nothing there).
            let channels: Vec<_> = a
                .offloadable(now)
                .into_iter()
                .filter(|(_, p)| peers.iter().any(|q| q.ip() == p.ip()))
                .collect();
            channel_events(&mut self.events, &tuple, a, &channels, true);
        }
        self.counters.permissions_added(fresh.len());
        command
    }

    /// ChannelBind (RFC 8656 §11): a channel number bound to a peer, with its permission.
    pub(super) fn channel_bind(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let tuple = inbound.tuple();
        if let Err((code, reason)) = self.owned_allocation(&tuple, auth) {
            return self.reject(ctx, out, code, reason);
        }
        let channel = match msg.get::<ChannelNumber>() {
            Some(Ok(ChannelNumber(n))) if ChannelData::CHANNELS.contains(&n) => n,
            _ => {
                return self.reject(
                    ctx,
                    out,
                    400,
                    "Bad Request: CHANNEL-NUMBER must be 0x4000-0x7FFF",
                );
            }
        };
        let peer = match self.checked_peer(msg, &tuple) {
            Ok(peer) => peer,
            Err((code, reason)) => return self.reject(ctx, out, code, reason),
        };
        let a = &self.allocations[&tuple];
        // RFC 8656 §11.2: a channel is bound to one peer and a peer to one channel; rebinding the
        // same pair refreshes it. The 5-minute wait after a binding expires before its number or
        // its peer is bound otherwise (§12) is a MUST on the client, not checked here: nothing of
        // the server depends on it (the expired binding, and its kernel entry, are gone), and
        // refusing would only break a client that got it wrong.
        if a.channels.get(&channel).is_some_and(|c| c.peer != peer)
            || a.channel_by_peer.get(&peer).is_some_and(|&n| n != channel)
        {
            return self.reject(
                ctx,
                out,
                400,
                "Bad Request: channel or peer already bound otherwise",
            );
        }
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if new_permission && !self.permission_room(&tuple, 1) {
            self.counters.quota_rejected(QuotaKind::Permissions);
            return self.reject(ctx, out, 508, "Insufficient Capacity: too many permissions");
        }
        let new_channel = !a.channels.contains_key(&channel);
        let command = self.success(ctx, out, |_| Ok(()));
        let Command::Reply { len } = command else {
            return command;
        };
        let lifetimes = self.config.lifetimes;
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return command;
        };
        let expires = now + lifetimes.channel;
        a.channels
            .insert(channel, allocation::Channel { peer, expires });
        a.channel_by_peer.insert(peer, channel);
        a.permissions.insert(peer.ip(), now + lifetimes.permission);
        a.cache_response(ctx.header.tid, &out[..len], now);
        // A throttled allocation's permissions and channels return to the kernel when its
        // budget recovers.
        if !a.throttled {
            permission_events(
                &mut self.events,
                &tuple,
                a,
                &[peer.ip()],
                true,
                &self.config.policy,
            );
            channel_events(&mut self.events, &tuple, a, &[(channel, peer)], true);
        }
        if new_permission {
            self.counters.permissions_added(1);
        }
        if new_channel {
            self.counters.channels_added(1);
        }
        command
    }
}
