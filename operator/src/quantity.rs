//! Kubernetes quantities (`100m`, `1`, `1.5Gi`, `2e3`): syntax for validation, and the value,
//! so that what the API server canonicalizes (`1000m` is stored as `1`) does not look like a
//! change.

/// The value of a quantity, or `None` if it is not one.
pub fn parse(text: &str) -> Option<f64> {
    let s = text.trim();
    if s.is_empty() || s != text {
        return None;
    }
    let (sign, rest) = match s.as_bytes()[0] {
        b'+' => (1.0, &s[1..]),
        b'-' => (-1.0, &s[1..]),
        _ => (1.0, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e = &exp[1..];
            let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(e.parse::<i32>().ok()?)
        }
        _ => return None,
    };
    Some(sign * value * multiplier)
}

/// Whether two quantity strings mean the same amount.
pub fn same(a: &str, b: &str) -> bool {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!(parse("1"), Some(1.0));
        assert_eq!(parse("100m"), Some(0.1));
        assert_eq!(parse("1Gi"), Some(1073741824.0));
        assert_eq!(parse("2e3"), Some(2000.0));
        assert_eq!(parse("-1.5k"), Some(-1500.0));
        assert_eq!(parse(".5"), Some(0.5));
        for bad in ["", "1Q", "abc", "1.2.3", "Mi", "1 Gi", " 1", "1e", "1e+"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn canonical_forms_are_the_same() {
        assert!(same("1000m", "1"));
        assert!(same("1.5Gi", "1536Mi"));
        assert!(same("0.1", "100m"));
        assert!(!same("1", "2"));
        assert!(!same("1", "x"));
    }
}
