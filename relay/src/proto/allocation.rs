//! One allocation's state: its relayed addresses, permissions, channels, bandwidth budget and
//! the responses it may have to repeat; and the events that mirror its channels and permissions
//! to a kernel fast path.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::policy::PeerPolicy;
use super::usage::UsageState;
use super::{Event, FiveTuple, RelayHandle};
use crate::stun::TransactionId;

/// How long a response is kept for retransmissions of its request: a client's last
/// retransmission comes 39.5 s after the first send (RFC 8489 §6.2.1).
pub const TRANSACTION_CACHE: Duration = Duration::from_secs(40);
const TRANSACTION_CACHE_ENTRIES: usize = 4;

/// A relayed transport address and the socket behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relay {
    pub handle: RelayHandle,
    /// The address the socket is bound to.
    pub addr: SocketAddr,
    /// The address advertised to the client (the public one behind NAT).
    pub advertised: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// A token bucket of bytes per second, one second deep.
///
/// Userspace asks before relaying ([`Bandwidth::take`]); traffic the kernel already forwarded
/// is charged after the fact ([`Bandwidth::charge`]) and may put the bucket in debt, at most
/// one second's worth deep (an allocation's kernel channels are read about once a second, so
/// that is what can slip past the cap before it is taken out of the kernel; older excess is
/// not held against it).
#[derive(Debug, Clone, Copy)]
pub struct Bandwidth {
    bytes_per_sec: f64,
    tokens: f64,
    at: Instant,
}

impl Bandwidth {
    pub fn new(bits_per_sec: u64, now: Instant) -> Self {
        let bytes_per_sec = bits_per_sec as f64 / 8.0;
        Self {
            bytes_per_sec,
            tokens: bytes_per_sec,
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.bytes_per_sec).min(self.bytes_per_sec);
        self.at = self.at.max(now);
    }

    /// Takes `bytes` from the budget; false (and nothing taken) if over it.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        self.refill(now);
        let bytes = bytes as f64;
        if self.tokens >= bytes {
            self.tokens -= bytes;
            true
        } else {
            false
        }
    }

    /// Charges `bytes` already relayed (by the kernel), in debt if need be.
    pub fn charge(&mut self, bytes: u64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - bytes as f64).max(-self.bytes_per_sec);
    }

    /// Over the budget: in debt.
    pub fn exceeded(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens < 0.0
    }

    /// Back to at least half a second's budget: what a throttled allocation waits for before
    /// its channels return to the kernel. (Traffic above the cap, relayed in userspace, keeps
    /// the bucket near empty, so it stays out; traffic under the cap lets it fill.)
    pub fn recovered(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.bytes_per_sec / 2.0
    }
}

#[derive(Debug)]
pub struct Allocation {
    pub tuple: FiveTuple,
    pub username: String,
    /// One relayed address, or two for a dual-stack allocation (IPv4 first).
    pub relays: Vec<Relay>,
    pub expires: Instant,
    pub permissions: HashMap<IpAddr, Instant>,
    pub channels: HashMap<u16, Channel>,
    pub channel_by_peer: HashMap<SocketAddr, u16>,
    pub bandwidth: Option<Bandwidth>,
    /// Over its bandwidth cap with traffic the kernel forwarded: its channels are out of the
    /// kernel (relayed in userspace, where the cap is enforced) until the budget recovers.
    pub throttled: bool,
    /// The Allocate transaction that created it, and its answer (RFC 8656 §7.2: a retransmitted
    /// Allocate gets the same success, another one 437).
    pub allocate_tid: TransactionId,
    pub allocate_response: Vec<u8>,
    /// A TCP relayed address (RFC 6062).
    pub tcp: bool,
    /// Its id and the traffic it relayed, for usage reports.
    pub usage: UsageState,
    responses: Vec<(TransactionId, Instant, Vec<u8>)>,
}

impl Allocation {
    pub fn new(
        tuple: FiveTuple,
        username: String,
        relays: Vec<Relay>,
        expires: Instant,
        bandwidth: Option<Bandwidth>,
        allocate_tid: TransactionId,
    ) -> Self {
        Self {
            tuple,
            username,
            relays,
            expires,
            permissions: HashMap::new(),
            channels: HashMap::new(),
            channel_by_peer: HashMap::new(),
            bandwidth,
            throttled: false,
            allocate_tid,
            allocate_response: Vec::new(),
            tcp: false,
            usage: UsageState::default(),
            responses: Vec::new(),
        }
    }

