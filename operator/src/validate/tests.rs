//! Tests of validate: each rule, from YAML-like JSON specs.

#![allow(clippy::unwrap_used)]

use super::*;

fn tc(name: &str, spec: serde_json::Value) -> TurnCluster {
    TurnCluster::new(name, serde_json::from_value(spec).unwrap())
}

fn paths(r: Result<(), Vec<Problem>>) -> Vec<String> {
    r.err()
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.path)
        .collect()
}

fn minimal() -> serde_json::Value {
    serde_json::json!({"realm": "example.org",
        "auth": {"sharedSecrets": [{"name": "turn-auth", "key": "secret"}]}})
}

#[test]
fn minimal_spec_is_valid() {
    assert_eq!(validate(&tc("turn", minimal())), Ok(()));
}

#[test]
fn names_must_fit_service_names() {
    assert_eq!(paths(validate(&tc("1turn", minimal()))), ["metadata.name"]);
    assert_eq!(
        paths(validate(&tc(&"a".repeat(56), minimal()))),
        ["metadata.name"]
    );
    assert_eq!(validate(&tc(&"a".repeat(55), minimal())), Ok(()));
    assert_eq!(paths(validate(&tc("a.b", minimal()))), ["metadata.name"]);
}

#[test]
fn empty_realm_is_rejected() {
    let mut s = minimal();
    s["realm"] = "  ".into();
    assert_eq!(
        validate(&tc("t", s)).unwrap_err(),
        [Problem::new("spec.realm", "must not be empty")]
    );
}

#[test]
fn listener_rules() {
    let mut s = minimal();
    s["listeners"] = serde_json::json!([
        {"protocol": "UDP", "port": 0},
        {"protocol": "TCP", "port": 3478, "certificateSecret": "x"},
        {"protocol": "TCP", "port": 3478},
        {"protocol": "TLS", "port": 3478},
        {"protocol": "TLS", "port": 5349, "certificateSecret": "a"},
        {"protocol": "TLS", "port": 5350, "certificateSecret": "b"},
        {"protocol": "UDP", "port": 9641},
    ]);
    assert_eq!(
        paths(validate(&tc("t", s))),
        [
            "spec.listeners[0].port",
            "spec.listeners[1].certificateSecret",
            "spec.listeners[2]",
            "spec.listeners[3].certificateSecret",
            "spec.listeners[6].port",
            "spec.listeners",
        ]
    );
}

#[test]
fn tls_port_may_not_be_a_plain_port() {
    let mut s = minimal();
    s["listeners"] = serde_json::json!([
        {"protocol": "UDP", "port": 443},
        {"protocol": "TLS", "port": 443, "certificateSecret": "a"},
    ]);
    assert_eq!(paths(validate(&tc("t", s))), ["spec.listeners[1].port"]);
}

#[test]
fn port_range_rules() {
    let mut s = minimal();
    s["relayPorts"] = serde_json::json!({"min": 3000, "max": 10000});
    assert_eq!(
        paths(validate(&tc("t", s.clone()))),
        [
            "spec.listeners[0].port",
            "spec.listeners[1].port",
            "spec.metrics.port"
        ]
    );
    s["relayPorts"] = serde_json::json!({"min": 50000, "max": 40000});
    assert_eq!(paths(validate(&tc("t", s))), ["spec.relayPorts"]);
}

#[test]
fn auth_rules() {
    let s = serde_json::json!({"realm": "r"});
    assert_eq!(paths(validate(&tc("t", s))), ["spec.auth"]);
    let s = serde_json::json!({"realm": "r", "auth": {
        "staticUsers": {"name": "u", "key": "users"},
        "credentialsApiToken": {"name": "Bad_Name", "key": "a/b"}}});
    assert_eq!(
        paths(validate(&tc("t", s))),
        [
            "spec.auth.credentialsApiToken",
            "spec.auth.credentialsApiToken.name",
            "spec.auth.credentialsApiToken.key"
        ]
    );
    let s = serde_json::json!({"realm": "r", "auth": {"sharedSecrets": [
        {"name": "a", "key": "k"}, {"name": "a", "key": "k"}]}});
    assert_eq!(paths(validate(&tc("t", s))), ["spec.auth.sharedSecrets[1]"]);
    // A user database is a credential source on its own; its reference is checked as the others.
    let s = serde_json::json!({"realm": "r", "auth": {"userDatabase": {"type": "redis",
        "secretKeyRef": {"name": "turn-db", "key": "conn"}}}});
    assert_eq!(validate(&tc("t", s)), Ok(()));
    let s = serde_json::json!({"realm": "r", "auth": {"userDatabase": {"type": "mysql",
        "secretKeyRef": {"name": "turn-db", "key": ".."}}}});
    assert_eq!(
        paths(validate(&tc("t", s))),
        ["spec.auth.userDatabase.secretKeyRef.key"]
    );
}

