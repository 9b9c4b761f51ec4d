//! The reconcile against a fake API server (a tower-test mock service answering from an
//! in-memory store), for what needs requests but not a real cluster: which requests a reconcile
//! sends. Named scenarios, each from a fresh fake.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::TurnClusterStatus;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::Client;
use kube::api::DynamicObject;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use operator::controller::{self, Context, Settings};
use operator::metrics::Metrics;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const TC_PATH: &str = "/apis/xdpturn.io/v1alpha1/namespaces/media/turnclusters/minimal";

/// One request the fake saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: String,
}

/// An API server that keeps objects by path: GET answers from the store (404 if absent; a
/// namespace's collection is listed, by label selector), server-side apply PATCH stores the
/// body, a status PATCH merges into the owner, POST (events) is recorded, DELETE removes.
#[derive(Clone, Default)]
struct Fake {
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    version: Arc<Mutex<u64>>,
    /// The events created (POST bodies).
    events: Arc<Mutex<Vec<Value>>>,
}

impl Fake {
    fn put(&self, path: &str, obj: Value) {
        self.objects.lock().unwrap().insert(path.to_owned(), obj);
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    /// The objects directly under the collection `path` whose labels match the query's
    /// `labelSelector` (`k=v,...`), as a list.
    fn list(&self, path: &str, query: &str) -> Value {
        let selector: Vec<(String, String)> = query
            .split('&')
            .filter_map(|p| p.strip_prefix("labelSelector="))
            .flat_map(|s| {
                percent_decode(s)
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let prefix = format!("{path}/");
        let items: Vec<Value> = self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.strip_prefix(&prefix).is_some_and(|n| !n.contains('/')))
            .map(|(_, v)| v.clone())
            .filter(|v| {
                selector
                    .iter()
                    .all(|(k, want)| v["metadata"]["labels"][k].as_str() == Some(want.as_str()))
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"},
            "items": items})
    }

    fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    fn next_version(&self) -> String {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        v.to_string()
    }

    async fn answer(&self, req: Request<Body>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or_default().to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        self.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let json = |status: StatusCode, v: &Value| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(v).unwrap()))
                .unwrap()
        };
        let not_found = || {
            json(
                StatusCode::NOT_FOUND,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "message": format!("{path} not found"),
                    "reason": "NotFound", "code": 404}),
            )
        };
        match method {
            Method::GET => match self.get(&path) {
                Some(v) => json(StatusCode::OK, &v),
                None if is_collection(&path) => json(StatusCode::OK, &self.list(&path, &query)),
                None => not_found(),
            },
            Method::PATCH if path.contains("/events/") => {
                // The event recorder counts a repeated event with a merge patch.
                json(
                    StatusCode::OK,
                    &serde_json::from_slice::<Value>(&body).unwrap(),
                )
            }
            Method::PATCH => {
                assert!(
                    query.contains("fieldManager=xdpturn-operator") && query.contains("force=true"),
                    "every write is a server-side apply by xdpturn-operator: {path}?{query}"
                );
                let patch: Value = serde_json::from_slice(&body).unwrap();
                if let Some(owner) = path.strip_suffix("/status") {
                    let mut obj = self.get(owner).unwrap();
                    obj["status"] = patch["status"].clone();
                    obj["metadata"]["resourceVersion"] = self.next_version().into();
                    self.put(owner, obj.clone());
                    return json(StatusCode::OK, &obj);
                }
                let mut obj = patch;
                obj["metadata"]["resourceVersion"] = self.next_version().into();
                obj["metadata"]["uid"] = format!("uid-{}", path.len()).into();
                self.put(&path, obj.clone());
                json(StatusCode::OK, &obj)
            }
            Method::POST => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                if path.contains("/events") {
                    self.events.lock().unwrap().push(v.clone());
                }
                json(StatusCode::CREATED, &v)
            }
            Method::DELETE => match self.objects.lock().unwrap().remove(&path) {
                Some(v) => json(StatusCode::OK, &v),
                None => not_found(),
            },
            other => panic!("unexpected {other} {path}"),
        }
    }
}

/// Whether `path` is a namespaced collection (`.../namespaces/<ns>/<resource>`).
fn is_collection(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    parts.len() >= 2 && parts[parts.len() - 3] == "namespaces"
}

