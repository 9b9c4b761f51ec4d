//! TURN through the core: allocations, auth, permissions, channels, data, timers, quotas. The
//! scenarios whose counts are checked on the Prometheus exposition are in the metrics module's
//! tests, with the client and helpers here.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::auth::Key;
use super::tests::{UNIX, config, server_with};
use super::*;
use crate::stun::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, ChannelNumber, Class, Encoder,
    ErrorCode, EvenPort, Lifetime, Message, MessageIntegrity, MessageType, Method, Nonce,
    PasswordAlgorithm, PasswordAlgorithms, Realm, RequestedAddressFamily, RequestedTransport,
    ReservationToken, TransactionId, Username, XorPeerAddress, XorRelayedAddress,
    long_term_key_md5, long_term_key_sha256,
};

const LOCAL: &str = "192.0.2.10:3478";

/// A TURN client speaking to the core directly.
pub(crate) struct Client {
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) transport: Transport,
    pub(crate) user: String,
    pub(crate) password: String,
    pub(crate) nonce: Option<String>,
    pub(crate) sha256: bool,
    pub(crate) next_tid: u8,
}

/// What a request came to.
#[derive(Debug)]
pub(crate) enum Got {
    Response(Vec<u8>),
    Pending(Box<PendingAllocation>),
    Nothing,
}

impl Client {
    pub(crate) fn new(remote: &str, user: &str, password: &str) -> Self {
        Self {
            remote: remote.parse().expect("addr"),
            local: LOCAL.parse().expect("addr"),
            transport: Transport::Udp,
            user: user.into(),
            password: password.into(),
            nonce: None,
            sha256: false,
            next_tid: 0,
        }
    }

    pub(crate) fn tuple(&self) -> FiveTuple {
        FiveTuple {
            transport: self.transport,
            client: self.remote,
            server: self.local,
        }
    }

    pub(crate) fn key(&self) -> Key {
        if self.sha256 {
            Key::Sha256(long_term_key_sha256(
                &self.user,
                "example.org",
                &self.password,
            ))
        } else {
            Key::Md5(long_term_key_md5(&self.user, "example.org", &self.password))
        }
    }

