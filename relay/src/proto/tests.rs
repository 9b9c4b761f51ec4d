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
    Method, Software, TransactionId, UnknownAttributes, Username, XorMappedAddress,
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
        policy: PeerPolicy::new(Vec::new(), Vec::new()),
        lifetimes: Lifetimes::default(),
        quotas: Quotas::default(),
        relay_ips: Vec::new(),
        listen_ips: Vec::new(),
        external_ips: Vec::new(),
    }
}

/// The drops the core counted, for the tests here; the other counts are checked on the relay's
/// metrics, in the metrics module's tests.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    dropped: Mutex<HashMap<(Transport, DropReason), u64>>,
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

#[test]
fn binding_request_gets_mapped_addresses_software_and_fingerprint() {
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
    assert_eq!(msg.get::<Software>(), Some(Ok(Software("xdpturn test"))));
    msg.verify_fingerprint().expect("fingerprint");
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
fn classic_rfc3489_request_gets_mapped_address_only_padded() {
    let req = classic(|_| {});
    let mut cfg = config();
    cfg.software = "xdpturn 0.1.0".into(); // 13 bytes: RFC 3489 needs it padded to 16
    let (mut server, _, now) = server_with(cfg);
    let mut out = [0u8; MAX_REPLY_LEN];
    let Command::Reply { len } = server.handle_client(&inbound(&req), now, &mut out) else {
        panic!("no reply")
    };
    let reply = &out[..len];
    assert_eq!(&reply[4..20], &req[4..20], "128-bit transaction id echoed");
    let msg = Message::decode(reply).expect("decodes");
    let types: Vec<_> = msg.attributes().map(|a| a.typ).collect();
    assert_eq!(types, [AttrType::MAPPED_ADDRESS, AttrType::SOFTWARE]);
    assert_eq!(
        msg.get::<Software>(),
        Some(Ok(Software("xdpturn 0.1.0   ")))
    );
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

#[test]
fn malformed_request_gets_400_with_its_transaction_id() {
    let mut req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&Username("alice")).expect("add");
    });
    req[22..24].copy_from_slice(&200u16.to_be_bytes()); // attribute longer than the message
    let reply = run(&req).0.expect("reply");
    assert_eq!(error_code(&reply), Some(400));
    let msg = Message::decode(&reply).expect("decodes");
    assert_eq!(*msg.tid(), TID);
    assert_eq!(msg.typ(), MessageType::new(Method::BINDING, Class::Error));
}

#[test]
fn malformed_attribute_value_and_unknown_method_get_400() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add_raw(AttrType::XOR_MAPPED_ADDRESS, &[0, 9, 0, 0, 1, 2, 3, 4])
            .expect("add");
    });
    assert_eq!(error_code(&run(&req).0.expect("reply")), Some(400));
    let req = message(
        MessageType::new(Method::new(0x0FF).expect("method"), Class::Request),
        |_| {},
    );
    assert_eq!(error_code(&run(&req).0.expect("reply")), Some(400));
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
fn every_truncation_of_a_request_is_answered_or_dropped_without_panic() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&Username("someone")).expect("add");
        e.add(&Software("client")).expect("add");
        e.fingerprint().expect("fp");
    });
    for cut in 0..req.len() {
        let (reply, _) = run(&req[..cut]);
        if cut >= 20 {
            let reply = reply.expect("a 400");
            assert_eq!(error_code(&reply), Some(400));
            assert_eq!(*Message::decode(&reply).expect("decodes").tid(), TID);
        } else {
            assert!(reply.is_none(), "cut {cut}");
        }
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