/// `%XX` escapes decoded (a query's label selector).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

struct World {
    fake: Fake,
    ctx: Arc<Context>,
    _nodes: reflector::store::Writer<k8s_openapi::api::core::v1::Node>,
}

impl World {
    fn new(spec: Value) -> Self {
        let fake = Fake::default();
        fake.put(
            TC_PATH,
            json!({"apiVersion": "xdpturn.io/v1alpha1", "kind": "TurnCluster",
                "metadata": {"name": "minimal", "namespace": "media", "uid": "tc-uid-1",
                    "generation": 1, "resourceVersion": "1"},
                "spec": spec}),
        );
        fake.put(
            "/api/v1/namespaces/default/services/kubernetes",
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"]}}),
        );
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                send.send_response(server.answer(req).await);
            }
        });
        let client = Client::new(service, "default");
        let (store, writer) = reflector::store();
        let ctx = Arc::new(Context::new(
            client,
            Reporter {
                controller: "xdpturn-operator".into(),
                instance: Some("test".into()),
            },
            store,
            Arc::new(Metrics::new()),
            Settings {
                default_image: "xdpturn/xdpturn-relay:test".into(),
                resync: Duration::from_secs(600),
            },
        ));
        Self {
            fake,
            ctx,
            _nodes: writer,
        }
    }

    async fn reconcile(&self) -> Action {
        let obj: DynamicObject = serde_json::from_value(self.fake.get(TC_PATH).unwrap()).unwrap();
        controller::reconcile(Arc::new(obj), self.ctx.clone())
            .await
            .unwrap()
    }

    fn status(&self) -> TurnClusterStatus {
        serde_json::from_value(self.fake.get(TC_PATH).unwrap()["status"].clone()).unwrap()
    }

    /// The paths of the relay DaemonSets, sorted.
    fn daemonsets(&self) -> Vec<String> {
        self.fake
            .objects
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(DS_PATH))
            .cloned()
            .collect()
    }

    /// The path of the one relay DaemonSet there is.
    fn daemonset(&self) -> String {
        let all = self.daemonsets();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].clone()
    }

    /// Writes a DaemonSet's status as its controller would: `(desired, ready)` relays, all up to
    /// date, for its current generation.
    fn mark(&self, path: &str, desired: i32, ready: i32) {
        let mut ds = self.fake.get(path).unwrap();
        let generation = ds["metadata"]["generation"].as_i64().unwrap_or(1);
        ds["metadata"]["generation"] = generation.into();
        ds["status"] = json!({"desiredNumberScheduled": desired, "numberReady": ready,
            "updatedNumberScheduled": desired, "currentNumberScheduled": desired,
            "numberMisscheduled": 0, "observedGeneration": generation});
        self.fake.put(path, ds);
    }

    fn edit_spec(&self, f: impl FnOnce(&mut Value)) {
        let mut tc = self.fake.get(TC_PATH).unwrap();
        f(&mut tc["spec"]);
        let generation = tc["metadata"]["generation"].as_i64().unwrap() + 1;
        tc["metadata"]["generation"] = generation.into();
        self.fake.put(TC_PATH, tc);
    }
}

/// The writes, in order; an event (created, or counted again) is `EVENT`.
fn writes(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.method != Method::GET)
        .map(|s| {
            if s.path.starts_with("/apis/events.k8s.io/") {
                EVENT.to_owned()
            } else {
                format!("{} {}", s.method, s.path)
            }
        })
        .collect()
}

const EVENT: &str = "EVENT";

fn minimal() -> Value {
    json!({"realm": "example.org",
        "auth": {"sharedSecrets": [{"name": "turn-auth", "key": "secret"}]},
        "publicAddress": {"policy": "Explicit", "addresses": ["203.0.113.10"]}})
}

const OBJECT_WRITES: [&str; 4] = [
    "PATCH /api/v1/namespaces/media/serviceaccounts/minimal-relay",
    "PATCH /api/v1/namespaces/media/configmaps/minimal-relay",
    "PATCH /api/v1/namespaces/media/services/minimal",
    "PATCH /api/v1/namespaces/media/services/minimal-metrics",
];

