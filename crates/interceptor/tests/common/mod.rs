//! Shared helpers of the proxy tests: in-process echo backends, routes
//! directories, an interceptor on ephemeral ports, and a plain HTTP client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use interceptor::{Interceptor, InterceptorArgs};
use testkit::fixtures::Hso;

/// Bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: InterceptorArgs,
}

/// Interceptor flags for tests: loopback, ephemeral ports, fast resync,
/// plus `source` and `extra` (which may replace any of those defaults).
pub fn args(source: &[&str], extra: &[&str]) -> InterceptorArgs {
    let defaults = [
        ("--bind-address", "127.0.0.1"),
        ("--proxy-port", "0"),
        ("--admin-port", "0"),
        ("--metrics-port", "0"),
        ("--resync-interval", "200ms"),
        ("--shutdown-delay", "0s"),
    ];
    let given = |flag: &str| source.contains(&flag) || extra.contains(&flag);
    let mut argv = vec!["interceptor"];
    for (flag, value) in defaults.into_iter().filter(|(flag, _)| !given(flag)) {
        argv.extend([flag, value]);
    }
    argv.extend_from_slice(source);
    argv.extend_from_slice(extra);
    Cli::try_parse_from(argv).expect("valid flags").args
}

/// An interceptor reading `dir`.
pub async fn start_dir(dir: &Path, extra: &[&str]) -> Interceptor {
    let dir = dir.to_str().unwrap();
    let icp = Interceptor::start(&args(&["--routes-dir", dir], extra))
        .await
        .expect("interceptor starts");
    tokio::time::timeout(WAIT, icp.sync.table.wait_ready())
        .await
        .expect("table ready");
    icp
}

/// An echo backend named `name` on 127.0.0.1:0.
pub async fn echo(name: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_echo(name, listener);
    addr
}

/// Serves an echo backend named `name` on `listener`, in the background.
pub fn serve_echo(name: &str, listener: tokio::net::TcpListener) {
    let e = echo::Echo::new(echo::EchoArgs {
        name: name.into(),
        ..echo::EchoArgs::default()
    });
    tokio::spawn(e.serve(listener));
}

/// An InterceptorRoute `ns/name` targeting `svc` (port `http`), with
/// `spec` (indented YAML) appended to its spec.
pub fn ir(ns: &str, name: &str, svc: &str, spec: &str) -> String {
    format!(
        r#"---
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  target: {{service: {svc}, portName: http}}
  scalingMetric:
    concurrency: {{targetValue: 10}}
{spec}"#
    )
}

/// An InterceptorRoute `ns/name` targeting `svc` with one rule, for `host`;
/// `extra` (indented YAML) goes on after the rule's hosts.
pub fn ir_rule(name: &str, svc: &str, host: &str, extra: &str) -> String {
    ir(
        "ns",
        name,
        svc,
        &format!("  rules:\n  - hosts: [\"{host}\"]\n{extra}"),
    )
}

/// A Service with one port (`appProtocol` optional) and an EndpointSlice
/// pointing at `backend`.
pub fn service_yaml(
    ns: &str,
    svc: &str,
    port_name: &str,
    app_protocol: Option<&str>,
    backend: SocketAddr,
    ready: bool,
) -> String {
    let app = app_protocol
        .map(|a| format!(", appProtocol: {a}"))
        .unwrap_or_default();
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {svc}, namespace: {ns}}}
spec:
  ports:
  - {{name: {port_name}, port: 80, targetPort: {port_name}{app}}}
---
{slice}"#,
        slice = slice_yaml(ns, svc, port_name, backend, ready)
    )
}

/// An EndpointSlice of `svc` with one endpoint at `backend`.
pub fn slice_yaml(
    ns: &str,
    svc: &str,
    port_name: &str,
    backend: SocketAddr,
    ready: bool,
) -> String {
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {svc}-1
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {svc}}}
addressType: IPv4
ports:
- {{name: {port_name}, port: {port}, protocol: TCP}}
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: {ready}}}
"#,
        port = backend.port(),
        ip = backend.ip(),
    )
}