    pub(crate) fn build(
        &mut self,
        method: Method,
        tid: TransactionId,
        attrs: &dyn Fn(&mut Encoder<'_>),
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        let mut e =
            Encoder::new(&mut buf, MessageType::new(method, Class::Request), tid).expect("header");
        attrs(&mut e);
        if let Some(nonce) = &self.nonce {
            e.add(&Username(&self.user)).expect("u");
            e.add(&Realm("example.org")).expect("r");
            e.add(&Nonce(nonce)).expect("n");
            match self.key() {
                Key::Md5(k) => e.message_integrity(&k).expect("mi"),
                Key::Sha256(k) => {
                    e.add(&PasswordAlgorithms::MD5_AND_SHA256).expect("pas");
                    e.add(&PasswordAlgorithm {
                        algorithm: PasswordAlgorithm::SHA256,
                        params: &[],
                    })
                    .expect("pa");
                    e.message_integrity_sha256(&k).expect("mi256")
                }
            }
        }
        e.fingerprint().expect("fp");
        let len = e.finish();
        buf.truncate(len);
        buf
    }

    pub(crate) fn send_raw(&self, server: &mut Server, packet: &[u8], now: Instant) -> Got {
        let inbound = Inbound {
            transport: self.transport,
            local: self.local,
            remote: self.remote,
            packet,
        };
        let mut out = [0u8; MAX_REPLY_LEN];
        match server.handle_client(&inbound, now, &mut out) {
            Command::Reply { len } => Got::Response(out[..len].to_vec()),
            Command::BindRelays(p) => Got::Pending(p),
            Command::None => Got::Nothing,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub(crate) fn fresh_tid(&mut self) -> TransactionId {
        self.next_tid += 1;
        TransactionId::new([self.next_tid; 12])
    }

    /// Sends a request, answering a 401/438 challenge once with credentials.
    pub(crate) fn request(
        &mut self,
        server: &mut Server,
        method: Method,
        now: Instant,
        attrs: &dyn Fn(&mut Encoder<'_>),
    ) -> Got {
        for _ in 0..2 {
            let tid = self.fresh_tid();
            let packet = self.build(method, tid, attrs);
            let got = self.send_raw(server, &packet, now);
            if let Got::Response(r) = &got {
                let msg = Message::decode(r).expect("response decodes");
                assert_eq!(*msg.tid(), tid);
                if let Some(Ok(e)) = msg.get::<ErrorCode>()
                    && (e.code == 401 || e.code == 438)
                    && let Some(Ok(Nonce(n))) = msg.get::<Nonce>()
                {
                    let first = self.nonce.is_none() || e.code == 438;
                    self.nonce = Some(n.to_owned());
                    if first {
                        continue;
                    }
                }
            }
            return got;
        }
        panic!("challenged twice");
    }
}

pub(crate) fn response(got: Got) -> Vec<u8> {
    match got {
        Got::Response(r) => r,
        other => panic!("expected a response, got {other:?}"),
    }
}

pub(crate) fn code(r: &[u8]) -> Option<u16> {
    Message::decode(r)
        .expect("decodes")
        .get::<ErrorCode>()
        .and_then(Result::ok)
        .map(|e| e.code)
}

pub(crate) fn relay_addr(port: u16) -> SocketAddr {
    SocketAddr::new("192.0.2.10".parse().expect("ip"), port)
}

/// Allocates for `client`, binding relay handle `handle` on `port`.
pub(crate) fn allocate(
    server: &mut Server,
    client: &mut Client,
    now: Instant,
    handle: u32,
    port: u16,
) -> Vec<u8> {
    let got = client.request(server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    let Got::Pending(pending) = got else {
        panic!("expected BindRelays, got {got:?}")
    };
    complete(
        server,
        *pending,
        Ok((RelayHandle(handle), relay_addr(port))),
        None,
        now,
    )
}

pub(crate) fn complete(
    server: &mut Server,
    pending: PendingAllocation,
    primary: Result<(RelayHandle, SocketAddr), BindFailure>,
    reserved: Option<SocketAddr>,
    now: Instant,
) -> Vec<u8> {
    let tuple = pending.tuple;
    let mut out = [0u8; MAX_REPLY_LEN];
    match server.complete_allocate(
        pending,
        BindResult {
            primary,
            additional: None,
            reserved,
        },
        now,
        &mut out,
    ) {
        Command::ToClient {
            tuple: t,
            data: Buf::Output(len),
        } => {
            assert_eq!(t, tuple);
            out[..len].to_vec()
        }
        other => panic!("unexpected {other:?}"),
    }
}

pub(crate) fn events(server: &mut Server) -> Vec<Event> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

/// A datagram from `peer` to relay `handle`: the command and the input buffer.
pub(crate) fn from_peer(
    server: &mut Server,
    handle: u32,
    peer: &str,
    data: &[u8],
    now: Instant,
) -> (Command, Vec<u8>, Vec<u8>) {
    let mut buf = vec![0u8; PEER_HEADROOM + data.len() + PEER_TAILROOM];
    buf[PEER_HEADROOM..PEER_HEADROOM + data.len()].copy_from_slice(data);
    let mut out = vec![0u8; MAX_REPLY_LEN];
    let command = server.handle_peer(
        RelayHandle(handle),
        peer.parse().expect("addr"),
        &mut buf,
        data.len(),
        now,
        &mut out,
    );
    (command, buf, out)
}

pub(crate) fn peer_attr(peer: &str) -> XorPeerAddress {
    XorPeerAddress(peer.parse().expect("addr"))
}

#[test]
fn retransmitted_allocate_gets_the_same_answer_and_another_gets_437() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    let first = allocate(&mut server, &mut c, now, 1, 50000);
    // Retransmit: the same transaction id as the successful Allocate.
    let tid = TransactionId::new([c.next_tid; 12]);
    let again = c.build(Method::ALLOCATE, tid, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    assert_eq!(
        response(c.send_raw(&mut server, &again, now + Duration::from_secs(1))),
        first
    );
    let other = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    assert_eq!(code(&response(other)), Some(437));
}

#[test]
fn failed_authentication_is_rate_limited_per_source() {
    let (mut server, metrics, now) = server_with(config());
    let mut c = Client::new("198.51.100.1:40000", "alice", "guess");
    for _ in 0..10 {
        let r = response(c.request(&mut server, Method::ALLOCATE, now, &|e| {
            e.add(&RequestedTransport::UDP).expect("rt")
        }));
        assert_eq!(code(&r), Some(401));
    }
    let tid = c.fresh_tid();
    let packet = c.build(Method::ALLOCATE, tid, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    assert!(
        matches!(c.send_raw(&mut server, &packet, now), Got::Nothing),
        "11th failure in a second is dropped"
    );
    assert_eq!(
        metrics.dropped_count(Transport::Udp, DropReason::AuthRateLimited),
        1
    );
    // Another source is not affected, and the limit refills.
    let mut d = Client::new("198.51.100.2:40000", "alice", "wonderland");
    assert!(matches!(
        d.request(&mut server, Method::ALLOCATE, now, &|e| e
            .add(&RequestedTransport::UDP)
            .expect("rt")),
        Got::Pending(_)
    ));
    let mut c = Client {
        password: "wonderland".into(),
        ..c
    };
    let got = c.request(
        &mut server,
        Method::ALLOCATE,
        now + Duration::from_secs(2),
        &|e| e.add(&RequestedTransport::UDP).expect("rt"),
    );
    assert!(matches!(got, Got::Pending(_)), "{got:?}");
}

#[test]
fn workers_share_one_failure_budget_per_source() {
    let now = Instant::now();
    let config = Arc::new(config());
    let ledger = Arc::new(Ledger::default());
    let counts = Arc::new(super::tests::Counts::default());
    let mut workers: Vec<Server> = (0..2)
        .map(|_| Server::new(config.clone(), ledger.clone(), counts.clone(), now, UNIX))
        .collect();
    // One source, its requests spread over both workers (as the kernel spreads its ports).
    let mut c = Client::new("198.51.100.1:40000", "alice", "guess");
    let mut refused = 0;
    for i in 0..40 {
        let got = c.request(&mut workers[i % 2], Method::ALLOCATE, now, &|e| {
            e.add(&RequestedTransport::UDP).expect("rt")
        });
        match got {
            Got::Response(r) => {
                assert_eq!(code(&r), Some(401));
                refused += 1;
            }
            Got::Nothing => {}
            Got::Pending(p) => panic!("a wrong password allocated: {p:?}"),
        }
    }
    assert_eq!(refused, 10, "one burst for both workers, not one each");
    assert_eq!(
        counts.dropped_count(Transport::Udp, DropReason::AuthRateLimited),
        30
    );
}

#[test]
fn failures_past_a_full_limiter_share_a_budget_and_are_counted() {
    let now = Instant::now();
    let ledger = Arc::new(Ledger::with_failure_limiter(
        auth::FailureLimiter::with_shards(10, 1.0, 1, 1),
    ));
    let counts = Arc::new(super::tests::Counts::default());
    let mut server = Server::new(Arc::new(config()), ledger, counts.clone(), now, UNIX);
    let allocate = |c: &mut Client, server: &mut Server| {
        c.request(server, Method::ALLOCATE, now, &|e| {
            e.add(&RequestedTransport::UDP).expect("rt")
        })
    };
    let mut first = Client::new("198.51.100.1:40000", "alice", "guess");
    assert!(matches!(
        allocate(&mut first, &mut server),
        Got::Response(_)
    ));
    assert_eq!(
        counts
            .limiter_overflows
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "the first source has room"
    );
    // Every further source is charged to the shared budget: 10 among all of them.
    let mut refused = 0;
    for i in 0..30u8 {
        let mut c = Client::new(&format!("203.0.113.{i}:40000"), "alice", "guess");
        if let Got::Response(r) = allocate(&mut c, &mut server) {
            assert_eq!(code(&r), Some(401));
            refused += 1;
        }
    }
    assert_eq!(refused, 10);
    assert_eq!(
        counts
            .limiter_overflows
            .load(std::sync::atomic::Ordering::Relaxed),
        10
    );
}

#[test]
fn unauthenticated_flood_keeps_no_state() {
    let (mut server, _, now) = server_with(config());
    for i in 0..5000u32 {
        let remote = SocketAddr::new(
            IpAddr::from((0xC633_6400u32 + i).to_be_bytes()),
            1000 + (i % 50000) as u16,
        );
        let c = Client {
            remote,
            ..Client::new("203.0.113.1:1", "x", "y")
        };
        let packet = message_allocate();
        let r = response(c.send_raw(&mut server, &packet, now));
        assert_eq!(code(&r), Some(401));
    }
    assert_eq!(server.allocation_count(), 0);
    assert_eq!(
        server.ledger().failures.tracked(),
        0,
        "challenges are not failures"
    );
    assert!(
        server.recent.is_empty()
            && server
                .ledger
                .expire_reservations(now + Duration::from_secs(3600))
                .is_empty()
    );
}

pub(crate) fn message_allocate() -> Vec<u8> {
    super::tests::message(MessageType::new(Method::ALLOCATE, Class::Request), |e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    })
}

#[test]
fn allocate_attribute_errors() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    type Attrs = Box<dyn Fn(&mut Encoder<'_>)>;
    let cases: Vec<(u16, Attrs)> = vec![
        (400, Box::new(|_| {})),
        (
            // TCP allocations need a TCP or TLS connection (RFC 6062 §5.1); this one is UDP.
            400,
            Box::new(|e| e.add(&RequestedTransport::TCP).expect("rt")),
        ),
        (
            442,
            Box::new(|e| e.add(&RequestedTransport(132)).expect("rt")),
        ),
        (
            440,
            Box::new(|e| {
                e.add(&RequestedTransport::UDP).expect("rt");
                e.add(&RequestedAddressFamily(AddressFamily(3)))
                    .expect("raf");
            }),
        ),
        (
            440,
            Box::new(|e| {
                e.add(&RequestedTransport::UDP).expect("rt");
                e.add(&RequestedAddressFamily(AddressFamily::IPV6))
                    .expect("raf"); // no IPv6 address here
            }),
        ),
        (
            400,
            Box::new(|e| {
                e.add(&RequestedTransport::UDP).expect("rt");
                e.add(&RequestedAddressFamily(AddressFamily::IPV4))
                    .expect("raf");
                e.add(&AdditionalAddressFamily(AddressFamily::IPV6))
                    .expect("aaf");
            }),
        ),
        (
            400,
            Box::new(|e| {
                e.add(&RequestedTransport::UDP).expect("rt");
                e.add(&AdditionalAddressFamily(AddressFamily::IPV4))
                    .expect("aaf");
            }),
        ),
        (
            400,
            Box::new(|e| {
                e.add(&RequestedTransport::UDP).expect("rt");
                e.add(&ReservationToken([1; 8])).expect("token");
                e.add(&EvenPort { reserve: false }).expect("even");
            }),
        ),
        (
            508,
            Box::new(|e| {
                e.add(&RequestedTransport::UDP).expect("rt");
                e.add(&ReservationToken([1; 8])).expect("unknown token");
            }),
        ),
    ];
    for (expected, attrs) in cases {
        let r = response(c.request(&mut server, Method::ALLOCATE, now, &*attrs));
        assert_eq!(code(&r), Some(expected));
        let msg = Message::decode(&r).expect("decodes");
        let Key::Md5(key) = c.key() else {
            unreachable!()
        };
        msg.verify_integrity(&key)
            .expect("errors after authentication are signed too");
    }
    assert_eq!(server.allocation_count(), 0);
    assert_eq!(
        server.ledger.total(),
        0,
        "refused allocations hold no quota"
    );
}

#[test]
fn another_user_on_the_same_tuple_gets_441() {
    let (mut server, _, now) = server_with(config());
    let mut alice = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut alice, now, 1, 50000);
    let mut bob = Client::new("203.0.113.5:40000", "bob", "builder");
    bob.next_tid = 100; // transaction ids of its own, not retransmissions of alice's
    let r = response(bob.request(&mut server, Method::REFRESH, now, &|_| {}));
    assert_eq!(code(&r), Some(441));
    let r = response(
        bob.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("198.51.100.1:1")).expect("p")
        }),
    );
    assert_eq!(code(&r), Some(441));
}

#[test]
fn allocations_expire_and_release_their_sockets() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 5, 50000);
    let _ = events(&mut server);
    server.tick(now + Duration::from_secs(599));
    assert_eq!(server.allocation_count(), 1);
    server.tick(now + Duration::from_secs(600));
    assert_eq!(server.allocation_count(), 0);
    assert_eq!(
        events(&mut server),
        vec![
            Event::AllocationRemoved { tuple: c.tuple() },
            Event::ReleaseRelay(RelayHandle(5))
        ]
    );
    let (command, _, _) = from_peer(
        &mut server,
        5,
        "198.51.100.1:1",
        b"late",
        now + Duration::from_secs(601),
    );
    assert_eq!(command, Command::None);
}

