//! The spec's parts about what the relays serve and to whom: listeners, authentication, the
//! relay port range, the public address, the peer policy and quotas.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    CIDR, DEFAULT_RELAY_PORT_MAX, DEFAULT_RELAY_PORT_MIN, DEFAULT_TURN_PORT, DEFAULT_TURNS_PORT,
    HOST, SECRET_KEY, SUBDOMAIN,
};

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

pub(super) fn default_listeners() -> Vec<Listener> {
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
/// them when they change (the user database's connection string, which the relays read at
/// start, excepted: see [`UserDatabase::secret_key_ref`]).
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

    /// coturn's user database on a server, as coturn's `turnadmin` writes it: the realm's
    /// long-term users, shared secrets, options and peer ranges, read by every relay and
    /// followed while it runs (see the README). Enough on its own, or together with
    /// `sharedSecrets` and `staticUsers`. coturn's SQLite file is not offered here (a file in
    /// a pod is not a shared database): put it on PostgreSQL, MySQL/MariaDB or Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_database: Option<UserDatabase>,
}

/// A user database the relays read: its kind and its connection string, from a Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDatabase {
    /// The database: `postgresql` (coturn's `--psql-userdb`), `mysql` (MySQL or MariaDB,
    /// `--mysql-userdb`) or `redis` (`--redis-userdb`).
    #[serde(rename = "type")]
    pub type_: UserDatabaseType,

    /// The Secret key holding the connection string, in coturn's form for that database (e.g.
    /// `host=db dbname=coturn user=turn password=... port=5432`, or a URL): it holds the
    /// password, so it lives only in the Secret. The relays get it as an environment variable
    /// from the Secret (the operator never reads it) when they start: a missing Secret or key
    /// keeps them from starting (the pods' events say which), and a changed value is used by
    /// relays started after the change. To change it without restarting relays by hand, put
    /// the new string under another key or in another Secret and point this at it: the relays
    /// are replaced, each new one ready before the old one drains.
    pub secret_key_ref: SecretKeyRef,
}

/// The value of [`UserDatabase::type_`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserDatabaseType {
    /// PostgreSQL.
    Postgresql,
    /// MySQL or MariaDB.
    Mysql,
    /// Redis.
    Redis,
}

impl UserDatabaseType {
    /// The name used in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            UserDatabaseType::Postgresql => "postgresql",
            UserDatabaseType::Mysql => "mysql",
            UserDatabaseType::Redis => "redis",
        }
    }

    /// The relay's environment variable for a connection string to this database (that of
    /// its [`flag`](Self::flag)).
    pub fn env_var(self) -> &'static str {
        match self {
            UserDatabaseType::Postgresql => "XDPTURN_PSQL_USERDB",
            UserDatabaseType::Mysql => "XDPTURN_MYSQL_USERDB",
            UserDatabaseType::Redis => "XDPTURN_REDIS_USERDB",
        }
    }

    /// The relay's flag for it, without the dashes.
    pub fn flag(self) -> &'static str {
        match self {
            UserDatabaseType::Postgresql => "psql-userdb",
            UserDatabaseType::Mysql => "mysql-userdb",
            UserDatabaseType::Redis => "redis-userdb",
        }
    }
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
