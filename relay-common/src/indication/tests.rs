//! Unit tests of the indication codec and the CRC-32.

#![allow(clippy::unwrap_used)]

extern crate std;

use std::vec;
use std::vec::Vec;

use super::*;
use crate::csum::Sum;
use crate::maps::{FAMILY_IPV4, FAMILY_IPV6};

const TXID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// One attribute of a test message.
#[derive(Clone)]
enum A {
    /// XOR-PEER-ADDRESS of an IPv4 peer.
    Peer4([u8; 4], u16),
    /// XOR-PEER-ADDRESS of an IPv6 peer.
    Peer6([u8; 16], u16),
    Data(Vec<u8>),
    DontFragment,
    Software(&'static str),
    /// Any type, any value.
    Raw(u16, Vec<u8>),
    /// FINGERPRINT, computed (or `Some(value)` as given).
    Fingerprint(Option<u32>),
}

/// A message of type `typ` with these attributes, padded with `pad` bytes, as a relay's
/// encoder writes it: the length field kept current, FINGERPRINT over what precedes it.
fn message(typ: u16, attrs: &[A], pad: u8) -> Vec<u8> {
    let mut m = vec![0u8; STUN_HLEN];
    m[0..2].copy_from_slice(&typ.to_be_bytes());
    m[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    m[8..20].copy_from_slice(&TXID);
    for a in attrs {
        let (t, v): (u16, Vec<u8>) = match a {
            A::Peer4(ip, port) => {
                let mut v = vec![0, 1];
                v.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
                let x = u32::from_be_bytes(*ip) ^ MAGIC_COOKIE;
                v.extend_from_slice(&x.to_be_bytes());
                (ATTR_XOR_PEER_ADDRESS, v)
            }
            A::Peer6(ip, port) => {
                let mut v = vec![0, 2];
                v.extend_from_slice(&(port ^ 0x2112).to_be_bytes());
                let x = u128::from_be_bytes(*ip) ^ xor_pad(&TXID);
                v.extend_from_slice(&x.to_be_bytes());
                (ATTR_XOR_PEER_ADDRESS, v)
            }
            A::Data(d) => (ATTR_DATA, d.clone()),
            A::DontFragment => (ATTR_DONT_FRAGMENT, vec![]),
            A::Software(s) => (0x8022, s.as_bytes().to_vec()),
            A::Raw(t, v) => (*t, v.clone()),
            A::Fingerprint(value) => {
                let at = m.len();
                let length = (at + 8 - STUN_HLEN) as u16;
                m[2..4].copy_from_slice(&length.to_be_bytes());
                let fp = value.unwrap_or(crc32(&m) ^ FINGERPRINT_XOR);
                (ATTR_FINGERPRINT, fp.to_be_bytes().to_vec())
            }
        };
        m.extend_from_slice(&t.to_be_bytes());
        m.extend_from_slice(&(v.len() as u16).to_be_bytes());
        m.extend_from_slice(&v);
        while !m.len().is_multiple_of(4) {
            m.push(pad);
        }
        let length = (m.len() - STUN_HLEN) as u16;
        m[2..4].copy_from_slice(&length.to_be_bytes());
    }
    m
}

fn send(attrs: &[A]) -> Vec<u8> {
    message(SEND_INDICATION, attrs, 0)
}

fn parse(m: &[u8]) -> Result<SendIndication, Refusal> {
    parse_send(m, m.len() as u16, &TXID)
}

const V4: [u8; 4] = [198, 51, 100, 7];
const V6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2, 0, 3, 0, 4, 0xab, 0xcd, 0xef, 0x01,
];

fn v4_16(ip: [u8; 4]) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&ip);
    a
}

/// Every order of `items` (Heap's algorithm).
fn permutations(items: &[A]) -> Vec<Vec<A>> {
    fn go(k: usize, a: &mut Vec<A>, out: &mut Vec<Vec<A>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k - 1 {
            go(k - 1, a, out);
            if k.is_multiple_of(2) {
                a.swap(i, k - 1);
            } else {
                a.swap(0, k - 1);
            }
        }
        go(k - 1, a, out);
    }
    let mut out = Vec::new();
    go(items.len(), &mut items.to_vec(), &mut out);
    out
}

