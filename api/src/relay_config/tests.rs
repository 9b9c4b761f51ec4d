//! The config file schema: defaults, TOML round trips, key spelling, the `xdp-mode` names (the
//! flags' merge over it is tested with the relay's flags, in relay/src/serve/load/tests.rs).

use super::*;

#[test]
fn empty_file_is_the_default() {
    let parsed: RelayConfig = toml::from_str("").expect("empty config parses");
    assert_eq!(parsed, RelayConfig::default());
    assert_eq!(parsed.listen.len(), 2);
    assert!(
        parsed
            .listen
            .iter()
            .all(|a| a.port() == DEFAULT_LISTEN_PORT)
    );
    assert!(!parsed.has_credentials());
}

#[test]
fn tls_defaults_to_5349_on_the_listen_addresses() {
    let cfg = RelayConfig::default();
    let want: Vec<SocketAddr> = vec![
        "0.0.0.0:5349".parse().expect("addr"),
        "[::]:5349".parse().expect("addr"),
    ];
    assert_eq!(cfg.default_tls_listen(), want);
    let cfg = RelayConfig {
        listen: ["10.0.0.1:3478", "10.0.0.1:3479", "127.0.0.1:0"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect(),
        ..RelayConfig::default()
    };
    let want: Vec<SocketAddr> = vec![
        "10.0.0.1:5349".parse().expect("addr"),
        "127.0.0.1:0".parse().expect("addr"),
    ];
    assert_eq!(cfg.default_tls_listen(), want);
}

#[test]
fn round_trips_through_toml() {
    let cfg = RelayConfig {
        listen: vec!["127.0.0.1:3479".parse().expect("addr")],
        software: String::new(),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        users: vec!["alice:secret".into()],
        auth_secrets: vec!["s3cret".into()],
        relay_ips: vec!["192.0.2.1".parse().expect("ip")],
        external_ips: vec!["198.51.100.1/10.0.0.1".into()],
        allow_peers: vec!["10.0.0.0/8".into()],
        max_bps: 1_000_000,
        ..RelayConfig::default()
    };
    let text = toml::to_string(&cfg).expect("serialize");
    let back: RelayConfig = toml::from_str(&text).expect("parse");
    assert_eq!(back, cfg);
    assert!(back.has_credentials());
}

#[test]
fn kebab_case_keys_and_unknown_keys_are_rejected() {
    let cfg: RelayConfig =
        toml::from_str("min-port = 40000\nmax-port = 40100\nauth-secrets = [\"a\", \"b\"]")
            .expect("parses");
    assert_eq!((cfg.min_port, cfg.max_port), (40000, 40100));
    assert_eq!(cfg.auth_secrets.len(), 2);
    let err = toml::from_str::<RelayConfig>("listne = []").expect_err("typo must not pass");
    assert!(err.to_string().contains("listne"), "{err}");
}

#[test]
fn xdp_mode_is_written_by_name_and_read_with_its_aliases() {
    let cfg = RelayConfig {
        xdp_mode: XdpMode::Skb,
        ..RelayConfig::default()
    };
    let text = toml::to_string(&cfg).expect("serialize");
    assert!(text.contains("xdp-mode = \"skb\"\n"), "{text}");
    assert!(
        toml::to_string(&RelayConfig::default())
            .expect("serialize")
            .contains("xdp-mode = \"auto\"\n")
    );
    for (name, mode) in [
        ("native", XdpMode::Native),
        ("driver", XdpMode::Native),
        ("drv", XdpMode::Native),
        ("skb", XdpMode::Skb),
        ("generic", XdpMode::Skb),
        ("tc", XdpMode::Tc),
        ("auto", XdpMode::Auto),
    ] {
        let cfg: RelayConfig = toml::from_str(&format!("xdp-mode = \"{name}\"")).expect(name);
        assert_eq!(cfg.xdp_mode, mode);
        assert_eq!(name.parse::<XdpMode>(), Ok(mode));
    }
    let err = toml::from_str::<RelayConfig>("xdp-mode = \"fast\"").expect_err("unknown mode");
    assert!(
        err.to_string()
            .contains("unknown XDP mode `fast` (expected native, tc, skb or auto)"),
        "{err}"
    );
    assert_eq!(XdpMode::Native.to_string(), "native");
    assert_eq!(XdpMode::Tc.to_string(), "tc");
    let cfg = RelayConfig {
        xdp_mode: XdpMode::Tc,
        ..RelayConfig::default()
    };
    let text = toml::to_string(&cfg).expect("serialize");
    assert!(text.contains("xdp-mode = \"tc\"\n"), "{text}");
    let back: RelayConfig = toml::from_str(&text).expect("round trip");
    assert_eq!(back.xdp_mode, XdpMode::Tc);
}
