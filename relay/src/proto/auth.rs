//! The long-term credential mechanism (RFC 8489 §9.2): realm, nonces that expire, static users
//! and time-limited REST credentials from shared secrets, MD5 and SHA-256 keys; and a limit on
//! failed attempts per source address. Users kept outside the configuration (coturn's user
//! database) are asked through [`UserSource`], which answers at once, possibly "not yet".

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::stun::{
    Message, Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, Username, long_term_key_md5,
    long_term_key_sha256,
};

/// The password of a REST credential (the "TURN REST API" draft, draft-uberti-behave-turn-rest,
/// coturn's `use-auth-secret`): base64(HMAC-SHA1(secret, username)), what a relay sharing
/// `secret` expects for `username`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// RFC 8489 §9.2.1: a nonce starting with this cookie announces the security features in the
/// next four characters; "gAAA" is base64 of 0x800000, bit 0 set: password algorithms.
pub const NONCE_COOKIE: &str = "obMatJos2gAAA";

/// A nonce's bytes before base64: a 32-bit expiry and 64 bits of MAC.
const NONCE_RAW_LEN: usize = 12;

/// A static user's secret: the password when known (SHA-256 keys need it), and the MD5 key.
#[derive(Debug, Clone)]
pub struct StaticUser {
    password: Option<String>,
    key_md5: [u8; 16],
}

impl StaticUser {
    pub fn from_password(user: &str, realm: &str, password: &str) -> Self {
        Self {
            password: Some(password.to_owned()),
            key_md5: long_term_key_md5(user, realm, password),
        }
    }

    /// A user known only by the key `turnadmin -k` prints: MD5 authentication only.
    pub fn from_key(key_md5: [u8; 16]) -> Self {
        Self {
            password: None,
            key_md5,
        }
    }
}

/// What a [`UserSource`] knows of a user right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The user's MD5 long-term key.
    Key([u8; 16]),
    /// No such user.
    Absent,
    /// Being looked up: ask again once the source has the answer.
    Pending,
    /// Not looked up (the source is over its budget of lookups): drop the request, the client
    /// retransmits.
    Busy,
}

/// Long-term users kept outside the configuration, e.g. in coturn's user database. It must
/// answer without waiting (the workers call it): from what it has, starting a lookup when it
/// has nothing.
pub trait UserSource: std::fmt::Debug + Send + Sync {
    /// What is known of `username` in the relay's realm.
    fn lookup(&self, username: &str) -> Lookup;
}

/// The integrity key of one authenticated request, reused for the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Md5([u8; 16]),
    Sha256([u8; 32]),
}

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Key::Md5(k) => k,
            Key::Sha256(k) => k,
        }
    }
}

/// Who a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    pub username: String,
    pub key: Key,
}

/// Why a request is not authenticated, and so what to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No credentials: answer 401 with REALM and NONCE (a normal first round trip).
    Challenge,
    /// The nonce expired or is not ours: 438 with a fresh one.
    StaleNonce,
    /// 400: credentials present but incomplete or inconsistent.
    BadRequest(&'static str),
    /// 401: credentials present and wrong. Counted and rate limited.
    Rejected(Rejection),
    /// The user is being looked up in the [`UserSource`]: answer once it is known.
    Pending,
    /// The [`UserSource`] is over its budget of lookups: drop, the client retransmits.
    Busy,
}

/// Why credentials were refused (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    UnknownUser,
    Expired,
    WrongPassword,
    WrongRealm,
    RateLimited,
}

impl Rejection {
    pub const ALL: [Rejection; 5] = [
        Rejection::UnknownUser,
        Rejection::Expired,
        Rejection::WrongPassword,
        Rejection::WrongRealm,
        Rejection::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownUser => "unknown_user",
            Rejection::Expired => "expired",
            Rejection::WrongPassword => "wrong_password",
            Rejection::WrongRealm => "wrong_realm",
            Rejection::RateLimited => "rate_limited",
        }
    }
}

