//! Connections to backends: a dialer that retries, and pooled keep-alive
//! clients for HTTP/1.1 and h2c (prior knowledge).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// Pause between two dial attempts.
pub const DIAL_RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// Dials `host:port` from a URI's authority; each attempt is bounded by
/// `attempt_timeout`, and failed attempts repeat every
/// [`DIAL_RETRY_INTERVAL`] for up to `give_up_after` (the request's own
/// deadline normally ends the wait first, by dropping the future).
#[derive(Clone, Debug)]
pub struct Dialer {
    /// Timeout of one attempt (`KEDA_HTTP_CONNECT_TIMEOUT`).
    pub attempt_timeout: Duration,
    /// Bound on all attempts together, for dials that outlive their request
    /// inside the pool.
    pub give_up_after: Duration,
}

impl Dialer {
    async fn dial(self, uri: Uri) -> io::Result<TokioIo<TcpStream>> {
        let host = uri
            .host()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI without a host"))?;
        let port = uri.port_u16().unwrap_or(80);
        self.dial_host(host, port).await
    }

    /// Dials `host:port` (an authority; port 80 when absent).
    pub async fn dial_authority(self, authority: &str) -> io::Result<TokioIo<TcpStream>> {
        let a: http::uri::Authority = authority.parse().map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad backend address {authority:?}: {e}"),
            )
        })?;
        self.dial_host(a.host(), a.port_u16().unwrap_or(80)).await
    }

    async fn dial_host(self, host: &str, port: u16) -> io::Result<TokioIo<TcpStream>> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let started = tokio::time::Instant::now();
        loop {
            let attempt = tokio::time::timeout(self.attempt_timeout, connect(&host, port)).await;
            let err = match attempt {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) => e,
                Err(_) => io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {:?}", self.attempt_timeout),
                ),
            };
            if started.elapsed() + DIAL_RETRY_INTERVAL >= self.give_up_after {
                return Err(err);
            }
            tracing::debug!(%host, port, error = %err, "dial failed; retrying");
            tokio::time::sleep(DIAL_RETRY_INTERVAL).await;
        }
    }
}

async fn connect(host: &str, port: u16) -> io::Result<TcpStream> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return TcpStream::connect(SocketAddr::new(ip, port)).await;
    }
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host}: no address"));
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<TcpStream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(self.clone().dial(uri))
    }
}

/// Connections to the backends of one proxy worker.
#[derive(Clone, Debug)]
pub struct Backends {
    /// HTTP/1.1 (upgrades included), with both idle caps.
    pub http1: crate::pool::H1Pool,
    /// h2c with prior knowledge (`appProtocol: kubernetes.io/h2c`): one
    /// multiplexed connection per backend address.
    pub h2c: Client<Dialer, Incoming>,
}

impl Backends {
    /// Pools keeping at most `max_idle_per_host` idle HTTP/1.1 connections
    /// per backend address, within the shared idle `budget`.
    pub fn new(
        dialer: Dialer,
        max_idle_per_host: usize,
        budget: std::sync::Arc<crate::pool::IdleBudget>,
    ) -> Backends {
        let http1 = crate::pool::H1Pool::<Incoming>::new(dialer.clone(), max_idle_per_host, budget);
        let h2c = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(crate::pool::POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(true)
            .set_host(false)
            .build(dialer);
        Backends { http1, h2c }
    }
}
