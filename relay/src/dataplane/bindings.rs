//! Channels, permissions and allocations as the kernel maps hold them: taken from proto's
//! events (UDP only, specified addresses, IPv4-mapped addresses as IPv4), and a
//! PEER_TO_CLIENT entry as read back.

use std::net::{IpAddr, SocketAddr};

use super::DataplaneError;
use crate::proto::allocation::Relay;
use crate::proto::{FiveTuple, Transport};

/// One channel, as the maps hold it: ChannelData from `client` to `listener` on `channel` goes
/// from `relay` (the relayed address the socket is bound to, not the advertised one) to `peer`,
/// and the peer's datagrams to `relay` go back from `listener` to `client`. Families may differ
/// between the two sides. IPv4-mapped IPv6 addresses are taken as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelBinding {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    pub channel: u16,
    pub relay: SocketAddr,
    pub peer: SocketAddr,
}

impl ChannelBinding {
    /// The binding of a channel from what `Event::ChannelBound` / `ChannelUnbound` carry.
    /// Fails for channels the kernel cannot serve: not UDP, or an unspecified address.
    pub fn new(
        tuple: &FiveTuple,
        channel: u16,
        relay: &Relay,
        peer: SocketAddr,
    ) -> Result<Self, DataplaneError> {
        if tuple.transport != Transport::Udp {
            return Err(DataplaneError::Transport(tuple.transport));
        }
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let binding = ChannelBinding {
            client: canonical(tuple.client),
            listener: canonical(tuple.server),
            channel,
            relay: canonical(relay.addr),
            peer: canonical(peer),
        };
        for (what, addr) in [
            ("listener address", binding.listener),
            ("relayed address", binding.relay),
            ("client address", binding.client),
            ("peer address", binding.peer),
        ] {
            if addr.ip().is_unspecified() {
                return Err(DataplaneError::Address { what, addr });
            }
        }
        Ok(binding)
    }
}

/// One permission, as the maps hold it: datagrams from any port of `peer` to `relay` (the
/// relayed address the socket is bound to, of the peer's family) go to `client` from `listener`
/// as Data indications, and the client's Send indications to `peer` leave from `relay`.
/// IPv4-mapped IPv6 addresses are taken as IPv4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermissionBinding {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    pub relay: SocketAddr,
    pub peer: IpAddr,
}

impl PermissionBinding {
    /// The binding of a permission from what `Event::PermissionInstalled` /
    /// `PermissionRemoved` carry. Fails for permissions the kernel cannot serve: not UDP, an
    /// unspecified address, or a relayed address of another family than the peer's.
    pub fn new(tuple: &FiveTuple, relay: &Relay, peer: IpAddr) -> Result<Self, DataplaneError> {
        let (client, listener) = udp_tuple(tuple)?;
        let relay = canonical(relay.addr);
        let peer = peer.to_canonical();
        unspecified("relayed address", relay)?;
        unspecified("peer address", SocketAddr::new(peer, 0))?;
        if relay.is_ipv4() != peer.is_ipv4() {
            return Err(DataplaneError::Address {
                what: "relayed address of another family than the peer's",
                addr: relay,
            });
        }
        Ok(PermissionBinding {
            client,
            listener,
            relay,
            peer,
        })
    }
}

/// One allocation, as ALLOCATIONS holds it: Send indications from `client` to `listener` leave
/// from the relayed address of the peer's family among `relays`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllocationBinding {
    pub client: SocketAddr,
    pub listener: SocketAddr,
    /// The bound relayed addresses, at most one per family.
    pub relays: Vec<SocketAddr>,
}

