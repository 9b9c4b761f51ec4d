//! The load generator of `cargo xtask bench`: clients that each Allocate -> 401 -> Allocate with
//! MESSAGE-INTEGRITY (long-term credentials, RFC 8489 §9.2) -> success and Refresh with LIFETIME 0
//! (RFC 8656 §7, §8), from a new UDP socket each time, built with the `relay::stun` codec and
//! retransmitted with a doubling timeout (RFC 8489 §6.2.1).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use relay::stun::{
    Class, EncodeError, Encoder, ErrorCode, Header, Lifetime, Message, MessageType, Method, Nonce,
    Realm, RequestedTransport, TransactionId, Username, XorRelayedAddress,
};

use super::{REALM, USER};

/// First retransmission timeout of the load generator; doubled on each retry.
const RTO: Duration = Duration::from_millis(250);
/// Sends per request before the load generator gives up on it (0.25+0.5+1+2 s).
const TRIES: u32 = 4;

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the load generator's runtime")
}

/// Transaction ids: a per-run random-ish prefix and a counter.
pub(super) fn next_tid() -> TransactionId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().rotate_left(16)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tid = [0u8; 12];
    tid[..4].copy_from_slice(&seed.to_be_bytes());
    tid[4..].copy_from_slice(&n.to_be_bytes());
    TransactionId::new(tid)
}

/// The source address of the next allocating client: 127.1.0.0/16 in turn (all of 127/8 is
/// loopback), so that a 5-tuple comes back only after 64,516 allocations. With 127.0.0.1 alone
/// the kernel soon hands out a port a just-deleted allocation used, and coturn answers such a
/// client 437 (Allocation Mismatch) for a while: an artefact of the benchmark, not of a server.
fn client_ip() -> Ipv4Addr {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let i = NEXT.fetch_add(1, Ordering::Relaxed) % (254 * 254);
    Ipv4Addr::new(127, 1, 1 + (i / 254) as u8, 1 + (i % 254) as u8)
}

/// What the load generator saw.
#[derive(Debug, Default)]
pub(super) struct LoadStats {
    /// Allocations that succeeded.
    pub(super) ok: u64,
    /// Failed steps, by what went wrong.
    failed: BTreeMap<String, u64>,
    pub(super) retransmits: u64,
    pub(super) stale_nonces: u64,
    /// Time from the first Allocate to the success response, microseconds.
    latencies_us: Vec<u32>,
}

impl LoadStats {
    fn fail(&mut self, why: Failure) {
        *self.failed.entry(why.to_string()).or_default() += 1;
    }

    fn merge(&mut self, other: LoadStats) {
        self.ok += other.ok;
        for (k, v) in other.failed {
            *self.failed.entry(k).or_default() += v;
        }
        self.retransmits += other.retransmits;
        self.stale_nonces += other.stale_nonces;
        self.latencies_us.extend(other.latencies_us);
    }