/// Where the relay DaemonSets are (each `minimal-relay-<revision>`).
const DS_PATH: &str = "/apis/apps/v1/namespaces/media/daemonsets/minimal-relay";

#[tokio::test]
async fn a_new_turncluster_gets_its_objects_and_a_status() {
    let w = World::new(minimal());
    let action = w.reconcile().await;
    assert_eq!(action, Action::requeue(Duration::from_secs(600)));
    let seen = w.fake.take_seen();
    let ds_path = w.daemonset();
    let rev = ds_path.strip_prefix(&format!("{DS_PATH}-")).unwrap();
    assert_eq!(rev.len(), 10, "{ds_path}");
    let mut expected: Vec<String> = OBJECT_WRITES.iter().map(|s| (*s).to_owned()).collect();
    expected.push(format!("PATCH {ds_path}"));
    expected.push(format!("PATCH {TC_PATH}/status"));
    expected.push(EVENT.into());
    assert_eq!(writes(&seen), expected);
    let st = w.status();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(st.endpoints, ["203.0.113.10"]);
    assert_eq!(
        st.ice_servers[0].urls,
        [
            "turn:203.0.113.10:3478?transport=udp",
            "turn:203.0.113.10:3478?transport=tcp"
        ]
    );
    let ready = st.condition("Ready").unwrap();
    assert_eq!(ready.reason, "NoRelaysReady");
    // The DaemonSet as applied carries the config checksum and the owner.
    let ds = w.fake.get(&ds_path).unwrap();
    assert_eq!(ds["metadata"]["ownerReferences"][0]["uid"], "tc-uid-1");
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"]["xdpturn.io/relay-revision"],
        rev
    );
    // Its relays are listed with every revision's, by the common labels.
    let listed: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.path == "/apis/apps/v1/namespaces/media/daemonsets")
        .collect();
    assert_eq!(listed.len(), 1, "{seen:?}");
    assert!(
        listed[0]
            .query
            .contains("app.kubernetes.io%2Finstance%3Dminimal"),
        "{}",
        listed[0].query
    );
    assert!(ds["metadata"]["annotations"]["xdpturn.io/config-sha256"].is_string());
    assert_eq!(w.ctx.metrics().total_writes(), 6);
}

#[tokio::test]
async fn nothing_changed_sends_no_write() {
    let w = World::new(minimal());
    w.reconcile().await;
    w.fake.take_seen();
    let before = w.ctx.metrics().total_writes();
    // As after an operator restart, or the watch event of its own write: only reads.
    for _ in 0..3 {
        w.reconcile().await;
        let seen = w.fake.take_seen();
        assert_eq!(writes(&seen), Vec::<String>::new(), "{seen:?}");
        assert!(!seen.is_empty());
    }
    assert_eq!(w.ctx.metrics().total_writes(), before);
}

#[tokio::test]
async fn the_relays_getting_ready_is_a_status_write_and_an_event() {
    let w = World::new(minimal());
    w.reconcile().await;
    w.mark(&w.daemonset(), 2, 2);
    w.fake.take_seen();
    w.reconcile().await;
    assert_eq!(
        writes(&w.fake.take_seen()),
        [format!("PATCH {TC_PATH}/status"), EVENT.to_owned()]
    );
    let st = w.status();
    assert_eq!(st.ready_relays, Some(2));
    assert_eq!(st.condition("Ready").unwrap().reason, "RelaysReady");
    assert_eq!(
        st.condition("Progressing").unwrap().status,
        api::ConditionStatus::False
    );
}