    /// The relay of the peer's family, if the allocation has one.
    pub fn relay_for(&self, peer: SocketAddr) -> Option<&Relay> {
        self.relay_for_ip(peer.ip())
    }

    /// The relay of the family of peer IP `ip` (where its permission is), if there is one.
    pub fn relay_for_ip(&self, ip: IpAddr) -> Option<&Relay> {
        self.relays
            .iter()
            .find(|r| r.addr.is_ipv4() == ip.is_ipv4())
    }

    /// Every permitted peer IP, expired or not (until [`Allocation::expire`] removes it), in
    /// order.
    pub fn permitted(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.permissions.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn has_permission(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions
            .get(&ip)
            .is_some_and(|&expires| expires > now)
    }

    /// The channel bound to `peer`, if live.
    pub fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let number = *self.channel_by_peer.get(&peer)?;
        self.channels
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|_| number)
    }

    /// The peer of a live channel.
    pub fn channel_peer(&self, number: u16, now: Instant) -> Option<SocketAddr> {
        self.channels
            .get(&number)
            .filter(|c| c.expires > now)
            .map(|c| c.peer)
    }

    /// The channels the kernel may forward: live, with a live permission for their peer (the
    /// kernel does not check permissions), and the allocation not throttled.
    pub fn offloadable(&self, now: Instant) -> Vec<(u16, SocketAddr)> {
        if self.throttled {
            return Vec::new();
        }
        let mut v: Vec<(u16, SocketAddr)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.expires > now && self.has_permission(c.peer.ip(), now))
            .map(|(&n, c)| (n, c.peer))
            .collect();
        v.sort_unstable_by_key(|&(n, _)| n);
        v
    }

    /// The permissions the kernel may use: live, and the allocation not throttled; in order.
    pub fn offloadable_permissions(&self, now: Instant) -> Vec<IpAddr> {
        if self.throttled {
            return Vec::new();
        }
        let mut v: Vec<IpAddr> = self
            .permissions
            .iter()
            .filter(|&(_, &expires)| expires > now)
            .map(|(&ip, _)| ip)
            .collect();
        v.sort_unstable();
        v
    }

    /// Takes from the bandwidth budget, if there is one.
    pub fn within_bandwidth(&mut self, bytes: usize, now: Instant) -> bool {
        self.bandwidth.as_mut().is_none_or(|b| b.take(bytes, now))
    }

    /// A response to repeat for a retransmitted request.
    pub fn cached_response(&self, tid: &TransactionId, now: Instant) -> Option<&[u8]> {
        if *tid == self.allocate_tid && !self.allocate_response.is_empty() {
            return Some(&self.allocate_response);
        }
        self.responses
            .iter()
            .find(|(t, at, _)| t == tid && now.saturating_duration_since(*at) < TRANSACTION_CACHE)
            .map(|(_, _, r)| r.as_slice())
    }

    pub fn cache_response(&mut self, tid: TransactionId, response: &[u8], now: Instant) {
        self.responses
            .retain(|(_, at, _)| now.saturating_duration_since(*at) < TRANSACTION_CACHE);
        if self.responses.len() >= TRANSACTION_CACHE_ENTRIES {
            self.responses.remove(0);
        }
        self.responses.push((tid, now, response.to_vec()));
    }

    /// Removes expired permissions and channels; returns (permissions, channels) removed, and
    /// the channels (`unbound`) and permissions (`revoked`, in order), for whoever mirrors
    /// them.
    pub fn expire(
        &mut self,
        now: Instant,
        unbound: &mut Vec<(u16, SocketAddr)>,
        revoked: &mut Vec<IpAddr>,
    ) -> (usize, usize) {
        let permissions = self.permissions.len();
        self.permissions.retain(|&ip, &mut expires| {
            if expires > now {
                true
            } else {
                revoked.push(ip);
                false
            }
        });
        revoked.sort_unstable();
        let permissions = permissions - self.permissions.len();
        let channels = self.channels.len();
        self.channels.retain(|&number, c| {
            if c.expires > now {
                true
            } else {
                unbound.push((number, c.peer));
                false
            }
        });
        for (_, peer) in unbound.iter() {
            self.channel_by_peer.remove(peer);
        }
        (permissions, channels - self.channels.len())
    }
}

