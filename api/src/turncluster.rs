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

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
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

    /// Where credentials come from. At least one of `sharedSecrets` and `staticUsers` is
    /// needed.
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

/// One listening socket of a relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The transport: UDP, TCP, or TLS (TURN over TLS on TCP, `turns:` URLs).
    pub protocol: ListenerProtocol,

    /// The port, 1-65535. Defaults to 3478 for UDP and TCP and 5349 for TLS. Ports below 1024
    /// make the relay run as root with the NET_BIND_SERVICE capability (Kubernetes gives added
    /// capabilities to root processes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// TLS only: the name of a `kubernetes.io/tls` Secret (keys `tls.crt` and `tls.key`) in the
    /// TurnCluster's namespace. The relay reloads it when it changes. All TLS listeners share
    /// one certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = SUBDOMAIN))]
    pub certificate_secret: Option<String>,
}

impl Listener {
    /// The port, with the protocol's default filled in.
    pub fn port(&self) -> i32 {
        self.port.unwrap_or(match self.protocol {
            ListenerProtocol::Udp | ListenerProtocol::Tcp => DEFAULT_TURN_PORT,
            ListenerProtocol::Tls => DEFAULT_TURNS_PORT,
        })
    }
}

/// The transport of a [`Listener`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ListenerProtocol {
    /// STUN/TURN over UDP.
    #[serde(rename = "UDP")]
    Udp,
    /// STUN/TURN over TCP (RFC 6062 TCP allocations included).
    #[serde(rename = "TCP")]
    Tcp,
    /// STUN/TURN over TLS (RFC 8656 §3.1), on TCP.
    #[serde(rename = "TLS")]
    Tls,
}

fn default_listeners() -> Vec<Listener> {
    vec![
        Listener {
            protocol: ListenerProtocol::Udp,
            port: None,
            certificate_secret: None,
        },
        Listener {
            protocol: ListenerProtocol::Tcp,
            port: None,
            certificate_secret: None,
        },
    ]
}

impl Default for Listener {
    fn default() -> Self {
        Self {
            protocol: ListenerProtocol::Udp,
            port: None,
            certificate_secret: None,
        }
    }
}

/// A key of a Secret in the TurnCluster's namespace. The relay mounts the whole Secret, so
/// another key of an already-referenced Secret can be added (e.g. for rotation) without
/// restarting relays.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), regex(pattern = SUBDOMAIN))]
    pub name: String,
    /// The key in the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_KEY))]
    pub key: String,
}

/// Credential sources. The operator never reads these Secrets: the relays mount them and reload
/// them when they change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// Shared secrets for time-limited REST credentials (coturn's `use-auth-secret`): username
    /// `<unix-expiry>[:<user>]`, password `base64(HMAC-SHA1(secret, username))`. Any of them
    /// validates a credential; the first is the one the credentials API issues with. To rotate,
    /// put the new secret first, keep the old one until the credentials it signed expire, then
    /// remove it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub shared_secrets: Vec<SecretKeyRef>,

    /// A users file: one `name:password` or `name:0x<md5 key>` per line, `#` starts a comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_users: Option<SecretKeyRef>,

    /// A bearer token that turns on the relay's credentials API (`/api/v1/credentials` on the
    /// metrics port), for application backends. Needs `sharedSecrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_api_token: Option<SecretKeyRef>,
}

/// The relay port range, inclusive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayPortRange {
    /// The lowest relay port.
    #[serde(default = "default_relay_min")]
    #[schemars(range(min = 1024, max = 65535))]
    pub min: i32,
    /// The highest relay port; at least `min`.
    #[serde(default = "default_relay_max")]
    #[schemars(range(min = 1024, max = 65535))]
    pub max: i32,
}

fn default_relay_min() -> i32 {
    DEFAULT_RELAY_PORT_MIN
}

fn default_relay_max() -> i32 {
    DEFAULT_RELAY_PORT_MAX
}

impl Default for RelayPortRange {
    fn default() -> Self {
        Self {
            min: DEFAULT_RELAY_PORT_MIN,
            max: DEFAULT_RELAY_PORT_MAX,
        }
    }
}

