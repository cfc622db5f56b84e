//! The HTTP/2 transport: a `kube::Client` over one multiplexed HTTP/2
//! connection, for reading from a cache (an interceptor's `--source-url`, a
//! cache's `--upstream-url`) or any server that speaks HTTP/2.
//!
//! Why not kube's own client: over HTTP/1.1 every 1 s conditional resync
//! costs a full request line plus headers (and, in a cluster, a ~1 KB
//! bearer token) and a 304 status line with headers, several hundred bytes
//! per request. Over HTTP/2 the repeated headers are HPACK-indexed after the
//! first request and shrink to a few bytes each: an idle replica's resync
//! of two resources costs well under 200 B/s. All of a replica's watches and
//! lists share the one connection.
//!
//! - `http://` URLs use h2c with prior knowledge (no upgrade round trip);
//!   `https://` URLs use TLS with ALPN `h2` (rustls, ring).
//! - The bearer token: HPACK as implemented by the h2 crate never indexes
//!   `authorization` (nor `:path`, `if-none-match`, `etag`), so a ~1 KB
//!   service account token would cost 1 KB on every request. When the
//!   server is a cache it answers a request carrying a valid token with
//!   `x-keda-http-cache-session: <seconds>` ([`wire::SESSION_HEADER`]):
//!   the connection stays authenticated that long. This client then omits
//!   the token on that connection and sends it again at half the granted
//!   time, at most every 300 s (or at once after a 401). Any other server
//!   never sends the header and gets the token on every request. A token
//!   file is re-read every minute (projected service account tokens
//!   rotate).
//! - The connection is made on first use and remade after it closes;
//!   HTTP/2 keep-alive pings detect a dead peer.
//!
//! ```no_run
//! # fn demo() -> Result<(), kubewatch::client::ClientError> {
//! let config = kubewatch::client::CacheClientConfig::new("http://127.0.0.1:9443".parse().unwrap());
//! let client = kubewatch::client::cache_client(config)?;
//! let routes = kubewatch::Collection::new(client, "/apis/http.keda.sh/v1alpha1/httpscaledobjects");
//! # let _ = routes; Ok(()) }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wire::SESSION_HEADER;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type RequestBody = kube::client::Body;

/// Bytes read and written on the client's connections (TCP payload, i.e.
/// TLS records when TLS is on). Share one between clients to sum them.
#[derive(Debug, Default)]
pub struct IoCounters {
    read: AtomicU64,
    written: AtomicU64,
}

impl IoCounters {
    /// A new, zeroed counter pair.
    pub fn new() -> Arc<Self> {
        Arc::new(IoCounters::default())
    }