/// Everything authentication needs; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub realm: String,
    pub users: HashMap<String, StaticUser>,
    /// REST shared secrets; any of them validates (rotation).
    pub secrets: Vec<Vec<u8>>,
    /// Users asked for when neither `users` nor a secret authenticates (coturn's database).
    pub source: Option<Arc<dyn UserSource>>,
    /// Key of the stateless nonces.
    pub nonce_key: [u8; 32],
    pub nonce_lifetime: Duration,
}

impl AuthConfig {
    /// A fresh, unpredictable nonce for `client`, valid until `unix_now + nonce_lifetime`;
    /// with `offer`, it starts with the cookie that offers SHA-256 (RFC 8489 §9.2.1), without,
    /// it is the plain nonce of an MD5-only challenge.
    ///
    /// Nonces are stateless — an expiry and a MAC over it and the client's IP — so a flood of
    /// unauthenticated requests costs no memory. They are short (16 characters after the
    /// cookie: a 32-bit expiry and a 64-bit MAC), because every challenge carries one.
    pub fn nonce(&self, client: IpAddr, unix_now: u64, offer: bool) -> String {
        let expiry = unix_now
            .saturating_add(self.nonce_lifetime.as_secs())
            .min(u64::from(u32::MAX)) as u32;
        let mac = self.nonce_mac(expiry, client);
        let mut raw = [0u8; NONCE_RAW_LEN];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&mac[..NONCE_RAW_LEN - 4]);
        let mut nonce = String::with_capacity(NONCE_COOKIE.len() + 16);
        if offer {
            nonce.push_str(NONCE_COOKIE);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(raw, &mut nonce);
        nonce
    }