/// An HTTPScaledObject routing `hosts`/`paths` to `svc:portName http`.
pub fn httpso_yaml(
    ns: &str,
    name: &str,
    svc: &str,
    hosts: &[&str],
    paths: &[&str],
    headers: &[(&str, &str)],
) -> String {
    let hso = hosts.iter().fold(Hso::new(ns, name), |o, h| o.host(h));
    let mut hso = paths
        .iter()
        .fold(hso, |o, p| o.path_prefix(p))
        .service_port_name(svc, "http");
    if !headers.is_empty() {
        let headers: Vec<_> = headers
            .iter()
            .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
            .collect();
        hso = hso.spec("headers", serde_json::json!(headers));
    }
    hso.yaml_document()
}

/// Writes the routes of one app `ns/name` to `dir`: `svc.yaml` (its Service,
/// port `http`, and one endpoint at `backend`, ready or not) and
/// `route.yaml` (an HTTPScaledObject for `hosts`).
pub fn write_app(dir: &Path, name: &str, hosts: &[&str], backend: SocketAddr, ready: bool) {
    write(
        dir,
        "svc.yaml",
        &service_yaml("ns", name, "http", None, backend, ready),
    );
    write(
        dir,
        "route.yaml",
        &httpso_yaml("ns", name, name, hosts, &[], &[]),
    );
}

/// Writes `content` to `dir/name` atomically (write + rename), so the
/// directory watcher never reads half a file.
pub fn write(dir: &Path, name: &str, content: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// A plain HTTP/1.1 client (keep-alive pool).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    /// The echo backend that answered.
    pub fn server(&self) -> &str {
        self.headers
            .get("x-echo-server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn cold(&self) -> Option<&str> {
        self.headers
            .get("x-keda-http-cold-start")
            .and_then(|v| v.to_str().ok())
    }
}

/// Sends `method host path` with `headers` and `body` to `addr`.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Got {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body)).unwrap();
    let resp = tokio::time::timeout(WAIT, client.request(req))
        .await
        .expect("response in time")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(WAIT, body.collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A GET of `path` with `Host: host` and `headers`, on a new client.
pub async fn get_with(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    send(&client(), addr, "GET", host, path, headers, Bytes::new()).await
}

/// GET `host path` through the proxy.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Got {
    get_on(&client(), addr, host, path).await
}

/// A GET of `path` with `Host: host` on `client`'s connections.
pub async fn get_on(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Got {
    send(client, addr, "GET", host, path, &[], Bytes::new()).await
}

/// `/queue` of the admin server.
pub async fn queue(icp: &Interceptor) -> serde_json::Value {
    let got = get(icp.admin_addr, "admin", "/queue").await;
    assert_eq!(got.status, StatusCode::OK);
    got.json()
}

/// Waits until `/queue` shows `key` with this concurrency.
pub async fn wait_concurrency(icp: &Interceptor, key: &str, want: i64) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let q = queue(icp).await;
        if q[key]["Concurrency"].as_i64() == Some(want) {
            return q;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never reached concurrency {want}: {q}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the table holds `ns/name`.
pub async fn wait_route(icp: &Interceptor, ns: &str, name: &str) {
    tokio::time::timeout(WAIT, icp.sync.table.wait_for(|t| t.get(ns, name).is_some()))
        .await
        .unwrap_or_else(|_| panic!("route {ns}/{name} never appeared"));
}

/// Waits until `ns/svc` has a ready endpoint in the interceptor's cache.
pub async fn wait_ready(icp: &Interceptor, ns: &str, svc: &str) {
    tokio::time::timeout(WAIT, icp.sync.endpoints.wait_ready(ns, svc))
        .await
        .unwrap_or_else(|_| panic!("service {ns}/{svc} never became ready"));
}

/// An HTTP/1.1 backend counting the connections it accepted; answers `ok`
/// after `?delay_ms=N`. With `close_idle`, it closes each connection right
/// after its first response.
pub async fn counting_backend(
    close_idle: bool,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let delay = req
                            .uri()
                            .query()
                            .and_then(|q| q.strip_prefix("delay_ms="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(!close_idle)
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc);
                let _ = conn.await;
            });
        }
    });
    (addr, accepted)
}

/// A test certificate authority issuing leaf certificates (ECDSA P-256).
pub struct Pki {
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Pki { ca }
    }

    /// A leaf for `names`: (cert PEM, key PEM, cert DER).
    pub fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// Writes a leaf for `names` to `dir`, as the files `cert` and `key`
    /// (PEM); returns the certificate (DER).
    pub fn write_leaf(&self, names: &[&str], dir: &Path, cert: &str, key: &str) -> Vec<u8> {
        let (cert_pem, key_pem, der) = self.leaf(names);
        std::fs::write(dir.join(cert), cert_pem).unwrap();
        std::fs::write(dir.join(key), key_pem).unwrap();
        der
    }
}

