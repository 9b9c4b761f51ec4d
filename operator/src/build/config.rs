//! The relay's configuration for a TurnCluster: [`api::RelayConfig`], rendered into the
//! ConfigMap as `relay.toml`, with Secrets referenced as the files they are mounted as.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use api::{
    ListenerProtocol, PlacementMode, PublicAddressPolicy, RelayConfig, SecretKeyRef,
    TurnClusterSpec,
};

use super::{SECRETS_DIR, TLS_DIR};
use crate::cluster::{ClusterFacts, cluster_networks, external_ip_mappings};
use crate::endpoints::urls;

/// The path of a Secret key inside the relay container.
pub fn secret_path(r: &SecretKeyRef) -> PathBuf {
    PathBuf::from(SECRETS_DIR).join(&r.name).join(&r.key)
}

/// The relay configuration for a TurnCluster.
pub fn relay_config(
    spec: &TurnClusterSpec,
    facts: &ClusterFacts,
    endpoints: &[String],
) -> RelayConfig {
    let both = |port: i32| {
        let port = u16::try_from(port).unwrap_or_default();
        [
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        ]
    };
    let ports = |tls: bool| -> BTreeSet<i32> {
        spec.listeners
            .iter()
            .filter(|l| (l.protocol == ListenerProtocol::Tls) == tls)
            .map(api::Listener::port)
            .collect()
    };
    let tls_ports = ports(true);
    let auth = &spec.auth;
    let mut deny_peers = spec.peers.deny.clone();
    for net in cluster_networks(spec, facts) {
        if !deny_peers.contains(&net) {
            deny_peers.push(net);
        }
    }
    let external_ips = if spec.placement.mode == PlacementMode::DaemonSet
        && spec.public_address.policy == PublicAddressPolicy::NodeExternalIP
    {
        external_ip_mappings(spec, facts)
    } else {
        Vec::new()
    };
    let api_uris = if auth.credentials_api_token.is_some() {
        endpoints.iter().flat_map(|e| urls(spec, e)).collect()
    } else {
        Vec::new()
    };
    RelayConfig {
        listen: ports(false).into_iter().flat_map(both).collect(),
        tls_listen: tls_ports.iter().copied().flat_map(both).collect(),
        cert: (!tls_ports.is_empty()).then(|| PathBuf::from(TLS_DIR).join("tls.crt")),
        key: (!tls_ports.is_empty()).then(|| PathBuf::from(TLS_DIR).join("tls.key")),
        metrics_listen: SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            u16::try_from(spec.metrics.port).unwrap_or(api::DEFAULT_METRICS_PORT),
        ),
        realm: spec.realm.clone(),
        users_file: auth.static_users.as_ref().map(secret_path),
        auth_secret_files: auth.shared_secrets.iter().map(secret_path).collect(),
        api_token_file: auth.credentials_api_token.as_ref().map(secret_path),
        api_uris,
        min_port: u16::try_from(spec.relay_ports.min).unwrap_or(49152),
        max_port: u16::try_from(spec.relay_ports.max).unwrap_or(65535),
        external_ips,
        allow_peers: spec.peers.allow.clone(),
        deny_peers,
        user_quota: u32::try_from(spec.quotas.user_quota).unwrap_or(0),
        total_quota: u32::try_from(spec.quotas.total_quota).unwrap_or(0),
        max_bps: u64::try_from(spec.quotas.max_bps).unwrap_or(0),
        drain_timeout_secs: u64::try_from(spec.drain.timeout_seconds).unwrap_or(0),
        ..xdp_config(spec)
    }
}

/// The XDP part of the relay configuration: no interfaces (userspace only) unless enabled.
fn xdp_config(spec: &TurnClusterSpec) -> RelayConfig {
    let defaults = RelayConfig::default();
    if !spec.xdp.enabled {
        return defaults;
    }
    RelayConfig {
        xdp_interfaces: spec.xdp.interfaces.clone(),
        xdp_mode: spec.xdp.mode,
        xdp_max_channels: spec
            .xdp
            .max_channels
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(defaults.xdp_max_channels),
        ..defaults
    }
}

/// The settings the relay reads only when it starts and that no other pod field carries: the
/// XDP attachment. They are also an annotation of the pod template, so that changing them
/// replaces the relays; everything else in relay.toml is reloaded in place.
pub(super) fn restart_settings(config: &RelayConfig) -> Option<String> {
    (!config.xdp_interfaces.is_empty()).then(|| {
        format!(
            "interfaces={} mode={} max-channels={}",
            config.xdp_interfaces.join(","),
            config.xdp_mode,
            config.xdp_max_channels
        )
    })
}
