//! STUN Binding and malformed input through the core; the configuration, servers and packets
//! the other tests of the core (and the metrics module's) start from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::auth::{AuthConfig, StaticUser};
use super::policy::PeerPolicy;
use super::*;
use crate::stun::{
    AttrType, ChangeRequest, Class, Encoder, ErrorCode, MappedAddress, Message, MessageType,
    Method, RequestedTransport, Software, TransactionId, UnknownAttributes, Username,
    XorMappedAddress,
};

pub(crate) const TID: TransactionId = TransactionId::new([0x42; 12]);
pub(crate) const UNIX: u64 = 1_800_000_000;

pub(crate) fn config() -> Config {
    let mut users = HashMap::new();
    users.insert(
        "alice".to_owned(),
        StaticUser::from_password("alice", "example.org", "wonderland"),
    );
    users.insert(
        "bob".to_owned(),
        StaticUser::from_password("bob", "example.org", "builder"),
    );
    Config {
        software: "xdpturn test".into(),
        auth: AuthConfig {
            realm: "example.org".into(),
            users,
            secrets: vec![b"rest secret".to_vec()],
            source: None,
            nonce_key: [9; 32],
            nonce_lifetime: Duration::from_secs(600),
        },
        // The tests' peers are in the documentation ranges, which the built-in rules deny.
        policy: PeerPolicy::new(documentation_ranges(), Vec::new()),
        lifetimes: Lifetimes::default(),
        quotas: Quotas::default(),
        relay_ips: Vec::new(),
        listen_ips: Vec::new(),
        external_ips: Vec::new(),
        streams: Default::default(),
        report_usage: false,
    }
}

/// The documentation ranges (RFC 5737, RFC 3849) the tests take their peers from, as an
/// operator allow.
pub(crate) fn documentation_ranges() -> Vec<ipnet::IpNet> {
    [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
    ]
    .iter()
    .map(|s| s.parse().expect("cidr"))
    .collect()
}

/// The drops the core counted, for the tests here; the other counts are checked on the relay's
/// metrics, in the metrics module's tests.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    dropped: Mutex<HashMap<(Transport, DropReason), u64>>,
    /// Failures charged to the failure limiter's overflow budget.
    pub(crate) limiter_overflows: std::sync::atomic::AtomicU64,
}

impl Counts {
    /// The count of one drop reason.
    pub(crate) fn dropped_count(&self, transport: Transport, reason: DropReason) -> u64 {
        let dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        dropped.get(&(transport, reason)).copied().unwrap_or(0)
    }
}

impl Counters for Counts {
    fn request(&self, _: Transport, _: Method, _: Option<u16>) {}
    fn dropped(&self, transport: Transport, reason: DropReason) {
        let mut dropped = self.dropped.lock().unwrap_or_else(|p| p.into_inner());
        *dropped.entry((transport, reason)).or_insert(0) += 1;
    }
    fn keepalive(&self, _: Transport) {}
    fn auth_failure(&self, _: auth::Rejection) {}
    fn auth_limiter_overflow(&self) {
        self.limiter_overflows
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn peer_denied(&self, _: policy::Denial) {}
    fn quota_rejected(&self, _: QuotaKind) {}
    fn relayed(&self, _: Transport, _: Direction, _: usize) {}
    fn allocation_opened(&self) {}
    fn allocation_closed(&self) {}
    fn permissions_added(&self, _: usize) {}
    fn permissions_removed(&self, _: usize) {}
    fn channels_added(&self, _: usize) {}
    fn channels_removed(&self, _: usize) {}
    fn bandwidth_fallbacks(&self, _: usize) {}
}

/// A server counting into `counters`.
pub(crate) fn server_counting<C: Counters + 'static>(
    config: Config,
    counters: Arc<C>,
) -> (Server, Arc<C>, Instant) {
    let now = Instant::now();
    (
        Server::new(
            Arc::new(config),
            Arc::new(Ledger::default()),
            counters.clone(),
            now,
            UNIX,
        ),
        counters,
        now,
    )
}

pub(crate) fn server_with(config: Config) -> (Server, Arc<Counts>, Instant) {
    server_counting(config, Arc::new(Counts::default()))
}

pub(crate) fn inbound(packet: &[u8]) -> Inbound<'_> {
    Inbound {
        transport: Transport::Udp,
        local: "192.0.2.10:3478".parse().expect("addr"),
        remote: "203.0.113.5:54321".parse().expect("addr"),
        packet,
    }
}

pub(crate) fn message(typ: MessageType, build: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut enc = Encoder::new(&mut buf, typ, TID).expect("header");
    build(&mut enc);
    let len = enc.finish();
    buf.truncate(len);
    buf
}