impl AllocationBinding {
    /// The binding of an allocation from what `Event::AllocationInstalled` carries. Fails for
    /// allocations the kernel cannot serve: not UDP (RFC 6062 TCP allocations never are), or
    /// an unspecified address.
    pub fn new(tuple: &FiveTuple, relays: &[Relay]) -> Result<Self, DataplaneError> {
        let (client, listener) = udp_tuple(tuple)?;
        let relays: Vec<SocketAddr> = relays.iter().map(|r| canonical(r.addr)).collect();
        for r in &relays {
            unspecified("relayed address", *r)?;
        }
        Ok(AllocationBinding {
            client,
            listener,
            relays,
        })
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The client and listener of a 5-tuple the kernel can match: UDP, specified addresses.
fn udp_tuple(tuple: &FiveTuple) -> Result<(SocketAddr, SocketAddr), DataplaneError> {
    if tuple.transport != Transport::Udp {
        return Err(DataplaneError::Transport(tuple.transport));
    }
    let (client, listener) = (canonical(tuple.client), canonical(tuple.server));
    unspecified("listener address", listener)?;
    unspecified("client address", client)?;
    Ok((client, listener))
}

fn unspecified(what: &'static str, addr: SocketAddr) -> Result<(), DataplaneError> {
    if addr.ip().is_unspecified() {
        return Err(DataplaneError::Address { what, addr });
    }
    Ok(())
}

/// A PEER_TO_CLIENT entry, as read from the map ([`Dataplane::peer_entry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerEntry {
    /// Where the peer's datagrams go, and from which listening address.
    pub client: SocketAddr,
    pub listener: SocketAddr,
    /// The channel, or 0 for a permission (Data indications).
    pub channel: u16,
    /// The counter slot in CHANNEL_STATS.
    pub slot: u32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::proto::RelayHandle;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn relay(addr: SocketAddr) -> Relay {
        Relay {
            handle: RelayHandle(1),
            addr,
            advertised: "203.0.113.1:50000".parse().unwrap(),
        }
    }

    #[test]
    fn bindings_take_the_bound_address_and_canonical_ips() {
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        let tuple = FiveTuple {
            transport: Transport::Udp,
            client: SocketAddr::new(mapped, 40_000),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        let b = ChannelBinding::new(
            &tuple,
            0x4000,
            &relay("[2001:db8::1]:50000".parse().unwrap()),
            "[2001:db8::2]:6000".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(b.client, "198.51.100.7:40000".parse().unwrap());
        // The bound address, not the advertised one: that is what packets arrive at.
        assert_eq!(b.relay, "[2001:db8::1]:50000".parse().unwrap());
    }

    #[test]
    fn bindings_refuse_what_the_kernel_cannot_match() {
        let mut tuple = FiveTuple {
            transport: Transport::Tcp,
            client: "198.51.100.7:40000".parse().unwrap(),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        let r = relay("192.0.2.1:50000".parse().unwrap());
        let peer = "192.0.2.9:6000".parse().unwrap();
        let err = ChannelBinding::new(&tuple, 0x4000, &r, peer).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
        assert_eq!(
            err.to_string(),
            "channels over tcp are relayed in userspace"
        );
        tuple.transport = Transport::Udp;
        tuple.server = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), 3478);
        let err = ChannelBinding::new(&tuple, 0x4000, &r, peer).unwrap_err();
        assert_eq!(err.metric_label(), "address");
    }

    #[test]
    fn permissions_take_the_bound_address_and_refuse_what_the_kernel_cannot_match() {
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
        let mut tuple = FiveTuple {
            transport: Transport::Udp,
            client: SocketAddr::new(mapped, 40_000),
            server: "192.0.2.1:3478".parse().unwrap(),
        };
        let v4 = relay("192.0.2.1:50000".parse().unwrap());
        let peer_mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 9).to_ipv6_mapped());
        let p = PermissionBinding::new(&tuple, &v4, peer_mapped).unwrap();
        assert_eq!(p.client, "198.51.100.7:40000".parse().unwrap());
        assert_eq!(p.relay, v4.addr);
        assert_eq!(p.peer, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)));
        let v6_peer: IpAddr = "2001:db8::2".parse().unwrap();
        let err = PermissionBinding::new(&tuple, &v4, v6_peer).unwrap_err();
        assert_eq!(err.metric_label(), "address");
        let err = PermissionBinding::new(&tuple, &v4, Ipv4Addr::UNSPECIFIED.into()).unwrap_err();
        assert_eq!(err.metric_label(), "address");

        let v6 = relay("[2001:db8::1]:50001".parse().unwrap());
        let a = AllocationBinding::new(&tuple, &[v4, v6]).unwrap();
        assert_eq!(a.relays, [v4.addr, v6.addr]);
        let unspecified = relay("0.0.0.0:50000".parse().unwrap());
        let err = AllocationBinding::new(&tuple, &[unspecified]).unwrap_err();
        assert_eq!(err.metric_label(), "address");

        tuple.transport = Transport::Tls;
        let err = PermissionBinding::new(&tuple, &v4, peer_mapped).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
        let err = AllocationBinding::new(&tuple, &[v4]).unwrap_err();
        assert_eq!(err.metric_label(), "transport");
    }
}
