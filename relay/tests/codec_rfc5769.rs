//! RFC 5769 test vectors: each decodes, verifies integrity and fingerprint, and re-encodes
//! byte-for-byte (MESSAGE-INTEGRITY and FINGERPRINT recomputed, not copied).

use std::net::SocketAddr;

use relay::stun::{
    AttrType, Attribute, Class, Encoder, IceControlled, Message, Method, Nonce, Priority, Realm,
    Software, Username, XorMappedAddress, long_term_key_md5, short_term_key,
};

#[path = "common/rfc5769.rs"]
mod rfc5769;

use rfc5769::{IPV4_RESPONSE, IPV6_RESPONSE, LONG_TERM_REQUEST, SAMPLE_REQUEST};

const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// Re-encodes every attribute of `msg` in order with the same padding byte, recomputing
/// MESSAGE-INTEGRITY with `key` and FINGERPRINT.
fn reencode(msg: &Message<'_>, key: &[u8], padding: u8) -> Vec<u8> {
    let mut buf = vec![0u8; 1500];
    let header = msg.header();
    let mut enc =
        Encoder::with_cookie(&mut buf, header.typ, header.cookie, header.tid).expect("header");
    enc.set_padding_byte(padding);
    for attr in msg.decoded() {
        let attr = attr.expect("every vector attribute decodes");
        match attr.typ() {
            AttrType::MESSAGE_INTEGRITY => enc.message_integrity(key).expect("integrity"),
            AttrType::FINGERPRINT => enc.fingerprint().expect("fingerprint"),
            _ => enc.add_any(&attr).expect("attribute"),
        }
    }
    let len = enc.finish();
    buf.truncate(len);
    buf
}

#[test]
fn sample_request() {
    let msg = Message::decode(SAMPLE_REQUEST).expect("decodes");
    assert_eq!(msg.method(), Method::BINDING);
    assert_eq!(msg.class(), Class::Request);
    assert_eq!(
        msg.get::<Software>(),
        Some(Ok(Software("STUN test client")))
    );
    assert_eq!(msg.get::<Priority>(), Some(Ok(Priority(0x6e0001ff))));
    assert_eq!(
        msg.get::<IceControlled>(),
        Some(Ok(IceControlled(0x932ff9b151263b36)))
    );
    assert_eq!(msg.get::<Username>(), Some(Ok(Username("evtj:h6vY"))));
    assert!(msg.unknown_comprehension_required().is_empty());

    let key = short_term_key(SHORT_TERM_PASSWORD);
    msg.verify_integrity(&key).expect("integrity verifies");
    msg.verify_fingerprint().expect("fingerprint verifies");
    assert!(msg.verify_integrity(b"wrong password").is_err());

    assert_eq!(reencode(&msg, &key, 0x20), SAMPLE_REQUEST);
}

#[test]
fn ipv4_response() {
    let msg = Message::decode(IPV4_RESPONSE).expect("decodes");
    assert_eq!(
        (msg.method(), msg.class()),
        (Method::BINDING, Class::Success)
    );
    let expected: SocketAddr = "192.0.2.1:32853".parse().expect("addr");
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(expected)))
    );
    assert_eq!(msg.get::<Software>(), Some(Ok(Software("test vector"))));

    let key = short_term_key(SHORT_TERM_PASSWORD);
    msg.verify_integrity(&key).expect("integrity verifies");
    msg.verify_fingerprint().expect("fingerprint verifies");
    assert_eq!(reencode(&msg, &key, 0x20), IPV4_RESPONSE);
}

#[test]
fn ipv6_response() {
    let msg = Message::decode(IPV6_RESPONSE).expect("decodes");
    let expected: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .expect("addr");
    assert_eq!(
        msg.get::<XorMappedAddress>(),
        Some(Ok(XorMappedAddress(expected)))
    );

    let key = short_term_key(SHORT_TERM_PASSWORD);
    msg.verify_integrity(&key).expect("integrity verifies");
    msg.verify_fingerprint().expect("fingerprint verifies");
    assert_eq!(reencode(&msg, &key, 0x20), IPV6_RESPONSE);
}

#[test]
fn long_term_request() {
    let msg = Message::decode(LONG_TERM_REQUEST).expect("decodes");
    let username = "\u{30DE}\u{30C8}\u{30EA}\u{30C3}\u{30AF}\u{30B9}";
    assert_eq!(msg.get::<Username>(), Some(Ok(Username(username))));
    assert_eq!(
        msg.get::<Nonce>(),
        Some(Ok(Nonce("f//499k954d6OL34oL9FSTvy64sA")))
    );
    assert_eq!(msg.get::<Realm>(), Some(Ok(Realm("example.org"))));
    assert!(!msg.has_fingerprint());

    // The password as given, before preparation; the codec prepares it as RFC 5769 says.
    let key = long_term_key_md5(username, "example.org", "The\u{00AD}M\u{00AA}tr\u{2168}");
    assert_eq!(key, long_term_key_md5(username, "example.org", "TheMatrIX"));
    msg.verify_integrity(&key).expect("integrity verifies");
    assert!(
        msg.verify_fingerprint().is_err(),
        "no fingerprint to verify"
    );
    assert_eq!(reencode(&msg, &key, 0x00), LONG_TERM_REQUEST);
}

#[test]
fn tampering_breaks_integrity_and_fingerprint() {
    let key = short_term_key(SHORT_TERM_PASSWORD);
    for offset in 20..SAMPLE_REQUEST.len() - 8 {
        let mut bytes = SAMPLE_REQUEST.to_vec();
        bytes[offset] ^= 0x01;
        // A flipped bit may make the message undecodable; if it decodes, it must not verify.
        if let Ok(msg) = Message::decode(&bytes) {
            let integrity_ok = msg.verify_integrity(&key).is_ok();
            let fingerprint_ok = msg.verify_fingerprint().is_ok();
            assert!(
                !(integrity_ok && fingerprint_ok),
                "flip at {offset} went unnoticed"
            );
        }
    }
}

#[test]
fn every_vector_attribute_is_typed() {
    for vector in [
        SAMPLE_REQUEST,
        IPV4_RESPONSE,
        IPV6_RESPONSE,
        LONG_TERM_REQUEST,
    ] {
        let msg = Message::decode(vector).expect("decodes");
        for attr in msg.decoded() {
            let attr = attr.expect("decodes");
            assert!(!matches!(attr, Attribute::Unknown { .. }), "{attr:?}");
        }
    }
}
