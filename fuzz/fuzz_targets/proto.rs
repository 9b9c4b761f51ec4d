//! The TURN state machine under arbitrary input: a sequence of client packets, peer datagrams,
//! relay-bind completions and clock ticks, from a few clients and peers, must never panic, and
//! the core's bookkeeping must stay consistent (every allocation it reports is findable, the
//! shared quota ledger matches the allocation count).
#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use relay::metrics::Metrics;
use relay::proto::auth::{AuthConfig, StaticUser};
use relay::proto::policy::PeerPolicy;
use relay::proto::{
    BindFailure, BindResult, Command, Config, Inbound, Ledger, Lifetimes, MAX_REPLY_LEN,
    PEER_HEADROOM, PEER_TAILROOM, Quotas, RelayHandle, Server, Transport,
};
use relay::stun::{
    Class, Encoder, Lifetime, MessageType, Method, Nonce, Realm, RequestedTransport, TransactionId,
    Username, long_term_key_md5,
};

fn config() -> Config {
    let mut users = HashMap::new();
    users.insert("u".to_owned(), StaticUser::from_password("u", "r", "p"));
    Config {
        software: "fuzz".into(),
        auth: AuthConfig {
            realm: "r".into(),
            users,
            secrets: vec![b"s".to_vec()],
            source: None,
            nonce_key: [1; 32],
            nonce_lifetime: Duration::from_secs(600),
        },
        policy: PeerPolicy::new(vec!["0.0.0.0/0".parse().expect("cidr")], Vec::new()),
        lifetimes: Lifetimes::default(),
        quotas: Quotas {
            per_user: 3,
            total: 5,
            permissions_per_allocation: 4,
            max_bps: 0,
        },
        relay_ips: Vec::new(),
        listen_ips: Vec::new(),
        external_ips: Vec::new(),
        streams: Default::default(),
        report_usage: false,
    }
}

/// A valid authenticated request, so that the fuzzer reaches past authentication.
fn authenticated(
    server: &Server,
    method: Method,
    tid: u8,
    client: SocketAddr,
    extra: &[u8],
) -> Vec<u8> {
    // The client's side of authentication, computed once per client IP (the relay's checks of
    // both still run on every request): a nonce is an HMAC of the IP and the time, and the
    // time is the same in every run.
    static NONCES: OnceLock<Mutex<HashMap<IpAddr, String>>> = OnceLock::new();
    static KEY: OnceLock<[u8; 16]> = OnceLock::new();
    let nonce = NONCES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(client.ip())
        .or_insert_with(|| server.config().auth.nonce(client.ip(), 1_800_000_000, true))
        .clone();
    let mut buf = vec![0u8; 1024];
    let mut e = Encoder::new(
        &mut buf,
        MessageType::new(method, Class::Request),
        TransactionId::new([tid; 12]),
    )
    .expect("header");
    e.add(&RequestedTransport::UDP).expect("rt");
    if extra.first().is_some_and(|b| b & 1 == 1) {
        e.add(&Lifetime(u32::from(extra.get(1).copied().unwrap_or(0))))
            .expect("lt");
    }
    // Arbitrary attributes in between, raw.
    for chunk in extra.chunks(6).take(3) {
        if chunk.len() >= 2 {
            let _ = e.add_raw(
                relay::stun::AttrType(u16::from_be_bytes([chunk[0], chunk[1]])),
                &chunk[2..],
            );
        }
    }
    e.add(&Username("u")).expect("u");
    e.add(&Realm("r")).expect("r");
    e.add(&Nonce(&nonce)).expect("n");
    e.message_integrity(KEY.get_or_init(|| long_term_key_md5("u", "r", "p")))
        .expect("mi");
    let len = e.finish();
    buf.truncate(len);
    buf
}

