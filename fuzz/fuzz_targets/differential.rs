//! Our STUN codec (`relay::stun`) against an independent one, the `stun_codec` crate (MIT), on
//! the same bytes.
//!
//! On input that both decode as a STUN message they must agree on the class, the method, the
//! transaction ID and the set of attribute types, and, for every common attribute both decode
//! (the first of its type), on its value: the addresses of MAPPED-ADDRESS, XOR-MAPPED-ADDRESS,
//! ALTERNATE-SERVER, XOR-PEER-ADDRESS and XOR-RELAYED-ADDRESS; USERNAME, REALM, NONCE and
//! SOFTWARE; ERROR-CODE's code and reason; UNKNOWN-ATTRIBUTES; MESSAGE-INTEGRITY's HMAC;
//! FINGERPRINT's value; LIFETIME, CHANNEL-NUMBER, REQUESTED-TRANSPORT and DATA. `stun_codec`
//! decodes the classic STUN attributes (RFC 5389) and the TURN ones (RFC 5766) as two
//! attribute sets: each is tried separately, and compared where it decodes.
//!
//! Only this agreed subset is asserted. The differences that are expected, by design:
//!
//! - We decode a message whatever its magic cookie (an RFC 3489 client's has none, and still
//!   gets a Binding answer); `stun_codec` rejects it.
//! - We decode attribute values lazily: a message with a malformed value decodes, and only that
//!   value fails. `stun_codec` rejects the whole message. Likewise it checks FINGERPRINT's CRC
//!   while decoding, where we check it apart (`verify_fingerprint`), and not over the bytes
//!   received but over the message as it encodes it again: padding zeroed, an address
//!   attribute's reserved byte cleared. A FINGERPRINT it accepts need not verify over the bytes
//!   (this target found one: a SOFTWARE padded with spaces, as RFC 5769's vectors are, and a
//!   nonzero reserved byte), so only its value is compared. And it limits REALM, NONCE
//!   and SOFTWARE to 128 characters, CHANNEL-NUMBER to RFC 5766's 0x4000-0x4FFF (RFC 8656 allows
//!   up to 0x7FFF) and ERROR-CODE to classes 3-6. So a message one of them rejects is no
//!   evidence.
//! - Attributes after MESSAGE-INTEGRITY (other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT)
//!   and after MESSAGE-INTEGRITY-SHA256 (other than FINGERPRINT) are ignored by us, as RFC 8489
//!   §14.5-14.6 say, and kept by `stun_codec`: with an integrity attribute present, our set of
//!   types only has to be within theirs.
//! - We reject a FINGERPRINT of another length than 4, a MESSAGE-INTEGRITY of another than 20
//!   and attributes after FINGERPRINT while walking the message; `stun_codec` when it decodes
//!   those values, or not at all. Neither accepts what the other rejects *and compares it*.
//! - UNKNOWN-ATTRIBUTES: ours keeps each type once and at most 16 of them (a fixed-size list);
//!   theirs is compared after the same.
//! - IPv4-mapped IPv6 addresses in address attributes are compared as decoded: each keeps the
//!   family the attribute says.
#![no_main]

use std::collections::BTreeSet;
use std::net::SocketAddr;

