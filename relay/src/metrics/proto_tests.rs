//! The protocol core's scenarios whose counts are checked on the Prometheus exposition: the
//! core counting into [`Metrics`] through [`crate::proto::Counters`], with the test clients of
//! the core's own tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Metrics;
use crate::proto::auth::Key;
use crate::proto::tests::{UNIX, config, message, run_counting, server_counting};
use crate::proto::turn_tests::{
    Client, Got, allocate, bind_channel, channel_events, client_with_channel, code, complete,
    create_permission, events, from_peer, kernel_events, peer_attr, relay_addr, response,
};
use crate::proto::{
    BindFailure, Buf, Command, Config, DropReason, Event, Inbound, MAX_REPLY_LEN, Quotas,
    RelayHandle, RelayRequest, Server, Transport, policy,
};
use crate::stun::{
    ChannelNumber, Class, Data, DontFragment, Encoder, Lifetime, Message, MessageType, Method,
    Nonce, PasswordAlgorithms, Realm, RequestedTransport, XorMappedAddress, XorPeerAddress,
    XorRelayedAddress,
};

/// A server counting into the relay's metrics.
fn server_with(config: Config) -> (Server, Arc<Metrics>, Instant) {
    server_counting(config, Arc::new(Metrics::new().expect("metrics")))
}

/// Runs one packet through a fresh server: the reply (if any) and the metrics.
fn run(packet: &[u8]) -> (Option<Vec<u8>>, Arc<Metrics>) {
    run_counting(packet, Arc::new(Metrics::new().expect("metrics")))
}

fn dropped(metrics: &Metrics, reason: DropReason) -> u64 {
    metrics.dropped_count(Transport::Udp, reason)
}

#[test]
fn responses_and_indications_are_dropped_keepalives_consumed() {
    let resp = message(MessageType::new(Method::BINDING, Class::Success), |_| {});
    let (reply, m) = run(&resp);
    assert!(reply.is_none());
    assert_eq!(dropped(&m, DropReason::UnexpectedResponse), 1);
    let data = message(MessageType::new(Method::DATA, Class::Indication), |_| {});
    let (reply, m) = run(&data);
    assert!(reply.is_none());
    assert_eq!(dropped(&m, DropReason::UnexpectedIndication), 1);
    let keepalive = message(MessageType::new(Method::BINDING, Class::Indication), |e| {
        e.fingerprint().expect("fp")
    });
    let (reply, m) = run(&keepalive);
    assert!(reply.is_none());
    assert!(
        m.render()
            .contains(r#"xdpturn_keepalives_total{transport="udp"} 1"#)
    );
}

#[test]
fn allocate_challenge_then_success() {
    let (mut server, metrics, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");

    // The unauthenticated first try is challenged with REALM, NONCE and PASSWORD-ALGORITHMS.
    let tid = c.fresh_tid();
    let first = c.build(Method::ALLOCATE, tid, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    let challenge = response(c.send_raw(&mut server, &first, now));
    let msg = Message::decode(&challenge).expect("decodes");
    assert_eq!(code(&challenge), Some(401));
    assert_eq!(msg.get::<Realm>(), Some(Ok(Realm("example.org"))));
    assert!(msg.get::<Nonce>().is_some());
    assert_eq!(
        msg.get::<PasswordAlgorithms>().and_then(Result::ok),
        Some(PasswordAlgorithms::MD5_AND_SHA256)
    );
    assert_eq!(server.allocation_count(), 0, "a challenge costs no state");

    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&Lifetime(1200)).expect("lt");
        e.add(&DontFragment).expect("df");
    });
    let Got::Pending(pending) = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        pending.primary,
        RelayRequest::Bind {
            ip: "192.0.2.10".parse().expect("ip"),
            even: false,
            reserve_next: false
        }
    );
    assert_eq!(pending.additional, None);
    let r = complete(
        &mut server,
        *pending,
        Ok((RelayHandle(7), relay_addr(50000))),
        None,
        now,
    );
    let msg = Message::decode(&r).expect("decodes");
    assert_eq!(msg.class(), Class::Success);
    assert_eq!(
        msg.get::<XorRelayedAddress>(),
        Some(Ok(XorRelayedAddress(relay_addr(50000))))
    );
    assert_eq!(msg.get::<Lifetime>(), Some(Ok(Lifetime(1200))));
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(c.remote)))
    );
    let Key::Md5(key) = c.key() else {
        unreachable!()
    };
    msg.verify_integrity(&key)
        .expect("the response is signed with the user's key");
    msg.verify_fingerprint().expect("fingerprint");
    assert_eq!(server.allocation_count(), 1);
    assert!(metrics.render().contains("xdpturn_allocations 1"));
}

