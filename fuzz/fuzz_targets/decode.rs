//! `Message::decode` on arbitrary bytes.
//!
//! Beyond "never panics": a decoded message's attributes, when they all decode, re-encode into a
//! message that decodes to the same values; and a failed decode that reports a header reports
//! the header the bytes actually carry.

#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::stun::{AttrType, Attribute, Encoder, Header, MAX_MESSAGE_LEN, Message};

/// Any key will do: the verify functions must not panic whatever the message claims.
const KEY: &[u8] = b"fuzz-key-0123456789";

fuzz_target!(|data: &[u8]| {
    let msg = match Message::decode(data) {
        Ok(msg) => msg,
        Err(err) => {
            if let Some(h) = err.header {
                assert_eq!(
                    Some(h),
                    Header::peek(data),
                    "error header differs from the bytes' header"
                );
            }
            let _ = err.to_string();
            return;
        }
    };

    let _ = format!("{msg:?}");
    let _ = msg.verify_integrity(KEY);
    let _ = msg.verify_integrity_sha256(KEY);
    let _ = msg.verify_fingerprint();
    let _ = msg.unknown_comprehension_required().len();

    let mut attrs = Vec::new();
    for attr in msg.decoded() {
        match attr {
            Ok(attr) => {
                let _ = format!("{attr:?}");
                attrs.push(attr);
            }
            Err(err) => {
                // One malformed attribute: nothing to round-trip.
                let _ = err.to_string();
                return;
            }
        }
    }
    let skipped = |t: AttrType| {
        t == AttrType::MESSAGE_INTEGRITY
            || t == AttrType::MESSAGE_INTEGRITY_SHA256
            || t == AttrType::FINGERPRINT
    };
    attrs.retain(|a| !skipped(a.typ()));

    let header = msg.header();
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut enc = Encoder::with_cookie(&mut buf, header.typ, header.cookie, header.tid)
        .expect("the buffer holds a header");
    for attr in &attrs {
        // Every decoded value is encodable, and re-encoding never grows it, so it fits.
        enc.add_any(attr)
            .unwrap_or_else(|e| panic!("re-encoding {attr:?}: {e}"));
    }
    let len = enc.finish();

    let again = Message::decode(&buf[..len])
        .unwrap_or_else(|e| panic!("re-encoded message does not decode: {e} ({:?})", e.kind));
    assert_eq!(again.typ(), header.typ);
    assert_eq!(again.tid(), &header.tid);
    assert_eq!(again.header().cookie, header.cookie);
    let attrs_again: Vec<Attribute<'_>> = again
        .decoded()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("re-encoded attribute does not decode: {e}"));
    assert_eq!(attrs, attrs_again, "attributes changed in a round trip");
    assert_eq!(
        msg.unknown_comprehension_required(),
        again.unknown_comprehension_required(),
        "unknown comprehension-required attributes changed in a round trip"
    );
});
