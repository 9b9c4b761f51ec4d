//! RFC 5769 test vectors: each decodes, verifies integrity and fingerprint, and re-encodes
//! byte-for-byte (MESSAGE-INTEGRITY and FINGERPRINT recomputed, not copied).

use std::net::SocketAddr;

use relay::stun::{
    AttrType, Attribute, Class, Encoder, IceControlled, Message, Method, Nonce, Priority, Realm,
    Software, Username, XorMappedAddress, long_term_key_md5, short_term_key,
};

const SHORT_TERM_PASSWORD: &str = "VOkJxbRl1RmTxUk/WvJxBt";

/// RFC 5769 §2.1 Sample Request.
const SAMPLE_REQUEST: &[u8] = b"\x00\x01\x00\x58\x21\x12\xa4\x42\
\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae\
\x80\x22\x00\x10STUN test client\
\x00\x24\x00\x04\x6e\x00\x01\xff\
\x80\x29\x00\x08\x93\x2f\xf9\xb1\x51\x26\x3b\x36\
\x00\x06\x00\x09\x65\x76\x74\x6a\x3a\x68\x36\x76\x59\x20\x20\x20\
\x00\x08\x00\x14\x9a\xea\xa7\x0c\xbf\xd8\xcb\x56\x78\x1e\xf2\xb5\xb2\xd3\xf2\x49\xc1\xb5\x71\xa2\
\x80\x28\x00\x04\xe5\x7a\x3b\xcf";

/// RFC 5769 §2.2 Sample IPv4 Response.
const IPV4_RESPONSE: &[u8] = b"\x01\x01\x00\x3c\x21\x12\xa4\x42\
\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae\
\x80\x22\x00\x0b\x74\x65\x73\x74\x20\x76\x65\x63\x74\x6f\x72\x20\
\x00\x20\x00\x08\x00\x01\xa1\x47\xe1\x12\xa6\x43\
\x00\x08\x00\x14\x2b\x91\xf5\x99\xfd\x9e\x90\xc3\x8c\x74\x89\xf9\x2a\xf9\xba\x53\xf0\x6b\xe7\xd7\
\x80\x28\x00\x04\xc0\x7d\x4c\x96";

/// RFC 5769 §2.3 Sample IPv6 Response.
const IPV6_RESPONSE: &[u8] = b"\x01\x01\x00\x48\x21\x12\xa4\x42\
\xb7\xe7\xa7\x01\xbc\x34\xd6\x86\xfa\x87\xdf\xae\
\x80\x22\x00\x0b\x74\x65\x73\x74\x20\x76\x65\x63\x74\x6f\x72\x20\
\x00\x20\x00\x14\x00\x02\xa1\x47\x01\x13\xa9\xfa\xa5\xd3\xf1\x79\xbc\x25\xf4\xb5\xbe\xd2\xb9\xd9\
\x00\x08\x00\x14\xa3\x82\x95\x4e\x4b\xe6\x7b\xf1\x17\x84\xc9\x7c\x82\x92\xc2\x75\xbf\xe3\xed\x41\
\x80\x28\x00\x04\xc8\xfb\x0b\x4c";

/// RFC 5769 §2.4 Sample Request with Long-Term Authentication.
const LONG_TERM_REQUEST: &[u8] = b"\x00\x01\x00\x60\x21\x12\xa4\x42\
\x78\xad\x34\x33\xc6\xad\x72\xc0\x29\xda\x41\x2e\
\x00\x06\x00\x12\xe3\x83\x9e\xe3\x83\x88\xe3\x83\xaa\xe3\x83\x83\xe3\x82\xaf\xe3\x82\xb9\x00\x00\
\x00\x15\x00\x1cf//499k954d6OL34oL9FSTvy64sA\
\x00\x14\x00\x0bexample.org\x00\
\x00\x08\x00\x14\xf6\x70\x24\x65\x6d\xd6\x4a\x3e\x02\xb8\xe0\x71\x2e\x85\xc9\xa2\x8c\xa8\x96\x66";

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