#[test]
fn crc32_known_values() {
    // The CRC-32 check value, and zlib's crc32 of "The quick brown fox ...".
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(
        crc32(b"The quick brown fox jumps over the lazy dog"),
        0x414F_A339
    );
    assert_eq!(crc32(b""), 0);
    // The tables are the polynomial's: T[0][1] is the polynomial shifted once.
    assert_eq!(CRC32_TABLES[0][128], 0xEDB8_8320);
}

#[test]
fn crc32_block_word_and_byte_updates_agree() {
    let bytes: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
    for len in 0..=bytes.len() {
        let mut by_byte = CRC32_INIT;
        for &b in &bytes[..len] {
            by_byte = crc32_update_byte(by_byte, b);
        }
        let mut by_word = CRC32_INIT;
        for w in bytes[..len - len % 4].chunks(4) {
            by_word = crc32_update4(by_word, [w[0], w[1], w[2], w[3]]);
        }
        for &b in &bytes[len - len % 4..len] {
            by_word = crc32_update_byte(by_word, b);
        }
        assert_eq!(crc32_finish(by_byte), crc32(&bytes[..len]), "{len}");
        assert_eq!(by_word, by_byte, "{len}");
    }
}

proptest::proptest! {
    #[test]
    fn crc32_matches_crc32fast(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        proptest::prop_assert_eq!(crc32(&bytes), crc32fast::hash(&bytes));
    }
}

#[test]
fn every_order_with_and_without_the_extras() {
    let base = [A::Peer4(V4, 40000), A::Data(b"hello".to_vec())];
    let extras = [A::DontFragment, A::Software("xdpturn test")];
    for mask in 0..4u8 {
        let mut attrs: Vec<A> = base.to_vec();
        for (i, e) in extras.iter().enumerate() {
            if mask & (1 << i) != 0 {
                attrs.push(e.clone());
            }
        }
        for order in permutations(&attrs) {
            for fp in [false, true] {
                let mut order = order.clone();
                if fp {
                    order.push(A::Fingerprint(None));
                }
                let m = send(&order);
                let plan = parse(&m).unwrap();
                assert_eq!(plan.peer_family, FAMILY_IPV4);
                assert_eq!(plan.peer_addr, v4_16(V4));
                assert_eq!(plan.peer_port, 40000);
                let at = plan.data_offset as usize;
                assert_eq!(&m[at..at + plan.data_len as usize], b"hello");
                assert_eq!(plan.dont_fragment, mask & 1 != 0);
                assert_eq!(plan.fingerprint.is_some(), fp);
                if let Some(f) = plan.fingerprint {
                    assert_eq!(f.offset as usize, m.len() - 8);
                    assert_eq!(check_fingerprint(&m[..], f), Ok(()));
                }
            }
        }
    }
}

#[test]
fn ipv6_peer_and_data_lengths() {
    for len in (0..=4).chain([5, 7, 1199, 1200]) {
        let data: Vec<u8> = (0..len).map(|i| i as u8 ^ 0x5A).collect();
        for peer in [A::Peer4(V4, 1), A::Peer6(V6, 65535)] {
            let m = send(&[peer.clone(), A::Data(data.clone()), A::Fingerprint(None)]);
            let plan = parse(&m).unwrap();
            let at = plan.data_offset as usize;
            assert_eq!(at % 4, 0);
            assert_eq!(&m[at..at + plan.data_len as usize], &data[..]);
            match peer {
                A::Peer6(..) => {
                    assert_eq!(plan.peer_family, FAMILY_IPV6);
                    assert_eq!(plan.peer_addr, V6);
                    assert_eq!(plan.peer_port, 65535);
                }
                _ => assert_eq!((plan.peer_family, plan.peer_port), (FAMILY_IPV4, 1)),
            }
            assert_eq!(check_fingerprint(&m[..], plan.fingerprint.unwrap()), Ok(()));
        }
    }
}

