//! Codec benchmarks: the per-message work of the relay's control path (authenticated Allocate,
//! its response, Binding) and the parse of ChannelData that the userspace datapath does when the
//! XDP fast path does not take a packet.
//!
//! Messages are built once with the [`Encoder`], outside the timed loops; inputs go through
//! `black_box` so the compiler cannot fold them.

use std::net::SocketAddr;

use divan::{Bencher, black_box};
use relay::stun::{
    ChannelData, Class, Encoder, Lifetime, MAX_MESSAGE_LEN, Message, MessageType, Method, Nonce,
    Realm, RequestedTransport, Software, TransactionId, Username, XorMappedAddress,
    XorRelayedAddress, long_term_key_md5,
};

fn main() {
    divan::main();
}

/// A TURN REST API style username (expiry:user), as WebRTC clients send.
const USERNAME: &str = "1779300000:alice";
const REALM: &str = "turn.example.org";
const PASSWORD: &str = "7aKz0Xr5Qm2bLw9Vt1Hc";
const NONCE: &str = "0123456789abcdef0123456789abcdef";
const TID: TransactionId = TransactionId::new([
    0x5A, 0x1F, 0x33, 0x90, 0x02, 0xC4, 0x7E, 0x11, 0xB8, 0x6D, 0x2A, 0xF0,
]);

/// An authenticated Allocate request as a client sends it after the 401 challenge.
fn allocate_request(key: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE_LEN];
    let mut enc = Encoder::new(
        &mut buf,
        MessageType::new(Method::ALLOCATE, Class::Request),
        TID,
    )
    .expect("buffer holds a header");
    enc.add(&Username(USERNAME)).expect("USERNAME fits");
    enc.add(&Realm(REALM)).expect("REALM fits");
    enc.add(&Nonce(NONCE)).expect("NONCE fits");
    enc.add(&RequestedTransport::UDP)
        .expect("REQUESTED-TRANSPORT fits");
    enc.add(&Lifetime(600)).expect("LIFETIME fits");
    enc.message_integrity(key).expect("MESSAGE-INTEGRITY fits");
    enc.fingerprint().expect("FINGERPRINT fits");
    let len = enc.finish();
    buf.truncate(len);
    buf
}

/// What the server does with a received request once it has the key.
fn decode_and_verify(wire: &[u8], key: &[u8]) -> bool {
    match Message::decode(wire) {
        Ok(msg) => msg.verify_integrity(key).is_ok() && msg.verify_fingerprint().is_ok(),
        Err(_) => false,
    }
}

mod allocate_request {
    use super::*;

    /// Decode, MESSAGE-INTEGRITY with a cached key, FINGERPRINT.
    #[divan::bench]
    fn decode_verify(bencher: Bencher) {
        let key = long_term_key_md5(USERNAME, REALM, PASSWORD);
        let wire = allocate_request(&key);
        assert!(decode_and_verify(&wire, &key));
        bencher.bench_local(|| decode_and_verify(black_box(&wire), black_box(&key)));
    }

    /// The same, deriving the long-term key per request (a server without a key cache).
    #[divan::bench]
    fn derive_key_decode_verify(bencher: Bencher) {
        let wire = allocate_request(&long_term_key_md5(USERNAME, REALM, PASSWORD));
        bencher.bench_local(|| {
            let key = long_term_key_md5(black_box(USERNAME), black_box(REALM), black_box(PASSWORD));
            decode_and_verify(black_box(&wire), &key)
        });
    }
}

mod allocate_response {
    use super::*;

    /// The success response: relayed and mapped addresses, lifetime, software, integrity and
    /// fingerprint, into a stack buffer.
    #[divan::bench]
    fn encode(bencher: Bencher) {
        let key = long_term_key_md5(USERNAME, REALM, PASSWORD);
        let relayed: SocketAddr = "203.0.113.7:49152".parse().expect("address literal");
        let mapped: SocketAddr = "198.51.100.23:54321".parse().expect("address literal");
        let typ = MessageType::new(Method::ALLOCATE, Class::Success);
        let encode = |buf: &mut [u8], key: &[u8], relayed, mapped| {
            let mut enc = Encoder::new(buf, typ, TID).ok()?;
            enc.add(&XorRelayedAddress(relayed)).ok()?;
            enc.add(&XorMappedAddress(mapped)).ok()?;
            enc.add(&Lifetime(600)).ok()?;
            enc.add(&Software("xdpturn 0.1.0")).ok()?;
            enc.message_integrity(key).ok()?;
            enc.fingerprint().ok()?;
            Some(enc.finish())
        };
        let mut buf = [0u8; 256];
        let len = encode(&mut buf, &key, relayed, mapped).expect("response fits 256 bytes");
        let msg = Message::decode(&buf[..len]).expect("response decodes");
        assert!(msg.verify_integrity(&key).is_ok() && msg.verify_fingerprint().is_ok());

        bencher.bench_local(|| {
            let mut buf = [0u8; 256];
            let len = encode(
                &mut buf,
                black_box(&key),
                black_box(relayed),
                black_box(mapped),
            );
            black_box(&buf);
            len
        });
    }
}

mod channel_data {
    use super::*;

    /// Parse of a ChannelData message carrying 160 bytes (20 ms of G.711 voice) and 1200 bytes
    /// (a video packet near WebRTC's size budget).
    #[divan::bench(args = [160, 1200])]
    fn parse(bencher: Bencher, payload: usize) {
        let data: Vec<u8> = (0..payload).map(|i| i as u8).collect();
        let mut wire = vec![0u8; ChannelData::encoded_len(payload, false)];
        ChannelData {
            channel: 0x4000,
            data: &data,
        }
        .encode(&mut wire, false)
        .expect("wire is sized to fit");
        // Zero-copy: the cost does not grow with the payload, so no bytes counter.
        bencher.bench_local(|| {
            ChannelData::decode(black_box(&wire)).map(|cd| (cd.channel, cd.data.len()))
        });
    }
}

mod binding_request {
    use super::*;

    fn binding(software_and_fingerprint: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 128];
        let mut enc = Encoder::new(
            &mut buf,
            MessageType::new(Method::BINDING, Class::Request),
            TID,
        )
        .expect("buffer holds a header");
        if software_and_fingerprint {
            enc.add(&Software("libwebrtc")).expect("SOFTWARE fits");
            enc.fingerprint().expect("FINGERPRINT fits");
        }
        let len = enc.finish();
        buf.truncate(len);
        buf
    }

    /// A bare Binding request: the 20-byte header, as most STUN clients send it.
    #[divan::bench]
    fn decode(bencher: Bencher) {
        let wire = binding(false);
        bencher.bench_local(|| Message::decode(black_box(&wire)).map(|m| m.method()));
    }

    /// With SOFTWARE and FINGERPRINT: decode only, the fingerprint is not checked.
    #[divan::bench]
    fn decode_with_software_fingerprint(bencher: Bencher) {
        let wire = binding(true);
        bencher.bench_local(|| Message::decode(black_box(&wire)).map(|m| m.method()));
    }
}
