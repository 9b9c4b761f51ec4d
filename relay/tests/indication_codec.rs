//! The program's Send/Data indication code (`relay_common::indication`) against the relay's
//! own: its CRC-32 against the FINGERPRINTs of RFC 5769's vectors and of the relay's encoder,
//! its Send indication parse against the relay's decoder and against what the protocol core
//! relays, and its Data indication header byte for byte against what the core sends.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use relay::metrics::Metrics;
use relay::proto::auth::{AuthConfig, StaticUser};
use relay::proto::policy::PeerPolicy;
use relay::proto::{
    BindResult, Buf, Command, Config, Inbound, Ledger, Lifetimes, MAX_REPLY_LEN, PEER_HEADROOM,
    PEER_TAILROOM, Quotas, RelayHandle, Server, Transport,
};
use relay::stun::{
    AdditionalAddressFamily, AddressFamily, AttrType, Class, Data, DontFragment, Encoder,
    ErrorCode, Message, MessageType, Method, Nonce, Realm, RequestedTransport, Software,
    TransactionId, Username, XorPeerAddress, long_term_key_md5,
};
use relay_common::indication::{
    self, ATTR_DATA, ATTR_DONT_FRAGMENT, ATTR_MESSAGE_INTEGRITY, ATTR_MESSAGE_INTEGRITY_SHA256,
    ATTR_XOR_PEER_ADDRESS, Fingerprint, MAX_ATTRIBUTES, Refusal, SendIndication, check_fingerprint,
    data_indication, parse_send,
};
use relay_common::{FAMILY_IPV4, FAMILY_IPV6};

// ---------------------------------------------------------------------------------------------
// FINGERPRINT

#[path = "common/rfc5769.rs"]
mod rfc5769;

use rfc5769::{IPV4_RESPONSE, IPV6_RESPONSE, SAMPLE_REQUEST};

/// The FINGERPRINT at the end of `msg`, as [`SendIndication::fingerprint`] gives it.
fn last_fingerprint(msg: &[u8]) -> Fingerprint {
    let at = msg.len() - 8;
    assert_eq!(msg[at..at + 4], [0x80, 0x28, 0x00, 0x04]);
    Fingerprint {
        offset: at as u16,
        value: u32::from_be_bytes([msg[at + 4], msg[at + 5], msg[at + 6], msg[at + 7]]),
    }
}

#[test]
fn rfc5769_fingerprints() {
    for (name, v) in [
        ("sample request", SAMPLE_REQUEST),
        ("IPv4 response", IPV4_RESPONSE),
        ("IPv6 response", IPV6_RESPONSE),
    ] {
        let fp = last_fingerprint(v);
        let body = &v[..fp.offset as usize];
        assert_eq!(indication::crc32(body), crc32fast::hash(body), "{name}");
        assert_eq!(
            indication::crc32(body) ^ indication::FINGERPRINT_XOR,
            fp.value,
            "{name}"
        );
        assert_eq!(check_fingerprint(v, fp), Ok(()), "{name}");
        // The relay's decoder agrees, and both refuse a value off by one bit.
        Message::decode(v)
            .expect("decodes")
            .verify_fingerprint()
            .expect("fingerprint");
        let wrong = Fingerprint {
            value: fp.value ^ 0x8000_0000,
            ..fp
        };
        assert_eq!(
            check_fingerprint(v, wrong),
            Err(Refusal::BadFingerprint),
            "{name}"
        );
    }
}

proptest! {
    /// Any message the relay's encoder finishes with FINGERPRINT (its CRC is crc32fast's) has
    /// a FINGERPRINT the program's CRC-32 computes too, whatever its length mod 8.
    #[test]
    fn encoder_fingerprints(
        software in "[a-zA-Z0-9 ]{0,40}",
        extra in proptest::collection::vec(any::<u8>(), 0..1300),
        tid in any::<[u8; 12]>(),
        pad in any::<u8>(),
    ) {
        let mut buf = vec![0u8; 2048];
        let typ = MessageType::new(Method::BINDING, Class::Request);
        let mut e = Encoder::new(&mut buf, typ, TransactionId::new(tid)).expect("header");
        e.set_padding_byte(pad);
        e.add(&Software(&software)).expect("software");
        e.add_raw(AttrType(0xC0DE), &extra).expect("extra");
        e.fingerprint().expect("fingerprint");
        let len = e.finish();
        let msg = &buf[..len];
        let fp = last_fingerprint(msg);
        prop_assert_eq!(
            indication::crc32(&msg[..fp.offset as usize]),
            crc32fast::hash(&msg[..fp.offset as usize])
        );
        prop_assert_eq!(check_fingerprint(msg, fp), Ok(()));
    }
}