#[test]
fn padding_bytes_are_ignored() {
    let m = message(
        SEND_INDICATION,
        &[A::Data(b"abc".to_vec()), A::Peer4(V4, 9), A::Software("x")],
        0x20,
    );
    let plan = parse(&m).unwrap();
    assert_eq!((plan.data_offset, plan.data_len), (24, 3));
}

#[test]
fn header_refusals() {
    let good = send(&[A::Peer4(V4, 1), A::Data(b"x".to_vec())]);
    assert!(parse(&good).is_ok());
    // Data indication, Send request, Binding indication.
    for typ in [DATA_INDICATION, 0x0006, 0x0011] {
        let mut m = good.clone();
        m[0..2].copy_from_slice(&typ.to_be_bytes());
        assert_eq!(parse(&m), Err(Refusal::NotSend), "{typ:#x}");
    }
    let mut m = good.clone();
    m[4] ^= 1;
    assert_eq!(parse(&m), Err(Refusal::NoCookie));
    // Length field off by 4, not a multiple of 4, trailing bytes, short payloads.
    let mut m = good.clone();
    m[3] += 4;
    assert_eq!(parse(&m), Err(Refusal::Length));
    let mut m = good.clone();
    m[3] -= 1;
    assert_eq!(
        parse_send(&m[..m.len() - 1], m.len() as u16 - 1, &TXID),
        Err(Refusal::Length)
    );
    let mut m = good.clone();
    m.extend_from_slice(&[0; 4]);
    assert_eq!(parse(&m), Err(Refusal::Length));
    assert_eq!(parse_send(&good[..20], 20, &TXID), Err(Refusal::Length));
    assert_eq!(parse_send(&good[..8], 8, &TXID), Err(Refusal::Length));
    assert_eq!(parse_send(&good[..4], 4, &TXID), Err(Refusal::Length));
    // A header alone: no attributes.
    let mut m = good[..20].to_vec();
    m[2..4].copy_from_slice(&[0, 0]);
    assert_eq!(parse(&m), Err(Refusal::MissingPeer));
}

#[test]
fn attribute_refusals() {
    let p = || A::Peer4(V4, 1);
    let d = || A::Data(b"data".to_vec());
    for (attrs, want) in [
        (vec![d()], Refusal::MissingPeer),
        (vec![p()], Refusal::MissingData),
        (vec![p(), d(), p()], Refusal::Duplicate),
        (vec![p(), d(), d()], Refusal::Duplicate),
        (
            vec![p(), A::DontFragment, d(), A::DontFragment],
            Refusal::Duplicate,
        ),
        (
            vec![p(), d(), A::Fingerprint(None), A::Software("late")],
            Refusal::AfterFingerprint,
        ),
        (
            vec![p(), d(), A::Fingerprint(None), A::Fingerprint(None)],
            Refusal::AfterFingerprint,
        ),
        (
            vec![p(), d(), A::Raw(0x7001, vec![1])],
            Refusal::UnknownRequired,
        ),
        (
            vec![A::Raw(0x0006, b"user".to_vec()), p(), d()],
            Refusal::UnknownRequired,
        ),
        (
            vec![p(), d(), A::Raw(ATTR_MESSAGE_INTEGRITY, vec![0; 20])],
            Refusal::Integrity,
        ),
        (
            vec![p(), d(), A::Raw(ATTR_MESSAGE_INTEGRITY_SHA256, vec![0; 32])],
            Refusal::Integrity,
        ),
        (
            vec![p(), d(), A::Raw(ATTR_DONT_FRAGMENT, vec![1])],
            Refusal::AttributeLength,
        ),
        (
            vec![p(), d(), A::Raw(ATTR_FINGERPRINT, vec![0; 8])],
            Refusal::AttributeLength,
        ),
        (
            vec![A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0, 1, 0, 0]), d()],
            Refusal::AttributeLength,
        ),
        (
            vec![A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0; 20]), d()],
            Refusal::Family,
        ),
        (
            vec![A::Raw(ATTR_XOR_PEER_ADDRESS, [0, 1].repeat(10)), d()],
            Refusal::AttributeLength,
        ),
        (
            vec![
                A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0, 2, 0, 0, 1, 2, 3, 4]),
                d(),
            ],
            Refusal::AttributeLength,
        ),
        (
            vec![
                A::Raw(ATTR_XOR_PEER_ADDRESS, vec![0, 3, 0, 0, 1, 2, 3, 4]),
                d(),
            ],
            Refusal::Family,
        ),
    ] {
        assert_eq!(parse(&send(&attrs)), Err(want), "{}", attrs.len());
    }
    // Comprehension-optional unknowns are skipped, up to the bound.
    let mut attrs = vec![p(), d()];
    for i in 0..MAX_ATTRIBUTES - 2 {
        attrs.push(A::Raw(0xC000 + i as u16, vec![i as u8; i]));
    }
    assert!(parse(&send(&attrs)).is_ok());
    attrs.push(A::Software("one too many"));
    assert_eq!(parse(&send(&attrs)), Err(Refusal::TooManyAttributes));
}