    fn nonce_mac(&self, expiry: u32, client: IpAddr) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.nonce_key)
            .unwrap_or_else(|_| unreachable!());
        mac.update(&expiry.to_be_bytes());
        match client.to_canonical() {
            IpAddr::V4(ip) => mac.update(&ip.octets()),
            IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.finalize().into_bytes().into()
    }

    /// Whether `nonce` is one we issued to `client` (with the cookie or without) and has not
    /// expired.
    pub fn nonce_valid(&self, nonce: &str, client: IpAddr, unix_now: u64) -> bool {
        let payload = nonce.strip_prefix(NONCE_COOKIE).unwrap_or(nonce);
        let mut raw = [0u8; NONCE_RAW_LEN + 3];
        match base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(payload, &mut raw) {
            Ok(NONCE_RAW_LEN) => {}
            _ => return false,
        }
        let mut expiry = [0u8; 4];
        expiry.copy_from_slice(&raw[..4]);
        let expiry = u32::from_be_bytes(expiry);
        let mac = self.nonce_mac(expiry, client);
        let mac_ok: bool =
            subtle::ConstantTimeEq::ct_eq(&mac[..NONCE_RAW_LEN - 4], &raw[4..NONCE_RAW_LEN]).into();
        mac_ok && u64::from(expiry) >= unix_now
    }

    /// Authenticates a request (RFC 8489 §9.2.4), checking MESSAGE-INTEGRITY or
    /// MESSAGE-INTEGRITY-SHA256 over the received bytes.
    pub fn authenticate(
        &self,
        msg: &Message<'_>,
        client: IpAddr,
        unix_now: u64,
    ) -> Result<Authenticated, AuthError> {
        if !msg.has_integrity() && !msg.has_integrity_sha256() {
            return Err(AuthError::Challenge);
        }
        let (Some(Ok(Username(username))), Some(Ok(Realm(realm))), Some(Ok(Nonce(nonce)))) = (
            msg.get::<Username>(),
            msg.get::<Realm>(),
            msg.get::<Nonce>(),
        ) else {
            return Err(AuthError::BadRequest(
                "USERNAME, REALM and NONCE are required with MESSAGE-INTEGRITY",
            ));
        };
        if !self.nonce_valid(nonce, client, unix_now) {
            return Err(AuthError::StaleNonce);
        }
        // RFC 8489 §9.2.4: the algorithm list must be the one we offered, and the chosen
        // algorithm one of them; with neither, MD5 is meant.
        let algorithm = match (
            msg.get::<PasswordAlgorithms>(),
            msg.get::<PasswordAlgorithm>(),
        ) {
            (None, None) => PasswordAlgorithm::MD5,
            (Some(Ok(offered)), Some(Ok(chosen))) => {
                if offered.as_wire() != PasswordAlgorithms::MD5_AND_SHA256.as_wire() {
                    return Err(AuthError::BadRequest(
                        "PASSWORD-ALGORITHMS differs from what was offered",
                    ));
                }
                if chosen.algorithm != PasswordAlgorithm::MD5
                    && chosen.algorithm != PasswordAlgorithm::SHA256
                {
                    return Err(AuthError::BadRequest(
                        "PASSWORD-ALGORITHM is not one offered",
                    ));
                }
                chosen.algorithm
            }
            _ => {
                return Err(AuthError::BadRequest(
                    "PASSWORD-ALGORITHMS and PASSWORD-ALGORITHM go together",
                ));
            }
        };
        if realm != self.realm {
            return Err(AuthError::Rejected(Rejection::WrongRealm));
        }
        let sha256 = algorithm == PasswordAlgorithm::SHA256;
        if sha256 && !msg.has_integrity_sha256() {
            return Err(AuthError::BadRequest(
                "PASSWORD-ALGORITHM SHA-256 needs MESSAGE-INTEGRITY-SHA256",
            ));
        }
        let verify = |key: &Key| match key {
            Key::Md5(k) if msg.has_integrity() => msg.verify_integrity(k).is_ok(),
            Key::Md5(_) => false,
            Key::Sha256(k) => msg.verify_integrity_sha256(k).is_ok(),
        };
        let make_key = |password: &str| {
            if sha256 {
                Key::Sha256(long_term_key_sha256(username, realm, password))
            } else {
                Key::Md5(long_term_key_md5(username, realm, password))
            }
        };

        let mut known = false;
        if let Some(user) = self.users.get(username) {
            known = true;
            let key = match (&user.password, sha256) {
                (Some(password), _) => make_key(password),
                (None, false) => Key::Md5(user.key_md5),
                (None, true) => return Err(AuthError::Rejected(Rejection::WrongPassword)),
            };
            if verify(&key) {
                return Ok(Authenticated {
                    username: username.to_owned(),
                    key,
                });
            }
        }
        if !self.secrets.is_empty()
            && let Some(expiry) = rest_expiry(username)
        {
            known = true;
            for secret in &self.secrets {
                let key = make_key(&rest_password(secret, username));
                if verify(&key) {
                    return if expiry < unix_now {
                        Err(AuthError::Rejected(Rejection::Expired))
                    } else {
                        Ok(Authenticated {
                            username: username.to_owned(),
                            key,
                        })
                    };
                }
            }
        }
        if let Some(source) = &self.source {
            match source.lookup(username) {
                Lookup::Key(key_md5) => {
                    known = true;
                    // Only the MD5 key is stored: SHA-256 would need the password.
                    let key = Key::Md5(key_md5);
                    if !sha256 && verify(&key) {
                        return Ok(Authenticated {
                            username: username.to_owned(),
                            key,
                        });
                    }
                }
                Lookup::Absent => {}
                Lookup::Pending => return Err(AuthError::Pending),
                Lookup::Busy => return Err(AuthError::Busy),
            }
        }
        Err(AuthError::Rejected(if known {
            Rejection::WrongPassword
        } else {
            Rejection::UnknownUser
        }))
    }
}

/// The expiry of a REST username `<unix-expiry>[:<user>]`, as coturn reads it.
pub fn rest_expiry(username: &str) -> Option<u64> {
    username.split(':').next()?.parse().ok()
}

/// Shards of [`FailureLimiter`]'s table: enough that workers recording failures at once rarely
/// wait for each other, few enough that each shard's part of the capacity stays large.
const LIMITER_SHARDS: usize = 16;

/// How often the periodic sweep of [`FailureLimiter::forget_idle`] runs at most: every worker
/// ticks, and one sweep a second serves them all.
const LIMITER_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One token bucket: the tokens left at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One shard of the table: the sources it tracks and the budget shared by the sources it had no
/// room for.
#[derive(Debug, Default)]
struct Shard {
    buckets: HashMap<IpAddr, Bucket>,
    /// The shared budget of the sources this shard could not track while full (None: untouched).
    overflow: Option<Bucket>,
}

