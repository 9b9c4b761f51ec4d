//! The per-CPU traffic counts of a channel (`CHANNEL_STATS`) and of all of them (`TOTAL_STATS`).

#[cfg(doc)]
use super::{CHANNEL_STATS, TOTAL_STATS};

/// One CPU's counts for one channel, in [`CHANNEL_STATS`], or for all of them, in
/// [`TOTAL_STATS`]. Bytes are the application data (ChannelData payload), as the userspace
/// datapath counts them.
#[repr(C)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(any(feature = "user", test), derive(Debug))]
#[cfg_attr(not(any(feature = "user", test)), allow(missing_debug_implementations))]
pub struct ChannelStats {
    /// ChannelData packets forwarded from the client to the peer.
    pub client_to_peer_packets: u64,
    /// Their data bytes.
    pub client_to_peer_bytes: u64,
    /// Peer datagrams forwarded to the client as ChannelData.
    pub peer_to_client_packets: u64,
    /// Their data bytes.
    pub peer_to_client_bytes: u64,
}

impl ChannelStats {
    /// The sum of two counts (per-CPU values are summed this way).
    pub const fn plus(self, other: Self) -> Self {
        Self {
            client_to_peer_packets: self.client_to_peer_packets + other.client_to_peer_packets,
            client_to_peer_bytes: self.client_to_peer_bytes + other.client_to_peer_bytes,
            peer_to_client_packets: self.peer_to_client_packets + other.peer_to_client_packets,
            peer_to_client_bytes: self.peer_to_client_bytes + other.peer_to_client_bytes,
        }
    }
}
