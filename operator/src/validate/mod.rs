//! Validate: the pure first step. Decodes a TurnCluster as the API server stored it and checks
//! what the CRD schema cannot express (cross-field rules) or what an API server with an older
//! schema let through. Reports every problem at once, each with the field's path, so a user
//! fixes them in one go.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use api::{
    ListenerProtocol, PlacementMode, PublicAddressPolicy, SecretKeyRef, TurnCluster,
    TurnClusterSpec, parse_cidr,
};
use kube::api::DynamicObject;

use crate::quantity;

mod names;

use names::{is_dns_name, is_label_value};
pub use names::{is_dns1035_label, is_dns1123_subdomain};

/// The longest TurnCluster name: the owned objects append at most `-metrics` (8 characters) and
/// Service names are DNS-1035 labels of at most 63.
pub const MAX_NAME_LEN: usize = 55;

/// One problem with a TurnCluster, at a field path like `spec.listeners[1].port`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The YAML path of the field.
    pub path: String,
    /// What is wrong, as a sentence a user can act on.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Joins problems into one message, as they appear in the Degraded condition and the event.
pub fn summary(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Decodes the TurnCluster the watch delivered. A malformed object (the schema changed, or it was
/// stored without one) becomes a problem naming the field, never an error that stops the watch.
pub fn decode(obj: &DynamicObject) -> Result<TurnCluster, Vec<Problem>> {
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let spec: TurnClusterSpec = serde_path_to_error::deserialize(spec).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." {
            "spec".to_owned()
        } else {
            format!("spec.{path}")
        };
        vec![Problem::new(path, err.into_inner().to_string())]
    })?;
    let status = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    Ok(TurnCluster {
        metadata: obj.metadata.clone(),
        spec,
        status,
    })
}

/// Checks a TurnCluster; on failure returns every problem found.
pub fn validate(tc: &TurnCluster) -> Result<(), Vec<Problem>> {
    let mut p = Vec::new();
    name(tc.metadata.name.as_deref().unwrap_or_default(), &mut p);
    spec(&tc.spec, &mut p);
    if p.is_empty() { Ok(()) } else { Err(p) }
}

fn name(name: &str, p: &mut Vec<Problem>) {
    if name.len() > MAX_NAME_LEN {
        p.push(Problem::new(
            "metadata.name",
            format!(
                "is {} characters long; at most {MAX_NAME_LEN} fit in the names of the Services \
                 the operator creates",
                name.len()
            ),
        ));
    }
    if !is_dns1035_label(name) {
        p.push(Problem::new(
            "metadata.name",
            format!(
                "{name:?} must start with a letter and hold only lowercase letters, digits and \
                 '-' (it names Services)"
            ),
        ));
    }
}

fn spec(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    if s.realm.trim().is_empty() {
        p.push(Problem::new("spec.realm", "must not be empty"));
    } else if s.realm.len() > 127 || s.realm.chars().any(char::is_control) {
        p.push(Problem::new(
            "spec.realm",
            "must be at most 127 bytes without control characters (RFC 8489 REALM)",
        ));
    }
    listeners(s, p);
    relay_ports(s, p);
    auth(s, p);
    public_address(s, p);
    peers(s, p);
    let q = &s.quotas;
    for (field, value) in [("userQuota", q.user_quota), ("totalQuota", q.total_quota)] {
        if !(0..=i64::from(u32::MAX)).contains(&value) {
            p.push(Problem::new(
                format!("spec.quotas.{field}"),
                format!("is {value}, it must be between 0 and {}", u32::MAX),
            ));
        }
    }
    if q.max_bps < 0 {
        p.push(Problem::new(
            "spec.quotas.maxBps",
            format!("is {}, it must not be negative", q.max_bps),
        ));
    }
    xdp(s, p);
    placement(s, p);
    resources(s, p);
    if !(1..=65535).contains(&s.metrics.port) {
        p.push(Problem::new(
            "spec.metrics.port",
            format!("is {}, it must be between 1 and 65535", s.metrics.port),
        ));
    }
    if let Some(r) = &s.metrics.traffic_records {
        secret_ref(r, "spec.metrics.trafficRecords", p);
    }
    if !(0..=86400).contains(&s.drain.timeout_seconds) {
        p.push(Problem::new(
            "spec.drain.timeoutSeconds",
            format!(
                "is {}, it must be between 0 and 86400",
                s.drain.timeout_seconds
            ),
        ));
    }
    if !(0..=300).contains(&s.drain.pre_stop_delay_seconds) {
        p.push(Problem::new(
            "spec.drain.preStopDelaySeconds",
            format!(
                "is {}, it must be between 0 and 300",
                s.drain.pre_stop_delay_seconds
            ),
        ));
    }
    if let Some(image) = &s.image
        && (image.is_empty() || image.chars().any(char::is_whitespace))
    {
        p.push(Problem::new(
            "spec.image",
            format!("{image:?} is not an image reference"),
        ));
    }
}