fuzz_target!(|data: &[u8]| {
    // One registry for every run: building it is most of a run's cost otherwise.
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    let metrics = METRICS
        .get_or_init(|| Arc::new(Metrics::new().expect("metrics")))
        .clone();
    let ledger = Arc::new(Ledger::default());
    let t0 = Instant::now();
    // One configuration too: its peer policy parses the built-in ranges.
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    let mut server = Server::new(
        CONFIG.get_or_init(|| Arc::new(config())).clone(),
        ledger.clone(),
        metrics,
        t0,
        1_800_000_000,
    );
    let mut now = t0;
    let mut out = vec![0u8; MAX_REPLY_LEN];
    let mut next_handle = 1u32;
    let local: SocketAddr = "192.0.2.1:3478".parse().expect("addr");
    let mut input = data;
    while input.len() >= 2 {
        let op = input[0];
        let len = usize::from(input[1]).min(input.len() - 2);
        let payload = &input[2..2 + len];
        input = &input[2 + len..];
        let client = SocketAddr::from(([203, 0, 113, op & 3], 40000 + u16::from(op >> 6)));
        let transport = if op & 4 == 0 {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        match (op >> 3) & 7 {
            // Raw client bytes.
            0 | 1 => {
                let inbound = Inbound {
                    transport,
                    local,
                    remote: client,
                    packet: payload,
                };
                let command = server.handle_client(&inbound, now, &mut out);
                handle(&mut server, command, now, &mut out, &mut next_handle);
            }
            // An authenticated request with arbitrary extras.
            2 | 3 => {
                let methods = [
                    Method::ALLOCATE,
                    Method::REFRESH,
                    Method::CREATE_PERMISSION,
                    Method::CHANNEL_BIND,
                    Method::CONNECT,
                ];
                let method = methods[usize::from(op) % methods.len()];
                let packet = authenticated(&server, method, op, client, payload);
                let inbound = Inbound {
                    transport,
                    local,
                    remote: client,
                    packet: &packet,
                };
                let command = server.handle_client(&inbound, now, &mut out);
                handle(&mut server, command, now, &mut out, &mut next_handle);
            }
            // A datagram from a peer to some relay socket.
            4 | 5 => {
                let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + PEER_TAILROOM];
                buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
                let peer = SocketAddr::from(([198, 51, 100, op & 7], 5000));
                let handle_id = RelayHandle(u32::from(op) % next_handle.max(1));
                let _ = server.handle_peer(handle_id, peer, &mut buf, payload.len(), now, &mut out);
            }
            // Time passes.
            _ => {
                now += Duration::from_secs(u64::from(op) * 7);
                server.tick(now);
            }
        }
        while server.poll_event().is_some() {}
        assert_eq!(
            ledger.total() as usize,
            server.allocation_count(),
            "ledger and allocations agree"
        );
    }
    server.shutdown();
    while server.poll_event().is_some() {}
    assert_eq!(ledger.total(), 0, "shutdown releases every quota");
});

/// Completes what the core asked of the event loop, alternating success and failure.
fn handle(
    server: &mut Server,
    command: Command,
    now: Instant,
    out: &mut [u8],
    next_handle: &mut u32,
) {
    match command {
        Command::BindRelays(pending) => {
            let h = *next_handle;
            *next_handle += 3;
            let addr =
                |port: u32| SocketAddr::from(([192, 0, 2, 1], 49152 + (port % 10000) as u16));
            let primary = if h % 5 == 4 {
                Err(BindFailure::NoCapacity)
            } else {
                Ok((RelayHandle(h), addr(h)))
            };
            let additional = pending
                .additional
                .map(|_| Ok((RelayHandle(h + 1), addr(h + 1))));
            let reserved = matches!(
                pending.primary,
                relay::proto::RelayRequest::Bind {
                    reserve_next: true,
                    ..
                }
            )
            .then(|| addr(h + 2));
            let _ = server.complete_allocate(
                *pending,
                BindResult {
                    primary,
                    additional,
                    reserved,
                },
                now,
                out,
            );
        }
        Command::Connect(pending) => {
            let ok = next_handle.is_multiple_of(2);
            let _ = server.complete_connect(*pending, ok, now, out);
        }
        _ => {}
    }
}