/// How clients reach the relays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublicAddress {
    /// Where the public addresses come from:
    /// `NodeExternalIP` (default): the ExternalIP addresses of the nodes relays run on (needs
    /// `placement.mode: DaemonSet`); each relay also advertises its node's ExternalIP in
    /// relayed addresses when the node is behind 1:1 NAT.
    /// `LoadBalancer`: the ingress of a LoadBalancer Service (UDP and TCP on one Service needs
    /// Kubernetes 1.24 or later, or the MixedProtocolLBService feature gate).
    /// `Explicit`: the `addresses` given here (DNS names or IPs), e.g. a DNS name for the nodes.
    #[serde(default)]
    pub policy: PublicAddressPolicy,

    /// `Explicit` only: the addresses clients use, DNS names or IPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253), regex(pattern = HOST)))]
    pub addresses: Vec<String>,

    /// Annotations for the relay Service, e.g. a cloud's load balancer settings.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_annotations: BTreeMap<String, String>,
}

/// The value of [`PublicAddress::policy`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PublicAddressPolicy {
    /// The ExternalIP addresses of the nodes that run relays.
    #[default]
    NodeExternalIP,
    /// The ingress addresses of a LoadBalancer Service.
    LoadBalancer,
    /// The addresses in the spec.
    Explicit,
}

/// Peer restrictions on top of the relay's built-in denials. Between an allow and a deny
/// entry that both match, the longer prefix wins (an allow on a tie); an allow beats the
/// built-in denials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerPolicy {
    /// Networks peers may be in even where a built-in rule denies them (CIDRs or addresses),
    /// e.g. a media server's address inside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 43), regex(pattern = CIDR)))]
    pub allow: Vec<String>,

    /// Networks peers may not be in, in addition to the built-in rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 43), regex(pattern = CIDR)))]
    pub deny: Vec<String>,

    /// Deny the cluster's pod and service networks (default true), so that a TURN client can
    /// not reach pods or Services through the relay. They come from `podCIDRs` and
    /// `serviceCIDRs`, or, where those are empty, from the nodes' `spec.podCIDRs` and the
    /// `kubernetes` Service's cluster IPs.
    #[serde(default = "yes")]
    pub deny_cluster_networks: bool,

    /// The cluster's pod networks. Empty: the nodes' `spec.podCIDRs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 43), regex(pattern = CIDR)))]
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,

    /// The cluster's Service networks (the API server's `--service-cluster-ip-range`). Empty:
    /// the `kubernetes` Service's cluster IPs only, since Kubernetes 1.20 has no API that
    /// tells the whole range.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 43), regex(pattern = CIDR)))]
    #[serde(rename = "serviceCIDRs")]
    pub service_cidrs: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            deny: Vec::new(),
            deny_cluster_networks: true,
            pod_cidrs: Vec::new(),
            service_cidrs: Vec::new(),
        }
    }
}

/// Limits of each relay; 0 is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Quotas {
    /// Allocations per user.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4294967295_i64))]
    pub user_quota: i64,
    /// Allocations in total.
    #[serde(default)]
    #[schemars(range(min = 0, max = 4294967295_i64))]
    pub total_quota: i64,
    /// Bandwidth per allocation in bits per second, both directions together.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_bps: i64,
}

/// The XDP fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Xdp {
    /// Load the XDP program (default false: everything is relayed in userspace).
    #[serde(default)]
    pub enabled: bool,

    /// How to attach: `native` (in the driver, the fast one), `skb` (generic, works on every
    /// interface but gains little) or `auto` (native, generic where native fails).
    #[serde(default)]
    pub mode: XdpMode,

    /// The interfaces to attach to, where clients and peers are reached, e.g. `eth0`; needed
    /// when enabled. Every relay node needs them (use `placement.nodeSelector` for nodes that
    /// differ). Only these are redirected to; routes out of any other go through userspace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(regex(pattern = INTERFACE)))]
    pub interfaces: Vec<String>,

    /// How many channels each relay offloads to the kernel at most (default 65536); channels
    /// beyond are relayed in userspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4294967295_i64))]
    pub max_channels: Option<i64>,
}

/// The value of [`Xdp::mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver.
    Native,
    /// Generic XDP.
    Skb,
    /// Native where the driver supports it, generic elsewhere.
    #[default]
    Auto,
}

impl XdpMode {
    /// The name used in the spec and by the relay.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
            XdpMode::Auto => "auto",
        }
    }
}

