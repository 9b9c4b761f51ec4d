use std::net::SocketAddr;

use super::*;
use crate::stun::{
    AttrType, Encoder, ErrorCode, MessageType, Software, TransactionId, UnknownAttributes,
    Username, XorMappedAddress,
};

const TID: TransactionId = TransactionId::new([0x42; 12]);

fn inbound(packet: &[u8]) -> Inbound<'_> {
    Inbound {
        transport: Transport::Udp,
        local: "192.0.2.10:3478".parse().expect("addr"),
        remote: "203.0.113.5:54321".parse().expect("addr"),
        packet,
    }
}

fn message(typ: MessageType, build: impl FnOnce(&mut Encoder<'_>)) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut enc = Encoder::new(&mut buf, typ, TID).expect("header");
    build(&mut enc);
    let len = enc.finish();
    buf.truncate(len);
    buf
}

fn run(packet: &[u8]) -> (Outcome, Vec<u8>) {
    let mut server = Server::new("xdpturn test");
    let mut out = [0u8; MAX_REPLY_LEN];
    let outcome = server.handle(&inbound(packet), &mut out);
    let reply = match outcome {
        Outcome::Reply { len, .. } => out[..len].to_vec(),
        _ => Vec::new(),
    };
    (outcome, reply)
}

#[test]
fn binding_request_gets_mapped_addresses_software_and_fingerprint() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |_| {});
    let (outcome, reply) = run(&req);
    assert_eq!(
        outcome,
        Outcome::Reply {
            len: reply.len(),
            method: Method::BINDING,
            code: None
        }
    );
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
    let mut server = Server::new("");
    let mut out = [0u8; MAX_REPLY_LEN];
    let mut inb = inbound(&req);
    inb.remote = "[::ffff:198.51.100.7]:4000".parse().expect("addr");
    let Outcome::Reply { len, .. } = server.handle(&inb, &mut out) else {
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

#[test]
fn classic_rfc3489_request_gets_mapped_address_only() {
    let mut req = vec![0x00, 0x01, 0x00, 0x00];
    req.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    req.extend_from_slice(&[0x55; 12]);
    let (outcome, reply) = run(&req);
    assert!(matches!(outcome, Outcome::Reply { code: None, .. }));
    assert_eq!(&reply[4..20], &req[4..20], "128-bit transaction id echoed");
    let msg = Message::decode(&reply).expect("decodes");
    let types: Vec<_> = msg.attributes().map(|a| a.typ).collect();
    assert_eq!(types, [AttrType::MAPPED_ADDRESS, AttrType::SOFTWARE]);
    // RFC 3489 attribute lengths are multiples of 4: "xdpturn test" is 12 bytes already, so
    // check the padding with a 13-byte name.
    let mut server = Server::new("xdpturn 0.1.0");
    let mut out = [0u8; MAX_REPLY_LEN];
    let Outcome::Reply { len, .. } = server.handle(&inbound(&req), &mut out) else {
        panic!("no reply")
    };
    let msg = Message::decode(&out[..len]).expect("decodes");
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
    let (outcome, reply) = run(&req);
    assert!(matches!(
        outcome,
        Outcome::Reply {
            code: Some(420),
            ..
        }
    ));
    let msg = Message::decode(&reply).expect("decodes");
    assert_eq!(msg.class(), Class::Error);
    assert_eq!(
        msg.get::<ErrorCode>().map(|e| e.map(|e| e.code)),
        Some(Ok(420))
    );
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
    // Claim the attribute is longer than the message.
    req[22..24].copy_from_slice(&200u16.to_be_bytes());
    let (outcome, reply) = run(&req);
    assert!(matches!(
        outcome,
        Outcome::Reply {
            code: Some(400),
            ..
        }
    ));
    let msg = Message::decode(&reply).expect("decodes");
    assert_eq!(*msg.tid(), TID);
    assert_eq!(msg.typ(), MessageType::new(Method::BINDING, Class::Error));
}

#[test]
fn malformed_attribute_value_gets_400() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add_raw(AttrType::XOR_MAPPED_ADDRESS, &[0, 9, 0, 0, 1, 2, 3, 4])
            .expect("add");
    });
    let (outcome, _) = run(&req);
    assert!(matches!(
        outcome,
        Outcome::Reply {
            code: Some(400),
            ..
        }
    ));
}

#[test]
fn unsupported_method_gets_400() {
    let req = message(
        MessageType::new(Method::new(0x0FF).expect("method"), Class::Request),
        |_| {},
    );
    let (outcome, _) = run(&req);
    assert!(matches!(
        outcome,
        Outcome::Reply {
            code: Some(400),
            ..
        }
    ));
}