/// Binds channel 0x4000 of `c`'s allocation to 198.51.100.20:6000 (a new binding or a
/// refresh), which must succeed.
pub(crate) fn bind_channel(server: &mut Server, c: &mut Client, now: Instant) {
    let r = response(c.request(server, Method::CHANNEL_BIND, now, &|e| {
        e.add(&ChannelNumber(0x4000)).expect("ch");
        e.add(&peer_attr("198.51.100.20:6000")).expect("peer");
    }));
    assert_eq!(code(&r), None);
}

/// A client at 203.0.113.5:40000 with an allocation (relay handle 4, port 50002) and channel
/// 0x4000 bound to 198.51.100.20:6000.
pub(crate) fn client_with_channel(server: &mut Server, now: Instant) -> Client {
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(server, &mut c, now, 4, 50002);
    bind_channel(server, &mut c, now);
    c
}

/// The channel numbers of the fast-path events: (bound, unbound).
pub(crate) fn channel_events(server: &mut Server) -> (Vec<u16>, Vec<u16>) {
    let mut seen = (Vec::new(), Vec::new());
    for e in events(server) {
        match e {
            Event::ChannelBound { channel, .. } => seen.0.push(channel),
            Event::ChannelUnbound { channel, .. } => seen.1.push(channel),
            _ => {}
        }
    }
    seen
}

