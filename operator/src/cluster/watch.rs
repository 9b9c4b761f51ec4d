//! Where the cluster facts come from: a watch of the nodes (a reflector store, and a trigger for
//! every TurnCluster's reconcile when a node changes in a way relays care about) and the
//! `kubernetes` Service's cluster IPs, read when a TurnCluster denies cluster networks without
//! naming them and cached for a while.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::TurnCluster;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use tracing::warn;

use super::{ClusterFacts, NodeInfo};

/// How long the `kubernetes` Service's cluster IPs are cached.
const API_IPS_TTL: Duration = Duration::from_secs(300);

/// Gathers the [`ClusterFacts`] a reconcile reads.
pub struct Gatherer {
    client: Client,
    nodes: Store<Node>,
    api_ips: Mutex<Option<(Instant, Vec<IpAddr>)>>,
}

impl std::fmt::Debug for Gatherer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatherer").finish_non_exhaustive()
    }
}

impl Gatherer {
    /// Facts from `nodes` (a store of the cluster's nodes, possibly empty) and, through
    /// `client`, the `kubernetes` Service.
    pub fn new(client: Client, nodes: Store<Node>) -> Self {
        Self {
            client,
            nodes,
            api_ips: Mutex::new(None),
        }
    }

    /// The facts for `tc`: every node, and the `kubernetes` Service's cluster IPs if `tc`
    /// denies cluster networks without naming its service CIDRs.
    pub async fn facts(&self, tc: &TurnCluster) -> ClusterFacts {
        let nodes = self
            .nodes
            .state()
            .iter()
            .map(|n| NodeInfo::from_node(n))
            .collect();
        let peers = &tc.spec.peers;
        let kubernetes_service_ips =
            if peers.deny_cluster_networks && peers.service_cidrs.is_empty() {
                self.kubernetes_service_ips().await
            } else {
                Vec::new()
            };
        ClusterFacts {
            nodes,
            kubernetes_service_ips,
        }
    }

    async fn kubernetes_service_ips(&self) -> Vec<IpAddr> {
        if let Ok(cache) = self.api_ips.lock()
            && let Some((at, ips)) = cache.as_ref()
            && at.elapsed() < API_IPS_TTL
        {
            return ips.clone();
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), "default");
        let ips = match api.get_opt("kubernetes").await {
            Ok(svc) => svc
                .and_then(|s| s.spec)
                .map(|s| {
                    s.cluster_ips
                        .unwrap_or_default()
                        .into_iter()
                        .chain(s.cluster_ip)
                        .filter_map(|ip| ip.parse().ok())
                        .collect::<HashSet<IpAddr>>()
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default(),
            Err(err) => {
                warn!(%err, "cannot read default/kubernetes to deny the API server's Service IP; set spec.peers.serviceCIDRs");
                Vec::new()
            }
        };
        if let Ok(mut cache) = self.api_ips.lock() {
            *cache = Some((Instant::now(), ips.clone()));
        }
        ips
    }
}

/// A node change worth a reconcile of every TurnCluster: a node came or went, or what relays
/// care about changed (addresses, labels, taints, pod networks, readiness). Heartbeats and
/// image lists are not.
pub fn node_changes(client: Client) -> (Store<Node>, impl Stream<Item = ()> + Send + 'static) {
    let (store, writer) = reflector::store();
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut initialising = false;
    let stream = watcher(Api::<Node>::all(client), watcher::Config::default())
        .default_backoff()
        .modify(|n: &mut Node| {
            n.metadata.managed_fields = None;
            if let Some(s) = n.status.as_mut() {
                s.images = None;
                s.volumes_attached = None;
                s.volumes_in_use = None;
            }
        })
        .reflect(writer)
        .filter_map(move |event| {
            let trigger = match event {
                Ok(watcher::Event::Init) => {
                    initialising = true;
                    false
                }
                Ok(watcher::Event::InitApply(n)) => {
                    seen.insert(n.name_any(), digest(&n));
                    false
                }
                Ok(watcher::Event::InitDone) => {
                    initialising = false;
                    true
                }
                Ok(watcher::Event::Apply(n)) => {
                    let d = digest(&n);
                    seen.insert(n.name_any(), d) != Some(d) && !initialising
                }
                Ok(watcher::Event::Delete(n)) => seen.remove(&n.name_any()).is_some(),
                Err(err) => {
                    warn!(%err, "watching nodes failed; retrying");
                    false
                }
            };
            std::future::ready(trigger.then_some(()))
        });
    (store, stream)
}

fn digest(node: &Node) -> u64 {
    let mut h = DefaultHasher::new();
    NodeInfo::from_node(node).hash(&mut h);
    h.finish()
}
