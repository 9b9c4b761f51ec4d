//! Unit tests of the map types: layouts, byte order, families.

#![allow(clippy::unwrap_used)]

use super::*;
use core::mem::{align_of, size_of};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V4_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const V4_LISTENER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const V6_CLIENT: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7));
const V6_LISTENER: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1));

#[test]
fn layout_has_no_implicit_padding() {
    assert_eq!((size_of::<ChannelKey>(), align_of::<ChannelKey>()), (40, 2));
    assert_eq!(
        (size_of::<ChannelValue>(), align_of::<ChannelValue>()),
        (44, 4)
    );
    assert_eq!((size_of::<PeerKey>(), align_of::<PeerKey>()), (40, 2));
    assert_eq!((size_of::<PeerValue>(), align_of::<PeerValue>()), (44, 4));
    assert_eq!(
        (size_of::<ListenerKey>(), align_of::<ListenerKey>()),
        (20, 2)
    );
    assert_eq!(
        (size_of::<ChannelStats>(), align_of::<ChannelStats>()),
        (32, 8)
    );
    assert_eq!((size_of::<NextHopKey>(), align_of::<NextHopKey>()), (20, 1));
    assert_eq!((size_of::<ClientKey>(), align_of::<ClientKey>()), (40, 2));
    assert_eq!(
        (size_of::<AllocationValue>(), align_of::<AllocationValue>()),
        (36, 2)
    );
    assert_eq!(
        (size_of::<NextHopValue>(), align_of::<NextHopValue>()),
        (20, 4)
    );
    assert_eq!(
        (size_of::<ChannelKey4>(), align_of::<ChannelKey4>()),
        (14, 2)
    );
    assert_eq!((size_of::<PeerKey4>(), align_of::<PeerKey4>()), (12, 2));
    assert_eq!((size_of::<ClientKey4>(), align_of::<ClientKey4>()), (12, 2));
    assert_eq!(
        (size_of::<NextHopKey4>(), align_of::<NextHopKey4>()),
        (4, 1)
    );
}

/// What userspace writes (the IPv4 form of the general key) is what the program looks up (the
/// short key built from the packet's fields), byte for byte; IPv6 keys have no short form.
#[test]
fn ipv4_keys_narrow_to_what_the_program_builds() {
    let (client, listener) = (addr_bytes(V4_CLIENT), addr_bytes(V4_LISTENER));
    let key = ChannelKey::new(V4_CLIENT, 50_000, V4_LISTENER, 3478, 0x4001).unwrap();
    let short = ChannelKey4::from_packet(&client, 50_000, &listener, 3478, 0x4001);
    assert_eq!(key.v4(), Some(short));
    assert_eq!(short.client_addr, [198, 51, 100, 7]);
    assert_eq!(short.channel.to_ne_bytes(), [0x40, 0x01]);
    assert_eq!(short.listener_port.to_ne_bytes(), 3478u16.to_be_bytes());

    let key = PeerKey::new(V4_LISTENER, 49_152, V4_CLIENT, 5000).unwrap();
    let short = PeerKey4::from_packet(&listener, 49_152, &client, 5000);
    assert_eq!(key.v4(), Some(short));
    assert_eq!(short.peer_port.to_ne_bytes(), 5000u16.to_be_bytes());
    let permission = PeerKey::permission(V4_LISTENER, 49_152, V4_CLIENT).unwrap();
    assert_eq!(
        permission.v4(),
        Some(PeerKey4::from_packet(&listener, 49_152, &client, 0))
    );

    let key = ClientKey::new(V4_CLIENT, 50_000, V4_LISTENER, 3478).unwrap();
    assert_eq!(
        key.v4(),
        Some(ClientKey4::from_packet(&client, 50_000, &listener, 3478))
    );
    assert_eq!(
        NextHopKey::new(V4_CLIENT).v4(),
        Some(NextHopKey4::from_packet(&client))
    );

    assert_eq!(
        ChannelKey::new(V6_CLIENT, 1, V6_LISTENER, 2, 0x4000)
            .unwrap()
            .v4(),
        None
    );
    assert_eq!(
        PeerKey::new(V6_LISTENER, 1, V6_CLIENT, 2).unwrap().v4(),
        None
    );
    assert_eq!(
        ClientKey::new(V6_CLIENT, 1, V6_LISTENER, 2).unwrap().v4(),
        None
    );
    assert_eq!(NextHopKey::new(V6_CLIENT).v4(), None);
}

