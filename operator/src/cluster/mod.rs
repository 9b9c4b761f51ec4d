//! What the operator knows about the cluster, reduced to what build and status need: the nodes
//! relays may run on (their addresses, pod networks, readiness) and the `kubernetes` Service's
//! cluster IPs. Pure functions over plain data, filled from a Node reflector; [`watch`] holds
//! the I/O that fills them (the node watch, the `kubernetes` Service).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use api::{PlacementMode, Toleration, TurnClusterSpec, parse_cidr};
use k8s_openapi::api::core::v1::Node;

pub mod watch;

pub use watch::{Gatherer, node_changes};

/// One node, as far as relays are concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its taints.
    pub taints: Vec<Taint>,
    /// Whether its Ready condition is True.
    pub ready: bool,
    /// Its InternalIP addresses.
    pub internal_ips: Vec<IpAddr>,
    /// Its ExternalIP addresses.
    pub external_ips: Vec<IpAddr>,
    /// `spec.podCIDRs` (or the older `spec.podCIDR`).
    pub pod_cidrs: Vec<String>,
}

/// A node taint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Taint {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: String,
}

impl NodeInfo {
    /// Reduces a Node object.
    pub fn from_node(node: &Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        let taints = spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .map(|t| Taint {
                key: t.key,
                value: t.value.unwrap_or_default(),
                effect: t.effect,
            })
            .collect();
        let mut pod_cidrs = spec.pod_cidrs.unwrap_or_default();
        if pod_cidrs.is_empty()
            && let Some(c) = spec.pod_cidr
        {
            pod_cidrs.push(c);
        }
        let status = node.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let mut internal_ips = Vec::new();
        let mut external_ips = Vec::new();
        for a in status.addresses.unwrap_or_default() {
            let Ok(ip) = a.address.parse::<IpAddr>() else {
                continue;
            };
            match a.type_.as_str() {
                "InternalIP" => internal_ips.push(ip),
                "ExternalIP" => external_ips.push(ip),
                _ => {}
            }
        }
        Self {
            name,
            labels,
            taints,
            ready,
            internal_ips,
            external_ips,
            pod_cidrs,
        }
    }
}

/// The cluster facts a reconcile reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterFacts {
    /// Every node.
    pub nodes: Vec<NodeInfo>,
    /// The cluster IPs of the `default/kubernetes` Service (the API server).
    pub kubernetes_service_ips: Vec<IpAddr>,
}

/// Taints a DaemonSet's pods tolerate without being told (the DaemonSet controller adds these
/// tolerations; network-unavailable because relays use host networking).
const DAEMONSET_TOLERATED: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/network-unavailable",
];

/// Whether a toleration matches a taint, with Kubernetes' rules.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_matches = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    if !effect_matches {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => key == taint.key && t.value.as_deref().unwrap_or_default() == taint.value,
    }
}

/// Whether a DaemonSet relay with this spec would be scheduled on the node: its labels match the
/// node selector and every NoSchedule/NoExecute taint is tolerated.
pub fn runs_relay(spec: &TurnClusterSpec, node: &NodeInfo) -> bool {
    let selected = spec
        .placement
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    selected
        && node.taints.iter().all(|taint| {
            taint.effect == "PreferNoSchedule"
                || (spec.placement.mode == PlacementMode::DaemonSet
                    && DAEMONSET_TOLERATED.contains(&taint.key.as_str()))
                || spec
                    .placement
                    .tolerations
                    .iter()
                    .any(|t| tolerates(t, taint))
        })
}

/// The nodes relays run on, ready ones only, sorted by name.
pub fn relay_nodes<'a>(spec: &TurnClusterSpec, facts: &'a ClusterFacts) -> Vec<&'a NodeInfo> {
    let mut nodes: Vec<_> = facts
        .nodes
        .iter()
        .filter(|n| n.ready && runs_relay(spec, n))
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    nodes
}

/// The relay's `external-ips` for host-networked relays behind 1:1 NAT: `PUBLIC/PRIVATE` for
/// every relay node whose ExternalIP differs from its InternalIP of the same family. Each relay
/// only has its own node's private address, so one list serves the whole DaemonSet.
pub fn external_ip_mappings(spec: &TurnClusterSpec, facts: &ClusterFacts) -> Vec<String> {
    let mut out = BTreeSet::new();
    for node in relay_nodes(spec, facts) {
        for ext in &node.external_ips {
            let same_family = node
                .internal_ips
                .iter()
                .find(|i| i.is_ipv4() == ext.is_ipv4());
            if let Some(int) = same_family
                && int != ext
            {
                out.insert(format!("{ext}/{int}"));
            }
        }
    }
    out.into_iter().collect()
}

