//! TURN exchanges from a few clients, derived from the fuzz input with `arbitrary`: Allocate
//! with and without (or with wrong) credentials, Refresh, CreatePermission, ChannelBind, Send
//! indications, ChannelData, datagrams from peers and time passing, run through the protocol
//! core (`relay::proto::Server`) without sockets, as `proto` does.
//!
//! Where `proto` throws bytes at the core, this target speaks the protocol: every request
//! carries a valid MESSAGE-INTEGRITY over a live nonce (unless the step asks for a wrong or
//! missing one), so the fuzzer spends its time past authentication, in the allocation,
//! permission and channel logic. A model follows what the relay *answered* (successes only)
//! and the relay's forwarding is checked against it:
//!
//! - nothing panics, and the quotas hold: the shared ledger matches the allocation count,
//!   which stays within the total quota, and no user holds more than the per-user quota;
//! - ChannelData reaches a peer only on a channel a ChannelBind success bound, for this
//!   allocation (not one it replaced), to that very peer, within the channel's lifetime, from
//!   the allocation's relayed address;
//! - a Send indication's data reaches a peer, and a peer's datagram the client, only with a
//!   permission that a CreatePermission or ChannelBind success installed for the peer's IP and
//!   that has not expired;
//! - a peer's datagram reaches the client whose allocation owns the relay socket it came to.
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay::metrics::Metrics;
use relay::proto::auth::{AuthConfig, StaticUser};
use relay::proto::policy::PeerPolicy;
use relay::proto::{
    BindResult, Buf, Command, Config, FiveTuple, Inbound, Ledger, Lifetimes, MAX_REPLY_LEN,
    PEER_HEADROOM, PEER_TAILROOM, Quotas, RelayHandle, Server, Transport,
};
use relay::stun::{
    ChannelData, ChannelNumber, Class, Data, Encoder, Lifetime, Message, MessageType, Method,
    Nonce, Realm, RequestedTransport, TransactionId, Username, XorPeerAddress, long_term_key_md5,
};

const REALM: &str = "fuzz.example";
/// (username, password): clients 0 and 1 are the first user, 2 and 3 the second.
const USERS: [(&str, &str); 2] = [("alice", "alice-pw"), ("bob", "bob-pw")];
const CLIENTS: usize = 4;
const UNIX_T0: u64 = 1_800_000_000;
const QUOTAS: Quotas = Quotas {
    per_user: 2,
    total: 3,
    permissions_per_allocation: 3,
    max_bps: 0,
};

/// The peers the steps name: IPv4 ones, an IPv6 one (no IPv6 relayed address: 443), and one
/// the policy denies (403).
fn peer(index: u8) -> SocketAddr {
    let peers: [SocketAddr; 6] = [
        "198.51.100.1:5000".parse().expect("addr"),
        "198.51.100.1:5001".parse().expect("addr"),
        "198.51.100.2:6000".parse().expect("addr"),
        "198.51.100.3:7000".parse().expect("addr"),
        "[2001:db8::7]:8000".parse().expect("addr"),
        "10.9.9.9:9000".parse().expect("addr"),
    ];
    peers[usize::from(index) % peers.len()]
}

fn client_addr(client: u8) -> SocketAddr {
    let c = client % CLIENTS as u8;
    // Clients 0 and 1 share an IP (two ports behind one NAT).
    SocketAddr::from(([203, 0, 113, 1 + c / 2], 40000 + u16::from(c)))
}

const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)), 3478);

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Auth {
    /// Valid long-term credentials over a live nonce.
    Valid,
    /// No credentials at all: a 401 with a nonce.
    None,
    /// The right user, a wrong password.
    WrongPassword,
    /// A nonce the relay issued long ago.
    StaleNonce,
}

#[derive(Debug, Arbitrary)]
enum Step {
    Allocate {
        client: u8,
        auth: Auth,
        lifetime: Option<u16>,
        dont_fragment: bool,
    },
    Refresh {
        client: u8,
        auth: Auth,
        lifetime: Option<u16>,
    },
    CreatePermission {
        client: u8,
        auth: Auth,
        peers: Vec<u8>,
    },
    ChannelBind {
        client: u8,
        auth: Auth,
        channel: u16,
        peer: u8,
    },
    Send {
        client: u8,
        peer: u8,
        data: Vec<u8>,
    },
    ChannelData {
        client: u8,
        channel: u16,
        pad: bool,
        data: Vec<u8>,
    },
    /// A datagram from a peer to the relay socket of a client's allocation (or to a socket
    /// that is no one's).
    FromPeer {
        peer: u8,
        to: u8,
        data: Vec<u8>,
    },
    /// The same transaction sent twice.
    Retransmit,
    Wait {
        seconds: u16,
    },
}

