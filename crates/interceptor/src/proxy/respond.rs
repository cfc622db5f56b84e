//! Responses the interceptor writes itself: static routes and placeholders,
//! error responses (the status from [`ProxyError::status`]), the 400 for an
//! unanswerable `Host`, and the cold-start header.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use routing::{ResponseBody, StaticResponse};
use tracing::warn;

use super::Proxy;
use super::forward::Forwarded;
use crate::body::{ProxyBody, RequestGuard};
use crate::error::ProxyError;

/// The cold-start response header.
pub(crate) const COLD_START_HEADER: HeaderName = HeaderName::from_static("x-keda-http-cold-start");

impl Proxy {
    /// The response to a failed request; the guard records its status and
    /// rides on the body.
    pub(super) fn error_response(
        &self,
        err: &ProxyError,
        mut guard: RequestGuard,
        cold: Option<bool>,
    ) -> Response<ProxyBody> {
        let status = err.status();
        guard.set_status(status.as_u16());
        if status.is_server_error() && !matches!(err, ProxyError::TooManyPending { .. }) {
            warn!(error = %err, status = status.as_u16(), "proxy error");
        }
        let mut resp = Response::new(ProxyBody::full(format!("{err}\n")).with_guard(guard));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(cold) = cold {
            self.cold_header(resp.headers_mut(), cold);
        }
        resp
    }

    /// Sets `X-KEDA-HTTP-Cold-Start` when enabled.
    pub(super) fn cold_header(&self, headers: &mut HeaderMap, cold: bool) {
        if self.config.cold_start_header {
            headers.insert(
                COLD_START_HEADER,
                HeaderValue::from_static(if cold { "true" } else { "false" }),
            );
        }
    }
}

/// A static route's answer or a placeholder.
pub(super) fn static_response(sr: &StaticResponse) -> Result<Forwarded, ProxyError> {
    let body = match &sr.body {
        ResponseBody::Inline(b) => b.clone(),
        // The sync layer does not resolve ConfigMaps yet.
        ResponseBody::ConfigMap { name, key } => {
            return Err(ProxyError::BodyNotResolved(format!("{name}/{key}")));
        }
    };
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = sr.status;
    *resp.headers_mut() = sr.headers.clone();
    Ok(Forwarded {
        response: resp,
        upgrade: None,
    })
}

/// A 400 for a request rejected before routing (not counted: Go's server
/// rejects these before any handler sees them); the connection is closed.
pub(super) fn bad_request(problem: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(format!("400 Bad Request: {problem}")));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}