// ---------------------------------------------------------------------------------------------
// Send indications, through the relay's encoder

/// One attribute of a Send indication to build.
#[derive(Debug, Clone)]
enum Spec {
    Peer(SocketAddr),
    Data(Vec<u8>),
    DontFragment,
    Software(String),
    /// Any type below 0x8000 that a Send indication does not carry.
    Required(u16, Vec<u8>),
    /// Any type from 0x8000 on but FINGERPRINT's.
    Optional(u16, Vec<u8>),
    /// MESSAGE-INTEGRITY over what precedes it.
    Integrity,
    /// MESSAGE-INTEGRITY-SHA256 over what precedes it.
    IntegritySha256,
}

const TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

/// A Send indication with these attributes in this order, then FINGERPRINT if asked, written
/// by the relay's encoder with padding bytes `pad`.
fn send_indication(specs: &[Spec], fingerprint: bool, pad: u8, tid: [u8; 12]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let typ = MessageType::new(Method::SEND, Class::Indication);
    let mut e = Encoder::new(&mut buf, typ, TransactionId::new(tid)).expect("header");
    e.set_padding_byte(pad);
    for s in specs {
        match s {
            Spec::Peer(p) => e.add(&XorPeerAddress(*p)),
            Spec::Data(d) => e.add(&Data(d)),
            Spec::DontFragment => e.add(&DontFragment),
            Spec::Software(s) => e.add(&Software(s)),
            Spec::Required(t, v) | Spec::Optional(t, v) => e.add_raw(AttrType(*t), v),
            Spec::Integrity => e.message_integrity(b"key"),
            Spec::IntegritySha256 => e.message_integrity_sha256(b"key"),
        }
        .expect("attribute");
    }
    if fingerprint {
        e.fingerprint().expect("fingerprint");
    }
    let len = e.finish();
    buf.truncate(len);
    buf
}

fn parse(msg: &[u8]) -> Result<SendIndication, Refusal> {
    let tid: [u8; 12] = msg[8..20].try_into().expect("20-byte header");
    parse_send(msg, msg.len() as u16, &tid)
}

/// [`parse`] without the plan, which has `Debug` only with relay-common's `user` feature.
fn outcome(msg: &[u8]) -> Result<(), Refusal> {
    parse(msg).map(|_| ())
}

fn plan_peer(p: &SendIndication) -> SocketAddr {
    let ip = match p.peer_family {
        FAMILY_IPV4 => IpAddr::V4(Ipv4Addr::new(
            p.peer_addr[0],
            p.peer_addr[1],
            p.peer_addr[2],
            p.peer_addr[3],
        )),
        FAMILY_IPV6 => IpAddr::V6(Ipv6Addr::from(p.peer_addr)),
        f => panic!("family {f}"),
    };
    SocketAddr::new(ip, p.peer_port)
}

fn plan_data(p: &SendIndication) -> Range<usize> {
    p.data_offset as usize..p.data_offset as usize + p.data_len as usize
}

