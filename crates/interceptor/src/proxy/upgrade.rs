//! Upgrades: recognising an HTTP/1.1 upgrade, turning an HTTP/2 extended
//! CONNECT (RFC 8441) into the HTTP/1.1 upgrade it stands for, and the
//! tunnel that copies bytes both ways once both sides switched.

use std::sync::atomic::{AtomicUsize, Ordering};

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

/// A `Sec-WebSocket-Key`: 16 bytes, base64. It only has to differ between
/// handshakes (RFC 6455 4.1), not be secret.
fn websocket_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(input.as_bytes()), want);
        }
        let a = super::websocket_key();
        assert_eq!(a.len(), 24);
        assert_ne!(a, super::websocket_key());
    }
}
