//! Property tests of the codec: every attribute round-trips through a message, and no input,
//! however malformed, panics the decoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use relay::stun::*;

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

/// Owned inputs from which an [`Attribute`] borrowing them is built.
#[derive(Debug, Clone)]
enum Spec {
    Addr(u8, SocketAddr),
    Text(u8, String),
    Bytes(u8, Vec<u8>),
    Fixed(u8, Vec<u8>),
    U32(u8, u32),
    U64(u8, u64),
    Flag(u8),
    Error(u8, u16, String, u8),
    Unknown(Vec<u16>),
    Channel(u16),
    Family(u8, u8),
    EvenPort(bool),
    Transport(u8),
    Sha256(Vec<u8>),
    PasswordAlgorithm(u16, Vec<u8>),
    PasswordAlgorithms(Vec<(u16, Vec<u8>)>),
    Icmp(u8, u16, u32),
    Change(bool, bool),
    ResponsePort(u16),
    Other(u16, Vec<u8>),
}

fn text(max: usize) -> impl Strategy<Value = String> {
    // Any Unicode scalar values, kept within the attribute's byte limit.
    proptest::collection::vec(any::<char>(), 0..64).prop_map(move |chars| {
        let mut s = String::new();
        for c in chars {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    })
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        (0u8..7, socket_addr()).prop_map(|(k, a)| Spec::Addr(k, a)),
        (0u8..5).prop_flat_map(
            |k| text(if k == 4 { 255 } else { 500 }).prop_map(move |s| Spec::Text(k, s))
        ),
        (0u8..2, proptest::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(k, v)| Spec::Bytes(k, v)),
        (0u8..3).prop_flat_map(|k| {
            let n = [32, 20, 8][usize::from(k)];
            proptest::collection::vec(any::<u8>(), n).prop_map(move |v| Spec::Fixed(k, v))
        }),
        (0u8..4, any::<u32>()).prop_map(|(k, v)| Spec::U32(k, v)),
        (0u8..2, any::<u64>()).prop_map(|(k, v)| Spec::U64(k, v)),
        (0u8..2).prop_map(Spec::Flag),
        (0u8..2, 300u16..700, text(300), any::<u8>())
            .prop_map(|(k, c, r, f)| Spec::Error(k, c, r, f)),
        proptest::collection::vec(any::<u16>(), 0..16).prop_map(Spec::Unknown),
        any::<u16>().prop_map(Spec::Channel),
        (0u8..2, any::<u8>()).prop_map(|(k, f)| Spec::Family(k, f)),
        any::<bool>().prop_map(Spec::EvenPort),
        any::<u8>().prop_map(Spec::Transport),
        (4usize..=8)
            .prop_flat_map(|words| proptest::collection::vec(any::<u8>(), words * 4))
            .prop_map(Spec::Sha256),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(a, p)| Spec::PasswordAlgorithm(a, p)),
        proptest::collection::vec(
            (any::<u16>(), proptest::collection::vec(any::<u8>(), 0..9)),
            0..4
        )
        .prop_map(Spec::PasswordAlgorithms),
        (0u8..128, 0u16..512, any::<u32>()).prop_map(|(t, c, d)| Spec::Icmp(t, c, d)),
        (any::<bool>(), any::<bool>()).prop_map(|(a, b)| Spec::Change(a, b)),
        any::<u16>().prop_map(Spec::ResponsePort),
        // Types this codec does not know, carried as they are.
        (
            0x0100u16..0x7000,
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, v)| Spec::Other(t, v)),
    ]
}

