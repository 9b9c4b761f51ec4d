//! Credentials as coturn's `turnadmin` makes them: the long-term key of a user, and time-limited
//! REST credentials from a shared secret (coturn's `use-auth-secret`; the "TURN REST API" draft,
//! draft-uberti-behave-turn-rest).

use serde::Serialize;

use crate::stun::long_term_key_md5;

/// The long-term key as `turnadmin -k` prints it: `0x` and the hex MD5 of `user:realm:password`.
pub fn key_hex(user: &str, realm: &str, password: &str) -> String {
    let key = long_term_key_md5(user, realm, password);
    let mut out = String::with_capacity(2 + 2 * key.len());
    out.push_str("0x");
    for b in key {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A time-limited credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestCredential {
    /// `<unix-expiry>` or `<unix-expiry>:<user>`.
    pub username: String,
    /// base64(HMAC-SHA1(secret, username)).
    pub password: String,
    /// Unix time after which the relay refuses it.
    pub expires: u64,
}

/// The password a relay sharing `secret` expects for `username`; the relay checks it in
/// [`crate::proto::auth`], where it is defined.
pub use crate::proto::auth::rest_password;

/// A credential valid until `expires` (Unix seconds), for `user` if given.
pub fn rest_credential(secret: &[u8], user: Option<&str>, expires: u64) -> RestCredential {
    let username = match user {
        Some(user) if !user.is_empty() => format!("{expires}:{user}"),
        _ => expires.to_string(),
    };
    let password = rest_password(secret, &username);
    RestCredential {
        username,
        password,
        expires,
    }
}

/// One entry of `RTCPeerConnection`'s `iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The `iceServers` entries for `uris` with `credential`; `stun:` URIs carry no credential.
pub fn ice_servers(uris: &[String], credential: &RestCredential) -> Vec<IceServer> {
    let (stun, turn): (Vec<_>, Vec<_>) = uris
        .iter()
        .cloned()
        .partition(|u| u.starts_with("stun:") || u.starts_with("stuns:"));
    let mut out = Vec::new();
    if !stun.is_empty() {
        out.push(IceServer {
            urls: stun,
            username: None,
            credential: None,
        });
    }
    if !turn.is_empty() {
        out.push(IceServer {
            urls: turn,
            username: Some(credential.username.clone()),
            credential: Some(credential.password.clone()),
        });
    }
    out
}

/// Checks that `uri` is a STUN or TURN URI (RFC 7064, RFC 7065) a browser would take.
pub fn check_uri(uri: &str) -> Result<(), String> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(format!(
            "{uri:?} has no scheme: expected turn:, turns:, stun: or stuns:"
        ));
    };
    if !matches!(scheme, "turn" | "turns" | "stun" | "stuns") {
        return Err(format!(
            "{uri:?}: scheme {scheme:?} is not turn, turns, stun or stuns"
        ));
    }
    let host = rest.split(['?', ':']).next().unwrap_or_default();
    let host = if rest.starts_with('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host
    };
    if host.is_empty() || host.starts_with("//") {
        return Err(format!(
            "{uri:?}: expected {scheme}:HOST[:PORT][?transport=udp|tcp], without //"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_matches_turnadmin_format() {
        // `turnadmin -k -u user -r realm -p pass` prints this line.
        assert_eq!(
            key_hex("user", "realm", "pass"),
            "0x8493fbc53ba582fb4c044c456bdc40eb"
        );
    }

    #[test]
    fn rest_password_is_base64_hmac_sha1() {
        // Independently: printf '1700000000:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
        let cred = rest_credential(b"s3cret", Some("alice"), 1_700_000_000);
        assert_eq!(cred.username, "1700000000:alice");
        assert_eq!(cred.password, "TtElzSjT0GdnTQ9xdcRNxx96yQs=");
        let bare = rest_credential(b"s3cret", None, 1_700_000_000);
        assert_eq!(bare.username, "1700000000");
    }

    #[test]
    fn ice_servers_split_stun_and_turn() {
        let cred = rest_credential(b"k", Some("u"), 1);
        let uris = vec![
            "stun:example.org".to_owned(),
            "turn:example.org:3478?transport=udp".to_owned(),
        ];
        let servers = ice_servers(&uris, &cred);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].username, None);
        assert_eq!(servers[1].username.as_deref(), Some("1:u"));
        let json = serde_json::to_string(&servers).expect("json");
        assert!(json.starts_with(r#"[{"urls":["stun:example.org"]},{"urls":["turn:example.org:3478?transport=udp"],"username":"1:u","credential":""#), "{json}");
    }

    #[test]
    fn uris_are_checked() {
        assert!(check_uri("turn:turn.example.org:3478?transport=tcp").is_ok());
        assert!(check_uri("turns:[2001:db8::1]:5349").is_ok());
        assert!(check_uri("stun:203.0.113.1").is_ok());
        assert!(check_uri("turn://example.org").is_err());
        assert!(check_uri("http:example.org").is_err());
        assert!(check_uri("example.org:3478").is_err());
    }
}
