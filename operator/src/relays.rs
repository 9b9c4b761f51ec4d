//! What the relays say about themselves: whether the XDP fast path a TurnCluster asks for is
//! attached, from the `datapath:` line of each ready relay's `/readyz` (relay/src/http.rs,
//! documented in README.md), on its metrics port, where Prometheus scrapes it too.
//!
//! This is the only thing the operator reads from relays, and only through that documented
//! health endpoint: it never touches their internals (ARCHITECTURE.md, Operator/relay). It
//! needs to list the relay pods (to find their addresses) and to reach their metrics port.
//!
//! [`targets`] and [`parse_readyz`] are pure; [`ask`] does the HTTP, each request bounded by
//! [`TIMEOUT`], a few at a time. A relay that does not answer is left out: unknown, not
//! unavailable. [`fast_paths`] lists a TurnCluster's relay pods and asks them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tracing::warn;

use crate::build::{self, CONTAINER};

/// The path asked, on the relay container's `metrics` port.
pub const READYZ: &str = "/readyz";
/// How long one relay gets to answer (connect, request, response).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// Relays asked at once.
const CONCURRENCY: usize = 32;
/// The most of an answer read: `/readyz` is two short lines.
const MAX_ANSWER: u64 = 4096;

/// What a relay's `/readyz` says about its fast path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FastPath {
    /// `datapath: xdp`: the program is attached.
    Attached,
    /// `datapath: userspace (xdp unavailable: <reason>)`: XDP interfaces are configured but the
    /// program did not load or attach; everything is relayed in userspace. The reason is the
    /// relay's `xdpturn_xdp_fallbacks_total` label (`load`, `attach`, ...); its log says more.
    Unavailable(String),
    /// No `datapath:` line: the relay has no XDP interface configured (or predates the line).
    NotConfigured,
}

/// Reads the `datapath:` line of a `/readyz` body.
pub fn parse_readyz(body: &str) -> FastPath {
    let Some(datapath) = body
        .lines()
        .find_map(|l| l.strip_prefix("datapath:"))
        .map(str::trim)
    else {
        return FastPath::NotConfigured;
    };
    if datapath == "xdp" {
        return FastPath::Attached;
    }
    let reason = datapath
        .split_once("xdp unavailable:")
        .map(|(_, r)| r.trim().trim_end_matches(')').trim())
        .filter(|r| !r.is_empty())
        .unwrap_or("unknown");
    FastPath::Unavailable(reason.to_owned())
}

/// A relay to ask: its pod, node, and `/readyz` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pod's name.
    pub pod: String,
    /// The node it runs on.
    pub node: Option<String>,
    /// The pod IP and the relay container's `metrics` port.
    pub addr: SocketAddr,
}

/// The relays worth asking among `pods`: running, ready (the readiness probe is this same
/// endpoint, and a relay decides its datapath before it turns ready), not being deleted, with
/// an IP and a relay container with a metrics port ([`metrics_port`]). Sorted by pod name.
pub fn targets(pods: &[Pod]) -> Vec<Target> {
    let mut out: Vec<Target> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| {
            let status = p.status.as_ref()?;
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !ready || status.phase.as_deref() != Some("Running") {
                return None;
            }
            let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
            let spec = p.spec.as_ref()?;
            let port = metrics_port(spec.containers.iter().find(|c| c.name == CONTAINER)?)?;
            Some(Target {
                pod: p.name_any(),
                node: spec.node_name.clone(),
                addr: SocketAddr::new(ip, u16::try_from(port).ok()?),
            })
        })
        .collect();
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

/// The relay container's metrics port: its port named `metrics`, or, where it declares no ports
/// (DaemonSet mode, host networking), the port its readiness probe asks by number.
fn metrics_port(container: &Container) -> Option<i32> {
    let named = container
        .ports
        .iter()
        .flatten()
        .find(|port| port.name.as_deref() == Some("metrics"))
        .map(|port| port.container_port);
    named.or_else(
        || match &container.readiness_probe.as_ref()?.http_get.as_ref()?.port {
            IntOrString::Int(port) => Some(*port),
            IntOrString::String(_) => None,
        },
    )
}

/// What one relay said; `fast_path` is `None` when it did not answer (in time, or with 200 or
/// 503 and a body).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The pod's name.
    pub pod: String,
    /// The node it runs on.
    pub node: Option<String>,
    /// Its fast path, if it answered.
    pub fast_path: Option<FastPath>,
}