use bytecodec::DecodeExt;
use libfuzzer_sys::fuzz_target;
use relay::stun::{
    AlternateServer, AttrType, ChannelNumber, Class, Data, ErrorCode, Fingerprint, Lifetime,
    MappedAddress, Message, MessageIntegrity, Nonce, Realm, RequestedTransport, Software,
    UnknownAttributes, Username, XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use stun_codec::convert::TryAsRef;
use stun_codec::{Attribute as _, MessageClass, MessageDecoder, rfc5389, rfc5766};

fuzz_target!(|data: &[u8]| {
    let Ok(ours) = Message::decode(data) else {
        return;
    };
    let ignores_some =
        ours.has(AttrType::MESSAGE_INTEGRITY) || ours.has(AttrType::MESSAGE_INTEGRITY_SHA256);
    let our_types: BTreeSet<u16> = ours.attributes().map(|a| a.typ.0).collect();

    if let Ok(Ok(theirs)) = MessageDecoder::<rfc5389::Attribute>::new().decode_from_bytes(data) {
        header_and_types(&ours, &theirs, &our_types, ignores_some);
        classic_values(&ours, &theirs);
    }
    if let Ok(Ok(theirs)) = MessageDecoder::<rfc5766::Attribute>::new().decode_from_bytes(data) {
        header_and_types(&ours, &theirs, &our_types, ignores_some);
        turn_values(&ours, &theirs);
    }
});

fn header_and_types<A: stun_codec::Attribute>(
    ours: &Message<'_>,
    theirs: &stun_codec::Message<A>,
    our_types: &BTreeSet<u16>,
    ignores_some: bool,
) {
    assert!(
        ours.header().has_magic_cookie(),
        "they decoded a message without the magic cookie"
    );
    let class = match theirs.class() {
        MessageClass::Request => Class::Request,
        MessageClass::Indication => Class::Indication,
        MessageClass::SuccessResponse => Class::Success,
        MessageClass::ErrorResponse => Class::Error,
    };
    assert_eq!(ours.class(), class, "class");
    assert_eq!(ours.method().as_u16(), theirs.method().as_u16(), "method");
    assert_eq!(
        ours.tid().as_bytes(),
        theirs.transaction_id().as_bytes(),
        "transaction id"
    );
    let their_types: BTreeSet<u16> = theirs
        .attributes()
        .map(|a| a.get_type().as_u16())
        .chain(theirs.unknown_attributes().map(|a| a.get_type().as_u16()))
        .collect();
    if ignores_some {
        assert!(
            our_types.is_subset(&their_types),
            "our attribute types {our_types:x?} are not within theirs {their_types:x?}"
        );
    } else {
        assert_eq!(our_types, &their_types, "attribute types");
    }
}

/// Our decoded value of the first attribute of type `A`, if it is there and decodes.
fn ours_ok<'a, A: relay::stun::Attr<'a>>(msg: &Message<'a>) -> Option<A> {
    msg.get::<A>().and_then(Result::ok)
}

/// Their value of the first attribute of type `T` in attribute set `S`.
fn theirs<S, T>(msg: &stun_codec::Message<S>) -> Option<&T>
where
    S: stun_codec::Attribute + TryAsRef<T>,
    T: stun_codec::Attribute,
{
    msg.get_attribute::<T>()
}

fn same_addr(what: &str, ours: Option<SocketAddr>, theirs: Option<SocketAddr>) {
    if let (Some(o), Some(t)) = (ours, theirs) {
        assert_eq!(o, t, "{what}");
    }
}

fn classic_values(ours: &Message<'_>, msg: &stun_codec::Message<rfc5389::Attribute>) {
    use rfc5389::attributes as a;
    same_addr(
        "MAPPED-ADDRESS",
        ours_ok::<MappedAddress>(ours).map(|x| x.0),
        theirs::<_, a::MappedAddress>(msg).map(|x| x.address()),
    );
    same_addr(
        "XOR-MAPPED-ADDRESS",
        ours_ok::<XorMappedAddress>(ours).map(|x| x.0),
        theirs::<_, a::XorMappedAddress>(msg).map(|x| x.address()),
    );
    same_addr(
        "ALTERNATE-SERVER",
        ours_ok::<AlternateServer>(ours).map(|x| x.0),
        theirs::<_, a::AlternateServer>(msg).map(|x| x.address()),
    );
    if let (Some(o), Some(t)) = (ours_ok::<Username>(ours), theirs::<_, a::Username>(msg)) {
        assert_eq!(o.0, t.name(), "USERNAME");
    }
    if let (Some(o), Some(t)) = (ours_ok::<Realm>(ours), theirs::<_, a::Realm>(msg)) {
        assert_eq!(o.0, t.text(), "REALM");
    }
    if let (Some(o), Some(t)) = (ours_ok::<Nonce>(ours), theirs::<_, a::Nonce>(msg)) {
        assert_eq!(o.0, t.value(), "NONCE");
    }
    if let (Some(o), Some(t)) = (ours_ok::<Software>(ours), theirs::<_, a::Software>(msg)) {
        assert_eq!(o.0, t.description(), "SOFTWARE");
    }
    if let (Some(o), Some(t)) = (ours_ok::<ErrorCode>(ours), theirs::<_, a::ErrorCode>(msg)) {
        assert_eq!(o.code, t.code(), "ERROR-CODE code");
        assert_eq!(o.reason, t.reason_phrase(), "ERROR-CODE reason");
    }
    if let (Some(o), Some(t)) = (
        ours_ok::<UnknownAttributes>(ours),
        theirs::<_, a::UnknownAttributes>(msg),
    ) {
        // Ours keeps each type once, and at most `AttrTypeList::CAPACITY` of them.
        let o: Vec<u16> = o.0.iter().map(|t| t.0).collect();
        let mut deduped: Vec<u16> = Vec::new();
        for t in t.unknowns().iter().map(|t| t.as_u16()) {
            if !deduped.contains(&t) && deduped.len() < relay::stun::AttrTypeList::CAPACITY {
                deduped.push(t);
            }
        }
        assert_eq!(o, deduped, "UNKNOWN-ATTRIBUTES");
    }
    if let (Some(o), Some(t)) = (
        ours_ok::<MessageIntegrity>(ours),
        theirs::<_, a::MessageIntegrity>(msg),
    ) {
        assert_eq!(o.0, t.hmac_sha1(), "MESSAGE-INTEGRITY");
    }
    if let (Some(o), Some(t)) = (
        ours_ok::<Fingerprint>(ours),
        theirs::<_, a::Fingerprint>(msg),
    ) {
        // The value only: see the module doc on what `stun_codec` computes its check over.
        assert_eq!(o.0, t.crc32(), "FINGERPRINT");
    }
}

fn turn_values(ours: &Message<'_>, msg: &stun_codec::Message<rfc5766::Attribute>) {
    use rfc5766::attributes as a;
    same_addr(
        "XOR-PEER-ADDRESS",
        ours_ok::<XorPeerAddress>(ours).map(|x| x.0),
        theirs::<_, a::XorPeerAddress>(msg).map(|x| x.address()),
    );
    same_addr(
        "XOR-RELAYED-ADDRESS",
        ours_ok::<XorRelayedAddress>(ours).map(|x| x.0),
        theirs::<_, a::XorRelayAddress>(msg).map(|x| x.address()),
    );
    if let (Some(o), Some(t)) = (ours_ok::<Lifetime>(ours), theirs::<_, a::Lifetime>(msg)) {
        assert_eq!(u64::from(o.0), t.lifetime().as_secs(), "LIFETIME");
    }
    if let (Some(o), Some(t)) = (
        ours_ok::<ChannelNumber>(ours),
        theirs::<_, a::ChannelNumber>(msg),
    ) {
        assert_eq!(o.0, t.value(), "CHANNEL-NUMBER");
    }
    if let (Some(o), Some(t)) = (
        ours_ok::<RequestedTransport>(ours),
        theirs::<_, a::RequestedTransport>(msg),
    ) {
        assert_eq!(o.0, t.protocol(), "REQUESTED-TRANSPORT");
    }
    if let (Some(o), Some(t)) = (ours_ok::<Data>(ours), theirs::<_, a::Data>(msg)) {
        assert_eq!(o.0, t.data(), "DATA");
    }
}
