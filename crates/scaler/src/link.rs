//! One interceptor pod's `/queue` link: a keep-alive HTTP/1.1 connection
//! of its own, reused from round to round, and where the pod's compact
//! answers stand (the `since` of the next request).
//!
//! A round costs one request and one response per pod, so the exchange is
//! kept small: the connection is a bare `hyper::client::conn::http1` pair
//! driven inside the fetch itself (no pool to look the pod up in, no task
//! per connection, no spawn per request); the request carries `Host` and,
//! for the compact form, `Accept`, and its target is rebuilt only when the
//! pod's `since` changes; the answer is decoded by [`wire::queue`] into a
//! [`PodReport`] whose keys share one buffer.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wire::queue::{COMPACT_CONTENT_TYPE, decode_plain, parse_compact};

use crate::fleet::PodReport;

/// Why one fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The whole fetch (connecting included) took too long.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The pod could not be reached.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The exchange failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The pod closed the connection before its answer was complete.
    #[error("connection closed before the answer was complete")]
    Closed,
    /// The pod answered with an error status.
    #[error("status {0}")]
    Status(u16),
    /// Upstream's JSON could not be read.
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The compact form could not be read.
    #[error(transparent)]
    Compact(#[from] wire::queue::CompactError),
    /// A compact answer that is not text.
    #[error("answer is not UTF-8")]
    Utf8,
}

/// What one fetch brought back.
#[derive(Debug)]
pub struct Answer {
    /// The pod's counts.
    pub report: PodReport,
    /// Bytes of the body.
    pub bytes: usize,
}

struct Conn {
    send: http1::SendRequest<Empty<Bytes>>,
    driver: http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>,
}

impl Conn {
    /// Sends `req` and reads the whole answer: (status, compact form?,
    /// body), and whether the connection ended meanwhile.
    async fn roundtrip(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> (Result<(StatusCode, bool, Bytes), FetchError>, bool) {
        let Conn { send, driver } = self;
        // The connection is driven here, in the fetch, not by a task of
        // its own: it only has work while a fetch waits on it.
        let work = async {
            send.ready().await?;
            let resp = send.send_request(req).await?;
            let status = resp.status();
            let is_compact = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(COMPACT_CONTENT_TYPE));
            let body = resp.into_body().collect().await?.to_bytes();
            Ok((status, is_compact, body))
        };
        let mut work = std::pin::pin!(work);
        tokio::select! {
            biased;
            r = &mut work => (r, false),
            _ = driver => {
                // The connection ended (closed by the pod, or an error). The
                // answer counts only if it was complete by then: the driver
                // hands over the whole body, or an error, before it ends.
                (work.now_or_never().unwrap_or(Err(FetchError::Closed)), true)
            }
        }
    }
}

/// See the [module docs](self).
pub struct PodLink {
    addr: SocketAddr,
    host: HeaderValue,
    conn: Option<Conn>,
    /// The `since` the next compact request names.
    since: Option<String>,
    /// `/queue`, or `/queue?since=<since>`.
    target: Uri,
}

impl std::fmt::Debug for PodLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodLink")
            .field("addr", &self.addr)
            .field("connected", &self.conn.is_some())
            .field("since", &self.since)
            .finish()
    }
}

impl PodLink {
    /// A link to the pod at `addr`, not connected yet.
    pub fn new(addr: SocketAddr) -> PodLink {
        PodLink {
            addr,
            // A socket address is always a valid Host value.
            host: HeaderValue::from_str(&addr.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            conn: None,
            since: None,
            target: Uri::from_static("/queue"),
        }
    }

    /// The pod's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether a connection is open (kept from an earlier fetch).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    fn set_since(&mut self, since: Option<String>) {
        if self.since == since {
            return;
        }
        self.target = since
            .as_deref()
            .and_then(|s| Uri::try_from(format!("/queue?since={s}")).ok())
            .unwrap_or_else(|| Uri::from_static("/queue"));
        self.since = since;
    }

    /// One `GET /queue` (the caller bounds it in time: a fetch dropped
    /// unfinished is followed by [`reset`](Self::reset)). Any
    /// failure closes the connection and forgets `since`, so the next fetch
    /// starts afresh (the pod may have restarted).
    pub async fn fetch(&mut self, compact: bool) -> Result<Answer, FetchError> {
        let result = self.try_fetch(compact).await;
        if result.is_err() {
            self.reset();
        }
        result
    }