/// Builds the attribute; `scratch` holds wire forms that must outlive it.
fn build<'a>(spec: &'a Spec, scratch: &'a mut Vec<u8>) -> Attribute<'a> {
    match spec {
        Spec::Addr(k, a) => match k {
            0 => Attribute::MappedAddress(MappedAddress(*a)),
            1 => Attribute::XorMappedAddress(XorMappedAddress(*a)),
            2 => Attribute::XorPeerAddress(XorPeerAddress(*a)),
            3 => Attribute::XorRelayedAddress(XorRelayedAddress(*a)),
            4 => Attribute::AlternateServer(AlternateServer(*a)),
            5 => Attribute::ResponseOrigin(ResponseOrigin(*a)),
            _ => Attribute::OtherAddress(OtherAddress(*a)),
        },
        Spec::Text(k, s) => match k {
            0 => Attribute::Username(Username(s)),
            1 => Attribute::Realm(Realm(s)),
            2 => Attribute::Nonce(Nonce(s)),
            3 => Attribute::Software(Software(s)),
            _ => Attribute::AlternateDomain(AlternateDomain(s)),
        },
        Spec::Bytes(k, v) => {
            if *k == 0 {
                Attribute::Data(Data(v))
            } else {
                Attribute::Padding(Padding(v))
            }
        }
        Spec::Fixed(k, v) => match k {
            0 => Attribute::UserHash(UserHash(v.as_slice().try_into().expect("32"))),
            1 => {
                Attribute::MessageIntegrity(MessageIntegrity(v.as_slice().try_into().expect("20")))
            }
            _ => Attribute::ReservationToken(ReservationToken(v.as_slice().try_into().expect("8"))),
        },
        Spec::U32(k, v) => match k {
            0 => Attribute::Lifetime(Lifetime(*v)),
            1 => Attribute::Priority(Priority(*v)),
            2 => Attribute::ConnectionId(ConnectionId(*v)),
            _ => Attribute::Fingerprint(Fingerprint(*v)),
        },
        Spec::U64(k, v) => {
            if *k == 0 {
                Attribute::IceControlled(IceControlled(*v))
            } else {
                Attribute::IceControlling(IceControlling(*v))
            }
        }
        Spec::Flag(k) => {
            if *k == 0 {
                Attribute::DontFragment(DontFragment)
            } else {
                Attribute::UseCandidate(UseCandidate)
            }
        }
        Spec::Error(k, code, reason, family) => {
            if *k == 0 {
                Attribute::ErrorCode(ErrorCode::new(*code, reason))
            } else {
                Attribute::AddressErrorCode(AddressErrorCode {
                    family: AddressFamily(*family),
                    code: *code,
                    reason,
                })
            }
        }
        Spec::Unknown(types) => Attribute::UnknownAttributes(UnknownAttributes(
            types.iter().map(|&t| AttrType(t)).collect(),
        )),
        Spec::Channel(c) => Attribute::ChannelNumber(ChannelNumber(*c)),
        Spec::Family(k, f) => {
            if *k == 0 {
                Attribute::RequestedAddressFamily(RequestedAddressFamily(AddressFamily(*f)))
            } else {
                Attribute::AdditionalAddressFamily(AdditionalAddressFamily(AddressFamily(*f)))
            }
        }
        Spec::EvenPort(r) => Attribute::EvenPort(EvenPort { reserve: *r }),
        Spec::Transport(p) => Attribute::RequestedTransport(RequestedTransport(*p)),
        Spec::Sha256(v) => Attribute::MessageIntegritySha256(MessageIntegritySha256(v)),
        Spec::PasswordAlgorithm(a, p) => Attribute::PasswordAlgorithm(PasswordAlgorithm {
            algorithm: *a,
            params: p,
        }),
        Spec::PasswordAlgorithms(list) => {
            let algs: Vec<_> = list
                .iter()
                .map(|(a, p)| PasswordAlgorithm {
                    algorithm: *a,
                    params: p,
                })
                .collect();
            scratch.resize(512, 0);
            let n = PasswordAlgorithms::write_list(&algs, scratch).expect("fits");
            scratch.truncate(n);
            Attribute::PasswordAlgorithms(PasswordAlgorithms::from_wire(scratch).expect("valid"))
        }
        Spec::Icmp(t, c, d) => Attribute::Icmp(Icmp {
            icmp_type: *t,
            code: *c,
            data: *d,
        }),
        Spec::Change(ip, port) => Attribute::ChangeRequest(ChangeRequest {
            change_ip: *ip,
            change_port: *port,
        }),
        Spec::ResponsePort(p) => Attribute::ResponsePort(ResponsePort(*p)),
        Spec::Other(t, v) => Attribute::Unknown {
            typ: AttrType(*t),
            value: v,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any list of attributes, encoded into a message (any method and class), decodes to the
    /// same attributes in the same order; unknown comprehension-required types are reported.
    #[test]
    fn attributes_round_trip(
        specs in proptest::collection::vec(spec(), 0..6),
        method in 0u16..0x1000,
        class in 0u8..4,
        tid in any::<[u8; 12]>(),
        padding in any::<u8>(),
    ) {
        let mut scratches: Vec<Vec<u8>> = vec![Vec::new(); specs.len()];
        let attrs: Vec<Attribute<'_>> = specs.iter().zip(scratches.iter_mut()).map(|(s, b)| build(s, b)).collect();
        // Integrity and fingerprint attributes have placement rules (what follows them is
        // ignored or invalid): keep them to the last position, where they are legal.
        let special = |a: &Attribute<'_>| matches!(
            a.typ(),
            AttrType::MESSAGE_INTEGRITY | AttrType::MESSAGE_INTEGRITY_SHA256 | AttrType::FINGERPRINT
        );
        let (mut attrs, specials): (Vec<_>, Vec<_>) = attrs.into_iter().partition(|a| !special(a));
        attrs.extend(specials.into_iter().take(1));

        let class = [Class::Request, Class::Indication, Class::Success, Class::Error][usize::from(class)];
        let typ = MessageType::new(Method::new(method).expect("12 bits"), class);
        let mut buf = vec![0u8; 8192];
        let mut enc = Encoder::new(&mut buf, typ, TransactionId::new(tid)).expect("header");
        enc.set_padding_byte(padding);
        for a in &attrs {
            enc.add_any(a).expect("encodes");
        }
        let len = enc.finish();
        let msg = Message::decode(&buf[..len]).expect("what we encode decodes");
        prop_assert_eq!(msg.typ(), typ);
        prop_assert_eq!(*msg.tid(), TransactionId::new(tid));
        let decoded: Vec<Attribute<'_>> = msg.decoded().collect::<Result<_, _>>().expect("attributes decode");
        prop_assert_eq!(&decoded, &attrs);
        for a in &attrs {
            if a.typ().is_comprehension_required() && !a.typ().is_known() {
                prop_assert!(msg.unknown_comprehension_required().iter().any(|t| t == a.typ()));
            }
        }
    }

    /// Decoding arbitrary bytes never panics, and a readable header is always reported.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        match Message::decode(&bytes) {
            Ok(msg) => {
                for a in msg.decoded() {
                    let _ = a;
                }
                let _ = msg.verify_integrity(b"key");
                let _ = msg.verify_integrity_sha256(b"key");
                let _ = msg.verify_fingerprint();
            }
            Err(e) => prop_assert_eq!(e.header, if bytes.len() >= 20 { Header::peek(&bytes) } else { None }),
        }
        let _ = ChannelData::decode(&bytes);
        let _ = stream_frame_len(&bytes);
    }

    /// Every truncation of a valid message fails cleanly and still names the transaction when
    /// the header survived.
    #[test]
    fn truncations_are_errors_with_header(specs in proptest::collection::vec(spec(), 1..4), tid in any::<[u8; 12]>()) {
        let mut scratches: Vec<Vec<u8>> = vec![Vec::new(); specs.len()];
        let mut buf = vec![0u8; 8192];
        let typ = MessageType::new(Method::ALLOCATE, Class::Request);
        let mut enc = Encoder::new(&mut buf, typ, TransactionId::new(tid)).expect("header");
        for (s, b) in specs.iter().zip(scratches.iter_mut()) {
            let a = build(s, b);
            if a.typ() != AttrType::FINGERPRINT && a.typ() != AttrType::MESSAGE_INTEGRITY && a.typ() != AttrType::MESSAGE_INTEGRITY_SHA256 {
                enc.add_any(&a).expect("encodes");
            }
        }
        enc.fingerprint().expect("fingerprint");
        let len = enc.finish();
        for cut in 0..len {
            let err = Message::decode(&buf[..cut]).expect_err("a truncated message is invalid");
            if cut >= 20 {
                let header = err.header.expect("header readable");
                prop_assert_eq!(header.tid, TransactionId::new(tid));
                prop_assert_eq!(header.typ, typ);
            }
        }
        let msg = Message::decode(&buf[..len]).expect("whole message decodes");
        prop_assert!(msg.verify_fingerprint().is_ok());
    }
}