/// Channel numbers: mostly the first few valid ones, so that binds collide; sometimes any.
fn channel_number(raw: u16) -> u16 {
    if raw & 0x8000 == 0 {
        0x4000 + (raw & 3)
    } else {
        raw
    }
}

/// What the relay's answers established, per client.
#[derive(Debug, Default, Clone)]
struct Model {
    allocated: bool,
    /// Channel number -> (peer, expiry).
    channels: HashMap<u16, (SocketAddr, Instant)>,
    /// Peer IP -> expiry.
    permissions: HashMap<IpAddr, Instant>,
}

struct Harness {
    server: Server,
    ledger: Arc<Ledger>,
    t0: Instant,
    now: Instant,
    out: Vec<u8>,
    next_handle: u32,
    next_tid: u64,
    models: [Model; CLIENTS],
    lifetimes: Lifetimes,
    /// The last request sent and what its success means, for `Retransmit`.
    last: Option<(u8, Vec<u8>, Effect)>,
}

/// What a success to a request tells the model.
#[derive(Debug, Clone)]
enum Effect {
    /// A new allocation (its retransmission: the same one).
    Allocate,
    /// A Refresh: with LIFETIME 0, the allocation is gone.
    Refresh,
    Permissions(Vec<IpAddr>),
    Channel(u16, SocketAddr),
}

fn config() -> Config {
    let mut users = HashMap::new();
    for (user, password) in USERS {
        users.insert(
            user.to_owned(),
            StaticUser::from_password(user, REALM, password),
        );
    }
    Config {
        software: "fuzz".into(),
        auth: AuthConfig {
            realm: REALM.into(),
            users,
            secrets: Vec::new(),
            source: None,
            nonce_key: [7; 32],
            nonce_lifetime: Duration::from_secs(600),
        },
        policy: PeerPolicy::new(
            vec![
                "198.51.100.0/24".parse().expect("cidr"),
                "2001:db8::/32".parse().expect("cidr"),
            ],
            Vec::new(),
        ),
        lifetimes: Lifetimes::default(),
        quotas: QUOTAS,
        relay_ips: Vec::new(),
        listen_ips: Vec::new(),
        external_ips: Vec::new(),
        streams: Default::default(),
        report_usage: false,
    }
}

/// The long-term key of `USERS[user]`, or of that user with a wrong password: computed once,
/// as a client keeps it.
fn client_key(user: usize, wrong_password: bool) -> [u8; 16] {
    static KEYS: OnceLock<[[[u8; 16]; 2]; 2]> = OnceLock::new();
    let keys = KEYS.get_or_init(|| {
        USERS.map(|(name, password)| {
            [
                long_term_key_md5(name, REALM, password),
                long_term_key_md5(name, REALM, "not-the-password"),
            ]
        })
    });
    keys[user][usize::from(wrong_password)]
}

/// The nonce the relay issues to `ip` at `unix_now`, for the client's side of a request. A
/// nonce is an HMAC of both (and of the configuration's key, the same in every run), so each
/// pair's is computed once across runs: the clock starts at the same second in every run.
/// The relay's own check of the nonce still runs on every request.
fn client_nonce(server: &Server, ip: IpAddr, unix_now: u64) -> String {
    static CACHE: OnceLock<Mutex<HashMap<(IpAddr, u64), String>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache
        .entry((ip, unix_now))
        .or_insert_with(|| server.config().auth.nonce(ip, unix_now, true))
        .clone()
}

fn tuple(client: u8) -> FiveTuple {
    FiveTuple {
        transport: Transport::Udp,
        client: client_addr(client),
        server: LOCAL,
    }
}

impl Harness {
    fn new() -> Self {
        // One registry for every run: building it is most of a run's cost otherwise.
        static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
        let metrics = METRICS
            .get_or_init(|| Arc::new(Metrics::new().expect("metrics")))
            .clone();
        let ledger = Arc::new(Ledger::default());
        let t0 = Instant::now();
        // One configuration too: its peer policy parses the built-in ranges.
        static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
        let config = CONFIG.get_or_init(|| Arc::new(config())).clone();
        let lifetimes = config.lifetimes;
        Harness {
            server: Server::new(config, ledger.clone(), metrics, t0, UNIX_T0),
            ledger,
            t0,
            now: t0,
            out: vec![0u8; MAX_REPLY_LEN],
            next_handle: 1,
            next_tid: 1,
            models: Default::default(),
            lifetimes,
            last: None,
        }
    }

