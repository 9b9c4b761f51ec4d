//! The per-CPU traffic counters of a forwarded packet: its channel's (or permission's), the
//! total and the total of its kind, both channels' for a same-relay call.

use relay_common::ChannelStats;
use relay_common::maps::{TOTAL_ALL, TOTAL_CHANNEL, TOTAL_INDICATION, TOTAL_SAME_RELAY};
use relay_common::packet::{self, CHANNEL_HLEN, Rewrite, Route};

use crate::maps::{CHANNEL_STATS, TOTAL_STATS};

/// Counts a forwarded packet along `route`, rewritten as `rw`, on its channel (or permission),
/// in the total and in the total of its kind.
#[inline(always)]
pub(crate) fn count_forwarded(route: &Route, rw: &Rewrite) {
    let data = u64::from(rw.data_len);
    let same_relay = route.peer_counter != packet::NO_COUNTER;
    // Towards a client, unless same-relay (which is both: see below).
    let to_peer = rw.added_len == 0 || same_relay;
    let kind = if same_relay {
        TOTAL_SAME_RELAY
    } else if rw.channel_header || route.removed_len as usize == CHANNEL_HLEN {
        TOTAL_CHANNEL
    } else {
        TOTAL_INDICATION
    };
    count(CHANNEL_STATS.get_ptr_mut(route.counter), to_peer, data);
    count(TOTAL_STATS.get_ptr_mut(TOTAL_ALL), to_peer, data);
    count(TOTAL_STATS.get_ptr_mut(kind), to_peer, data);
    // A same-relay packet is the first client's to its peer and, at once, that peer's (the
    // other allocation's) to the second client: counted on both channels (or permissions),
    // both ways, as the two passes of userspace it saves would have been.
    if same_relay {
        count(CHANNEL_STATS.get_ptr_mut(route.peer_counter), false, data);
        count(TOTAL_STATS.get_ptr_mut(TOTAL_ALL), false, data);
        count(TOTAL_STATS.get_ptr_mut(kind), false, data);
    }
}

/// Counts a forwarded packet in a per-CPU stats slot, client to peer or peer to client.
#[inline(always)]
fn count(stats: Option<*mut ChannelStats>, to_peer: bool, data: u64) {
    let Some(stats) = stats else { return };
    // SAFETY: this CPU's slot of a per-CPU array.
    #[allow(unsafe_code)]
    let stats = unsafe { &mut *stats };
    if to_peer {
        stats.client_to_peer_packets += 1;
        stats.client_to_peer_bytes += data;
    } else {
        stats.peer_to_client_packets += 1;
        stats.peer_to_client_bytes += data;
    }
}
