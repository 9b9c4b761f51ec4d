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

/// Binds the HTTP listener; errors here stop start-up with a clear message.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the endpoints until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    api: Arc<Api>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, api)).await
}

/// Every endpoint, with its state.
pub fn router(metrics: Arc<Metrics>, api: Arc<Api>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .route(
            CREDENTIALS_PATH,
            get(credentials_handler).post(credentials_handler),
        )
        .with_state(AppState { metrics, api })
}

#[derive(Debug, Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    api: Arc<Api>,
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

async fn ready_handler(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    let (status, state) = if metrics.ready.get() == 1 {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    match datapath(&metrics) {
        Some(datapath) => (status, format!("{state}\ndatapath: {datapath}\n")),
        None => (status, format!("{state}\n")),
    }
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
/// configured but the program did not load or attach (the log says why, once), and no line when
/// no XDP interface is configured. A contract: documented in README.md (/readyz).
fn datapath(metrics: &Metrics) -> Option<String> {
    if metrics.xdp_attached.get() == 1 {
        return Some("xdp".to_owned());
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
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    const NOW: u64 = 1_700_000_000;
    const TOKEN: &str = "backend-token-1";
    const SECRET: &[u8] = b"s3cret";

    fn config() -> ApiConfig {
        ApiConfig::new(
            Some(TOKEN),
            Some(SECRET),
            vec![
                "turn:turn.example.org:3478?transport=udp".into(),
                "stun:turn.example.org:3478".into(),
            ],
            3600,
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        headers
    }

    async fn body(response: Response) -> (StatusCode, HeaderMap, String) {
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.expect("body");
        (
            parts.status,
            parts.headers,
            String::from_utf8(bytes.to_vec()).expect("utf-8"),
        )
    }

    async fn json(response: Response) -> serde_json::Value {
        let (status, headers, text) = body(response).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        serde_json::from_str(&text).expect("json")
    }

    #[tokio::test]
    async fn issues_a_rest_credential_with_ice_servers() {
        let r = issue(
            &config(),
            &bearer(TOKEN),
            Some("user=alice&ttl=600"),
            b"",
            NOW,
        );
        let v = json(r).await;
        let username = format!("{}:alice", NOW + 600);
        assert_eq!(v["username"], username);
        assert_eq!(v["password"], credentials::rest_password(SECRET, &username));
        assert_eq!(v["ttl"], 600);
        assert_eq!(v["expires"], NOW + 600);
        assert_eq!(v["iceServers"][0]["urls"][0], "stun:turn.example.org:3478");
        assert!(v["iceServers"][0].get("username").is_none());
        assert_eq!(
            v["iceServers"][1]["urls"][0],
            "turn:turn.example.org:3478?transport=udp"
        );
        assert_eq!(v["iceServers"][1]["username"], username);
        assert_eq!(v["iceServers"][1]["credential"], v["password"]);
    }

    #[tokio::test]
    async fn ttl_defaults_and_is_capped() {
        // Asked for a week, the cap (an hour) is granted.
        let v = json(issue(
            &config(),
            &bearer(TOKEN),
            Some("ttl=604800"),
            b"",
            NOW,
        ))
        .await;
        assert_eq!(v["ttl"], 3600);
        assert_eq!(
            v["username"],
            (NOW + 3600).to_string(),
            "no user: bare expiry"
        );
        // Not asked: a day, or the cap when it is shorter.
        let v = json(issue(&config(), &bearer(TOKEN), None, b"", NOW)).await;
        assert_eq!(v["ttl"], 3600);
        let long = ApiConfig::new(Some(TOKEN), Some(SECRET), vec![], 7 * 86_400);
        let v = json(issue(&long, &bearer(TOKEN), None, b"", NOW)).await;
        assert_eq!(v["ttl"], DEFAULT_TTL_SECS);
        assert_eq!(v["iceServers"], serde_json::json!([]));
    }

    #[tokio::test]
    async fn form_body_parameters_are_read() {
        let mut headers = bearer(TOKEN);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let v = json(issue(
            &config(),
            &headers,
            None,
            b"user=bob%40example.org&ttl=60",
            NOW,
        ))
        .await;
        assert_eq!(v["username"], format!("{}:bob@example.org", NOW + 60));
        // Without the form content type, a body is not parameters.
        let v = json(issue(&config(), &bearer(TOKEN), None, b"user=bob", NOW)).await;
        assert_eq!(v["username"], (NOW + 3600).to_string());
    }

    #[tokio::test]
    async fn bad_parameters_are_400() {
        for query in [
            "ttl=0",
            "ttl=-5",
            "ttl=1h",
            "user=a%0Ab",
            &format!("user={}", "x".repeat(MAX_USER_LEN + 1)),
        ] {
            let (status, _, text) =
                body(issue(&config(), &bearer(TOKEN), Some(query), b"", NOW)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
            assert!(text.contains("\"error\""), "{text}");
        }
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_401_with_a_bearer_challenge() {
        let cases = [
            (HeaderMap::new(), r#"Bearer realm="xdpturn""#),
            (
                bearer("backend-token-2"),
                r#"Bearer realm="xdpturn", error="invalid_token""#,
            ),
            (
                bearer(""),
                r#"Bearer realm="xdpturn", error="invalid_token""#,
            ),
            (
                bearer(&format!("{TOKEN}x")),
                r#"Bearer realm="xdpturn", error="invalid_token""#,
            ),
        ];
        for (headers, challenge) in cases {
            let (status, headers, text) =
                body(issue(&config(), &headers, Some("user=a"), b"", NOW)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(headers[header::WWW_AUTHENTICATE], challenge);
            assert!(!text.contains("password"), "{text}");
        }
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {TOKEN}")).expect("header"),
        );
        let (status, _, _) = body(issue(&config(), &basic, None, b"", NOW)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "only the Bearer scheme");
        // The scheme is case-insensitive (RFC 9110 §11.1).
        let mut lower = HeaderMap::new();
        lower.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("bearer {TOKEN}")).expect("header"),
        );
        json(issue(&config(), &lower, None, b"", NOW)).await;
    }

    #[tokio::test]
    async fn off_without_a_token_or_a_secret() {
        for cfg in [
            ApiConfig::default(),
            ApiConfig::new(None, Some(SECRET), vec![], 3600),
            ApiConfig::new(Some(TOKEN), None, vec![], 3600),
        ] {
            assert!(!cfg.enabled());
            let (status, _, _) = body(issue(&cfg, &bearer(TOKEN), None, b"", NOW)).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
    }

    #[test]
    fn debug_never_shows_the_token_or_secret() {
        let text = format!("{:?}", Api::new(config()));
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }

    fn request(method: &str, uri: &str, token: Option<&str>) -> Request<Body> {
        let mut r = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            r = r.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        r.body(Body::empty()).expect("request")
    }

    #[tokio::test]
    async fn routed_get_and_post_follow_reloads() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let api = Arc::new(Api::new(config()));
        let app = router(metrics, api.clone());
        let uri = "/api/v1/credentials?user=alice&ttl=60";

        for method in ["GET", "POST"] {
            let r = app
                .clone()
                .oneshot(request(method, uri, Some(TOKEN)))
                .await
                .expect("infallible");
            let v = json(r).await;
            assert!(
                v["username"]
                    .as_str()
                    .expect("username")
                    .ends_with(":alice"),
                "{v}"
            );
        }
        let r = app
            .clone()
            .oneshot(request("GET", uri, None))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = app
            .clone()
            .oneshot(request("PUT", uri, Some(TOKEN)))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

        // A reload rotates the token: the old one stops working at once, the new one works.
        api.set(ApiConfig::new(Some("rotated"), Some(SECRET), vec![], 3600));
        let r = app
            .clone()
            .oneshot(request("GET", uri, Some(TOKEN)))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let r = app
            .clone()
            .oneshot(request("GET", uri, Some("rotated")))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::OK);
        // And a reload that removes the token turns the endpoint off.
        api.set(ApiConfig::new(None, Some(SECRET), vec![], 3600));
        let r = app
            .oneshot(request("GET", uri, Some("rotated")))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn readyz_says_the_datapath_once_xdp_is_configured() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let app = router(metrics.clone(), Arc::new(Api::default()));
        let readyz = || async {
            let r = app
                .clone()
                .oneshot(request("GET", "/readyz", None))
                .await
                .expect("infallible");
            let (status, _, text) = body(r).await;
            (status, text)
        };
        // No XDP interface configured: the body probes have always had.
        metrics.ready.set(1);
        assert_eq!(readyz().await, (StatusCode::OK, "ready\n".to_owned()));
        // Configured, and the program did not load: userspace, and why.
        metrics.xdp_fallbacks.with_label_values(&["load"]).inc();
        assert_eq!(
            readyz().await,
            (
                StatusCode::OK,
                "ready\ndatapath: userspace (xdp unavailable: load)\n".to_owned()
            )
        );
        metrics.ready.set(0);
        assert_eq!(
            readyz().await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready\ndatapath: userspace (xdp unavailable: load)\n".to_owned()
            )
        );
        // Attached (channel fallbacks, e.g. full maps, do not change the datapath).
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let app = router(metrics.clone(), Arc::new(Api::default()));
        metrics.ready.set(1);
        metrics.xdp_attached.set(1);
        metrics.xdp_fallbacks.with_label_values(&["full"]).inc();
        let r = app
            .oneshot(request("GET", "/readyz", None))
            .await
            .expect("infallible");
        let (status, _, text) = body(r).await;
        assert_eq!(
            (status, text.as_str()),
            (StatusCode::OK, "ready\ndatapath: xdp\n")
        );
    }

    #[test]
    fn fast_path_down_reasons_are_the_load_errors() {
        use crate::dataplane::{DataplaneError, XdpMode};
        let load_errors = [
            DataplaneError::NotBuilt,
            DataplaneError::Unsupported("test"),
            DataplaneError::Load {
                reason: "test".into(),
                source: None,
            },
            DataplaneError::UnknownInterface("test".into()),
            DataplaneError::Attach {
                interface: "test".into(),
                mode: XdpMode::Skb,
                reason: "test".into(),
                source: None,
            },
        ];
        let labels: Vec<&str> = load_errors
            .iter()
            .map(DataplaneError::metric_label)
            .collect();
        assert_eq!(labels, FAST_PATH_DOWN);
    }
}
