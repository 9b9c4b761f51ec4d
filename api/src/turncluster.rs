//! The `TurnCluster` custom resource (group `xdpturn.io`, version `v1alpha1`, namespaced).
//!
//! The spec says what a user wants; the status says what is. The spec is deliberately small for
//! now (realm, listeners, replicas, image); later issues add auth secret references, relay port
//! range, public address and peer policy, quotas, XDP mode and placement.
//!
//! The CRD YAML in `crds/` is generated from these types by `cargo xtask crdgen`; never edit it
//! by hand.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The TURN/STUN port used when a listener does not name one (RFC 8656).
pub const DEFAULT_TURN_PORT: i32 = 3478;

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
    printcolumn = r#"{"name":"Endpoints","type":"string","jsonPath":".status.iceServers[*].urls[*]"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TurnClusterSpec {
    /// The TURN realm used for long-term credentials (RFC 8489 REALM attribute).
    pub realm: String,

    /// The sockets each relay listens on. Defaults to UDP and TCP on port 3478.
    #[serde(default = "default_listeners")]
    pub listeners: Vec<Listener>,

    /// How many relays to run. Unset lets the operator choose (one per eligible node when
    /// running with host networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// The relay container image. Unset uses the image matching the operator's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One listening socket of a relay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// The transport protocol.
    pub protocol: ListenerProtocol,

    /// The port, 1-65535. Defaults to 3478.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
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
}

fn default_port() -> i32 {
    DEFAULT_TURN_PORT
}

fn default_listeners() -> Vec<Listener> {
    vec![
        Listener {
            protocol: ListenerProtocol::Udp,
            port: DEFAULT_TURN_PORT,
        },
        Listener {
            protocol: ListenerProtocol::Tcp,
            port: DEFAULT_TURN_PORT,
        },
    ]
}

impl Default for Listener {
    fn default() -> Self {
        Self {
            protocol: ListenerProtocol::Udp,
            port: DEFAULT_TURN_PORT,
        }
    }
}

/// What the operator observed, written by the operator only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TurnClusterStatus {
    /// Ready, Progressing and Degraded conditions, each with a machine-readable reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// How many relays are ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_relays: Option<i32>,

    /// The entries WebRTC clients should put in their `RTCConfiguration.iceServers`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ice_servers: Vec<IceServer>,
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

    /// A human-readable explanation of the last transition.
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
        assert_eq!(columns, ["Ready", "Endpoints", "Age"]);
    }

    #[test]
    fn schema_bounds_listener_port() {
        let schema = schema();
        let port =
            &schema["properties"]["spec"]["properties"]["listeners"]["items"]["properties"]["port"];
        assert_eq!(port["minimum"].as_f64(), Some(1.0), "{port}");
        assert_eq!(port["maximum"].as_f64(), Some(65535.0), "{port}");
        assert_eq!(port["default"], DEFAULT_TURN_PORT, "{port}");
        let replicas = &schema["properties"]["spec"]["properties"]["replicas"];
        assert_eq!(replicas["minimum"].as_f64(), Some(0.0), "{replicas}");
    }

    #[test]
    fn schema_is_structural_enough() {
        // Kubernetes rejects non-structural schemas: every node needs a type, and `$ref`,
        // `definitions` and `anyOf`-with-types are not allowed.
        let text = serde_json::to_string(&schema()).unwrap();
        assert!(!text.contains("$ref"), "{text}");
        assert!(!text.contains("definitions"), "{text}");
        assert!(!text.contains("$defs"), "{text}");
    }

    #[test]
    fn spec_defaults_listeners() {
        let spec: TurnClusterSpec = serde_json::from_str(r#"{"realm":"example.org"}"#).unwrap();
        assert_eq!(spec.listeners, default_listeners());
        assert_eq!(spec.replicas, None);
        let spec: TurnClusterSpec =
            serde_json::from_str(r#"{"realm":"r","listeners":[{"protocol":"TCP"}]}"#).unwrap();
        assert_eq!(
            spec.listeners,
            [Listener {
                protocol: ListenerProtocol::Tcp,
                port: 3478
            }]
        );
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
        assert_eq!(
            json["iceServers"][0]["urls"][0],
            "turn:203.0.113.1:3478?transport=udp"
        );
        let back: TurnClusterStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, status);
    }
}
