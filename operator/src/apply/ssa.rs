//! Server-side apply of one built object, with field manager `xdpturn-operator`, and no
//! request at all when nothing changed.
//!
//! Before patching, the desired object is compared with the live one. It is applied when:
//! - it does not exist;
//! - its `xdpturn.io/desired-sha256` annotation differs from the hash of what is wanted now (the
//!   spec, the nodes or the endpoints changed; it is also how a field the operator stops
//!   setting gets removed);
//! - a field the operator sets has another value live (someone edited it): every desired field
//!   must be present and equal in the live object, quantities compared by value, empty lists and
//!   maps equal to absent ones.
//!
//! So a restarted operator, or a reconcile caused by its own write, sends no write. Objects with
//! an owned object's name that belong to something else are never touched.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::Status;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::build::MANAGER;
use crate::quantity;

/// The annotation holding the hash of the desired object, as last applied.
pub const DESIRED_HASH_ANNOTATION: &str = "xdpturn.io/desired-sha256";

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It was as wanted; nothing was sent.
    Unchanged,
    /// It did not exist.
    Created,
    /// It differed and was patched.
    Updated,
}

/// Why an object could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Something else owns an object with this name.
    #[error("{kind} {name} exists and is not owned by this TurnCluster; rename or delete it")]
    NameConflict {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// The API server refused the object (invalid, forbidden, ...): the user has to act.
    #[error("Kubernetes refused {kind} {name}: {message}")]
    Rejected {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The API server's message.
        message: String,
    },
    /// Anything else (network, conflict, server error): worth retrying.
    #[error("applying {kind} {name}: {source}")]
    Kube {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The object did not serialize.
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// Adds the desired-hash annotation to `desired` (hashing it first) and returns its JSON.
pub fn annotate<K: Serialize + Resource>(desired: &mut K) -> Result<Value, serde_json::Error> {
    desired.annotations_mut().remove(DESIRED_HASH_ANNOTATION);
    let json = serde_json::to_value(&*desired)?;
    let hash = Sha256::digest(serde_json::to_vec(&json)?);
    let hash: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    desired
        .annotations_mut()
        .insert(DESIRED_HASH_ANNOTATION.to_owned(), hash);
    serde_json::to_value(&*desired)
}

/// Whether the live object already is what `desired` (annotated) asks for.
pub fn up_to_date(desired: &Value, live: &Value) -> bool {
    let hash = |v: &Value| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(DESIRED_HASH_ANNOTATION))
            .cloned()
    };
    hash(desired).is_some() && hash(desired) == hash(live) && contains(desired, live)
}

/// Whether every field of `want` is in `have` with the same value. Lists compare element by
/// element (same length); quantities by value; an empty list, map or a null in `want` matches
/// an absent field.
pub fn contains(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => w.iter().all(|(k, wv)| match h.get(k) {
            Some(hv) => contains(wv, hv),
            None => is_empty(wv),
        }),
        (Value::Array(w), Value::Array(h)) => {
            w.len() == h.len() && w.iter().zip(h).all(|(a, b)| contains(a, b))
        }
        (Value::String(a), Value::String(b)) => a == b || quantity::same(a, b),
        (Value::Number(a), Value::String(b)) | (Value::String(b), Value::Number(a)) => {
            quantity::same(&a.to_string(), b)
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (w, Value::Null) => is_empty(w),
        (w, h) => w == h,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Server-side applies `desired` unless `live` is already it. `uid` is the owning
/// TurnCluster's: a live object not owned by it is a [`ApplyError::NameConflict`].
pub async fn apply<K>(
    api: &Api<K>,
    mut desired: K,
    live: Option<&K>,
    uid: &str,
) -> Result<(Outcome, Option<K>), ApplyError>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    apply_dyn(api, &mut desired, live, uid, &kind).await
}

/// [`apply`] for objects whose kind is only known at run time (the ServiceMonitor).
pub async fn apply_dyn<K>(
    api: &Api<K>,
    desired: &mut K,
    live: Option<&K>,
    uid: &str,
    kind: &str,
) -> Result<(Outcome, Option<K>), ApplyError>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let name = desired.name_any();
    let ser = |source| ApplyError::Serialize {
        kind: kind.to_owned(),
        name: name.clone(),
        source,
    };
    let want = annotate(desired).map_err(ser)?;
    if let Some(live) = live {
        if !crate::build::owned_by(live.meta(), uid) {
            return Err(ApplyError::NameConflict {
                kind: kind.to_owned(),
                name,
            });
        }
        if up_to_date(&want, &serde_json::to_value(live).map_err(ser)?) {
            return Ok((Outcome::Unchanged, None));
        }
    }
    let params = PatchParams::apply(MANAGER).force();
    match api.patch(&name, &params, &Patch::Apply(&want)).await {
        Ok(obj) => Ok((
            if live.is_some() {
                Outcome::Updated
            } else {
                Outcome::Created
            },
            Some(obj),
        )),
        Err(err) => Err(classify(kind, &name, err)),
    }
}

