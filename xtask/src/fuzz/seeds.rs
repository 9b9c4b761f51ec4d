//! The seed corpus: messages built with the relay's codec, and RFC 5769's vectors.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use relay::stun::{
    ChannelData, ChannelNumber, Class, Data, Encoder, ErrorCode, Lifetime, MessageType, Method,
    Nonce, Realm, RequestedTransport, Software, TransactionId, Username, XorMappedAddress,
    XorPeerAddress, XorRelayedAddress, long_term_key_md5,
};
use sha1::{Digest, Sha1};

use super::rfc5769;

const USER: &str = "alice";
const REALM: &str = "example.org";
const PASSWORD: &str = "alice-pw";
const NONCE: &str = "obMatJos2gAAAadl7W7PeDU4hKE72jda";

/// Writes every target's seeds; returns how many files were new.
pub fn write(root: &Path) -> Result<usize> {
    let stun = stun_messages();
    let mut written = 0;
    for target in ["decode", "differential"] {
        written += write_files(root, target, &stun)?;
    }
    written += write_files(root, "channel_data", &channel_data())?;
    written += write_files(root, "proto", &proto_sequences(&stun))?;
    Ok(written)
}

fn write_files(root: &Path, target: &str, inputs: &[Vec<u8>]) -> Result<usize> {
    let dir = super::kept_corpus(root, target)?;
    let mut written = 0;
    for input in inputs {
        let path = dir.join(name(input));
        if !path.exists() {
            fs::write(&path, input).with_context(|| format!("writing {}", path.display()))?;
            written += 1;
        }
    }
    println!("    fuzz/corpus/{target}: {} seeds", inputs.len());
    Ok(written)
}

/// The SHA-1 of `input` in hex: the name libFuzzer gives its own finds, so a merge never
/// adds a seed again under another name.
pub fn name(input: &[u8]) -> String {
    Sha1::digest(input).iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn tid(n: u8) -> TransactionId {
    TransactionId::new([n; 12])
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| unreachable!("a literal address"))
}

/// One message: `build` adds the attributes; `integrity` adds MESSAGE-INTEGRITY with the
/// long-term key and FINGERPRINT.
fn message(
    method: Method,
    class: Class,
    n: u8,
    integrity: bool,
    build: impl FnOnce(&mut Encoder<'_>) -> Result<(), relay::stun::EncodeError>,
) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 1500];
    let mut e = Encoder::new(&mut buf, MessageType::new(method, class), tid(n))?;
    build(&mut e)?;
    if integrity {
        e.add(&Username(USER))?;
        e.add(&Realm(REALM))?;
        e.add(&Nonce(NONCE))?;
        e.message_integrity(&long_term_key_md5(USER, REALM, PASSWORD))?;
        e.fingerprint()?;
    }
    let len = e.finish();
    buf.truncate(len);
    Ok(buf)
}