#[tokio::test]
async fn drift_is_repaired_and_only_there() {
    let w = World::new(minimal());
    w.reconcile().await;
    let path = "/api/v1/namespaces/media/configmaps/minimal-relay";
    let mut cm = w.fake.get(path).unwrap();
    cm["data"]["relay.toml"] = "realm = \"hand-edited\"\n".into();
    w.fake.put(path, cm);
    w.fake.take_seen();
    w.reconcile().await;
    assert_eq!(
        writes(&w.fake.take_seen()),
        [format!("PATCH {path}"), EVENT.to_owned()]
    );
    let cm = w.fake.get(path).unwrap();
    assert!(
        cm["data"]["relay.toml"]
            .as_str()
            .unwrap()
            .contains("realm = \"example.org\"")
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_once_and_changes_nothing() {
    let w = World::new(minimal());
    w.reconcile().await;
    let cm_before = w
        .fake
        .get("/api/v1/namespaces/media/configmaps/minimal-relay")
        .unwrap();
    w.edit_spec(|s| {
        s["realm"] = "".into();
        s["publicAddress"]["addresses"] = json!([]);
    });
    w.fake.take_seen();
    let action = w.reconcile().await;
    assert_eq!(
        action,
        Action::await_change(),
        "no requeue: the user must act"
    );
    assert_eq!(
        writes(&w.fake.take_seen()),
        [format!("PATCH {TC_PATH}/status"), EVENT.to_owned()],
        "the status and a Warning event, no object touched"
    );
    let st = w.status();
    let degraded = st.condition("Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidSpec");
    assert_eq!(
        degraded.message,
        "spec.realm: must not be empty; spec.publicAddress.addresses: policy Explicit needs at \
         least one address"
    );
    assert_eq!(st.observed_generation, Some(2));
    assert_eq!(
        st.endpoints,
        ["203.0.113.10"],
        "the running relays are still there"
    );
    assert_eq!(
        w.fake
            .get("/api/v1/namespaces/media/configmaps/minimal-relay")
            .unwrap(),
        cm_before
    );
    // Reconciled again (a resync, an owned object's event): nothing new to say.
    w.reconcile().await;
    assert_eq!(writes(&w.fake.take_seen()), Vec::<String>::new());
}

#[tokio::test]
async fn a_malformed_turncluster_is_reported_not_fatal() {
    let mut spec = minimal();
    spec["listeners"] = json!([{"protocol": "QUIC"}]);
    let w = World::new(spec);
    assert_eq!(w.reconcile().await, Action::await_change());
    let st = w.status();
    let degraded = st.condition("Degraded").unwrap();
    assert_eq!(degraded.reason, "InvalidSpec");
    assert!(
        degraded
            .message
            .starts_with("spec.listeners[0].protocol: unknown variant `QUIC`"),
        "{}",
        degraded.message
    );
}

#[tokio::test]
async fn switching_placement_replaces_the_workload() {
    let w = World::new(minimal());
    w.reconcile().await;
    let ds = w.daemonset();
    w.edit_spec(|s| s["placement"] = json!({"mode": "Deployment", "replicas": 2}));
    w.fake.take_seen();
    w.reconcile().await;
    let writes = writes(&w.fake.take_seen());
    assert!(
        writes
            .contains(&"PATCH /apis/apps/v1/namespaces/media/deployments/minimal-relay".to_owned()),
        "{writes:?}"
    );
    assert!(writes.contains(&format!("DELETE {ds}")), "{writes:?}");
    assert!(w.daemonsets().is_empty());
    assert!(
        !writes.iter().any(|w| w.contains("configmaps")),
        "the config does not depend on the placement here: {writes:?}"
    );
}

#[tokio::test]
async fn an_object_owned_by_something_else_is_left_alone() {
    let w = World::new(minimal());
    let path = "/api/v1/namespaces/media/configmaps/minimal-relay";
    let theirs = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "minimal-relay", "namespace": "media", "uid": "someone-else"},
        "data": {"mine": "yes"}});
    w.fake.put(path, theirs.clone());
    w.reconcile().await;
    let seen = writes(&w.fake.take_seen());
    assert!(!seen.iter().any(|s| s.contains("configmaps")), "{seen:?}");
    assert_eq!(w.fake.get(path).unwrap(), theirs);
    let degraded = w.status().condition("Degraded").cloned().unwrap();
    assert_eq!(degraded.reason, "NameConflict");
    assert!(
        degraded.message.contains("ConfigMap minimal-relay"),
        "{}",
        degraded.message
    );
}

/// A relay's `/readyz` stand-in on loopback, answering every request with `body` (settable);
/// stopped when dropped.
struct Readyz {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Readyz {
    async fn start(body: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body.to_owned()));
        let answer = body.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request).await;
                let body = answer.lock().unwrap().clone();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        Self { addr, body, task }
    }

    fn set(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_owned();
    }
}