#[test]
fn responses_and_indications_are_dropped_keepalives_consumed() {
    let resp = message(MessageType::new(Method::BINDING, Class::Success), |_| {});
    assert_eq!(
        run(&resp).0,
        Outcome::Dropped(DropReason::UnexpectedResponse)
    );
    let err = message(MessageType::new(Method::BINDING, Class::Error), |_| {});
    assert_eq!(
        run(&err).0,
        Outcome::Dropped(DropReason::UnexpectedResponse)
    );
    let send = message(MessageType::new(Method::SEND, Class::Indication), |_| {});
    assert_eq!(
        run(&send).0,
        Outcome::Dropped(DropReason::UnexpectedIndication)
    );
    let keepalive = message(MessageType::new(Method::BINDING, Class::Indication), |e| {
        e.fingerprint().expect("fp")
    });
    assert_eq!(
        run(&keepalive).0,
        Outcome::Consumed {
            method: Method::BINDING
        }
    );
}

#[test]
fn bad_fingerprint_is_dropped_silently() {
    let mut req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.fingerprint().expect("fp")
    });
    let last = req.len() - 1;
    req[last] ^= 0xFF;
    assert_eq!(run(&req).0, Outcome::Dropped(DropReason::BadFingerprint));
}

#[test]
fn junk_channel_data_and_empty_are_dropped() {
    assert_eq!(run(&[]).0, Outcome::Dropped(DropReason::NotStun));
    assert_eq!(run(&[0xFF; 40]).0, Outcome::Dropped(DropReason::NotStun));
    assert_eq!(
        run(&[0x40, 0x00, 0x00, 0x01, 0xAA]).0,
        Outcome::Dropped(DropReason::UnknownChannel)
    );
    assert_eq!(
        run(&[0x00, 0x01, 0x00]).0,
        Outcome::Dropped(DropReason::NotStun)
    );
    let mut resp = message(MessageType::new(Method::BINDING, Class::Success), |_| {});
    resp.push(0);
    assert_eq!(run(&resp).0, Outcome::Dropped(DropReason::Malformed));
}

#[test]
fn every_truncation_of_a_request_is_answered_or_dropped_without_panic() {
    let req = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&Username("someone")).expect("add");
        e.add(&Software("client")).expect("add");
        e.fingerprint().expect("fp");
    });
    for cut in 0..req.len() {
        let (outcome, reply) = run(&req[..cut]);
        if cut >= 20 {
            assert!(
                matches!(
                    outcome,
                    Outcome::Reply {
                        code: Some(400),
                        ..
                    }
                ),
                "cut {cut}: {outcome:?}"
            );
            assert_eq!(*Message::decode(&reply).expect("decodes").tid(), TID);
        } else {
            assert!(
                matches!(outcome, Outcome::Dropped(_)),
                "cut {cut}: {outcome:?}"
            );
        }
    }
}

#[test]
fn change_request_is_refused_without_an_alternate_address() {
    use crate::stun::ChangeRequest;
    let plain = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&ChangeRequest {
            change_ip: false,
            change_port: false,
        })
        .expect("add");
    });
    assert!(
        matches!(run(&plain).0, Outcome::Reply { code: None, .. }),
        "no change asked: plain answer"
    );
    let change = message(MessageType::new(Method::BINDING, Class::Request), |e| {
        e.add(&ChangeRequest {
            change_ip: true,
            change_port: true,
        })
        .expect("add");
    });
    let (outcome, reply) = run(&change);
    assert!(matches!(
        outcome,
        Outcome::Reply {
            code: Some(420),
            ..
        }
    ));
    let msg = Message::decode(&reply).expect("decodes");
    let unknown = msg
        .get::<UnknownAttributes>()
        .expect("present")
        .expect("valid");
    assert_eq!(
        unknown.0.iter().collect::<Vec<_>>(),
        [AttrType::CHANGE_REQUEST]
    );

    // A classic client asking the same gets the error with its own transaction id.
    let mut classic = change.clone();
    classic[4..8].copy_from_slice(&[1, 2, 3, 4]);
    let (outcome, reply) = run(&classic);
    assert!(matches!(
        outcome,
        Outcome::Reply {
            code: Some(420),
            ..
        }
    ));
    assert_eq!(&reply[4..20], &classic[4..20]);
    let msg = Message::decode(&reply).expect("decodes");
    assert!(!msg.has_fingerprint());
    let error = msg.raw(AttrType::ERROR_CODE).expect("error code");
    assert_eq!(error.value.len() % 4, 0, "RFC 3489 reason padded");
    let unknown = msg
        .raw(AttrType::UNKNOWN_ATTRIBUTES)
        .expect("unknown attributes");
    assert_eq!(
        unknown.value,
        [0x00, 0x03, 0x00, 0x03],
        "RFC 3489: even count, last repeated"
    );
}