/// Where [`FailureLimiter::failed`] charged a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charged {
    /// To the source's own budget.
    Source,
    /// To the budget shared by the sources a full table could not track.
    Overflow,
}

/// Failed authentications per source, a token bucket each (`burst` failures at once, then
/// `per_second`), shared by every worker: a source's budget does not grow with the number of
/// workers the kernel spreads its packets over. It is touched only by requests that carry a
/// MESSAGE-INTEGRITY (checked before the expensive key derivation) and by failures, never by
/// relayed data.
///
/// A source is an IPv4 address or an IPv6 /64 (one subscriber's LAN: an attacker holding one
/// has 2^64 addresses, and would otherwise get a fresh budget from each). The table is split in
/// [`LIMITER_SHARDS`] shards, each behind its own lock and chosen by a keyed hash of the
/// source (which a remote party cannot aim at one shard).
///
/// The table is bounded (`max_tracked` sources). A full shard first drops the sources whose
/// buckets have refilled (they carry no information); if none has, a new failing source is not
/// tracked: every source a full shard has no room for shares that shard's one overflow bucket,
/// with the budget of a single source. So an attacker cycling through more addresses than the
/// table holds can neither evict the budgets already spent (a tracked source keeps its
/// bucket until it has refilled) nor get a fresh budget per address: all the untracked
/// sources together get at most `LIMITER_SHARDS` × (`burst` + `per_second`/s). The price is
/// paid only during such a flood, and only by sources the table does not know: their requests
/// with credentials share that small budget (a client retries; TURN clients retransmit over
/// UDP). Nobody is locked out for longer than the flood: a tracked bucket refills within
/// `burst / per_second` seconds and is then dropped, which makes room again. Every failure
/// charged to an overflow bucket is counted (`xdpturn_auth_limiter_overflows_total`).
#[derive(Debug)]
pub struct FailureLimiter {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    burst: f64,
    per_second: f64,
    /// Sources one shard tracks at most.
    shard_capacity: usize,
    /// When the periodic sweep last ran.
    swept: Mutex<Option<Instant>>,
}

impl Default for FailureLimiter {
    /// The relay's limit: 10 failures at once, then one a second, for up to 65,536 sources.
    fn default() -> Self {
        Self::new(10, 1.0, 65_536)
    }
}

impl FailureLimiter {
    /// `burst` failures at once per source, refilled at `per_second`, for up to `max_tracked`
    /// sources in [`LIMITER_SHARDS`] shards (fewer if `max_tracked` is smaller).
    pub fn new(burst: u32, per_second: f64, max_tracked: usize) -> Self {
        Self::with_shards(
            burst,
            per_second,
            max_tracked,
            LIMITER_SHARDS.min(max_tracked),
        )
    }

    /// As [`FailureLimiter::new`], with `shards` shards (at least one); the capacity is
    /// divided between them.
    pub fn with_shards(burst: u32, per_second: f64, max_tracked: usize, shards: usize) -> Self {
        let shards = shards.max(1);
        Self {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            burst: f64::from(burst),
            per_second,
            shard_capacity: max_tracked.div_ceil(shards).max(1),
            swept: Mutex::new(None),
        }
    }

