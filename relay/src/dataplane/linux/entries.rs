//! The channel, permission and allocation entries of the maps (CLIENT_TO_PEER,
//! PEER_TO_CLIENT, ALLOCATIONS) and their counter slots in CHANNEL_STATS: written when proto's
//! events offload one, removed when it goes, and read back for tests and diagnostics.

use std::net::{IpAddr, SocketAddr};

use aya::maps::PerCpuValues;
use relay_common::maps::{ALLOCATIONS, CHANNEL_STATS, CLIENT_TO_PEER, NO_CHANNEL, PEER_TO_CLIENT};
use relay_common::{AllocationValue, ChannelEntries, ChannelStats, ClientKey, PeerKey, PeerValue};

use super::counters::unread;
use super::errors::{full_or, map_error, mixed};
use super::{Bound, Dataplane, Inner, PEER_ENTRIES_PER_CHANNEL};
use crate::dataplane::{
    AllocationBinding, ChannelBinding, ChannelTraffic, DataplaneError, PeerEntry, PermissionBinding,
};
use crate::proto::FiveTuple;

/// `BPF_NOEXIST`: insert only.
const NO_EXIST: u64 = 1;

impl Dataplane {
    /// What PEER_TO_CLIENT holds for datagrams from `peer` to relayed address `relay` (read
    /// from the map itself); a permission's entry is the one for peer port 0.
    pub fn peer_entry(
        &self,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> Result<Option<PeerEntry>, DataplaneError> {
        let (relay, peer) = (canonical(relay), canonical(peer));
        let key = PeerKey::new(relay.ip(), relay.port(), peer.ip(), peer.port())
            .map_err(|e| mixed(PEER_TO_CLIENT, e))?;
        let inner = self.lock();
        match inner.peer_to_client.get(&key, 0) {
            Ok(v) => {
                let (Some(client), Some(listener)) = (v.client_addr(), v.listener_addr()) else {
                    return Ok(None);
                };
                Ok(Some(PeerEntry {
                    client: SocketAddr::new(client, v.client_port()),
                    listener: SocketAddr::new(listener, v.listener_port()),
                    channel: v.channel(),
                    slot: v.counter,
                }))
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(inner.peer_to_client.name(&key), e)),
        }
    }

    /// What ALLOCATIONS holds for the client `client` talking to `listener` (read from the map
    /// itself): the relayed addresses, IPv4 first.
    pub fn allocation_entry(
        &self,
        client: SocketAddr,
        listener: SocketAddr,
    ) -> Result<Option<Vec<SocketAddr>>, DataplaneError> {
        let key = client_key(canonical(client), canonical(listener))?;
        let inner = self.lock();
        match inner.allocations.get(&key, 0) {
            Ok(v) => Ok(Some(
                [relay_common::FAMILY_IPV4, relay_common::FAMILY_IPV6]
                    .into_iter()
                    .filter_map(|family| {
                        let (bytes, port) = v.relayed(family)?;
                        Some(SocketAddr::new(
                            relay_common::maps::addr_from(family, bytes)?,
                            port,
                        ))
                    })
                    .collect(),
            )),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(inner.allocations.name(&key), e)),
        }
    }

    pub(in crate::dataplane) fn bind(
        &self,
        binding: ChannelBinding,
        tuple: FiveTuple,
    ) -> Result<(), DataplaneError> {
        let entries_for = |slot| channel_entries(&binding, slot);
        let mut inner = self.lock();
        if inner.bound.contains_key(&binding) {
            // A refresh: the entries are there and unchanged.
            return Ok(());
        }
        let peer_key = entries_for(0)?.peer_key;
        if inner.peers.contains_key(&peer_key) || inner.permission_keys.contains_key(&peer_key) {
            return Err(DataplaneError::Conflict {
                relay: binding.relay,
                peer: binding.peer,
            });
        }
        // The same channel of the same client, moved to another peer or relayed address:
        // out with the old entries first.
        let moved = inner
            .bound
            .keys()
            .find(|b| {
                b.client == binding.client
                    && b.listener == binding.listener
                    && b.channel == binding.channel
            })
            .copied();
        if let Some(old) = moved {
            // What it forwarded since the last read is left out of the allocation's usage:
            // a channel moves to another peer only when it has expired and is bound again.
            inner.remove(&old)?;
        }

        let full = DataplaneError::Full {
            max_channels: self.max_channels,
        };
        if inner.bound.len() >= self.max_channels as usize {
            return Err(full);
        }
        let slot = inner.take_slot(self.max_channels).ok_or(full)?;
        let entries = match entries_for(slot) {
            Ok(e) => e,
            Err(e) => {
                inner.free_slots.push(slot);
                return Err(e);
            }
        };
        // The next hops first, so that the channel's first packet finds them.
        let destinations = destinations(&binding);
        if let Err(e) = inner.reference(destinations, self.max_channels) {
            inner.free_slots.push(slot);
            return Err(e);
        }
        if let Err(e) = inner.write(&entries, slot, self.max_channels) {
            if let Err(undo) = inner.release(destinations) {
                tracing::debug!(err = %undo, "deleting next hops of a channel not bound");
            }
            inner.free_slots.push(slot);
            return Err(e);
        }
        inner.bound.insert(
            binding,
            Bound {
                slot,
                tuple,
                reported: Default::default(),
            },
        );
        inner.peers.insert(entries.peer_key, binding);
        Ok(())
    }

