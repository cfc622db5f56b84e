//! The cold start: a request for a target without a ready endpoint gets the
//! route's placeholder, or waits (within the route's waiter limit) for an
//! endpoint to turn ready, then is forwarded to the target, to the fallback
//! Service, or answered 504.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::Request;
use hyper::body::Incoming;
use routing::Route;

use super::forward::Forwarded;
use super::handle::Failure;
use super::respond::static_response;
use super::{Peer, Proxy};
use crate::error::ProxyError;

/// A held cold-start slot of a route ([`routing::RouteCounters::pending`]),
/// released on drop.
#[derive(Debug)]
struct PendingSlot<'a>(&'a AtomicU64);

impl<'a> PendingSlot<'a> {
    /// Takes a slot unless `limit` (non-zero) are taken.
    fn take(pending: &'a AtomicU64, limit: u64) -> Option<PendingSlot<'a>> {
        let prev = pending.fetch_add(1, Ordering::AcqRel);
        if limit != 0 && prev >= limit {
            pending.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(PendingSlot(pending))
    }
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Proxy {
    /// Handles a request whose target has no ready endpoint. Every response,
    /// error or not, says `X-KEDA-HTTP-Cold-Start: true` (when enabled).
    pub(super) async fn cold_start(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        route: &Route,
        response_header_timeout: Duration,
    ) -> Result<Forwarded, Failure> {
        if let Some(placeholder) = &route.cold_start.placeholder {
            let mut f = static_response(placeholder).map_err(|e| (e, Some(true)))?;
            self.cold_header(f.response.headers_mut(), true);
            return Ok(f);
        }
        let Some(slot) = PendingSlot::take(&route.counters.pending, self.config.max_pending) else {
            return Err((
                ProxyError::TooManyPending {
                    route: route.key().to_string(),
                    limit: self.config.max_pending,
                },
                Some(true),
            ));
        };
        let target = &route.target;
        let readiness = route
            .timeouts
            .readiness
            .unwrap_or(self.config.readiness_timeout);
        let fallback = route.cold_start.fallback.as_ref();
        let wait = fallback.and_then(|f| f.wait).unwrap_or(readiness);
        let became_ready = {
            let waiting = self
                .endpoints
                .wait_ready(&target.namespace, &target.service);
            if wait.is_zero() {
                waiting.await;
                true
            } else {
                tokio::time::timeout(wait, waiting).await.is_ok()
            }
        };
        drop(slot);
        let (namespace, service, port) = match (became_ready, fallback) {
            (true, _) => (&target.namespace, &target.service, &target.port),
            (false, Some(fb)) => (&fb.namespace, &fb.service, &fb.port),
            (false, None) => {
                return Err((
                    ProxyError::ReadinessTimeout {
                        service: format!("{}/{}", target.namespace, target.service),
                        timeout: wait,
                    },
                    Some(true),
                ));
            }
        };
        // The wait is over: a fresh snapshot (the one that woke us).
        let backend = self
            .endpoints
            .load()
            .backend(namespace, service, port, self.addressing())
            .map_err(|e| (e.into(), Some(true)))?;
        self.forward(req, peer, &backend, true, response_header_timeout)
            .await
            .map_err(|e| (e, Some(true)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_slots_are_limited_and_released() {
        let pending = AtomicU64::new(0);
        let a = PendingSlot::take(&pending, 2).unwrap();
        let b = PendingSlot::take(&pending, 2).unwrap();
        assert!(PendingSlot::take(&pending, 2).is_none());
        assert_eq!(pending.load(Ordering::Relaxed), 2);
        drop(a);
        let c = PendingSlot::take(&pending, 2).unwrap();
        drop((b, c));
        assert_eq!(pending.load(Ordering::Relaxed), 0);
        // Zero: unlimited.
        let many: Vec<_> = (0..10).map(|_| PendingSlot::take(&pending, 0)).collect();
        assert!(many.iter().all(Option::is_some));
    }
}
