//! The protocol core: STUN and TURN as a state machine. Bytes, addresses and time in; an
//! [`Action`] out, and [`Event`]s to poll. No sockets and no clock: the event loop owns I/O,
//! binds relay sockets when asked, and applies what this returns. That makes every path —
//! errors, timers, quotas — testable without a network.
//!
//! One `Server` is one shard: a worker thread owns it, with the allocations whose client
//! 5-tuples the kernel steers to that worker. What must be global (quotas) is shared through
//! [`Ledger`].

pub mod allocation;
pub mod auth;
pub mod policy;
pub mod tcp;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use allocation::{Allocation, Bandwidth, Relay};
use auth::{AuthConfig, AuthError, Authenticated, FailureLimiter, Key};
use policy::PeerPolicy;
pub use tcp::PendingConnect;

use crate::metrics::{Datapath, Direction, Metrics};
use crate::stun::{
    AdditionalAddressFamily, AddressErrorCode, AddressFamily, AttrType, ChangeRequest, ChannelData,
    ChannelNumber, Class, Data, DecodeError, EncodeError, Encoder, ErrorCode, EvenPort, Header,
    Lifetime, MappedAddress, Message, MessageType, Method, Nonce, PasswordAlgorithms, Realm,
    RequestedAddressFamily, RequestedTransport, ReservationToken, Software, TransactionId,
    UnknownAttributes, XorMappedAddress, XorPeerAddress, XorRelayedAddress, is_channel_data,
};

/// The client-facing transport a packet came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// A bounded name for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Stream transports pad ChannelData to 4 bytes (RFC 8656 §12.5).
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

/// What identifies a client's allocation: transport, client address, server address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    pub transport: Transport,
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// The event loop's name for a relay socket it bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayHandle(pub u32);

/// Why a packet got no answer and was not relayed. Each is counted; none is logged per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Neither STUN nor ChannelData.
    NotStun,
    /// Malformed, and not a request that could be answered 400.
    Malformed,
    /// FINGERPRINT present but wrong: not STUN after all (RFC 8489 §7.3).
    BadFingerprint,
    /// A success or error response: this server sends no requests.
    UnexpectedResponse,
    /// An indication this server does not act on.
    UnexpectedIndication,
    /// ChannelData for a channel that is not bound.
    UnknownChannel,
    /// An RFC 3489 (no magic cookie) message other than a Binding request.
    ClassicNotBinding,
    /// Data or a Send indication from a client without an allocation, or for a relay socket
    /// whose allocation is gone.
    NoAllocation,
    /// Data to or from a peer without a permission.
    NoPermission,
    /// Data to a peer the address policy refuses.
    PeerDenied,
    /// Over the allocation's bandwidth cap.
    BandwidthExceeded,
    /// Too many failed authentications from this address.
    AuthRateLimited,
}

impl DropReason {
    /// Every reason, in declaration order (metrics index by `reason as usize`).
    pub const ALL: [DropReason; 12] = [
        DropReason::NotStun,
        DropReason::Malformed,
        DropReason::BadFingerprint,
        DropReason::UnexpectedResponse,
        DropReason::UnexpectedIndication,
        DropReason::UnknownChannel,
        DropReason::ClassicNotBinding,
        DropReason::NoAllocation,
        DropReason::NoPermission,
        DropReason::PeerDenied,
        DropReason::BandwidthExceeded,
        DropReason::AuthRateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::NotStun => "not_stun",
            DropReason::Malformed => "malformed",
            DropReason::BadFingerprint => "bad_fingerprint",
            DropReason::UnexpectedResponse => "unexpected_response",
            DropReason::UnexpectedIndication => "unexpected_indication",
            DropReason::UnknownChannel => "unknown_channel",
            DropReason::ClassicNotBinding => "classic_not_binding",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoPermission => "no_permission",
            DropReason::PeerDenied => "peer_denied",
            DropReason::BandwidthExceeded => "bandwidth_exceeded",
            DropReason::AuthRateLimited => "auth_rate_limited",
        }
    }
}

/// Which quota refused something (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    User,
    Total,
    Permissions,
    Ports,
    Bandwidth,
}

impl QuotaKind {
    pub const ALL: [QuotaKind; 5] = [
        QuotaKind::User,
        QuotaKind::Total,
        QuotaKind::Permissions,
        QuotaKind::Ports,
        QuotaKind::Bandwidth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::User => "user",
            QuotaKind::Total => "total",
            QuotaKind::Permissions => "permissions",
            QuotaKind::Ports => "ports",
            QuotaKind::Bandwidth => "bandwidth",
        }
    }
}

/// A packet from a client.
#[derive(Debug, Clone, Copy)]
pub struct Inbound<'a> {
    pub transport: Transport,
    /// The server address it arrived on: a real address, not a wildcard (the event loop reads
    /// it from IP_PKTINFO for UDP and from the connection for TCP).
    pub local: SocketAddr,
    /// The client's address as seen by the server (its server-reflexive address).
    pub remote: SocketAddr,
    pub packet: &'a [u8],
}

impl Inbound<'_> {
    pub fn tuple(&self) -> FiveTuple {
        FiveTuple {
            transport: self.transport,
            client: self.remote,
            server: self.local,
        }
    }
}

/// Where the bytes to send are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buf {
    /// A range of the input buffer (relayed data, forwarded in place).
    Input(Range<usize>),
    /// The first `n` bytes of the output buffer.
    Output(usize),
}

/// What to do with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to send (handled, or dropped and counted).
    None,
    /// Send `out[..len]` back to the client the packet came from.
    Reply { len: usize },
    /// Send `input[range]` from relay socket `relay` to `peer`.
    ToPeer {
        relay: RelayHandle,
        peer: SocketAddr,
        range: Range<usize>,
    },
    /// Send to a client by its 5-tuple.
    ToClient { tuple: FiveTuple, data: Buf },
    /// Bind the relay sockets described, then call [`Server::complete_allocate`].
    BindRelays(Box<PendingAllocation>),
    /// Open a TCP connection from the relayed address to the peer (RFC 6062 Connect), then
    /// call [`Server::complete_connect`].
    Connect(Box<PendingConnect>),
    /// Send `out[..len]` (the ConnectionBind success) on this stream, then turn it into a raw
    /// pipe to peer data connection `connection_id` (RFC 6062 §5.3).
    BindData { len: usize, connection_id: u32 },
}

/// Side effects for the event loop, polled with [`Server::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Close this relay socket: its allocation ended.
    ReleaseRelay(RelayHandle),
    /// Close the socket held for a reservation that expired unused.
    ReleaseReserved(SocketAddr),
    /// A channel was bound or refreshed until `expires`, or may be forwarded by a kernel fast
    /// path again (its permission is back, its allocation is within its bandwidth cap again):
    /// what a kernel fast path mirrors. Repeats for a channel already there are refreshes.
    ChannelBound {
        tuple: FiveTuple,
        channel: u16,
        relay: Relay,
        peer: SocketAddr,
        expires: Instant,
    },
    /// Close peer data connection `id` (and its client data connection, if bound).
    CloseTcp(u32),
    /// A channel ended (expiry or allocation deletion), or must not be forwarded by a kernel
    /// fast path for now (its permission expired, its allocation is over its bandwidth cap):
    /// userspace relays it, or drops its data, as the protocol says. Repeats are harmless.
    ChannelUnbound {
        tuple: FiveTuple,
        channel: u16,
        relay: Relay,
        peer: SocketAddr,
    },
    /// A permission (RFC 8656 §9: a peer IP, any port) was installed or refreshed until
    /// `expires` (CreatePermission, ChannelBind), or may be used by a kernel fast path again
    /// (its allocation is within its bandwidth cap again): what a kernel fast path mirrors to
    /// relay Send and Data indications. `relay` is the allocation's relayed address of the
    /// peer's family. Repeats for a permission already there are refreshes.
    PermissionInstalled {
        tuple: FiveTuple,
        relay: Relay,
        peer: IpAddr,
        expires: Instant,
    },
    /// A permission ended (expiry, allocation deletion), or must not be used by a kernel fast
    /// path for now (its allocation is over its bandwidth cap). Repeats are harmless.
    PermissionRemoved {
        tuple: FiveTuple,
        relay: Relay,
        peer: IpAddr,
    },
    /// An allocation was created, or may be used by a kernel fast path again (it is within its
    /// bandwidth cap again): its relayed addresses (one, or two for a dual allocation), from
    /// which a kernel fast path sends the client's Send indications. (An RFC 6062 TCP
    /// allocation's 5-tuple is never UDP.) Repeats are refreshes.
    AllocationInstalled {
        tuple: FiveTuple,
        relays: Vec<Relay>,
    },
    /// An allocation ended, or must not be used by a kernel fast path for now (it is over its
    /// bandwidth cap). Follows the removal of its channels and permissions. Repeats are
    /// harmless.
    AllocationRemoved { tuple: FiveTuple },
}