impl Drop for Readyz {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PODS_PATH: &str = "/api/v1/namespaces/media/pods";

/// The relay pods as the API server lists them: one ready relay whose metrics port is `addr`'s.
fn relay_pods(addr: SocketAddr) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
        "items": [{
            "metadata": {"name": "minimal-relay-x7k2p", "namespace": "media",
                "labels": {"app.kubernetes.io/name": "xdpturn-relay",
                    "app.kubernetes.io/instance": "minimal"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "relay",
                "ports": [{"name": "metrics", "containerPort": addr.port()}]}]},
            "status": {"phase": "Running", "podIP": addr.ip().to_string(),
                "conditions": [{"type": "Ready", "status": "True"}]}}]})
}

#[tokio::test]
async fn a_relay_without_the_fast_path_asked_for_degrades_with_an_event() {
    let relay = Readyz::start("ready\ndatapath: userspace (xdp unavailable: load)\n").await;
    let mut spec = minimal();
    spec["xdp"] = json!({"enabled": true, "interfaces": ["eth0"]});
    let w = World::new(spec);
    w.fake.put(PODS_PATH, relay_pods(relay.addr));
    w.reconcile().await;
    let seen = w.fake.take_seen();
    let listed: Vec<&Seen> = seen.iter().filter(|s| s.path == PODS_PATH).collect();
    assert_eq!(listed.len(), 1, "{seen:?}");
    assert_eq!(listed[0].method, Method::GET);
    assert!(
        listed[0].query.contains(
            "labelSelector=app.kubernetes.io%2Finstance%3Dminimal%2Capp.kubernetes.io%2Fname%3Dxdpturn-relay"
        ),
        "only this TurnCluster's relays: {}",
        listed[0].query
    );
    let degraded = w.status().condition("Degraded").cloned().unwrap();
    assert_eq!(
        (degraded.status, degraded.reason.as_str()),
        (api::ConditionStatus::True, "XdpUnavailable")
    );
    assert!(
        degraded
            .message
            .contains("unavailable on 1 of 1 relays, which relay everything in userspace: minimal-relay-x7k2p on node-1 (load)"),
        "{}",
        degraded.message
    );
    let warnings: Vec<Value> = w
        .fake
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "Warning")
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["reason"], "XdpUnavailable");
    assert_eq!(warnings[0]["note"], degraded.message.as_str());

    // Asked again, the relay says the same: no write, no event.
    w.reconcile().await;
    assert_eq!(writes(&w.fake.take_seen()), Vec::<String>::new());

    // The relay restarted with the fast path: Degraded is over.
    relay.set("ready\ndatapath: xdp\n");
    w.reconcile().await;
    assert_eq!(
        writes(&w.fake.take_seen()),
        [format!("PATCH {TC_PATH}/status")]
    );
    let degraded = w.status().condition("Degraded").cloned().unwrap();
    assert_eq!(degraded.reason, "AsExpected");
}

#[tokio::test]
async fn without_xdp_relays_are_not_asked() {
    let relay = Readyz::start("ready\ndatapath: userspace (xdp unavailable: load)\n").await;
    let w = World::new(minimal());
    w.fake.put(PODS_PATH, relay_pods(relay.addr));
    w.reconcile().await;
    let seen = w.fake.take_seen();
    assert!(!seen.iter().any(|s| s.path == PODS_PATH), "{seen:?}");
    assert_eq!(
        w.status().condition("Degraded").unwrap().reason,
        "AsExpected"
    );
}