/// Runs one packet through a fresh server counting into `counters`: the reply (if any) and the
/// counters.
pub(crate) fn run_counting<C: Counters + 'static>(
    packet: &[u8],
    counters: Arc<C>,
) -> (Option<Vec<u8>>, Arc<C>) {
    let (mut server, counters, now) = server_counting(config(), counters);
    let mut out = [0u8; MAX_REPLY_LEN];
    let reply = match server.handle_client(&inbound(packet), now, &mut out) {
        Command::Reply { len } => Some(out[..len].to_vec()),
        Command::None => None,
        other => panic!("unexpected {other:?}"),
    };
    (reply, counters)
}

/// Runs one packet through a fresh server: the reply (if any) and the drop counters.
fn run(packet: &[u8]) -> (Option<Vec<u8>>, Arc<Counts>) {
    run_counting(packet, Arc::new(Counts::default()))
}

fn error_code(reply: &[u8]) -> Option<u16> {
    Message::decode(reply)
        .ok()?
        .get::<ErrorCode>()?
        .ok()
        .map(|e| e.code)
}

fn dropped(metrics: &Counts, reason: DropReason) -> u64 {
    metrics.dropped_count(Transport::Udp, reason)
}

/// A Binding answer carries the mapped addresses, FINGERPRINT only when asked, and never
/// SOFTWARE (which is configured): it answers strangers, so it stays small.
#[test]
fn binding_request_gets_mapped_addresses_no_software_fingerprint_if_asked() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |_| {});
    let reply = run(&req).0.expect("a reply");
    let msg = Message::decode(&reply).expect("reply decodes");
    assert_eq!(msg.typ(), MessageType::new(Method::BINDING, Class::Success));
    assert_eq!(*msg.tid(), TID);
    let remote: SocketAddr = "203.0.113.5:54321".parse().expect("addr");
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(remote)))
    );
    assert_eq!(msg.get::<MappedAddress>(), Some(Ok(MappedAddress(remote))));
    assert_eq!(msg.get::<Software>(), None);
    assert!(!msg.has_fingerprint(), "not asked for");
    assert!(reply.len() <= 3 * req.len(), "{} bytes", reply.len());

    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.fingerprint().expect("fp")
    });
    let reply = run(&req).0.expect("a reply");
    let msg = Message::decode(&reply).expect("reply decodes");
    msg.verify_fingerprint().expect("fingerprint");
    assert_eq!(msg.get::<Software>(), None);
}

/// Over IPv6, XOR-MAPPED-ADDRESS and MAPPED-ADDRESS would make 68 bytes, more than three times
/// a 20-byte request: MAPPED-ADDRESS is left out; a request with FINGERPRINT pays for both.
#[test]
fn ipv6_binding_answer_stays_within_three_times_the_request() {
    let (mut server, _, now) = server_with(config());
    let mut out = [0u8; MAX_REPLY_LEN];
    for (req, mapped) in [
        (
            message(MessageType::new(Method::BINDING, Class::Request), |_| {}),
            false,
        ),
        (
            message(MessageType::new(Method::BINDING, Class::Request), |e| {
                e.fingerprint().expect("fp")
            }),
            true,
        ),
    ] {
        let mut inb = inbound(&req);
        inb.remote = "[2001:db8::5]:4000".parse().expect("addr");
        let Command::Reply { len } = server.handle_client(&inb, now, &mut out) else {
            panic!("no reply")
        };
        assert!(len <= 3 * req.len(), "{len} bytes to {}", req.len());
        let msg = Message::decode(&out[..len]).expect("decodes");
        assert_eq!(
            msg.get::<XorMappedAddress>(),
            Some(Ok(XorMappedAddress(inb.remote)))
        );
        assert_eq!(msg.get::<MappedAddress>().is_some(), mapped);
    }
}

#[test]
fn ipv4_mapped_source_is_reported_as_ipv4() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |_| {});
    let mut cfg = config();
    cfg.software = String::new();
    let (mut server, _, now) = server_with(cfg);
    let mut out = [0u8; MAX_REPLY_LEN];
    let mut inb = inbound(&req);
    inb.remote = "[::ffff:198.51.100.7]:4000".parse().expect("addr");
    let Command::Reply { len } = server.handle_client(&inb, now, &mut out) else {
        panic!("no reply")
    };
    let msg = Message::decode(&out[..len]).expect("decodes");
    let expected: SocketAddr = "198.51.100.7:4000".parse().expect("addr");
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(expected)))
    );
    assert!(
        msg.get::<Software>().is_none(),
        "empty SOFTWARE is not sent"
    );
}

fn classic(build: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
    let mut req = message(MessageType::new(Method::BINDING, Class::Request), build);
    req[4..8].copy_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    req
}