#[test]
fn truncated_attributes() {
    let m = send(&[A::Peer6(V6, 1), A::Data(vec![7; 9]), A::Fingerprint(None)]);
    // Every shorter message whose length field says so (a multiple of 4): cut inside an
    // attribute, it is refused and never read past its end; cut between two, it is what
    // the attributes before the cut make.
    for cut in (24..m.len()).step_by(4) {
        let mut t = m[..cut].to_vec();
        t[2..4].copy_from_slice(&((cut - 20) as u16).to_be_bytes());
        let r = parse(&t);
        match cut {
            44 => assert_eq!(r, Err(Refusal::MissingData)),
            60 => assert_eq!(r.map(|p| p.fingerprint), Ok(None)),
            _ => assert_eq!(r, Err(Refusal::Truncated), "{cut}"),
        }
    }
    // An attribute length past the end, and padding past the end.
    let mut t = m.clone();
    t[22..24].copy_from_slice(&0x0100u16.to_be_bytes());
    assert_eq!(parse(&t), Err(Refusal::Truncated));
    let mut t = send(&[A::Peer4(V4, 1), A::Data(vec![1; 4])]);
    let n = t.len();
    t[n - 6..n - 4].copy_from_slice(&5u16.to_be_bytes());
    assert_eq!(parse(&t), Err(Refusal::Truncated));
    // A reader that has fewer bytes than the payload length says.
    assert_eq!(
        parse_send(&m[..m.len() - 4], m.len() as u16, &TXID),
        Err(Refusal::Truncated)
    );
}

#[test]
fn bad_fingerprints() {
    let m = send(&[
        A::Peer4(V4, 1),
        A::Data(b"data!".to_vec()),
        A::Fingerprint(None),
    ]);
    let fp = parse(&m).unwrap().fingerprint.unwrap();
    assert_eq!(check_fingerprint(&m[..], fp), Ok(()));
    let wrong = Fingerprint {
        value: fp.value ^ 1,
        ..fp
    };
    assert_eq!(
        check_fingerprint(&m[..], wrong),
        Err(Refusal::BadFingerprint)
    );
    // A data byte changed after the fact.
    let mut t = m.clone();
    t[36] ^= 0x80;
    let fp = parse(&t).unwrap().fingerprint.unwrap();
    assert_eq!(check_fingerprint(&t[..], fp), Err(Refusal::BadFingerprint));
    // A zero FINGERPRINT.
    let bad = send(&[
        A::Peer4(V4, 1),
        A::Data(b"data!".to_vec()),
        A::Fingerprint(Some(0)),
    ]);
    let fp = parse(&bad).unwrap().fingerprint.unwrap();
    assert_eq!(
        check_fingerprint(&bad[..], fp),
        Err(Refusal::BadFingerprint)
    );
    // Offsets of 8k and 8k + 4 bytes both end in the right place.
    for len in 0..8 {
        let m = send(&[A::Peer4(V4, 1), A::Data(vec![3; len]), A::Fingerprint(None)]);
        let fp = parse(&m).unwrap().fingerprint.unwrap();
        assert_eq!(check_fingerprint(&m[..], fp), Ok(()), "{len}");
    }
}