/// The events saying what a reconcile wrote: a reason for each kind of change, a note naming
/// the objects and what happens to the relays, and a new event for each new change (kube's
/// recorder alone would count a second change as the first one again).
#[tokio::test]
async fn each_change_has_its_own_event_saying_what_happens_to_the_relays() {
    let w = World::new(minimal());
    let events = |w: &World| -> Vec<(String, String)> {
        w.fake
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "Normal")
            .map(|e| {
                (
                    e["reason"].as_str().unwrap().to_owned(),
                    e["note"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    w.reconcile().await;
    let created = events(&w);
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(created[0].0, "Created");
    assert!(
        created[0].1.starts_with(
            "generation 1: created ServiceAccount minimal-relay, ConfigMap minimal-relay"
        ) && created[0].1.contains("DaemonSet minimal-relay")
            && created[0].1.ends_with(": relays start"),
        "{created:?}"
    );

    // A config-only change: the ConfigMap and the DaemonSet's checksum annotation; no relay
    // is replaced, they reload in place.
    w.edit_spec(|s| s["quotas"] = json!({"userQuota": 20}));
    w.fake.take_seen();
    w.reconcile().await;
    let seen = w.fake.take_seen();
    assert!(
        seen.iter()
            .any(|s| s.method == Method::POST && s.path.contains("/events")),
        "a new event, not a count on the first: {seen:?}"
    );
    let e = events(&w);
    assert_eq!(e.len(), 2, "{e:?}");
    let ds = w.daemonset();
    let ds_name = ds.rsplit('/').next().unwrap();
    assert_eq!(
        e[1],
        (
            "ReloadingConfig".to_owned(),
            format!(
                "generation 2: updated ConfigMap minimal-relay, DaemonSet {ds_name}: relays \
                 reload relay.toml in place, without restarting or dropping allocations"
            )
        )
    );

    // Another config change is another event, not the first one counted again.
    w.edit_spec(|s| s["quotas"] = json!({"userQuota": 30}));
    w.reconcile().await;
    let e = events(&w);
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(e[2].0, "ReloadingConfig");
    assert!(e[2].1.starts_with("generation 3: "), "{e:?}");

    // A change that needs new pods: the image.
    w.edit_spec(|s| s["image"] = "xdpturn/xdpturn-relay:next".into());
    w.reconcile().await;
    let e = events(&w);
    assert_eq!(e.len(), 4, "{e:?}");
    assert_eq!(e[3].0, "ReplacingRelays");
    let new = w.daemonsets().into_iter().find(|d| *d != ds).unwrap();
    let new_name = new.rsplit('/').next().unwrap();
    assert!(
        e[3].1.starts_with(&format!(
            "generation 4: created DaemonSet {new_name}: the pod template changed, a new relay \
             starts next to the old one on each node"
        )),
        "{e:?}"
    );
    // Nothing new: no event.
    w.reconcile().await;
    assert_eq!(events(&w).len(), 4);
}

/// The labels and owner of a relay DaemonSet of TurnCluster `minimal` owned by `uid`.
fn relay_daemonset(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "media", "generation": 1,
            "labels": {"app.kubernetes.io/name": "xdpturn-relay",
                "app.kubernetes.io/instance": "minimal", "app.kubernetes.io/component": "relay",
                "app.kubernetes.io/part-of": "xdpturn",
                "app.kubernetes.io/managed-by": "xdpturn-operator"},
            "ownerReferences": [{"apiVersion": "xdpturn.io/v1alpha1", "kind": "TurnCluster",
                "name": "minimal", "uid": uid, "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "xdpturn-relay",
            "app.kubernetes.io/instance": "minimal"}}}})
}

/// A change that needs new pods in DaemonSet mode: a new revision's DaemonSet next to the old
/// one, which keeps serving while the new relays are not all ready (a bad image never gets
/// there), and goes once they are: a background delete, counted, with an event.
#[tokio::test]
async fn a_new_revision_surges_and_the_old_one_goes_only_once_it_is_ready() {
    let w = World::new(minimal());
    w.reconcile().await;
    let old = w.daemonset();
    w.mark(&old, 2, 2);
    w.reconcile().await;
    w.edit_spec(|s| s["image"] = "xdpturn/xdpturn-relay:broken".into());
    w.fake.take_seen();
    w.reconcile().await;
    let all = w.daemonsets();
    assert_eq!(all.len(), 2, "{all:?}");
    let new = all.iter().find(|d| **d != old).unwrap().clone();
    let (old_name, new_name) = (
        old.rsplit('/').next().unwrap().to_owned(),
        new.rsplit('/').next().unwrap().to_owned(),
    );
    assert_eq!(
        writes(&w.fake.take_seen()),
        [
            format!("PATCH {new}"),
            format!("PATCH {TC_PATH}/status"),
            EVENT.to_owned()
        ]
    );
    let st = w.status();
    assert_eq!(st.condition("Ready").unwrap().reason, "RelaysReady");
    let progressing = st.condition("Progressing").unwrap();
    assert_eq!(progressing.reason, "WaitingForNewRelays");
    assert!(
        progressing
            .message
            .contains(&format!("DaemonSet {new_name}"))
            && progressing
                .message
                .contains(&format!("(DaemonSet {old_name}) keep serving")),
        "{}",
        progressing.message
    );

    // The new relays never get ready: the old ones stay, whatever happens.
    w.mark(&new, 2, 0);
    for _ in 0..3 {
        w.reconcile().await;
    }
    assert_eq!(w.daemonsets().len(), 2);
    let st = w.status();
    assert_eq!(st.ready_relays, Some(2));
    assert_eq!(
        st.condition("Ready").unwrap().status,
        api::ConditionStatus::True
    );
    assert!(
        st.condition("Progressing")
            .unwrap()
            .message
            .contains(": 0/2 ready, 2/2 updated"),
        "{:?}",
        st.condition("Progressing")
    );
    assert_eq!(
        w.ctx
            .metrics()
            .writes
            .with_label_values(&["DaemonSet", "delete"])
            .get(),
        0
    );

    // Every new relay ready: the old revision goes, in the background (its pods drain).
    w.mark(&new, 2, 2);
    w.fake.take_seen();
    w.reconcile().await;
    let seen = w.fake.take_seen();
    let deletes: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::DELETE).collect();
    assert_eq!(deletes.len(), 1, "{seen:?}");
    assert_eq!(deletes[0].path, old);
    assert!(
        deletes[0]
            .body
            .contains("\"propagationPolicy\":\"Background\""),
        "{}",
        deletes[0].body
    );
    assert_eq!(w.daemonsets(), std::slice::from_ref(&new));
    assert_eq!(
        w.ctx
            .metrics()
            .writes
            .with_label_values(&["DaemonSet", "delete"])
            .get(),
        1
    );
    let st = w.status();
    assert_eq!(
        (
            st.condition("Progressing").unwrap().reason.as_str(),
            st.condition("Ready").unwrap().reason.as_str()
        ),
        ("Stable", "RelaysReady")
    );
    let retired: Vec<String> = w
        .fake
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "RetiringOldRelays")
        .map(|e| e["note"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        retired,
        [format!(
            "generation 2: deleted DaemonSet {old_name}: the relays of {new_name} are ready on \
             every node; the older revisions' relays drain their allocations and stop"
        )]
    );
    // Nothing left to do.
    w.reconcile().await;
    assert_eq!(writes(&w.fake.take_seen()), Vec::<String>::new());
}

