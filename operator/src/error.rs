//! The operator's error type. Problems a user must fix (an invalid spec, an object Kubernetes
//! refuses) are not errors: they go into the status. Errors are what a retry may fix, and are
//! retried with backoff; [`Error::metric_label`] labels the failure counter.

use crate::apply::ApplyError;
use crate::build::BuildError;

/// A reconcile failure, retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object failed.
    #[error("reading {what}: {source}")]
    Read {
        /// What was read.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Applying an owned object failed in a way worth retrying.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Deleting an object the TurnCluster no longer needs failed.
    #[error("deleting {what}: {source}")]
    Delete {
        /// What was deleted.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// Writing the TurnCluster's status failed.
    #[error("writing the status of TurnCluster {name}: {source}")]
    Status {
        /// The TurnCluster.
        name: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The objects could not be rendered.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The watched object lacks what the API server always sets.
    #[error("the TurnCluster has no {0}")]
    Metadata(&'static str),
}

impl Error {
    /// Every value [`Error::metric_label`] returns, so the counter starts at zero for each.
    pub const LABELS: &'static [&'static str] = &[
        "read",
        "apply",
        "apply_refused",
        "delete",
        "status",
        "build",
        "metadata",
    ];

    /// A short, bounded label for the failure counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Read { .. } => "read",
            Error::Apply(ApplyError::Kube { .. } | ApplyError::Serialize { .. }) => "apply",
            Error::Apply(ApplyError::Rejected { .. } | ApplyError::NameConflict { .. }) => {
                "apply_refused"
            }
            Error::Delete { .. } => "delete",
            Error::Status { .. } => "status",
            Error::Build(_) => "build",
            Error::Metadata(_) => "metadata",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_listed() {
        let errors = [
            Error::Metadata("namespace"),
            Error::Apply(ApplyError::NameConflict {
                kind: "Service".into(),
                name: "x".into(),
            }),
        ];
        for e in errors {
            assert!(Error::LABELS.contains(&e.metric_label()), "{e}");
        }
        assert_eq!(
            Error::Metadata("uid").to_string(),
            "the TurnCluster has no uid"
        );
    }
}