#[test]
fn wrong_password_stale_nonce_and_expired_rest_credentials() {
    let (mut server, metrics, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "not the password");
    let r = response(c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    }));
    assert_eq!(code(&r), Some(401));
    assert_eq!(server.allocation_count(), 0);
    assert!(
        metrics
            .render()
            .contains(r#"xdpturn_auth_failures_total{reason="wrong_password"} 1"#)
    );

    // A nonce past its lifetime gets 438 and a fresh nonce, with which the client succeeds.
    let mut c = Client::new("203.0.113.6:40000", "alice", "wonderland");
    let _ = c.request(&mut server, Method::BINDING, now, &|_| {});
    c.nonce = Some(server.config().auth.nonce(c.remote.ip(), UNIX, true));
    let later = now + Duration::from_secs(601);
    let got = c.request(&mut server, Method::ALLOCATE, later, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    assert!(
        matches!(got, Got::Pending(_)),
        "after 438 the retry with the new nonce succeeds: {got:?}"
    );

    // REST: valid until its expiry, then 401.
    let user = format!("{}:carol", UNIX + 60);
    let password = crate::credentials::rest_password(b"rest secret", &user);
    let mut c = Client::new("203.0.113.7:40000", &user, &password);
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    assert!(matches!(got, Got::Pending(_)), "{got:?}");
    let mut c = Client::new("203.0.113.8:40000", &user, &password);
    let r = response(c.request(
        &mut server,
        Method::ALLOCATE,
        now + Duration::from_secs(61),
        &|e| e.add(&RequestedTransport::UDP).expect("rt"),
    ));
    assert_eq!(code(&r), Some(401));
    assert!(
        metrics
            .render()
            .contains(r#"xdpturn_auth_failures_total{reason="expired"} 1"#)
    );
}

#[test]
fn permissions_data_indications_and_policy() {
    let (mut server, metrics, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 3, 50000);

    let r = response(c.request(&mut server, Method::CREATE_PERMISSION, now, &|_| {}));
    assert_eq!(code(&r), Some(400), "XOR-PEER-ADDRESS is required");
    for denied in [
        "10.0.0.1:5000",
        "127.0.0.1:5000",
        "169.254.169.254:80",
        "[::ffff:10.0.0.1]:1",
    ] {
        let peer = peer_attr(denied);
        let r = response(
            c.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
                e.add(&peer).expect("peer")
            }),
        );
        let expected = if denied.starts_with('[') { 443 } else { 403 };
        assert_eq!(code(&r), Some(expected), "{denied}");
    }
    assert!(
        metrics
            .render()
            .contains(r#"xdpturn_peer_denied_total{reason="builtin"} 3"#)
    );
    let r = response(
        c.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("198.51.100.20:6000")).expect("peer");
            e.add(&peer_attr("198.51.100.21:6000")).expect("peer");
        }),
    );
    assert_eq!(code(&r), None, "two peers at once");

    // A permitted peer's datagram becomes a Data indication; another peer's is dropped.
    let (command, _, out) = from_peer(&mut server, 3, "198.51.100.20:7777", b"hello", now);
    let Command::ToClient {
        tuple,
        data: Buf::Output(len),
    } = command
    else {
        panic!("{command:?}")
    };
    assert_eq!(tuple, c.tuple());
    let msg = Message::decode(&out[..len]).expect("decodes");
    assert_eq!(msg.typ(), MessageType::new(Method::DATA, Class::Indication));
    assert_eq!(
        msg.get::<XorPeerAddress>(),
        Some(Ok(peer_attr("198.51.100.20:7777")))
    );
    assert_eq!(msg.get::<Data>(), Some(Ok(Data(b"hello"))));
    let (command, _, _) = from_peer(&mut server, 3, "198.51.100.99:7777", b"hello", now);
    assert_eq!(command, Command::None);
    assert_eq!(
        metrics.dropped_count(Transport::Udp, DropReason::NoPermission),
        1
    );

    // Send indications: only to permitted peers.
    let send = |peer: &str| {
        message(MessageType::new(Method::SEND, Class::Indication), |e| {
            e.add(&peer_attr(peer)).expect("peer");
            e.add(&Data(b"payload")).expect("data");
        })
    };
    let packet = send("198.51.100.21:9999");
    let inbound = Inbound {
        transport: Transport::Udp,
        local: c.local,
        remote: c.remote,
        packet: &packet,
    };
    let mut out = [0u8; MAX_REPLY_LEN];
    let Command::ToPeer { relay, peer, range } = server.handle_client(&inbound, now, &mut out)
    else {
        panic!()
    };
    assert_eq!(
        (relay, peer),
        (RelayHandle(3), "198.51.100.21:9999".parse().expect("addr"))
    );
    assert_eq!(&packet[range], b"payload");
    let packet = send("198.51.100.22:9999");
    let inbound = Inbound {
        packet: &packet,
        ..inbound
    };
    assert_eq!(server.handle_client(&inbound, now, &mut out), Command::None);

    // Permissions expire after 300 s.
    let later = now + Duration::from_secs(301);
    server.tick(later);
    let (command, _, _) = from_peer(&mut server, 3, "198.51.100.20:7777", b"hello", later);
    assert_eq!(command, Command::None);
    assert!(metrics.render().contains("xdpturn_permissions 0"));
}

