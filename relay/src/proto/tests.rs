//! STUN Binding and malformed input through the core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{AuthConfig, StaticUser};
use super::policy::PeerPolicy;
use super::*;
use crate::metrics::Metrics;
use crate::stun::{
    AttrType, ChangeRequest, Encoder, ErrorCode, MessageType, Software, TransactionId,
    UnknownAttributes, Username, XorMappedAddress,
};

pub(super) const TID: TransactionId = TransactionId::new([0x42; 12]);
pub(super) const UNIX: u64 = 1_800_000_000;

pub(super) fn config() -> Config {
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

pub(super) fn server_with(config: Config) -> (Server, Arc<Metrics>, Instant) {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let now = Instant::now();
    (
        Server::new(
            Arc::new(config),
            Arc::new(Ledger::default()),
            metrics.clone(),
            now,
            UNIX,
        ),
        metrics,
        now,
    )
}

pub(super) fn inbound(packet: &[u8]) -> Inbound<'_> {
    Inbound {
        transport: Transport::Udp,
        local: "192.0.2.10:3478".parse().expect("addr"),
        remote: "203.0.113.5:54321".parse().expect("addr"),
        packet,
    }
}

pub(super) fn message(typ: MessageType, build: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let mut enc = Encoder::new(&mut buf, typ, TID).expect("header");
    build(&mut enc);
    let len = enc.finish();
    buf.truncate(len);
    buf
}

/// Runs one packet through a fresh server: the reply (if any) and the drop counters.
fn run(packet: &[u8]) -> (Option<Vec<u8>>, Arc<Metrics>) {
    let (mut server, metrics, now) = server_with(config());
    let mut out = [0u8; MAX_REPLY_LEN];
    let reply = match server.handle_client(&inbound(packet), now, &mut out) {
        Command::Reply { len } => Some(out[..len].to_vec()),
        Command::None => None,
        other => panic!("unexpected {other:?}"),
    };
    (reply, metrics)
}

fn error_code(reply: &[u8]) -> Option<u16> {
    Message::decode(reply)
        .ok()?
        .get::<ErrorCode>()?
        .ok()
        .map(|e| e.code)
}

fn dropped(metrics: &Metrics, reason: DropReason) -> u64 {
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