    /// Bytes received so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes sent so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Settings of [`cache_client`].
#[derive(Clone, Debug)]
pub struct CacheClientConfig {
    /// `http://host:port` (h2c) or `https://host:port` (TLS, ALPN h2); a
    /// path prefix is kept.
    pub url: Uri,
    /// A bearer token.
    pub token: Option<String>,
    /// A file holding the bearer token (re-read every minute); wins over `token`.
    pub token_file: Option<PathBuf>,
    /// PEM CA certificates for https; default: the system's roots.
    pub root_certs_pem: Option<Vec<u8>>,
    /// Skip TLS verification (testing only).
    pub accept_invalid_certs: bool,
    /// The client's default namespace.
    pub default_namespace: String,
    /// Counts the connection's bytes (benchmarks).
    pub counters: Option<Arc<IoCounters>>,
    /// HTTP/2 PING interval that detects a dead connection.
    pub keep_alive_interval: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
}

impl CacheClientConfig {
    /// Defaults for `url`: no token, system roots, 30 s keep-alive.
    pub fn new(url: Uri) -> Self {
        CacheClientConfig {
            url,
            token: None,
            token_file: None,
            root_certs_pem: None,
            accept_invalid_certs: false,
            default_namespace: "default".to_string(),
            counters: None,
            keep_alive_interval: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not usable.
    #[error("URL {0}")]
    Url(String),
    /// TLS configuration.
    #[error("TLS: {0}")]
    Tls(String),
    /// The token or token file.
    #[error("token: {0}")]
    Token(String),
}

/// Builds a `kube::Client` that sends every request over one HTTP/2
/// connection to `config.url` (see the module doc).
pub fn cache_client(config: CacheClientConfig) -> Result<kube::Client, ClientError> {
    let service = H2Service::new(config)?;
    let ns = service.shared.default_namespace.clone();
    Ok(kube::Client::new(service, ns))
}

struct Shared {
    scheme: Scheme,
    authority: Authority,
    host: String,
    port: u16,
    prefix: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    token: Token,
    counters: Option<Arc<IoCounters>>,
    keep_alive_interval: Duration,
    connect_timeout: Duration,
    default_namespace: String,
    /// The one connection. A tokio mutex on purpose: held across the
    /// connect so concurrent first requests share one connection.
    conn: tokio::sync::Mutex<Option<(SendRequest<RequestBody>, Arc<Session>)>>,
}

/// The token is re-sent at least this often on a session (a 1 KB token
/// every 300 s is 3.4 B/s).
const SESSION_REFRESH: Duration = Duration::from_secs(300);

/// Until when this connection may omit the token (ms since `created`).
#[derive(Debug)]
struct Session {
    created: Instant,
    until_ms: AtomicU64,
}

impl Session {
    fn new() -> Arc<Self> {
        Arc::new(Session {
            created: Instant::now(),
            until_ms: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.created.elapsed().as_millis() as u64
    }

    fn active(&self) -> bool {
        self.now_ms() < self.until_ms.load(Ordering::Relaxed)
    }

    fn grant(&self, ttl: Duration) {
        let ttl = (ttl / 2).min(SESSION_REFRESH);
        self.until_ms
            .store(self.now_ms() + ttl.as_millis() as u64, Ordering::Relaxed);
    }

    fn revoke(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
    }
}

enum Token {
    None,
    Static(HeaderValue),
    File {
        path: PathBuf,
        cached: ArcSwapOption<(Instant, HeaderValue)>,
    },
}

const TOKEN_FILE_REFRESH: Duration = Duration::from_secs(60);

fn bearer(token: &str) -> Result<HeaderValue, ClientError> {
    // Deliberately not `set_sensitive`: HPACK may then index it.
    HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|e| ClientError::Token(e.to_string()))
}

impl Token {
    fn header(&self) -> Result<Option<HeaderValue>, ClientError> {
        match self {
            Token::None => Ok(None),
            Token::Static(v) => Ok(Some(v.clone())),
            Token::File { path, cached } => {
                if let Some(c) = cached.load().as_ref()
                    && c.0.elapsed() < TOKEN_FILE_REFRESH
                {
                    return Ok(Some(c.1.clone()));
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ClientError::Token(format!("{}: {e}", path.display())))?;
                let v = bearer(&text)?;
                cached.store(Some(Arc::new((Instant::now(), v.clone()))));
                Ok(Some(v))
            }
        }
    }
}

#[derive(Clone)]
struct H2Service {
    shared: Arc<Shared>,
}

impl H2Service {
    fn new(config: CacheClientConfig) -> Result<Self, ClientError> {
        let url = &config.url;
        let scheme = url
            .scheme()
            .cloned()
            .ok_or_else(|| ClientError::Url(format!("{url}: no scheme")))?;
        let authority = url
            .authority()
            .cloned()
            .ok_or_else(|| ClientError::Url(format!("{url}: no host")))?;
        let https = match scheme.as_str() {
            "http" => false,
            "https" => true,
            s => return Err(ClientError::Url(format!("{url}: unsupported scheme {s}"))),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let prefix = url.path().trim_end_matches('/').to_string();
        let tls = if https {
            Some((tls_connector(&config)?, server_name(&host)?))
        } else {
            None
        };
        let token = match (&config.token_file, &config.token) {
            (Some(path), _) => {
                let t = Token::File {
                    path: path.clone(),
                    cached: ArcSwapOption::empty(),
                };
                t.header()?; // fail early on an unreadable file
                t
            }
            (None, Some(tok)) => Token::Static(bearer(tok)?),
            (None, None) => Token::None,
        };
        Ok(H2Service {
            shared: Arc::new(Shared {
                scheme,
                authority,
                host,
                port,
                prefix,
                tls,
                token,
                counters: config.counters,
                keep_alive_interval: config.keep_alive_interval,
                connect_timeout: config.connect_timeout,
                default_namespace: config.default_namespace,
                conn: tokio::sync::Mutex::new(None),
            }),
        })
    }
}

fn server_name(host: &str) -> Result<rustls_pki_types::ServerName<'static>, ClientError> {
    rustls_pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ClientError::Tls(format!("server name {host:?}: {e}")))
}

fn tls_connector(config: &CacheClientConfig) -> Result<tokio_rustls::TlsConnector, ClientError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut tls = if config.accept_invalid_certs {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &config.root_certs_pem {
            Some(pem) => {
                for c in CertificateDer::pem_slice_iter(pem) {
                    let c = c.map_err(|e| ClientError::Tls(format!("CA certificates: {e}")))?;
                    roots
                        .add(c)
                        .map_err(|e| ClientError::Tls(format!("CA certificate: {e}")))?;
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    tls.alpn_protocols = vec![b"h2".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// Accepts any server certificate (`accept_invalid_certs`, testing only),
/// still checking that the handshake signatures are valid.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl Shared {
    async fn send(&self, mut req: Request<RequestBody>) -> Result<Response<Incoming>, BoxError> {
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{pq}", self.prefix))
            .build()?;
        *req.uri_mut() = uri;
        let (mut sender, session) = self.sender().await?;
        let omitted = session.active();
        let mut sent_token = false;
        if !omitted
            && !req.headers().contains_key(http::header::AUTHORIZATION)
            && let Some(v) = self.token.header()?
        {
            req.headers_mut().insert(http::header::AUTHORIZATION, v);
            sent_token = true;
        }
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        if sent_token {
            if let Some(secs) = resp
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                session.grant(Duration::from_secs(secs));
            }
        } else if omitted && resp.status() == http::StatusCode::UNAUTHORIZED {
            session.revoke();
        }
        Ok(resp)
    }

    async fn sender(&self) -> Result<(SendRequest<RequestBody>, Arc<Session>), BoxError> {
        let mut conn = self.conn.lock().await;
        if let Some((s, session)) = conn.as_ref()
            && !s.is_closed()
        {
            return Ok((s.clone(), session.clone()));
        }
        *conn = None;
        let s = self.connect().await?;
        let session = Session::new();
        *conn = Some((s.clone(), session.clone()));
        Ok((s, session))
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, BoxError> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| format!("connect to {}:{} timed out", self.host, self.port))??;
        let _ = tcp.set_nodelay(true);
        let io = CountedIo {
            inner: tcp,
            counters: self.counters.clone(),
        };
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        match &self.tls {
            None => handshake(&builder, io).await,
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), io).await?;
                if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(format!(
                        "{}:{} did not negotiate HTTP/2 (ALPN h2)",
                        self.host, self.port
                    )
                    .into());
                }
                handshake(&builder, stream).await
            }
        }
    }
}

async fn handshake<T>(
    builder: &hyper::client::conn::http2::Builder<TokioExecutor>,
    io: T,
) -> Result<SendRequest<RequestBody>, BoxError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = builder.handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "cache connection closed");
        }
    });
    Ok(sender)
}

impl tower_service::Service<Request<RequestBody>> for H2Service {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<RequestBody>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { shared.send(req).await })
    }
}

/// A TCP stream that counts its bytes.
struct CountedIo {
    inner: TcpStream,
    counters: Option<Arc<IoCounters>>,
}

impl AsyncRead for CountedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(c)) = (&r, &this.counters) {
            c.read
                .fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for CountedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(c)) = (&r, &this.counters) {
            c.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(n)), Some(c)) = (&r, &this.counters) {
            c.written.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