#[test]
fn public_address_rules() {
    let mut s = minimal();
    s["publicAddress"] = serde_json::json!({"policy": "Explicit"});
    assert_eq!(
        paths(validate(&tc("t", s.clone()))),
        ["spec.publicAddress.addresses"]
    );
    s["publicAddress"] = serde_json::json!({"policy": "Explicit",
        "addresses": ["203.0.113.7", "2001:db8::1", "turn.example.org", "-bad-", "1.2.3"]});
    assert_eq!(
        paths(validate(&tc("t", s.clone()))),
        [
            "spec.publicAddress.addresses[3]",
            "spec.publicAddress.addresses[4]"
        ]
    );
    s["publicAddress"] = serde_json::json!({"policy": "LoadBalancer", "addresses": ["a.b"]});
    assert_eq!(
        paths(validate(&tc("t", s.clone()))),
        ["spec.publicAddress.addresses"]
    );
    s["publicAddress"] = serde_json::json!({});
    s["placement"] = serde_json::json!({"mode": "Deployment"});
    assert_eq!(paths(validate(&tc("t", s))), ["spec.publicAddress.policy"]);
}

#[test]
fn peer_and_xdp_and_placement_rules() {
    let mut s = minimal();
    s["peers"] = serde_json::json!({"allow": ["10.0.0.0/8", "10.1.2.3"],
        "deny": ["10.0.0.0/33", "nope"], "podCIDRs": ["fd00::/8"]});
    s["xdp"] = serde_json::json!({"enabled": true, "interfaces": ["eth0", "eth0", "a/b"]});
    s["placement"] = serde_json::json!({"mode": "DaemonSet", "replicas": 3,
        "tolerations": [{"operator": "Exists", "value": "x"}, {"effect": "Sometimes", "key": "k"}],
        "nodeSelector": {"ok/key": "v", "bad key": "v"}});
    assert_eq!(
        paths(validate(&tc("t", s))),
        [
            "spec.peers.deny[0]",
            "spec.peers.deny[1]",
            "spec.xdp.interfaces[1]",
            "spec.xdp.interfaces[2]",
            "spec.placement.replicas",
            "spec.placement.tolerations[0].value",
            "spec.placement.tolerations[1].effect",
            "spec.placement.nodeSelector[bad key]",
        ]
    );
}

#[test]
fn xdp_needs_a_daemonset_and_resources_need_quantities() {
    let mut s = minimal();
    s["publicAddress"] = serde_json::json!({"policy": "LoadBalancer"});
    s["placement"] = serde_json::json!({"mode": "Deployment", "maxUnavailable": 2});
    s["xdp"] = serde_json::json!({"enabled": true, "interfaces": ["eth0"]});
    s["resources"] = serde_json::json!({"requests": {"cpu": "lots", "memory": "1Gi"}});
    assert_eq!(
        paths(validate(&tc("t", s))),
        [
            "spec.xdp.enabled",
            "spec.placement.maxUnavailable",
            "spec.resources.requests.cpu"
        ]
    );
}

#[test]
fn xdp_needs_interfaces() {
    let mut s = minimal();
    s["xdp"] = serde_json::json!({"enabled": true, "maxChannels": 0});
    assert_eq!(
        paths(validate(&tc("t", s))),
        ["spec.xdp.interfaces", "spec.xdp.maxChannels"]
    );
}

#[test]
fn decode_names_the_malformed_field() {
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "xdpturn.io/v1alpha1", "kind": "TurnCluster",
        "metadata": {"name": "t", "namespace": "n"},
        "spec": {"realm": "r", "listeners": [{"protocol": "UDP"}, {"protocol": "QUIC"}]}
    }))
    .unwrap();
    let problems = decode(&obj).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].path, "spec.listeners[1].protocol");
    assert!(problems[0].message.contains("QUIC"), "{}", problems[0]);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "xdpturn.io/v1alpha1", "kind": "TurnCluster",
        "metadata": {"name": "t", "namespace": "n"}
    }))
    .unwrap();
    let problems = decode(&obj).unwrap_err();
    assert_eq!(problems[0].path, "spec", "{problems:?}");
}

#[test]
fn summary_joins_every_problem() {
    let p = [Problem::new("a", "x"), Problem::new("b", "y")];
    assert_eq!(summary(&p), "a: x; b: y");
}