#[test]
fn a_channel_leaves_the_kernel_with_its_permission() {
    let (mut server, _, now) = server_with(config());
    let mut c = client_with_channel(&mut server, now);
    assert_eq!(channel_events(&mut server), (vec![0x4000], vec![]));
    // The permission (300 s) expires before the channel (600 s): the kernel, which does not
    // check permissions, must not relay the peer's datagrams any more than userspace does.
    let t1 = now + Duration::from_secs(301);
    server.tick(t1);
    assert_eq!(channel_events(&mut server), (vec![], vec![0x4000]));
    let (a, _, _) = from_peer(&mut server, 4, "198.51.100.20:6000", b"late", t1);
    assert_eq!(a, Command::None);
    server.tick(t1 + Duration::from_secs(1));
    assert_eq!(channel_events(&mut server), (vec![], vec![]), "once");
    // A new permission brings it back.
    let r = response(c.request(&mut server, Method::CREATE_PERMISSION, t1, &|e| {
        e.add(&peer_attr("198.51.100.20:1")).expect("p")
    }));
    assert_eq!(code(&r), None);
    assert_eq!(channel_events(&mut server), (vec![0x4000], vec![]));
    let (a, _, _) = from_peer(&mut server, 4, "198.51.100.20:6000", b"again", t1);
    assert!(matches!(a, Command::ToClient { .. }), "{a:?}");
}

