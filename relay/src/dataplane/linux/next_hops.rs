//! NEXT_HOPS, kept in line with the kernel's route, link and neighbour tables: each address a
//! channel or permission sends to is resolved ([`crate::dataplane::nexthop`]) when it is first
//! referenced, again when an announcement concerns it, and every second from a thread of the
//! dataplane's own; its entry goes when the last reference does.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Weak;
use std::time::{Duration, Instant};

use relay_common::NextHopKey;

use super::errors::{full_or, map_error};
use super::{Dataplane, Inner, Shared};
use crate::dataplane::nexthop::{Changes, Events, Resolution, Via};
use crate::dataplane::{DataplaneError, NextHop, NextHopChanges};

/// Every destination is resolved again this often (besides when the kernel announces a change
/// that may concern it): no next hop stays wrong for longer.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// While announcements arrive, the periodic refresh (then a safety net, and what notices path
/// MTU changes, which are not announced) takes at most 1/20 of a core: about 5 µs per
/// destination, so above some 10,000 destinations it comes less often than every second.
const REFRESH_SHARE: u32 = 20;
/// How long announcements are collected after the first of a burst before resolving again.
const SETTLE: Duration = Duration::from_millis(20);
/// The least time between two refreshes of every destination: route and link announcements
/// can come in long bursts (an interface with many routes going down, containers coming and
/// going), and each refresh asks the kernel about every destination.
const FULL_REFRESH_GAP: Duration = Duration::from_millis(100);

/// An address bound channels send to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Destination {
    /// How many channel directions and permission directions send to it. At zero it is
    /// deleted; it stays here only if
    /// deleting its entry failed, for the next refresh to try again.
    refs: u32,
    /// Unique to this addition of the address: a refresh that resolved an earlier one does not
    /// write over a later one's entry.
    stamp: u64,
    /// Where its route led when last resolved: announcements about that neighbour concern it.
    via: Option<Via>,
    /// What NEXT_HOPS holds for it.
    hop: Option<NextHop>,
}

impl Dataplane {
    /// Resolves every destination of the bound channels again (their route, interface and
    /// neighbour) and brings NEXT_HOPS in line: entries whose next hop changed are rewritten,
    /// those that no longer resolve are deleted, those that now do are added. The dataplane
    /// does this itself once a second (see `REFRESH_SHARE`), and at once when the kernel
    /// announces a route, link or neighbour change; this is for callers that changed something
    /// and cannot wait. If
    /// resolving fails (twice), every entry is deleted: their packets go up to userspace,
    /// which is always right, until a refresh works again.
    pub fn refresh_next_hops(&self) -> Result<NextHopChanges, DataplaneError> {
        self.shared.refresh(None)
    }

    /// What NEXT_HOPS holds for `dst` (read from the map itself).
    pub fn next_hop(&self, dst: IpAddr) -> Result<Option<NextHop>, DataplaneError> {
        let (inner, key) = (self.lock(), NextHopKey::new(dst));
        match inner.next_hops.get(&key, 0) {
            Ok(v) => Ok(Some(NextHop::from_value(&v))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(inner.next_hops.name(&key), e)),
        }
    }
}

impl Shared {
    /// Resolves the destinations again, all of them or those whose route leads through one
    /// of `vias`, and updates NEXT_HOPS where the answer changed. Resolving happens outside
    /// the map lock, so binds do not wait for it.
    fn refresh(&self, vias: Option<&[Via]>) -> Result<NextHopChanges, DataplaneError> {
        let mut resolver = self.refresher.lock().unwrap_or_else(|p| p.into_inner());
        let vias: Option<HashSet<&Via>> = vias.map(|v| v.iter().collect());
        let wanted: Vec<(IpAddr, u64)> = self
            .lock()
            .destinations
            .iter()
            .filter(|(_, d)| match &vias {
                None => true,
                Some(vias) => d.via.is_some_and(|v| vias.contains(&v)),
            })
            .map(|(addr, d)| (*addr, d.stamp))
            .collect();
        if wanted.is_empty() {
            return Ok(NextHopChanges::default());
        }
        let addrs: Vec<IpAddr> = wanted.iter().map(|(addr, _)| *addr).collect();
        // Once more on error: an interrupted exchange leaves nothing behind (answers to it are
        // told apart by their sequence number).
        let resolved = resolver
            .resolve_all(&addrs)
            .or_else(|_| resolver.resolve_all(&addrs));
        let mut inner = self.lock();
        match resolved {
            Ok(resolved) => {
                let changes = inner.apply(&wanted, &resolved);
                drop(inner);
                // The program's packets leave the kernel's neighbour entries unconfirmed: have
                // the kernel confirm the stale ones it holds as its own sends would.
                let stale: HashSet<Via> = resolved
                    .iter()
                    .filter(|r| r.stale && r.hop.is_some())
                    .filter_map(|r| r.via)
                    .collect();
                for via in stale {
                    if let Err(e) = resolver.use_neighbour(via) {
                        tracing::debug!(err = %e, ?via, "marking a neighbour used");
                    }
                }
                changes
            }
            Err(e) => {
                // When unsure, delete: the packets go up, which is always right.
                let none = vec![Resolution::default(); wanted.len()];
                let _ = inner.apply(&wanted, &none);
                Err(DataplaneError::NextHop(e))
            }
        }
    }
}

