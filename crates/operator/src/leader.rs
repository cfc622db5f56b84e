//! Leader election through a `coordination.k8s.io/v1` Lease, with
//! client-go's semantics: a candidate takes the lease when it is free or
//! when its holder has not renewed it for the lease duration (measured on
//! the candidate's own clock, from when it last saw the lease change, so
//! clock skew between nodes does not matter); the leader renews it every
//! retry period and gives up when it could not renew for the renew
//! deadline; every write is conditional on the resourceVersion read, so two
//! candidates never both win. On shutdown the leader releases the lease, so
//! a standby takes over at once instead of after the lease duration.

use std::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::LeaseTiming;

/// The Lease's name, as upstream's operator names it.
pub const LEASE_NAME: &str = "http-add-on.keda.sh";

/// How holding the lease ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// Shutdown was asked for.
    Cancelled,
    /// Renewal failed for longer than the renew deadline (or another
    /// process holds the lease now).
    Lost,
}

/// One candidate for the lease.
pub struct Elector {
    api: Api<Lease>,
    identity: String,
    timing: LeaseTiming,
    /// The lease's resourceVersion when we last saw it change, and when.
    observed: Option<(String, Instant)>,
}

impl Elector {
    /// A candidate named `identity` for the lease in `namespace`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        identity: String,
        timing: LeaseTiming,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            identity,
            timing,
            observed: None,
        }
    }

    /// This candidate's identity (the lease's `holderIdentity` when it leads).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this candidate holds the lease; `false` when cancelled
    /// first.
    pub async fn acquire(&mut self, cancel: &CancellationToken) -> bool {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(lease = LEASE_NAME, identity = %self.identity, "became leader");
                    return true;
                }
                Ok(false) => {}
                Err(e) => debug!(lease = LEASE_NAME, error = %e, "lease not acquired"),
            }
            let wait = jittered(self.timing.retry_period);
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews the lease every retry period until cancelled or lost.
    pub async fn hold(&mut self, cancel: &CancellationToken) -> Held {
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Held::Cancelled,
                _ = tokio::time::sleep(self.timing.retry_period) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    warn!(
                        lease = LEASE_NAME,
                        "another process holds the lease; leadership lost"
                    );
                    return Held::Lost;
                }
                Err(e) => {
                    warn!(lease = LEASE_NAME, error = %e, "lease renewal failed");
                    if renewed.elapsed() > self.timing.renew_deadline {
                        return Held::Lost;
                    }
                }
            }
        }
    }

    /// Gives the lease up (if this candidate holds it), so another takes
    /// over without waiting for it to expire.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(LEASE_NAME).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = LEASE_NAME, "leadership released"),
            Err(e) => warn!(lease = LEASE_NAME, error = %e, "releasing the lease failed"),
        }
    }

    /// One attempt: `Ok(true)` when this candidate holds the lease after it.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let duration_secs = self.timing.duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            self.observed = Some((rv, Instant::now()));
        }
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() {
            let valid_for = std::time::Duration::from_secs(
                spec.lease_duration_seconds.unwrap_or(duration_secs).max(1) as u64,
            );
            let seen_at = self
                .observed
                .as_ref()
                .map_or_else(Instant::now, |(_, at)| *at);
            if seen_at.elapsed() < valid_for {
                return Ok(false);
            }
        }
        if !mine {
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observed = Some((
                    written.metadata.resource_version.unwrap_or_default(),
                    Instant::now(),
                ));
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// `d` plus up to a fifth, so candidates started together spread out.
fn jittered(d: std::time::Duration) -> std::time::Duration {
    d + d.mul_f64(fastrand::f64() / 5.0)
}

/// A unique identity for this process: the pod's name (its hostname)
/// and a random suffix, as client-go builds it.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "operator".to_string());
    format!("{host}_{:016x}", fastrand::u64(..))
}