/// What the walk refuses a message with these attributes for (FINGERPRINT last), written out
/// from RFC 8489/8656 independently of the walk.
fn expected(specs: &[Spec], fingerprint: bool) -> Result<(), Refusal> {
    let n = specs.len() + usize::from(fingerprint);
    let (mut peer, mut data, mut df) = (false, false, false);
    for s in specs.iter().take(MAX_ATTRIBUTES) {
        let dup = match s {
            Spec::Peer(_) => std::mem::replace(&mut peer, true),
            Spec::Data(_) => std::mem::replace(&mut data, true),
            Spec::DontFragment => std::mem::replace(&mut df, true),
            Spec::Software(_) | Spec::Optional(..) => false,
            Spec::Required(..) => return Err(Refusal::UnknownRequired),
            Spec::Integrity | Spec::IntegritySha256 => return Err(Refusal::Integrity),
        };
        if dup {
            return Err(Refusal::Duplicate);
        }
    }
    if n > MAX_ATTRIBUTES {
        return Err(Refusal::TooManyAttributes);
    }
    if !peer {
        return Err(Refusal::MissingPeer);
    }
    if !data {
        return Err(Refusal::MissingData);
    }
    Ok(())
}

/// Parses `msg` and checks the plan against the relay's decoder: same peer (the first
/// XOR-PEER-ADDRESS, as userspace takes it), same data, DONT-FRAGMENT and FINGERPRINT found,
/// FINGERPRINT verified alike.
fn parse_like_decoder(msg: &[u8]) -> Result<SendIndication, Refusal> {
    let plan = parse(msg)?;
    let m = Message::decode(msg).expect("what the walk takes, the decoder takes");
    assert_eq!(m.typ(), MessageType::new(Method::SEND, Class::Indication));
    let Some(Ok(XorPeerAddress(peer))) = m.get::<XorPeerAddress>() else {
        panic!("no peer for the decoder");
    };
    assert_eq!(plan_peer(&plan), peer);
    let data = m.raw(AttrType::DATA).expect("DATA");
    assert_eq!(&msg[plan_data(&plan)], data.value);
    assert_eq!(plan.data_offset as usize, data.offset + 4);
    assert_eq!(plan.dont_fragment, m.has(AttrType::DONT_FRAGMENT));
    assert_eq!(plan.fingerprint.is_some(), m.has_fingerprint());
    if let Some(fp) = plan.fingerprint {
        assert_eq!(
            check_fingerprint(msg, fp).is_ok(),
            m.verify_fingerprint().is_ok()
        );
    }
    Ok(plan)
}