/// Where relays run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// `DaemonSet` (default): one relay per eligible node, on the node's network (host
    /// networking), which is what TURN wants: relayed addresses are the node's, reachable on
    /// the relay port range. XDP needs it.
    /// `Deployment`: `replicas` relays in pod networking behind the relay Service, userspace
    /// only. Their relayed addresses are pod addresses, so peers must reach pods (e.g. media
    /// servers in the cluster, allowed in `peers.allow`).
    #[serde(default)]
    pub mode: PlacementMode,

    /// `Deployment` only: how many relays. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Node labels a node needs to run a relay.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Taints relays tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// `DaemonSet` only: how many nodes may be without a ready relay during a rollout (default
    /// 1). A relay being replaced drains first (see `drain`), so a rollout takes about
    /// (nodes / maxUnavailable) drain timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_unavailable: Option<i32>,
}

/// The value of [`Placement::mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PlacementMode {
    /// One relay per eligible node, host networking.
    #[default]
    DaemonSet,
    /// `replicas` relays behind a Service, pod networking, no XDP.
    Deployment,
}

/// A Kubernetes toleration (`core/v1` Toleration).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// The taint key; empty with operator `Exists` tolerates everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Exists` or `Equal` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(Exists|Equal)$"))]
    pub operator: Option<String>,
    /// The taint value, for `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`; empty matches all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(NoSchedule|PreferNoSchedule|NoExecute)?$"))]
    pub effect: Option<String>,
    /// For `NoExecute`: how long the relay stays after the taint appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// Container resources, as in a pod spec (`cpu`, `memory`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// Resources the scheduler reserves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, QuantitySchema>")]
    pub requests: BTreeMap<String, Quantity>,
    /// Resources the relay may not exceed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, QuantitySchema>")]
    pub limits: BTreeMap<String, Quantity>,
}

/// The schema of a Kubernetes quantity (`100m`, `1`, `256Mi`), without k8s-openapi's long
/// description.
struct QuantitySchema;

impl JsonSchema for QuantitySchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The operator checks the syntax (validate), naming the field.
        schemars::json_schema!({
            "description": "A quantity: 100m, 1, 256Mi, ...",
            "x-kubernetes-int-or-string": true,
        })
    }
}

/// The relays' metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// The port of `/metrics`, `/healthz` and `/readyz` (and the credentials API). With host
    /// networking it is opened on the node: keep it away from the internet.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Create a Prometheus Operator `ServiceMonitor` for the relays (needs its CRD).
    #[serde(default)]
    pub service_monitor: bool,
}

fn default_metrics_port() -> i32 {
    i32::from(crate::DEFAULT_METRICS_PORT)
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            port: default_metrics_port(),
            service_monitor: false,
        }
    }
}

/// How relays stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// After SIGTERM, how long a relay serves its existing allocations (no new ones) before it
    /// exits. The pod's termination grace period is set above it.
    #[serde(default = "default_drain_timeout")]
    #[schemars(range(min = 0, max = 86400))]
    pub timeout_seconds: i64,

    /// How long the preStop hook waits before the relay gets SIGTERM, so that load balancers
    /// and kube-proxy stop sending it new clients first; 0 for no hook. The hook runs `sleep`
    /// in the relay container; an image without it makes the kubelet report
    /// FailedPreStopHook and send SIGTERM at once, which still drains.
    #[serde(default = "default_prestop_delay")]
    #[schemars(range(min = 0, max = 300))]
    pub pre_stop_delay_seconds: i64,
}

fn default_drain_timeout() -> i64 {
    DEFAULT_DRAIN_TIMEOUT_SECONDS
}

