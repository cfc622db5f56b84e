//! Responses the interceptor writes itself: static routes and placeholders,
//! error responses (the status from [`ProxyError::status`]), the 400 for an
//! unanswerable `Host`, and the cold-start header.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use routing::{ResponseBody, Route, StaticResponse};
use sync::ReadyEndpoints;
use sync::endpoints::{RESPONSE_BODY_SELECTOR, ResponseBodies};
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

/// A static route's answer or a placeholder, for a request to `path` on
/// `route`. A body from a ConfigMap is read from the ready-cache now (an
/// inline body does not touch it), so a change to the ConfigMap shows in
/// the next answer.
pub(super) fn static_response(
    sr: &StaticResponse,
    route: &Route,
    path: &str,
    endpoints: &ReadyEndpoints,
) -> Result<Forwarded, ProxyError> {
    let (body, content_type) = match &sr.body {
        ResponseBody::Inline(b) => (b.clone(), None),
        ResponseBody::ConfigMap { name, key } => {
            config_map_body(&endpoints.bodies(), route.namespace(), name, key, path)?
        }
    };
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = sr.status;
    *resp.headers_mut() = sr.headers.clone();
    if let Some(ct) = content_type
        && !resp.headers().contains_key(header::CONTENT_TYPE)
    {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    Ok(Forwarded {
        response: resp,
        upgrade: None,
    })
}

/// The body `bodyFromConfigMap` names, with the content type its key's
/// extension implies, as upstream: an empty `key` is derived from the
/// request path (without its leading `/`; `index.html` for `/`), so one
/// ConfigMap can serve several files. A missing ConfigMap or an explicit
/// key it lacks is an error (500); a derived key it lacks answers an empty
/// body (a `/favicon.ico` the page does not ship).
fn config_map_body(
    bodies: &ResponseBodies,
    namespace: &str,
    name: &str,
    key: &str,
    path: &str,
) -> Result<(Bytes, Option<&'static str>), ProxyError> {
    let Some(data) = bodies.get(namespace, name) else {
        return Err(ProxyError::BodyNotResolved(format!(
            "ConfigMap {namespace}/{name} not found: it must exist in the route's namespace \
             with the label {RESPONSE_BODY_SELECTOR}"
        )));
    };
    let derived = key.is_empty();
    let key = if derived { key_from_path(path) } else { key };
    match data.get(key) {
        Some(body) => Ok((body.clone(), content_type_of(key))),
        None if derived => Ok((Bytes::new(), None)),
        None => Err(ProxyError::BodyNotResolved(format!(
            "ConfigMap {namespace}/{name} has no key {key:?}"
        ))),
    }
}

/// The ConfigMap key a request path names: the path without one leading
/// `/`, or `index.html` for `/`.
fn key_from_path(path: &str) -> &str {
    match path.strip_prefix('/').unwrap_or(path) {
        "" => "index.html",
        key => key,
    }
}

/// The content type of a key's extension, from the table upstream's Go
/// runtime has built in (a container image has no `/etc/mime.types`).
fn content_type_of(key: &str) -> Option<&'static str> {
    let (_, ext) = key.rsplit_once('.')?;
    let ct = match ext.to_ascii_lowercase().as_str() {
        "avif" => "image/avif",
        "css" => "text/css; charset=utf-8",
        "gif" => "image/gif",
        "htm" | "html" => "text/html; charset=utf-8",
        "jpeg" | "jpg" => "image/jpeg",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "wasm" => "application/wasm",
        "webp" => "image/webp",
        "xml" => "text/xml; charset=utf-8",
        _ => return None,
    };
    Some(ct)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_comes_from_the_path_as_upstream_derives_it() {
        assert_eq!(key_from_path("/"), "index.html");
        assert_eq!(key_from_path(""), "index.html");
        assert_eq!(key_from_path("/style.css"), "style.css");
        // Only one `/` goes; ConfigMap keys hold no `/`, so nested paths miss.
        assert_eq!(key_from_path("//a"), "/a");
        assert_eq!(key_from_path("/img/logo.png"), "img/logo.png");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type_of("index.html"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(content_type_of("A.PNG"), Some("image/png"));
        assert_eq!(
            content_type_of("app.mjs"),
            Some("text/javascript; charset=utf-8")
        );
        assert_eq!(content_type_of("data.json"), Some("application/json"));
        assert_eq!(content_type_of("README"), None);
        assert_eq!(content_type_of("archive.tar.zst"), None);
    }
}