    pub(super) fn failures(&self) -> String {
        if self.failed.is_empty() {
            return "no failures".into();
        }
        self.failed
            .iter()
            .map(|(k, v)| format!("{v} × {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The `q` quantile of the allocation latency, in milliseconds.
    pub(super) fn latency_ms(&mut self, q: f64) -> Option<f64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
        Some(f64::from(self.latencies_us[i]) / 1000.0)
    }
}

#[derive(Debug)]
pub(super) enum Failure {
    Timeout(&'static str),
    Code(&'static str, u16),
    Protocol(&'static str, &'static str),
    Io(&'static str, std::io::ErrorKind),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Timeout(step) => write!(f, "{step}: no answer after {TRIES} sends"),
            Failure::Code(step, code) => write!(f, "{step}: error {code}"),
            Failure::Protocol(step, what) => write!(f, "{step}: {what}"),
            Failure::Io(step, kind) => write!(f, "{step}: {kind}"),
        }
    }
}

impl From<EncodeError> for Failure {
    fn from(_: EncodeError) -> Self {
        Failure::Protocol("encode", "request does not encode")
    }
}

/// One allocation held by the load generator: its socket keeps the 5-tuple.
#[derive(Debug)]
pub(super) struct Allocation {
    sock: tokio::net::UdpSocket,
    nonce: String,
}

/// Builds a request; with `auth`, long-term credentials and MESSAGE-INTEGRITY.
fn request(
    buf: &mut [u8],
    method: Method,
    tid: TransactionId,
    lifetime: Option<u32>,
    auth: Option<(&str, &[u8])>,
) -> Result<usize, EncodeError> {
    let mut e = Encoder::new(buf, MessageType::new(method, Class::Request), tid)?;
    if method == Method::ALLOCATE {
        e.add(&RequestedTransport::UDP)?;
    }
    if let Some(seconds) = lifetime {
        e.add(&Lifetime(seconds))?;
    }
    if let Some((nonce, key)) = auth {
        e.add(&Username(USER))?;
        e.add(&Realm(REALM))?;
        e.add(&Nonce(nonce))?;
        e.message_integrity(key)?;
    }
    Ok(e.finish())
}

/// Sends `req` until a response with its transaction id arrives, retransmitting with a
/// doubling timeout; returns the response's length in `buf`.
async fn transact(
    sock: &tokio::net::UdpSocket,
    req: &[u8],
    tid: TransactionId,
    buf: &mut [u8],
    step: &'static str,
    stats: &mut LoadStats,
) -> Result<usize, Failure> {
    let mut rto = RTO;
    for attempt in 0..TRIES {
        if attempt > 0 {
            stats.retransmits += 1;
        }
        sock.send(req)
            .await
            .map_err(|e| Failure::Io(step, e.kind()))?;
        let deadline = tokio::time::Instant::now() + rto;
        loop {
            match tokio::time::timeout_at(deadline, sock.recv(buf)).await {
                Err(_) => break,
                Ok(Err(e)) => return Err(Failure::Io(step, e.kind())),
                Ok(Ok(n)) => {
                    if Header::peek(&buf[..n]).is_some_and(|h| h.tid == tid) {
                        return Ok(n);
                    }
                }
            }
        }
        rto *= 2;
    }
    Err(Failure::Timeout(step))
}

/// The error code of an error response, or a protocol failure.
fn error_code(msg: &Message<'_>, step: &'static str) -> Result<u16, Failure> {
    match msg.get::<ErrorCode<'_>>() {
        Some(Ok(e)) => Ok(e.code),
        _ => Err(Failure::Protocol(step, "error response without ERROR-CODE")),
    }
}

fn nonce_of(msg: &Message<'_>, step: &'static str) -> Result<String, Failure> {
    match msg.get::<Nonce<'_>>() {
        Some(Ok(n)) => Ok(n.as_str().to_owned()),
        _ => Err(Failure::Protocol(step, "challenge without NONCE")),
    }
}

/// Allocate -> 401 -> Allocate with credentials -> success (a 438 is answered once with the
/// new nonce), from a new UDP socket, as a new WebRTC client does.
async fn allocate(
    server: SocketAddr,
    key: &[u8; 16],
    stats: &mut LoadStats,
) -> Result<Allocation, Failure> {
    const STEP: &str = "challenge";
    let sock = tokio::net::UdpSocket::bind((client_ip(), 0))
        .await
        .map_err(|e| Failure::Io("bind", e.kind()))?;
    sock.connect(server)
        .await
        .map_err(|e| Failure::Io("connect", e.kind()))?;
    let t0 = Instant::now();
    let mut req = [0u8; 512];
    let mut buf = [0u8; 1500];
    let tid = next_tid();
    let n = request(&mut req, Method::ALLOCATE, tid, None, None)?;
    let m = transact(&sock, &req[..n], tid, &mut buf, STEP, stats).await?;
    let msg = Message::decode(&buf[..m]).map_err(|_| Failure::Protocol(STEP, "undecodable"))?;
    if msg.class() != Class::Error {
        return Err(Failure::Protocol(STEP, "allocated without credentials"));
    }
    let code = error_code(&msg, STEP)?;
    if code != 401 {
        return Err(Failure::Code(STEP, code));
    }
    match msg.get::<Realm<'_>>() {
        Some(Ok(r)) if r.as_str() == REALM => {}
        _ => return Err(Failure::Protocol(STEP, "challenge without our REALM")),
    }
    let mut nonce = nonce_of(&msg, STEP)?;

