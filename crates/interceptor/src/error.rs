//! Why a proxied request failed, and the one mapping from failure to status.

use http::StatusCode;

/// Status logged (never sent) for a client that went away before its answer.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Why the proxy could not forward a request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route matches the host, path and headers.
    #[error("no route for host {host:?} path {path:?}")]
    NoRoute {
        /// Host as received.
        host: String,
        /// Path as received.
        path: String,
    },
    /// The Service or its port cannot be resolved.
    #[error("cannot resolve the backend: {0}")]
    Unresolvable(String),
    /// The Service got no ready endpoint within the readiness timeout.
    #[error("service {service} got no ready endpoint within {timeout:?}")]
    ReadinessTimeout {
        /// `namespace/service`.
        service: String,
        /// The timeout that passed.
        timeout: std::time::Duration,
    },
    /// Too many requests are already waiting for a cold start: this
    /// route's, or all routes' together.
    #[error("{}", too_many_pending(route, host, *limit, *scope))]
    TooManyPending {
        /// Route key.
        route: String,
        /// The request's host.
        host: String,
        /// The limit that was reached.
        limit: u64,
        /// Which limit.
        scope: PendingScope,
    },
    /// The backend did not send its response headers in time.
    #[error("backend {backend} sent no response headers within {timeout:?}")]
    ResponseHeaderTimeout {
        /// The backend address.
        backend: String,
        /// The timeout.
        timeout: std::time::Duration,
    },
    /// The request's own timeout passed.
    #[error("request timeout {0:?} exceeded")]
    RequestTimeout(std::time::Duration),
    /// Connecting to or talking with the backend failed.
    #[error("backend {backend}: {message}")]
    Upstream {
        /// The backend address.
        backend: String,
        /// What went wrong.
        message: String,
    },
    /// A static body from a ConfigMap that is not there: the ConfigMap is
    /// unknown (or lacks the response-body label), or lacks the key named.
    #[error("static response body: {0}")]
    BodyNotResolved(String),
}

/// Which cold-start cap turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingScope {
    /// The route's own (`KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS`).
    Route,
    /// All routes' together (`KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS_TOTAL`).
    Total,
}

/// The body of a 503 for a full cold-start queue: the route, the host, the
/// limit and the variable that sets it.
fn too_many_pending(route: &str, host: &str, limit: u64, scope: PendingScope) -> String {
    match scope {
        PendingScope::Route => format!(
            "too many requests waiting for route {route} (host {host:?}) to start: \
             {limit} already waiting, the per-route limit \
             (KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS)"
        ),
        PendingScope::Total => format!(
            "too many requests waiting for cold starts on this interceptor: {limit} \
             already waiting, the limit for all routes together \
             (KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS_TOTAL); route {route} (host {host:?}) \
             not held"
        ),
    }
}

impl ProxyError {
    /// The HTTP status this failure is answered with.
    pub fn status(&self) -> StatusCode {
        status_of(self)
    }
}

impl From<sync::ResolveError> for ProxyError {
    fn from(e: sync::ResolveError) -> Self {
        ProxyError::Unresolvable(e.to_string())
    }
}

/// The one place a failure becomes a status code.
pub fn status_of(err: &ProxyError) -> StatusCode {
    match err {
        ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
        ProxyError::Unresolvable(_) | ProxyError::BodyNotResolved(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        ProxyError::ReadinessTimeout { .. }
        | ProxyError::ResponseHeaderTimeout { .. }
        | ProxyError::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
        ProxyError::TooManyPending { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_failure_has_its_status() {
        let cases = [
            (
                ProxyError::NoRoute {
                    host: "a".into(),
                    path: "/".into(),
                },
                404,
            ),
            (ProxyError::Unresolvable("x".into()), 500),
            (ProxyError::BodyNotResolved("cm/key".into()), 500),
            (
                ProxyError::ReadinessTimeout {
                    service: "ns/svc".into(),
                    timeout: Duration::from_secs(1),
                },
                504,
            ),
            (
                ProxyError::ResponseHeaderTimeout {
                    backend: "b".into(),
                    timeout: Duration::from_secs(1),
                },
                504,
            ),
            (ProxyError::RequestTimeout(Duration::from_secs(1)), 504),
            (
                ProxyError::TooManyPending {
                    route: "ns/r".into(),
                    host: "r.test".into(),
                    limit: 1,
                    scope: PendingScope::Route,
                },
                503,
            ),
            (
                ProxyError::TooManyPending {
                    route: "ns/r".into(),
                    host: "r.test".into(),
                    limit: 1,
                    scope: PendingScope::Total,
                },
                503,
            ),
            (
                ProxyError::Upstream {
                    backend: "b".into(),
                    message: "refused".into(),
                },
                502,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.status().as_u16(), code, "{err}");
        }
    }

    #[test]
    fn a_full_cold_start_queue_names_route_host_and_limit() {
        let err = |scope| ProxyError::TooManyPending {
            route: "ns/app".into(),
            host: "app.test".into(),
            limit: 7,
            scope,
        };
        assert_eq!(
            err(PendingScope::Route).to_string(),
            "too many requests waiting for route ns/app (host \"app.test\") to start: 7 already \
             waiting, the per-route limit (KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS)"
        );
        let total = err(PendingScope::Total).to_string();
        for part in [
            "7 already waiting",
            "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS_TOTAL",
            "route ns/app (host \"app.test\")",
        ] {
            assert!(total.contains(part), "{part} missing in {total}");
        }
    }
}
