//! The HTTP side through its router, without a socket: /metrics, /healthz, /readyz and the
//! credentials endpoint.

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
        let (status, _, text) = body(issue(&config(), &bearer(TOKEN), Some(query), b"", NOW)).await;
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

/// GET `uri` without a token: status and body.
async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    let r = app
        .clone()
        .oneshot(request("GET", uri, None))
        .await
        .expect("infallible");
    let (status, _, text) = body(r).await;
    (status, text)
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
    let app = router(metrics, api.clone(), None);
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
    let app = router(metrics.clone(), Arc::new(Api::default()), None);
    let readyz = || get(&app, "/readyz");
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
    let app = router(metrics.clone(), Arc::new(Api::default()), None);
    metrics.ready.set(1);
    metrics.xdp_attached.set(1);
    metrics.xdp_fallbacks.with_label_values(&["full"]).inc();
    assert_eq!(
        get(&app, "/readyz").await,
        (StatusCode::OK, "ready\ndatapath: xdp\n".to_owned())
    );
}

#[tokio::test]
async fn readyz_says_whether_the_user_database_answers() {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let app = router(metrics.clone(), Arc::new(Api::default()), None);
    metrics.ready.set(1);
    // None configured: no line.
    assert_eq!(
        get(&app, "/readyz").await,
        (StatusCode::OK, "ready\n".to_owned())
    );
    metrics.userdb_configured.set(1);
    metrics.userdb_up.set(1);
    assert_eq!(
        get(&app, "/readyz").await,
        (StatusCode::OK, "ready\nuserdb: up\n".to_owned())
    );
    // Down: still ready (what was read last serves), and said.
    metrics.userdb_up.set(0);
    metrics.xdp_attached.set(1);
    assert_eq!(
        get(&app, "/readyz").await,
        (
            StatusCode::OK,
            "ready\ndatapath: xdp\nuserdb: down (serving with what was last read)\n".to_owned()
        )
    );
}

#[tokio::test]
async fn readyz_answers_only_for_its_own_revision() {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    metrics.ready.set(1);
    let app = router(
        metrics.clone(),
        Arc::new(Api::default()),
        Some("abc".into()),
    );
    assert_eq!(
        get(&app, "/readyz?revision=abc").await,
        (StatusCode::OK, "ready\n".to_owned())
    );
    assert_eq!(
        get(&app, "/readyz?x=1&revision=new").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: this relay is revision abc, not new\n".to_owned()
        )
    );
    // No revision asked: as before.
    assert_eq!(get(&app, "/readyz").await.0, StatusCode::OK);
    // A relay run without --revision answers any.
    let app = router(metrics, Arc::new(Api::default()), None);
    assert_eq!(get(&app, "/readyz?revision=new").await.0, StatusCode::OK);
}

#[tokio::test]
async fn readyz_says_busy_while_another_program_holds_the_interfaces() {
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let app = router(metrics.clone(), Arc::new(Api::default()), None);
    let readyz = || async { get(&app, "/readyz").await.1 };
    metrics.ready.set(1);
    metrics.xdp_waiting.set(2);
    assert_eq!(
        readyz().await,
        "ready\ndatapath: userspace (xdp unavailable: busy)\n"
    );
    // One of them attached: the fast path runs.
    metrics.xdp_waiting.set(1);
    metrics.xdp_attached.set(1);
    assert_eq!(readyz().await, "ready\ndatapath: xdp\n");
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