/// How a relay socket should be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayRequest {
    /// Bind a port on `ip` from the relay range; `even` asks for an even port and `reserve_next`
    /// for the next port to be held too (EVEN-PORT with R).
    Bind {
        ip: IpAddr,
        even: bool,
        reserve_next: bool,
    },
    /// Adopt the socket held for a reservation (EVEN-PORT's R bit) on this address; it may
    /// have been made by another shard.
    Reserved(SocketAddr),
}

/// An Allocate the core accepted, waiting for its relay sockets.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingAllocation {
    pub tuple: FiveTuple,
    /// A TCP relayed address (RFC 6062): bind a TCP listener rather than a UDP socket.
    pub tcp: bool,
    pub primary: RelayRequest,
    /// A second, IPv6, relayed address (ADDITIONAL-ADDRESS-FAMILY).
    pub additional: Option<IpAddr>,
    header: Header,
    username: String,
    key: Key,
    fingerprint: bool,
    lifetime: Duration,
    /// ADDRESS-ERROR-CODE to report for the additional family the server cannot serve.
    additional_error: Option<u16>,
}

/// Why a relay socket could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindFailure {
    /// No free port (508).
    NoCapacity,
    /// The address family is not available (440).
    Family,
}

/// What the event loop bound for a [`PendingAllocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindResult {
    pub primary: Result<(RelayHandle, SocketAddr), BindFailure>,
    pub additional: Option<Result<(RelayHandle, SocketAddr), BindFailure>>,
    /// The address of the socket held for EVEN-PORT's R bit (the event loop keeps it, not
    /// bound to any shard, until an Allocate with the token adopts it or it expires).
    pub reserved: Option<SocketAddr>,
}

/// Lifetimes of RFC 8656.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub default_allocation: Duration,
    pub max_allocation: Duration,
    pub permission: Duration,
    pub channel: Duration,
    pub reservation: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            default_allocation: Duration::from_secs(600),
            max_allocation: Duration::from_secs(3600),
            permission: Duration::from_secs(300),
            channel: Duration::from_secs(600),
            reservation: Duration::from_secs(30),
        }
    }
}

/// Limits; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quotas {
    pub per_user: u32,
    pub total: u32,
    pub permissions_per_allocation: u32,
    pub max_bps: u64,
}

/// The configuration of the core; replaced as a whole on reload.
#[derive(Debug, Clone)]
pub struct Config {
    pub software: String,
    pub auth: AuthConfig,
    pub policy: PeerPolicy,
    pub lifetimes: Lifetimes,
    pub quotas: Quotas,
    /// Addresses to relay from, one per family; empty: the address each request arrived on.
    pub relay_ips: Vec<IpAddr>,
    /// Specific listening addresses, for an allocation of the other family than its request.
    pub listen_ips: Vec<IpAddr>,
    /// `(public, private)`: advertise `public` for relayed addresses on `private` (or on any
    /// address of the family when `private` is None), for a relay behind NAT.
    pub external_ips: Vec<(IpAddr, Option<IpAddr>)>,
}

/// What every shard shares: total allocations, allocations per user, and reservations (an
/// Allocate with a RESERVATION-TOKEN may land on another shard than the one that made it).
#[derive(Debug, Default)]
pub struct Ledger {
    total: AtomicU32,
    per_user: Mutex<HashMap<String, u32>>,
    reservations: Mutex<HashMap<[u8; 8], (SocketAddr, Instant)>>,
    /// RFC 6062 peer data connections by connection id.
    tcp_connections: Mutex<HashMap<u32, tcp::TcpConnection>>,
    next_connection_id: std::sync::atomic::AtomicU32,
}

impl Ledger {
    pub fn reserve(&self, token: [u8; 8], addr: SocketAddr, expires: Instant) {
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, (addr, expires));
    }

    /// The reserved address for `token`, once, if it has not expired.
    pub fn take_reservation(&self, token: &[u8; 8], now: Instant) -> Option<SocketAddr> {
        let mut r = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        match r.remove(token) {
            Some((addr, expires)) if expires > now => Some(addr),
            Some((addr, expires)) => {
                // Expired but not yet swept: put it back for the sweep to release.
                r.insert(*token, (addr, expires));
                None
            }
            None => None,
        }
    }

    /// Removes the reservations expired at `now`, returning their addresses.
    pub fn expire_reservations(&self, now: Instant) -> Vec<SocketAddr> {
        let mut expired = Vec::new();
        self.reservations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, (addr, expires)| {
                let keep = *expires > now;
                if !keep {
                    expired.push(*addr);
                }
                keep
            });
        expired
    }

    /// Takes one allocation for `user` within the quotas.
    pub fn acquire(&self, user: &str, quotas: &Quotas) -> Result<(), QuotaKind> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if quotas.total != 0 && total > quotas.total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaKind::Total);
        }
        let mut users = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let count = users.entry(user.to_owned()).or_insert(0);
        if quotas.per_user != 0 && *count >= quotas.per_user {
            drop(users);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(QuotaKind::User);
        }
        *count += 1;
        Ok(())
    }

    pub fn release(&self, user: &str) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let mut users = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = users.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                users.remove(user);
            }
        }
    }

    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }
}

/// Largest reply the server writes; callers pass a buffer at least this big.
pub const MAX_REPLY_LEN: usize = 2048;
/// Space the event loop leaves in front of data read from a relay socket, so that the ChannelData
/// header can be written in place; and the slack after it for stream padding.
pub const PEER_HEADROOM: usize = ChannelData::HEADER_LEN;
pub const PEER_TAILROOM: usize = 3;

/// Per-request context for responses.
struct Ctx {
    transport: Transport,
    header: Header,
    key: Option<Key>,
    fingerprint: bool,
}

/// The protocol core (one shard).
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    /// Wall-clock seconds at `clock.0`, for REST expiry and nonces.
    clock: (Instant, u64),
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<RelayHandle, FiveTuple>,
    /// Final responses of deleted allocations, for retransmitted Refresh(0).
    recent: HashMap<FiveTuple, (Instant, TransactionId, Vec<u8>)>,
    limiter: FailureLimiter,
    events: VecDeque<Event>,
    draining: bool,
    token_counter: u64,
    /// Client data connections bound to a peer data connection.
    data_connections: HashMap<FiveTuple, u32>,
    /// Connects in progress, for 446.
    connecting: std::collections::HashSet<(FiveTuple, SocketAddr)>,
}

