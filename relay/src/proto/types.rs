//! The core's public types: what comes in (a packet and where from), what goes out (a
//! [`Command`] for the packet, [`Event`]s to poll), the relay sockets the event loop binds for it,
//! and the configuration: lifetimes (RFC 8656) and quotas.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::allocation::Relay;
use super::auth::{AuthConfig, Key};
use super::policy::PeerPolicy;
use super::tcp::PendingConnect;
use crate::stun::{ChannelData, Header};

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
    /// Data to a peer the address policy refuses, or from one of the relay's own addresses on
    /// a port that is not a relay port.
    PeerDenied,
    /// Over the allocation's bandwidth cap.
    BandwidthExceeded,
    /// Too many failed authentications from this address.
    AuthRateLimited,
    /// The user source (coturn's database) is over its budget of lookups.
    UserSourceBusy,
    /// A request over UDP without valid credentials whose answer would be more than
    /// [`AMPLIFICATION`](super::AMPLIFICATION) times its size.
    Amplification,
}

impl DropReason {
    /// Every reason, in declaration order (metrics index by `reason as usize`).
    pub const ALL: [DropReason; 14] = [
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
        DropReason::UserSourceBusy,
        DropReason::Amplification,
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
            DropReason::UserSourceBusy => "userdb_busy",
            DropReason::Amplification => "amplification",
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
pub enum Command {
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
    /// Nothing yet: the request's user is being looked up in the configured
    /// [`UserSource`](super::auth::UserSource). Hand the same packet in again once it answers
    /// (or drop it: the client retransmits).
    AwaitUser,
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
    /// An allocation's life and traffic, for coturn's traffic records (only when
    /// `Config::report_usage`). An allocation's `Deleted` report follows the removal of its
    /// channels and permissions.
    Usage(super::UsageReport),
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
    pub(super) header: Header,
    pub(super) username: String,
    pub(super) key: Key,
    pub(super) fingerprint: bool,
    pub(super) lifetime: Duration,
    /// ADDRESS-ERROR-CODE to report for the additional family the server cannot serve.
    pub(super) additional_error: Option<u16>,
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
    /// Limits on TCP and TLS client connections, which the event loop applies (the core never
    /// sees a connection, only its messages); here so that a reload reaches every worker.
    pub streams: StreamLimits,
    /// Report allocations' lives and traffic as [`Event::Usage`] (coturn's traffic records).
    pub report_usage: bool,
}

/// Limits on TCP and TLS client connections (eventloop/streams.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLimits {
    /// A connection must make its first authenticated request (an Allocate or a
    /// ConnectionBind) within this long; None: no limit.
    pub auth_timeout: Option<Duration>,
    /// A connection that sends no complete message for this long is closed; None: no limit.
    pub idle_timeout: Option<Duration>,
    /// Open connections per source address (IPv6: per /64); 0 is unlimited.
    pub per_source: u32,
    /// Open connections in total; 0 is unlimited.
    pub total: u32,
}

impl Default for StreamLimits {
    /// The defaults of the relay's settings.
    fn default() -> Self {
        Self {
            auth_timeout: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(600)),
            per_source: 1024,
            total: 65_536,
        }
    }
}

/// Largest reply the server writes; callers pass a buffer at least this big.
pub const MAX_REPLY_LEN: usize = 2048;
/// Space the event loop leaves in front of data read from a relay socket, so that the ChannelData
/// header can be written in place; and the slack after it for stream padding.
pub const PEER_HEADROOM: usize = ChannelData::HEADER_LEN;
pub const PEER_TAILROOM: usize = 3;

/// An IPv4-mapped IPv6 address (from a dual-stack socket) reported as the IPv4 address it is.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
