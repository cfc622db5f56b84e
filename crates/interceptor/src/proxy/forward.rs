//! The backend exchange: the outgoing request (origin form over HTTP/1.1,
//! absolute form over h2c), the pooled clients, the response-header timeout,
//! and the response passed back (hop-by-hop headers stripped, body
//! streamed, upgrades handed to the tunnel).

use std::time::Duration;

use http::header;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use sync::endpoints::{Backend, BackendProtocol};

use super::headers::{
    X_FORWARDED_PROTO, append_forwarded_for, set_host_and_forwarded_host, strip_hop_by_hop,
};
use super::upgrade::{h2_connect_to_upgrade, is_upgrade};
use super::{Peer, Proxy};
use crate::body::ProxyBody;
use crate::error::ProxyError;

/// A forwarded response, and the two halves of an upgrade when the backend
/// switched protocols.
pub(super) struct Forwarded {
    pub(super) response: Response<ProxyBody>,
    pub(super) upgrade: Option<(OnUpgrade, OnUpgrade)>,
}

impl Proxy {
    /// Sends `req` to `backend` and returns its response; `cold` is the
    /// response's cold-start header, `timeout` the response-header timeout
    /// (zero: none).
    pub(super) async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        backend: &Backend,
        cold: bool,
        timeout: Duration,
    ) -> Result<Forwarded, ProxyError> {
        let authority = &backend.authority;
        // An HTTP/2 extended CONNECT (RFC 8441, `:protocol: websocket`)
        // becomes an HTTP/1.1 upgrade towards the backend.
        let h2_connect = req.method() == http::Method::CONNECT
            && req.version() == Version::HTTP_2
            && req.extensions().get::<hyper::ext::Protocol>().is_some();
        let upgrade =
            h2_connect || (req.version() == Version::HTTP_11 && is_upgrade(req.headers()));
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if h2_connect {
            h2_connect_to_upgrade(&mut parts);
        }

        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        // Upgrades always go over HTTP/1.1.
        let use_h2c = backend.protocol == BackendProtocol::H2c && !upgrade;
        // HTTP/1.1 goes out in origin form (`/path?query`, with `Host`); the
        // h2c client takes the absolute form and makes `:authority` of it.
        let uri = if use_h2c {
            Uri::builder()
                .scheme(http::uri::Scheme::HTTP)
                .authority(&**authority)
                .path_and_query(path)
                .build()
                .map_err(|e| {
                    ProxyError::Unresolvable(format!("bad backend URI for {authority}: {e}"))
                })?
        } else {
            Uri::from(path)
        };
        set_host_and_forwarded_host(&mut parts, authority);
        strip_hop_by_hop(&mut parts.headers, upgrade);
        append_forwarded_for(&mut parts.headers, &peer.forwarded_for);
        parts
            .headers
            .entry(X_FORWARDED_PROTO)
            .or_insert_with(|| peer.forwarded_proto.clone());
        parts.uri = uri;
        parts.version = if use_h2c {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let out = Request::from_parts(parts, body);

        let sent = async {
            if use_h2c {
                self.backends
                    .h2c
                    .request(out)
                    .await
                    .map(|r| (r, None))
                    .map_err(|e| error_chain(&e))
            } else {
                self.backends
                    .http1
                    .send(authority, out)
                    .await
                    .map_err(|e| error_chain(&e))
            }
        };
        let result = if timeout.is_zero() {
            sent.await
        } else {
            match tokio::time::timeout(timeout, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ProxyError::ResponseHeaderTimeout {
                        backend: authority.to_string(),
                        timeout,
                    });
                }
            }
        };
        let (mut resp, lease) = result.map_err(|message| ProxyError::Upstream {
            message,
            backend: authority.to_string(),
        })?;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let backend_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
        let (mut parts, body) = resp.into_parts();
        if switching && h2_connect {
            // HTTP/2 answers an accepted extended CONNECT with 200 and no
            // connection-specific headers.
            parts.status = StatusCode::OK;
            parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            strip_hop_by_hop(&mut parts.headers, false);
        } else {
            strip_hop_by_hop(&mut parts.headers, switching);
        }
        self.cold_header(&mut parts.headers, cold);
        let body = if switching {
            ProxyBody::empty()
        } else {
            ProxyBody::stream(body, lease)
        };
        let upgrade = match (client_upgrade, backend_upgrade) {
            (Some(c), Some(b)) => Some((c, b)),
            _ => None,
        };
        Ok(Forwarded {
            response: Response::from_parts(parts, body),
            upgrade,
        })
    }
}

/// An error and its sources, `: `-joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
