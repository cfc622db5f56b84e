//! The subscriber side: HTTP/1.1 and HTTP/2 (h2c prior knowledge on plain
//! TCP, ALPN `h2` over TLS) on one port, bearer-token auth, discovery, and
//! list/watch from the mirrored stores through `listwatch`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use listwatch::{Body, ListWatch, ListWatchQuery, Reason, Stores, json_response, parse_path};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use wire::SESSION_HEADER;

use crate::auth::Authenticator;
use crate::metrics::CacheMetrics;
use crate::upstream::Readiness;

/// Everything a request needs.
pub(crate) struct Served {
    pub(crate) stores: Arc<Stores>,
    pub(crate) handler: ListWatch,
    pub(crate) auth: Authenticator,
    pub(crate) discovery: listwatch::Discovery,
    pub(crate) readiness: Arc<Readiness>,
    pub(crate) metrics: CacheMetrics,
    pub(crate) addr: SocketAddr,
}

/// Why the cache's TLS certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file cannot be read or parsed.
    #[error("certificate {}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("certificate {}: no certificate in the file", .0.display())]
    NoCertificate(PathBuf),
    /// The key file cannot be read or parsed.
    #[error("key {}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate and key do not make a TLS configuration.
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
}

/// Loads a PEM certificate chain and key into a TLS acceptor offering h2
/// and http/1.1.
pub(crate) fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let cert_err = |source| TlsError::Certificate {
        path: cert.to_owned(),
        source,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(cert_err)?
        .collect::<Result<_, _>>()
        .map_err(cert_err)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(TlsError::Config)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The subscriber port's HTTP server: `limits`, plus its HTTP/2 settings.
pub(crate) fn subscriber_server(
    limits: process::http::Limits,
    metrics: process::http::ConnectionMetrics,
) -> process::http::Server {
    let mut server = process::http::Server::new(limits, metrics);
    server
        .builder_mut()
        .http2()
        // A date header on every 304 would defeat HPACK (it changes each second).
        .auto_date_header(false)
        // Bounds what a slow subscriber's stream can hold in the server.
        .max_send_buf_size(64 * 1024)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    server
}

/// Accepts connections until cancelled; every open connection is dropped
/// when cancelled.
pub(crate) async fn accept_loop(
    served: Arc<Served>,
    server: Arc<process::http::Server>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cancel: CancellationToken,
) {
    server
        .accept(listener, &cancel, |conn| {
            let served = served.clone();
            let session = Arc::new(Session::default());
            let svc = hyper::service::service_fn(move |req| {
                let served = served.clone();
                let session = session.clone();
                async move { Ok::<_, Infallible>(route(served, session, req).await) }
            });
            let (server, tls, cancel) = (server.clone(), tls.clone(), cancel.clone());
            tokio::spawn(async move {
                server
                    .serve_tcp(conn, tls.as_ref(), svc, &cancel, &cancel)
                    .await
            });
        })
        .await
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Health endpoints shared by the API port and the metrics port.
pub(crate) fn health(readiness: &Readiness, path: &str) -> Option<Response<Body>> {
    match path {
        "/readyz" => Some(if readiness.is_ready() {
            text(StatusCode::OK, "ok")
        } else {
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "initial lists not complete",
            )
        }),
        "/livez" | "/healthz" => Some(text(StatusCode::OK, "ok")),
        _ => None,
    }
}

/// How long a connection stays authenticated after a valid token.
const SESSION_TTL: Duration = Duration::from_secs(600);

/// Connection-level authentication. HTTP/2's HPACK (as implemented by the
/// h2 crate) never indexes `authorization` values, so a ~1 KB service
/// account token would cost 1 KB per request, several times the whole 1 s
/// resync budget. Instead a connection that presented a valid token stays
/// authenticated for [`SESSION_TTL`], renewed by every request that
/// carries a valid token; responses to those requests carry
/// [`SESSION_HEADER`] so a client (`kubewatch::client`) knows it may omit the
/// token for a while (it re-sends it every minute). A request with a wrong
/// token is always rejected; clients that do not know about sessions send
/// the token every time and see no difference.
#[derive(Debug, Default)]
pub(crate) struct Session {
    /// Milliseconds since `epoch()` until which the connection is authenticated.
    until_ms: std::sync::atomic::AtomicU64,
}

fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(std::time::Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl Session {
    fn renew(&self) {
        self.until_ms.store(
            now_ms() + SESSION_TTL.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn valid(&self) -> bool {
        now_ms() < self.until_ms.load(std::sync::atomic::Ordering::Relaxed)
    }
}

async fn route(
    served: Arc<Served>,
    session: Arc<Session>,
    req: Request<Incoming>,
) -> Response<Body> {
    let m = &served.metrics;
    let path = req.uri().path();
    if let Some(resp) = health(&served.readiness, path) {
        return counted(resp, m, false);
    }
    let has_token = req.headers().contains_key(header::AUTHORIZATION);
    let authorized = if has_token {
        served.auth.check(req.headers()).await
    } else {
        served.auth.is_anonymous() || session.valid()
    };
    if !authorized {
        m.request("unauthorized");
        return counted(
            listwatch::status_response(Reason::Unauthorized, "Unauthorized"),
            m,
            false,
        );
    }
    if has_token {
        session.renew();
    }
    let mut resp = route_authorized(&served, &req).await;
    if has_token {
        resp.headers_mut()
            .insert(SESSION_HEADER, HeaderValue::from(SESSION_TTL.as_secs()));
    }
    resp
}

async fn route_authorized(served: &Served, req: &Request<Incoming>) -> Response<Body> {
    let m = &served.metrics;
    let path = req.uri().path();
    if req.method() != Method::GET {
        m.request("rejected");
        return counted(
            listwatch::status_response(
                Reason::MethodNotAllowed,
                &format!("the cache is read-only: {} is not supported", req.method()),
            ),
            m,
            false,
        );
    }
    let Some(rp) = parse_path(path) else {
        m.request("discovery");
        let resp = match served.discovery.document(path, &served.addr.to_string()) {
            Some(v) => json_response(
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            ),
            None => listwatch::status_response(
                Reason::NotFound,
                "the server could not find the requested resource",
            ),
        };
        return counted(resp, m, false);
    };
    if served.stores.get(&rp.gvr).is_none() {
        m.request("rejected");
        return counted(
            listwatch::status_response(
                Reason::NotFound,
                "the server could not find the requested resource",
            ),
            m,
            false,
        );
    }
    if !served.readiness.is_ready() {
        // Serving an empty or partial table would make subscribers drop
        // routes; they retry and keep what they have.
        m.request("rejected");
        let mut resp = listwatch::status_response(
            Reason::ServiceUnavailable,
            "the cache has not completed its initial lists yet",
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return counted(resp, m, false);
    }
    let is_watch =
        rp.name.is_none() && ListWatchQuery::parse(req.uri().query()).is_ok_and(|q| q.watch);
    let resp = served.handler.handle(&served.stores, req).await;
    let kind = match (is_watch, resp.status()) {
        (true, _) => "watch",
        (false, StatusCode::NOT_MODIFIED) => "not_modified",
        (false, _) if rp.name.is_some() => "get",
        (false, _) => "list",
    };
    m.request(kind);
    counted(resp, m, is_watch)
}

/// How a bookmark line ends (`listwatch` encodes keys in sorted order, so
/// `type` comes last).
const BOOKMARK_SUFFIX: &[u8] = b"\"type\":\"BOOKMARK\"}\n";

/// `resp` with a body that counts what it sends (bytes; events and
/// bookmarks for watches) and, for a watch, holds the subscriber gauge
/// while open.
fn counted(resp: Response<Body>, metrics: &CacheMetrics, watch: bool) -> Response<Body> {
    // Only the counters it needs: a watch holds this for as long as it is
    // open, and a cache serves thousands of them.
    let bytes = metrics.bytes_sent.clone();
    let mut watch = watch.then(|| Watch {
        events: metrics.events_fanned_out.clone(),
        bookmarks: metrics.bookmarks_sent.clone(),
        _subscriber: Subscriber::new(&metrics.subscribers),
    });
    resp.map(|body| {
        body.observe(move |d| {
            bytes.inc_by(d.len() as u64);
            if let Some(w) = &mut watch {
                if d.ends_with(BOOKMARK_SUFFIX) || d.starts_with(b"{\"type\":\"BOOKMARK\"") {
                    w.bookmarks.inc();
                } else {
                    w.events.inc();
                }
            }
        })
    })
}

/// What a watch's body counts.
struct Watch {
    events: Counter,
    bookmarks: Counter,
    /// Held (never read) so that the gauge drops with the body.
    _subscriber: Subscriber,
}

/// One open watch in the subscriber gauge, for as long as it lives.
struct Subscriber(Gauge);

impl Subscriber {
    fn new(gauge: &Gauge) -> Subscriber {
        gauge.inc();
        Subscriber(gauge.clone())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_counted_watch_counts_events_bookmarks_and_bytes_and_leaves_the_gauge() {
        let m = CacheMetrics::new(&mut prometheus_client::registry::Registry::default());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let event = Bytes::from_static(b"{\"object\":{},\"type\":\"ADDED\"}\n");
        let bookmark = Bytes::from_static(b"{\"object\":{},\"type\":\"BOOKMARK\"}\n");
        let resp = counted(Response::new(Body::channel(rx)), &m, true);
        assert_eq!(m.subscribers.get(), 1);
        for chunk in [&event, &bookmark, &event] {
            tx.send(chunk.clone()).await.unwrap();
        }
        drop(tx);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 2 * event.len() + bookmark.len());
        assert_eq!(m.events_fanned_out.get(), 2);
        assert_eq!(m.bookmarks_sent.get(), 1);
        assert_eq!(m.bytes_sent.get(), body.len() as u64);
        assert_eq!(m.subscribers.get(), 0, "the finished watch left the gauge");

        // A list counts its bytes only.
        let list = counted(Response::new(Body::full("[]")), &m, false);
        assert_eq!(m.subscribers.get(), 0);
        list.into_body().collect().await.unwrap();
        assert_eq!(m.bytes_sent.get(), body.len() as u64 + 2);
        assert_eq!(m.events_fanned_out.get(), 2);
    }
}
