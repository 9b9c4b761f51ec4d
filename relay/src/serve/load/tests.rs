//! Loading: the file's settings, the flags over them (environment variables land in the same
//! fields as flags, so they take the flags' place over the file), the checks of the whole, with
//! real files.

use std::path::{Path, PathBuf};

use api::XdpMode;
use clap::{CommandFactory as _, Parser};

use super::*;

/// The relay's serve flags alone, as the binary flattens them.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn args(flags: &[&str]) -> ServeArgs {
    Cli::try_parse_from(std::iter::once("xdpturn-relay").chain(flags.iter().copied()))
        .expect("flags parse")
        .serve
}

/// A config file in the temp dir, removed when dropped.
struct File(PathBuf);

impl File {
    fn new(name: &str, text: &str) -> File {
        let path = std::env::temp_dir().join(format!("xdpturn-load-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write");
        File(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn load(flags: &[&str]) -> Result<RelayConfig, LoadError> {
    load_config(&args(flags))
}

#[test]
fn without_a_file_the_defaults_and_the_flags() {
    let cfg = load(&[]).expect("defaults");
    assert_eq!(cfg, RelayConfig::default());
    let cfg = load(&["--min-port", "40000", "--user", "a:b", "--user", "c:d"]).expect("flags");
    assert_eq!(cfg.min_port, 40000);
    assert_eq!(cfg.max_port, RelayConfig::default().max_port);
    assert_eq!(cfg.users, ["a:b", "c:d"]);
}

#[test]
fn flags_go_over_the_file_and_the_rest_of_the_file_stays() {
    let file = File::new(
        "precedence.toml",
        "realm = \"from-file\"\nmin-port = 40000\nmax-port = 40100\nusers = [\"file:pw\"]\n\
         allow-peers = [\"10.0.0.0/8\"]\ndrain-timeout-secs = 5\nxdp-mode = \"driver\"\n\
         api-token = \"file-token\"\n",
    );
    let cfg = load(&["-c", file.path()]).expect("file alone");
    assert_eq!(cfg.realm, "from-file");
    assert_eq!((cfg.min_port, cfg.max_port), (40000, 40100));
    assert_eq!(cfg.users, ["file:pw"]);
    assert_eq!(cfg.drain_timeout_secs, 5);
    assert_eq!(cfg.xdp_mode, XdpMode::Native);
    assert_eq!(cfg.api_token.as_deref(), Some("file-token"));

    let cfg = load(&[
        "--config",
        file.path(),
        "--realm",
        "from-flag",
        "--max-port",
        "40050",
        "--user",
        "flag:pw",
        "--drain-timeout",
        "2m",
        "--xdp-mode",
        "generic",
        "--api-max-ttl",
        "1h",
    ])
    .expect("file and flags");
    assert_eq!(cfg.realm, "from-flag");
    assert_eq!((cfg.min_port, cfg.max_port), (40000, 40050));
    // A list given replaces the file's list; one not given leaves it.
    assert_eq!(cfg.users, ["flag:pw"]);
    assert_eq!(cfg.allow_peers, ["10.0.0.0/8"]);
    assert_eq!(cfg.drain_timeout_secs, 120);
    assert_eq!(cfg.api_max_ttl_secs, 3600);
    assert_eq!(cfg.xdp_mode, XdpMode::Skb);
    assert_eq!(cfg.api_token.as_deref(), Some("file-token"));
}

#[test]
fn a_token_given_either_way_replaces_the_files_token() {
    let file = File::new("token.toml", "api-token = \"file-token\"\n");
    let cfg = load(&["-c", file.path(), "--api-token-file", "/run/token"]).expect("loads");
    assert_eq!(cfg.api_token, None);
    assert_eq!(cfg.api_token_file, Some(PathBuf::from("/run/token")));
    let file = File::new("token-file.toml", "api-token-file = \"/run/token\"\n");
    let cfg = load(&["-c", file.path(), "--api-token", "t0ken"]).expect("loads");
    assert_eq!(cfg.api_token.as_deref(), Some("t0ken"));
    assert_eq!(cfg.api_token_file, None);
}

#[test]
fn tls_defaults_and_checks() {
    let file = File::new("tls.toml", "cert = \"/tls/cert.pem\"\n");
    let cfg = load(&[
        "-c",
        file.path(),
        "--key",
        "/tls/key.pem",
        "--listen",
        "127.0.0.1:3478",
    ])
    .expect("cert from the file, key from a flag");
    assert_eq!(cfg.cert, Some(PathBuf::from("/tls/cert.pem")));
    assert_eq!(
        cfg.tls_listen,
        ["127.0.0.1:5349".parse().expect("addr")],
        "port 5349 on the listen addresses"
    );

    for (flags, message) in [
        (
            &["--tls-listen", "127.0.0.1:0"][..],
            "TLS needs a certificate and a key: give --cert FILE and --key FILE (or `cert` and \
             `key` in the config file) with --tls-listen",
        ),
        (
            &["--cert", "/tls/cert.pem"][..],
            "TLS needs both a certificate and a key: give --cert FILE and --key FILE (or `cert` \
             and `key` in the config file)",
        ),
        // As before the settings were declared once: the TLS check comes first.
        (
            &["--tls-listen", "127.0.0.1:0", "--xdp-mode", "fast"][..],
            "TLS needs a certificate and a key",
        ),
    ] {
        let err = load(flags).expect_err(message).to_string();
        assert!(err.starts_with(message), "{err}");
    }
}

#[test]
fn tc_mode_is_taken_from_the_flag_and_the_file() {
    let cfg = load(&["--xdp-mode", "tc"]).expect("tc flag");
    assert_eq!(cfg.xdp_mode, XdpMode::Tc);
    let file = File::new("tc.toml", "xdp-mode = \"tc\"\n");
    let cfg = load(&["-c", file.path()]).expect("tc in the file");
    assert_eq!(cfg.xdp_mode, XdpMode::Tc);
    // The flag goes over the file.
    let cfg = load(&["-c", file.path(), "--xdp-mode", "native"]).expect("flag over file");
    assert_eq!(cfg.xdp_mode, XdpMode::Native);
}

#[test]
fn errors_name_the_file_and_the_setting() {
    let err = load(&["--xdp-mode", "fast"]).expect_err("unknown mode");
    assert_eq!(
        err.to_string(),
        "xdp-mode: unknown XDP mode `fast` (expected native, tc, skb or auto)"
    );

    let missing = std::env::temp_dir().join("xdpturn-load-no-such-file.toml");
    let err = load(&["-c", missing.to_str().expect("utf-8")]).expect_err("no file");
    assert_eq!(
        err.to_string(),
        format!("reading config file {}", missing.display())
    );
    assert!(matches!(err, LoadError::Read { .. }));

    let typo = File::new("typo.toml", "listne = []\n");
    let err = load(&["-c", typo.path()]).expect_err("unknown key");
    assert_eq!(
        err.to_string(),
        format!("parsing config file {}", typo.path())
    );
    let cause = std::error::Error::source(&err)
        .expect("the TOML error")
        .to_string();
    assert!(cause.contains("listne"), "{cause}");

    let empty = File::new("empty-listen.toml", "listen = []\n");
    let err = load(&["-c", empty.path()]).expect_err("nothing to listen on");
    assert!(matches!(err, LoadError::NoListenAddress), "{err}");
}

#[test]
fn flags_check_their_values() {
    for (flags, needle) in [
        (&["--api-uri", "turn.example.org"][..], "has no scheme"),
        (&["--api-max-ttl", "0"][..], "positive lifetime"),
        (&["--drain-timeout", "soon"][..], "examples: 3600, 30m"),
        (&["--min-port", "70000"][..], "70000"),
    ] {
        let err =
            Cli::try_parse_from(std::iter::once("xdpturn-relay").chain(flags.iter().copied()))
                .expect_err(needle)
                .to_string();
        assert!(err.contains(needle), "{err}");
    }
    let cfg = load(&["--api-uri", "turn:turn.example.org:3478?transport=udp"]).expect("valid");
    assert_eq!(cfg.api_uris, ["turn:turn.example.org:3478?transport=udp"]);
}

#[test]
fn every_setting_flag_has_its_xdpturn_variable() {
    let cmd = Cli::command();
    let mut flags = 0;
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let env = arg
            .get_env()
            .and_then(|e| e.to_str())
            .unwrap_or_else(|| panic!("--{long} has no environment variable"));
        assert!(env.starts_with("XDPTURN_"), "--{long}: {env}");
        flags += 1;
    }
    // --config, every RelayConfig key but nonce-lifetime-secs, --revision, and the hidden test
    // lifetimes (--channel-lifetime, --allocation-lifetime, --permission-lifetime).
    assert_eq!(flags, 44);
    let listen = cmd
        .get_arguments()
        .find(|a| a.get_long() == Some("listen"))
        .and_then(|a| a.get_env())
        .and_then(|e| e.to_str());
    assert_eq!(listen, Some("XDPTURN_LISTEN"));
}

#[test]
fn stream_limits_have_defaults_and_flags() {
    let defaults = load(&["--listen", "127.0.0.1:3478"]).expect("defaults");
    assert_eq!(
        (
            defaults.tcp_auth_timeout_secs,
            defaults.tcp_idle_timeout_secs,
            defaults.max_tcp_connections_per_ip,
            defaults.max_tcp_connections
        ),
        (30, 600, 1024, 65_536)
    );
    let cfg = load(&[
        "--listen",
        "127.0.0.1:3478",
        "--tcp-auth-timeout",
        "1m",
        "--tcp-idle-timeout",
        "0",
        "--max-tcp-connections-per-ip",
        "10",
        "--max-tcp-connections",
        "100",
    ])
    .expect("flags");
    assert_eq!(cfg.tcp_auth_timeout_secs, 60);
    assert_eq!(cfg.tcp_idle_timeout_secs, 0);
    assert_eq!(
        (cfg.max_tcp_connections_per_ip, cfg.max_tcp_connections),
        (10, 100)
    );
}

#[test]
fn a_written_file_loads_back() {
    let cfg = RelayConfig {
        listen: vec!["127.0.0.1:3479".parse().expect("addr")],
        xdp_mode: XdpMode::Skb,
        auth_secret_files: vec![PathBuf::from("/run/secret")],
        ..RelayConfig::default()
    };
    let file = File::new("written.toml", &toml::to_string(&cfg).expect("serialize"));
    assert_eq!(load(&["-c", file.path()]).expect("loads"), cfg);
    assert!(Path::new(file.path()).exists());
}

#[test]
fn help_lists_software_after_drain_timeout() {
    let help = Cli::command().render_long_help().to_string();
    let at = |flag: &str| {
        help.find(&format!("      {flag} "))
            .unwrap_or_else(|| panic!("{flag} in --help"))
    };
    assert!(at("--workers") < at("--drain-timeout"));
    assert!(at("--drain-timeout") < at("--software"));
    assert!(at("--software") < at("--xdp-interface"));
}