impl Server {
    /// A shard. `unix_now` is the wall-clock time in seconds at `now`.
    pub fn new(
        config: Arc<Config>,
        ledger: Arc<Ledger>,
        metrics: Arc<Metrics>,
        now: Instant,
        unix_now: u64,
    ) -> Self {
        Self {
            config,
            ledger,
            metrics,
            clock: (now, unix_now),
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            recent: HashMap::new(),
            limiter: FailureLimiter::new(10, 1.0, 65_536),
            events: VecDeque::new(),
            draining: false,
            token_counter: 0,
            data_connections: HashMap::new(),
            connecting: std::collections::HashSet::new(),
        }
    }

    /// Replaces the configuration (reload); allocations stay.
    pub fn set_config(&mut self, config: Arc<Config>) {
        self.config = config;
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// While draining, new allocations are refused; existing ones are served.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    pub fn allocation(&self, tuple: &FiveTuple) -> Option<&Allocation> {
        self.allocations.get(tuple)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn unix(&self, now: Instant) -> u64 {
        self.clock.1 + now.saturating_duration_since(self.clock.0).as_secs()
    }

    // -----------------------------------------------------------------------------------------
    // Client input

    /// Handles one packet from a client (a datagram, or one frame of a stream), writing any
    /// reply into `out` (at least [`MAX_REPLY_LEN`] bytes).
    pub fn handle_client(&mut self, inbound: &Inbound<'_>, now: Instant, out: &mut [u8]) -> Action {
        let Some(&first) = inbound.packet.first() else {
            return self.drop(inbound.transport, DropReason::NotStun);
        };
        if is_channel_data(first) {
            return self.client_channel_data(inbound, now);
        }
        match Message::decode(inbound.packet) {
            Ok(msg) => self.handle_message(inbound, &msg, now, out),
            Err(err) => self.handle_malformed(inbound.transport, &err, out),
        }
    }

    fn drop(&self, transport: Transport, reason: DropReason) -> Action {
        self.metrics.dropped(transport, reason);
        Action::None
    }

    fn handle_malformed(&self, transport: Transport, err: &DecodeError, out: &mut [u8]) -> Action {
        match err.header {
            // A request whose header was readable gets a 400 naming its transaction.
            Some(header) if header.typ.class == Class::Request && header.has_magic_cookie() => {
                let ctx = Ctx {
                    transport,
                    header,
                    key: None,
                    fingerprint: true,
                };
                self.error(&ctx, out, 400, "Bad Request: malformed message", |_| Ok(()))
            }
            Some(_) => self.drop(transport, DropReason::Malformed),
            None => self.drop(transport, DropReason::NotStun),
        }
    }

    fn handle_message(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        now: Instant,
        out: &mut [u8],
    ) -> Action {
        let header = *msg.header();
        let transport = inbound.transport;
        if !header.has_magic_cookie() {
            // RFC 3489 clients: only Binding requests exist for them.
            if header.typ != MessageType::new(Method::BINDING, Class::Request) {
                return self.drop(transport, DropReason::ClassicNotBinding);
            }
        } else if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
            return self.drop(transport, DropReason::BadFingerprint);
        }
        match header.typ.class {
            Class::Success | Class::Error => {
                return self.drop(transport, DropReason::UnexpectedResponse);
            }
            Class::Indication => return self.handle_indication(inbound, msg, now),
            Class::Request => {}
        }
        let mut ctx = Ctx {
            transport,
            header,
            key: None,
            fingerprint: msg.has_fingerprint(),
        };
        let unknown = msg.unknown_comprehension_required();
        if !unknown.is_empty() {
            let unknown = UnknownAttributes(*unknown);
            return self.error(&ctx, out, 420, "Unknown Attribute", |e| e.add(&unknown));
        }
        if let Some(bad) = msg.decoded().find_map(Result::err) {
            tracing::debug!(remote = %inbound.remote, error = %bad, "malformed attribute");
            return self.error(&ctx, out, 400, "Bad Request: malformed attribute", |_| {
                Ok(())
            });
        }
        if header.typ.method == Method::BINDING {
            return self.binding(inbound, msg, &ctx, out);
        }
        if !matches!(
            header.typ.method,
            Method::ALLOCATE
                | Method::REFRESH
                | Method::CREATE_PERMISSION
                | Method::CHANNEL_BIND
                | Method::CONNECT
                | Method::CONNECTION_BIND
        ) {
            return self.error(&ctx, out, 400, "Bad Request: method not supported", |_| {
                Ok(())
            });
        }

        // A retransmission gets the answer its first copy got (RFC 8656 §7.2, RFC 8489 §6.3).
        let tuple = inbound.tuple();
        if let Some(cached) = self.cached_response(&tuple, &header.tid, now) {
            let len = cached.len().min(out.len());
            out[..len].copy_from_slice(&cached[..len]);
            return Action::Reply { len };
        }

        let client_ip = inbound.remote.ip();
        if (msg.has_integrity() || msg.has_integrity_sha256())
            && self.limiter.is_limited(client_ip, now)
        {
            self.metrics.auth_failure(auth::Rejection::RateLimited);
            return self.drop(transport, DropReason::AuthRateLimited);
        }
        let auth = match self
            .config
            .auth
            .authenticate(msg, client_ip, self.unix(now))
        {
            Ok(auth) => auth,
            Err(err) => return self.auth_error(&ctx, err, client_ip, now, out),
        };
        ctx.key = Some(auth.key.clone());
        match header.typ.method {
            Method::ALLOCATE => self.allocate(inbound, msg, &ctx, auth, now, out),
            Method::REFRESH => self.refresh(inbound, msg, &ctx, &auth, now, out),
            Method::CREATE_PERMISSION => {
                self.create_permission(inbound, msg, &ctx, &auth, now, out)
            }
            Method::CONNECT => self.connect(inbound, msg, &ctx, &auth, out),
            Method::CONNECTION_BIND => self.connection_bind(inbound, msg, &ctx, &auth, now, out),
            _ => self.channel_bind(inbound, msg, &ctx, &auth, now, out),
        }
    }

    fn cached_response(
        &self,
        tuple: &FiveTuple,
        tid: &TransactionId,
        now: Instant,
    ) -> Option<&[u8]> {
        if let Some(a) = self.allocations.get(tuple) {
            return a.cached_response(tid, now);
        }
        self.recent
            .get(tuple)
            .filter(|(at, t, _)| {
                t == tid && now.saturating_duration_since(*at) < allocation::TRANSACTION_CACHE
            })
            .map(|(_, _, r)| r.as_slice())
    }

    fn auth_error(
        &mut self,
        ctx: &Ctx,
        err: AuthError,
        client: IpAddr,
        now: Instant,
        out: &mut [u8],
    ) -> Action {
        let unix = self.unix(now);
        let (code, reason) = match err {
            AuthError::Challenge => (401, "Unauthorized"),
            AuthError::StaleNonce => (438, "Stale Nonce"),
            AuthError::BadRequest(why) => {
                tracing::debug!(%client, why, "bad authentication attributes");
                return self.error(ctx, out, 400, "Bad Request", |_| Ok(()));
            }
            AuthError::Rejected(why) => {
                self.metrics.auth_failure(why);
                self.limiter.failed(client, now);
                tracing::debug!(%client, reason = why.as_str(), "authentication failed");
                (401, "Unauthorized")
            }
        };
        let nonce = self.config.auth.nonce(client, unix);
        let realm = self.config.auth.realm.clone();
        self.error(ctx, out, code, reason, |e| {
            e.add(&Realm(&realm))?;
            e.add(&Nonce(&nonce))?;
            e.add(&PasswordAlgorithms::MD5_AND_SHA256)
        })
    }