/// A raw HTTP/1.x response: status code, head (lower-cased) and body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

/// Writes `request` as is to `addr` and reads one response (by
/// `Content-Length`, else until the server closes).
pub async fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a response head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse::<usize>().unwrap());
        let mut body = buf[head_end..].to_vec();
        match length {
            Some(n) => {
                while body.len() < n {
                    let got = s.read(&mut chunk).await.unwrap();
                    assert!(got > 0, "connection closed mid-body");
                    body.extend_from_slice(&chunk[..got]);
                }
            }
            None => {
                s.read_to_end(&mut body).await.unwrap();
            }
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        RawResponse {
            status,
            head,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("raw response in time")
}

/// A routes directory with one ready echo backend ("app") behind the Service
/// `ns/app` and an HTTPScaledObject `ns/app` for `host`, and an interceptor
/// (with `extra` flags) serving it once the route and the endpoint are in.
pub async fn serve_app(host: &str, extra: &[&str]) -> (Interceptor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo("app").await;
    write_app(dir.path(), "app", &[host], backend, true);
    let icp = start_waiting(dir.path(), extra, &["ns/app"], &["ns/app"]).await;
    (icp, dir)
}

/// Echo backends named `names`, in order.
pub async fn echoes<const N: usize>(names: [&str; N]) -> [SocketAddr; N] {
    let mut addrs = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for (addr, name) in addrs.iter_mut().zip(names) {
        *addr = echo(name).await;
    }
    addrs
}

/// A Service `ns/svc` (port `http`) with one endpoint at `backend`.
pub fn http_service(svc: &str, backend: SocketAddr, ready: bool) -> String {
    service_yaml("ns", svc, "http", None, backend, ready)
}

/// An interceptor (with `extra` flags) on `dir`, once its table holds every
/// route of `routes` and every Service of `ready` has a ready endpoint (both
/// given as `namespace/name`).
pub async fn start_waiting(
    dir: &Path,
    extra: &[&str],
    routes: &[&str],
    ready: &[&str],
) -> Interceptor {
    let icp = start_dir(dir, extra).await;
    for key in routes {
        let (ns, name) = key.split_once('/').expect("a route as namespace/name");
        wait_route(&icp, ns, name).await;
    }
    for key in ready {
        let (ns, svc) = key.split_once('/').expect("a Service as namespace/name");
        wait_ready(&icp, ns, svc).await;
    }
    icp
}

/// [`start_waiting`] on a new routes directory holding `files` (name,
/// content).
pub async fn serve_files(
    files: &[(&str, &str)],
    extra: &[&str],
    routes: &[&str],
    ready: &[&str],
) -> (Interceptor, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in files {
        write(dir.path(), name, content);
    }
    let icp = start_waiting(dir.path(), extra, routes, ready).await;
    (icp, dir)
}

/// Flags that turn the TLS listener on (ephemeral port) with the default
/// pair `cert` and `key` (paths).
pub fn tls_flags<'a>(cert: &'a str, key: &'a str) -> Vec<&'a str> {
    let mut flags = vec!["--tls-enabled", "true", "--tls-port", "0"];
    flags.extend(["--tls-cert-path", cert, "--tls-key-path", key]);
    flags
}

/// An HTTP/2 (prior knowledge) client connection over `io`, driven in the
/// background.
pub async fn h2_handshake<S, B>(io: S) -> hyper::client::conn::http2::SendRequest<B>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    send
}

/// An h2c (prior knowledge) client connection to `addr`.
pub async fn h2c<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    h2_handshake(tokio::net::TcpStream::connect(addr).await.unwrap()).await
}

/// An HTTP/1.1 client connection over `io`, driven in the background.
pub async fn h1_handshake<S, B>(io: S) -> hyper::client::conn::http1::SendRequest<B>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = hyper_util::rt::TokioIo::new(io);
    let (send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    send
}

/// The JSON body of a 200 response (what the echo backend saw).
pub async fn ok_json(resp: http::Response<hyper::body::Incoming>) -> serde_json::Value {
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}