    /// Forgets the connection (a request may be half done on it) and `since`.
    pub fn reset(&mut self) {
        self.conn = None;
        self.set_since(None);
    }

    async fn try_fetch(&mut self, compact: bool) -> Result<Answer, FetchError> {
        // A kept connection may have been closed by the pod since the last
        // round (an idle timeout, a restart): one more try on a new one,
        // as a pooled client retries a request that never reached the pod.
        let retry = self.conn.is_some();
        match self.exchange(compact).await {
            Err(FetchError::Http(_) | FetchError::Closed) if retry => {
                self.conn = None;
                self.exchange(compact).await
            }
            r => r,
        }
    }

    async fn connect(&self) -> Result<Conn, FetchError> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(FetchError::Connect)?;
        stream.set_nodelay(true).map_err(FetchError::Connect)?;
        let (send, driver) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Conn { send, driver })
    }

    async fn exchange(&mut self, compact: bool) -> Result<Answer, FetchError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect().await?);
        }
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = if compact {
            self.target.clone()
        } else {
            Uri::from_static("/queue")
        };
        req.headers_mut().insert(header::HOST, self.host.clone());
        if compact {
            req.headers_mut().insert(
                header::ACCEPT,
                HeaderValue::from_static(COMPACT_CONTENT_TYPE),
            );
        }
        let Some(conn) = &mut self.conn else {
            return Err(FetchError::Closed);
        };
        let (result, ended) = conn.roundtrip(req).await;
        if ended {
            self.conn = None;
        }
        let (status, is_compact, body) = result?;
        if !status.is_success() {
            return Err(FetchError::Status(status.as_u16()));
        }
        let bytes = body.len();
        let (report, since) = decode(&body, is_compact)?;
        self.set_since(since);
        Ok(Answer { report, bytes })
    }
}

/// Reads one `/queue` answer: the compact form (when its `Content-Type`
/// said so) or upstream's JSON (an interceptor that does not know the
/// compact form). Returns the report and, for the compact form, the `since`
/// of the pod's next request.
pub fn decode(body: &[u8], compact: bool) -> Result<(PodReport, Option<String>), FetchError> {
    if compact {
        let text = std::str::from_utf8(body).map_err(|_| FetchError::Utf8)?;
        let q = parse_compact(text)?;
        Ok((PodReport::from_compact(&q), Some(q.since())))
    } else {
        Ok((PodReport::from_plain(&decode_plain(body)?), None))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::Full;
    use hyper::body::Incoming;
    use wire::queue::encode_compact;

    use super::*;

    /// A pod that answers the compact form (a full answer without `since`,
    /// an idle delta with one) and counts the connections it accepted;
    /// without `keep_alive` it closes each connection after one answer.
    async fn pod(keep_alive: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let since = req.uri().query().and_then(|q| q.strip_prefix("since="));
                    let body = match since {
                        None => encode_compact(7, 1, true, [("apps/web", 2, 40)], []),
                        Some(_) => encode_compact(7, 1, false, [], []),
                    };
                    Ok::<_, std::convert::Infallible>(
                        http::Response::builder()
                            .header(header::CONTENT_TYPE, COMPACT_CONTENT_TYPE)
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .keep_alive(keep_alive)
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn one_connection_serves_every_round() {
        let (addr, accepted) = pod(true).await;
        let mut link = PodLink::new(addr);
        let first = link.fetch(true).await.unwrap();
        assert!(first.report.full);
        assert_eq!(
            first.report.changed().collect::<Vec<_>>(),
            [("apps/web", 2, 40)]
        );
        for _ in 0..3 {
            // Asked from the last epoch: nothing changed.
            let idle = link.fetch(true).await.unwrap();
            assert!(!idle.report.full);
            assert_eq!(idle.report.changed().count(), 0);
        }
        assert!(link.is_connected());
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_pod_that_closes_its_connections_is_dialed_again() {
        let (addr, accepted) = pod(false).await;
        let mut link = PodLink::new(addr);
        for round in 1..=3 {
            link.fetch(true).await.unwrap();
            assert_eq!(accepted.load(Ordering::Relaxed), round);
        }
    }

    #[tokio::test]
    async fn a_failure_forgets_the_connection_and_since() {
        let (addr, _) = pod(true).await;
        let mut link = PodLink::new(addr);
        link.fetch(true).await.unwrap();
        assert!(link.since.is_some());
        link.reset();
        assert!(!link.is_connected());
        // Without `since`, the pod answers in full again.
        assert!(link.fetch(true).await.unwrap().report.full);
    }
}
