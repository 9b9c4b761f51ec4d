//! The HTTP side: `/metrics` for Prometheus, `/healthz` and `/readyz` for orchestrators, and
//! `/api/v1/credentials`, which hands application backends time-limited TURN credentials (what
//! Twilio's Network Traversal Service and Xirsys offer) behind a bearer token.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

use crate::credentials;
use crate::metrics::Metrics;

/// Binds the HTTP listener; errors here stop start-up with a clear message. With
/// SO_REUSEPORT, as the STUN/TURN listeners: a relay that takes over a host's ports from
/// another (serve/handover.rs) binds it beside the old one's, which closes its own then.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Serves the endpoints until the process ends, or until `stop` is notified: then the
/// listener closes (requests in progress are answered), so that the kubelet's probes and the
/// scrapes reach the relay that took the port over.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    api: Arc<Api>,
    revision: Option<Arc<str>>,
    stop: Arc<tokio::sync::Notify>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, api, revision))
        .with_graceful_shutdown(async move { stop.notified().await })
        .await
}

/// Every endpoint, with its state. `revision`: this relay's (`--revision`), for `/readyz`.
pub fn router(metrics: Arc<Metrics>, api: Arc<Api>, revision: Option<Arc<str>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .route(
            CREDENTIALS_PATH,
            get(credentials_handler).post(credentials_handler),
        )
        .with_state(AppState {
            metrics,
            api,
            revision: Revision(revision),
        })
}

#[derive(Debug, Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    api: Arc<Api>,
    revision: Revision,
}

/// This relay's pod template revision, if it was given one.
#[derive(Debug, Clone)]
struct Revision(Option<Arc<str>>);

impl FromRef<AppState> for Revision {
    fn from_ref(state: &AppState) -> Self {
        state.revision.clone()
    }
}

impl FromRef<AppState> for Arc<Metrics> {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

impl FromRef<AppState> for Arc<Api> {
    fn from_ref(state: &AppState) -> Self {
        state.api.clone()
    }
}

async fn metrics_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
}

async fn ready_handler(
    State(metrics): State<Arc<Metrics>>,
    State(Revision(revision)): State<Revision>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    // A probe for another revision: the relay of a new pod that has not taken the host port
    // over yet (serve/handover.rs), or of an old one that has handed it over. Either way not
    // this relay's to answer for.
    if let (Some(mine), Some(asked)) = (
        revision.as_deref(),
        query_value(query.as_deref(), "revision"),
    ) && asked != mine
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: this relay is revision {mine}, not {asked}\n"),
        );
    }
    let (status, state) = if metrics.ready.get() == 1 {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    let mut body = format!("{state}\n");
    if let Some(datapath) = datapath(&metrics) {
        body.push_str(&format!("datapath: {datapath}\n"));
    }
    if let Some(userdb) = userdb(&metrics) {
        body.push_str(&format!("userdb: {userdb}\n"));
    }
    (status, body)
}

/// The user database line of `/readyz` when one is configured: `up`, or `down (serving with
/// what was last read)` while it does not answer. The relay stays ready either way: known users
/// and existing allocations are served from memory. Documented in README.md (/readyz).
fn userdb(metrics: &Metrics) -> Option<&'static str> {
    (metrics.userdb_configured.get() == 1).then(|| {
        if metrics.userdb_up.get() == 1 {
            "up"
        } else {
            "down (serving with what was last read)"
        }
    })
}

/// The value of `key` in a URL query (`a=1&key=v`), undecoded.
fn query_value<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// `xdpturn_xdp_fallbacks_total` reasons that mean the whole fast path did not come up (the
/// others are single channels left to userspace): the `metric_label` of the dataplane errors
/// that `Dataplane::load` returns.
const FAST_PATH_DOWN: [&str; 5] = [
    "not_built",
    "unsupported",
    "load",
    "unknown_interface",
    "attach",
];

/// The datapath line of `/readyz`, for whoever manages the relay (the operator reads it to say
/// in a TurnCluster's status that a relay asked for the fast path runs without it): `xdp` while
/// the program is attached, `userspace (xdp unavailable: <reason>)` when XDP interfaces were
/// configured but the program did not load or attach (the log says why, once), `userspace (xdp
/// unavailable: busy)` while another XDP program holds every configured interface (the relay
/// handing the ports over, until it exits), and no line when no XDP interface is configured. A
/// contract: documented in README.md (/readyz).
fn datapath(metrics: &Metrics) -> Option<String> {
    if metrics.xdp_attached.get() == 1 {
        return Some("xdp".to_owned());
    }
    if metrics.xdp_waiting.get() > 0 {
        return Some("userspace (xdp unavailable: busy)".to_owned());
    }
    FAST_PATH_DOWN
        .iter()
        .find(|reason| metrics.xdp_fallbacks.with_label_values(&[**reason]).get() > 0)
        .map(|reason| format!("userspace (xdp unavailable: {reason})"))
}

// ---------------------------------------------------------------------------------------------
// The credentials endpoint

/// Where application backends ask for credentials.
pub const CREDENTIALS_PATH: &str = "/api/v1/credentials";
/// The lifetime granted when the request names none (capped by the configured maximum).
pub const DEFAULT_TTL_SECS: u64 = 86_400;
/// Longest `user` accepted: `<expiry>:<user>` has to fit a STUN USERNAME (512 bytes).
const MAX_USER_LEN: usize = 256;