/// An operator from before revisions left `minimal-relay`: it is an old revision like any other,
/// serving until the first revision's relays are ready. A DaemonSet with the same labels that
/// another owner holds is never touched.
#[tokio::test]
async fn the_daemonset_from_before_revisions_serves_until_the_new_one_is_ready() {
    let w = World::new(minimal());
    w.fake
        .put(DS_PATH, relay_daemonset("minimal-relay", "tc-uid-1"));
    w.mark(DS_PATH, 3, 3);
    let foreign = format!("{DS_PATH}-theirs");
    w.fake.put(
        &foreign,
        relay_daemonset("minimal-relay-theirs", "someone-else"),
    );
    w.reconcile().await;
    let all = w.daemonsets();
    assert_eq!(all.len(), 3, "{all:?}");
    let new = all
        .iter()
        .find(|d| **d != DS_PATH && **d != foreign)
        .unwrap()
        .clone();
    let st = w.status();
    assert_eq!(
        (st.ready_relays, st.desired_relays),
        (Some(3), Some(3)),
        "the old relays count while the new DaemonSet's controller has not"
    );
    assert_eq!(st.condition("Ready").unwrap().reason, "RelaysReady");
    let progressing = st.condition("Progressing").unwrap();
    assert_eq!(progressing.reason, "WaitingForNewRelays");
    assert!(
        progressing
            .message
            .contains("(DaemonSet minimal-relay) keep serving"),
        "{}",
        progressing.message
    );

    w.mark(&new, 3, 3);
    w.reconcile().await;
    assert_eq!(w.daemonsets(), [new, foreign]);
}