fn listeners(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    if s.listeners.is_empty() {
        p.push(Problem::new(
            "spec.listeners",
            "needs at least one listener",
        ));
    }
    let mut seen = BTreeSet::new();
    let mut tls_secrets = BTreeSet::new();
    let plain_ports: BTreeSet<i32> = s
        .listeners
        .iter()
        .filter(|l| l.protocol != ListenerProtocol::Tls)
        .map(api::Listener::port)
        .collect();
    for (i, l) in s.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        let port = l.port();
        if !(1..=65535).contains(&port) {
            p.push(Problem::new(
                format!("{at}.port"),
                format!("is {port}, it must be between 1 and 65535"),
            ));
        }
        if !seen.insert((protocol_name(l.protocol), port)) {
            p.push(Problem::new(
                at.clone(),
                format!("{} port {port} is listed twice", protocol_name(l.protocol)),
            ));
        }
        match (l.protocol, &l.certificate_secret) {
            (ListenerProtocol::Tls, None) => p.push(Problem::new(
                format!("{at}.certificateSecret"),
                "a TLS listener needs a kubernetes.io/tls Secret",
            )),
            (ListenerProtocol::Tls, Some(secret)) => {
                secret_name(secret, &format!("{at}.certificateSecret"), p);
                tls_secrets.insert(secret.clone());
                if plain_ports.contains(&port) {
                    p.push(Problem::new(
                        format!("{at}.port"),
                        format!(
                            "TLS port {port} is also a UDP/TCP listener port; the relay opens TCP \
                             on every UDP/TCP listener port, so they would collide"
                        ),
                    ));
                }
            }
            (_, Some(_)) => p.push(Problem::new(
                format!("{at}.certificateSecret"),
                "only TLS listeners take a certificate",
            )),
            (_, None) => {}
        }
        if port == s.metrics.port {
            p.push(Problem::new(
                format!("{at}.port"),
                format!("port {port} is also spec.metrics.port"),
            ));
        }
    }
    if tls_secrets.len() > 1 {
        p.push(Problem::new(
            "spec.listeners",
            format!(
                "TLS listeners name {} certificate Secrets ({}); the relay serves one certificate",
                tls_secrets.len(),
                tls_secrets.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
}

fn protocol_name(p: ListenerProtocol) -> &'static str {
    match p {
        ListenerProtocol::Udp => "UDP",
        ListenerProtocol::Tcp => "TCP",
        ListenerProtocol::Tls => "TLS",
    }
}

fn relay_ports(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    let r = &s.relay_ports;
    for (field, v) in [("min", r.min), ("max", r.max)] {
        if !(1024..=65535).contains(&v) {
            p.push(Problem::new(
                format!("spec.relayPorts.{field}"),
                format!("is {v}, it must be between 1024 and 65535"),
            ));
        }
    }
    if r.min > r.max {
        p.push(Problem::new(
            "spec.relayPorts",
            format!("min {} is above max {}", r.min, r.max),
        ));
        return;
    }
    for (i, l) in s.listeners.iter().enumerate() {
        if (r.min..=r.max).contains(&l.port()) {
            p.push(Problem::new(
                format!("spec.listeners[{i}].port"),
                format!(
                    "port {} is inside the relay port range {}-{}",
                    l.port(),
                    r.min,
                    r.max
                ),
            ));
        }
    }
    if (r.min..=r.max).contains(&s.metrics.port) {
        p.push(Problem::new(
            "spec.metrics.port",
            format!(
                "port {} is inside the relay port range {}-{}",
                s.metrics.port, r.min, r.max
            ),
        ));
    }
}

fn auth(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    let a = &s.auth;
    if a.shared_secrets.is_empty() && a.static_users.is_none() && a.user_database.is_none() {
        p.push(Problem::new(
            "spec.auth",
            "set sharedSecrets, staticUsers or userDatabase: without credentials every relay \
             would invent its own password",
        ));
    }
    if a.credentials_api_token.is_some() && a.shared_secrets.is_empty() {
        p.push(Problem::new(
            "spec.auth.credentialsApiToken",
            "the credentials API issues credentials from sharedSecrets, which is empty",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, r) in a.shared_secrets.iter().enumerate() {
        let at = format!("spec.auth.sharedSecrets[{i}]");
        secret_ref(r, &at, p);
        if !seen.insert(r) {
            p.push(Problem::new(
                at,
                format!("{}/{} is listed twice", r.name, r.key),
            ));
        }
    }
    if let Some(r) = &a.static_users {
        secret_ref(r, "spec.auth.staticUsers", p);
    }
    if let Some(r) = &a.credentials_api_token {
        secret_ref(r, "spec.auth.credentialsApiToken", p);
    }
    if let Some(db) = &a.user_database {
        secret_ref(&db.secret_key_ref, "spec.auth.userDatabase.secretKeyRef", p);
    }
}

fn secret_ref(r: &SecretKeyRef, at: &str, p: &mut Vec<Problem>) {
    secret_name(&r.name, &format!("{at}.name"), p);
    if r.key.is_empty()
        || r.key.len() > 253
        || !r
            .key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || r.key == "."
        || r.key == ".."
    {
        p.push(Problem::new(
            format!("{at}.key"),
            format!("{:?} is not a Secret key", r.key),
        ));
    }
}

fn secret_name(name: &str, at: &str, p: &mut Vec<Problem>) {
    if !is_dns1123_subdomain(name) {
        p.push(Problem::new(
            at,
            format!("{name:?} is not a Secret name (a DNS-1123 subdomain)"),
        ));
    }
}

fn public_address(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    let pa = &s.public_address;
    match pa.policy {
        PublicAddressPolicy::Explicit if pa.addresses.is_empty() => p.push(Problem::new(
            "spec.publicAddress.addresses",
            "policy Explicit needs at least one address",
        )),
        PublicAddressPolicy::Explicit => {}
        other if !pa.addresses.is_empty() => p.push(Problem::new(
            "spec.publicAddress.addresses",
            format!("is only used with policy Explicit, not {other:?}"),
        )),
        _ => {}
    }
    if pa.policy == PublicAddressPolicy::NodeExternalIP
        && s.placement.mode != PlacementMode::DaemonSet
    {
        p.push(Problem::new(
            "spec.publicAddress.policy",
            "NodeExternalIP needs placement.mode DaemonSet (relays on the nodes' network); use \
             LoadBalancer or Explicit with a Deployment",
        ));
    }
    for (i, a) in pa.addresses.iter().enumerate() {
        if a.parse::<IpAddr>().is_err() && !is_dns_name(a) {
            p.push(Problem::new(
                format!("spec.publicAddress.addresses[{i}]"),
                format!("{a:?} is neither an IP address nor a DNS name"),
            ));
        }
    }
}

fn peers(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    let pp = &s.peers;
    for (field, list) in [
        ("allow", &pp.allow),
        ("deny", &pp.deny),
        ("podCIDRs", &pp.pod_cidrs),
        ("serviceCIDRs", &pp.service_cidrs),
    ] {
        for (i, c) in list.iter().enumerate() {
            if let Err(message) = parse_cidr(c) {
                p.push(Problem::new(format!("spec.peers.{field}[{i}]"), message));
            }
        }
    }
    let cidrs_given = !pp.pod_cidrs.is_empty() || !pp.service_cidrs.is_empty();
    if !pp.deny_cluster_networks && cidrs_given {
        p.push(Problem::new(
            "spec.peers",
            "podCIDRs and serviceCIDRs are only used with denyClusterNetworks true",
        ));
    }
}

fn xdp(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    if s.xdp.enabled && s.placement.mode != PlacementMode::DaemonSet {
        p.push(Problem::new(
            "spec.xdp.enabled",
            "XDP needs placement.mode DaemonSet (host networking)",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, name) in s.xdp.interfaces.iter().enumerate() {
        if name.is_empty()
            || name.len() > 15
            || name
                .chars()
                .any(|c| c == '/' || c.is_whitespace() || c.is_control())
        {
            p.push(Problem::new(
                format!("spec.xdp.interfaces[{i}]"),
                format!("{name:?} is not a Linux interface name (1-15 characters, no '/')"),
            ));
        }
        if !seen.insert(name) {
            p.push(Problem::new(
                format!("spec.xdp.interfaces[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
    }
    if s.xdp.enabled && s.xdp.interfaces.is_empty() {
        p.push(Problem::new(
            "spec.xdp.interfaces",
            "XDP needs the interfaces to attach to (e.g. eth0)",
        ));
    }
    if let Some(n) = s.xdp.max_channels
        && !(1..=i64::from(u32::MAX)).contains(&n)
    {
        p.push(Problem::new(
            "spec.xdp.maxChannels",
            format!("is {n}, it must be between 1 and {}", u32::MAX),
        ));
    }
    if !s.xdp.enabled && !s.xdp.interfaces.is_empty() {
        p.push(Problem::new(
            "spec.xdp.interfaces",
            "is only used with xdp.enabled true",
        ));
    }
}

fn placement(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    let pl = &s.placement;
    match pl.mode {
        PlacementMode::DaemonSet => {
            if pl.replicas.is_some() {
                p.push(Problem::new(
                    "spec.placement.replicas",
                    "a DaemonSet runs one relay per eligible node; replicas is for mode Deployment",
                ));
            }
            if let Some(n) = pl.max_unavailable
                && n < 1
            {
                p.push(Problem::new(
                    "spec.placement.maxUnavailable",
                    format!("is {n}, it must be at least 1"),
                ));
            }
        }
        PlacementMode::Deployment => {
            if let Some(r) = pl.replicas
                && r < 0
            {
                p.push(Problem::new(
                    "spec.placement.replicas",
                    format!("is {r}, it must not be negative"),
                ));
            }
            if pl.max_unavailable.is_some() {
                p.push(Problem::new(
                    "spec.placement.maxUnavailable",
                    "is for mode DaemonSet; a Deployment adds a new relay before it stops an old one",
                ));
            }
        }
    }
    for (i, t) in pl.tolerations.iter().enumerate() {
        let at = format!("spec.placement.tolerations[{i}]");
        match t.operator.as_deref() {
            Some("Exists") if t.value.as_deref().is_some_and(|v| !v.is_empty()) => p.push(
                Problem::new(format!("{at}.value"), "must be empty with operator Exists"),
            ),
            None | Some("Equal") if t.key.as_deref().unwrap_or_default().is_empty() => p.push(
                Problem::new(format!("{at}.key"), "an empty key needs operator Exists"),
            ),
            None | Some("Equal" | "Exists") => {}
            Some(other) => p.push(Problem::new(
                format!("{at}.operator"),
                format!("{other:?} is not Exists or Equal"),
            )),
        }
        if let Some(e) = t.effect.as_deref()
            && !matches!(e, "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        {
            p.push(Problem::new(
                format!("{at}.effect"),
                format!("{e:?} is not NoSchedule, PreferNoSchedule or NoExecute"),
            ));
        }
    }
    label_map(&pl.node_selector, "spec.placement.nodeSelector", p);
}

fn label_map(map: &BTreeMap<String, String>, at: &str, p: &mut Vec<Problem>) {
    for (k, v) in map {
        let (prefix, name) = k
            .rsplit_once('/')
            .map_or((None, k.as_str()), |(a, b)| (Some(a), b));
        if prefix.is_some_and(|pre| !is_dns1123_subdomain(pre))
            || !is_label_value(name)
            || name.is_empty()
        {
            p.push(Problem::new(
                format!("{at}[{k}]"),
                format!("{k:?} is not a label key"),
            ));
        }
        if !is_label_value(v) {
            p.push(Problem::new(
                format!("{at}[{k}]"),
                format!("{v:?} is not a label value"),
            ));
        }
    }
}

fn resources(s: &TurnClusterSpec, p: &mut Vec<Problem>) {
    let Some(r) = &s.resources else { return };
    for (field, map) in [("requests", &r.requests), ("limits", &r.limits)] {
        for (name, q) in map {
            if quantity::parse(&q.0).is_none_or(|v| v < 0.0) {
                p.push(Problem::new(
                    format!("spec.resources.{field}.{name}"),
                    format!("{:?} is not a quantity like 500m, 2 or 256Mi", q.0),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