/// What the credentials endpoint needs from the configuration; a reload builds a new one.
#[derive(Clone, Default)]
pub struct ApiConfig {
    /// SHA-256 of the bearer token: comparing digests takes the same time whatever the
    /// presented token's length, and the token itself is not kept here.
    token_digest: Option<[u8; 32]>,
    /// The REST shared secret credentials are made with (the first configured one).
    secret: Option<Vec<u8>>,
    uris: Vec<String>,
    max_ttl_secs: u64,
}

impl ApiConfig {
    /// The endpoint's settings; it serves only with both a token and a secret.
    pub fn new(
        token: Option<&str>,
        secret: Option<&[u8]>,
        uris: Vec<String>,
        max_ttl_secs: u64,
    ) -> Self {
        Self {
            token_digest: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            secret: secret.map(<[u8]>::to_vec),
            uris,
            max_ttl_secs: max_ttl_secs.max(1),
        }
    }

    /// Whether `/api/v1/credentials` serves (otherwise it answers 404).
    pub fn enabled(&self) -> bool {
        self.token_digest.is_some() && self.secret.is_some()
    }

    fn check_token(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let Some(expected) = &self.token_digest else {
            return Err("invalid_token");
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(presented) = presented else {
            return Err("");
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if bool::from(digest.ct_eq(expected)) {
            Ok(())
        } else {
            Err("invalid_token")
        }
    }
}

impl fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<none>" };
        f.debug_struct("ApiConfig")
            .field("token", &redacted(self.token_digest.is_some()))
            .field("secret", &redacted(self.secret.is_some()))
            .field("uris", &self.uris)
            .field("max_ttl_secs", &self.max_ttl_secs)
            .finish()
    }
}

/// The HTTP side's view of the configuration: the reload path swaps it whole, and each request
/// reads the current one.
#[derive(Debug, Default)]
pub struct Api {
    current: RwLock<Arc<ApiConfig>>,
}

impl Api {
    pub fn new(config: ApiConfig) -> Self {
        if config.enabled() {
            tracing::info!(path = CREDENTIALS_PATH, "credentials endpoint enabled");
        }
        Self {
            current: RwLock::new(Arc::new(config)),
        }
    }

    /// Installs a reloaded configuration; requests from now on see it.
    pub fn set(&self, config: ApiConfig) {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        if config.enabled() != current.enabled() {
            let state = if config.enabled() {
                "enabled"
            } else {
                "disabled"
            };
            tracing::info!(path = CREDENTIALS_PATH, "credentials endpoint {state}");
        }
        *current = Arc::new(config);
    }

    pub fn get(&self) -> Arc<ApiConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

async fn credentials_handler(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    issue(&api.get(), &headers, query.as_deref(), &body, now)
}

/// The endpoint as a function of the request and the time: 404 when off, 401 without the
/// token, 400 for bad parameters, else a credential valid for the requested (capped) `ttl`.
/// Parameters come from the query string, and for a form-encoded POST from the body too.
fn issue(
    cfg: &ApiConfig,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
    unix_now: u64,
) -> Response {
    let Some(secret) = cfg.secret.as_deref().filter(|_| cfg.enabled()) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    if let Err(error) = cfg.check_token(headers) {
        tracing::debug!(
            path = CREDENTIALS_PATH,
            "credentials request refused: missing or wrong bearer token"
        );
        let challenge = if error.is_empty() {
            r#"Bearer realm="xdpturn""#.to_owned()
        } else {
            format!(r#"Bearer realm="xdpturn", error="{error}""#)
        };
        let mut response = json_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        return response;
    }

    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut user = None;
    let mut ttl = None;
    let from_body = if is_form { body } else { &[] };
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .chain(form_urlencoded::parse(from_body))
    {
        match &*key {
            "user" => user = Some(value.into_owned()),
            "ttl" => ttl = Some(value.into_owned()),
            _ => {}
        }
    }
    let ttl = match ttl.as_deref().map(str::parse::<u64>) {
        None => DEFAULT_TTL_SECS.min(cfg.max_ttl_secs),
        Some(Ok(secs)) if secs > 0 => secs.min(cfg.max_ttl_secs),
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "ttl must be a whole number of seconds, at least 1",
            );
        }
    };
    if let Some(user) = &user
        && (user.len() > MAX_USER_LEN || user.chars().any(char::is_control))
    {
        return json_error(
            StatusCode::BAD_REQUEST,
            "user must be at most 256 bytes, without control characters",
        );
    }

    let expires = unix_now.saturating_add(ttl);
    let cred = credentials::rest_credential(secret, user.as_deref(), expires);
    let ice = credentials::ice_servers(&cfg.uris, &cred);
    tracing::debug!(
        user = user.as_deref().unwrap_or(""),
        ttl,
        "credential issued"
    );
    let body = serde_json::json!({
        "username": cred.username,
        "password": cred.password,
        "ttl": ttl,
        "expires": cred.expires,
        "iceServers": ice,
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{body}\n"),
    )
        .into_response()
}

fn json_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!("{}\n", serde_json::json!({ "error": message })),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