#[test]
fn even_port_reservation_token_round_trip() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&EvenPort { reserve: true }).expect("even");
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    assert!(matches!(
        p.primary,
        RelayRequest::Bind {
            even: true,
            reserve_next: true,
            ..
        }
    ));
    let r = complete(
        &mut server,
        *p,
        Ok((RelayHandle(10), relay_addr(50010))),
        Some(relay_addr(50011)),
        now,
    );
    let token = Message::decode(&r)
        .expect("d")
        .get::<ReservationToken>()
        .expect("token")
        .expect("valid");

    let mut d = Client::new("203.0.113.5:40001", "alice", "wonderland");
    let got = d.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&token).expect("token");
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    assert_eq!(p.primary, RelayRequest::Reserved(relay_addr(50011)));
    // The event loop adopts the held socket under a handle of this shard.
    let r = complete(
        &mut server,
        *p,
        Ok((RelayHandle(11), relay_addr(50011))),
        None,
        now,
    );
    assert_eq!(
        Message::decode(&r).expect("d").get::<XorRelayedAddress>(),
        Some(Ok(XorRelayedAddress(relay_addr(50011))))
    );
    // A token is good once; unused ones expire and release their socket.
    let mut e2 = Client::new("203.0.113.5:40002", "alice", "wonderland");
    let r = response(e2.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&token).expect("token");
    }));
    assert_eq!(code(&r), Some(508));
    let got = e2.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&EvenPort { reserve: true }).expect("even");
    });
    let Got::Pending(p) = got else { panic!() };
    complete(
        &mut server,
        *p,
        Ok((RelayHandle(12), relay_addr(50012))),
        Some(relay_addr(50013)),
        now,
    );
    let _ = events(&mut server);
    server.tick(now + Duration::from_secs(31));
    assert_eq!(
        events(&mut server),
        vec![Event::ReleaseReserved(relay_addr(50013))]
    );

    // Tokens are shared by shards: one made here is good on another shard of the same ledger.
    let ledger = server.ledger.clone();
    let mut other = Server::new(
        server.config.clone(),
        ledger,
        server.counters.clone(),
        now,
        UNIX,
    );
    let mut f = Client::new("203.0.113.5:40003", "alice", "wonderland");
    let got = f.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&EvenPort { reserve: true }).expect("even");
    });
    let Got::Pending(p) = got else { panic!() };
    let r = complete(
        &mut server,
        *p,
        Ok((RelayHandle(14), relay_addr(50014))),
        Some(relay_addr(50015)),
        now,
    );
    let token = Message::decode(&r)
        .expect("d")
        .get::<ReservationToken>()
        .expect("token")
        .expect("valid");
    let mut g = Client::new("203.0.113.5:40004", "alice", "wonderland");
    let got = g.request(&mut other, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&token).expect("token");
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    assert_eq!(p.primary, RelayRequest::Reserved(relay_addr(50015)));
}

#[test]
fn dual_stack_allocations_and_address_error_code() {
    let mut cfg = config();
    cfg.relay_ips = vec![
        "192.0.2.10".parse().expect("ip"),
        "2001:db8::10".parse().expect("ip"),
    ];
    let (mut server, _, now) = server_with(cfg);
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&AdditionalAddressFamily(AddressFamily::IPV6))
            .expect("aaf");
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    assert_eq!(p.additional, Some("2001:db8::10".parse().expect("ip")));
    let v6: SocketAddr = "[2001:db8::10]:50001".parse().expect("a");
    let mut out = [0u8; MAX_REPLY_LEN];
    let bound = BindResult {
        primary: Ok((RelayHandle(1), relay_addr(50000))),
        additional: Some(Ok((RelayHandle(2), v6))),
        reserved: None,
    };
    let Command::ToClient {
        data: Buf::Output(len),
        ..
    } = server.complete_allocate(*p, bound, now, &mut out)
    else {
        panic!()
    };
    let msg = Message::decode(&out[..len]).expect("d");
    let relayed: Vec<_> = msg
        .get_all::<XorRelayedAddress>()
        .map(|r| r.expect("valid").0)
        .collect();
    assert_eq!(relayed, [relay_addr(50000), v6]);

    // Permissions go to the relay of the peer's family.
    let r = response(
        c.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("[2001:db8:1::1]:1")).expect("p")
        }),
    );
    assert_eq!(code(&r), None);
    let (a, _, _) = from_peer(&mut server, 2, "[2001:db8:1::1]:1", b"v6", now);
    assert!(matches!(a, Command::ToClient { .. }));

    // Without an IPv6 address the allocation is IPv4 only, with ADDRESS-ERROR-CODE 440.
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&AdditionalAddressFamily(AddressFamily::IPV6))
            .expect("aaf");
    });
    let Got::Pending(p) = got else { panic!() };
    assert_eq!(p.additional, None);
    let r = complete(
        &mut server,
        *p,
        Ok((RelayHandle(1), relay_addr(50000))),
        None,
        now,
    );
    let msg = Message::decode(&r).expect("d");
    assert_eq!(
        msg.get::<AddressErrorCode>()
            .expect("present")
            .expect("valid")
            .code,
        440
    );
    assert_eq!(msg.get_all::<XorRelayedAddress>().count(), 1);
}

#[test]
fn ipv6_allocation_refresh_family_mismatch_and_external_ip() {
    let mut cfg = config();
    cfg.relay_ips = vec![
        "2001:db8::10".parse().expect("ip"),
        "10.0.0.10".parse().expect("ip"),
    ];
    cfg.external_ips = vec![(
        "198.51.100.77".parse().expect("ip"),
        Some("10.0.0.10".parse().expect("ip")),
    )];
    let (mut server, _, now) = server_with(cfg);
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&RequestedAddressFamily(AddressFamily::IPV6))
            .expect("raf");
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    assert_eq!(
        p.primary,
        RelayRequest::Bind {
            ip: "2001:db8::10".parse().expect("ip"),
            even: false,
            reserve_next: false
        }
    );
    let v6: SocketAddr = "[2001:db8::10]:50001".parse().expect("a");
    complete(&mut server, *p, Ok((RelayHandle(1), v6)), None, now);
    let r = response(c.request(&mut server, Method::REFRESH, now, &|e| {
        e.add(&RequestedAddressFamily(AddressFamily::IPV4))
            .expect("raf")
    }));
    assert_eq!(code(&r), Some(443));
    // An IPv4 peer, even an IPv4-mapped one, on an IPv6-only allocation is a family mismatch.
    let r = response(
        c.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("198.51.100.1:1")).expect("p")
        }),
    );
    assert_eq!(code(&r), Some(443));

    // The private relay address is advertised as the public one.
    let mut d = Client::new("203.0.113.6:40000", "bob", "builder");
    let got = d.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    let Got::Pending(p) = got else { panic!() };
    let r = complete(
        &mut server,
        *p,
        Ok((RelayHandle(2), "10.0.0.10:50002".parse().expect("a"))),
        None,
        now,
    );
    let advertised = Message::decode(&r)
        .expect("d")
        .get::<XorRelayedAddress>()
        .expect("p")
        .expect("v")
        .0;
    assert_eq!(advertised, "198.51.100.77:50002".parse().expect("a"));
}

