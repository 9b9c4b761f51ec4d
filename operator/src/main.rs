//! `xdpturn-operator`: watches TurnCluster resources and runs xdpturn relays for them.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use kube::{Api, Client, Config};
use operator::controller::{self, Scope, Settings};
use operator::http::{self, Health};
use operator::leader::{Elector, Timings};
use operator::metrics::Metrics;
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

/// The xdpturn Kubernetes operator.
///
/// Watches TurnCluster resources (xdpturn.io/v1alpha1) and, for each, renders the relay config
/// (a ConfigMap with relay.toml), the relay DaemonSet (host networking, one relay per node) or
/// Deployment, the TURN Service, a metrics Service, a ServiceAccount and optionally a
/// ServiceMonitor, all owned by the TurnCluster; then reports status: Ready / Progressing /
/// Degraded conditions, ready relays, public endpoints and the iceServers entries clients use.
/// `kubectl get tc` shows it; `kubectl describe tc NAME` shows the events.
///
/// It needs no flags: it talks to the cluster it runs in (in-cluster service account), or
/// outside a cluster to the one KUBECONFIG (or ~/.kube/config) points at. Writes are server-side
/// applies with field manager `xdpturn-operator`, sent only when something changed.
///
/// With leader election (the default) replicas share a coordination.k8s.io Lease: one
/// reconciles, the others wait, and take over within about 15 seconds if it stops.
///
/// Every flag can also be set by the environment variable shown. The log filter is read from
/// RUST_LOG (e.g. `RUST_LOG=info,operator=debug`). /metrics, /healthz and /readyz are served on
/// --metrics-addr.
#[derive(Debug, Parser)]
#[command(name = "xdpturn-operator", version, about, long_about)]
struct Cli {
    /// Kubeconfig file to use instead of the in-cluster account, KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "XDPTURN_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,

    /// Only watch TurnClusters (and their objects) in this namespace. Unset watches all.
    #[arg(long, env = "XDPTURN_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    watch_namespace: Option<String>,

    /// Address to serve /metrics, /healthz and /readyz on.
    #[arg(
        long,
        env = "XDPTURN_METRICS_ADDR",
        default_value = "0.0.0.0:8080",
        value_name = "ADDR"
    )]
    metrics_addr: SocketAddr,

    /// Take a Lease before reconciling, so only one replica acts at a time.
    #[arg(long, env = "XDPTURN_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    leader_elect: bool,

    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "XDPTURN_LEASE_NAME",
        default_value = "xdpturn-operator",
        value_name = "NAME"
    )]
    lease_name: String,

    /// Namespace of the Lease. Default: the operator pod's namespace (POD_NAMESPACE), else the
    /// kubeconfig's namespace.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    lease_namespace: Option<String>,

    /// This replica's identity in the Lease and in events. Default: POD_NAME, else the host
    /// name with the process id.
    #[arg(long, env = "POD_NAME", value_name = "ID")]
    identity: Option<String>,

    /// Relay image used when a TurnCluster does not name one.
    #[arg(long, env = "XDPTURN_RELAY_IMAGE", value_name = "IMAGE", default_value = operator::DEFAULT_RELAY_IMAGE)]
    relay_image: String,

    /// How often each TurnCluster is reconciled when nothing triggers it, in seconds: a safety
    /// net; changes to TurnClusters, their objects and nodes trigger reconciles at once.
    #[arg(
        long,
        env = "XDPTURN_RESYNC_SECONDS",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    resync_seconds: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to standard output: coloured only on a terminal, never into `kubectl logs`.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(colour(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            error!(%err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Whether logs are coloured: only on a terminal, and not when NO_COLOR is set to anything but
/// the empty string (no-color.org).
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", path.display()))?
        }
        None => Config::infer().await.context(
            "no Kubernetes configuration: not in a cluster, and no KUBECONFIG or ~/.kube/config",
        )?,
    };
    Client::try_from(config).context("creating the Kubernetes client")
}

async fn shutdown_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    info!(
        version = env!("CARGO_PKG_VERSION"),
        ?cli,
        "xdpturn-operator starting"
    );
    let client = client(&cli).await?;
    let metrics = Arc::new(Metrics::new());
    let ready = Arc::new(AtomicBool::new(false));
    let health = Health {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    let listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("binding {}", cli.metrics_addr))?;
    drop(listener);
    tokio::spawn(async move {
        if let Err(err) = http::serve(cli.metrics_addr, health).await {
            error!(%err, "the metrics endpoint stopped");
        }
    });

    let identity = cli.identity.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "xdpturn-operator".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let reporter = Reporter {
        controller: "xdpturn-operator".to_owned(),
        instance: Some(identity.clone()),
    };
    let settings = Settings {
        default_image: cli.relay_image.clone(),
        resync: Duration::from_secs(cli.resync_seconds.max(10)),
    };
    let scope = Scope {
        namespace: cli.watch_namespace.clone(),
    };

    let mut elector = if cli.leader_elect {
        let ns = cli
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let api: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let mut elector = Elector::new(api, &cli.lease_name, &identity, Timings::default());
        ready.store(true, Ordering::Relaxed);
        info!(lease = %cli.lease_name, namespace = %ns, %identity, "waiting to become the leader");
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown_signal() => {
                info!("shutting down before becoming the leader");
                return Ok(ExitCode::SUCCESS);
            }
        }
        Some(elector)
    } else {
        None
    };
    metrics.leader.set(1);
    ready.store(true, Ordering::Relaxed);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(controller::run(
        client,
        scope,
        reporter,
        metrics.clone(),
        settings,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let lost = async {
        match elector.as_mut() {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let code = tokio::select! {
        () = shutdown_signal() => {
            info!("shutting down: finishing running reconciles");
            ExitCode::SUCCESS
        }
        () = lost => {
            error!("lost the leader Lease; exiting so that this replica restarts as a candidate");
            metrics.leader.set(0);
            // Stop acting at once: another replica may already be reconciling.
            return Ok(ExitCode::from(3));
        }
    };
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), controller).await;
    if let Some(e) = &elector {
        e.release().await;
    }
    metrics.leader.set(0);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(
            !colour(false, None),
            "a pipe (kubectl logs) gets no escape codes"
        );
        assert!(!colour(false, Some(OsStr::new("1"))));
    }
}
