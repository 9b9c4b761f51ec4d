//! The maps that come in two, one per family (`CLIENT_TO_PEER`/`CLIENT_TO_PEER4`,
//! `PEER_TO_CLIENT`/`PEER_TO_CLIENT4`, `ALLOCATIONS`/`ALLOCATIONS4`,
//! `NEXT_HOPS`/`NEXT_HOPS4`): one handle each, taking the general key and writing an IPv4 key
//! in its short form to the IPv4 map (relay_common::maps::v4 says why the program wants them
//! apart). The rest of the dataplane keeps one key type and one map per kind.

use std::io;

use aya::Ebpf;
use aya::maps::{HashMap as BpfHashMap, MapData, MapError};
use relay_common::maps::Narrow;

use super::errors::map_error;
use super::take;
use crate::dataplane::DataplaneError;

/// A map of IPv6 keys and its twin of IPv4 keys in their short form.
pub(super) struct Split<K: Narrow, V> {
    /// The general map: every key that has no short form.
    wide: BpfHashMap<MapData, K, V>,
    /// The IPv4 map.
    narrow: BpfHashMap<MapData, K::V4, V>,
    /// The general map's name, then the IPv4 map's.
    names: [&'static str; 2],
}

impl<K, V> Split<K, V>
where
    K: Narrow + aya::Pod,
    K::V4: aya::Pod,
    V: aya::Pod,
{
    /// The two maps `names` (general, IPv4) of the loaded object.
    pub(super) fn take(ebpf: &mut Ebpf, names: [&'static str; 2]) -> Result<Self, DataplaneError> {
        Ok(Self {
            wide: take(ebpf, names[0])?,
            narrow: take(ebpf, names[1])?,
            names,
        })
    }

    /// The name of the map that holds `key`.
    pub(super) fn name(&self, key: &K) -> &'static str {
        self.names[usize::from(key.v4().is_some())]
    }

    pub(super) fn get(&self, key: &K, flags: u64) -> Result<V, MapError> {
        match key.v4() {
            Some(short) => self.narrow.get(&short, flags),
            None => self.wide.get(key, flags),
        }
    }

    pub(super) fn insert(&mut self, key: K, value: V, flags: u64) -> Result<(), MapError> {
        match key.v4() {
            Some(short) => self.narrow.insert(short, value, flags),
            None => self.wide.insert(key, value, flags),
        }
    }

    pub(super) fn remove(&mut self, key: &K) -> Result<(), MapError> {
        match key.v4() {
            Some(short) => self.narrow.remove(&short),
            None => self.wide.remove(key),
        }
    }

    /// Removes `key`'s entry; one already gone is no error (the wanted state).
    pub(super) fn remove_entry(&mut self, key: &K) -> Result<(), DataplaneError> {
        match self.remove(key) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(map_error(self.name(key), e)),
        }
    }
}
