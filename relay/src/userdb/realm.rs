//! What coturn's user database says about one realm, parsed: its REST shared secrets, its
//! options (`max-bps`, `user-quota`, `total-quota`) and its allowed and denied peer ranges; and
//! the parsing of a user's stored key (`hmackey`). Pure: the backends hand in rows as text.

use std::net::IpAddr;

use ipnet::IpNet;

/// The rows of one realm as a backend read them, unparsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealmRows {
    /// `turn_secret.value`.
    pub secrets: Vec<String>,
    /// `turn_realm_option (opt, value)`.
    pub options: Vec<(String, String)>,
    /// `allowed_peer_ip.ip_range`.
    pub allowed: Vec<String>,
    /// `denied_peer_ip.ip_range`.
    pub denied: Vec<String>,
}

/// One realm's settings from the database, ready to merge into the relay's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RealmData {
    /// REST shared secrets: any of them validates (rotation), with the configured ones.
    pub secrets: Vec<Vec<u8>>,
    /// `user-quota`: allocations per user; replaces the configured value when set.
    pub user_quota: Option<u32>,
    /// `total-quota`: allocations in total; replaces the configured value when set.
    pub total_quota: Option<u32>,
    /// `max-bps`: bandwidth per allocation; replaces the configured value when set.
    pub max_bps: Option<u64>,
    /// Peer ranges allowed even where a built-in rule denies them (with `allow-peer`).
    pub allowed: Vec<IpNet>,
    /// Peer ranges denied in addition to the built-in rules (with `deny-peer`).
    pub denied: Vec<IpNet>,
}

impl RealmData {
    /// Parses a realm's rows; what cannot be parsed is left out and described in the second
    /// value (for the log), so that one bad row does not hide the others.
    pub fn from_rows(rows: &RealmRows) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let mut data = RealmData {
            secrets: rows
                .secrets
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| s.as_bytes().to_vec())
                .collect(),
            ..RealmData::default()
        };
        for (opt, value) in &rows.options {
            let value = value.trim();
            match opt.as_str() {
                "user-quota" => match value.parse() {
                    Ok(v) => data.user_quota = Some(v),
                    Err(_) => problems.push(format!("realm option user-quota={value:?}")),
                },
                "total-quota" => match value.parse() {
                    Ok(v) => data.total_quota = Some(v),
                    Err(_) => problems.push(format!("realm option total-quota={value:?}")),
                },
                "max-bps" => match value.parse() {
                    Ok(v) => data.max_bps = Some(v),
                    Err(_) => problems.push(format!("realm option max-bps={value:?}")),
                },
                other => problems.push(format!("unknown realm option {other:?}")),
            }
        }
        for (list, out) in [
            (&rows.allowed, &mut data.allowed),
            (&rows.denied, &mut data.denied),
        ] {
            for range in list {
                match parse_ip_range(range) {
                    Some(nets) => out.extend(nets),
                    None => problems.push(format!("peer range {range:?}")),
                }
            }
        }
        (data, problems)
    }
}

/// A stored long-term key: 32 hex digits (coturn's `hmackey`, MD5 of `user:realm:password`),
/// with or without the `0x` that `turnadmin -k` prints.
pub fn parse_hmackey(text: &str) -> Option<[u8; 16]> {
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 16];
    for (i, k) in key.iter_mut().enumerate() {
        *k = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// A peer range as coturn stores it: an address, `FIRST-LAST` (inclusive, one family), or a
/// CIDR network; as the networks that cover it exactly.
pub fn parse_ip_range(text: &str) -> Option<Vec<IpNet>> {
    let text = text.trim();
    if let Some((first, last)) = text.split_once('-') {
        let (first, last): (IpAddr, IpAddr) =
            (first.trim().parse().ok()?, last.trim().parse().ok()?);
        return match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                cover(u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => cover(u128::from(a), u128::from(b), 128),
            _ => None,
        };
    }
    api::parse_cidr(text).ok().map(|net| vec![net])
}

/// The fewest networks of a `bits`-wide family that cover `first..=last` exactly.
fn cover(first: u128, last: u128, bits: u32) -> Option<Vec<IpNet>> {
    if first > last {
        return None;
    }
    let mut out = Vec::new();
    let mut at = first;
    loop {
        // The largest block aligned at `at` that does not pass `last`.
        let mut size = if at == 0 {
            bits
        } else {
            at.trailing_zeros().min(bits)
        };
        while size > 0 && block_end(at, size).is_none_or(|end| end > last) {
            size -= 1;
        }
        let prefix = u8::try_from(bits - size).ok()?;
        let net = if bits == 32 {
            IpNet::new(IpAddr::from(u32::try_from(at).ok()?.to_be_bytes()), prefix).ok()?
        } else {
            IpNet::new(IpAddr::from(at.to_be_bytes()), prefix).ok()?
        };
        out.push(net);
        match block_end(at, size) {
            Some(end) if end < last => at = end + 1,
            _ => return Some(out),
        }
    }
}

/// The last address of the block of 2^size addresses starting at `at`.
fn block_end(at: u128, size: u32) -> Option<u128> {
    let len = 1u128.checked_shl(size).map_or(u128::MAX, |n| n - 1);
    at.checked_add(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_turnadmin_stores_them() {
        // `turnadmin -a -u alice -r example.org -p secret` stores this.
        let key = parse_hmackey("543e1aec5d3614f03141652d6ada51b2").expect("key");
        assert_eq!(
            key,
            crate::stun::long_term_key_md5("alice", "example.org", "secret")
        );
        assert_eq!(
            parse_hmackey("0x543e1aec5d3614f03141652d6ada51b2"),
            Some(key)
        );
        assert_eq!(parse_hmackey("543e"), None);
        assert_eq!(parse_hmackey("zz3e1aec5d3614f03141652d6ada51b2"), None);
    }

    #[test]
    fn ranges_become_exact_networks() {
        let nets = |s| {
            parse_ip_range(s)
                .expect(s)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(nets("10.0.0.1"), ["10.0.0.1/32"]);
        assert_eq!(nets("10.0.0.0/8"), ["10.0.0.0/8"]);
        assert_eq!(nets("10.0.0.0-10.0.0.255"), ["10.0.0.0/24"]);
        assert_eq!(
            nets("10.0.0.1-10.0.0.6"),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert_eq!(nets("0.0.0.0-255.255.255.255"), ["0.0.0.0/0"]);
        assert_eq!(nets("2001:db8::-2001:db8::ffff"), ["2001:db8::/112"]);
        assert_eq!(nets("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), ["::/0"]);
        assert!(parse_ip_range("10.0.0.9-10.0.0.1").is_none());
        assert!(parse_ip_range("10.0.0.1-::1").is_none());
        assert!(parse_ip_range("nonsense").is_none());
    }

    #[test]
    fn realm_rows_parse_and_bad_rows_are_named() {
        let rows = RealmRows {
            secrets: vec!["one".into(), "two".into(), String::new()],
            options: vec![
                ("user-quota".into(), "3".into()),
                ("total-quota".into(), "10".into()),
                ("max-bps".into(), "1000".into()),
                ("colour".into(), "blue".into()),
            ],
            allowed: vec!["192.168.1.0-192.168.1.255".into()],
            denied: vec!["203.0.113.7".into(), "bad".into()],
        };
        let (data, problems) = RealmData::from_rows(&rows);
        assert_eq!(data.secrets, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(
            (data.user_quota, data.total_quota, data.max_bps),
            (Some(3), Some(10), Some(1000))
        );
        assert_eq!(data.allowed.len(), 1);
        assert_eq!(data.denied.len(), 1);
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
