//! `xdpturn-operator`: watches TurnCluster resources and runs xdpturn relays for them.
//!
//! Not implemented yet: the reconcile loop comes with a later issue. Until then this binary
//! parses its configuration, says plainly that it cannot reconcile, and exits with status 2, so
//! that nobody mistakes it for a working operator.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The xdpturn Kubernetes operator.
///
/// Watches TurnCluster resources (group xdpturn.io) and renders, for each, the relay config
/// (ConfigMap), the relay DaemonSet/Deployment, Services and RBAC, then reports status:
/// conditions, ready relays and the iceServers entries clients should use.
///
/// NOT IMPLEMENTED YET: this build only validates its flags, logs that the reconcile loop is
/// missing, and exits with status 2.
///
/// Every flag can also be set by the environment variable shown. The log filter is read from
/// RUST_LOG (e.g. `RUST_LOG=info,xdpturn_operator=debug`).
#[derive(Debug, Parser)]
#[command(name = "xdpturn-operator", version, about, long_about)]
struct Cli {
    /// Only watch TurnClusters in this namespace. Unset watches all namespaces.
    #[arg(long, env = "XDPTURN_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    watch_namespace: Option<String>,

    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(
        long,
        env = "XDPTURN_METRICS_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    metrics_addr: std::net::SocketAddr,

    /// Take a Lease before reconciling, so only one replica acts at a time.
    #[arg(long, env = "XDPTURN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    leader_elect: bool,

    /// Relay image used when a TurnCluster does not name one.
    #[arg(long, env = "XDPTURN_RELAY_IMAGE", value_name = "IMAGE")]
    relay_image: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    tracing::info!(?cli, "xdpturn-operator starting");
    tracing::error!(
        "the reconcile loop is not implemented yet; this operator cannot manage TurnClusters \
         (a later issue builds it); exiting with status 2"
    );
    ExitCode::from(2)
}