    /// The source `ip` is counted as: IPv4 (mapped addresses as IPv4), or an IPv6 /64.
    fn source(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
            v4 => v4,
        }
    }

    fn shard(&self, source: IpAddr) -> MutexGuard<'_, Shard> {
        // Lossless enough: the hash only picks a shard.
        let i = (self.hasher.hash_one(source) % self.shards.len() as u64) as usize;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn level(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        bucket.map_or(self.burst, |b| {
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second)
                .min(self.burst)
        })
    }

    /// Whether `ip` is over its budget of failures: its own if it is tracked; the shared
    /// overflow budget if its shard is full and has no room for it.
    pub fn is_limited(&self, ip: IpAddr, now: Instant) -> bool {
        let source = Self::source(ip);
        let shard = self.shard(source);
        let bucket = match shard.buckets.get(&source) {
            Some(b) => Some(b),
            None if shard.buckets.len() >= self.shard_capacity => shard.overflow.as_ref(),
            None => None,
        };
        self.level(bucket, now) < 1.0
    }

    /// Records a failure from `ip`; returns which budget paid for it.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Charged {
        let source = Self::source(ip);
        let mut shard = self.shard(source);
        if !shard.buckets.contains_key(&source) && shard.buckets.len() >= self.shard_capacity {
            self.sweep(&mut shard, now);
        }
        if shard.buckets.contains_key(&source) || shard.buckets.len() < self.shard_capacity {
            let level = self.level(shard.buckets.get(&source), now);
            shard.buckets.insert(source, self.take(level, now));
            Charged::Source
        } else {
            let level = self.level(shard.overflow.as_ref(), now);
            shard.overflow = Some(self.take(level, now));
            Charged::Overflow
        }
    }

    fn take(&self, level: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: (level - 1.0).max(0.0),
            at: now,
        }
    }

    /// Drops a shard's buckets that have refilled (they carry no information), and gives back
    /// the memory a flood made it take.
    fn sweep(&self, shard: &mut Shard, now: Instant) {
        shard
            .buckets
            .retain(|_, b| self.level(Some(b), now) < self.burst);
        if shard
            .overflow
            .is_some_and(|b| self.level(Some(&b), now) >= self.burst)
        {
            shard.overflow = None;
        }
        let len = shard.buckets.len();
        if shard.buckets.capacity() > 4 * len.max(64) {
            shard.buckets.shrink_to(2 * len);
        }
    }

    /// Drops the buckets that have refilled, in every shard: at most once a
    /// [`LIMITER_SWEEP_INTERVAL`] however many workers ask.
    pub fn forget_idle(&self, now: Instant) {
        let mut swept = match self.swept.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return, // another worker is sweeping
        };
        if swept.is_some_and(|at| now.saturating_duration_since(at) < LIMITER_SWEEP_INTERVAL) {
            return;
        }
        *swept = Some(now);
        for shard in &self.shards {
            self.sweep(&mut shard.lock().unwrap_or_else(|p| p.into_inner()), now);
        }
    }

    /// The sources tracked, in every shard.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).buckets.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stun::{Class, Encoder, MessageType, Method, TransactionId};

    fn config() -> AuthConfig {
        let mut users = HashMap::new();
        users.insert(
            "alice".to_owned(),
            StaticUser::from_password("alice", "example.org", "wonderland"),
        );
        users.insert(
            "keyonly".to_owned(),
            StaticUser::from_key(long_term_key_md5("keyonly", "example.org", "pw")),
        );
        AuthConfig {
            realm: "example.org".into(),
            users,
            secrets: vec![b"old secret".to_vec(), b"new secret".to_vec()],
            source: None,
            nonce_key: [7; 32],
            nonce_lifetime: Duration::from_secs(600),
        }
    }

    const NOW: u64 = 1_800_000_000;
    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

    fn request(user: &str, realm: &str, nonce: &str, key: Option<&Key>) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let mut enc = Encoder::new(
            &mut buf,
            MessageType::new(Method::ALLOCATE, Class::Request),
            TransactionId::new([1; 12]),
        )
        .expect("header");
        enc.add(&Username(user)).expect("u");
        enc.add(&Realm(realm)).expect("r");
        enc.add(&Nonce(nonce)).expect("n");
        match key {
            Some(Key::Md5(k)) => enc.message_integrity(k).expect("mi"),
            Some(Key::Sha256(k)) => {
                enc.add(&PasswordAlgorithms::MD5_AND_SHA256).expect("pas");
                enc.add(&PasswordAlgorithm {
                    algorithm: PasswordAlgorithm::SHA256,
                    params: &[],
                })
                .expect("pa");
                enc.message_integrity_sha256(k).expect("mi256")
            }
            None => {}
        }
        let len = enc.finish();
        buf.truncate(len);
        buf
    }

    fn auth(bytes: &[u8], cfg: &AuthConfig) -> Result<Authenticated, AuthError> {
        cfg.authenticate(&Message::decode(bytes).expect("decodes"), CLIENT, NOW)
    }

    #[test]
    fn nonces_are_bound_to_client_and_expire() {
        let cfg = config();
        let nonce = cfg.nonce(CLIENT, NOW, true);
        assert!(nonce.starts_with(NONCE_COOKIE) && nonce.len() < 128);
        assert!(cfg.nonce_valid(&nonce, CLIENT, NOW));
        assert!(cfg.nonce_valid(&nonce, CLIENT, NOW + 600));
        assert!(!cfg.nonce_valid(&nonce, CLIENT, NOW + 601), "expired");
        assert!(
            !cfg.nonce_valid(&nonce, "203.0.113.10".parse().expect("ip"), NOW),
            "other client"
        );
        let mut other = config();
        other.nonce_key = [8; 32];
        assert!(
            !other.nonce_valid(&nonce, CLIENT, NOW),
            "another key (restart)"
        );
        assert!(!cfg.nonce_valid("obMatJos2gAAAgarbage", CLIENT, NOW));
        assert!(!cfg.nonce_valid("", CLIENT, NOW));
    }

    #[test]
    fn nonces_are_short_and_the_md5_only_form_has_no_cookie() {
        let cfg = config();
        let offer = cfg.nonce(CLIENT, NOW, true);
        let plain = cfg.nonce(CLIENT, NOW, false);
        assert_eq!(plain.len(), 16, "{plain}");
        assert_eq!(offer, format!("{NONCE_COOKIE}{plain}"));
        assert!(cfg.nonce_valid(&plain, CLIENT, NOW));
        assert!(!cfg.nonce_valid(&plain, CLIENT, NOW + 601), "expired");
        assert!(!cfg.nonce_valid(&plain, "203.0.113.10".parse().expect("ip"), NOW));
        let mut forged = plain.into_bytes();
        forged[15] = if forged[15] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ascii");
        assert!(!cfg.nonce_valid(&forged, CLIENT, NOW), "a MAC bit changed");
    }

    #[test]
    fn static_user_md5_and_sha256() {
        let cfg = config();
        let nonce = cfg.nonce(CLIENT, NOW, true);
        let md5 = Key::Md5(long_term_key_md5("alice", "example.org", "wonderland"));
        let ok = auth(&request("alice", "example.org", &nonce, Some(&md5)), &cfg)
            .expect("md5 authenticates");
        assert_eq!(
            ok,
            Authenticated {
                username: "alice".into(),
                key: md5
            }
        );
        let sha = Key::Sha256(long_term_key_sha256("alice", "example.org", "wonderland"));
        let ok = auth(&request("alice", "example.org", &nonce, Some(&sha)), &cfg)
            .expect("sha256 authenticates");
        assert_eq!(ok.key, sha);
        let wrong = Key::Md5(long_term_key_md5("alice", "example.org", "mirror"));
        assert_eq!(
            auth(&request("alice", "example.org", &nonce, Some(&wrong)), &cfg),
            Err(AuthError::Rejected(Rejection::WrongPassword))
        );
        let key_only = Key::Md5(long_term_key_md5("keyonly", "example.org", "pw"));
        assert!(
            auth(
                &request("keyonly", "example.org", &nonce, Some(&key_only)),
                &cfg
            )
            .is_ok()
        );
    }

    #[test]
    fn rest_credentials_any_live_secret_until_expiry() {
        let cfg = config();
        let nonce = cfg.nonce(CLIENT, NOW, true);
        for secret in [&b"old secret"[..], b"new secret"] {
            let user = format!("{}:bob", NOW + 60);
            let key = Key::Md5(long_term_key_md5(
                &user,
                "example.org",
                &rest_password(secret, &user),
            ));
            assert!(auth(&request(&user, "example.org", &nonce, Some(&key)), &cfg).is_ok());
        }
        let expired = format!("{}:bob", NOW - 1);
        let key = Key::Md5(long_term_key_md5(
            &expired,
            "example.org",
            &rest_password(b"new secret", &expired),
        ));
        assert_eq!(
            auth(&request(&expired, "example.org", &nonce, Some(&key)), &cfg),
            Err(AuthError::Rejected(Rejection::Expired))
        );
        let user = format!("{}:bob", NOW + 60);
        let key = Key::Md5(long_term_key_md5(
            &user,
            "example.org",
            &rest_password(b"retired secret", &user),
        ));
        assert_eq!(
            auth(&request(&user, "example.org", &nonce, Some(&key)), &cfg),
            Err(AuthError::Rejected(Rejection::WrongPassword))
        );
    }

    #[test]
    fn challenge_stale_and_bad_requests() {
        let cfg = config();
        let nonce = cfg.nonce(CLIENT, NOW, true);
        assert_eq!(
            auth(&request("alice", "example.org", &nonce, None), &cfg),
            Err(AuthError::Challenge)
        );
        let md5 = Key::Md5(long_term_key_md5("alice", "example.org", "wonderland"));
        let stale = cfg.nonce(CLIENT, NOW - 601, true);
        assert_eq!(
            auth(&request("alice", "example.org", &stale, Some(&md5)), &cfg),
            Err(AuthError::StaleNonce)
        );
        assert_eq!(
            auth(&request("nobody", "example.org", &nonce, Some(&md5)), &cfg),
            Err(AuthError::Rejected(Rejection::UnknownUser))
        );
        assert_eq!(
            auth(&request("alice", "other.org", &nonce, Some(&md5)), &cfg),
            Err(AuthError::Rejected(Rejection::WrongRealm))
        );
    }

    /// A user source that answers what it is told to, counting the questions.
    #[derive(Debug)]
    struct Told(Lookup, std::sync::atomic::AtomicUsize);

    impl UserSource for Told {
        fn lookup(&self, _: &str) -> Lookup {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0
        }
    }

    #[test]
    fn a_user_source_is_asked_only_when_nothing_configured_authenticates() {
        let key = long_term_key_md5("dora", "example.org", "explorer");
        let with = |answer| {
            let source = Arc::new(Told(answer, Default::default()));
            let cfg = AuthConfig {
                source: Some(source.clone()),
                ..config()
            };
            (cfg, source)
        };
        let md5 =
            |user: &str, password: &str| Key::Md5(long_term_key_md5(user, "example.org", password));
        let (cfg, source) = with(Lookup::Key(key));
        let nonce = cfg.nonce(CLIENT, NOW, true);
        // A configured user: the source is not asked.
        let alice = md5("alice", "wonderland");
        assert!(auth(&request("alice", "example.org", &nonce, Some(&alice)), &cfg).is_ok());
        assert_eq!(source.1.load(std::sync::atomic::Ordering::Relaxed), 0);
        // The source's key authenticates; a wrong password is refused; SHA-256 cannot be
        // checked against a stored MD5 key.
        let dora = md5("dora", "explorer");
        assert_eq!(
            auth(&request("dora", "example.org", &nonce, Some(&dora)), &cfg),
            Ok(Authenticated {
                username: "dora".into(),
                key: dora.clone()
            })
        );
        let wrong = md5("dora", "map");
        assert_eq!(
            auth(&request("dora", "example.org", &nonce, Some(&wrong)), &cfg),
            Err(AuthError::Rejected(Rejection::WrongPassword))
        );
        let sha = Key::Sha256(long_term_key_sha256("dora", "example.org", "explorer"));
        assert_eq!(
            auth(&request("dora", "example.org", &nonce, Some(&sha)), &cfg),
            Err(AuthError::Rejected(Rejection::WrongPassword))
        );
        for (answer, expected) in [
            (Lookup::Absent, AuthError::Rejected(Rejection::UnknownUser)),
            (Lookup::Pending, AuthError::Pending),
            (Lookup::Busy, AuthError::Busy),
        ] {
            let (cfg, _) = with(answer);
            assert_eq!(
                auth(&request("dora", "example.org", &nonce, Some(&dora)), &cfg),
                Err(expected)
            );
        }
    }

    #[test]
    fn failure_limiter_refills_and_stays_bounded() {
        let t0 = Instant::now();
        let l = FailureLimiter::new(3, 1.0, 100);
        let ip: IpAddr = "198.51.100.1".parse().expect("ip");
        for _ in 0..3 {
            assert!(!l.is_limited(ip, t0));
            assert_eq!(l.failed(ip, t0), Charged::Source);
        }
        assert!(l.is_limited(ip, t0));
        assert!(
            !l.is_limited(ip, t0 + Duration::from_millis(1100)),
            "one token back after a second"
        );
        for i in 0..10_000u32 {
            l.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        // 16 shards of ceil(100 / 16) = 7.
        assert!(l.tracked() <= 16 * 7, "{} tracked", l.tracked());
        assert!(
            l.is_limited(ip, t0),
            "a tracked source keeps its spent budget"
        );
        l.forget_idle(t0 + Duration::from_secs(10));
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn a_full_failure_limiter_shares_one_budget_between_the_sources_it_cannot_track() {
        let t0 = Instant::now();
        // One shard of four sources: which source lands where is not left to the hash.
        let l = FailureLimiter::with_shards(3, 1.0, 4, 1);
        let tracked: Vec<IpAddr> = (1..=4u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        for &ip in &tracked {
            assert_eq!(l.failed(ip, t0), Charged::Source);
        }
        // tracked[0] spends its budget; the others keep two failures each.
        l.failed(tracked[0], t0);
        l.failed(tracked[0], t0);
        assert!(l.is_limited(tracked[0], t0));
        assert_eq!(l.tracked(), 4);

        // An attacker cycling through fresh addresses: the full table tracks none of them, and
        // all of them together get the budget of one source, not one each.
        let mut charged = 0;
        for i in 0..1000u32 {
            let ip = IpAddr::from((0x0A00_0000 + i).to_be_bytes());
            if !l.is_limited(ip, t0) {
                assert_eq!(l.failed(ip, t0), Charged::Overflow);
                charged += 1;
            }
        }
        assert_eq!(charged, 3, "the fresh addresses shared one burst");
        assert_eq!(l.tracked(), 4, "the table stayed bounded");
        // Nor did the flood reset or evict what the tracked sources had spent or kept.
        assert!(l.is_limited(tracked[0], t0));
        assert!(!l.is_limited(tracked[1], t0));
        assert_eq!(l.failed(tracked[1], t0), Charged::Source);
        // A source the table does not know is limited with the rest while the flood lasts...
        let newcomer = IpAddr::from([198, 51, 100, 7]);
        assert!(l.is_limited(newcomer, t0));
        // ...for a second per failure the shared budget refills by.
        let t1 = t0 + Duration::from_millis(1100);
        assert!(!l.is_limited(newcomer, t1));
        // Once the tracked buckets have refilled (3 s), the table makes room again: the
        // newcomer gets a budget of its own, nobody is locked out for longer than the flood.
        let t2 = t0 + Duration::from_secs(4);
        assert_eq!(l.failed(newcomer, t2), Charged::Source);
        assert_eq!(l.tracked(), 1);
        assert!(!l.is_limited(IpAddr::from([10, 0, 0, 1]), t2));
    }

    #[test]
    fn failure_limiter_counts_ipv6_per_64_and_mapped_addresses_as_ipv4() {
        let t0 = Instant::now();
        let l = FailureLimiter::new(2, 1.0, 100);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        l.failed(a, t0);
        l.failed(b, t0);
        assert!(l.is_limited(a, t0), "one /64, one budget");
        assert!(!l.is_limited(other, t0), "another /64, another budget");
        let v4: IpAddr = "198.51.100.1".parse().expect("ip");
        let mapped: IpAddr = "::ffff:198.51.100.1".parse().expect("ip");
        l.failed(v4, t0);
        l.failed(mapped, t0);
        assert!(l.is_limited(v4, t0) && l.is_limited(mapped, t0));
        assert_eq!(l.tracked(), 2);
    }

    #[test]
    fn failure_limiter_sweeps_at_most_once_a_second() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let l = FailureLimiter::new(2, 1.0, 100);
        let ip = IpAddr::from([198, 51, 100, 1]);
        l.forget_idle(at(0));
        l.failed(ip, at(100));
        l.failed(ip, at(100));
        l.forget_idle(at(1200));
        assert_eq!(l.tracked(), 1, "not refilled yet");
        l.forget_idle(at(2150));
        assert_eq!(l.tracked(), 1, "refilled, but swept less than a second ago");
        l.forget_idle(at(2300));
        assert_eq!(l.tracked(), 0);
    }
}
