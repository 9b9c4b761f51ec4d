//! The protocol core: STUN and TURN as a state machine. Bytes, addresses and time in; a
//! [`Command`] out, and [`Event`]s to poll. No sockets and no clock: the event loop owns I/O,
//! binds relay sockets when asked, and applies what this returns. That makes every path —
//! errors, timers, quotas — testable without a network.
//!
//! One `Server` is one shard: a worker thread owns it, with the allocations whose client
//! 5-tuples the kernel steers to that worker. What must be global (quotas, the budget of failed
//! authentications per source) is shared through [`Ledger`].
//!
//! One file per job: `types` (what goes in and out), `ledger` (what the shards share),
//! `counters` (what the core counts), and an `impl Server` per thing it handles: `dispatch` (a
//! packet to its handler; responses and error answers), `binding`, `allocate`, `permissions`
//! (Refresh, CreatePermission, ChannelBind), `data` (Send and Data indications, ChannelData),
//! `timers` (expiry, the bandwidth budget, the end of allocations) and [`tcp`] (RFC 6062).
//! [`auth`] and [`policy`] are what it checks, [`allocation`] one allocation's state.

pub mod allocation;
pub mod auth;
pub mod policy;
pub mod tcp;

mod allocate;
mod binding;
mod counters;
mod data;
mod dispatch;
mod ledger;
mod permissions;
mod timers;
mod types;
mod usage;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use allocation::Allocation;
use auth::Key;
pub use counters::{Counters, Direction};
pub use ledger::Ledger;
pub use tcp::PendingConnect;
use types::canonical;
pub use types::{
    BindFailure, BindResult, Buf, Command, Config, DropReason, Event, FiveTuple, Inbound,
    Lifetimes, MAX_REPLY_LEN, PEER_HEADROOM, PEER_TAILROOM, PendingAllocation, QuotaKind, Quotas,
    RelayHandle, RelayRequest, StreamLimits, Transport,
};
pub use usage::{Flow, USAGE_REPORT_INTERVAL, Usage, UsageKind, UsageReport};

use crate::stun::{Header, TransactionId};

/// An error answer: its ERROR-CODE and reason, as `Server::reject` sends it.
type Refusal = (u16, &'static str);

/// An answer to a request without valid credentials over UDP is at most this many times the
/// request's size: a relay must not be a reflector that multiplies what a spoofed source sends.
/// An answer that would be larger is not sent (the request is dropped, counted as
/// `amplification`); the answers are kept small enough that every well-formed request gets one
/// (see `Server::auth_error` and `Server::binding`).
pub const AMPLIFICATION: usize = 3;

/// A STUN header and one 4-byte attribute (REQUESTED-TRANSPORT): the smallest request a real
/// client sends, which always gets a challenge (see `Server::auth_error`).
pub const MIN_ATTRIBUTED_REQUEST: usize = 28;

/// The longest realm whose MD5 challenge (ERROR-CODE without a reason, REALM, NONCE) stays
/// within [`AMPLIFICATION`] times [`MIN_ATTRIBUTED_REQUEST`].
pub const REALM_WITHIN_BUDGET: usize = 32;

/// Per-request context for responses.
struct Ctx {
    transport: Transport,
    header: Header,
    key: Option<Key>,
    fingerprint: bool,
    /// The request's size in bytes, which bounds an unauthenticated answer over UDP.
    request_len: usize,
}

impl Ctx {
    /// The largest answer this request may get: [`AMPLIFICATION`] times its size over UDP
    /// without credentials, unbounded otherwise (a stream's peer completed a handshake, and an
    /// authenticated client is known).
    fn budget(&self) -> usize {
        if self.key.is_none() && self.transport == Transport::Udp {
            self.request_len.saturating_mul(AMPLIFICATION)
        } else {
            usize::MAX
        }
    }
}

/// The protocol core (one shard).
#[derive(Debug)]
pub struct Server {
    config: Arc<Config>,
    ledger: Arc<Ledger>,
    counters: Arc<dyn Counters>,
    /// Wall-clock seconds at `clock.0`, for REST expiry and nonces.
    clock: (Instant, u64),
    allocations: HashMap<FiveTuple, Allocation>,
    by_relay: HashMap<RelayHandle, FiveTuple>,
    /// Final responses of deleted allocations, for retransmitted Refresh(0).
    recent: HashMap<FiveTuple, (Instant, TransactionId, Vec<u8>)>,
    events: VecDeque<Event>,
    draining: bool,
    token_counter: u64,
    /// Client data connections bound to a peer data connection.
    data_connections: HashMap<FiveTuple, u32>,
    /// Connects in progress, for 446.
    connecting: HashSet<(FiveTuple, SocketAddr)>,
}

impl Server {
    /// A shard. `unix_now` is the wall-clock time in seconds at `now`; `counters` is where it
    /// counts what it does (the relay's metrics).
    pub fn new(
        config: Arc<Config>,
        ledger: Arc<Ledger>,
        counters: Arc<dyn Counters>,
        now: Instant,
        unix_now: u64,
    ) -> Self {
        Self {
            config,
            ledger,
            counters,
            clock: (now, unix_now),
            allocations: HashMap::new(),
            by_relay: HashMap::new(),
            recent: HashMap::new(),
            events: VecDeque::new(),
            draining: false,
            token_counter: 0,
            data_connections: HashMap::new(),
            connecting: HashSet::new(),
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

    /// The 5-tuples of this shard's allocations made over UDP (what a relay handing its
    /// listeners over to another process must keep receiving).
    pub fn udp_tuples(&self) -> impl Iterator<Item = &FiveTuple> {
        self.allocations
            .keys()
            .filter(|t| t.transport == Transport::Udp)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The ledger this shard shares, for tests outside the core.
    #[cfg(test)]
    pub(crate) fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn unix(&self, now: Instant) -> u64 {
        self.clock.1 + now.saturating_duration_since(self.clock.0).as_secs()
    }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
pub(crate) mod turn_tests;