fn default_prestop_delay() -> i64 {
    DEFAULT_PRESTOP_DELAY_SECONDS
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            timeout_seconds: DEFAULT_DRAIN_TIMEOUT_SECONDS,
            pre_stop_delay_seconds: DEFAULT_PRESTOP_DELAY_SECONDS,
        }
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use kube::CustomResourceExt;
    use serde_json::Value;

    fn schema() -> Value {
        let crd = TurnCluster::crd();
        let version = &crd.spec.versions[0];
        serde_json::to_value(
            version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    fn spec_props() -> Value {
        schema()["properties"]["spec"]["properties"].clone()
    }

    #[test]
    fn crd_names_group_and_version() {
        let crd = TurnCluster::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("turnclusters.xdpturn.io")
        );
        assert_eq!(crd.spec.group, "xdpturn.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "TurnCluster");
        assert_eq!(crd.spec.names.plural, "turnclusters");
        assert_eq!(crd.spec.names.singular.as_deref(), Some("turncluster"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["tc".to_owned()]));
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.served && v.storage);
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let columns: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Ready", "Relays", "Endpoints", "Reason", "Age"]);
    }

    #[test]
    fn schema_bounds_ports_and_counts() {
        let spec = spec_props();
        let port = &spec["listeners"]["items"]["properties"]["port"];
        assert_eq!(port["minimum"].as_f64(), Some(1.0), "{port}");
        assert_eq!(port["maximum"].as_f64(), Some(65535.0), "{port}");
        assert_eq!(spec["listeners"]["maxItems"], 8);
        let relay = &spec["relayPorts"]["properties"];
        assert_eq!(relay["min"]["minimum"].as_f64(), Some(1024.0));
        assert_eq!(relay["min"]["default"], DEFAULT_RELAY_PORT_MIN);
        assert_eq!(relay["max"]["default"], DEFAULT_RELAY_PORT_MAX);
        let replicas = &spec["placement"]["properties"]["replicas"];
        assert_eq!(replicas["minimum"].as_f64(), Some(0.0), "{replicas}");
        assert_eq!(spec["metrics"]["properties"]["port"]["default"], 9641);
        assert_eq!(
            spec["quotas"]["properties"]["userQuota"]["maximum"].as_f64(),
            Some(4294967295.0)
        );
    }

    #[test]
    fn schema_has_enums_and_patterns() {
        let spec = spec_props();
        let protocol = &spec["listeners"]["items"]["properties"]["protocol"];
        assert_eq!(protocol["enum"], serde_json::json!(["UDP", "TCP", "TLS"]));
        assert_eq!(
            spec["publicAddress"]["properties"]["policy"]["enum"],
            serde_json::json!(["NodeExternalIP", "LoadBalancer", "Explicit"])
        );
        assert_eq!(
            spec["xdp"]["properties"]["mode"]["enum"],
            serde_json::json!(["native", "skb", "auto"])
        );
        assert_eq!(
            spec["placement"]["properties"]["mode"]["enum"],
            serde_json::json!(["DaemonSet", "Deployment"])
        );
        let secret = &spec["auth"]["properties"]["sharedSecrets"]["items"]["properties"];
        assert_eq!(secret["name"]["pattern"], SUBDOMAIN);
        assert_eq!(secret["key"]["pattern"], SECRET_KEY);
        assert_eq!(
            spec["peers"]["properties"]["deny"]["items"]["pattern"],
            CIDR
        );
        assert!(
            spec["peers"]["properties"]["podCIDRs"].is_object(),
            "{}",
            spec["peers"]
        );
        let cpu = &spec["resources"]["properties"]["requests"]["additionalProperties"];
        assert_eq!(cpu["x-kubernetes-int-or-string"], true, "{cpu}");
    }

    #[test]
    fn schema_is_structural() {
        // Kubernetes rejects non-structural schemas: every node needs a type (or
        // x-kubernetes-int-or-string), no `$ref`/`definitions`, and `anyOf`/`oneOf` may only
        // repeat validations, never declare types except under int-or-string.
        let schema = schema();
        let text = serde_json::to_string(&schema).unwrap();
        assert!(!text.contains("$ref"), "{text}");
        assert!(!text.contains("definitions"), "{text}");
        assert!(!text.contains("$defs"), "{text}");
        fn walk(path: &str, node: &Value) {
            let Some(obj) = node.as_object() else { return };
            let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
            assert!(
                obj.contains_key("type") || int_or_string,
                "{path} has no type: {node}"
            );
            assert!(!obj.contains_key("oneOf"), "{path} has oneOf: {node}");
            assert!(!obj.contains_key("anyOf"), "{path} has anyOf: {node}");
            assert!(!obj.contains_key("const"), "{path} has const: {node}");
            if let Some(Value::Object(props)) = obj.get("properties") {
                for (k, v) in props {
                    walk(&format!("{path}.{k}"), v);
                }
            }
            if let Some(items) = obj.get("items") {
                walk(&format!("{path}[]"), items);
            }
            if let Some(extra @ Value::Object(_)) = obj.get("additionalProperties") {
                walk(&format!("{path}{{}}"), extra);
            }
        }
        walk("", &schema);
    }

    #[test]
    fn struct_fields_carry_no_whole_object_defaults() {
        let spec = spec_props();
        for field in [
            "auth",
            "relayPorts",
            "publicAddress",
            "peers",
            "xdp",
            "placement",
        ] {
            assert!(
                spec[field].get("default").is_none(),
                "{field}: {}",
                spec[field]
            );
        }
    }

    #[test]
    fn spec_defaults() {
        let spec: TurnClusterSpec = serde_json::from_str(r#"{"realm":"example.org"}"#).unwrap();
        assert_eq!(spec.listeners, default_listeners());
        assert_eq!(
            spec.listeners
                .iter()
                .map(Listener::port)
                .collect::<Vec<_>>(),
            [3478, 3478]
        );
        assert_eq!(spec.placement.mode, PlacementMode::DaemonSet);
        assert_eq!(
            spec.public_address.policy,
            PublicAddressPolicy::NodeExternalIP
        );
        assert!(spec.peers.deny_cluster_networks);
        assert_eq!(spec.relay_ports, RelayPortRange::default());
        assert_eq!(spec.metrics.port, 9641);
        assert_eq!(spec.drain.timeout_seconds, 300);
        assert!(!spec.xdp.enabled);
        // Serializing a defaulted spec writes nothing but what was given.
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"realm": "example.org", "listeners": [
                {"protocol": "UDP"}, {"protocol": "TCP"}]})
        );
        let spec: TurnClusterSpec = serde_json::from_str(
            r#"{"realm":"r","listeners":[{"protocol":"TLS","certificateSecret":"tls"}]}"#,
        )
        .unwrap();
        assert_eq!(spec.listeners[0].port(), DEFAULT_TURNS_PORT);
    }

    #[test]
    fn full_spec_round_trips() {
        let json = serde_json::json!({
            "realm": "example.org",
            "listeners": [{"protocol": "UDP", "port": 3478}, {"protocol": "TLS", "port": 443,
                "certificateSecret": "turn-tls"}],
            "auth": {"sharedSecrets": [{"name": "a", "key": "k"}],
                "staticUsers": {"name": "u", "key": "users"},
                "credentialsApiToken": {"name": "t", "key": "token"}},
            "relayPorts": {"min": 40000, "max": 40100},
            "publicAddress": {"policy": "Explicit", "addresses": ["turn.example.org"]},
            "peers": {"allow": ["10.1.2.3"], "deny": ["203.0.113.0/24"],
                "denyClusterNetworks": false, "podCIDRs": ["10.244.0.0/16"],
                "serviceCIDRs": ["10.96.0.0/12"]},
            "quotas": {"userQuota": 10, "totalQuota": 1000, "maxBps": 3000000},
            "xdp": {"enabled": true, "mode": "native", "interfaces": ["eth0"],
                "maxChannels": 100000},
            "placement": {"mode": "DaemonSet", "nodeSelector": {"turn": "yes"},
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "turn",
                    "effect": "NoSchedule"}], "maxUnavailable": 2},
            "resources": {"requests": {"cpu": "500m", "memory": 1}, "limits": {"memory": "1Gi"}},
            "metrics": {"port": 9100, "serviceMonitor": true},
            "drain": {"timeoutSeconds": 60, "preStopDelaySeconds": 0},
            "image": "xdpturn/xdpturn-relay:0.1.0"
        });
        let spec: TurnClusterSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(spec.placement.tolerations.len(), 1);
        assert_eq!(spec.resources.as_ref().unwrap().requests["memory"].0, "1");
        let back = serde_json::to_value(&spec).unwrap();
        let mut expected = json;
        expected["resources"]["requests"]["memory"] = "1".into();
        assert_eq!(back, expected);
    }

    #[test]
    fn status_round_trips_in_camel_case() {
        let status = TurnClusterStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: "RelaysReady".into(),
                message: "2/2 relays ready".into(),
                last_transition_time: "2026-01-01T00:00:00Z".into(),
                observed_generation: Some(3),
            }],
            observed_generation: Some(3),
            ready_relays: Some(2),
            desired_relays: Some(2),
            endpoints: vec!["203.0.113.1".into()],
            ice_servers: vec![IceServer {
                urls: vec!["turn:203.0.113.1:3478?transport=udp".into()],
                username: None,
                credential: None,
            }],
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["conditions"][0]["type"], "Ready");
        assert_eq!(
            json["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(json["readyRelays"], 2);
        assert_eq!(json["endpoints"][0], "203.0.113.1");
        assert_eq!(
            json["iceServers"][0]["urls"][0],
            "turn:203.0.113.1:3478?transport=udp"
        );
        let back: TurnClusterStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
        assert_eq!(back.condition("Ready").unwrap().reason, "RelaysReady");
    }
}