#[test]
fn next_hop_keys_take_canonical_addresses() {
    let v4 = NextHopKey::new(V4_CLIENT);
    assert_eq!((v4.family, v4.addr()), (FAMILY_IPV4, Some(V4_CLIENT)));
    assert_eq!(v4.addr[..4], [198, 51, 100, 7]);
    let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 7).to_ipv6_mapped());
    assert_eq!(NextHopKey::new(mapped), v4);
    let v6 = NextHopKey::new(V6_CLIENT);
    assert_eq!((v6.family, v6.addr()), (FAMILY_IPV6, Some(V6_CLIENT)));
}

#[test]
fn key_round_trips_v4_in_network_order() {
    let key = ChannelKey::new(V4_CLIENT, 50_000, V4_LISTENER, 3478, 0x4001).unwrap();
    assert_eq!(key.family, FAMILY_IPV4);
    assert_eq!(key.client_addr[..4], [198, 51, 100, 7]);
    assert_eq!(key.client_addr[4..], [0; 12]);
    // Raw fields hold the bytes as they are on the wire.
    assert_eq!(key.listener_port.to_ne_bytes(), 3478u16.to_be_bytes());
    assert_eq!(key.client_port.to_ne_bytes(), 50_000u16.to_be_bytes());
    assert_eq!(key.channel.to_ne_bytes(), [0x40, 0x01]);
    assert_eq!(key.client_addr(), Some(V4_CLIENT));
    assert_eq!(key.client_port(), 50_000);
    assert_eq!(key.listener_addr(), Some(V4_LISTENER));
    assert_eq!(key.listener_port(), 3478);
    assert_eq!(key.channel(), 0x4001);
}

#[test]
fn key_round_trips_v6() {
    let key = ChannelKey::new(V6_CLIENT, 1, V6_LISTENER, 65535, 0x4FFF).unwrap();
    assert_eq!(key.family, FAMILY_IPV6);
    assert_eq!(key.client_addr(), Some(V6_CLIENT));
    assert_eq!(key.listener_addr(), Some(V6_LISTENER));
    assert_eq!(key.client_port(), 1);
    assert_eq!(key.listener_port(), 65535);
    assert_eq!(key.channel(), 0x4FFF);
}

#[test]
fn value_round_trips_both_families() {
    let v = ChannelValue::new(V4_LISTENER, 49_152, V4_CLIENT, 9, 7).unwrap();
    assert_eq!(v.family, FAMILY_IPV4);
    assert_eq!(v.relay_port.to_ne_bytes(), 49_152u16.to_be_bytes());
    assert_eq!(v.relay_addr(), Some(V4_LISTENER));
    assert_eq!(v.relay_port(), 49_152);
    assert_eq!(v.peer_addr(), Some(V4_CLIENT));
    assert_eq!(v.peer_port(), 9);
    assert_eq!(v.counter, 7);

    let v = ChannelValue::new(V6_LISTENER, 60_000, V6_CLIENT, 443, 0).unwrap();
    assert_eq!(v.family, FAMILY_IPV6);
    assert_eq!(v.relay_addr(), Some(V6_LISTENER));
    assert_eq!(v.peer_addr(), Some(V6_CLIENT));
    assert_eq!((v.relay_port(), v.peer_port()), (60_000, 443));
}

