//! Tests of the CRD types: the generated schema, defaults and round trips.

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
        serde_json::json!(["native", "skb", "tc", "auto"])
    );
    assert_eq!(
        spec["placement"]["properties"]["mode"]["enum"],
        serde_json::json!(["DaemonSet", "Deployment"])
    );
    let db = &spec["auth"]["properties"]["userDatabase"];
    assert_eq!(
        db["properties"]["type"]["enum"],
        serde_json::json!(["postgresql", "mysql", "redis"]),
        "{db}"
    );
    assert_eq!(db["required"], serde_json::json!(["secretKeyRef", "type"]));
    let db_ref = &db["properties"]["secretKeyRef"]["properties"];
    assert_eq!(db_ref["name"]["pattern"], SUBDOMAIN);
    assert_eq!(db_ref["key"]["pattern"], SECRET_KEY);
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
            "credentialsApiToken": {"name": "t", "key": "token"},
            "userDatabase": {"type": "postgresql",
                "secretKeyRef": {"name": "turn-db", "key": "conn"}}},
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

#[test]
fn user_database_types_name_the_relays_variables() {
    let all = [
        UserDatabaseType::Postgresql,
        UserDatabaseType::Mysql,
        UserDatabaseType::Redis,
    ];
    for t in all {
        let json = serde_json::to_value(t).unwrap();
        assert_eq!(json, t.as_str());
        assert_eq!(serde_json::from_value::<UserDatabaseType>(json).unwrap(), t);
        let flag = t.flag().replace("-", "_").to_uppercase();
        assert_eq!(t.env_var(), format!("XDPTURN_{flag}"));
    }
    assert_eq!(
        all.map(UserDatabaseType::env_var),
        [
            "XDPTURN_PSQL_USERDB",
            "XDPTURN_MYSQL_USERDB",
            "XDPTURN_REDIS_USERDB"
        ]
    );
}

/// The traffic records' variable is the one `--redis-statsdb` reads.
#[cfg(feature = "clap")]
#[test]
fn traffic_records_variable_is_the_relays() {
    use clap::Args as _;
    let cmd = crate::RelayFlags::augment_args(clap::Command::new("relay"));
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("redis-statsdb"))
        .expect("--redis-statsdb");
    assert_eq!(
        arg.get_env().and_then(|e| e.to_str()),
        Some(crate::TRAFFIC_RECORDS_ENV)
    );
}

/// The variables the operator sets are the ones the relay's flags read (with the `clap`
/// feature, which the relay turns on: `cargo test -p api --features clap`).
#[cfg(feature = "clap")]
#[test]
fn user_database_variables_are_the_relays() {
    use clap::Args as _;
    let cmd = crate::RelayFlags::augment_args(clap::Command::new("relay"));
    for t in [
        UserDatabaseType::Postgresql,
        UserDatabaseType::Mysql,
        UserDatabaseType::Redis,
    ] {
        let Some(arg) = cmd.get_arguments().find(|a| a.get_long() == Some(t.flag())) else {
            // --redis-userdb comes with the relay's Redis reader; until then the relay ignores
            // the variable.
            assert_eq!(
                t,
                UserDatabaseType::Redis,
                "the relay has no --{}",
                t.flag()
            );
            continue;
        };
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some(t.env_var()),
            "--{}",
            t.flag()
        );
    }
}
