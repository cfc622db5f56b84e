//! A request's life: the Host check, the lookup, counting, the request
//! timeout, and the routing decision (static answer, warm forward, or cold
//! start).

use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response};
use hyper::body::Incoming;
use routing::{Action, ResponseMode, Route, StaticResponse};
use sync::endpoints::Backend;
use tracing::{Instrument, debug};

use super::forward::Forwarded;
use super::headers::{host_problem, request_host};
use super::respond::{bad_request, static_response};
use super::{Peer, Proxy};
use crate::body::{ProxyBody, RequestGuard};
use crate::error::ProxyError;

/// A failure, and the cold-start header value its response carries (none
/// when the request never concerned a cold start: static routes, failures
/// before the readiness check).
pub(super) type Failure = (ProxyError, Option<bool>);

/// What to do with a routed request, decided on one endpoints snapshot.
enum Decision<'a> {
    /// A static route answers.
    Static(&'a StaticResponse),
    /// Forward to this backend; `cold` is the error responses' cold-start
    /// header.
    Forward {
        backend: Result<Backend, ProxyError>,
        cold: Option<bool>,
    },
    /// The target has no ready endpoint.
    ColdStart,
}

impl Proxy {
    /// Handles one request from `peer`.
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        if let Some(problem) = host_problem(&req) {
            return bad_request(problem);
        }
        // The one table load of the request; the route (and with it its
        // counters) outlives the snapshot through its `Arc`.
        let matched = {
            let table = self.table.load();
            table
                .lookup(request_host(&req), req.uri().path(), req.headers())
                .map(|m| {
                    let static_index = match m.action {
                        Action::Forward => None,
                        Action::Static { index, .. } => Some(index),
                    };
                    (m.route.clone(), static_index)
                })
        };
        let Some((route, static_index)) = matched else {
            return self.unrouted(req, start);
        };
        // Static routes are not counted in /queue: static traffic must not
        // scale the app (as upstream).
        let mut guard = RequestGuard::with_queue(
            Some(route.counters.clone()),
            static_index.is_none(),
            self.inflight.clone(),
            req.method(),
            start,
        );
        if self.config.log_requests {
            guard.log(
                req.headers().get(header::HOST),
                req.uri(),
                Some(route.key()),
            );
        }
        let request_timeout = route
            .timeouts
            .request
            .unwrap_or(self.config.request_timeout);
        let work = self.route_request(req, peer, &route, static_index);
        let deadline = tokio::time::Instant::from_std(start) + request_timeout;
        let result = if request_timeout.is_zero() {
            work.await
        } else {
            match tokio::time::timeout_at(deadline, work).await {
                Ok(r) => r,
                Err(_) => Err((ProxyError::RequestTimeout(request_timeout), None)),
            }
        };
        match result {
            Ok(Forwarded {
                mut response,
                upgrade,
            }) => {
                guard.set_status(response.status().as_u16());
                match upgrade {
                    Some((client, backend)) => {
                        // The request lives as long as the tunnel.
                        let span = tracing::debug_span!("upgraded", route = %route.key());
                        tokio::spawn(
                            super::upgrade::tunnel(client, backend, guard).instrument(span),
                        );
                        response
                    }
                    None => {
                        let mut body = std::mem::replace(response.body_mut(), ProxyBody::empty());
                        if !request_timeout.is_zero() {
                            body = body.with_deadline(deadline, request_timeout);
                        }
                        *response.body_mut() = body.with_guard(guard);
                        response
                    }
                }
            }
            Err((err, cold)) => {
                debug!(route = %route.key(), error = %err, "request failed");
                self.error_response(&err, guard, cold)
            }
        }
    }

    /// A request no route matches: 404, counted in the metrics with empty
    /// route labels, never in `/queue`.
    fn unrouted(&self, req: Request<Incoming>, start: Instant) -> Response<ProxyBody> {
        let mut guard = RequestGuard::with_queue(
            Some(self.metrics.unrouted().clone()),
            false,
            self.inflight.clone(),
            req.method(),
            start,
        );
        if self.config.log_requests {
            guard.log(req.headers().get(header::HOST), req.uri(), None);
        }
        let err = ProxyError::NoRoute {
            host: request_host(&req).to_string(),
            path: req.uri().path().to_string(),
        };
        self.error_response(&err, guard, None)
    }

    /// Answers, forwards or cold-starts a request routed to `route`.
    async fn route_request(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        route: &Route,
        static_index: Option<usize>,
    ) -> Result<Forwarded, Failure> {
        let target = &route.target;
        let response_header_timeout = route
            .timeouts
            .response_header
            .unwrap_or(self.config.response_header_timeout);
        // The one endpoints snapshot of a warm request: readiness and the
        // backend come from the same view.
        let decision = {
            let snapshot = self.endpoints.load();
            let service = snapshot.service(&target.namespace, &target.service);
            let ready = service.has_ready();
            let backend = || service.backend(&target.port, self.addressing());
            match static_index.and_then(|i| route.static_routes.get(i)) {
                // A static route answers (no cold-start header), or, in
                // `WhenUnavailable` mode while the target is ready, the
                // request is forwarded without cold-start handling (and
                // uncounted).
                Some(sr) if sr.mode == ResponseMode::Always || !ready => {
                    Decision::Static(&sr.response)
                }
                Some(_) => Decision::Forward {
                    backend: backend().map_err(ProxyError::from),
                    cold: None,
                },
                None if ready => Decision::Forward {
                    backend: backend().map_err(ProxyError::from),
                    cold: Some(false),
                },
                None => Decision::ColdStart,
            }
        };
        match decision {
            Decision::Static(response) => {
                static_response(response, route, req.uri().path(), &self.endpoints)
                    .map_err(|e| (e, None))
            }
            Decision::Forward { backend, cold } => {
                let backend = backend.map_err(|e| (e, cold))?;
                self.forward(req, peer, &backend, false, response_header_timeout)
                    .await
                    .map_err(|e| (e, cold))
            }
            Decision::ColdStart => {
                self.cold_start(req, peer, route, response_header_timeout)
                    .await
            }
        }
    }
}
