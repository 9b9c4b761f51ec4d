//! Caps on open TCP and TLS client connections, per source and in total, shared by every
//! worker (the kernel spreads one source's connections over all of them).
//!
//! A connection is admitted when it is accepted, before a TLS handshake or a byte of STUN, and
//! holds an [`Admitted`] until it closes. One over a cap is closed at once: the cheapest answer
//! to a flood of connections is none. Sources are counted by address, and IPv6 sources by /64,
//! the smallest network a host is usually given: counting single IPv6 addresses would let one
//! host open connections from as many addresses as it likes. RFC 6062 data connections count
//! like any other: they are client connections too.
//!
//! What a flood of connections took goes back to the system once they have closed: glibc keeps
//! freed memory in its arenas (one per worker thread) for later, and returns little of it by
//! itself, so after many connections have closed [`Admission::trim_after_flood`] asks it to
//! give the free pages back (`malloc_trim`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::lock;
use crate::metrics::ConnectionLimit;
use crate::proto::StreamLimits;

/// After this many connections have closed, free memory is given back to the system.
const TRIM_AFTER_CLOSED: u32 = 256;

/// Refusals are logged at most this often (with how many there were since the last line).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Open client connections by source, and in total.
#[derive(Debug, Default)]
pub struct Admission {
    inner: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    by_source: HashMap<IpAddr, u32>,
    total: u32,
    /// Refused since the last warning, and when that was.
    refused: u64,
    warned: Option<Instant>,
    /// Closed since memory was last given back.
    closed: u32,
}

/// One admitted connection: counted until dropped.
#[derive(Debug)]
pub(super) struct Admitted {
    admission: Arc<Admission>,
    source: IpAddr,
}

/// The address a source is counted by: IPv4 (an IPv4-mapped IPv6 address included) as it is,
/// IPv6 by its /64.
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

impl Admission {
    /// Counts a connection from `ip` unless it is over a cap of `limits`: which one, then.
    pub(super) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: &StreamLimits,
    ) -> Result<Admitted, ConnectionLimit> {
        let source = source_key(ip);
        let mut counts = lock(&self.inner);
        let from_source = counts.by_source.get(&source).copied().unwrap_or(0);
        let over = if limits.total != 0 && counts.total >= limits.total {
            Some(ConnectionLimit::Total)
        } else if limits.per_source != 0 && from_source >= limits.per_source {
            Some(ConnectionLimit::PerSource)
        } else {
            None
        };
        if let Some(limit) = over {
            counts.refused += 1;
            let now = Instant::now();
            if counts
                .warned
                .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
            {
                let (cap, setting) = match limit {
                    ConnectionLimit::PerSource => {
                        (limits.per_source, "--max-tcp-connections-per-ip")
                    }
                    ConnectionLimit::Total => (limits.total, "--max-tcp-connections"),
                };
                tracing::warn!(
                    %source,
                    limit = limit.as_str(),
                    cap,
                    refused = counts.refused,
                    "refusing TCP/TLS connections over the cap ({setting}); counted in \
                     xdpturn_connections_refused_total"
                );
                counts.warned = Some(now);
                counts.refused = 0;
            }
            return Err(limit);
        }
        *counts.by_source.entry(source).or_insert(0) += 1;
        counts.total += 1;
        Ok(Admitted {
            admission: self.clone(),
            source,
        })
    }

    /// Gives free memory back to the system once [`TRIM_AFTER_CLOSED`] connections have closed
    /// since it last did and fewer than half of those are open: a flood is over. Called once a
    /// second by every worker; one of them does it.
    pub(super) fn trim_after_flood(&self) {
        {
            let mut counts = lock(&self.inner);
            if counts.closed < TRIM_AFTER_CLOSED || counts.total > counts.closed / 2 {
                return;
            }
            counts.closed = 0;
        }
        give_back_free_memory();
    }

    /// Open connections from `ip`'s source, and in total.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> (u32, u32) {
        let counts = lock(&self.inner);
        let from = counts.by_source.get(&source_key(ip)).copied().unwrap_or(0);
        (from, counts.total)
    }
}

/// Asks the allocator to return its free pages to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own arenas, under their locks; it takes and
    // returns plain integers and touches no memory of ours.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released, "free memory given back after connections closed");
}

/// Other allocators (musl's) return freed memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_free_memory() {}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = lock(&self.admission.inner);
        counts.total = counts.total.saturating_sub(1);
        counts.closed = counts.closed.saturating_add(1);
        if let Some(n) = counts.by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                counts.by_source.remove(&self.source);
                // A flood from many sources leaves a large table behind: give it back.
                let map = &mut counts.by_source;
                if map.capacity() > 64 && map.len() < map.capacity() / 4 {
                    map.shrink_to(map.len() * 2);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_source: u32, total: u32) -> StreamLimits {
        StreamLimits {
            per_source,
            total,
            ..StreamLimits::default()
        }
    }

    #[test]
    fn caps_per_source_and_in_total_and_releases_on_drop() {
        let a = Arc::new(Admission::default());
        let l = limits(2, 3);
        let one: IpAddr = "192.0.2.1".parse().expect("ip");
        let two: IpAddr = "192.0.2.2".parse().expect("ip");
        let first = a.admit(one, &l).expect("first");
        let _second = a.admit(one, &l).expect("second");
        assert_eq!(a.admit(one, &l).err(), Some(ConnectionLimit::PerSource));
        let _third = a.admit(two, &l).expect("another source");
        assert_eq!(a.admit(two, &l).err(), Some(ConnectionLimit::Total));
        drop(first);
        assert_eq!(a.open(one), (1, 2));
        a.admit(one, &l).expect("room again");
    }

    #[test]
    fn zero_is_unlimited() {
        let a = Arc::new(Admission::default());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let held: Vec<_> = (0..100)
            .map(|_| a.admit(ip, &limits(0, 0)).expect("no cap"))
            .collect();
        assert_eq!(a.open(ip), (100, 100));
        drop(held);
        assert_eq!(a.open(ip), (0, 0));
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let a = Arc::new(Admission::default());
        let l = limits(1, 0);
        let _x = a
            .admit("2001:db8:1:2::1".parse().expect("ip"), &l)
            .expect("first");
        assert_eq!(
            a.admit("2001:db8:1:2:ffff::9".parse().expect("ip"), &l)
                .err(),
            Some(ConnectionLimit::PerSource)
        );
        a.admit("2001:db8:1:3::1".parse().expect("ip"), &l)
            .expect("another /64");
        let _v4 = a.admit("192.0.2.7".parse().expect("ip"), &l).expect("v4");
        assert_eq!(
            a.admit("::ffff:192.0.2.7".parse().expect("ip"), &l).err(),
            Some(ConnectionLimit::PerSource)
        );
    }
}
