//! Data (RFC 8656 §10, §12): Send indications and ChannelData from clients to peers, and
//! datagrams from peers to clients as ChannelData or Data indications; permissions, the peer
//! policy and the bandwidth cap checked on the way, traffic counted.

use std::net::SocketAddr;
use std::time::Instant;

use super::{
    Buf, Command, Direction, DropReason, Inbound, PEER_HEADROOM, PEER_TAILROOM, QuotaKind,
    RelayHandle, Server, Transport, canonical,
};
use crate::stun::{
    AttrType, ChannelData, Class, Data, EncodeError, Encoder, Message, MessageType, Method,
    TransactionId, XorPeerAddress,
};

impl Server {
    pub(super) fn send_indication(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        now: Instant,
    ) -> Command {
        let transport = inbound.transport;
        let tuple = inbound.tuple();
        let (Some(Ok(XorPeerAddress(peer))), Some(data)) =
            (msg.get::<XorPeerAddress>(), msg.raw(AttrType::DATA))
        else {
            return self.drop(transport, DropReason::Malformed);
        };
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return self.drop(transport, DropReason::NoAllocation);
        };
        let Some(relay) = a.relay_for(peer).map(|r| r.handle) else {
            return self.drop(transport, DropReason::NoPermission);
        };
        if !a.has_permission(peer.ip(), now) {
            return self.drop(transport, DropReason::NoPermission);
        }
        // The permission was checked per IP; the relay's own endpoints are refused per port.
        if let Err(denial) = self.config.policy.check(peer) {
            self.counters.peer_denied(denial);
            return self.drop(transport, DropReason::PeerDenied);
        }
        if !a.within_bandwidth(data.value.len(), now) {
            self.counters.quota_rejected(QuotaKind::Bandwidth);
            return self.drop(transport, DropReason::BandwidthExceeded);
        }
        let start = data.offset + crate::stun::ATTR_HEADER_LEN;
        a.usage.total.client_to_peer(data.value.len());
        self.counters
            .relayed(transport, Direction::ClientToPeer, data.value.len());
        Command::ToPeer {
            relay,
            peer,
            range: start..start + data.value.len(),
        }
    }

    pub(super) fn client_channel_data(&mut self, inbound: &Inbound<'_>, now: Instant) -> Command {
        let transport = inbound.transport;
        let Ok(cd) = ChannelData::decode(inbound.packet) else {
            return self.drop(transport, DropReason::Malformed);
        };
        let Some(a) = self.allocations.get_mut(&inbound.tuple()) else {
            return self.drop(transport, DropReason::NoAllocation);
        };
        let Some(peer) = a.channel_peer(cd.channel, now) else {
            return self.drop(transport, DropReason::UnknownChannel);
        };
        let Some(relay) = a.relay_for(peer).map(|r| r.handle) else {
            return self.drop(transport, DropReason::UnknownChannel);
        };
        if !a.within_bandwidth(cd.data.len(), now) {
            self.counters.quota_rejected(QuotaKind::Bandwidth);
            return self.drop(transport, DropReason::BandwidthExceeded);
        }
        a.usage.total.client_to_peer(cd.data.len());
        self.counters
            .relayed(transport, Direction::ClientToPeer, cd.data.len());
        let start = ChannelData::HEADER_LEN;
        Command::ToPeer {
            relay,
            peer,
            range: start..start + cd.data.len(),
        }
    }

    /// Handles a datagram a peer sent to relay socket `relay`. The data is
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`, with [`PEER_TAILROOM`] spare bytes after it,
    /// so that ChannelData can be framed in place.
    pub fn handle_peer(
        &mut self,
        relay: RelayHandle,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        out: &mut [u8],
    ) -> Command {
        let Some(tuple) = self.by_relay.get(&relay).copied() else {
            return self.drop(Transport::Udp, DropReason::NoAllocation);
        };
        let transport = tuple.transport;
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return self.drop(transport, DropReason::NoAllocation);
        };
        let peer = canonical(peer);
        if !a.has_permission(peer.ip(), now) {
            return self.drop(transport, DropReason::NoPermission);
        }
        // Permissions are per IP, but the relay's own addresses are peers on their relay
        // ports only (a same-relay call): from any other port of them, nothing is relayed.
        if self.config.policy.is_relay_ip(peer.ip())
            && let Err(denial) = self.config.policy.check(peer)
        {
            self.counters.peer_denied(denial);
            return self.drop(transport, DropReason::PeerDenied);
        }
        if !a.within_bandwidth(len, now) {
            self.counters.quota_rejected(QuotaKind::Bandwidth);
            return self.drop(transport, DropReason::BandwidthExceeded);
        }
        if let Some(channel) = a.channel_to(peer, now) {
            let (Ok(data_len), Some(frame)) = (
                u16::try_from(len),
                buf.get_mut(..PEER_HEADROOM + len + PEER_TAILROOM),
            ) else {
                return self.drop(transport, DropReason::Malformed);
            };
            let mut header = [0u8; 4];
            ChannelData::write_header(channel, data_len, &mut header);
            frame[..4].copy_from_slice(&header);
            let total = ChannelData::encoded_len(len, transport.is_stream());
            frame[PEER_HEADROOM + len..total].fill(0);
            a.usage.total.peer_to_client(len);
            self.counters
                .relayed(transport, Direction::PeerToClient, len);
            return Command::ToClient {
                tuple,
                data: Buf::Input(0..total),
            };
        }
        let data = buf
            .get(PEER_HEADROOM..PEER_HEADROOM + len)
            .unwrap_or_default();
        let typ = MessageType::new(Method::DATA, Class::Indication);
        let written = (|| {
            let mut e = Encoder::new(out, typ, indication_tid(now, peer))?;
            e.add(&XorPeerAddress(peer))?;
            e.add(&Data(data))?;
            Ok::<_, EncodeError>(e.finish())
        })();
        match written {
            Ok(n) => {
                a.usage.total.peer_to_client(len);
                self.counters
                    .relayed(transport, Direction::PeerToClient, len);
                Command::ToClient {
                    tuple,
                    data: Buf::Output(n),
                }
            }
            // Larger than a Data indication can carry in `out`.
            Err(_) => self.drop(transport, DropReason::Malformed),
        }
    }
}

/// A transaction id for a Data indication: unique enough (indications are not matched).
fn indication_tid(now: Instant, peer: SocketAddr) -> TransactionId {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    now.hash(&mut h);
    peer.hash(&mut h);
    let a = h.finish().to_be_bytes();
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&a);
    TransactionId::new(tid)
}