fn v4(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

#[test]
fn every_order_with_and_without_the_extras() {
    let peers = [v4("198.51.100.20:40000"), v4("[2001:db8:1::1]:3479")];
    for peer in peers {
        for len in [0, 1, 2, 3, 4, 5, 7, 1200] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let extras = [Spec::DontFragment, Spec::Software("Firefox".into())];
            for mask in 0..4 {
                let mut specs = vec![Spec::Peer(peer), Spec::Data(data.clone())];
                for (i, x) in extras.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        specs.push(x.clone());
                    }
                }
                for order in permutations(&specs) {
                    for fingerprint in [false, true] {
                        for pad in [0, 0x20] {
                            let msg = send_indication(&order, fingerprint, pad, TID);
                            let plan = parse_like_decoder(&msg).expect("relayed");
                            assert_eq!(plan_peer(&plan), peer);
                            assert_eq!(&msg[plan_data(&plan)], &data[..]);
                            assert_eq!(plan.dont_fragment, mask & 1 != 0);
                            if let Some(fp) = plan.fingerprint {
                                assert_eq!(check_fingerprint(&msg[..], fp), Ok(()));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every order of `items`.
fn permutations(items: &[Spec]) -> Vec<Vec<Spec>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first.clone());
            out.push(p);
        }
    }
    out
}

#[test]
fn refusals_through_the_encoder() {
    let p = || Spec::Peer(v4("198.51.100.20:1"));
    let d = || Spec::Data(b"media".to_vec());
    for (specs, want) in [
        (vec![d()], Refusal::MissingPeer),
        (vec![p()], Refusal::MissingData),
        (vec![p(), d(), p()], Refusal::Duplicate),
        (vec![p(), d(), d()], Refusal::Duplicate),
        (
            vec![p(), Spec::DontFragment, d(), Spec::DontFragment],
            Refusal::Duplicate,
        ),
        (
            vec![p(), d(), Spec::Required(0x7001, vec![1])],
            Refusal::UnknownRequired,
        ),
        (vec![p(), d(), Spec::Integrity], Refusal::Integrity),
        (vec![p(), Spec::IntegritySha256, d()], Refusal::Integrity),
    ] {
        let msg = send_indication(&specs, true, 0, TID);
        assert_eq!(outcome(&msg), Err(want), "{specs:?}");
        assert_eq!(expected(&specs, true), Err(want), "{specs:?}");
    }
    // Wrong cookie, wrong length, a Data indication: not relayed either.
    let good = send_indication(&[p(), d()], true, 0, TID);
    let mut m = good.clone();
    m[7] ^= 1;
    assert_eq!(outcome(&m), Err(Refusal::NoCookie));
    let mut m = good.clone();
    m[3] += 4;
    assert_eq!(outcome(&m), Err(Refusal::Length));
    let mut m = good.clone();
    m[1] = 0x17;
    assert_eq!(outcome(&m), Err(Refusal::NotSend));
    // A bad FINGERPRINT parses (the walk does not read the data) and fails the check, which is
    // what the decoder says too.
    let mut m = good.clone();
    let n = m.len();
    m[n - 1] ^= 1;
    let plan = parse_like_decoder(&m).expect("parses");
    assert_eq!(
        check_fingerprint(&m[..], plan.fingerprint.expect("fingerprint")),
        Err(Refusal::BadFingerprint)
    );
    // A truncated DATA: the decoder refuses it too.
    let mut m = good.clone();
    m[34..36].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(outcome(&m), Err(Refusal::Truncated));
    assert!(Message::decode(&m).is_err());
}

// ---------------------------------------------------------------------------------------------
// The protocol core: what userspace relays and sends

const CLIENT: &str = "203.0.113.5:40000";
const LISTENER: &str = "192.0.2.10:3478";
const RELAY_V4: &str = "192.0.2.10:50000";
const RELAY_V6: &str = "[2001:db8::10]:50001";
/// Peers the allocation has permissions for.
const PEERS: [&str; 4] = [
    "198.51.100.20",
    "203.0.113.77",
    "2001:db8:1::1",
    "2001:db8:ffff::abcd",
];

/// A protocol core with one dual-stack allocation (relay handle 1 for IPv4, 2 for IPv6) whose
/// client has permissions for [`PEERS`].
struct Core {
    server: Server,
    now: Instant,
}

impl Core {
    fn new() -> Self {
        let mut users = HashMap::new();
        users.insert(
            "alice".to_owned(),
            StaticUser::from_password("alice", "example.org", "wonderland"),
        );
        let config = Config {
            software: "xdpturn test".into(),
            auth: AuthConfig {
                realm: "example.org".into(),
                users,
                secrets: Vec::new(),
                source: None,
                nonce_key: [9; 32],
                nonce_lifetime: Duration::from_secs(600),
            },
            // The peers are in the documentation ranges, which the built-in rules deny.
            policy: PeerPolicy::new(
                [
                    "192.0.2.0/24",
                    "198.51.100.0/24",
                    "203.0.113.0/24",
                    "2001:db8::/32",
                ]
                .iter()
                .map(|s| s.parse().expect("cidr"))
                .collect(),
                Vec::new(),
            ),
            lifetimes: Lifetimes::default(),
            quotas: Quotas::default(),
            relay_ips: vec![
                "192.0.2.10".parse().expect("ip"),
                "2001:db8::10".parse().expect("ip"),
            ],
            listen_ips: Vec::new(),
            external_ips: Vec::new(),
            streams: Default::default(),
            report_usage: false,
        };
        let now = Instant::now();
        let server = Server::new(
            Arc::new(config),
            Arc::new(Ledger::default()),
            Arc::new(Metrics::new().expect("metrics")),
            now,
            1_800_000_000,
        );
        let mut core = Core { server, now };
        let nonce = core.challenge();
        let allocate = core.request(Method::ALLOCATE, 2, Some(&nonce), &|e| {
            e.add(&RequestedTransport::UDP).expect("transport");
            e.add(&AdditionalAddressFamily(AddressFamily::IPV6))
                .expect("family");
        });
        let Command::BindRelays(pending) = core.handle_client(&allocate) else {
            panic!("no allocation")
        };
        let bound = BindResult {
            primary: Ok((RelayHandle(1), v4(RELAY_V4))),
            additional: Some(Ok((RelayHandle(2), v4(RELAY_V6)))),
            reserved: None,
        };
        let mut out = [0u8; MAX_REPLY_LEN];
        let done = core
            .server
            .complete_allocate(*pending, bound, core.now, &mut out);
        assert!(matches!(done, Command::ToClient { .. }), "{done:?}");
        let permit = core.request(Method::CREATE_PERMISSION, 3, Some(&nonce), &|e| {
            for ip in PEERS {
                let peer = SocketAddr::new(ip.parse().expect("ip"), 1);
                e.add(&XorPeerAddress(peer)).expect("peer");
            }
        });
        let Command::Reply { len } =
            core.server
                .handle_client(&inbound(&permit), core.now, &mut [0u8; MAX_REPLY_LEN])
        else {
            panic!("no permission")
        };
        assert!(len > 0);
        core
    }

    /// A request, signed when there is a nonce.
    fn request(
        &self,
        method: Method,
        tid: u8,
        nonce: Option<&str>,
        attrs: &dyn Fn(&mut Encoder<'_>),
    ) -> Vec<u8> {
        let mut buf = vec![0u8; 1024];
        let typ = MessageType::new(method, Class::Request);
        let mut e = Encoder::new(&mut buf, typ, TransactionId::new([tid; 12])).expect("header");
        attrs(&mut e);
        if let Some(nonce) = nonce {
            e.add(&Username("alice")).expect("username");
            e.add(&Realm("example.org")).expect("realm");
            e.add(&Nonce(nonce)).expect("nonce");
            e.message_integrity(&long_term_key_md5("alice", "example.org", "wonderland"))
                .expect("integrity");
        }
        e.fingerprint().expect("fingerprint");
        let len = e.finish();
        buf.truncate(len);
        buf
    }

    /// The nonce of a 401 answer to an unsigned Allocate.
    fn challenge(&mut self) -> String {
        let first = self.request(Method::ALLOCATE, 1, None, &|e| {
            e.add(&RequestedTransport::UDP).expect("transport");
        });
        let mut out = [0u8; MAX_REPLY_LEN];
        let Command::Reply { len } =
            self.server
                .handle_client(&inbound(&first), self.now, &mut out)
        else {
            panic!("no challenge")
        };
        let msg = Message::decode(&out[..len]).expect("decodes");
        assert_eq!(
            msg.get::<ErrorCode>().map(|e| e.map(|e| e.code)),
            Some(Ok(401))
        );
        let Some(Ok(Nonce(nonce))) = msg.get::<Nonce>() else {
            panic!("no nonce")
        };
        nonce.to_owned()
    }

    fn handle_client(&mut self, packet: &[u8]) -> Command {
        let mut out = [0u8; MAX_REPLY_LEN];
        self.server
            .handle_client(&inbound(packet), self.now, &mut out)
    }

    /// What userspace does with a Send indication: the peer and data range it relays, if it
    /// does.
    fn relays(&mut self, packet: &[u8]) -> Option<(SocketAddr, Range<usize>)> {
        match self.handle_client(packet) {
            Command::ToPeer { relay, peer, range } => {
                let want = if peer.is_ipv4() { 1 } else { 2 };
                assert_eq!(relay, RelayHandle(want));
                Some((peer, range))
            }
            Command::None => None,
            other => panic!("{other:?}"),
        }
    }

    /// The Data indication userspace sends a client for `data` from `peer`.
    fn data_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; PEER_HEADROOM + data.len() + PEER_TAILROOM];
        buf[PEER_HEADROOM..PEER_HEADROOM + data.len()].copy_from_slice(data);
        let mut out = vec![0u8; MAX_REPLY_LEN];
        let handle = RelayHandle(if peer.is_ipv4() { 1 } else { 2 });
        let action =
            self.server
                .handle_peer(handle, peer, &mut buf, data.len(), self.now, &mut out);
        let Command::ToClient {
            data: Buf::Output(n),
            ..
        } = action
        else {
            panic!("{action:?}")
        };
        out.truncate(n);
        out
    }
}

fn inbound(packet: &[u8]) -> Inbound<'_> {
    Inbound {
        transport: Transport::Udp,
        local: v4(LISTENER),
        remote: v4(CLIENT),
        packet,
    }
}