/// Asks every target's `/readyz`, [`CONCURRENCY`] at a time; reports in the targets' order.
pub async fn ask(targets: Vec<Target>) -> Vec<Report> {
    futures::stream::iter(targets)
        .map(|t| async move {
            let fast_path = match tokio::time::timeout(TIMEOUT, get(t.addr, READYZ)).await {
                Ok(Ok(body)) => Some(parse_readyz(&body)),
                Ok(Err(err)) => {
                    tracing::debug!(pod = %t.pod, addr = %t.addr, %err, "relay /readyz did not answer");
                    None
                }
                Err(_) => {
                    tracing::debug!(pod = %t.pod, addr = %t.addr, "relay /readyz timed out");
                    None
                }
            };
            Report {
                pod: t.pod,
                node: t.node,
                fast_path,
            }
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

/// A plain HTTP/1.1 GET; the body of a 200 or 503 answer (a draining relay still says its
/// datapath).
/// What the TurnCluster's ready relays say about their fast path (their `/readyz`). Relays that
/// cannot be listed or asked are left out, with a warning: the status then says nothing about
/// them rather than something wrong.
pub async fn fast_paths(client: &Client, namespace: &str, name: &str) -> Vec<Report> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = build::selector_labels(name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => list.items,
        Err(err) => {
            warn!(tc = %name, ns = %namespace, %err, "cannot list the relay pods to ask whether their XDP fast path is attached");
            return Vec::new();
        }
    };
    let reports = ask(targets(&list)).await;
    let silent: Vec<&str> = reports
        .iter()
        .filter(|r| r.fast_path.is_none())
        .map(|r| r.pod.as_str())
        .collect();
    if !silent.is_empty() {
        warn!(tc = %name, ns = %namespace, pods = ?silent, "relays did not answer {} on their metrics port (a NetworkPolicy?): whether their XDP fast path is attached is unknown", READYZ);
    }
    reports
}

async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let code = head.split_whitespace().nth(1).unwrap_or_default();
    if !matches!(code, "200" | "503") {
        return Err(std::io::Error::other(format!("status {code}")));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_relays_datapath_lines() {
        assert_eq!(parse_readyz("ready\n"), FastPath::NotConfigured);
        assert_eq!(parse_readyz("ready\ndatapath: xdp\n"), FastPath::Attached);
        assert_eq!(
            parse_readyz("not ready\ndatapath: userspace (xdp unavailable: load)\n"),
            FastPath::Unavailable("load".into())
        );
        assert_eq!(
            parse_readyz("ready\ndatapath: userspace\n"),
            FastPath::Unavailable("unknown".into())
        );
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool, port: Option<i32>) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": format!("node-{name}"), "containers": [{
                "name": "relay",
                "ports": port.map(|p| vec![
                    serde_json::json!({"name": "udp-3478", "containerPort": 3478}),
                    serde_json::json!({"name": "metrics", "containerPort": p}),
                ]),
            }]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        }))
        .unwrap()
    }

    #[test]
    fn only_ready_relays_with_an_address_are_asked() {
        let pods = [
            pod("b", Some("10.0.0.2"), true, Some(9641)),
            pod("a", Some("fd00::1"), true, Some(9642)),
            pod("not-ready", Some("10.0.0.3"), false, Some(9641)),
            pod("no-ip", None, true, Some(9641)),
            pod("no-port", Some("10.0.0.4"), true, None),
        ];
        let t = targets(&pods);
        assert_eq!(
            t,
            [
                Target {
                    pod: "a".into(),
                    node: Some("node-a".into()),
                    addr: "[fd00::1]:9642".parse().unwrap(),
                },
                Target {
                    pod: "b".into(),
                    node: Some("node-b".into()),
                    addr: "10.0.0.2:9641".parse().unwrap(),
                },
            ]
        );
    }

    #[test]
    fn a_daemonset_relay_without_ports_is_asked_on_its_probe_port() {
        let mut p = pod("ds", Some("10.0.0.9"), true, None);
        let container = &mut p.spec.as_mut().unwrap().containers[0];
        container.readiness_probe = Some(
            serde_json::from_value(
                serde_json::json!({"httpGet": {"path": "/readyz", "port": 9650}}),
            )
            .unwrap(),
        );
        assert_eq!(
            targets(&[p.clone()])[0].addr,
            "10.0.0.9:9650".parse().unwrap()
        );
        let container = &mut p.spec.as_mut().unwrap().containers[0];
        container.readiness_probe = Some(
            serde_json::from_value(
                serde_json::json!({"httpGet": {"path": "/readyz", "port": "metrics"}}),
            )
            .unwrap(),
        );
        assert!(targets(&[p]).is_empty(), "a name with no port of that name");
    }

    #[tokio::test]
    async fn a_relay_that_does_not_answer_is_unknown() {
        // A port nothing listens on (bound, then released).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let reports = ask(vec![Target {
            pod: "p".into(),
            node: None,
            addr,
        }])
        .await;
        assert_eq!(reports[0].fast_path, None);
    }
}
