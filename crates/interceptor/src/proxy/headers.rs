//! Header rules of the proxy: which host a request is for and whether its
//! `Host` makes it unanswerable, `Host` and `X-Forwarded-*` towards the
//! backend, and the hop-by-hop headers stripped both ways.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Version};
use hyper::body::Incoming;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(super) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The host a request is for: the URI's authority (HTTP/2, absolute-form
/// HTTP/1.1), else the `Host` header.
pub(super) fn request_host(req: &Request<Incoming>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// Why an HTTP/1.x request's `Host` header makes it unanswerable, as Go's
/// net/http judges: HTTP/1.1 requires exactly one (CONNECT excepted);
/// HTTP/1.0 may omit it (and is routed with an empty host). HTTP/2 names
/// its host in `:authority`.
pub(super) fn host_problem(req: &Request<Incoming>) -> Option<&'static str> {
    if req.version() != Version::HTTP_11 && req.version() != Version::HTTP_10 {
        return None;
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("too many Host headers"),
        (None, _) if req.version() == Version::HTTP_11 && req.method() != http::Method::CONNECT => {
            Some("missing required Host header")
        }
        _ => None,
    }
}

const HOP_BY_HOP: [HeaderName; 6] = [
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers (and those `Connection` names); an upgrade
/// keeps `Connection: upgrade` and `Upgrade`.
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            if n != header::UPGRADE {
                headers.remove(n);
            }
        }
    }
    for h in &HOP_BY_HOP {
        if *h == header::TE && headers.get(h).is_some_and(|v| v == "trailers") {
            continue;
        }
        headers.remove(h);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Sets `X-Forwarded-Host` (unless the client sent one) to the host the
/// request was for, as received: the URI's authority (HTTP/2
/// `:authority`, absolute-form HTTP/1.1), else `Host`. A request without
/// `Host` gets one: that authority, else (HTTP/1.0 without a host) the
/// backend's address, as Go's transport would send.
pub(super) fn set_host_and_forwarded_host(parts: &mut http::request::Parts, backend: &str) {
    let from_uri = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let host = parts.headers.get(header::HOST).cloned();
    let has_host = host.is_some();
    let forwarded_host = from_uri.clone().or(host);
    if !has_host {
        let v = from_uri.or_else(|| HeaderValue::from_str(backend).ok());
        if let Some(v) = v {
            parts.headers.insert(header::HOST, v);
        }
    }
    if let Some(v) = forwarded_host
        && let http::header::Entry::Vacant(e) = parts.headers.entry(X_FORWARDED_HOST)
    {
        e.insert(v);
    }
}

/// Sets `X-Forwarded-For` to every line the client sent, joined with
/// `, ` in order, then the client's address (`client`, formatted once per
/// connection).
pub(super) fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    let ip = client.as_bytes();
    let prior = || {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter(|v| !v.is_empty())
    };
    let len: usize = prior().map(|v| v.len() + 2).sum();
    if len == 0 {
        headers.insert(X_FORWARDED_FOR, client.clone());
        return;
    }
    let mut joined = Vec::with_capacity(len + ip.len());
    for v in prior() {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(ip);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-private, Upgrade"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut upgrade = h.clone();

        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort();
        assert_eq!(names, ["te", "x-kept"]);

        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade[header::CONNECTION], "upgrade");
        assert_eq!(upgrade[header::UPGRADE], "websocket");
        assert!(upgrade.get("x-private").is_none());
    }

    #[test]
    fn forwarded_for_joins_the_client_lines_then_the_peer() {
        let peer = HeaderValue::from_static("10.1.2.3");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &peer);
        assert_eq!(h[&X_FORWARDED_FOR], "10.1.2.3");

        let mut h = HeaderMap::new();
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static(""));
        h.append(
            &X_FORWARDED_FOR,
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        append_forwarded_for(&mut h, &peer);
        let all: Vec<_> = h.get_all(&X_FORWARDED_FOR).iter().collect();
        assert_eq!(all, ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.1.2.3"]);
    }
}