    const AUTH: &str = "allocate";
    for _ in 0..2 {
        let tid = next_tid();
        let n = request(&mut req, Method::ALLOCATE, tid, None, Some((&nonce, key)))?;
        let m = transact(&sock, &req[..n], tid, &mut buf, AUTH, stats).await?;
        let msg = Message::decode(&buf[..m]).map_err(|_| Failure::Protocol(AUTH, "undecodable"))?;
        match msg.class() {
            Class::Success => {
                if msg.verify_integrity(key).is_err() {
                    return Err(Failure::Protocol(AUTH, "bad MESSAGE-INTEGRITY"));
                }
                if !matches!(msg.get::<XorRelayedAddress>(), Some(Ok(_))) {
                    return Err(Failure::Protocol(AUTH, "no XOR-RELAYED-ADDRESS"));
                }
                let us = u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX);
                stats.latencies_us.push(us);
                stats.ok += 1;
                return Ok(Allocation { sock, nonce });
            }
            Class::Error => match error_code(&msg, AUTH)? {
                438 => {
                    stats.stale_nonces += 1;
                    nonce = nonce_of(&msg, AUTH)?;
                }
                code => return Err(Failure::Code(AUTH, code)),
            },
            _ => return Err(Failure::Protocol(AUTH, "unexpected message class")),
        }
    }
    Err(Failure::Code(AUTH, 438))
}

/// Refresh with LIFETIME 0: the allocation ends.
pub(super) async fn refresh0(
    a: &Allocation,
    key: &[u8; 16],
    stats: &mut LoadStats,
) -> Result<(), Failure> {
    const STEP: &str = "refresh";
    let mut req = [0u8; 512];
    let mut buf = [0u8; 1500];
    let mut nonce = a.nonce.clone();
    for _ in 0..2 {
        let tid = next_tid();
        let n = request(&mut req, Method::REFRESH, tid, Some(0), Some((&nonce, key)))?;
        let m = transact(&a.sock, &req[..n], tid, &mut buf, STEP, stats).await?;
        let msg = Message::decode(&buf[..m]).map_err(|_| Failure::Protocol(STEP, "undecodable"))?;
        match msg.class() {
            Class::Success => return Ok(()),
            Class::Error => match error_code(&msg, STEP)? {
                438 => {
                    stats.stale_nonces += 1;
                    nonce = nonce_of(&msg, STEP)?;
                }
                code => return Err(Failure::Code(STEP, code)),
            },
            _ => return Err(Failure::Protocol(STEP, "unexpected message class")),
        }
    }
    Err(Failure::Code(STEP, 438))
}

/// `clients` loops of allocate + refresh 0 until `duration` is over; the allocations in flight
/// then finish.
pub(super) async fn churn(
    server: SocketAddr,
    key: [u8; 16],
    clients: usize,
    duration: Duration,
) -> LoadStats {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        tasks.spawn(async move {
            let mut stats = LoadStats::default();
            while Instant::now() < deadline {
                match allocate(server, &key, &mut stats).await {
                    Ok(a) => {
                        if let Err(f) = refresh0(&a, &key, &mut stats).await {
                            stats.fail(f);
                        }
                    }
                    Err(f) => stats.fail(f),
                }
            }
            stats
        });
    }
    let mut all = LoadStats::default();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(stats) => all.merge(stats),
            Err(_) => *all.failed.entry("load task panicked".into()).or_default() += 1,
        }
    }
    all
}

/// Creates `n` allocations with `clients` in flight and returns them, held.
pub(super) async fn hold(
    server: SocketAddr,
    key: [u8; 16],
    n: usize,
    clients: usize,
) -> (Vec<Allocation>, LoadStats) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients.min(n) {
        let next = next.clone();
        tasks.spawn(async move {
            let mut stats = LoadStats::default();
            let mut held = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                match allocate(server, &key, &mut stats).await {
                    Ok(a) => held.push(a),
                    Err(f) => stats.fail(f),
                }
            }
            (held, stats)
        });
    }
    let mut all = LoadStats::default();
    let mut held = Vec::with_capacity(n);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok((h, stats)) => {
                held.extend(h);
                all.merge(stats);
            }
            Err(_) => *all.failed.entry("load task panicked".into()).or_default() += 1,
        }
    }
    (held, all)
}

#[cfg(test)]
mod tests {
    use relay::stun::long_term_key_md5;

    use super::super::PASSWORD;
    use super::*;

    #[test]
    fn requests_decode_with_integrity() {
        let key = long_term_key_md5(USER, REALM, PASSWORD);
        let mut buf = [0u8; 512];
        let tid = next_tid();
        let n = request(
            &mut buf,
            Method::REFRESH,
            tid,
            Some(0),
            Some(("nonce", &key)),
        )
        .expect("encodes");
        let msg = Message::decode(&buf[..n]).expect("decodes");
        assert_eq!(msg.method(), Method::REFRESH);
        assert_eq!(
            msg.get::<Lifetime>().and_then(Result::ok),
            Some(Lifetime(0))
        );
        assert!(msg.verify_integrity(&key).is_ok());
        assert_ne!(next_tid(), tid);
    }
}