#[test]
fn channels_bind_relay_refresh_conflict_and_expire() {
    let (mut server, metrics, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 4, 50002);
    let bind = |channel: u16, peer: &'static str| {
        move |e: &mut Encoder<'_>| {
            e.add(&ChannelNumber(channel)).expect("ch");
            e.add(&peer_attr(peer)).expect("peer");
        }
    };
    for bad in [0x3FFF, 0x8000, 0xFFFF] {
        let r = response(c.request(
            &mut server,
            Method::CHANNEL_BIND,
            now,
            &bind(bad, "198.51.100.20:6000"),
        ));
        assert_eq!(code(&r), Some(400), "{bad:#x}");
    }
    let r = response(c.request(
        &mut server,
        Method::CHANNEL_BIND,
        now,
        &bind(0x7FFE, "198.51.100.20:6000"),
    ));
    assert_eq!(code(&r), None, "the whole RFC 5766 range");
    let ev = events(&mut server);
    assert!(
        matches!(
            ev.as_slice(),
            [
                Event::AllocationInstalled { .. },
                Event::PermissionInstalled { .. },
                Event::ChannelBound {
                    channel: 0x7FFE,
                    ..
                }
            ]
        ),
        "{ev:?}"
    );

    // ChannelData from the client goes to the peer without its header.
    let cd = [0x7F, 0xFE, 0x00, 0x03, b'a', b'b', b'c'];
    let inbound = Inbound {
        transport: Transport::Udp,
        local: c.local,
        remote: c.remote,
        packet: &cd,
    };
    let mut out = [0u8; MAX_REPLY_LEN];
    let command = server.handle_client(&inbound, now, &mut out);
    assert_eq!(
        command,
        Command::ToPeer {
            relay: RelayHandle(4),
            peer: "198.51.100.20:6000".parse().expect("a"),
            range: 4..7
        }
    );
    // The peer's answer comes back as ChannelData, framed in place.
    let (command, buf, _) = from_peer(&mut server, 4, "198.51.100.20:6000", b"xyz", now);
    assert_eq!(
        command,
        Command::ToClient {
            tuple: c.tuple(),
            data: Buf::Input(0..7)
        }
    );
    assert_eq!(&buf[..7], &[0x7F, 0xFE, 0x00, 0x03, b'x', b'y', b'z']);
    // An unbound channel is dropped.
    let stray = [0x40, 0x01, 0x00, 0x01, b'!'];
    assert_eq!(
        server.handle_client(
            &Inbound {
                packet: &stray,
                ..inbound
            },
            now,
            &mut out
        ),
        Command::None
    );
    assert_eq!(
        metrics.dropped_count(Transport::Udp, DropReason::UnknownChannel),
        1
    );

    // Conflicts are 400; rebinding the same pair refreshes.
    let r = response(c.request(
        &mut server,
        Method::CHANNEL_BIND,
        now,
        &bind(0x7FFE, "198.51.100.21:6000"),
    ));
    assert_eq!(code(&r), Some(400));
    let r = response(c.request(
        &mut server,
        Method::CHANNEL_BIND,
        now,
        &bind(0x4001, "198.51.100.20:6000"),
    ));
    assert_eq!(code(&r), Some(400));
    let t1 = now + Duration::from_secs(500);
    let r = response(c.request(
        &mut server,
        Method::CHANNEL_BIND,
        t1,
        &bind(0x7FFE, "198.51.100.20:6000"),
    ));
    assert_eq!(code(&r), None);
    assert!(metrics.render().contains("xdpturn_channels 1"));

    // 600 s after the refresh the channel is gone (and the fast path told), data is dropped.
    let t2 = t1 + Duration::from_secs(601);
    let _ = events(&mut server);
    let refreshed = Client { ..c };
    let mut r2 = refreshed;
    let _ = response(r2.request(
        &mut server,
        Method::REFRESH,
        t1 + Duration::from_secs(300),
        &|_| {},
    ));
    server.tick(t2);
    let ev = events(&mut server);
    assert!(
        ev.iter().any(|e| matches!(
            e,
            Event::ChannelUnbound {
                channel: 0x7FFE,
                ..
            }
        )),
        "{ev:?}"
    );
    assert_eq!(server.handle_client(&inbound, t2, &mut out), Command::None);
    assert!(metrics.render().contains("xdpturn_channels 0"));
}

