//! proto's channel, permission and allocation events applied to the maps: each event's
//! binding is taken ([`ChannelBinding`], [`PermissionBinding`], [`AllocationBinding`]) and
//! handed to the dataplane of this system (Linux, or the stub elsewhere).

use std::net::{IpAddr, SocketAddr};

use super::{
    AllocationBinding, ChannelBinding, ChannelTraffic, Dataplane, DataplaneError, PermissionBinding,
};
use crate::proto::allocation::Relay;
use crate::proto::{Event, FiveTuple};

impl Dataplane {
    /// Applies a channel, permission or allocation event (the others are ignored):
    /// `ChannelBound` binds, `ChannelUnbound` unbinds, `PermissionInstalled` and
    /// `AllocationInstalled` install, `PermissionRemoved` and `AllocationRemoved` remove. This
    /// is the one place the event loop needs to call. A removal returns what the kernel
    /// forwarded on the channel or under the permission since [`Dataplane::take_traffic`] last
    /// read it.
    pub fn apply(&self, event: &Event) -> Result<Option<ChannelTraffic>, DataplaneError> {
        let none = |r: Result<(), DataplaneError>| r.map(|()| None);
        match event {
            Event::ChannelBound {
                tuple,
                channel,
                relay,
                peer,
                ..
            } => none(self.bind_channel(tuple, *channel, relay, *peer)),
            Event::ChannelUnbound {
                tuple,
                channel,
                relay,
                peer,
            } => self.unbind_channel(tuple, *channel, relay, *peer),
            Event::PermissionInstalled {
                tuple, relay, peer, ..
            } => none(self.install_permission(tuple, relay, *peer)),
            Event::PermissionRemoved { tuple, relay, peer } => {
                self.remove_permission(tuple, relay, *peer)
            }
            Event::AllocationInstalled { tuple, relays } => {
                none(self.install_allocation(tuple, relays))
            }
            Event::AllocationRemoved { tuple } => none(self.remove_allocation(tuple)),
            _ => Ok(None),
        }
    }

    /// Offloads a permission's Send and Data indications (`Event::PermissionInstalled`; a
    /// refresh of one already there changes nothing). On error the maps are as before and
    /// the indications are relayed in userspace.
    pub fn install_permission(
        &self,
        tuple: &FiveTuple,
        relay: &Relay,
        peer: IpAddr,
    ) -> Result<(), DataplaneError> {
        self.permit(PermissionBinding::new(tuple, relay, peer)?, *tuple)
    }

    /// Removes a permission (`Event::PermissionRemoved`); its counts are kept in the totals,
    /// and what it forwarded since the last read is returned. One that was not offloaded is not
    /// an error.
    pub fn remove_permission(
        &self,
        tuple: &FiveTuple,
        relay: &Relay,
        peer: IpAddr,
    ) -> Result<Option<ChannelTraffic>, DataplaneError> {
        match PermissionBinding::new(tuple, relay, peer) {
            Ok(binding) => self.revoke(&binding),
            Err(DataplaneError::Transport(_) | DataplaneError::Address { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Offloads an allocation's Send indications (`Event::AllocationInstalled`; a refresh
    /// changes nothing). On error the maps are as before.
    pub fn install_allocation(
        &self,
        tuple: &FiveTuple,
        relays: &[Relay],
    ) -> Result<(), DataplaneError> {
        self.offload(AllocationBinding::new(tuple, relays)?)
    }

    /// Removes an allocation (`Event::AllocationRemoved`). One that was not offloaded is not
    /// an error.
    pub fn remove_allocation(&self, tuple: &FiveTuple) -> Result<(), DataplaneError> {
        match AllocationBinding::new(tuple, &[]) {
            Ok(binding) => self.unload(&binding),
            Err(DataplaneError::Transport(_) | DataplaneError::Address { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Offloads a channel (`Event::ChannelBound`; a refresh of a bound channel changes
    /// nothing). On error the maps are as before and the channel is relayed in userspace.
    pub fn bind_channel(
        &self,
        tuple: &FiveTuple,
        channel: u16,
        relay: &Relay,
        peer: SocketAddr,
    ) -> Result<(), DataplaneError> {
        self.bind(ChannelBinding::new(tuple, channel, relay, peer)?, *tuple)
    }

    /// Removes a channel (`Event::ChannelUnbound`); its counts are kept in the totals, and
    /// what it forwarded since the last read is returned. A channel that was not offloaded is
    /// not an error.
    pub fn unbind_channel(
        &self,
        tuple: &FiveTuple,
        channel: u16,
        relay: &Relay,
        peer: SocketAddr,
    ) -> Result<Option<ChannelTraffic>, DataplaneError> {
        match ChannelBinding::new(tuple, channel, relay, peer) {
            Ok(binding) => self.unbind(&binding),
            // Never offloaded, so nothing to remove.
            Err(DataplaneError::Transport(_) | DataplaneError::Address { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
