//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it,
//! so that two operator replicas can run and only one reconciles.
//!
//! A candidate reads the Lease. It takes it when nobody holds it, when it already holds it
//! (renewal), or when the holder has not renewed it for `leaseDurationSeconds` *as observed by
//! the candidate's own clock* (the record must stay unchanged that long; no clock comparison
//! across machines). Every write is a create or a replace with the read `resourceVersion`, so
//! two candidates can not both win. The leader renews every `renew_every`; if it cannot renew
//! within `renew_deadline` it has lost and must stop acting (the binary exits, and restarts as a
//! candidate). On shutdown it releases the Lease so a standby takes over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Lease timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// How often candidates retry and the leader renews.
    pub retry_period: Duration,
}

impl Default for Timings {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate should do with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create it.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    TakeOver,
    /// Someone else holds it.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// Decides, given the Lease (if any), our identity, and whether its record has stayed unchanged
/// for its whole duration on our clock.
pub fn decide(lease: Option<&Lease>, me: &str, expired: bool) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    if holder == me {
        Decision::Renew
    } else if holder.is_empty() || expired {
        Decision::TakeOver
    } else {
        Decision::Wait { holder }
    }
}

/// The part of a Lease whose change shows its holder is alive: holder, renew time, duration.
type Record = (Option<String>, Option<String>, Option<i32>);

/// The part of a Lease whose change shows its holder is alive.
fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    (
        spec.holder_identity,
        spec.renew_time.map(|t| t.0.to_string()),
        spec.lease_duration_seconds,
    )
}

/// A candidate for one Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    observed: Option<(Record, Instant)>,
}

impl Elector {
    /// A candidate called `identity` for the Lease `name` that `api` reaches.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, timings: Timings) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings,
            observed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) {
        let mut logged = None;
        loop {
            match self.try_once().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(err) => {
                    warn!(%err, lease = %self.name, "leader election: reading or writing the Lease failed")
                }
            }
            let holder = self.observed.as_ref().and_then(|((h, _, _), _)| h.clone());
            if holder != logged {
                info!(lease = %self.name, holder = ?holder, "waiting for the Lease held by another replica");
                logged = holder;
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    /// Renews the Lease until renewal fails for longer than the renew deadline; then returns:
    /// leadership is lost.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.timings.retry_period).await;
            match self.try_once().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.name, "another replica took the Lease");
                    return;
                }
                Err(err) => debug!(%err, "renewing the Lease failed; retrying"),
            }
            if last_renewed.elapsed() > self.timings.renew_deadline {
                warn!(lease = %self.name, "could not renew the Lease within the renew deadline");
                return;
            }
        }
    }

    /// Gives the Lease up (holder cleared, duration 1 s), so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.name, "released the Lease"),
            Err(err) => warn!(%err, "releasing the Lease failed; it expires on its own"),
        }
    }

    /// One round: read, decide, write. `Ok(true)` if we hold the Lease afterwards.
    pub async fn try_once(&mut self) -> Result<bool, kube::Error> {
        let lease = self.api.get_opt(&self.name).await?;
        let expired = match &lease {
            Some(l) => {
                let rec = record(l);
                let duration = l
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_duration_seconds)
                    .map_or(self.timings.lease_duration, |s| {
                        Duration::from_secs(u64::try_from(s).unwrap_or(0))
                    });
                match &self.observed {
                    Some((seen, at)) if *seen == rec => at.elapsed() >= duration,
                    _ => {
                        self.observed = Some((rec, Instant::now()));
                        false
                    }
                }
            }
            None => false,
        };
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(15);
        let result = match decide(lease.as_ref(), &self.identity, expired) {
            Decision::Wait { .. } => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(duration),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew => {
                let mut lease = lease.unwrap_or_default();
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(now);
                spec.lease_duration_seconds = Some(duration);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            Decision::TakeOver => {
                let mut lease = lease.unwrap_or_default();
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.holder_identity = Some(self.identity.clone());
                spec.lease_duration_seconds = Some(duration);
                spec.acquire_time = Some(now.clone());
                spec.renew_time = Some(now);
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(lease) => {
                self.observed = Some((record(&lease), Instant::now()));
                Ok(true)
            }
            // Someone else wrote first (409 Conflict / AlreadyExists): not ours this round.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn lease(holder: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", false), Decision::Create);
        assert_eq!(decide(Some(&lease(Some("a"))), "a", false), Decision::Renew);
        assert_eq!(decide(Some(&lease(Some("a"))), "a", true), Decision::Renew);
        assert_eq!(
            decide(Some(&lease(Some("b"))), "a", false),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&lease(Some("b"))), "a", true),
            Decision::TakeOver
        );
        assert_eq!(decide(Some(&lease(None)), "a", false), Decision::TakeOver);
        assert_eq!(
            decide(Some(&lease(Some(""))), "a", false),
            Decision::TakeOver
        );
    }

    #[test]
    fn default_timings_are_client_gos() {
        let t = Timings::default();
        assert!(t.renew_deadline < t.lease_duration);
        assert!(t.retry_period < t.renew_deadline);
    }
}
