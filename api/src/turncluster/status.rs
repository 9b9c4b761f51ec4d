//! The status: what the operator observed (conditions, ready relays, public endpoints, the
//! `iceServers` entries clients should use), written by the operator only.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the operator observed, written by the operator only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnClusterStatus {
    /// `Ready`, `Progressing` and `Degraded`, each with a machine-readable reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// How many relays are ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_relays: Option<i32>,

    /// How many relays should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_relays: Option<i32>,

    /// The public addresses clients reach the relays on (IPs or DNS names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,

    /// The entries WebRTC clients put in their `RTCConfiguration.iceServers`, one per
    /// endpoint, without credentials (get those from your backend or the credentials API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
}

impl TurnClusterStatus {
    /// The condition of this type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// Condition types and reasons of [`TurnClusterStatus::conditions`].
pub mod conditions {
    /// Clients can use the service: at least one relay is ready and a public endpoint is known.
    pub const READY: &str = "Ready";
    /// The relays are being created or changed, or wait for something (a load balancer).
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs a user's attention: an invalid spec, an object Kubernetes refused.
    pub const DEGRADED: &str = "Degraded";

    /// The spec is invalid; the message lists every problem with its field path.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Kubernetes refused an object the operator rendered.
    pub const REJECTED: &str = "Rejected";
    /// An object with an owned object's name exists and belongs to something else.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// No public address is known (no node with an ExternalIP, no load balancer ingress).
    pub const NO_ENDPOINTS: &str = "NoPublicAddress";
    /// Every relay is ready.
    pub const RELAYS_READY: &str = "RelaysReady";
    /// Some relays are ready, not all.
    pub const PARTIALLY_READY: &str = "PartiallyReady";
    /// No relay is ready yet.
    pub const NO_RELAYS_READY: &str = "NoRelaysReady";
    /// The workload is rolling out.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Waiting for a load balancer's ingress address.
    pub const WAITING_FOR_LOAD_BALANCER: &str = "WaitingForLoadBalancer";
    /// Nothing in progress.
    pub const STABLE: &str = "Stable";
    /// Nothing wrong.
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// A status condition, shaped like the Kubernetes `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition type: `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,

    /// Whether the condition holds.
    pub status: ConditionStatus,

    /// A CamelCase reason for the last transition, for machines.
    pub reason: String,

    /// A human-readable explanation.
    pub message: String,

    /// When the status last changed, as an RFC 3339 timestamp.
    pub last_transition_time: String,

    /// The `metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The value of [`Condition::status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The operator cannot tell.
    Unknown,
}

/// One WebRTC `RTCIceServer` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// `stun:`/`turn:`/`turns:` URLs (RFC 7064, RFC 7065).
    pub urls: Vec<String>,

    /// The username, for TURN URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,

    /// The credential, for TURN URLs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
