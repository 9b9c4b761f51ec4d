//! What the core counts, as a trait the relay's metrics implement: requests answered, packets
//! dropped and why, keepalives, refusals (authentication, peer policy, quotas), traffic relayed
//! in userspace, and the allocations, permissions and channels there are. The core reports; it
//! does not know how the counts are exported.

use std::fmt;

use super::auth::Rejection;
use super::policy::Denial;
use super::{DropReason, QuotaKind, Transport};
use crate::stun::Method;

/// Direction of relayed traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToPeer,
    PeerToClient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToPeer => "client_to_peer",
            Direction::PeerToClient => "peer_to_client",
        }
    }
}

/// The counts a [`super::Server`] keeps, shared by every shard (so implementations count
/// atomically). Gauges are reported as changes: what is added and what is removed.
pub trait Counters: fmt::Debug + Send + Sync {
    /// A request answered with `code` (None: success).
    fn request(&self, transport: Transport, method: Method, code: Option<u16>);
    /// A packet neither answered nor relayed.
    fn dropped(&self, transport: Transport, reason: DropReason);
    /// A Binding indication (RFC 8489 §6.3.2).
    fn keepalive(&self, transport: Transport);
    /// A failed authentication.
    fn auth_failure(&self, reason: Rejection);
    /// A failed authentication charged to the budget shared by the sources the full failure
    /// limiter could not track (see [`super::auth::FailureLimiter`]).
    fn auth_limiter_overflow(&self);
    /// A peer the address policy refused.
    fn peer_denied(&self, reason: Denial);
    /// A request or packet a quota refused.
    fn quota_rejected(&self, quota: QuotaKind);
    /// One packet of `bytes` application bytes relayed in userspace.
    fn relayed(&self, transport: Transport, direction: Direction, bytes: usize);
    /// An allocation was created.
    fn allocation_opened(&self);
    /// An allocation ended.
    fn allocation_closed(&self);
    /// `n` permissions were installed (refreshes are not counted).
    fn permissions_added(&self, n: usize);
    /// `n` permissions ended.
    fn permissions_removed(&self, n: usize);
    /// `n` channels were bound (refreshes are not counted).
    fn channels_added(&self, n: usize);
    /// `n` channels ended.
    fn channels_removed(&self, n: usize);
    /// `n` channels left a kernel fast path because their allocation went over its bandwidth
    /// cap (they are relayed in userspace until the budget recovers).
    fn bandwidth_fallbacks(&self, n: usize);
}
