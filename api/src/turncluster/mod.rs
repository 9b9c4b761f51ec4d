//! The `TurnCluster` custom resource (group `xdpturn.io`, version `v1alpha1`, namespaced).
//!
//! The spec says what a user wants; the status says what is. Everything the CRD schema can check
//! (ranges, enums, patterns: what a Kubernetes 1.20 structural schema supports, no CEL) is
//! checked there; the rest (cross-field rules such as "TLS needs a certificate Secret") is
//! checked by the operator, which reports every problem in `status.conditions` with the field's
//! path.
//!
//! The CRD YAML in `crds/` is generated from these types by `cargo xtask crdgen`; never edit it
//! by hand.

mod running;
mod serving;
mod status;

pub use running::*;
pub use serving::*;
pub use status::*;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The TURN/STUN port used when a UDP or TCP listener does not name one (RFC 8656).
pub const DEFAULT_TURN_PORT: i32 = 3478;
/// The TURN-over-TLS port used when a TLS listener does not name one (RFC 8656).
pub const DEFAULT_TURNS_PORT: i32 = 5349;
/// The relay port range used when the spec does not name one (the IANA dynamic range).
pub const DEFAULT_RELAY_PORT_MIN: i32 = 49152;
/// See [`DEFAULT_RELAY_PORT_MIN`].
pub const DEFAULT_RELAY_PORT_MAX: i32 = 65535;
/// How many relays a `Deployment` placement runs when `replicas` is unset.
pub const DEFAULT_DEPLOYMENT_REPLICAS: i32 = 2;
/// How long a relay serves existing allocations after SIGTERM, by default.
pub const DEFAULT_DRAIN_TIMEOUT_SECONDS: i64 = 300;
/// How long the preStop hook waits before the relay gets SIGTERM, by default.
pub const DEFAULT_PRESTOP_DELAY_SECONDS: i64 = 5;

/// A DNS-1123 subdomain: the names of Secrets.
const SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// A key in a Secret's `data`.
const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// An IP address or a CIDR, loosely: the operator parses it properly and names the field.
const CIDR: &str = r"^[0-9a-fA-F:.]+(/[0-9]{1,3})?$";
/// An IP address or a DNS name, loosely.
const HOST: &str = r"^[0-9A-Za-z.:-]+$";
/// A Linux interface name (IFNAMSIZ is 16 bytes, NUL included).
const INTERFACE: &str = r"^[A-Za-z0-9_.:@-]{1,15}$";

/// What a user wants from a fleet of xdpturn relays.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "xdpturn.io",
    version = "v1alpha1",
    kind = "TurnCluster",
    plural = "turnclusters",
    singular = "turncluster",
    shortname = "tc",
    namespaced,
    doc = "A fleet of xdpturn TURN relays managed by the xdpturn operator.",
    status = "TurnClusterStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Relays","type":"integer","jsonPath":".status.readyRelays"}"#,
    printcolumn = r#"{"name":"Endpoints","type":"string","jsonPath":".status.endpoints"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TurnClusterSpec {
    /// The TURN realm used for long-term credentials (RFC 8489 REALM attribute), e.g. your
    /// domain name.
    #[schemars(length(min = 1, max = 127))]
    pub realm: String,

    /// The sockets each relay listens on. Defaults to UDP and TCP on port 3478. A relay serves
    /// UDP and TCP together on each UDP/TCP port (a UDP-only listener still opens TCP on its
    /// port inside the relay; only the listed protocols are exposed and advertised).
    #[serde(default = "default_listeners")]
    #[schemars(length(min = 1, max = 8))]
    pub listeners: Vec<Listener>,

    /// Where credentials come from. At least one of `sharedSecrets`, `staticUsers` and
    /// `userDatabase` is needed.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub auth: Auth,

    /// The UDP ports relayed addresses are allocated from. With host networking these ports
    /// are opened on the node: allow them in the node's firewall.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub relay_ports: RelayPortRange,

    /// How clients reach the relays: the addresses advertised in `status.endpoints` and
    /// `status.iceServers`.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub public_address: PublicAddress,

    /// Which peers the relays may send to, on top of the relay's built-in denials (loopback,
    /// private, link-local, CGNAT, multicast, ...).
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub peers: PeerPolicy,

    /// Allocation and bandwidth limits, per relay.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub quotas: Quotas,

    /// The XDP fast path: ChannelData, Send and Data indications and same-relay calls
    /// forwarded in the kernel. Needs `placement.mode: DaemonSet` (host networking), Linux 5.8
    /// or later, and gives the relay the NET_ADMIN, BPF and PERFMON capabilities, as root
    /// (seccomp unconfined: older runtimes' default profiles refuse bpf() without
    /// CAP_SYS_ADMIN). The relay attaches at start, so changing these settings replaces the
    /// relays; where the program cannot load, they serve everything in userspace and the
    /// status says so (Degraded, reason XdpUnavailable).
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub xdp: Xdp,

    /// Where relays run.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub placement: Placement,

    /// Compute resources of each relay container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,

    /// The relays' Prometheus endpoint.
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub metrics: Metrics,

    /// How relays stop: they drain on SIGTERM (no new allocations, existing ones served).
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(transform = no_default)]
    pub drain: Drain,

    /// The relay container image. Unset uses the image the operator was started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: Option<String>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Drops the `default` schemars puts on struct-valued fields: the API server would otherwise
/// write the whole default object into every TurnCluster. Leaf defaults stay.
fn no_default(schema: &mut schemars::Schema) {
    if let Some(obj) = schema.as_object_mut() {
        obj.remove("default");
    }
}

#[cfg(test)]
mod tests;