#[test]
fn sha256_clients_get_sha256_integrity() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    c.sha256 = true;
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    let r = complete(
        &mut server,
        *p,
        Ok((RelayHandle(1), relay_addr(50000))),
        None,
        now,
    );
    let msg = Message::decode(&r).expect("d");
    assert!(msg.get::<MessageIntegrity>().is_none());
    let Key::Sha256(key) = c.key() else {
        unreachable!()
    };
    msg.verify_integrity_sha256(&key)
        .expect("signed with the SHA-256 key");
}

#[test]
fn draining_refuses_new_allocations_only() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 1, 50000);
    server.set_draining(true);
    let mut d = Client::new("203.0.113.6:40000", "bob", "builder");
    let r = response(d.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt")
    }));
    assert_eq!(code(&r), Some(508));
    let r = response(c.request(&mut server, Method::REFRESH, now, &|_| {}));
    assert_eq!(code(&r), None, "existing allocations are served");
    let _ = events(&mut server);
    server.shutdown();
    assert_eq!(
        events(&mut server),
        vec![
            Event::AllocationRemoved { tuple: c.tuple() },
            Event::ReleaseRelay(RelayHandle(1))
        ]
    );
    assert_eq!(server.ledger.total(), 0);
}

#[test]
fn stream_clients_get_padded_channel_data() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    c.transport = Transport::Tcp;
    allocate(&mut server, &mut c, now, 1, 50000);
    let r = response(c.request(&mut server, Method::CHANNEL_BIND, now, &|e| {
        e.add(&ChannelNumber(0x4000)).expect("ch");
        e.add(&peer_attr("198.51.100.20:6000")).expect("p");
    }));
    assert_eq!(code(&r), None);
    let (command, buf, _) = from_peer(&mut server, 1, "198.51.100.20:6000", b"12345", now);
    assert_eq!(
        command,
        Command::ToClient {
            tuple: c.tuple(),
            data: Buf::Input(0..12)
        }
    );
    assert_eq!(
        &buf[..12],
        &[
            0x40, 0x00, 0x00, 0x05, b'1', b'2', b'3', b'4', b'5', 0, 0, 0
        ]
    );
}