    /// Removes a channel's entries; what the kernel forwarded on it since the last read
    /// (None if it was not offloaded).
    pub(in crate::dataplane) fn unbind(
        &self,
        binding: &ChannelBinding,
    ) -> Result<Option<ChannelTraffic>, DataplaneError> {
        let mut inner = self.lock();
        if !inner.bound.contains_key(binding) {
            return Ok(None);
        }
        inner.remove(binding)
    }

    pub(in crate::dataplane) fn permit(
        &self,
        binding: PermissionBinding,
        tuple: FiveTuple,
    ) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        if inner.permitted.contains_key(&binding) {
            // A refresh: the entry is there and unchanged.
            return Ok(());
        }
        let key = permission_key(&binding)?;
        if inner.permission_keys.contains_key(&key) || inner.peers.contains_key(&key) {
            return Err(DataplaneError::Conflict {
                relay: binding.relay,
                peer: SocketAddr::new(binding.peer, 0),
            });
        }
        let full = DataplaneError::MapFull {
            what: "permission",
            max: self.max_channels,
        };
        if inner.permitted.len() >= self.max_channels as usize {
            return Err(full);
        }
        let slot = inner.take_slot(self.max_channels).ok_or(full)?;
        let value = match PeerValue::new(
            binding.listener.ip(),
            binding.listener.port(),
            binding.client.ip(),
            binding.client.port(),
            NO_CHANNEL,
            slot,
        ) {
            Ok(v) => v,
            Err(e) => {
                inner.free_slots.push(slot);
                return Err(mixed(PEER_TO_CLIENT, e));
            }
        };
        // The next hops first, so that the first indication finds them.
        let destinations = [binding.client.ip(), binding.peer];
        if let Err(e) = inner.reference(destinations, self.max_channels) {
            inner.free_slots.push(slot);
            return Err(e);
        }
        let map = inner.peer_to_client.name(&key);
        let written = inner.zero_slot(slot).and_then(|()| {
            inner
                .peer_to_client
                .insert(key, value, NO_EXIST)
                .map_err(|e| match full_or(map, e, self.max_channels) {
                    DataplaneError::Full { .. } => DataplaneError::MapFull {
                        what: "permission",
                        max: self.max_channels,
                    },
                    e => e,
                })
        });
        if let Err(e) = written {
            if let Err(undo) = inner.release(destinations) {
                tracing::debug!(err = %undo, "deleting next hops of a permission not installed");
            }
            inner.free_slots.push(slot);
            return Err(e);
        }
        inner.permitted.insert(
            binding,
            Bound {
                slot,
                tuple,
                reported: Default::default(),
            },
        );
        inner.permission_keys.insert(key, binding);
        Ok(())
    }

    /// Removes a permission's entry; what the kernel forwarded under it since the last read
    /// (None if it was not offloaded).
    pub(in crate::dataplane) fn revoke(
        &self,
        binding: &PermissionBinding,
    ) -> Result<Option<ChannelTraffic>, DataplaneError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(slot) = inner.permitted.get(binding).map(|b| b.slot) else {
            return Ok(None);
        };
        let key = permission_key(binding)?;
        inner.peer_to_client.remove_entry(&key)?;
        // Read once the entry is gone, so that nothing is counted after it.
        let last = match inner.permitted.remove(binding) {
            Some(mut bound) => Some(unread(
                &inner.channel_stats,
                ChannelTraffic::PERMISSION,
                &mut bound,
            )?),
            None => None,
        };
        inner.permission_keys.remove(&key);
        // Zeroed when it is reused.
        inner.free_slots.push(slot);
        // After the entry, which sends to them.
        inner.release([binding.client.ip(), binding.peer])?;
        Ok(last)
    }

    pub(in crate::dataplane) fn offload(
        &self,
        binding: AllocationBinding,
    ) -> Result<(), DataplaneError> {
        let key = client_key(binding.client, binding.listener)?;
        let value = AllocationValue::new(&binding.relays);
        let mut inner = self.lock();
        match inner.offloaded.get(&key) {
            // A refresh.
            Some(v) if *v == value => return Ok(()),
            // The same 5-tuple with other relayed addresses: written over.
            Some(_) => {}
            None if inner.offloaded.len() >= self.max_channels as usize => {
                return Err(DataplaneError::MapFull {
                    what: "allocation",
                    max: self.max_channels,
                });
            }
            None => {}
        }
        let map = inner.allocations.name(&key);
        inner.allocations.insert(key, value, 0).map_err(|e| {
            match full_or(map, e, self.max_channels) {
                DataplaneError::Full { .. } => DataplaneError::MapFull {
                    what: "allocation",
                    max: self.max_channels,
                },
                e => e,
            }
        })?;
        inner.offloaded.insert(key, value);
        Ok(())
    }

    pub(in crate::dataplane) fn unload(
        &self,
        binding: &AllocationBinding,
    ) -> Result<(), DataplaneError> {
        let key = client_key(binding.client, binding.listener)?;
        let mut inner = self.lock();
        if inner.offloaded.contains_key(&key) {
            inner.allocations.remove_entry(&key)?;
            inner.offloaded.remove(&key);
        }
        Ok(())
    }
}

