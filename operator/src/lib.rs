//! The xdpturn operator: turns `TurnCluster` resources into running relays.
//!
//! A reconcile is a pipeline of small steps, each its own module:
//!
//! ```text
//! TurnCluster ─► validate ─► build ─────────► apply ──────────► status
//!  (watched      decode,     ConfigMap         server-side       conditions, readyRelays,
//!   untyped)     check,      (relay.toml),     apply, only       endpoints, iceServers;
//!                every       workload,         what changed      events on transitions
//!                problem     Services, SA
//! ```
//!
//! [`validate`], [`build`], [`endpoints`], [`cluster`] (but for its `watch`) and [`status`] are
//! pure: no client, tested from YAML fixtures. [`apply`] and [`controller`] talk to the API
//! server, [`relays`] to the relays' `/readyz` (their fast path, for TurnClusters that ask for
//! it); [`leader`] elects one active replica with a Lease; [`metrics`] and [`http`] make the
//! operator observable.

pub mod apply;
pub mod build;
pub mod cluster;
pub mod controller;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod quantity;
pub mod relays;
pub mod status;
pub mod validate;

pub use error::Error;
pub use validate::{Problem, validate};

/// The relay image used when neither the TurnCluster nor the operator's flags name one: the
/// relay of the operator's own version.
pub const DEFAULT_RELAY_IMAGE: &str = concat!("xdpturn/xdpturn-relay:", env!("CARGO_PKG_VERSION"));