/// The crate's 16-byte layout of an address, and its family.
fn layout(ip: IpAddr) -> (u8, [u8; 16]) {
    match ip {
        IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&v4.octets());
            (FAMILY_IPV4, a)
        }
        IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets()),
    }
}

#[test]
fn send_indications_go_where_userspace_sends_them() {
    let mut core = Core::new();
    for ip in PEERS {
        let peer = SocketAddr::new(ip.parse().expect("ip"), 5004);
        for len in [0, 1, 2, 3, 4, 5, 6, 7, 160, 1200] {
            let data: Vec<u8> = (0..len).map(|i| (i * 13 + 1) as u8).collect();
            for (df, fp, sw) in [
                (false, false, false),
                (true, false, false),
                (false, true, false),
                (true, true, true),
            ] {
                let mut specs = vec![Spec::Peer(peer), Spec::Data(data.clone())];
                if df {
                    specs.insert(1, Spec::DontFragment);
                }
                if sw {
                    specs.insert(0, Spec::Software("Mozilla".into()));
                }
                let msg = send_indication(&specs, fp, 0, TID);
                let plan = parse_like_decoder(&msg).expect("relayed");
                let (to, range) = core.relays(&msg).expect("userspace relays it");
                assert_eq!(plan_peer(&plan), to);
                assert_eq!(plan_data(&plan), range);
                assert_eq!(plan.dont_fragment, df);
            }
        }
    }
}

