//! The spec's parts about how the relays run: the XDP fast path, placement, resources,
//! metrics and draining.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_DRAIN_TIMEOUT_SECONDS, DEFAULT_PRESTOP_DELAY_SECONDS, INTERFACE};

/// The XDP fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Xdp {
    /// Load the XDP program (default false: everything is relayed in userspace).
    #[serde(default)]
    pub enabled: bool,

    /// How to attach: `native` (XDP in the driver, the fast one), `tc` (a TC ingress program,
    /// after the stack's GRO pass: works on every interface), `skb` (generic XDP: works on
    /// every interface, and turns GRO off on it) or `auto` (on a device: native where its
    /// driver supports it, else tc, else skb; on a virtual interface such as a pod's veth:
    /// skb, measured cheaper there than tc).
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
    /// XDP in the driver: the fast one, where the NIC driver supports it.
    Native,
    /// Generic XDP, after the kernel has built the socket buffer: works on every interface,
    /// copying a packet that lacks headroom, and turns GRO off on it.
    Skb,
    /// The TC program on the interface's ingress (tcx, or a clsact qdisc on kernels before
    /// 6.6): works on every interface, on the socket buffer as it is, and chains with other
    /// programs there, so two relays can both be attached during a hand-over.
    Tc,
    /// On a device: native where its driver supports it, else TC, else generic XDP. On a
    /// virtual interface (veth, bridge): generic XDP, measured cheaper there than TC.
    #[default]
    Auto,
}

impl XdpMode {
    /// The name used in the spec and by the relay.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
            XdpMode::Tc => "tc",
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

    /// `DaemonSet` only: how many nodes' relays a revision's DaemonSet replaces at once when
    /// its own pods are replaced in place (default 1), which happens only when its template is
    /// put back after a hand edit. A change that needs new pods does not use it: a new revision's
    /// relay starts next to the old one on every node and takes its ports over, so no node is
    /// without a ready relay, and the old one drains (see `drain`).
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

/// The relay's environment variable for the traffic records' connection string
/// ([`Metrics::traffic_records`]; its flag is `--redis-statsdb`).
pub const TRAFFIC_RECORDS_ENV: &str = "XDPTURN_REDIS_STATSDB";

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

    /// coturn's traffic records (`--redis-statsdb`): every allocation's status (new,
    /// refreshed, deleted) and traffic published to Redis in coturn's keys and channels, for
    /// the dashboards and billing scripts that read coturn's. The Secret key holds the Redis
    /// connection string (coturn's `ip=... port=... dbname=... password=...` or a `redis://`
    /// URL); the relays get it as an environment variable when they start, as
    /// `auth.userDatabase`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_records: Option<super::SecretKeyRef>,
}

fn default_metrics_port() -> i32 {
    i32::from(crate::DEFAULT_METRICS_PORT)
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            port: default_metrics_port(),
            service_monitor: false,
            traffic_records: None,
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
    /// and kube-proxy stop sending it new clients first; 0 for none. The hook runs the relay
    /// binary itself (`pre-stop --delay N`: no shell or coreutils needed in the image), and is
    /// sent with a delay of 0 too, where it returns at once.
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
