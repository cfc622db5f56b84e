//! `http-addon echo`: a small backend for tests, demos and benchmarks.
//!
//! Serves HTTP/1.1 and h2c (prior knowledge) on one port. Every request is
//! answered with JSON describing it (method, path, query, headers, protocol,
//! body length), unless `size` asks for a body of that many bytes instead;
//! `delay` holds the answer; `status` picks the code. These come from the
//! query string (`?delay=100ms&size=1024&status=201`) or, as defaults for
//! every request, from the flags. A websocket upgrade on any path echoes
//! every message back.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let server = echo::Echo::new(echo::EchoArgs::default()).serve(listener);
//! tokio::spawn(server);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::debug;

/// Flags of `http-addon echo`.
#[derive(clap::Args, Debug, Clone)]
pub struct EchoArgs {
    /// Port to listen on (0: any free port, printed on stdout).
    #[arg(long, env = "ECHO_PORT", default_value_t = 8081)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "ECHO_BIND_ADDRESS", default_value = "127.0.0.1")]
    pub bind_address: IpAddr,

    /// Delay before every answer, a Go duration (a `delay` query parameter
    /// overrides it).
    #[arg(long, value_parser = process::parse_duration, default_value = "0s")]
    pub delay: Duration,

    /// Answer with a body of this many bytes instead of the JSON description
    /// (a `size` query parameter overrides it).
    #[arg(long)]
    pub size: Option<usize>,

    /// Name reported in the `X-Echo-Server` response header and the JSON.
    #[arg(long, env = "ECHO_NAME", default_value = "echo")]
    pub name: String,
}

impl Default for EchoArgs {
    fn default() -> Self {
        EchoArgs {
            port: 0,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            delay: Duration::ZERO,
            size: None,
            name: "echo".into(),
        }
    }
}

/// The echo server.
#[derive(Debug, Clone)]
pub struct Echo {
    args: Arc<EchoArgs>,
    requests: Arc<AtomicU64>,
}

impl Echo {
    /// A server with these defaults.
    pub fn new(args: EchoArgs) -> Echo {
        Echo {
            args: Arc::new(args),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Serves on `listener` until the future is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let this = this.clone();
                    async move { Ok::<_, Infallible>(this.handle(req, peer).await) }
                });
                let mut builder = auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new());
                builder.http2().timer(TokioTimer::new());
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if is_websocket(&req) {
            return websocket(req);
        }
        let query = req.uri().query().unwrap_or("");
        let mut delay = self.args.delay;
        let mut size = self.args.size;
        let mut status = StatusCode::OK;
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "delay" => delay = process::parse_duration(v).unwrap_or(delay),
                "size" => size = v.parse().ok().or(size),
                "status" => {
                    status = v
                        .parse()
                        .ok()
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .unwrap_or(status)
                }
                _ => {}
            }
        }
        let (parts, body) = req.into_parts();
        // Read (and count) the request body, so uploads stream through.
        let mut received: u64 = 0;
        let mut body = body;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        received += d.len() as u64;
                    }
                }
                Err(_) => break,
            }
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (content_type, payload) = match size {
            Some(n) => ("application/octet-stream", Bytes::from(vec![b'x'; n])),
            None => {
                let headers: serde_json::Map<String, serde_json::Value> = parts
                    .headers
                    .keys()
                    .map(|k| {
                        let vals: Vec<serde_json::Value> = parts
                            .headers
                            .get_all(k)
                            .iter()
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into())
                            .collect();
                        (k.as_str().to_string(), vals.into())
                    })
                    .collect();
                let doc = serde_json::json!({
                    "server": self.args.name,
                    "method": parts.method.as_str(),
                    "path": parts.uri.path(),
                    "query": parts.uri.query().unwrap_or(""),
                    "version": format!("{:?}", parts.version),
                    "host": parts.headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(parts.uri.authority().map(|a| a.as_str())),
                    "headers": headers,
                    "bodyLength": received,
                    "peer": peer.to_string(),
                });
                (
                    "application/json",
                    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
                )
            }
        };
        let mut resp = Response::new(Full::new(payload));
        *resp.status_mut() = status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Ok(v) = HeaderValue::from_str(&self.args.name) {
            resp.headers_mut().insert("x-echo-server", v);
        }
        resp
    }
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn websocket(mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        let mut r = Response::new(Full::new(Bytes::from_static(
            b"missing Sec-WebSocket-Key\n",
        )));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
        let _ = ws.close(None).await;
    });
    let accept = derive_accept_key(key.as_bytes());
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Runs `http-addon echo` until SIGTERM or SIGINT.
pub async fn run(args: EchoArgs) -> std::io::Result<()> {
    let mut signals = process::Signals::new();
    let listener = TcpListener::bind(SocketAddr::new(args.bind_address, args.port)).await?;
    let addr = listener.local_addr()?;
    // Tests and scripts read the address from the first line.
    println!("listening on {addr}");
    tracing::info!(%addr, "echo server listening");
    let server = Echo::new(args).serve(listener);
    tokio::select! {
        _ = server => {}
        signal = signals.recv() => tracing::info!(signal, "stopping"),
    }
    Ok(())
}