#[test]
fn data_indication_headers_match_userspace_byte_for_byte() {
    let mut core = Core::new();
    for ip in PEERS {
        for port in [1, 3478, 65535] {
            let peer = SocketAddr::new(ip.parse().expect("ip"), port);
            for len in [0, 1, 2, 3, 4, 5, 6, 7, 8, 161, 1200] {
                let data: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
                let sent = core.data_indication(peer, &data);
                // Userspace draws its transaction ID; the program draws its own. Built with
                // the same one, the bytes are the same.
                let tid: [u8; 12] = sent[8..20].try_into().expect("header");
                let (family, addr) = layout(peer.ip());
                let h = data_indication(&tid, family, &addr, port, len as u16).expect("header");
                let mut ours = h.bytes[..usize::from(h.len)].to_vec();
                ours.extend_from_slice(&data);
                ours.extend(std::iter::repeat_n(0, usize::from(h.padding)));
                assert_eq!(ours, sent, "{peer} {len}");
                assert_eq!(usize::from(h.message_len), sent.len());
                // Userspace sends no FINGERPRINT in its Data indications, and neither does this.
                let msg = Message::decode(&sent).expect("decodes");
                assert!(!msg.has_fingerprint());
                assert_eq!(msg.typ(), MessageType::new(Method::DATA, Class::Indication));
                assert_eq!(msg.get::<XorPeerAddress>(), Some(Ok(XorPeerAddress(peer))));
                assert_eq!(msg.get::<Data>(), Some(Ok(Data(&data))));
                // The checksum sum covers the header bytes.
                let mut sum = relay_common::csum::Sum::new();
                sum = sum.add_bytes(&sent[..usize::from(h.len)]);
                assert_eq!(h.sum.fold(), sum.fold());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Random Send indications

fn peer() -> impl Strategy<Value = SocketAddr> {
    (0..PEERS.len(), any::<u16>())
        .prop_map(|(i, port)| SocketAddr::new(PEERS[i].parse().expect("ip"), port))
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..24),
        1 => proptest::collection::vec(any::<u8>(), 1195..1205),
    ]
}

/// Types a Send indication does not carry.
fn required_type() -> impl Strategy<Value = u16> {
    (0u16..0x8000).prop_filter("not a Send indication's", |t| {
        ![
            ATTR_XOR_PEER_ADDRESS,
            ATTR_DATA,
            ATTR_DONT_FRAGMENT,
            ATTR_MESSAGE_INTEGRITY,
            ATTR_MESSAGE_INTEGRITY_SHA256,
        ]
        .contains(t)
    })
}

fn extra() -> impl Strategy<Value = Spec> {
    prop_oneof![
        2 => Just(Spec::DontFragment),
        6 => "[ -~]{0,30}".prop_map(Spec::Software),
        6 => ((0x8000u16..=0xFFFF).prop_filter("not FINGERPRINT", |t| *t != 0x8028),
              proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(t, v)| Spec::Optional(t, v)),
        1 => (required_type(), proptest::collection::vec(any::<u8>(), 0..12))
            .prop_map(|(t, v)| Spec::Required(t, v)),
        1 => Just(Spec::Integrity),
        1 => Just(Spec::IntegritySha256),
        1 => peer().prop_map(Spec::Peer),
        1 => data().prop_map(Spec::Data),
    ]
}

/// A Send indication's attributes, in a random order: mostly a peer, data and a few extras,
/// sometimes one missing or more than the walk takes.
fn specs() -> impl Strategy<Value = Vec<Spec>> {
    (
        proptest::option::weighted(0.95, peer()),
        proptest::option::weighted(0.95, data()),
        proptest::collection::vec(extra(), 0..8),
    )
        .prop_flat_map(|(p, d, extras)| {
            let mut v: Vec<Spec> = extras;
            v.extend(p.map(Spec::Peer));
            v.extend(d.map(Spec::Data));
            Just(v).prop_shuffle()
        })
}

/// Random Send indications built by the relay's encoder parse to exactly what its decoder
/// says, or are refused for the reason RFC 8489/8656 give; whatever the walk relays, the
/// protocol core relays the same way (same peer, same bytes), and a FINGERPRINT the program
/// would refuse is one the core drops.
#[test]
fn random_send_indications() {
    let core = RefCell::new(Core::new());
    let seen: RefCell<HashMap<String, usize>> = RefCell::default();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 1024,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let strategy = (
        specs(),
        any::<bool>(),
        any::<u8>(),
        any::<[u8; 12]>(),
        proptest::option::weighted(0.1, any::<u32>()),
    );
    runner
        .run(&strategy, |(specs, fingerprint, pad, tid, corrupt)| {
            let mut msg = send_indication(&specs, fingerprint, pad, tid);
            if let (true, Some(x)) = (fingerprint, corrupt) {
                let n = msg.len();
                let v = u32::from_be_bytes(msg[n - 4..].try_into().expect("4 bytes")) ^ (x | 1);
                msg[n - 4..].copy_from_slice(&v.to_be_bytes());
            }
            let want = expected(&specs, fingerprint);
            let got = outcome(&msg);
            let outcome = match want {
                Err(r) => {
                    prop_assert_eq!(got, Err(r));
                    format!("{r:?}")
                }
                Ok(()) => {
                    let plan = parse_like_decoder(&msg).expect("relayed");
                    let fp_ok = plan
                        .fingerprint
                        .is_none_or(|fp| check_fingerprint(&msg[..], fp).is_ok());
                    prop_assert_eq!(fp_ok, !(fingerprint && corrupt.is_some()));
                    let relayed = core.borrow_mut().relays(&msg);
                    if fp_ok {
                        prop_assert_eq!(relayed, Some((plan_peer(&plan), plan_data(&plan))));
                        format!("relayed {}", plan.peer_family)
                    } else {
                        prop_assert_eq!(relayed, None);
                        "BadFingerprint".to_owned()
                    }
                }
            };
            *seen.borrow_mut().entry(outcome).or_default() += 1;
            Ok(())
        })
        .expect("property");
    // The generator reaches every outcome.
    let seen = seen.into_inner();
    for outcome in [
        format!("relayed {FAMILY_IPV4}"),
        format!("relayed {FAMILY_IPV6}"),
        "BadFingerprint".to_owned(),
        "Duplicate".to_owned(),
        "UnknownRequired".to_owned(),
        "Integrity".to_owned(),
        "TooManyAttributes".to_owned(),
        "MissingPeer".to_owned(),
        "MissingData".to_owned(),
    ] {
        assert!(
            seen.contains_key(&outcome),
            "{outcome} never came: {seen:?}"
        );
    }
}