/// Tells the kernel fast path that `channels` of allocation `a` are to be forwarded there
/// (`bound`, a no-op for one already there) or not any more; returns how many events.
pub(super) fn channel_events(
    events: &mut VecDeque<Event>,
    tuple: &FiveTuple,
    a: &Allocation,
    channels: &[(u16, SocketAddr)],
    bound: bool,
) -> usize {
    let mut n = 0;
    for &(channel, peer) in channels {
        let Some(&relay) = a.relay_for(peer) else {
            continue;
        };
        events.push_back(if bound {
            let expires = a.channels.get(&channel).map_or(a.expires, |c| c.expires);
            Event::ChannelBound {
                tuple: *tuple,
                channel,
                relay,
                peer,
                expires,
            }
        } else {
            Event::ChannelUnbound {
                tuple: *tuple,
                channel,
                relay,
                peer,
            }
        });
        n += 1;
    }
    n
}

/// Tells the kernel fast path that the permissions of allocation `a` for `peers` are to be
/// used there (`installed`, with their expiry; a no-op for one already there) or not any more;
/// each is on the relayed address of its peer's family. A kernel permission entry matches its IP
/// on every port, so a permission whose peers the `policy` judges per port is not installed
/// (its traffic stays in userspace, which checks the port), unless the kernel can only ever
/// see them on the right ports (`PeerPolicy::kernel_may_serve`: the relay's own relay
/// addresses, whose datagrams reach the program only as same-relay calls).
pub(super) fn permission_events(
    events: &mut VecDeque<Event>,
    tuple: &FiveTuple,
    a: &Allocation,
    peers: &[IpAddr],
    installed: bool,
    policy: &PeerPolicy,
) {
    for &peer in peers {
        let Some(&relay) = a.relay_for_ip(peer) else {
            continue;
        };
        if installed && !policy.kernel_may_serve(peer) {
            continue;
        }
        events.push_back(if installed {
            Event::PermissionInstalled {
                tuple: *tuple,
                relay,
                peer,
                expires: a.permissions.get(&peer).copied().unwrap_or(a.expires),
            }
        } else {
            Event::PermissionRemoved {
                tuple: *tuple,
                relay,
                peer,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut b = Bandwidth::new(8_000, t0); // 1000 bytes per second
        assert!(b.take(600, t0));
        assert!(!b.take(600, t0), "over the one-second budget");
        assert!(b.take(400, t0));
        assert!(!b.take(100, t0));
        assert!(b.take(500, t0 + Duration::from_millis(500)));
        assert!(
            !b.take(2000, t0 + Duration::from_secs(60)),
            "never more than one second's worth"
        );
    }

    #[test]
    fn kernel_traffic_is_charged_into_debt_and_recovers() {
        let t0 = Instant::now();
        let mut b = Bandwidth::new(8_000, t0); // 1000 bytes per second
        b.charge(600, t0);
        assert!(!b.exceeded(t0), "400 left");
        assert!(b.take(300, t0), "userspace shares the budget");
        b.charge(600, t0);
        assert!(b.exceeded(t0), "500 in debt");
        assert!(!b.take(1, t0), "nothing relayed in userspace while in debt");
        // 0.5 s repays the debt, but half a second's budget is needed to recover.
        let t1 = t0 + Duration::from_millis(600);
        assert!(!b.exceeded(t1));
        assert!(!b.recovered(t1));
        assert!(b.recovered(t0 + Duration::from_millis(1050)));
        // Debt is at most one second deep: a huge burst is repaid in 1.5 s at most.
        let t2 = t0 + Duration::from_secs(10);
        b.charge(1_000_000_000, t2);
        assert!(b.exceeded(t2));
        assert!(!b.recovered(t2 + Duration::from_millis(1400)));
        assert!(b.recovered(t2 + Duration::from_millis(1550)));
    }
}