#[test]
fn channel_bind_to_own_endpoint_is_forbidden() {
    let mut cfg = config();
    cfg.policy = policy::PeerPolicy::new(
        vec![api::parse_cidr("0.0.0.0/0").expect("cidr")],
        Vec::new(),
    )
    .with_own_endpoints([
        "192.0.2.10:3478".parse().expect("a"),
        "0.0.0.0:9641".parse().expect("a"),
    ]);
    let (mut server, metrics, now) = server_with(cfg);
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 1, 50000);
    for own in ["192.0.2.10:3478", "192.0.2.10:9641"] {
        let peer = peer_attr(own);
        let r = response(c.request(&mut server, Method::CHANNEL_BIND, now, &|e| {
            e.add(&ChannelNumber(0x4000)).expect("ch");
            e.add(&peer).expect("peer");
        }));
        assert_eq!(code(&r), Some(403), "{own}");
    }
    assert!(
        metrics
            .render()
            .contains(r#"xdpturn_peer_denied_total{reason="own_endpoint"} 2"#)
    );
}

#[test]
fn refresh_deletes_with_lifetime_zero_and_retransmission_is_answered() {
    let (mut server, metrics, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 9, 50000);
    let _ = events(&mut server);
    let r = response(c.request(&mut server, Method::REFRESH, now, &|e| {
        e.add(&Lifetime(30)).expect("lt")
    }));
    assert_eq!(
        Message::decode(&r).expect("d").get::<Lifetime>(),
        Some(Ok(Lifetime(600))),
        "raised to the default"
    );
    let r = response(c.request(&mut server, Method::REFRESH, now, &|e| {
        e.add(&Lifetime(99999)).expect("lt")
    }));
    assert_eq!(
        Message::decode(&r).expect("d").get::<Lifetime>(),
        Some(Ok(Lifetime(3600))),
        "capped"
    );

    let tid = c.fresh_tid();
    let delete = c.build(Method::REFRESH, tid, &|e| e.add(&Lifetime(0)).expect("lt"));
    let r = response(c.send_raw(&mut server, &delete, now));
    assert_eq!(
        Message::decode(&r).expect("d").get::<Lifetime>(),
        Some(Ok(Lifetime(0)))
    );
    assert_eq!(server.allocation_count(), 0);
    assert_eq!(
        events(&mut server),
        vec![
            Event::AllocationRemoved { tuple: c.tuple() },
            Event::ReleaseRelay(RelayHandle(9))
        ]
    );
    assert_eq!(server.ledger().total(), 0);
    assert!(metrics.render().contains("xdpturn_allocations 0"));
    assert!(
        metrics
            .render()
            .contains("xdpturn_allocations_ended_total 1")
    );
    // The retransmitted delete gets the same success, not 437.
    assert_eq!(
        response(c.send_raw(&mut server, &delete, now + Duration::from_secs(2))),
        r
    );
    let r = response(c.request(&mut server, Method::REFRESH, now, &|_| {}));
    assert_eq!(code(&r), Some(437));
}

