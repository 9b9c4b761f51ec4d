//! Public endpoints: where clients reach the relays, per `spec.publicAddress.policy`, and the
//! `iceServers` entries built from them and the listeners.

use std::net::IpAddr;

use api::{IceServer, ListenerProtocol, PublicAddressPolicy, TurnClusterSpec, conditions};
use k8s_openapi::api::core::v1::Service;

use crate::cluster::{ClusterFacts, relay_nodes};

/// What discovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The public addresses (IPs or DNS names), in a stable order.
    pub addresses: Vec<String>,
    /// Why there are none, when there are none.
    pub missing: Option<Missing>,
}

/// Why no public address is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The condition reason.
    pub reason: &'static str,
    /// A message for the user.
    pub message: String,
    /// Whether it needs the user (Degraded) or only time (Progressing).
    pub needs_user: bool,
}

/// Finds the public addresses. `service` is the relay Service as the API server has it (its
/// load balancer ingress), if it exists yet.
pub fn discover(
    spec: &TurnClusterSpec,
    facts: &ClusterFacts,
    service: Option<&Service>,
) -> Discovery {
    match spec.public_address.policy {
        PublicAddressPolicy::Explicit => Discovery {
            addresses: spec.public_address.addresses.clone(),
            missing: None,
        },
        PublicAddressPolicy::NodeExternalIP => {
            let nodes = relay_nodes(spec, facts);
            let mut addresses: Vec<IpAddr> = nodes
                .iter()
                .flat_map(|n| n.external_ips.iter().copied())
                .collect();
            addresses.sort();
            addresses.dedup();
            let missing = if nodes.is_empty() {
                Some(Missing {
                    reason: conditions::NO_ENDPOINTS,
                    message: "no ready node matches spec.placement (nodeSelector, tolerations), \
                              so no node ExternalIP can be advertised"
                        .to_owned(),
                    needs_user: true,
                })
            } else if addresses.is_empty() {
                Some(Missing {
                    reason: conditions::NO_ENDPOINTS,
                    message: format!(
                        "none of the {} nodes that run relays has an ExternalIP address; set \
                         spec.publicAddress.policy to Explicit (with addresses) or LoadBalancer",
                        nodes.len()
                    ),
                    needs_user: true,
                })
            } else {
                None
            };
            Discovery {
                addresses: addresses.iter().map(IpAddr::to_string).collect(),
                missing,
            }
        }
        PublicAddressPolicy::LoadBalancer => {
            let addresses: Vec<String> = service
                .and_then(|s| s.status.as_ref())
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                .collect();
            let missing = addresses.is_empty().then(|| Missing {
                reason: conditions::WAITING_FOR_LOAD_BALANCER,
                message: "waiting for the load balancer of the relay Service to get an address"
                    .to_owned(),
                needs_user: false,
            });
            Discovery { addresses, missing }
        }
    }
}

/// The URLs of one endpoint, one per listener, in spec order: `turn:HOST:PORT?transport=udp`,
/// `turn:HOST:PORT?transport=tcp`, `turns:HOST:PORT?transport=tcp` (RFC 7065).
pub fn urls(spec: &TurnClusterSpec, host: &str) -> Vec<String> {
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_owned(),
    };
    spec.listeners
        .iter()
        .map(|l| {
            let (scheme, transport) = match l.protocol {
                ListenerProtocol::Udp => ("turn", "udp"),
                ListenerProtocol::Tcp => ("turn", "tcp"),
                ListenerProtocol::Tls => ("turns", "tcp"),
            };
            format!("{scheme}:{host}:{}?transport={transport}", l.port())
        })
        .collect()
}

/// One `iceServers` entry per endpoint, without credentials.
pub fn ice_servers(spec: &TurnClusterSpec, endpoints: &[String]) -> Vec<IceServer> {
    endpoints
        .iter()
        .map(|host| IceServer {
            urls: urls(spec, host),
            username: None,
            credential: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::cluster::NodeInfo;

    fn spec(json: serde_json::Value) -> TurnClusterSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn explicit_needs_nothing_from_the_cluster() {
        let s = spec(
            serde_json::json!({"realm": "r", "publicAddress": {"policy": "Explicit",
            "addresses": ["turn.example.org", "2001:db8::7"]},
            "listeners": [{"protocol": "UDP"}, {"protocol": "TCP", "port": 443},
                {"protocol": "TLS", "certificateSecret": "tls"}]}),
        );
        let d = discover(&s, &ClusterFacts::default(), None);
        assert_eq!(d.addresses, ["turn.example.org", "2001:db8::7"]);
        assert_eq!(d.missing, None);
        let ice = ice_servers(&s, &d.addresses);
        assert_eq!(
            ice[0].urls,
            [
                "turn:turn.example.org:3478?transport=udp",
                "turn:turn.example.org:443?transport=tcp",
                "turns:turn.example.org:5349?transport=tcp"
            ]
        );
        assert_eq!(ice[1].urls[0], "turn:[2001:db8::7]:3478?transport=udp");
        assert!(ice[0].username.is_none() && ice[0].credential.is_none());
    }

    #[test]
    fn node_external_ips_of_relay_nodes() {
        let s = spec(serde_json::json!({"realm": "r"}));
        let d = discover(&s, &ClusterFacts::default(), None);
        assert!(d.addresses.is_empty());
        assert!(d.missing.as_ref().unwrap().needs_user);
        let n = |name: &str, ext: Option<&str>| NodeInfo {
            name: name.into(),
            ready: true,
            external_ips: ext.map(|e| e.parse().unwrap()).into_iter().collect(),
            ..NodeInfo::default()
        };
        let facts = ClusterFacts {
            nodes: vec![n("a", None)],
            ..ClusterFacts::default()
        };
        let d = discover(&s, &facts, None);
        assert!(d.missing.unwrap().message.contains("none of the 1 nodes"));
        let facts = ClusterFacts {
            nodes: vec![
                n("a", Some("203.0.113.9")),
                n("b", Some("203.0.113.1")),
                n("c", None),
            ],
            ..ClusterFacts::default()
        };
        let d = discover(&s, &facts, None);
        assert_eq!(d.addresses, ["203.0.113.1", "203.0.113.9"]);
        assert_eq!(d.missing, None);
    }

    #[test]
    fn load_balancer_ingress() {
        let s = spec(
            serde_json::json!({"realm": "r", "publicAddress": {"policy": "LoadBalancer"},
            "placement": {"mode": "Deployment"}}),
        );
        let d = discover(&s, &ClusterFacts::default(), None);
        assert_eq!(
            d.missing.as_ref().unwrap().reason,
            conditions::WAITING_FOR_LOAD_BALANCER
        );
        assert!(!d.missing.unwrap().needs_user);
        let svc: Service = serde_json::from_value(serde_json::json!({
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.4"},
                {"hostname": "lb.example.net"}]}}}))
        .unwrap();
        let d = discover(&s, &ClusterFacts::default(), Some(&svc));
        assert_eq!(d.addresses, ["198.51.100.4", "lb.example.net"]);
    }
}
