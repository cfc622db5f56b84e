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
use super::headers::request_host;
use super::respond::static_response;
use super::{Peer, Proxy};
use crate::error::{PendingScope, ProxyError};

/// A held cold-start slot of a route ([`routing::RouteCounters::pending`])
/// and of the whole interceptor, released on drop.
#[derive(Debug)]
struct PendingSlot<'a> {
    route: &'a AtomicU64,
    total: &'a AtomicU64,
}

/// Takes a slot of `pending` unless `limit` (non-zero) are taken.
fn take_one(pending: &AtomicU64, limit: u64) -> bool {
    let prev = pending.fetch_add(1, Ordering::AcqRel);
    if limit != 0 && prev >= limit {
        pending.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

impl<'a> PendingSlot<'a> {
    /// Takes a slot of the route and one of the total, unless either is
    /// full (a limit of zero is none); says which one was.
    fn take(
        (route, route_limit): (&'a AtomicU64, u64),
        (total, total_limit): (&'a AtomicU64, u64),
    ) -> Result<PendingSlot<'a>, (PendingScope, u64)> {
        if !take_one(route, route_limit) {
            return Err((PendingScope::Route, route_limit));
        }
        if !take_one(total, total_limit) {
            route.fetch_sub(1, Ordering::AcqRel);
            return Err((PendingScope::Total, total_limit));
        }
        Ok(PendingSlot { route, total })
    }
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.route.fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
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
            let mut f = static_response(placeholder, route, req.uri().path(), &self.endpoints)
                .map_err(|e| (e, Some(true)))?;
            self.cold_header(f.response.headers_mut(), true);
            return Ok(f);
        }
        let slot = PendingSlot::take(
            (&route.counters.pending, self.config.max_pending),
            (&self.config.pending_total, self.config.max_pending_total),
        );
        let slot = match slot {
            Ok(slot) => slot,
            Err((scope, limit)) => {
                return Err((
                    ProxyError::TooManyPending {
                        route: route.key().to_string(),
                        host: request_host(&req).to_string(),
                        limit,
                        scope,
                    },
                    Some(true),
                ));
            }
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
        let to = match (became_ready, fallback) {
            (true, _) => target,
            (false, Some(fb)) => &fb.target,
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
            .backend(&to.namespace, &to.service, &to.port, self.addressing())
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
        let (route, other, total) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
        let take = |r| PendingSlot::take((r, 2), (&total, 3));
        let a = take(&route).unwrap();
        let b = take(&route).unwrap();
        assert_eq!(take(&route).unwrap_err(), (PendingScope::Route, 2));
        assert_eq!(route.load(Ordering::Relaxed), 2);
        // The route is full; another route takes the last of the total.
        let c = take(&other).unwrap();
        assert_eq!(take(&other).unwrap_err(), (PendingScope::Total, 3));
        assert_eq!(
            other.load(Ordering::Relaxed),
            1,
            "a refused slot is given back"
        );
        drop(a);
        let d = take(&route).unwrap();
        drop((b, c, d));
        assert_eq!(route.load(Ordering::Relaxed), 0);
        assert_eq!(total.load(Ordering::Relaxed), 0);
        // Zero: unlimited.
        let many: Vec<_> = (0..10)
            .map(|_| PendingSlot::take((&route, 0), (&total, 0)))
            .collect();
        assert!(many.iter().all(Result::is_ok));
    }
}