/// The next-hop thread: resolves every destination again each [`REFRESH_EVERY`] (less often
/// with very many, see [`REFRESH_SHARE`]), and those a route, link or neighbour announcement
/// concerns as soon as it arrives (after a short [`SETTLE`], so that a burst costs one
/// refresh). Stops when the dataplane is gone. Errors are
/// logged once, and once more when refreshing works again.
pub(super) fn keep_next_hops(shared: Weak<Shared>, mut events: Option<Events>) {
    let mut next_full = Instant::now() + REFRESH_EVERY;
    let mut last_full = Instant::now();
    let mut failing = false;
    loop {
        let mut changes = Changes::default();
        let wait = next_full.saturating_duration_since(Instant::now());
        match &mut events {
            Some(announced) => {
                let waited = announced.wait(wait, &mut changes).and_then(|read| {
                    if read {
                        announced.wait(SETTLE, &mut changes)?;
                    }
                    // Everything again, but not more often than every FULL_REFRESH_GAP: what
                    // is announced meanwhile joins this refresh.
                    while changes.all
                        && let Some(left) =
                            (last_full + FULL_REFRESH_GAP).checked_duration_since(Instant::now())
                        && !left.is_zero()
                    {
                        announced.wait(left, &mut changes)?;
                    }
                    Ok(())
                });
                if let Err(e) = waited {
                    tracing::warn!(
                        err = %e,
                        "reading route and neighbour changes failed: the XDP next hops follow \
                         them within a second from now on"
                    );
                    events = None;
                }
            }
            None => std::thread::sleep(wait),
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let result = if changes.all || Instant::now() >= next_full {
            last_full = Instant::now();
            let result = shared.refresh(None);
            let period = match events {
                Some(_) => REFRESH_EVERY.max(last_full.elapsed() * REFRESH_SHARE),
                None => REFRESH_EVERY,
            };
            next_full = last_full + period;
            result
        } else if changes.any() {
            shared.refresh(Some(&changes.neighbours))
        } else {
            continue;
        };
        drop(shared);
        match result {
            Ok(changed) => {
                if failing {
                    tracing::info!("resolving the XDP next hops works again");
                    failing = false;
                }
                if changed != NextHopChanges::default() {
                    tracing::debug!(?changed, "XDP next hops updated");
                }
            }
            Err(e) if !failing => {
                tracing::warn!(
                    err = %e,
                    "resolving the XDP next hops failed: their packets are relayed in userspace \
                     until it works again"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

impl Inner {
    /// Counts a reference to each of `dsts` (the addresses a channel sends to), resolving the
    /// next hop of each new one and writing it into NEXT_HOPS when it has one. On error
    /// nothing has changed. A failure to resolve is not one: the entry is added by a refresh
    /// once resolving works (logged once).
    pub(super) fn reference(
        &mut self,
        dsts: [IpAddr; 2],
        max_channels: u32,
    ) -> Result<(), DataplaneError> {
        let mut new: Vec<IpAddr> = dsts
            .into_iter()
            .filter(|d| !self.destinations.contains_key(d))
            .collect();
        new.dedup();
        let resolved = if new.is_empty() {
            Vec::new()
        } else {
            match self.resolver.resolve_all(&new) {
                Ok(resolved) => {
                    if self.resolve_failing {
                        tracing::info!("resolving the XDP next hops works again");
                        self.resolve_failing = false;
                    }
                    resolved
                }
                Err(e) => {
                    if !self.resolve_failing {
                        tracing::warn!(
                            err = %e,
                            "resolving the next hops of a bound channel failed: its packets go \
                             up to userspace until a refresh resolves them"
                        );
                        self.resolve_failing = true;
                    }
                    vec![Resolution::default(); new.len()]
                }
            }
        };
        for (i, (addr, resolution)) in new.iter().zip(&resolved).enumerate() {
            if let Some(hop) = resolution.hop
                && let Err(e) = self
                    .next_hops
                    .insert(NextHopKey::new(*addr), hop.value(), 0)
            {
                // Out with the ones added before it.
                for added in &new[..i] {
                    if let Some(d) = self.destinations.remove(added)
                        && d.hop.is_some()
                    {
                        let _ = self.next_hops.remove_entry(&NextHopKey::new(*added));
                    }
                }
                let map = self.next_hops.name(&NextHopKey::new(*addr));
                return Err(full_or(map, e, max_channels));
            }
            self.next_stamp += 1;
            self.destinations.insert(
                *addr,
                Destination {
                    refs: 0,
                    stamp: self.next_stamp,
                    via: resolution.via,
                    hop: resolution.hop,
                },
            );
        }
        for addr in dsts {
            if let Some(d) = self.destinations.get_mut(&addr) {
                d.refs += 1;
            }
        }
        Ok(())
    }

    /// Drops a reference to each of `dsts`; the last one deletes the destination's entry.
    pub(super) fn release(&mut self, dsts: [IpAddr; 2]) -> Result<(), DataplaneError> {
        let mut result = Ok(());
        for addr in dsts {
            let Some(d) = self.destinations.get_mut(&addr) else {
                continue;
            };
            d.refs = d.refs.saturating_sub(1);
            if d.refs > 0 {
                continue;
            }
            if d.hop.is_some()
                && let Err(e) = self.next_hops.remove_entry(&NextHopKey::new(addr))
            {
                // Kept, unreferenced, for the next refresh to delete.
                result = result.and(Err(e));
                continue;
            }
            self.destinations.remove(&addr);
        }
        result
    }

    /// Writes what resolving `wanted` (address and stamp of each destination, when the refresh
    /// began) found, where it differs from what NEXT_HOPS holds; destinations since removed or
    /// added again are left alone, and unreferenced ones are deleted. An entry that cannot be
    /// written is deleted.
    fn apply(
        &mut self,
        wanted: &[(IpAddr, u64)],
        resolved: &[Resolution],
    ) -> Result<NextHopChanges, DataplaneError> {
        let mut changes = NextHopChanges::default();
        let mut result = Ok(());
        for ((addr, stamp), resolution) in wanted.iter().zip(resolved) {
            let Some(d) = self.destinations.get_mut(addr) else {
                continue;
            };
            if d.stamp != *stamp {
                continue;
            }
            let hop = if d.refs == 0 { None } else { resolution.hop };
            d.via = resolution.via;
            if d.hop != hop {
                let key = NextHopKey::new(*addr);
                let written = match hop {
                    Some(h) => self
                        .next_hops
                        .insert(key, h.value(), 0)
                        .map_err(|e| map_error(self.next_hops.name(&key), e)),
                    None => self.next_hops.remove_entry(&key),
                };
                match written {
                    Ok(()) => {
                        match (d.hop, hop) {
                            (None, Some(_)) => changes.added += 1,
                            (Some(_), Some(_)) => changes.updated += 1,
                            _ => changes.removed += 1,
                        }
                        d.hop = hop;
                    }
                    Err(e) => {
                        if hop.is_some() && self.next_hops.remove_entry(&key).is_ok() {
                            if d.hop.is_some() {
                                changes.removed += 1;
                            }
                            d.hop = None;
                        }
                        result = result.and(Err(e));
                    }
                }
            }
            if d.refs == 0 && d.hop.is_none() {
                self.destinations.remove(addr);
            }
        }
        result.map(|()| changes)
    }
}