#[test]
fn tcp_allocations_connect_connection_bind_and_peer_attempts() {
    use crate::stun::ConnectionId;
    let (mut server, _, now) = server_with(config());
    // A TCP allocation over UDP is refused.
    let mut udp = Client::new("203.0.113.5:40000", "alice", "wonderland");
    let r = response(udp.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::TCP).expect("rt")
    }));
    assert_eq!(code(&r), Some(400));

    let mut c = Client::new("203.0.113.5:40001", "alice", "wonderland");
    c.transport = Transport::Tcp;
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::TCP).expect("rt")
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    assert!(p.tcp);
    complete(
        &mut server,
        *p,
        Ok((RelayHandle(1), relay_addr(50000))),
        None,
        now,
    );

    // Connect: the core asks for the outgoing connection, then answers with a CONNECTION-ID.
    let peer = peer_attr("198.51.100.20:8000");
    let tid = c.fresh_tid();
    let packet = c.build(Method::CONNECT, tid, &|e| e.add(&peer).expect("peer"));
    let inbound = Inbound {
        transport: Transport::Tcp,
        local: c.local,
        remote: c.remote,
        packet: &packet,
    };
    let mut out = [0u8; MAX_REPLY_LEN];
    let Command::Connect(pending) = server.handle_client(&inbound, now, &mut out) else {
        panic!("expected Connect")
    };
    assert_eq!((pending.relay, pending.peer), (RelayHandle(1), peer.0));
    // A second Connect to the same peer while the first is in flight: 446.
    let r = response(c.request(&mut server, Method::CONNECT, now, &|e| {
        e.add(&peer).expect("peer")
    }));
    assert_eq!(code(&r), Some(446));
    let (command, id) = server.complete_connect(*pending, true, now, &mut out);
    let id = id.expect("connection id");
    let Command::ToClient {
        data: Buf::Output(len),
        ..
    } = command
    else {
        panic!()
    };
    let msg = Message::decode(&out[..len]).expect("d");
    assert_eq!(msg.get::<ConnectionId>(), Some(Ok(ConnectionId(id))));

    // ConnectionBind on a new connection, by another user: 441; unknown id: 400; right: bound.
    let bind = |id: u32| move |e: &mut Encoder<'_>| e.add(&ConnectionId(id)).expect("cid");
    let mut bob = Client::new("203.0.113.5:40002", "bob", "builder");
    bob.transport = Transport::Tcp;
    assert_eq!(
        code(&response(bob.request(
            &mut server,
            Method::CONNECTION_BIND,
            now,
            &bind(id)
        ))),
        Some(441)
    );
    let mut data = Client::new("203.0.113.5:40003", "alice", "wonderland");
    data.transport = Transport::Tcp;
    assert_eq!(
        code(&response(data.request(
            &mut server,
            Method::CONNECTION_BIND,
            now,
            &bind(id + 999)
        ))),
        Some(400)
    );
    let tid = data.fresh_tid();
    let packet = data.build(Method::CONNECTION_BIND, tid, &bind(id));
    let inbound = Inbound {
        transport: Transport::Tcp,
        local: data.local,
        remote: data.remote,
        packet: &packet,
    };
    assert!(
        matches!(server.handle_client(&inbound, now, &mut out), Command::BindData { connection_id, .. } if connection_id == id)
    );
    // Bound once only.
    assert_eq!(
        code(&response(data.request(
            &mut server,
            Method::CONNECTION_BIND,
            now,
            &bind(id)
        ))),
        Some(400)
    );

    // A peer connecting to the relayed address needs a permission.
    assert!(
        server
            .peer_connected(
                RelayHandle(1),
                "198.51.100.30:9000".parse().expect("a"),
                now,
                &mut out
            )
            .is_none()
    );
    let r = response(
        c.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("198.51.100.30:1")).expect("p")
        }),
    );
    assert_eq!(code(&r), None);
    let (attempt, command) = server
        .peer_connected(
            RelayHandle(1),
            "198.51.100.30:9000".parse().expect("a"),
            now,
            &mut out,
        )
        .expect("announced");
    let Command::ToClient {
        tuple,
        data: Buf::Output(len),
    } = command
    else {
        panic!()
    };
    assert_eq!(tuple, c.tuple());
    let msg = Message::decode(&out[..len]).expect("d");
    assert_eq!(
        msg.typ(),
        MessageType::new(Method::CONNECTION_ATTEMPT, Class::Indication)
    );
    assert_eq!(msg.get::<ConnectionId>(), Some(Ok(ConnectionId(attempt))));
    // Unbound after 30 s: closed.
    let _ = events(&mut server);
    server.tick(now + Duration::from_secs(31));
    assert_eq!(events(&mut server), vec![Event::CloseTcp(attempt)]);
    // Closing the control connection ends the allocation and its connections.
    server.client_closed(&c.tuple());
    let ev = events(&mut server);
    assert!(
        ev.contains(&Event::CloseTcp(id)) && ev.contains(&Event::ReleaseRelay(RelayHandle(1))),
        "{ev:?}"
    );
    assert_eq!(server.allocation_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// What a kernel fast path mirrors for Send and Data indications: permissions and allocations.

/// The fast-path events (allocations, permissions, channels) in order, as short strings, each
/// checked to be `tuple`'s: `+alloc <relayed>,...`, `-alloc`, `+perm <peer> on <relayed>
/// <seconds after t0>s`, `-perm <peer> on <relayed>`, `+chan <n>`, `-chan <n>`.
pub(crate) fn kernel_events(server: &mut Server, tuple: FiveTuple, t0: Instant) -> Vec<String> {
    kernel_view(events(server), tuple, t0)
}

/// [`kernel_events`] of events already taken.
pub(crate) fn kernel_view(events: Vec<Event>, tuple: FiveTuple, t0: Instant) -> Vec<String> {
    let mut seen = Vec::new();
    for e in events {
        let (t, text) = match e {
            Event::AllocationInstalled { tuple, relays } => {
                let addrs: Vec<String> = relays.iter().map(|r| r.addr.to_string()).collect();
                (tuple, format!("+alloc {}", addrs.join(",")))
            }
            Event::AllocationRemoved { tuple } => (tuple, "-alloc".to_owned()),
            Event::PermissionInstalled {
                tuple,
                relay,
                peer,
                expires,
            } => (
                tuple,
                format!(
                    "+perm {peer} on {} {}s",
                    relay.addr,
                    expires.saturating_duration_since(t0).as_secs()
                ),
            ),
            Event::PermissionRemoved { tuple, relay, peer } => {
                (tuple, format!("-perm {peer} on {}", relay.addr))
            }
            Event::ChannelBound { tuple, channel, .. } => (tuple, format!("+chan {channel:#x}")),
            Event::ChannelUnbound { tuple, channel, .. } => (tuple, format!("-chan {channel:#x}")),
            _ => continue,
        };
        assert_eq!(t, tuple, "{text}");
        seen.push(text);
    }
    seen
}

pub(crate) fn create_permission(
    server: &mut Server,
    c: &mut Client,
    now: Instant,
    peers: &[&'static str],
) {
    let r = response(c.request(server, Method::CREATE_PERMISSION, now, &|e| {
        for p in peers {
            e.add(&peer_attr(p)).expect("peer");
        }
    }));
    assert_eq!(code(&r), None);
}

#[test]
fn allocations_are_mirrored_from_creation_to_deletion() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 4, 50002);
    let ev = events(&mut server);
    assert!(
        matches!(
            ev.as_slice(),
            [Event::AllocationInstalled { tuple, relays }]
                if *tuple == c.tuple()
                    && relays.len() == 1
                    && relays[0].handle == RelayHandle(4)
                    && relays[0].addr == relay_addr(50002)
        ),
        "{ev:?}"
    );
    bind_channel(&mut server, &mut c, now);
    create_permission(&mut server, &mut c, now, &["198.51.100.30:1"]);
    let _ = events(&mut server);
    // A Refresh changes nothing in the kernel.
    let r = response(c.request(&mut server, Method::REFRESH, now, &|_| {}));
    assert_eq!(code(&r), None);
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [] as [String; 0]
    );
    // Deleted: channels, permissions, the allocation, and only then its socket.
    let r = response(c.request(&mut server, Method::REFRESH, now, &|e| {
        e.add(&Lifetime(0)).expect("lt")
    }));
    assert_eq!(code(&r), None);
    let ev = events(&mut server);
    assert_eq!(ev.last(), Some(&Event::ReleaseRelay(RelayHandle(4))));
    assert_eq!(
        kernel_view(ev, c.tuple(), now),
        [
            "-chan 0x4000",
            "-perm 198.51.100.20 on 192.0.2.10:50002",
            "-perm 198.51.100.30 on 192.0.2.10:50002",
            "-alloc"
        ]
    );
}

