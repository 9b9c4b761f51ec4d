//! The xdpturn operator: validate -> build -> apply -> status.
//!
//! Only the first step exists so far: [`validate`], a pure check of a `TurnCluster` spec for
//! what the CRD schema cannot express (or what an API server with an older schema let through).
//! The build/apply/status steps and the reconcile loop come with a later issue.

use api::TurnClusterSpec;

/// Checks a spec; on failure returns every problem found, each a sentence a user can act on,
/// naming the field by its YAML path.
pub fn validate(spec: &TurnClusterSpec) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    if spec.realm.trim().is_empty() {
        problems.push("spec.realm must not be empty".to_owned());
    }
    for (i, listener) in spec.listeners.iter().enumerate() {
        if !(1..=65535).contains(&listener.port) {
            problems.push(format!(
                "spec.listeners[{i}].port is {}, it must be between 1 and 65535",
                listener.port
            ));
        }
    }
    if let Some(replicas) = spec.replicas
        && replicas < 0
    {
        problems.push(format!(
            "spec.replicas is {replicas}, it must not be negative"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use api::{Listener, ListenerProtocol};

    fn spec(json: &str) -> TurnClusterSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn minimal_spec_is_valid() {
        assert_eq!(validate(&spec(r#"{"realm":"example.org"}"#)), Ok(()));
    }

    #[test]
    fn full_spec_is_valid() {
        let s = spec(
            r#"{"realm":"example.org","replicas":0,"image":"xdpturn/relay:0.1.0",
                "listeners":[{"protocol":"UDP","port":1},{"protocol":"TCP","port":65535}]}"#,
        );
        assert_eq!(validate(&s), Ok(()));
    }

    #[test]
    fn empty_realm_is_rejected() {
        assert_eq!(
            validate(&spec(r#"{"realm":"  "}"#)),
            Err(vec!["spec.realm must not be empty".to_owned()])
        );
    }

    #[test]
    fn out_of_range_ports_and_negative_replicas_are_all_reported() {
        let mut s = spec(r#"{"realm":"r","replicas":-1}"#);
        s.listeners = vec![
            Listener {
                protocol: ListenerProtocol::Udp,
                port: 0,
            },
            Listener {
                protocol: ListenerProtocol::Tcp,
                port: 3478,
            },
            Listener {
                protocol: ListenerProtocol::Tcp,
                port: 65536,
            },
        ];
        assert_eq!(
            validate(&s),
            Err(vec![
                "spec.listeners[0].port is 0, it must be between 1 and 65535".to_owned(),
                "spec.listeners[2].port is 65536, it must be between 1 and 65535".to_owned(),
                "spec.replicas is -1, it must not be negative".to_owned(),
            ])
        );
    }
}
