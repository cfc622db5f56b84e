//! Listening sockets, the one accept loop and connection server of every
//! HTTP port (proxy, list/watch, admin, health, metrics), and the small
//! responses of the metrics and health endpoints.
//!
//! A [`Server`] owns what every port does the same way: accepting (with a
//! cap on open connections, [`Limits::max_connections`]), hyper's HTTP/1.1
//! and HTTP/2 on one port, the optional TLS handshake, the connection-level
//! limits a hostile client meets ([`Limits`]), and shutdown (drain or drop).
//! Callers bring their service and, through [`Server::builder_mut`], the few
//! protocol settings that are theirs alone.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The content type of [`metrics_response`].
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` with `SO_REUSEADDR` (so a restarted server gets its port
/// back at once) and a backlog of 4096.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// A port that could not be bound, or whose bound address could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` as [`listen`] does and reads back the bound address (the
/// port the kernel chose when `addr`'s is 0).
pub fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let err = |source| BindError { addr, source };
    let listener = listen(addr).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// Connection-level limits of a [`Server`]: what a slow, idle or greedy
/// client can hold. One set per server; a server may accept on several
/// listeners (the interceptor's plain and TLS proxy ports share one cap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (0: no cap). Past it a new connection is
    /// accepted and closed at once (and counted as refused), rather than
    /// left unaccepted: a closed connection tells the client (or its load
    /// balancer) to go elsewhere now, while one left in the kernel's backlog
    /// would hang there until the client's own timeout, behind the very
    /// clients that filled the cap.
    pub max_connections: usize,
    /// Time a client has to send a complete request head (zero: none).
    /// The first request's is counted from the connection's accept (TLS
    /// handshake included) for HTTP/1.1 and HTTP/2 alike; later HTTP/1.1
    /// heads from the moment the connection waits for them, so this is also
    /// how long an idle keep-alive HTTP/1.1 connection is kept. A client
    /// that trickles its headers (slowloris) is closed when it passes.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes: the HTTP/1.1 read buffer (at least
    /// [`Limits::MIN_HEADER_BYTES`]) and the HTTP/2 header list. A larger
    /// head is answered 431 and, on HTTP/1.1, the connection closed.
    pub max_header_bytes: usize,
}

impl Limits {
    /// Default of [`Limits::max_connections`].
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// Default of [`Limits::header_read_timeout`] (hyper's and nginx's).
    pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of [`Limits::max_header_bytes`] (Envoy's is 60 KiB).
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
    /// The smallest HTTP/1.1 read buffer hyper takes; a lower
    /// [`Limits::max_header_bytes`] is raised to it for HTTP/1.1.
    pub const MIN_HEADER_BYTES: usize = 8 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: Limits::DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: Limits::DEFAULT_HEADER_READ_TIMEOUT,
            max_header_bytes: Limits::DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// The [`Limits`] as flags, named alike in every program that serves
/// outside clients: the interceptor (its proxy ports) and the cache (its
/// subscriber port). Ours, not upstream's.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Client connections kept open at once (the interceptor's plain and
    /// TLS proxy ports together); past it a new connection is closed at
    /// once (0: no cap).
    #[arg(long, env = "KEDA_HTTP_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Time a client has to send a request's headers (the first request's
    /// counted from connect); also how long an idle HTTP/1.1 keep-alive
    /// connection is kept. A slower client is disconnected (0s: none).
    #[arg(long, env = "KEDA_HTTP_HEADER_READ_TIMEOUT", value_parser = crate::parse_duration, default_value = "30s")]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers) in bytes; a larger
    /// one is answered 431 (at least 8192 for HTTP/1.1).
    #[arg(long, env = "KEDA_HTTP_MAX_HEADER_BYTES", default_value_t = Limits::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
}

impl LimitArgs {
    /// The limits these flags set.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

/// How long a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`Server`]'s connection counts. Cheap to clone; register them with
/// [`ConnectionMetrics::register`] under the caller's prefix.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    /// Connections open now (TLS handshakes included).
    pub open: Gauge,
    /// Connections closed at once because [`Limits::max_connections`] were open.
    pub refused: Counter,
    /// Connections closed because no request head arrived within
    /// [`Limits::header_read_timeout`] of the accept.
    pub without_request: Counter,
}

impl ConnectionMetrics {
    /// Registers `connections` (gauge), `connections_refused_total` and
    /// `connections_without_request_total` in `registry` (pass a prefixed
    /// sub-registry); `what` names the connections in the help texts.
    pub fn register(&self, registry: &mut Registry, what: &str) {
        registry.register(
            "connections",
            format!("Open {what} connections"),
            self.open.clone(),
        );
        registry.register(
            "connections_refused",
            format!("{what} connections closed at once because the connection limit was reached"),
            self.refused.clone(),
        );
        registry.register(
            "connections_without_request",
            format!("{what} connections closed because no request head arrived within the header read timeout"),
            self.without_request.clone(),
        );
    }
}

/// A connection accepted under the cap, on its way to
/// [`Server::serve_tcp`] (possibly on another thread).
#[derive(Debug)]
pub struct Accepted {
    /// The client's socket.
    pub stream: TcpStream,
    /// The client's address.
    pub peer: SocketAddr,
    /// Its place under the cap.
    pub slot: Slot,
}

/// A connection's place under [`Limits::max_connections`], counted in
/// [`ConnectionMetrics::open`]; released when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: Option<OwnedSemaphorePermit>,
    open: Gauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// The one HTTP server of every port: accepts under the connection cap and
/// serves each connection with hyper (HTTP/1.1 and HTTP/2, upgrades, the
/// [`Limits`]), draining or dropping it on shutdown.
///
/// ```no_run
/// # async fn demo(listener: tokio::net::TcpListener) {
/// use std::sync::Arc;
/// use process::http::{ConnectionMetrics, Limits, Server};
/// let server = Arc::new(Server::new(Limits::default(), ConnectionMetrics::default()));
/// let (drain, kill) = (tokio_util::sync::CancellationToken::new(), tokio_util::sync::CancellationToken::new());
/// let s = server.clone();
/// server.accept(listener, &drain.clone(), |conn| {
///     let (s, drain, kill) = (s.clone(), drain.clone(), kill.clone());
///     let service = hyper::service::service_fn(|_req| async {
///         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
///     });
///     tokio::spawn(async move { s.serve_tcp(conn, None, service, &drain, &kill).await });
/// }).await;
/// # }
/// ```
#[derive(Debug)]
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    slots: Option<Arc<Semaphore>>,
    metrics: ConnectionMetrics,
}