/// A TURN exchange as a client and the relay speak it, then RFC 5769's vectors.
pub fn stun_messages() -> Vec<Vec<u8>> {
    let peer = addr("198.51.100.7:5000");
    let peer6 = addr("[2001:db8::7]:5000");
    let relayed = addr("192.0.2.1:49152");
    let mapped = addr("203.0.113.9:40000");
    let built: [Result<Vec<u8>>; 14] = [
        message(Method::BINDING, Class::Request, 1, false, |_| Ok(())),
        message(Method::BINDING, Class::Success, 1, false, |e| {
            e.add(&XorMappedAddress(mapped))
        }),
        message(Method::ALLOCATE, Class::Request, 2, false, |e| {
            e.add(&RequestedTransport::UDP)
        }),
        message(Method::ALLOCATE, Class::Error, 2, false, |e| {
            e.add(&ErrorCode {
                code: 401,
                reason: "Unauthorized",
            })?;
            e.add(&Realm(REALM))?;
            e.add(&Nonce(NONCE))?;
            e.add(&Software("xdpturn"))
        }),
        message(Method::ALLOCATE, Class::Request, 3, true, |e| {
            e.add(&RequestedTransport::UDP)?;
            e.add(&Lifetime(600))
        }),
        message(Method::ALLOCATE, Class::Success, 3, false, |e| {
            e.add(&XorRelayedAddress(relayed))?;
            e.add(&XorMappedAddress(mapped))?;
            e.add(&Lifetime(600))?;
            e.add(&Software("xdpturn"))
        }),
        message(Method::CREATE_PERMISSION, Class::Request, 4, true, |e| {
            e.add(&XorPeerAddress(peer))?;
            e.add(&XorPeerAddress(peer6))
        }),
        message(Method::CREATE_PERMISSION, Class::Success, 4, false, |_| {
            Ok(())
        }),
        message(Method::CHANNEL_BIND, Class::Request, 5, true, |e| {
            e.add(&ChannelNumber(0x4000))?;
            e.add(&XorPeerAddress(peer))
        }),
        message(Method::CHANNEL_BIND, Class::Error, 5, false, |e| {
            e.add(&ErrorCode {
                code: 438,
                reason: "Stale Nonce",
            })?;
            e.add(&Realm(REALM))?;
            e.add(&Nonce(NONCE))
        }),
        message(Method::SEND, Class::Indication, 6, false, |e| {
            e.add(&XorPeerAddress(peer))?;
            e.add(&Data(b"hello, peer"))
        }),
        message(Method::DATA, Class::Indication, 7, false, |e| {
            e.add(&XorPeerAddress(peer))?;
            e.add(&Data(b"hello, client!"))
        }),
        message(Method::REFRESH, Class::Request, 8, true, |e| {
            e.add(&Lifetime(0))
        }),
        message(Method::REFRESH, Class::Success, 8, false, |e| {
            e.add(&Lifetime(0))
        }),
    ];
    let mut out: Vec<Vec<u8>> = built
        .into_iter()
        .map(|m| m.unwrap_or_else(|e| unreachable!("a seed message fits: {e:#}")))
        .collect();
    out.extend(
        [
            rfc5769::SAMPLE_REQUEST,
            rfc5769::IPV4_RESPONSE,
            rfc5769::IPV6_RESPONSE,
            rfc5769::LONG_TERM_REQUEST,
        ]
        .map(<[u8]>::to_vec),
    );
    out
}

/// ChannelData as UDP carries it (unpadded) and as streams do (padded), a few lengths.
pub fn channel_data() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (channel, len, pad) in [
        (0x4000, 0, false),
        (0x4001, 1, false),
        (0x4001, 1, true),
        (0x4FFF, 5, true),
        (0x7FFF, 160, false),
    ] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let cd = ChannelData {
            channel,
            data: &data,
        };
        let mut buf = vec![0u8; ChannelData::encoded_len(len, true)];
        if let Some(n) = cd.encode(&mut buf, pad) {
            buf.truncate(n);
            out.push(buf);
        }
    }
    out
}

/// The `proto` target reads `[op, len, len bytes]` steps: op's bits 3-5 say what the
/// step is (0-1: raw client bytes, 2-3: an authenticated request whose method is op % 5,
/// 4-5: a peer datagram, 6-7: time passing), bit 2 TCP, the low two bits which client.
/// The seeds: the exchange's messages as client 1's raw bytes; and an authenticated
/// Allocate and CreatePermission, ChannelData, a peer's datagram and time passing.
fn proto_sequences(stun: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let step = |op: u8, payload: &[u8]| -> Vec<u8> {
        let len = payload.len().min(255);
        let mut v = vec![op, len as u8];
        v.extend_from_slice(&payload[..len]);
        v
    };
    let mut exchange = Vec::new();
    for m in stun.iter().filter(|m| m.len() <= 255) {
        exchange.extend(step(0x01, m));
    }
    let mut turn = Vec::new();
    // 0x19: authenticated (3), UDP, client 1, 25 % 5 = 0: Allocate, with LIFETIME 0x58.
    turn.extend(step(0x19, &[1, 0x58]));
    // 0x11: authenticated (2), UDP, client 1, 17 % 5 = 2: CreatePermission.
    turn.extend(step(0x11, &[0]));
    turn.extend(step(0x01, &channel_data()[1]));
    turn.extend(step(0x21, b"from a peer"));
    turn.extend(step(0x31, &[]));
    vec![exchange, turn]
}
