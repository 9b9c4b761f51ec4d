//! The Services: TURN (UDP and TCP, and TLS, on one address; ClusterIP or LoadBalancer) and
//! metrics, and the Prometheus Operator's ServiceMonitor when asked for.

use std::collections::BTreeMap;

use api::{ListenerProtocol, PublicAddressPolicy, TurnClusterSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::{Names, selector_labels};

/// The TURN Service of TurnCluster `name`, with `meta`.
pub(super) fn turn_service(spec: &TurnClusterSpec, name: &str, meta: ObjectMeta) -> Service {
    let load_balancer = spec.public_address.policy == PublicAddressPolicy::LoadBalancer;
    Service {
        metadata: ObjectMeta {
            annotations: (!spec.public_address.service_annotations.is_empty())
                .then(|| spec.public_address.service_annotations.clone()),
            ..meta
        },
        spec: Some(ServiceSpec {
            type_: Some(
                if load_balancer {
                    "LoadBalancer"
                } else {
                    "ClusterIP"
                }
                .into(),
            ),
            selector: Some(selector_labels(name)),
            ports: Some(
                spec.listeners
                    .iter()
                    .map(|l| ServicePort {
                        name: Some(port_name(l.protocol, l.port())),
                        port: l.port(),
                        target_port: Some(IntOrString::Int(l.port())),
                        protocol: Some(transport(l.protocol).into()),
                        ..ServicePort::default()
                    })
                    .collect(),
            ),
            // Clients' own addresses reach the relay (no SNAT), and a node without a relay is
            // not sent any.
            external_traffic_policy: load_balancer.then(|| "Local".into()),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The metrics Service of TurnCluster `name`, with `meta`.
pub(super) fn metrics_service(spec: &TurnClusterSpec, name: &str, meta: ObjectMeta) -> Service {
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(name)),
            ports: Some(vec![ServicePort {
                name: Some("metrics".into()),
                port: spec.metrics.port,
                target_port: Some(IntOrString::Int(spec.metrics.port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The ServiceMonitor of TurnCluster `name`, with `meta`.
pub(super) fn service_monitor(name: &str, names: &Names, meta: ObjectMeta) -> DynamicObject {
    let mut sm = DynamicObject::new(&names.relay, &service_monitor_resource());
    sm.metadata = meta;
    sm.data = serde_json::json!({"spec": {
        "selector": {"matchLabels": labels_for_metrics_selector(name)},
        "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "30s"}],
    }});
    sm
}

/// The Prometheus Operator's ServiceMonitor.
pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

fn labels_for_metrics_selector(tc: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(tc);
    l.insert("app.kubernetes.io/component".into(), "relay-metrics".into());
    l
}

pub(super) fn transport(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Udp => "UDP",
        ListenerProtocol::Tcp | ListenerProtocol::Tls => "TCP",
    }
}

/// A port name: an IANA_SVC_NAME, at most 15 characters.
pub(super) fn port_name(p: ListenerProtocol, port: i32) -> String {
    let prefix = match p {
        ListenerProtocol::Udp => "udp",
        ListenerProtocol::Tcp => "tcp",
        ListenerProtocol::Tls => "tls",
    };
    format!("{prefix}-{port}")
}