#[test]
fn classic_rfc3489_request_gets_mapped_address_only() {
    let req = classic(|_| {});
    let mut cfg = config();
    cfg.software = "xdpturn 0.1.0".into(); // not sent: Binding answers carry no SOFTWARE
    let (mut server, _, now) = server_with(cfg);
    let mut out = [0u8; MAX_REPLY_LEN];
    let Command::Reply { len } = server.handle_client(&inbound(&req), now, &mut out) else {
        panic!("no reply")
    };
    let reply = &out[..len];
    assert_eq!(&reply[4..20], &req[4..20], "128-bit transaction id echoed");
    let msg = Message::decode(reply).expect("decodes");
    let types: Vec<_> = msg.attributes().map(|a| a.typ).collect();
    assert_eq!(types, [AttrType::MAPPED_ADDRESS]);
}

#[test]
fn unknown_comprehension_required_gets_420_listing_them() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add_raw(AttrType(0x7F01), b"??").expect("add");
        e.add_raw(AttrType(0xFF01), b"optional is fine")
            .expect("add");
    });
    let reply = run(&req).0.expect("reply");
    assert_eq!(error_code(&reply), Some(420));
    let msg = Message::decode(&reply).expect("decodes");
    let unknown = msg
        .get::<UnknownAttributes>()
        .expect("present")
        .expect("valid");
    assert_eq!(unknown.0.iter().collect::<Vec<_>>(), [AttrType(0x7F01)]);
}

/// RFC 8489 §6.3: a message whose length is not sensible is discarded, not answered.
#[test]
fn misframed_requests_are_discarded() {
    let req = message(MessageType::new(Method::ALLOCATE, Class::Request), |e| {
        e.add(&Username("alice")).expect("add");
        e.fingerprint().expect("fp");
    });
    let mut attribute_too_long = req.clone();
    attribute_too_long[22..24].copy_from_slice(&200u16.to_be_bytes());
    let mut length_too_long = req.clone();
    length_too_long[2..4].copy_from_slice(&(req.len() as u16 - 16).to_be_bytes());
    let mut length_too_short = req.clone();
    length_too_short[2..4].copy_from_slice(&(req.len() as u16 - 24).to_be_bytes());
    let mut unaligned = req.clone();
    unaligned[2..4].copy_from_slice(&(req.len() as u16 - 21).to_be_bytes());
    let mut extra_bytes = req.clone();
    extra_bytes.extend_from_slice(&[0; 4]); // after FINGERPRINT, beyond the length
    let mut after_fingerprint = req.clone();
    after_fingerprint.extend_from_slice(&[0x80, 0x22, 0, 0]); // a SOFTWARE after it
    let len = after_fingerprint.len() as u16 - 20;
    after_fingerprint[2..4].copy_from_slice(&len.to_be_bytes());
    for (name, packet) in [
        ("an attribute longer than the message", attribute_too_long),
        ("a length field past the datagram", length_too_long),
        ("a length field short of the datagram", length_too_short),
        ("a length field not a multiple of 4", unaligned),
        ("bytes after the length", extra_bytes),
        ("an attribute after FINGERPRINT", after_fingerprint),
    ] {
        let (reply, m) = run(&packet);
        assert!(reply.is_none(), "{name}: answered");
        assert_eq!(dropped(&m, DropReason::Malformed), 1, "{name}");
    }
}

/// A well-framed request with a malformed attribute value gets a 400 with no reason phrase
/// (RFC 8489 §6.3.1); a method this server does not serve is discarded (§6.3).
#[test]
fn malformed_attribute_value_gets_400_unknown_method_is_discarded() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add_raw(AttrType::XOR_MAPPED_ADDRESS, &[0, 9, 0, 0, 1, 2, 3, 4])
            .expect("add");
    });
    let reply = run(&req).0.expect("reply");
    assert_eq!(error_code(&reply), Some(400));
    let msg = Message::decode(&reply).expect("decodes");
    assert_eq!(*msg.tid(), TID);
    assert_eq!(msg.typ(), MessageType::new(Method::BINDING, Class::Error));
    assert_eq!(
        msg.get::<ErrorCode>()
            .and_then(Result::ok)
            .map(|e| e.reason),
        Some("")
    );
    assert_eq!(reply.len(), 28, "header and a bare ERROR-CODE");
    for method in [0x0FF, Method::SEND.as_u16(), Method::DATA.as_u16()] {
        let req = message(
            MessageType::new(Method::new(method).expect("method"), Class::Request),
            |_| {},
        );
        let (reply, m) = run(&req);
        assert!(reply.is_none(), "method {method:#x}");
        assert_eq!(dropped(&m, DropReason::Malformed), 1);
    }
}