impl Inner {
    /// A free counter slot (of `max_channels` times [`PEER_ENTRIES_PER_CHANNEL`]).
    fn take_slot(&mut self, max_channels: u32) -> Option<u32> {
        if let Some(slot) = self.free_slots.pop() {
            return Some(slot);
        }
        if self.next_slot < max_channels.saturating_mul(PEER_ENTRIES_PER_CHANNEL) {
            self.next_slot += 1;
            return Some(self.next_slot - 1);
        }
        None
    }

    /// Zeroes a counter slot, for its new channel or permission.
    fn zero_slot(&mut self, slot: u32) -> Result<(), DataplaneError> {
        let zeroes = PerCpuValues::try_from(vec![ChannelStats::default(); self.cpus])
            .map_err(|e| map_error(CHANNEL_STATS, e))?;
        self.channel_stats
            .set(slot, zeroes, 0)
            .map_err(|e| map_error(CHANNEL_STATS, e))
    }

    /// Writes a channel's entries: counters zeroed, then peer-to-client, then client-to-peer.
    /// On error the maps are as before.
    fn write(
        &mut self,
        entries: &ChannelEntries,
        slot: u32,
        max_channels: u32,
    ) -> Result<(), DataplaneError> {
        self.zero_slot(slot)?;
        self.peer_to_client
            .insert(entries.peer_key, entries.peer_value, NO_EXIST)
            .map_err(|e| full_or(self.peer_to_client.name(&entries.peer_key), e, max_channels))?;
        if let Err(e) =
            self.client_to_peer
                .insert(entries.channel_key, entries.channel_value, NO_EXIST)
        {
            let _ = self.peer_to_client.remove(&entries.peer_key);
            let map = self.client_to_peer.name(&entries.channel_key);
            return Err(full_or(map, e, max_channels));
        }
        Ok(())
    }

    /// Removes a bound channel's entries (its traffic stays in TOTAL_STATS).
    fn remove(
        &mut self,
        binding: &ChannelBinding,
    ) -> Result<Option<ChannelTraffic>, DataplaneError> {
        let Some(slot) = self.bound.get(binding).map(|b| b.slot) else {
            return Ok(None);
        };
        let entries = channel_entries(binding, slot)?;
        // Client-to-peer first, the reverse of `write`.
        self.client_to_peer.remove_entry(&entries.channel_key)?;
        self.peer_to_client.remove_entry(&entries.peer_key)?;
        // Read once the entries are gone, so that nothing is counted after it.
        let last = match self.bound.remove(binding) {
            Some(mut bound) => Some(unread(&self.channel_stats, binding.channel, &mut bound)?),
            None => None,
        };
        self.peers.remove(&entries.peer_key);
        // Zeroed when it is reused (`write`).
        self.free_slots.push(slot);
        // After the channel's entries, which send to them.
        self.release(destinations(binding))?;
        Ok(last)
    }
}

/// The addresses a channel sends to: its client's (peer to client) and its peer's.
fn destinations(binding: &ChannelBinding) -> [IpAddr; 2] {
    [binding.client.ip(), binding.peer.ip()]
}

/// The map entries of a channel binding, counting into stats slot `slot`.
fn channel_entries(binding: &ChannelBinding, slot: u32) -> Result<ChannelEntries, DataplaneError> {
    ChannelEntries::new(
        binding.client,
        binding.listener,
        binding.channel,
        binding.relay,
        binding.peer,
        slot,
    )
    // Client and listener come from one 5-tuple, relay and peer from one allocation family:
    // this cannot fail, but an error is better than a panic.
    .map_err(|e| DataplaneError::Map {
        map: CLIENT_TO_PEER,
        source: e.to_string().into(),
    })
}

/// The PEER_TO_CLIENT key of a permission: its relayed address, the peer's IP, port 0.
fn permission_key(binding: &PermissionBinding) -> Result<PeerKey, DataplaneError> {
    // `PermissionBinding::new` checked the families: this cannot fail, but an error is better
    // than a panic.
    PeerKey::permission(binding.relay.ip(), binding.relay.port(), binding.peer)
        .map_err(|e| mixed(PEER_TO_CLIENT, e))
}

/// The ALLOCATIONS key of a client's 5-tuple.
fn client_key(client: SocketAddr, listener: SocketAddr) -> Result<ClientKey, DataplaneError> {
    ClientKey::new(client.ip(), client.port(), listener.ip(), listener.port())
        .map_err(|e| mixed(ALLOCATIONS, e))
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}