#[test]
fn quotas_per_user_total_permissions_ports_and_bandwidth() {
    let mut cfg = config();
    cfg.quotas = Quotas {
        per_user: 1,
        total: 2,
        permissions_per_allocation: 2,
        max_bps: 8_000,
    };
    let (mut server, metrics, now) = server_with(cfg);
    let mut a1 = Client::new("203.0.113.5:1", "alice", "wonderland");
    allocate(&mut server, &mut a1, now, 1, 50000);
    let mut a2 = Client::new("203.0.113.5:2", "alice", "wonderland");
    let r = response(a2.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    }));
    assert_eq!(code(&r), Some(486), "per-user quota");
    let mut b1 = Client::new("203.0.113.6:1", "bob", "builder");
    allocate(&mut server, &mut b1, now, 2, 50001);
    let user = format!("{}:dave", UNIX + 600);
    let mut d = Client::new(
        "203.0.113.7:1",
        &user,
        &crate::credentials::rest_password(b"rest secret", &user),
    );
    let r = response(d.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    }));
    assert_eq!(code(&r), Some(508), "total cap");

    // Port exhaustion reported by the event loop is 508 and releases the quota.
    let _ = response(b1.request(&mut server, Method::REFRESH, now, &|e| {
        e.add(&Lifetime(0)).expect("lt")
    }));
    let Got::Pending(p) = d.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    }) else {
        panic!()
    };
    let r = complete(&mut server, *p, Err(BindFailure::NoCapacity), None, now);
    assert_eq!(code(&r), Some(508));
    assert_eq!(server.ledger().total(), 1);

    let r = response(
        a1.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("198.51.100.1:1")).expect("p");
            e.add(&peer_attr("198.51.100.2:1")).expect("p");
        }),
    );
    assert_eq!(code(&r), None);
    let r = response(
        a1.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("198.51.100.3:1")).expect("p")
        }),
    );
    assert_eq!(code(&r), Some(508), "permissions cap");
    let r = response(
        a1.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("198.51.100.2:9")).expect("p")
        }),
    );
    assert_eq!(
        code(&r),
        None,
        "refreshing an existing permission is within the cap"
    );

    // 8000 bit/s is 1000 bytes a second.
    let (a, _, _) = from_peer(&mut server, 1, "198.51.100.1:1", &[0; 900], now);
    assert!(matches!(a, Command::ToClient { .. }));
    let (a, _, _) = from_peer(&mut server, 1, "198.51.100.1:1", &[0; 200], now);
    assert_eq!(a, Command::None);
    assert_eq!(
        metrics.dropped_count(Transport::Udp, DropReason::BandwidthExceeded),
        1
    );
    let render = metrics.render();
    for q in ["user", "total", "permissions", "ports", "bandwidth"] {
        assert!(
            render.contains(&format!(
                r#"xdpturn_quota_rejections_total{{quota="{q}"}} 1"#
            )),
            "{q}: {render}"
        );
    }
}