/// The networks the relays deny because they are the cluster's own: the spec's podCIDRs and
/// serviceCIDRs, or where those are empty, every node's pod CIDRs and the `kubernetes`
/// Service's cluster IPs. Empty when `peers.denyClusterNetworks` is false.
pub fn cluster_networks(spec: &TurnClusterSpec, facts: &ClusterFacts) -> Vec<String> {
    let peers = &spec.peers;
    if !peers.deny_cluster_networks {
        return Vec::new();
    }
    let mut nets = BTreeSet::new();
    if peers.pod_cidrs.is_empty() {
        for node in &facts.nodes {
            nets.extend(node.pod_cidrs.iter().filter_map(|c| parse_cidr(c).ok()));
        }
    } else {
        nets.extend(peers.pod_cidrs.iter().filter_map(|c| parse_cidr(c).ok()));
    }
    if peers.service_cidrs.is_empty() {
        nets.extend(
            facts
                .kubernetes_service_ips
                .iter()
                .map(|ip| ipnet::IpNet::from(*ip)),
        );
    } else {
        nets.extend(
            peers
                .service_cidrs
                .iter()
                .filter_map(|c| parse_cidr(c).ok()),
        );
    }
    nets.into_iter().map(|n| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(json: serde_json::Value) -> TurnClusterSpec {
        serde_json::from_value(json).unwrap()
    }

    fn node(name: &str, internal: &str, external: Option<&str>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ready: true,
            internal_ips: vec![internal.parse().unwrap()],
            external_ips: external.map(|e| e.parse().unwrap()).into_iter().collect(),
            pod_cidrs: vec![format!("10.244.{}.0/24", name.len())],
            ..NodeInfo::default()
        }
    }

    #[test]
    fn from_node_reads_addresses_taints_and_readiness() {
        let n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "labels": {"turn": "yes"}},
            "spec": {"podCIDR": "10.244.1.0/24",
                "taints": [{"key": "dedicated", "value": "turn", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"},
                    {"type": "ExternalIP", "address": "203.0.113.5"},
                    {"type": "Hostname", "address": "n1"}]}
        }))
        .unwrap();
        let info = NodeInfo::from_node(&n);
        assert!(info.ready);
        assert_eq!(info.pod_cidrs, ["10.244.1.0/24"]);
        assert_eq!(
            info.external_ips,
            ["203.0.113.5".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(info.internal_ips, ["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(info.taints[0].key, "dedicated");
    }

    #[test]
    fn selector_and_taints_decide_where_relays_run() {
        let s = spec(serde_json::json!({"realm": "r", "placement": {
            "nodeSelector": {"turn": "yes"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "turn",
                "effect": "NoSchedule"}]}}));
        let mut n = node("a", "10.0.0.1", None);
        assert!(!runs_relay(&s, &n), "no label");
        n.labels.insert("turn".into(), "yes".into());
        assert!(runs_relay(&s, &n));
        n.taints.push(Taint {
            key: "dedicated".into(),
            value: "turn".into(),
            effect: "NoSchedule".into(),
        });
        assert!(runs_relay(&s, &n), "tolerated");
        n.taints.push(Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            value: String::new(),
            effect: "NoSchedule".into(),
        });
        assert!(runs_relay(&s, &n), "DaemonSets tolerate cordoned nodes");
        n.taints.push(Taint {
            key: "gpu".into(),
            value: String::new(),
            effect: "NoExecute".into(),
        });
        assert!(!runs_relay(&s, &n), "untolerated NoExecute");
        n.taints.last_mut().unwrap().effect = "PreferNoSchedule".into();
        assert!(runs_relay(&s, &n));
    }

    #[test]
    fn tolerations_follow_kubernetes_rules() {
        let taint = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: "NoSchedule".into(),
        };
        let t = |json| serde_json::from_value::<Toleration>(json).unwrap();
        assert!(tolerates(
            &t(serde_json::json!({"operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(
            &t(serde_json::json!({"key": "k", "operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(
            &t(serde_json::json!({"key": "k", "value": "v"})),
            &taint
        ));
        assert!(!tolerates(
            &t(serde_json::json!({"key": "k", "value": "w"})),
            &taint
        ));
        assert!(!tolerates(
            &t(serde_json::json!({"operator": "Exists", "effect": "NoExecute"})),
            &taint
        ));
    }

    #[test]
    fn external_ip_mappings_only_for_nat() {
        let s = spec(serde_json::json!({"realm": "r"}));
        let facts = ClusterFacts {
            nodes: vec![
                node("b", "10.0.0.2", Some("203.0.113.2")),
                node("a", "10.0.0.1", Some("203.0.113.1")),
                node("c", "198.51.100.3", Some("198.51.100.3")),
                node("d", "10.0.0.4", None),
                NodeInfo {
                    ready: false,
                    ..node("e", "10.0.0.5", Some("203.0.113.5"))
                },
            ],
            kubernetes_service_ips: vec![],
        };
        assert_eq!(
            external_ip_mappings(&s, &facts),
            ["203.0.113.1/10.0.0.1", "203.0.113.2/10.0.0.2"]
        );
        let names: Vec<_> = relay_nodes(&s, &facts).iter().map(|n| &n.name).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
    }

    #[test]
    fn cluster_networks_from_spec_or_discovery() {
        let facts = ClusterFacts {
            nodes: vec![node("a", "10.0.0.1", None), node("bb", "10.0.0.2", None)],
            kubernetes_service_ips: vec!["10.96.0.1".parse().unwrap()],
        };
        let s = spec(serde_json::json!({"realm": "r"}));
        assert_eq!(
            cluster_networks(&s, &facts),
            ["10.96.0.1/32", "10.244.1.0/24", "10.244.2.0/24"]
        );
        let s = spec(serde_json::json!({"realm": "r", "peers": {
            "podCIDRs": ["10.244.0.0/16"], "serviceCIDRs": ["10.96.0.0/12", "fd00:10:96::/108"]}}));
        assert_eq!(
            cluster_networks(&s, &facts),
            ["10.96.0.0/12", "10.244.0.0/16", "fd00:10:96::/108"]
        );
        let s = spec(serde_json::json!({"realm": "r", "peers": {"denyClusterNetworks": false}}));
        assert!(cluster_networks(&s, &facts).is_empty());
    }
}