#[test]
fn bad_fingerprint_is_dropped_silently() {
    let mut req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.fingerprint().expect("fp")
    });
    let last = req.len() - 1;
    req[last] ^= 0xFF;
    let (reply, m) = run(&req);
    assert!(reply.is_none());
    assert_eq!(dropped(&m, DropReason::BadFingerprint), 1);
}

#[test]
fn junk_and_stray_channel_data_are_dropped() {
    for (packet, reason) in [
        (&[][..], DropReason::NotStun),
        (&[0xFF; 40][..], DropReason::NotStun),
        (&[0x00, 0x01, 0x00][..], DropReason::NotStun),
        (
            &[0x40, 0x00, 0x00, 0x01, 0xAA][..],
            DropReason::NoAllocation,
        ),
        (&[0x40, 0x00, 0x00, 0x09, 0xAA][..], DropReason::Malformed),
    ] {
        let (reply, m) = run(packet);
        assert!(reply.is_none());
        assert_eq!(dropped(&m, reason), 1, "{packet:?}");
    }
}

#[test]
fn every_truncation_of_a_request_is_dropped_without_panic() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&Username("someone")).expect("add");
        e.add(&Software("client")).expect("add");
        e.fingerprint().expect("fp");
    });
    // Every cut disagrees with the length field: discarded (RFC 8489 §6.3).
    for cut in 0..req.len() {
        let (reply, _) = run(&req[..cut]);
        assert!(reply.is_none(), "cut {cut}");
    }
}

#[test]
fn change_request_is_refused_without_an_alternate_address() {
    let plain = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&ChangeRequest {
            change_ip: false,
            change_port: false,
        })
        .expect("add");
    });
    assert_eq!(
        error_code(&run(&plain).0.expect("reply")),
        None,
        "no change asked: plain answer"
    );
    let change = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&ChangeRequest {
            change_ip: true,
            change_port: true,
        })
        .expect("add");
    });
    let reply = run(&change).0.expect("reply");
    assert_eq!(error_code(&reply), Some(420));
    let msg = Message::decode(&reply).expect("decodes");
    let unknown = msg
        .get::<UnknownAttributes>()
        .expect("present")
        .expect("valid");
    assert_eq!(
        unknown.0.iter().collect::<Vec<_>>(),
        [AttrType::CHANGE_REQUEST]
    );

    // A classic client asking the same gets the error with its own transaction id, RFC 3489
    // padding, and no FINGERPRINT.
    let req = classic(|e| {
        e.add(&ChangeRequest {
            change_ip: true,
            change_port: false,
        })
        .expect("add")
    });
    let reply = run(&req).0.expect("reply");
    assert_eq!(&reply[4..20], &req[4..20]);
    let msg = Message::decode(&reply).expect("decodes");
    assert!(!msg.has_fingerprint());
    assert_eq!(
        msg.raw(AttrType::ERROR_CODE).expect("error").value.len() % 4,
        0
    );
    assert_eq!(
        msg.raw(AttrType::UNKNOWN_ATTRIBUTES)
            .expect("unknown")
            .value,
        [0x00, 0x03, 0x00, 0x03]
    );
}

/// A realm too long for the challenge to fit 3x the smallest real request still lets clients
/// in: an Allocate with REQUESTED-TRANSPORT (28 bytes) gets its 401, over the budget; a bare
/// header (20 bytes), which no client sends, is refused it and counted.
#[test]
fn a_long_realm_still_challenges_requests_with_an_attribute() {
    let mut cfg = config();
    cfg.auth.realm = "a-realm-that-is-longer-than-thirty-two-bytes.example.org".into();
    assert!(cfg.auth.realm.len() > super::REALM_WITHIN_BUDGET);
    let allocate = MessageType::new(Method::ALLOCATE, Class::Request);
    let req = message(allocate, |e| {
        e.add(&RequestedTransport(17)).expect("transport")
    });
    assert_eq!(req.len(), super::MIN_ATTRIBUTED_REQUEST);
    let (mut server, counts, now) = server_with(cfg.clone());
    let mut out = [0u8; MAX_REPLY_LEN];
    let Command::Reply { len } = server.handle_client(&inbound(&req), now, &mut out) else {
        panic!("no challenge for a 28-byte Allocate with a long realm")
    };
    assert!(len > 3 * req.len(), "over the budget: {len} bytes");
    assert_eq!(error_code(&out[..len]), Some(401));
    assert_eq!(dropped(&counts, DropReason::Amplification), 0);

    let bare = message(allocate, |_| {});
    let (mut server, counts, now) = server_with(cfg);
    assert!(matches!(
        server.handle_client(&inbound(&bare), now, &mut out),
        Command::None
    ));
    assert_eq!(dropped(&counts, DropReason::Amplification), 1);
}