#[test]
fn peer_key_and_value_round_trip() {
    let k = PeerKey::new(V6_LISTENER, 50_001, V6_CLIENT, 5000).unwrap();
    assert_eq!(k.family, FAMILY_IPV6);
    assert_eq!(k.relay_port.to_ne_bytes(), 50_001u16.to_be_bytes());
    assert_eq!(
        (k.relay_addr(), k.relay_port(), k.peer_addr(), k.peer_port()),
        (Some(V6_LISTENER), 50_001, Some(V6_CLIENT), 5000)
    );
    let v = PeerValue::new(V4_LISTENER, 3478, V4_CLIENT, 40_000, 0x7FFF, 3).unwrap();
    assert_eq!(v.family, FAMILY_IPV4);
    assert_eq!(v.channel.to_ne_bytes(), [0x7F, 0xFF]);
    assert_eq!(
        (
            v.listener_addr(),
            v.listener_port(),
            v.client_addr(),
            v.client_port()
        ),
        (Some(V4_LISTENER), 3478, Some(V4_CLIENT), 40_000)
    );
    assert_eq!((v.channel(), v.counter), (0x7FFF, 3));
}

#[test]
fn listener_key_takes_wildcards_and_mapped_addresses() {
    let any = ListenerKey::new(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 3478));
    assert_eq!(
        (any.family, any.addr, any.port()),
        (FAMILY_IPV4, [0; 16], 3478)
    );
    let mapped = ListenerKey::new(SocketAddr::new(
        IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()),
        3478,
    ));
    assert_eq!(mapped.addr(), Some(V4_LISTENER));
    assert_eq!(mapped.family, FAMILY_IPV4);
    let v6 = ListenerKey::new(SocketAddr::new(V6_LISTENER, 5349));
    assert_eq!((v6.addr(), v6.port()), (Some(V6_LISTENER), 5349));
}

#[test]
fn entries_allow_a_family_change_between_client_and_peer() {
    let client = SocketAddr::new(V4_CLIENT, 40_000);
    let listener = SocketAddr::new(V4_LISTENER, 3478);
    let relay = SocketAddr::new(V6_LISTENER, 50_000);
    let peer = SocketAddr::new(V6_CLIENT, 6000);
    let e = ChannelEntries::new(client, listener, 0x4000, relay, peer, 11).unwrap();
    assert_eq!(e.channel_key.family, FAMILY_IPV4);
    assert_eq!(e.channel_value.family, FAMILY_IPV6);
    assert_eq!(e.peer_key.family, FAMILY_IPV6);
    assert_eq!(e.peer_value.family, FAMILY_IPV4);
    assert_eq!(e.channel_value.counter, e.peer_value.counter);
    assert_eq!(e.peer_value.channel(), 0x4000);
    assert_eq!(e.peer_key.peer_port(), 6000);
    // A client and listener of different families cannot be one 5-tuple.
    assert_eq!(
        ChannelEntries::new(client, relay, 0x4000, relay, peer, 0),
        Err(MixedFamilies)
    );
}

#[test]
fn mixed_families_are_refused() {
    assert_eq!(
        ChannelKey::new(V4_CLIENT, 1, V6_LISTENER, 2, 0x4000),
        Err(MixedFamilies)
    );
    assert_eq!(
        ChannelValue::new(V6_LISTENER, 1, V4_CLIENT, 2, 0),
        Err(MixedFamilies)
    );
    assert_eq!(
        PeerKey::new(V6_LISTENER, 1, V4_CLIENT, 2),
        Err(MixedFamilies)
    );
}

#[test]
fn unknown_family_reads_as_none() {
    let mut key = ChannelKey::new(V4_CLIENT, 1, V4_LISTENER, 2, 0x4000).unwrap();
    key.family = 0;
    assert_eq!(key.client_addr(), None);
    assert_eq!(key.listener_addr(), None);
}

#[test]
fn stats_add_up() {
    let a = ChannelStats {
        client_to_peer_packets: 1,
        client_to_peer_bytes: 10,
        peer_to_client_packets: 2,
        peer_to_client_bytes: 20,
    };
    assert_eq!(
        a.plus(a),
        ChannelStats {
            client_to_peer_packets: 2,
            client_to_peer_bytes: 20,
            peer_to_client_packets: 4,
            peer_to_client_bytes: 40,
        }
    );
}