impl Server {
    /// A server with `limits`, counting into `metrics`.
    pub fn new(limits: Limits, metrics: ConnectionMetrics) -> Server {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let header_read_timeout =
            (!limits.header_read_timeout.is_zero()).then_some(limits.header_read_timeout);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(Limits::MIN_HEADER_BYTES));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        let slots =
            (limits.max_connections > 0).then(|| Arc::new(Semaphore::new(limits.max_connections)));
        Server {
            builder,
            limits,
            slots,
            metrics,
        }
    }

    /// hyper's connection builder, for a caller's protocol settings (HTTP/2
    /// stream limits, extended CONNECT, write strategy). Leave its timers
    /// and header limits alone: they are the [`Limits`].
    pub fn builder_mut(&mut self) -> &mut auto::Builder<TokioExecutor> {
        &mut self.builder
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The connection counts.
    pub fn metrics(&self) -> &ConnectionMetrics {
        &self.metrics
    }

    fn slot(&self) -> Option<Slot> {
        let permit = match &self.slots {
            Some(slots) => Some(slots.clone().try_acquire_owned().ok()?),
            None => None,
        };
        self.metrics.open.inc();
        Some(Slot {
            _permit: permit,
            open: self.metrics.open.clone(),
        })
    }

    /// Accepts connections on `listener` until `stop`, handing each one
    /// under the cap to `on_accept` (which spawns [`Server::serve_tcp`],
    /// here or on another thread); one over the cap is closed at once.
    pub async fn accept(
        &self,
        listener: TcpListener,
        stop: &CancellationToken,
        mut on_accept: impl FnMut(Accepted),
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors, mostly: do not spin.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = self.slot() else {
                let refused = self.metrics.refused.inc() + 1;
                // One line at the 1st, 2nd, 4th, 8th... refusal: visible, not a flood.
                if refused.is_power_of_two() {
                    warn!(
                        %peer,
                        max_connections = self.limits.max_connections,
                        refused,
                        "connection limit reached; closing new connections"
                    );
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            on_accept(Accepted { stream, peer, slot });
        }
    }

    /// Serves one accepted connection, over TLS when `tls` is given, until
    /// it ends. On `drain` it finishes what it has (HTTP/1.1 keep-alive
    /// off, HTTP/2 GOAWAY); on `kill` it is dropped at once (pass the same
    /// token twice for "drop on shutdown").
    pub async fn serve_tcp<S, B>(
        &self,
        conn: Accepted,
        tls: Option<&tokio_rustls::TlsAcceptor>,
        service: S,
        drain: &CancellationToken,
        kill: &CancellationToken,
    ) where
        S: Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Accepted { stream, peer, slot } = conn;
        let _slot = slot;
        // hyper bounds HTTP/1.1 heads itself, but neither the wait for the
        // first bytes (its protocol detection, and a TLS handshake) nor
        // HTTP/2's first request: this deadline does.
        let first_request_by = (!self.limits.header_read_timeout.is_zero())
            .then(|| Instant::now() + self.limits.header_read_timeout);
        let io = match tls {
            None => Either::Left(stream),
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                tokio::select! {
                    r = handshake => match r {
                        Ok(Ok(s)) => Either::Right(s),
                        Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => return debug!(%peer, "TLS handshake timed out"),
                    },
                    _ = kill.cancelled() => return,
                }
            }
        };
        let seen = Arc::new(AtomicBool::new(false));
        let service = FirstRequest {
            inner: service,
            seen: seen.clone(),
        };
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(conn);
        let first = tokio::time::sleep_until(first_request_by.unwrap_or_else(Instant::now));
        tokio::pin!(first);
        let mut waiting_first = first_request_by.is_some();
        let mut draining = false;
        loop {
            tokio::select! {
                biased;
                _ = kill.cancelled() => return,
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = &mut first, if waiting_first => {
                    waiting_first = false;
                    if !seen.load(Ordering::Relaxed) {
                        self.metrics.without_request.inc();
                        debug!(%peer, "no request head within the header read timeout; closing");
                        return;
                    }
                }
            }
        }
    }
}