/// Sorts an API error into "the user must act" and "retry".
pub fn classify(kind: &str, name: &str, err: kube::Error) -> ApplyError {
    match &err {
        kube::Error::Api(status) if is_rejection(status) => ApplyError::Rejected {
            kind: kind.to_owned(),
            name: name.to_owned(),
            message: format!("{}{}", status.message, hint(&status.message)),
        },
        _ => ApplyError::Kube {
            kind: kind.to_owned(),
            name: name.to_owned(),
            source: err,
        },
    }
}

/// What to do about refusals a user is likely to meet.
fn hint(message: &str) -> &'static str {
    if message.contains("more than 1 protocol when type is 'LoadBalancer'") {
        " (UDP and TCP on one LoadBalancer needs Kubernetes 1.24 or later, or the \
         MixedProtocolLBService feature gate: list only UDP listeners, or use \
         publicAddress.policy NodeExternalIP or Explicit)"
    } else {
        ""
    }
}

fn is_rejection(status: &Status) -> bool {
    // 400 Bad Request, 403 Forbidden, 422 Invalid; not 404/409 (races) or 429/5xx (load).
    matches!(status.code, 400 | 403 | 422)
}

/// Reads an object; `None` if it does not exist.
pub async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource + DeserializeOwned + Clone + Debug,
{
    api.get_opt(name).await
}

/// Deletes an object if it exists and is owned by the TurnCluster with `uid`. Returns whether
/// a delete was sent.
pub async fn delete_owned<K>(api: &Api<K>, live: Option<&K>, uid: &str) -> Result<bool, kube::Error>
where
    K: Resource + DeserializeOwned + Clone + Debug,
{
    let Some(live) = live else { return Ok(false) };
    if !crate::build::owned_by(live.meta(), uid) {
        return Ok(false);
    }
    match api
        .delete(&live.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    #[test]
    fn contains_is_a_subset_check() {
        assert!(contains(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!contains(&json!({"a": 1, "b": 2}), &json!({"a": 1})));
        assert!(!contains(&json!({"a": [1, 2]}), &json!({"a": [1]})));
        assert!(contains(
            &json!({"a": [{"x": 1}]}),
            &json!({"a": [{"x": 1, "defaulted": true}]})
        ));
        assert!(contains(&json!({"a": [], "m": {}, "n": null}), &json!({})));
        assert!(contains(&json!({"cpu": "1000m"}), &json!({"cpu": "1"})));
        assert!(contains(&json!({"mem": 1}), &json!({"mem": "1"})));
        assert!(!contains(&json!({"cpu": "500m"}), &json!({"cpu": "1"})));
        assert!(!contains(&json!({"b": true}), &json!({"b": false})));
        assert!(!contains(&json!({"s": "a"}), &json!({"s": "b"})));
    }

    #[test]
    fn refusals_get_hints() {
        let err = kube::Error::Api(
            Status::failure(
                "spec.ports: may not contain more than 1 protocol when type is 'LoadBalancer'",
                "Invalid",
            )
            .with_code(422)
            .boxed(),
        );
        let msg = classify("Service", "lb", err).to_string();
        assert!(
            msg.starts_with("Kubernetes refused Service lb: spec.ports"),
            "{msg}"
        );
        assert!(msg.contains("Kubernetes 1.24"), "{msg}");
        let err = kube::Error::Api(
            Status::failure("boom", "InternalError")
                .with_code(500)
                .boxed(),
        );
        assert!(matches!(
            classify("Service", "lb", err),
            ApplyError::Kube { .. }
        ));
    }

    #[test]
    fn annotate_hashes_without_the_annotation() {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("x".into());
        let first = annotate(&mut cm).unwrap();
        let again = annotate(&mut cm).unwrap();
        assert_eq!(first, again, "annotating twice gives the same hash");
        let hash = &first["metadata"]["annotations"][DESIRED_HASH_ANNOTATION];
        assert_eq!(hash.as_str().unwrap().len(), 64);
        cm.data = Some([("k".to_owned(), "v".to_owned())].into());
        let changed = annotate(&mut cm).unwrap();
        assert_ne!(
            changed["metadata"]["annotations"][DESIRED_HASH_ANNOTATION],
            *hash
        );
    }

    #[test]
    fn up_to_date_needs_hash_and_fields() {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("x".into());
        cm.data = Some([("k".to_owned(), "v".to_owned())].into());
        let want = annotate(&mut cm).unwrap();
        let mut live = want.clone();
        live["metadata"]["resourceVersion"] = "7".into();
        assert!(up_to_date(&want, &live));
        live["data"]["k"] = "edited".into();
        assert!(!up_to_date(&want, &live), "drift is repaired");
        let mut live = want.clone();
        live["metadata"]["annotations"] = json!({});
        assert!(!up_to_date(&want, &live), "no hash, no trust");
    }
}