#[test]
fn data_indication_bytes() {
    let h = data_indication(&TXID, FAMILY_IPV4, &v4_16(V4), 40000, 5).unwrap();
    let mut want = Vec::new();
    want.extend_from_slice(&[0x00, 0x17, 0x00, 0x18]);
    want.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    want.extend_from_slice(&TXID);
    want.extend_from_slice(&[0x00, 0x12, 0x00, 0x08, 0x00, 0x01]);
    want.extend_from_slice(&(40000u16 ^ 0x2112).to_be_bytes());
    want.extend_from_slice(&(u32::from_be_bytes(V4) ^ MAGIC_COOKIE).to_be_bytes());
    want.extend_from_slice(&[0x00, 0x13, 0x00, 0x05]);
    assert_eq!(&h.bytes[..h.len as usize], &want[..]);
    assert_eq!(&h.bytes[h.len as usize..], &[0; 12]);
    assert_eq!((h.len, h.padding, h.message_len), (36, 3, 44));
    assert_eq!(h.sum.fold(), Sum::new().add_bytes(&want).fold());
}

#[test]
fn data_indications_parse_back_as_their_peer() {
    for len in (0..=4).chain([5, 6, 7, 1200]) {
        for (family, addr, port) in [(FAMILY_IPV4, v4_16(V4), 3478), (FAMILY_IPV6, V6, 1)] {
            let h = data_indication(&TXID, family, &addr, port, len).unwrap();
            assert_eq!(h.len as usize, if family == FAMILY_IPV6 { 48 } else { 36 });
            assert_eq!((h.len + len + h.padding) % 4, 0);
            assert_eq!(h.message_len, h.len + len + h.padding);
            let mut m = h.bytes[..h.len as usize].to_vec();
            m.extend((0..len).map(|i| i as u8));
            m.extend(core::iter::repeat_n(0, h.padding as usize));
            assert_eq!(m.len(), h.message_len as usize);
            assert_eq!(
                h.sum.fold(),
                Sum::new().add_bytes(&m[..h.len as usize]).fold()
            );
            // The same message as a Send indication is what the parser reads.
            m[1] = 0x16;
            let plan = parse(&m).unwrap();
            assert_eq!(
                (plan.peer_family, plan.peer_addr, plan.peer_port),
                (family, addr, port)
            );
            assert_eq!((plan.data_offset, plan.data_len), (h.len, len));
        }
    }
    // An IPv6 header, then an IPv4 one into the same place: no IPv6 bytes left behind.
    let mut h = DataHeader::EMPTY;
    data_indication_into(&TXID, FAMILY_IPV6, &V6, 1, 1, &mut h).unwrap();
    data_indication_into(&TXID, FAMILY_IPV4, &v4_16(V4), 1, 1, &mut h).unwrap();
    assert_eq!(
        h,
        data_indication(&TXID, FAMILY_IPV4, &v4_16(V4), 1, 1).unwrap()
    );
}

#[test]
fn data_indication_refusals() {
    assert_eq!(data_indication(&TXID, 0, &V6, 1, 1), Err(Refusal::Family));
    // 48 - 20 + 65508 = 65536: one byte too many for the length field.
    assert_eq!(
        data_indication(&TXID, FAMILY_IPV6, &V6, 1, 0xFFFF - 27),
        Err(Refusal::TooLong)
    );
    let h = data_indication(&TXID, FAMILY_IPV6, &V6, 1, 0xFFFF - 31).unwrap();
    assert_eq!(u16::from_be_bytes([h.bytes[2], h.bytes[3]]), 0xFFFC);
}
