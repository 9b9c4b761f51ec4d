//! What every shard shares (one [`Ledger`] for all of them): the quota counts of allocations,
//! in total and per user, EVEN-PORT reservations, RFC 6062 peer data connections, and the
//! budget of failed authentications per source (one for all workers, so that it does not grow
//! with their number).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use super::auth::FailureLimiter;
use super::{QuotaKind, Quotas, tcp};

/// What every shard shares: total allocations, allocations per user, and reservations (an
/// Allocate with a RESERVATION-TOKEN may land on another shard than the one that made it).
#[derive(Debug, Default)]
pub struct Ledger {
    total: AtomicU32,
    per_user: Mutex<HashMap<String, u32>>,
    reservations: Mutex<HashMap<[u8; 8], (SocketAddr, Instant)>>,
    /// RFC 6062 peer data connections by connection id.
    pub(super) tcp_connections: Mutex<HashMap<u32, tcp::TcpConnection>>,
    pub(super) next_connection_id: AtomicU32,
    /// Failed authentications per source, for every shard.
    pub(super) failures: FailureLimiter,
    /// The last allocation id given (0: none yet).
    last_allocation_id: AtomicU64,
}

impl Ledger {
    /// A ledger whose failure limiter is `failures` (the default one is the relay's).
    pub fn with_failure_limiter(failures: FailureLimiter) -> Self {
        Self {
            failures,
            ..Self::default()
        }
    }

    /// A new allocation id, unique among this relay's allocations and, being counted from the
    /// wall-clock time of the first one (`unix_now` seconds, times a million), across its
    /// restarts too: coturn's session ids in usage reports are 18 digits, and these fit.
    pub fn allocation_id(&self, unix_now: u64) -> u64 {
        let first = unix_now.saturating_mul(1_000_000);
        let _ =
            self.last_allocation_id
                .compare_exchange(0, first, Ordering::AcqRel, Ordering::Acquire);
        self.last_allocation_id.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn reserve(&self, token: [u8; 8], addr: SocketAddr, expires: Instant) {
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, (addr, expires));
    }

    /// The reserved address for `token`, once, if it has not expired.
    pub fn take_reservation(&self, token: &[u8; 8], now: Instant) -> Option<SocketAddr> {
        let mut r = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        match r.remove(token) {
            Some((addr, expires)) if expires > now => Some(addr),
            Some((addr, expires)) => {
                // Expired but not yet swept: put it back for the sweep to release.
                r.insert(*token, (addr, expires));
                None
            }
            None => None,
        }
    }

    /// Removes the reservations expired at `now`, returning their addresses.
    pub fn expire_reservations(&self, now: Instant) -> Vec<SocketAddr> {
        let mut expired = Vec::new();
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (addr, expires)| {
                let keep = *expires > now;
                if !keep {
                    expired.push(*addr);
                }
                keep
            });
        expired
    }

    /// Takes one allocation for `user` within the quotas.
    pub fn acquire(&self, user: &str, quotas: &Quotas) -> Result<(), QuotaKind> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if quotas.total != 0 && total > quotas.total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaKind::Total);
        }
        let mut users = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = users.entry(user.to_owned()).or_insert(0);
        if quotas.per_user != 0 && *count >= quotas.per_user {
            drop(users);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaKind::User);
        }
        *count += 1;
        Ok(())
    }

    pub fn release(&self, user: &str) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut users = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                users.remove(user);
            }
        }
    }

    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }
}