#[test]
fn permissions_are_mirrored_from_create_permission_and_channel_bind() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 4, 50002);
    let _ = events(&mut server);
    // One per peer IP, whatever the ports.
    create_permission(
        &mut server,
        &mut c,
        now,
        &["198.51.100.31:1", "198.51.100.30:1", "198.51.100.30:2"],
    );
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [
            "+perm 198.51.100.30 on 192.0.2.10:50002 300s",
            "+perm 198.51.100.31 on 192.0.2.10:50002 300s"
        ]
    );
    // A refresh says so, with the new expiry.
    create_permission(
        &mut server,
        &mut c,
        now + Duration::from_secs(100),
        &["198.51.100.30:3"],
    );
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        ["+perm 198.51.100.30 on 192.0.2.10:50002 400s"]
    );
    // A ChannelBind installs (or refreshes) its peer's permission, before the channel.
    bind_channel(&mut server, &mut c, now);
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [
            "+perm 198.51.100.20 on 192.0.2.10:50002 300s",
            "+chan 0x4000"
        ]
    );
    bind_channel(&mut server, &mut c, now + Duration::from_secs(10));
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [
            "+perm 198.51.100.20 on 192.0.2.10:50002 310s",
            "+chan 0x4000"
        ]
    );
    // A refused request installs nothing.
    let r = response(
        c.request(&mut server, Method::CREATE_PERMISSION, now, &|e| {
            e.add(&peer_attr("[2001:db8::1]:1")).expect("p")
        }),
    );
    assert_eq!(code(&r), Some(443));
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [] as [String; 0]
    );
}

#[test]
fn expired_permissions_leave_the_kernel() {
    let (mut server, _, now) = server_with(config());
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    allocate(&mut server, &mut c, now, 4, 50002);
    create_permission(&mut server, &mut c, now, &["198.51.100.30:1"]);
    let t1 = now + Duration::from_secs(100);
    // The channel's permission expires 100 s after the other one.
    bind_channel(&mut server, &mut c, t1);
    let _ = events(&mut server);
    server.tick(now + Duration::from_secs(299));
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [] as [String; 0]
    );
    server.tick(now + Duration::from_secs(300));
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        ["-perm 198.51.100.30 on 192.0.2.10:50002"]
    );
    // The channel (alive for 600 s) leaves the kernel with its permission.
    server.tick(t1 + Duration::from_secs(300));
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        ["-chan 0x4000", "-perm 198.51.100.20 on 192.0.2.10:50002"]
    );
    server.tick(t1 + Duration::from_secs(301));
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [] as [String; 0]
    );
    // An allocation that expires takes what is left with it.
    create_permission(
        &mut server,
        &mut c,
        t1 + Duration::from_secs(400),
        &["198.51.100.31:1"],
    );
    let _ = events(&mut server);
    server.tick(now + Duration::from_secs(600));
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [
            "-chan 0x4000",
            "-perm 198.51.100.31 on 192.0.2.10:50002",
            "-alloc"
        ]
    );
}

#[test]
fn a_dual_allocations_permissions_are_on_the_relayed_address_of_the_peers_family() {
    let mut cfg = config();
    cfg.relay_ips = vec![
        "192.0.2.10".parse().expect("ip"),
        "2001:db8::10".parse().expect("ip"),
    ];
    let (mut server, _, now) = server_with(cfg);
    let mut c = Client::new("203.0.113.5:40000", "alice", "wonderland");
    let got = c.request(&mut server, Method::ALLOCATE, now, &|e| {
        e.add(&RequestedTransport::UDP).expect("rt");
        e.add(&AdditionalAddressFamily(AddressFamily::IPV6))
            .expect("aaf");
    });
    let Got::Pending(p) = got else {
        panic!("{got:?}")
    };
    let mut out = [0u8; MAX_REPLY_LEN];
    let bound = BindResult {
        primary: Ok((RelayHandle(1), relay_addr(50000))),
        additional: Some(Ok((
            RelayHandle(2),
            "[2001:db8::10]:50001".parse().expect("a"),
        ))),
        reserved: None,
    };
    let _ = server.complete_allocate(*p, bound, now, &mut out);
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        ["+alloc 192.0.2.10:50000,[2001:db8::10]:50001"]
    );
    create_permission(
        &mut server,
        &mut c,
        now,
        &["[2001:db8:1::1]:1", "198.51.100.30:1"],
    );
    assert_eq!(
        kernel_events(&mut server, c.tuple(), now),
        [
            "+perm 198.51.100.30 on 192.0.2.10:50000 300s",
            "+perm 2001:db8:1::1 on [2001:db8::10]:50001 300s"
        ]
    );
}