#[test]
fn kernel_traffic_counts_toward_the_bandwidth_cap() {
    let mut cfg = config();
    cfg.quotas.max_bps = 8_000; // 1000 bytes a second
    let (mut server, metrics, now) = server_with(cfg);
    let mut c = client_with_channel(&mut server, now);
    assert_eq!(channel_events(&mut server), (vec![0x4000], vec![]));
    let tuple = c.tuple();

    // Within the budget the channel stays in the kernel.
    server.charge_offloaded(&tuple, 600, now);
    server.tick(now);
    assert_eq!(channel_events(&mut server), (vec![], vec![]));
    // Over it, it leaves, and says why.
    server.charge_offloaded(&tuple, 600, now);
    assert_eq!(channel_events(&mut server), (vec![], vec![0x4000]));
    assert!(
        metrics
            .render()
            .contains(r#"xdpturn_xdp_fallbacks_total{reason="bandwidth"} 1"#)
    );
    // Userspace now enforces the cap: the debt (200 bytes) drops what comes.
    let (a, _, _) = from_peer(&mut server, 4, "198.51.100.20:6000", &[0; 10], now);
    assert_eq!(a, Command::None);
    assert_eq!(
        metrics.dropped_count(Transport::Udp, DropReason::BandwidthExceeded),
        1
    );
    // What the kernel forwarded before it was unbound is charged too, without a second unbind.
    server.charge_offloaded(&tuple, 100, now);
    assert_eq!(channel_events(&mut server), (vec![], vec![]));
    // A refresh of the channel while over the cap keeps it out of the kernel.
    let t1 = now + Duration::from_millis(500);
    bind_channel(&mut server, &mut c, t1);
    // Half a second later the debt (300) is repaid, but less than half a second's budget is
    // there: it stays in userspace, which relays within the budget.
    server.tick(t1);
    assert_eq!(channel_events(&mut server), (vec![], vec![]));
    let (a, _, _) = from_peer(&mut server, 4, "198.51.100.20:6000", &[0; 150], t1);
    assert!(matches!(a, Command::ToClient { .. }), "{a:?}");
    // Recovered: back to the kernel.
    let t2 = now + Duration::from_millis(1100);
    server.tick(t2);
    assert_eq!(channel_events(&mut server), (vec![0x4000], vec![]));

    // An allocation without a cap is never taken out.
    let (mut server, _, now) = server_with(config());
    let c = client_with_channel(&mut server, now);
    let _ = events(&mut server);
    server.charge_offloaded(&c.tuple(), 1 << 40, now);
    server.tick(now);
    assert_eq!(channel_events(&mut server), (vec![], vec![]));
}

#[test]
fn over_the_bandwidth_cap_the_whole_allocation_leaves_the_kernel_and_comes_back() {
    let mut cfg = config();
    cfg.quotas.max_bps = 8_000; // 1000 bytes a second
    let (mut server, metrics, now) = server_with(cfg);
    let mut c = client_with_channel(&mut server, now);
    create_permission(&mut server, &mut c, now, &["198.51.100.30:1"]);
    let tuple = c.tuple();
    let _ = events(&mut server);

    // Over the cap with what the kernel relayed as indications: channels, permissions and the
    // allocation leave.
    server.charge_offloaded(&tuple, 1200, now);
    assert_eq!(
        kernel_events(&mut server, tuple, now),
        [
            "-chan 0x4000",
            "-perm 198.51.100.20 on 192.0.2.10:50002",
            "-perm 198.51.100.30 on 192.0.2.10:50002",
            "-alloc"
        ]
    );
    assert!(
        metrics
            .render()
            .contains(r#"xdpturn_xdp_fallbacks_total{reason="bandwidth"} 1"#)
    );
    // Permissions created or refreshed meanwhile stay out of the kernel, and so does the
    // channel's.
    let t1 = now + Duration::from_millis(500);
    create_permission(&mut server, &mut c, t1, &["198.51.100.31:1"]);
    bind_channel(&mut server, &mut c, t1);
    server.charge_offloaded(&tuple, 10, t1);
    server.tick(t1);
    assert_eq!(kernel_events(&mut server, tuple, now), [] as [String; 0]);
    // Recovered: all of it is back, the allocation first.
    let t2 = now + Duration::from_millis(1500);
    server.tick(t2);
    assert_eq!(
        kernel_events(&mut server, tuple, now),
        [
            "+alloc 192.0.2.10:50002",
            "+perm 198.51.100.20 on 192.0.2.10:50002 300s",
            "+perm 198.51.100.30 on 192.0.2.10:50002 300s",
            "+perm 198.51.100.31 on 192.0.2.10:50002 300s",
            "+chan 0x4000"
        ]
    );
    // What expired while out of the kernel does not come back (198.51.100.30's permission,
    // not refreshed at t1).
    server.charge_offloaded(&tuple, 2000, t2);
    let _ = events(&mut server);
    server.tick(now + Duration::from_secs(300));
    assert_eq!(
        kernel_events(&mut server, tuple, now),
        [
            "+alloc 192.0.2.10:50002",
            "+perm 198.51.100.20 on 192.0.2.10:50002 300s",
            "+perm 198.51.100.31 on 192.0.2.10:50002 300s",
            "+chan 0x4000",
            "-perm 198.51.100.30 on 192.0.2.10:50002"
        ]
    );
}
