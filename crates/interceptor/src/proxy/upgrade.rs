//! Upgrades: recognising an HTTP/1.1 upgrade, turning an HTTP/2 extended
//! CONNECT (RFC 8441) into the HTTP/1.1 upgrade it stands for, and the
//! tunnel that copies bytes both ways once both sides switched.

use http::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::body::RequestGuard;

/// Whether the request asks for an HTTP/1.1 upgrade (`Upgrade` and
/// `Connection: upgrade`).
pub(super) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| connection_has(v, "upgrade"))
}

/// Whether a `Connection` value lists `token`.
pub(super) fn connection_has(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

/// Rewrites an HTTP/2 extended CONNECT into the HTTP/1.1 upgrade request
/// it stands for: `GET` with `Connection: upgrade`, `Upgrade: <protocol>`
/// and, for websockets, a fresh `Sec-WebSocket-Key` (HTTP/2 clients send
/// none; the backend's `Sec-WebSocket-Accept` answers it and is not passed
/// back).
pub(super) fn h2_connect_to_upgrade(parts: &mut http::request::Parts) {
    let protocol = parts
        .extensions
        .remove::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    parts.method = http::Method::GET;
    if let Ok(v) = HeaderValue::from_str(&protocol) {
        parts.headers.insert(header::UPGRADE, v);
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if protocol.eq_ignore_ascii_case("websocket") {
        if let Ok(v) = HeaderValue::from_str(&websocket_key()) {
            parts.headers.insert(header::SEC_WEBSOCKET_KEY, v);
        }
        parts
            .headers
            .entry(header::SEC_WEBSOCKET_VERSION)
            .or_insert(HeaderValue::from_static("13"));
    }
}

/// A `Sec-WebSocket-Key`: 16 random bytes, base64. It only has to differ
/// between handshakes (RFC 6455 4.1), not be secret.
fn websocket_key() -> String {
    use base64::Engine as _;
    let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Copies bytes both ways between an upgraded client and backend until
/// either side closes; the request stays counted meanwhile.
pub(super) async fn tunnel(client: OnUpgrade, backend: OnUpgrade, guard: RequestGuard) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(x) => x,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            drop(guard);
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        debug!(error = %e, "upgraded connection ended");
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    #[test]
    fn websocket_keys_are_16_bytes_and_differ() {
        use base64::Engine as _;
        let a = super::websocket_key();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!((a.len(), decoded.len()), (24, 16));
        assert_ne!(a, super::websocket_key());
    }
}