    fn handle_indication(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        now: Instant,
    ) -> Action {
        let transport = inbound.transport;
        match msg.method() {
            // A Binding indication is a keepalive (RFC 8489 §6.3.2): nothing to answer.
            Method::BINDING if msg.unknown_comprehension_required().is_empty() => {
                self.metrics.keepalive(transport);
                Action::None
            }
            Method::SEND => self.send_indication(inbound, msg, now),
            _ => self.drop(transport, DropReason::UnexpectedIndication),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Responses

    fn respond(
        &self,
        ctx: &Ctx,
        out: &mut [u8],
        class: Class,
        code: Option<u16>,
        body: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Result<usize, EncodeError> {
        let classic = !ctx.header.has_magic_cookie();
        let typ = MessageType::new(ctx.header.typ.method, class);
        let mut enc = Encoder::with_cookie(out, typ, ctx.header.cookie, ctx.header.tid)?;
        body(&mut enc)?;
        let software = &self.config.software;
        if !software.is_empty() {
            if classic {
                // RFC 3489's SERVER attribute had a length that is a multiple of 4, padded
                // with spaces; classic clients reject anything else.
                let mut padded = [b' '; Software::MAX_LEN + 1];
                let n = software.len().min(Software::MAX_LEN);
                padded[..n].copy_from_slice(&software.as_bytes()[..n]);
                enc.add_raw(AttrType::SOFTWARE, &padded[..n.div_ceil(4) * 4])?;
            } else {
                enc.add(&Software(software))?;
            }
        }
        if let Some(key) = &ctx.key {
            match key {
                Key::Md5(k) => enc.message_integrity(k)?,
                Key::Sha256(k) => enc.message_integrity_sha256(k)?,
            }
        }
        if !classic && (ctx.fingerprint || ctx.key.is_none()) {
            enc.fingerprint()?;
        }
        let len = enc.finish();
        self.metrics
            .request(ctx.transport, ctx.header.typ.method, code);
        Ok(len)
    }

    fn success(
        &self,
        ctx: &Ctx,
        out: &mut [u8],
        body: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Action {
        written(self.respond(ctx, out, Class::Success, None, body))
    }

    fn error(
        &self,
        ctx: &Ctx,
        out: &mut [u8],
        code: u16,
        reason: &str,
        extra: impl FnOnce(&mut Encoder<'_>) -> Result<(), EncodeError>,
    ) -> Action {
        let classic = !ctx.header.has_magic_cookie();
        written(self.respond(ctx, out, Class::Error, Some(code), |e| {
            if classic {
                // RFC 3489 §11.2.9: the reason is padded with spaces into the length.
                let mut value = [b' '; 4 + 64];
                let n = reason.len().min(64);
                value[..4].copy_from_slice(&[0, 0, (code / 100) as u8, (code % 100) as u8]);
                value[4..4 + n].copy_from_slice(&reason.as_bytes()[..n]);
                e.add_raw(AttrType::ERROR_CODE, &value[..4 + n.div_ceil(4) * 4])?;
            } else {
                e.add(&ErrorCode::new(code, reason))?;
            }
            extra(e)
        }))
    }

    // -----------------------------------------------------------------------------------------
    // Binding

    fn binding(
        &self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        out: &mut [u8],
    ) -> Action {
        let classic = !ctx.header.has_magic_cookie();
        // This server has no alternate address, so it cannot answer from another IP or port:
        // RFC 5780 §6.1 asks for 420 rather than a response that would mislead the client's
        // NAT behaviour discovery (RFC 3489 clients make the same test).
        if let Some(Ok(change)) = msg.get::<ChangeRequest>()
            && (change.change_ip || change.change_port)
        {
            return self.error(
                ctx,
                out,
                420,
                "Unknown Attribute: no alternate address",
                |e| {
                    if classic {
                        // RFC 3489 §11.2.10: an even number of entries, the last repeated.
                        e.add_raw(AttrType::UNKNOWN_ATTRIBUTES, &[0x00, 0x03, 0x00, 0x03])
                    } else {
                        e.add(&UnknownAttributes(
                            [AttrType::CHANGE_REQUEST].into_iter().collect(),
                        ))
                    }
                },
            );
        }
        let remote = canonical(inbound.remote);
        self.success(ctx, out, |e| {
            if classic {
                // RFC 3489 §11.2.1: MAPPED-ADDRESS only; XOR-MAPPED-ADDRESS is
                // comprehension-required and a classic client would reject the response.
                return e.add(&MappedAddress(remote));
            }
            e.add(&XorMappedAddress(remote))?;
            // MAPPED-ADDRESS too, as coturn does: tools that read only it keep working.
            e.add(&MappedAddress(remote))
        })
    }

    // -----------------------------------------------------------------------------------------
    // Allocate (RFC 8656 §7.2, RFC 6156)

    fn relay_ip(&self, family: AddressFamily, server: SocketAddr) -> Option<IpAddr> {
        let matches = |ip: &IpAddr| AddressFamily::of(*ip) == family && !ip.is_unspecified();
        if let Some(ip) = self
            .config
            .relay_ips
            .iter()
            .find(|ip| AddressFamily::of(**ip) == family)
        {
            return Some(*ip);
        }
        let server_ip = server.ip().to_canonical();
        if matches(&server_ip) {
            return Some(server_ip);
        }
        self.config.listen_ips.iter().copied().find(matches)
    }

    fn advertised(&self, addr: SocketAddr) -> SocketAddr {
        let ip = addr.ip();
        let public = self
            .config
            .external_ips
            .iter()
            .find_map(|&(public, private)| match private {
                Some(private) if private == ip => Some(public),
                None if public.is_ipv4() == ip.is_ipv4() => Some(public),
                _ => None,
            });
        SocketAddr::new(public.unwrap_or(ip), addr.port())
    }

    fn lifetime(&self, msg: &Message<'_>) -> Duration {
        let l = self.config.lifetimes;
        match msg.get::<Lifetime>() {
            Some(Ok(Lifetime(secs))) => {
                Duration::from_secs(u64::from(secs)).clamp(l.default_allocation, l.max_allocation)
            }
            _ => l.default_allocation,
        }
    }

    fn allocate(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: Authenticated,
        _now: Instant,
        out: &mut [u8],
    ) -> Action {
        let tuple = inbound.tuple();
        if self.allocations.contains_key(&tuple) {
            return self.error(ctx, out, 437, "Allocation Mismatch", |_| Ok(()));
        }
        if self.draining {
            return self.error(
                ctx,
                out,
                508,
                "Insufficient Capacity: server draining",
                |_| Ok(()),
            );
        }
        let tcp = match msg.get::<RequestedTransport>() {
            Some(Ok(RequestedTransport::UDP)) => false,
            // RFC 6062 §5.1: TCP allocations are made over TCP or TLS control connections.
            Some(Ok(RequestedTransport::TCP)) if inbound.transport == Transport::Udp => {
                return self.error(
                    ctx,
                    out,
                    400,
                    "Bad Request: TCP allocations need a TCP or TLS connection",
                    |_| Ok(()),
                );
            }
            Some(Ok(RequestedTransport::TCP)) => true,
            Some(Ok(_)) => {
                return self.error(ctx, out, 442, "Unsupported Transport Protocol", |_| Ok(()));
            }
            _ => {
                return self.error(
                    ctx,
                    out,
                    400,
                    "Bad Request: REQUESTED-TRANSPORT is required",
                    |_| Ok(()),
                );
            }
        };
        let token = msg.get::<ReservationToken>().and_then(Result::ok);
        let even = msg.get::<EvenPort>().and_then(Result::ok);
        let requested = msg.get::<RequestedAddressFamily>().and_then(Result::ok);
        let additional = msg.get::<AdditionalAddressFamily>().and_then(Result::ok);
        if token.is_some() && (even.is_some() || requested.is_some() || additional.is_some()) {
            return self.error(
                ctx,
                out,
                400,
                "Bad Request: RESERVATION-TOKEN excludes EVEN-PORT and address families",
                |_| Ok(()),
            );
        }
        if requested.is_some() && additional.is_some() {
            return self.error(
                ctx,
                out,
                400,
                "Bad Request: REQUESTED- and ADDITIONAL-ADDRESS-FAMILY together",
                |_| Ok(()),
            );
        }
        if additional.is_some_and(|a| a.0 != AddressFamily::IPV6) {
            return self.error(
                ctx,
                out,
                400,
                "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6",
                |_| Ok(()),
            );
        }
        let family = requested.map_or(AddressFamily::IPV4, |r| r.0);
        if !family.is_known() {
            return self.error(ctx, out, 440, "Address Family not Supported", |_| Ok(()));
        }

        let primary = match token {
            Some(ReservationToken(token)) => match self.ledger.take_reservation(&token, _now) {
                Some(addr) => RelayRequest::Reserved(addr),
                None => {
                    return self.error(
                        ctx,
                        out,
                        508,
                        "Insufficient Capacity: unknown reservation",
                        |_| Ok(()),
                    );
                }
            },
            None => match self.relay_ip(family, inbound.local) {
                Some(ip) => RelayRequest::Bind {
                    ip,
                    even: even.is_some(),
                    reserve_next: even.is_some_and(|e| e.reserve),
                },
                None => {
                    return self.error(ctx, out, 440, "Address Family not Supported", |_| Ok(()));
                }
            },
        };
        let (additional_ip, additional_error) = match additional {
            Some(_) => match self.relay_ip(AddressFamily::IPV6, inbound.local) {
                Some(ip) => (Some(ip), None),
                None => (None, Some(440)),
            },
            None => (None, None),
        };

        if let Err(quota) = self.ledger.acquire(&auth.username, &self.config.quotas) {
            self.metrics.quota_rejected(quota);
            if let RelayRequest::Reserved(addr) = primary {
                self.events.push_back(Event::ReleaseReserved(addr));
            }
            return match quota {
                QuotaKind::User => {
                    self.error(ctx, out, 486, "Allocation Quota Reached", |_| Ok(()))
                }
                _ => self.error(ctx, out, 508, "Insufficient Capacity", |_| Ok(())),
            };
        }
        if tcp
            && (msg.has(AttrType::EVEN_PORT)
                || msg.has(AttrType::RESERVATION_TOKEN)
                || msg.has(AttrType::ADDITIONAL_ADDRESS_FAMILY))
        {
            self.ledger.release(&auth.username);
            if let RelayRequest::Reserved(addr) = primary {
                self.events.push_back(Event::ReleaseReserved(addr));
            }
            return self.error(
                ctx,
                out,
                400,
                "Bad Request: EVEN-PORT, RESERVATION-TOKEN and dual allocations are for UDP",
                |_| Ok(()),
            );
        }
        Action::BindRelays(Box::new(PendingAllocation {
            tuple,
            tcp,
            primary,
            additional: additional_ip,
            header: ctx.header,
            username: auth.username,
            key: auth.key,
            fingerprint: ctx.fingerprint,
            lifetime: self.lifetime(msg),
            additional_error,
        }))
    }

    /// Finishes an Allocate once the event loop has bound (or failed to bind) its sockets.
    pub fn complete_allocate(
        &mut self,
        pending: PendingAllocation,
        bound: BindResult,
        now: Instant,
        out: &mut [u8],
    ) -> Action {
        let tuple = pending.tuple;
        let ctx = Ctx {
            transport: tuple.transport,
            header: pending.header,
            key: Some(pending.key.clone()),
            fingerprint: pending.fingerprint,
        };
        let to_client = |action: Action| match action {
            Action::Reply { len } => Action::ToClient {
                tuple,
                data: Buf::Output(len),
            },
            other => other,
        };
        let primary = match bound.primary {
            Ok((handle, addr)) => Relay {
                handle,
                addr,
                advertised: self.advertised(addr),
            },
            Err(failure) => {
                self.ledger.release(&pending.username);
                if let Some(Ok((handle, _))) = bound.additional {
                    self.events.push_back(Event::ReleaseRelay(handle));
                }
                if let Some(addr) = bound.reserved {
                    self.events.push_back(Event::ReleaseReserved(addr));
                }
                return to_client(match failure {
                    BindFailure::NoCapacity => {
                        self.metrics.quota_rejected(QuotaKind::Ports);
                        self.error(&ctx, out, 508, "Insufficient Capacity", |_| Ok(()))
                    }
                    BindFailure::Family => {
                        self.error(&ctx, out, 440, "Address Family not Supported", |_| Ok(()))
                    }
                });
            }
        };
        let mut relays = vec![primary];
        let mut additional_error = pending.additional_error;
        match bound.additional {
            Some(Ok((handle, addr))) => relays.push(Relay {
                handle,
                addr,
                advertised: self.advertised(addr),
            }),
            Some(Err(BindFailure::NoCapacity)) => additional_error = Some(508),
            Some(Err(BindFailure::Family)) => additional_error = Some(440),
            None => {}
        }
        let token = bound.reserved.map(|addr| {
            self.token_counter += 1;
            let token = reservation_token(self.token_counter, &self.config.auth.nonce_key, now);
            self.ledger
                .reserve(token, addr, now + self.config.lifetimes.reservation);
            token
        });

        let mut allocation = Allocation::new(
            tuple,
            pending.username,
            relays,
            now + pending.lifetime,
            (self.config.quotas.max_bps != 0)
                .then(|| Bandwidth::new(self.config.quotas.max_bps, now)),
            pending.header.tid,
        );
        allocation.tcp = pending.tcp;
        let lifetime = pending.lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        let action = self.success(&ctx, out, |e| {
            for r in &allocation.relays {
                e.add(&XorRelayedAddress(r.advertised))?;
            }
            if let Some(code) = additional_error {
                let reason = if code == 440 {
                    "Address Family not Supported"
                } else {
                    "Insufficient Capacity"
                };
                e.add(&AddressErrorCode {
                    family: AddressFamily::IPV6,
                    code,
                    reason,
                })?;
            }
            e.add(&Lifetime(lifetime))?;
            if let Some(token) = token {
                e.add(&ReservationToken(token))?;
            }
            e.add(&XorMappedAddress(canonical(tuple.client)))
        });
        if let Action::Reply { len } = action {
            allocation.allocate_response = out[..len].to_vec();
        }
        for r in &allocation.relays {
            self.by_relay.insert(r.handle, tuple);
        }
        self.events.push_back(Event::AllocationInstalled {
            tuple,
            relays: allocation.relays.clone(),
        });
        self.allocations.insert(tuple, allocation);
        self.metrics.allocations.inc();
        to_client(action)
    }

    fn delete_allocation(&mut self, tuple: &FiveTuple) {
        let Some(a) = self.allocations.remove(tuple) else {
            return;
        };
        self.ledger.release(&a.username);
        if a.tcp {
            self.close_tcp_connections_of(tuple);
        }
        // Out of the kernel first, then the sockets: a released port may be bound again at
        // once, by another allocation that the kernel must not confuse with this one.
        let channels: Vec<_> = a.channels.iter().map(|(&n, c)| (n, c.peer)).collect();
        channel_events(&mut self.events, tuple, &a, &channels, false);
        permission_events(&mut self.events, tuple, &a, &a.permitted(), false);
        self.events
            .push_back(Event::AllocationRemoved { tuple: *tuple });
        for r in &a.relays {
            self.by_relay.remove(&r.handle);
            self.events.push_back(Event::ReleaseRelay(r.handle));
        }
        self.metrics.allocations.dec();
        self.metrics.permissions.sub(a.permissions.len() as i64);
        self.metrics.channels.sub(a.channels.len() as i64);
    }

    // -----------------------------------------------------------------------------------------
    // Refresh, CreatePermission, ChannelBind

    /// The allocation of this 5-tuple, if it belongs to the authenticated user.
    fn owned_allocation(
        &self,
        tuple: &FiveTuple,
        auth: &Authenticated,
    ) -> Result<(), (u16, &'static str)> {
        match self.allocations.get(tuple) {
            None => Err((437, "Allocation Mismatch")),
            Some(a) if a.username != auth.username => Err((441, "Wrong Credentials")),
            Some(_) => Ok(()),
        }
    }

    fn refresh(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Action {
        let tuple = inbound.tuple();
        if let Err((code, reason)) = self.owned_allocation(&tuple, auth) {
            return self.error(ctx, out, code, reason, |_| Ok(()));
        }
        if let Some(Ok(RequestedAddressFamily(family))) = msg.get::<RequestedAddressFamily>()
            && !self.allocations[&tuple]
                .relays
                .iter()
                .any(|r| AddressFamily::of(r.addr.ip()) == family)
        {
            return self.error(ctx, out, 443, "Peer Address Family Mismatch", |_| Ok(()));
        }
        let delete = matches!(msg.get::<Lifetime>(), Some(Ok(Lifetime(0))));
        let lifetime = if delete {
            Duration::ZERO
        } else {
            self.lifetime(msg)
        };
        let secs = lifetime.as_secs().min(u64::from(u32::MAX)) as u32;
        let action = self.success(ctx, out, |e| e.add(&Lifetime(secs)));
        let Action::Reply { len } = action else {
            return action;
        };
        if delete {
            self.delete_allocation(&tuple);
            self.recent
                .insert(tuple, (now, ctx.header.tid, out[..len].to_vec()));
        } else if let Some(a) = self.allocations.get_mut(&tuple) {
            a.expires = now + lifetime;
            a.cache_response(ctx.header.tid, &out[..len], now);
        }
        action
    }

    /// Checks a peer for CreatePermission/ChannelBind: family and policy.
    fn check_peer(
        &self,
        tuple: &FiveTuple,
        peer: SocketAddr,
        with_port: bool,
    ) -> Result<(), (u16, &'static str)> {
        let a = &self.allocations[tuple];
        if a.relay_for(peer).is_none() {
            return Err((443, "Peer Address Family Mismatch"));
        }
        let verdict = if with_port {
            self.config.policy.check(peer)
        } else {
            self.config.policy.check_ip(peer.ip())
        };
        verdict.map_err(|denial| {
            self.metrics.peer_denied(denial);
            (403, "Forbidden: peer address not allowed")
        })
    }

    /// The one XOR-PEER-ADDRESS of a ChannelBind or Connect, checked for family and policy
    /// (per IP:port, so the relay's own endpoints are refused).
    fn checked_peer(
        &self,
        msg: &Message<'_>,
        tuple: &FiveTuple,
    ) -> Result<SocketAddr, (u16, &'static str)> {
        let peer = match msg.get::<XorPeerAddress>() {
            Some(Ok(XorPeerAddress(p))) => p,
            _ => return Err((400, "Bad Request: XOR-PEER-ADDRESS is required")),
        };
        self.check_peer(tuple, peer, true)?;
        Ok(peer)
    }

    /// Room for `new` more permissions under the cap?
    fn permission_room(&self, tuple: &FiveTuple, new: usize) -> bool {
        let cap = self.config.quotas.permissions_per_allocation;
        cap == 0 || self.allocations[tuple].permissions.len() + new <= cap as usize
    }

    fn create_permission(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Action {
        let tuple = inbound.tuple();
        if let Err((code, reason)) = self.owned_allocation(&tuple, auth) {
            return self.error(ctx, out, code, reason, |_| Ok(()));
        }
        let mut peers = Vec::new();
        for peer in msg.get_all::<XorPeerAddress>() {
            match peer {
                Ok(XorPeerAddress(p)) => peers.push(p),
                Err(_) => {
                    return self.error(
                        ctx,
                        out,
                        400,
                        "Bad Request: malformed XOR-PEER-ADDRESS",
                        |_| Ok(()),
                    );
                }
            }
        }
        if peers.is_empty() {
            return self.error(
                ctx,
                out,
                400,
                "Bad Request: XOR-PEER-ADDRESS is required",
                |_| Ok(()),
            );
        }
        for &peer in &peers {
            if let Err((code, reason)) = self.check_peer(&tuple, peer, false) {
                return self.error(ctx, out, code, reason, |_| Ok(()));
            }
        }
        let a = &self.allocations[&tuple];
        let mut fresh: Vec<IpAddr> = peers
            .iter()
            .map(|p| p.ip())
            .filter(|ip| !a.permissions.contains_key(ip))
            .collect();
        fresh.sort();
        fresh.dedup();
        if !self.permission_room(&tuple, fresh.len()) {
            self.metrics.quota_rejected(QuotaKind::Permissions);
            return self.error(
                ctx,
                out,
                508,
                "Insufficient Capacity: too many permissions",
                |_| Ok(()),
            );
        }
        let action = self.success(ctx, out, |_| Ok(()));
        let Action::Reply { len } = action else {
            return action;
        };
        let expires = now + self.config.lifetimes.permission;
        if let Some(a) = self.allocations.get_mut(&tuple) {
            for peer in &peers {
                a.permissions.insert(peer.ip(), expires);
            }
            a.cache_response(ctx.header.tid, &out[..len], now);
            // A throttled allocation's permissions return to the kernel when its budget
            // recovers.
            if !a.throttled {
                let mut ips: Vec<IpAddr> = peers.iter().map(|p| p.ip()).collect();
                ips.sort();
                ips.dedup();
                permission_events(&mut self.events, &tuple, a, &ips, true);
            }
            // Channels whose permission had expired go back to the kernel (a refresh of the
            // others changes nothing there).
            let channels: Vec<_> = a
                .offloadable(now)
                .into_iter()
                .filter(|(_, p)| peers.iter().any(|q| q.ip() == p.ip()))
                .collect();
            channel_events(&mut self.events, &tuple, a, &channels, true);
        }
        self.metrics.permissions.add(fresh.len() as i64);
        action
    }

    fn channel_bind(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        ctx: &Ctx,
        auth: &Authenticated,
        now: Instant,
        out: &mut [u8],
    ) -> Action {
        let tuple = inbound.tuple();
        if let Err((code, reason)) = self.owned_allocation(&tuple, auth) {
            return self.error(ctx, out, code, reason, |_| Ok(()));
        }
        let channel = match msg.get::<ChannelNumber>() {
            Some(Ok(ChannelNumber(n))) if ChannelData::CHANNELS.contains(&n) => n,
            _ => {
                return self.error(
                    ctx,
                    out,
                    400,
                    "Bad Request: CHANNEL-NUMBER must be 0x4000-0x7FFF",
                    |_| Ok(()),
                );
            }
        };
        let peer = match self.checked_peer(msg, &tuple) {
            Ok(peer) => peer,
            Err((code, reason)) => return self.error(ctx, out, code, reason, |_| Ok(())),
        };
        let a = &self.allocations[&tuple];
        // RFC 8656 §11.2: a channel is bound to one peer and a peer to one channel; rebinding the
        // same pair refreshes it. The 5-minute wait after a binding expires before its number or
        // its peer is bound otherwise (§12) is a MUST on the client, not checked here: nothing of
        // the server depends on it (the expired binding, and its kernel entry, are gone), and
        // refusing would only break a client that got it wrong.
        if a.channels.get(&channel).is_some_and(|c| c.peer != peer)
            || a.channel_by_peer.get(&peer).is_some_and(|&n| n != channel)
        {
            return self.error(
                ctx,
                out,
                400,
                "Bad Request: channel or peer already bound otherwise",
                |_| Ok(()),
            );
        }
        let new_permission = !a.permissions.contains_key(&peer.ip());
        if new_permission && !self.permission_room(&tuple, 1) {
            self.metrics.quota_rejected(QuotaKind::Permissions);
            return self.error(
                ctx,
                out,
                508,
                "Insufficient Capacity: too many permissions",
                |_| Ok(()),
            );
        }
        let new_channel = !a.channels.contains_key(&channel);
        let action = self.success(ctx, out, |_| Ok(()));
        let Action::Reply { len } = action else {
            return action;
        };
        let lifetimes = self.config.lifetimes;
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return action;
        };
        let expires = now + lifetimes.channel;
        a.channels
            .insert(channel, allocation::Channel { peer, expires });
        a.channel_by_peer.insert(peer, channel);
        a.permissions.insert(peer.ip(), now + lifetimes.permission);
        a.cache_response(ctx.header.tid, &out[..len], now);
        // A throttled allocation's permissions and channels return to the kernel when its
        // budget recovers.
        if !a.throttled {
            permission_events(&mut self.events, &tuple, a, &[peer.ip()], true);
            channel_events(&mut self.events, &tuple, a, &[(channel, peer)], true);
        }
        if new_permission {
            self.metrics.permissions.inc();
        }
        if new_channel {
            self.metrics.channels.inc();
        }
        action
    }

    // -----------------------------------------------------------------------------------------
    // Data: Send indications and ChannelData from clients, datagrams from peers

    fn send_indication(
        &mut self,
        inbound: &Inbound<'_>,
        msg: &Message<'_>,
        now: Instant,
    ) -> Action {
        let transport = inbound.transport;
        let tuple = inbound.tuple();
        let (Some(Ok(XorPeerAddress(peer))), Some(data)) =
            (msg.get::<XorPeerAddress>(), msg.raw(AttrType::DATA))
        else {
            return self.drop(transport, DropReason::Malformed);
        };
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return self.drop(transport, DropReason::NoAllocation);
        };
        let Some(relay) = a.relay_for(peer).map(|r| r.handle) else {
            return self.drop(transport, DropReason::NoPermission);
        };
        if !a.has_permission(peer.ip(), now) {
            return self.drop(transport, DropReason::NoPermission);
        }
        // The permission was checked per IP; the relay's own endpoints are refused per port.
        if let Err(denial) = self.config.policy.check(peer) {
            self.metrics.peer_denied(denial);
            return self.drop(transport, DropReason::PeerDenied);
        }
        if !a.within_bandwidth(data.value.len(), now) {
            self.metrics.quota_rejected(QuotaKind::Bandwidth);
            return self.drop(transport, DropReason::BandwidthExceeded);
        }
        let start = data.offset + crate::stun::ATTR_HEADER_LEN;
        self.count_relayed(transport, Direction::ClientToPeer, data.value.len());
        Action::ToPeer {
            relay,
            peer,
            range: start..start + data.value.len(),
        }
    }

    fn client_channel_data(&mut self, inbound: &Inbound<'_>, now: Instant) -> Action {
        let transport = inbound.transport;
        let Ok(cd) = ChannelData::decode(inbound.packet) else {
            return self.drop(transport, DropReason::Malformed);
        };
        let Some(a) = self.allocations.get_mut(&inbound.tuple()) else {
            return self.drop(transport, DropReason::NoAllocation);
        };
        let Some(peer) = a.channel_peer(cd.channel, now) else {
            return self.drop(transport, DropReason::UnknownChannel);
        };
        let Some(relay) = a.relay_for(peer).map(|r| r.handle) else {
            return self.drop(transport, DropReason::UnknownChannel);
        };
        if !a.within_bandwidth(cd.data.len(), now) {
            self.metrics.quota_rejected(QuotaKind::Bandwidth);
            return self.drop(transport, DropReason::BandwidthExceeded);
        }
        self.count_relayed(transport, Direction::ClientToPeer, cd.data.len());
        let start = ChannelData::HEADER_LEN;
        Action::ToPeer {
            relay,
            peer,
            range: start..start + cd.data.len(),
        }
    }

    /// Handles a datagram a peer sent to relay socket `relay`. The data is
    /// `buf[PEER_HEADROOM..PEER_HEADROOM + len]`, with [`PEER_TAILROOM`] spare bytes after it,
    /// so that ChannelData can be framed in place.
    pub fn handle_peer(
        &mut self,
        relay: RelayHandle,
        peer: SocketAddr,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        out: &mut [u8],
    ) -> Action {
        let Some(tuple) = self.by_relay.get(&relay).copied() else {
            return self.drop(Transport::Udp, DropReason::NoAllocation);
        };
        let transport = tuple.transport;
        let Some(a) = self.allocations.get_mut(&tuple) else {
            return self.drop(transport, DropReason::NoAllocation);
        };
        let peer = canonical(peer);
        if !a.has_permission(peer.ip(), now) {
            return self.drop(transport, DropReason::NoPermission);
        }
        if !a.within_bandwidth(len, now) {
            self.metrics.quota_rejected(QuotaKind::Bandwidth);
            return self.drop(transport, DropReason::BandwidthExceeded);
        }
        if let Some(channel) = a.channel_to(peer, now) {
            let (Ok(data_len), Some(frame)) = (
                u16::try_from(len),
                buf.get_mut(..PEER_HEADROOM + len + PEER_TAILROOM),
            ) else {
                return self.drop(transport, DropReason::Malformed);
            };
            let mut header = [0u8; 4];
            ChannelData::write_header(channel, data_len, &mut header);
            frame[..4].copy_from_slice(&header);
            let total = ChannelData::encoded_len(len, transport.is_stream());
            frame[PEER_HEADROOM + len..total].fill(0);
            self.count_relayed(transport, Direction::PeerToClient, len);
            return Action::ToClient {
                tuple,
                data: Buf::Input(0..total),
            };
        }
        let data = buf
            .get(PEER_HEADROOM..PEER_HEADROOM + len)
            .unwrap_or_default();
        let typ = MessageType::new(Method::DATA, Class::Indication);
        let written = (|| {
            let mut e = Encoder::new(out, typ, indication_tid(now, peer))?;
            e.add(&XorPeerAddress(peer))?;
            e.add(&Data(data))?;
            Ok::<_, EncodeError>(e.finish())
        })();
        match written {
            Ok(n) => {
                self.count_relayed(transport, Direction::PeerToClient, len);
                Action::ToClient {
                    tuple,
                    data: Buf::Output(n),
                }
            }
            // Larger than a Data indication can carry in `out`.
            Err(_) => self.drop(transport, DropReason::Malformed),
        }
    }

    fn count_relayed(&self, transport: Transport, direction: Direction, bytes: usize) {
        let r = self
            .metrics
            .relayed(Datapath::Userspace, transport, direction);
        r.packets.inc();
        r.bytes.inc_by(bytes as u64);
    }

    // -----------------------------------------------------------------------------------------
    // Timers

    /// Expires allocations, permissions, channels and reservations; call about once a second.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<FiveTuple> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for tuple in expired {
            tracing::debug!(client = %tuple.client, "allocation expired");
            self.delete_allocation(&tuple);
        }
        let mut unbound = Vec::new();
        let mut revoked = Vec::new();
        for (tuple, a) in &mut self.allocations {
            // The kernel does not check permissions: a live channel whose permission expires
            // leaves it (a CreatePermission or ChannelBind brings it back).
            if !a.throttled {
                let unpermitted: Vec<_> = a
                    .channels
                    .iter()
                    .filter(|(_, c)| {
                        c.expires > now
                            && a.permissions.contains_key(&c.peer.ip())
                            && !a.has_permission(c.peer.ip(), now)
                    })
                    .map(|(&n, c)| (n, c.peer))
                    .collect();
                channel_events(&mut self.events, tuple, a, &unpermitted, false);
            }
            // Back under the bandwidth cap: the allocation, its permissions and its channels
            // return to the kernel.
            if a.throttled && a.bandwidth.as_mut().is_none_or(|b| b.recovered(now)) {
                a.throttled = false;
                self.events.push_back(Event::AllocationInstalled {
                    tuple: *tuple,
                    relays: a.relays.clone(),
                });
                let permissions = a.offloadable_permissions(now);
                permission_events(&mut self.events, tuple, a, &permissions, true);
                let channels = a.offloadable(now);
                channel_events(&mut self.events, tuple, a, &channels, true);
                tracing::debug!(
                    client = %tuple.client,
                    permissions = permissions.len(),
                    channels = channels.len(),
                    "back within the bandwidth cap: the allocation returns to the XDP fast path"
                );
            }
            unbound.clear();
            revoked.clear();
            let (permissions, channels) = a.expire(now, &mut unbound, &mut revoked);
            self.metrics.permissions.sub(permissions as i64);
            self.metrics.channels.sub(channels as i64);
            channel_events(&mut self.events, tuple, a, &unbound, false);
            permission_events(&mut self.events, tuple, a, &revoked, false);
        }
        for addr in self.ledger.expire_reservations(now) {
            self.events.push_back(Event::ReleaseReserved(addr));
        }
        self.recent.retain(|_, (at, _, _)| {
            now.saturating_duration_since(*at) < allocation::TRANSACTION_CACHE
        });
        self.limiter.forget_idle(now);
        self.expire_tcp_connections(now);
    }

    /// Charges traffic the kernel forwarded for this allocation (on its channels, and as Send
    /// and Data indications under its permissions; both directions, application bytes) to its
    /// bandwidth budget, as userspace charges what it relays. Over the cap, the allocation
    /// leaves the kernel entirely: its channels (`ChannelUnbound`; counted as
    /// `xdpturn_xdp_fallbacks_total{reason="bandwidth"}`), its permissions
    /// (`PermissionRemoved`) and itself (`AllocationRemoved`), so its traffic is relayed in
    /// userspace, where the cap is enforced and the excess dropped and counted; [`Server::tick`]
    /// brings them back once the budget has recovered. An allocation without a cap, or gone,
    /// is not affected. (Data does not refresh allocations or permissions in TURN, so there is
    /// no other activity to record.)
    pub fn charge_offloaded(&mut self, tuple: &FiveTuple, bytes: u64, now: Instant) {
        let Some(a) = self.allocations.get_mut(tuple) else {
            return;
        };
        let Some(b) = a.bandwidth.as_mut() else {
            return;
        };
        b.charge(bytes, now);
        if a.throttled || !b.exceeded(now) {
            return;
        }
        let channels = a.offloadable(now);
        a.throttled = true;
        let n = channel_events(&mut self.events, tuple, a, &channels, false);
        permission_events(&mut self.events, tuple, a, &a.permitted(), false);
        self.events
            .push_back(Event::AllocationRemoved { tuple: *tuple });
        self.metrics
            .xdp_fallbacks
            .with_label_values(&["bandwidth"])
            .inc_by(n as u64);
        tracing::debug!(
            client = %tuple.client,
            channels = n,
            "over the bandwidth cap in the XDP fast path: channels relayed in userspace until \
             the budget recovers"
        );
    }

    /// A stream client's connection closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn client_closed(&mut self, tuple: &FiveTuple) {
        if let Some(id) = self.data_connections.remove(tuple) {
            // A client data connection (RFC 6062): its peer connection goes with it.
            self.tcp_connection_closed(id);
            self.events.push_back(Event::CloseTcp(id));
        }
        self.delete_allocation(tuple);
    }

    /// Ends every allocation at once (the relay is exiting): their relay sockets are released.
    pub fn shutdown(&mut self) {
        let tuples: Vec<FiveTuple> = self.allocations.keys().copied().collect();
        for tuple in tuples {
            self.delete_allocation(&tuple);
        }
        for addr in self.ledger.expire_reservations(now_far_future()) {
            self.events.push_back(Event::ReleaseReserved(addr));
        }
    }
}

/// Tells the kernel fast path that `channels` of allocation `a` are to be forwarded there
/// (`bound`, a no-op for one already there) or not any more; returns how many events.
fn channel_events(
    events: &mut VecDeque<Event>,
    tuple: &FiveTuple,
    a: &Allocation,
    channels: &[(u16, SocketAddr)],
    bound: bool,
) -> usize {
    let mut n = 0;
    for &(channel, peer) in channels {
        let Some(&relay) = a.relay_for(peer) else {
            continue;
        };
        events.push_back(if bound {
            let expires = a.channels.get(&channel).map_or(a.expires, |c| c.expires);
            Event::ChannelBound {
                tuple: *tuple,
                channel,
                relay,
                peer,
                expires,
            }
        } else {
            Event::ChannelUnbound {
                tuple: *tuple,
                channel,
                relay,
                peer,
            }
        });
        n += 1;
    }
    n
}

/// Tells the kernel fast path that the permissions of allocation `a` for `peers` are to be
/// used there (`installed`, with their expiry; a no-op for one already there) or not any more;
/// each is on the relayed address of its peer's family.
fn permission_events(
    events: &mut VecDeque<Event>,
    tuple: &FiveTuple,
    a: &Allocation,
    peers: &[IpAddr],
    installed: bool,
) {
    for &peer in peers {
        let Some(&relay) = a.relay_for_ip(peer) else {
            continue;
        };
        events.push_back(if installed {
            Event::PermissionInstalled {
                tuple: *tuple,
                relay,
                peer,
                expires: a.permissions.get(&peer).copied().unwrap_or(a.expires),
            }
        } else {
            Event::PermissionRemoved {
                tuple: *tuple,
                relay,
                peer,
            }
        });
    }
}

/// A time after every reservation's expiry.
fn now_far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

fn written(result: Result<usize, EncodeError>) -> Action {
    match result {
        Ok(len) => Action::Reply { len },
        // Only a caller passing a buffer smaller than MAX_REPLY_LEN gets here.
        Err(err) => {
            tracing::error!(%err, "reply does not fit the output buffer");
            Action::None
        }
    }
}

/// An IPv4-mapped IPv6 address (from a dual-stack socket) reported as the IPv4 address it is.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A transaction id for a Data indication: unique enough (indications are not matched).
fn indication_tid(now: Instant, peer: SocketAddr) -> TransactionId {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    now.hash(&mut h);
    peer.hash(&mut h);
    let a = h.finish().to_be_bytes();
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&a);
    TransactionId::new(tid)
}

/// An unguessable reservation token: a MAC of a counter and the time under the relay's key.
fn reservation_token(counter: u64, key: &[u8; 32], now: Instant) -> [u8; 8] {
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(&counter.to_be_bytes());
    mac.update(format!("{now:?}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    let mut token = [0u8; 8];
    token.copy_from_slice(&bytes[..8]);
    token
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod turn_tests;