/// A service that notes its first call (a complete request head).
struct FirstRequest<S> {
    inner: S,
    seen: Arc<AtomicBool>,
}

impl<S: Service<R>, R> Service<R> for FirstRequest<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, req: R) -> S::Future {
        self.seen.store(true, Ordering::Relaxed);
        self.inner.call(req)
    }
}

/// Serves `handler` on `listener` (HTTP/1.1 and HTTP/2 on one port, with
/// [`Limits::default`]) until `cancel`; open connections are closed then too.
///
/// ```no_run
/// # async fn demo(listener: tokio::net::TcpListener) {
/// use std::sync::Arc;
/// let registry = Arc::new(prometheus_client::registry::Registry::default());
/// let cancel = tokio_util::sync::CancellationToken::new();
/// tokio::spawn(process::http::serve(listener, move |_req| {
///     let registry = registry.clone();
///     async move {
///         let resp = process::http::metrics_response(&registry);
///         Ok::<_, std::convert::Infallible>(resp.map(http_body_util::Full::new))
///     }
/// }, cancel));
/// # }
/// ```
pub async fn serve<H, F, B>(listener: TcpListener, handler: H, cancel: CancellationToken)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let server = Arc::new(Server::new(Limits::default(), ConnectionMetrics::default()));
    let accepting = server.clone();
    accepting
        .accept(listener, &cancel, |conn| {
            let server = server.clone();
            let service = service_fn(handler.clone());
            let cancel = cancel.clone();
            tokio::spawn(async move {
                server
                    .serve_tcp(conn, None, service, &cancel, &cancel)
                    .await
            });
        })
        .await;
}

/// `registry` in the Prometheus (OpenMetrics) text format; 500 if it cannot
/// be encoded.
pub fn metrics_response(registry: &Registry) -> Response<Bytes> {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => {
            let mut r = Response::new(Bytes::from(text));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_TEXT),
            );
            r
        }
        Err(e) => text_response(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// A `text/plain` response.
pub fn text_response(status: StatusCode, body: impl Into<Bytes>) -> Response<Bytes> {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http_body_util::{BodyExt, Empty, Full};
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[tokio::test]
    async fn serves_until_cancelled() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("things", "Things seen", c.clone());
        c.inc();
        let registry = Arc::new(registry);
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let cancel = CancellationToken::new();
        let server = tokio::spawn(serve(
            listener,
            move |_req| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(metrics_response(&registry).map(Full::new)) }
            },
            cancel.clone(),
        ));

        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/metrics")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(resp.headers()[header::CONTENT_TYPE], OPENMETRICS_TEXT);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("things_total 1"), "{text}");

        cancel.cancel();
        server.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