    fn unix_now(&self) -> u64 {
        UNIX_T0 + self.now.duration_since(self.t0).as_secs()
    }

    /// A request from `client`, with `attrs` added, authenticated as `auth` says.
    fn request(
        &mut self,
        client: u8,
        method: Method,
        auth: Auth,
        attrs: impl FnOnce(&mut Encoder<'_>),
    ) -> (TransactionId, Vec<u8>) {
        let mut tid = [0u8; 12];
        tid[..8].copy_from_slice(&self.next_tid.to_be_bytes());
        self.next_tid += 1;
        let tid = TransactionId::new(tid);
        let mut buf = vec![0u8; 2048];
        let mut e = Encoder::new(&mut buf, MessageType::new(method, Class::Request), tid)
            .expect("the buffer holds a header");
        attrs(&mut e);
        let (user, _) = USERS[usize::from(client % CLIENTS as u8) / 2];
        let ip = client_addr(client).ip();
        let issued = match auth {
            Auth::StaleNonce => UNIX_T0 - 3600,
            _ => self.unix_now(),
        };
        let nonce = client_nonce(&self.server, ip, issued);
        if !matches!(auth, Auth::None) {
            e.add(&Username(user)).expect("USERNAME fits");
            e.add(&Realm(REALM)).expect("REALM fits");
            e.add(&Nonce(&nonce)).expect("NONCE fits");
            e.message_integrity(&client_key(
                usize::from(client % CLIENTS as u8) / 2,
                matches!(auth, Auth::WrongPassword),
            ))
            .expect("MESSAGE-INTEGRITY fits");
        }
        let len = e.finish();
        buf.truncate(len);
        (tid, buf)
    }

    /// Hands a client's packet to the core and completes what it asks; returns whether the
    /// answer was a success response to `tid`, and the success's LIFETIME if it has one.
    fn send(&mut self, client: u8, packet: &[u8], tid: Option<TransactionId>) -> Option<u32> {
        let client = client % CLIENTS as u8;
        let inbound = Inbound {
            transport: Transport::Udp,
            local: LOCAL,
            remote: client_addr(client),
            packet,
        };
        let mut command = self.server.handle_client(&inbound, self.now, &mut self.out);
        if let Command::BindRelays(pending) = command {
            let h = self.next_handle;
            self.next_handle += 1;
            let addr = SocketAddr::from(([192, 0, 2, 1], 49152 + (h % 10000) as u16));
            command = self.server.complete_allocate(
                *pending,
                BindResult {
                    primary: Ok((RelayHandle(h), addr)),
                    additional: None,
                    reserved: None,
                },
                self.now,
                &mut self.out,
            );
            // The answer goes out by the client's 5-tuple: the event loop has moved on.
            if let Command::ToClient {
                tuple: t,
                data: Buf::Output(len),
            } = command
            {
                assert_eq!(t, tuple(client), "an Allocate answered to another client");
                command = Command::Reply { len };
            }
        }
        match command {
            Command::Reply { len } => {
                let msg = Message::decode(&self.out[..len]).expect("the relay's reply decodes");
                let tid = tid?;
                assert_eq!(msg.tid(), &tid, "a reply to another transaction");
                if msg.class() != Class::Success {
                    return None;
                }
                Some(
                    msg.get::<Lifetime>()
                        .and_then(Result::ok)
                        .map_or(u32::MAX, |l| l.0),
                )
            }
            Command::ToPeer { relay, peer, range } => {
                assert!(tid.is_none(), "a request forwarded to a peer");
                self.check_to_peer(client, packet, relay, peer, range);
                None
            }
            Command::ToClient { .. } => panic!("a client's packet sent to a client"),
            Command::None | Command::AwaitUser => None,
            other => panic!("unexpected command for a UDP client: {other:?}"),
        }
    }

    /// A client's ChannelData or Send indication forwarded to `peer`: the model must allow it.
    fn check_to_peer(
        &self,
        client: u8,
        packet: &[u8],
        relay: RelayHandle,
        peer: SocketAddr,
        range: std::ops::Range<usize>,
    ) {
        let model = &self.models[usize::from(client)];
        assert!(
            model.allocated,
            "forwarded for a client without an allocation"
        );
        let a = self
            .server
            .allocation(&tuple(client))
            .expect("forwarded for a client the core has no allocation of");
        assert_eq!(
            a.relay_for(peer).map(|r| r.handle),
            Some(relay),
            "forwarded from another allocation's relay socket"
        );
        let payload = packet.get(range).expect("the range is inside the packet");
        if let Ok(cd) = ChannelData::decode(packet) {
            let bound = model.channels.get(&cd.channel);
            assert!(
                bound.is_some_and(|&(p, expires)| p == peer && expires > self.now),
                "ChannelData on channel {:#06x} sent to {peer}, bound to {bound:?} (now {:?})",
                cd.channel,
                self.now.duration_since(self.t0)
            );
            assert_eq!(payload, cd.data, "ChannelData forwarded with other data");
        } else {
            let permitted = model.permissions.get(&peer.ip());
            assert!(
                permitted.is_some_and(|&expires| expires > self.now),
                "a Send indication's data sent to {peer} without a permission ({permitted:?})"
            );
        }
    }

    /// Sends a request and updates the model with what a success means. A retransmission
    /// (`fresh` false) that succeeds refreshes what it names, as the first one did: the model
    /// may be more lenient than the relay, never stricter.
    fn transact(
        &mut self,
        client: u8,
        tid: TransactionId,
        packet: Vec<u8>,
        effect: Effect,
        fresh: bool,
    ) {
        let client = client % CLIENTS as u8;
        let answer = self.send(client, &packet, Some(tid));
        self.last = Some((client, packet, effect.clone()));
        let Some(lifetime) = answer else {
            return;
        };
        let (now, l) = (self.now, self.lifetimes);
        let m = &mut self.models[usize::from(client)];
        match effect {
            Effect::Allocate if fresh => {
                // A new allocation (each step has its own tid, so this is no retransmission):
                // nothing of an earlier one carries over.
                *m = Model {
                    allocated: true,
                    ..Model::default()
                };
            }
            Effect::Allocate => m.allocated = true,
            Effect::Refresh if lifetime == 0 => *m = Model::default(),
            Effect::Refresh => {}
            Effect::Permissions(ips) => {
                for ip in ips {
                    m.permissions.insert(ip, now + l.permission);
                }
            }
            Effect::Channel(channel, p) => {
                m.channels.insert(channel, (p, now + l.channel));
                m.permissions.insert(p.ip(), now + l.permission);
            }
        }
    }

    fn step(&mut self, step: Step) {
        match step {
            Step::Allocate {
                client,
                auth,
                lifetime,
                dont_fragment,
            } => {
                let (tid, packet) = self.request(client, Method::ALLOCATE, auth, |e| {
                    e.add(&RequestedTransport::UDP).expect("fits");
                    if let Some(l) = lifetime {
                        e.add(&Lifetime(u32::from(l))).expect("fits");
                    }
                    if dont_fragment {
                        e.add(&relay::stun::DontFragment).expect("fits");
                    }
                });
                self.transact(client, tid, packet, Effect::Allocate, true);
            }
            Step::Refresh {
                client,
                auth,
                lifetime,
            } => {
                let (tid, packet) = self.request(client, Method::REFRESH, auth, |e| {
                    if let Some(l) = lifetime {
                        e.add(&Lifetime(u32::from(l))).expect("fits");
                    }
                });
                self.transact(client, tid, packet, Effect::Refresh, true);
            }
            Step::CreatePermission {
                client,
                auth,
                peers,
            } => {
                let peers: Vec<SocketAddr> = peers.iter().take(4).map(|&p| peer(p)).collect();
                let (tid, packet) = self.request(client, Method::CREATE_PERMISSION, auth, |e| {
                    for p in &peers {
                        e.add(&XorPeerAddress(*p)).expect("fits");
                    }
                });
                let ips = peers.iter().map(SocketAddr::ip).collect();
                self.transact(client, tid, packet, Effect::Permissions(ips), true);
            }
            Step::ChannelBind {
                client,
                auth,
                channel,
                peer: p,
            } => {
                let channel = channel_number(channel);
                let p = peer(p);
                let (tid, packet) = self.request(client, Method::CHANNEL_BIND, auth, |e| {
                    e.add(&ChannelNumber(channel)).expect("fits");
                    e.add(&XorPeerAddress(p)).expect("fits");
                });
                self.transact(client, tid, packet, Effect::Channel(channel, p), true);
            }
            Step::Send {
                client,
                peer: p,
                data,
            } => {
                let mut buf = vec![0u8; 64 + data.len()];
                let mut tid = [0u8; 12];
                tid[..8].copy_from_slice(&self.next_tid.to_be_bytes());
                self.next_tid += 1;
                let mut e = Encoder::new(
                    &mut buf,
                    MessageType::new(Method::SEND, Class::Indication),
                    TransactionId::new(tid),
                )
                .expect("header");
                e.add(&XorPeerAddress(peer(p))).expect("fits");
                e.add(&Data(&data)).expect("fits");
                let len = e.finish();
                self.send(client, &buf[..len], None);
            }
            Step::ChannelData {
                client,
                channel,
                pad,
                data,
            } => {
                let cd = ChannelData {
                    channel: channel_number(channel),
                    data: &data,
                };
                let mut buf = vec![0u8; ChannelData::encoded_len(data.len(), true)];
                let Some(len) = cd.encode(&mut buf, pad) else {
                    return;
                };
                self.send(client, &buf[..len], None);
            }
            Step::FromPeer { peer: p, to, data } => {
                let from = peer(p);
                let to = to % (CLIENTS as u8 + 1);
                let target = (usize::from(to) < CLIENTS)
                    .then(|| self.server.allocation(&tuple(to)))
                    .flatten()
                    .and_then(|a| a.relays.first().map(|r| r.handle));
                let handle = target.unwrap_or(RelayHandle(u32::MAX));
                let mut buf = vec![0u8; PEER_HEADROOM + data.len() + PEER_TAILROOM];
                buf[PEER_HEADROOM..PEER_HEADROOM + data.len()].copy_from_slice(&data);
                let command = self.server.handle_peer(
                    handle,
                    from,
                    &mut buf,
                    data.len(),
                    self.now,
                    &mut self.out,
                );
                match command {
                    Command::ToClient { tuple: t, data: d } => {
                        assert!(target.is_some(), "a datagram to no one's socket relayed");
                        assert_eq!(t, tuple(to), "relayed to a client other than the owner");
                        let permitted = self.models[usize::from(to)].permissions.get(&from.ip());
                        assert!(
                            permitted.is_some_and(|&expires| expires > self.now),
                            "a datagram from {from} relayed without a permission ({permitted:?})"
                        );
                        let framed = match d {
                            Buf::Input(r) => &buf[r],
                            Buf::Output(len) => &self.out[..len],
                        };
                        assert!(
                            framed.len() >= data.len(),
                            "the framed datagram is shorter than its data"
                        );
                    }
                    Command::None => {}
                    other => panic!("unexpected command for a peer's datagram: {other:?}"),
                }
            }
            Step::Retransmit => {
                if let Some((client, packet, effect)) = self.last.take()
                    && let Ok(msg) = Message::decode(&packet)
                {
                    let tid = *msg.tid();
                    self.transact(client, tid, packet, effect, false);
                }
            }
            Step::Wait { seconds } => {
                self.now += Duration::from_secs(u64::from(seconds % 1200));
                self.server.tick(self.now);
            }
        }
        while self.server.poll_event().is_some() {}
        self.check_quotas();
    }

    fn check_quotas(&self) {
        let count = self.server.allocation_count();
        assert_eq!(
            self.ledger.total() as usize,
            count,
            "ledger and allocations agree"
        );
        assert!(
            count <= QUOTAS.total as usize,
            "{count} allocations over the total quota"
        );
        // One lookup per client (hashing a 5-tuple is most of what this check costs).
        let mut held = [0usize; USERS.len()];
        for c in 0..CLIENTS as u8 {
            if let Some(a) = self.server.allocation(&tuple(c))
                && let Some(u) = USERS.iter().position(|&(user, _)| a.username == user)
            {
                held[u] += 1;
            }
        }
        for ((user, _), held) in USERS.iter().zip(held) {
            assert!(
                held <= QUOTAS.per_user as usize,
                "{user} holds {held} allocations"
            );
        }
    }
}

fuzz_target!(|steps: Vec<Step>| {
    let mut h = Harness::new();
    for step in steps.into_iter().take(64) {
        h.step(step);
    }
    h.server.shutdown();
    while h.server.poll_event().is_some() {}
    assert_eq!(h.ledger.total(), 0, "shutdown releases every quota");
});
