//! The proxy's response body and the per-request guard it carries.
//!
//! A request is counted from its arrival until its response body ends (or
//! the connection goes away): the [`RequestGuard`] increments the route's
//! counters when created and is dropped when the body reports its end, when
//! hyper drops the body, or (websockets) when the tunnel closes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use routing::RouteCounters;
use tokio::sync::Notify;
use tracing::info;

use crate::error::CLIENT_CLOSED_REQUEST;

/// Requests in flight on this interceptor (all routes), for the drain.
#[derive(Debug, Default)]
pub struct Inflight {
    count: AtomicI64,
    idle: Notify,
}

impl Inflight {
    /// Requests in flight now.
    pub fn count(&self) -> i64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() <= 0 {
                return;
            }
            notified.await;
        }
    }
}

/// What the access log needs of a request (only kept when logging is on).
#[derive(Debug)]
struct LogInfo {
    host: Option<HeaderValue>,
    uri: Uri,
    route: Option<Arc<str>>,
}

/// Counts one request for its whole life; see the module docs.
#[derive(Debug)]
pub struct RequestGuard {
    /// The matched route's counters (or the unrouted requests' ones).
    route: Option<Arc<RouteCounters>>,
    /// Whether the request counts in the route's `/queue` counters (static
    /// answers do not: static traffic must not scale the app).
    queued: bool,
    inflight: Arc<Inflight>,
    start: Instant,
    method: Method,
    status: u16,
    log: Option<Box<LogInfo>>,
}

impl RequestGuard {
    /// Starts counting a request (of `route`, when it matched one) in the
    /// route's `/queue` counters and metrics.
    pub fn new(
        route: Option<Arc<RouteCounters>>,
        inflight: Arc<Inflight>,
        method: &Method,
        start: Instant,
    ) -> RequestGuard {
        Self::with_queue(route, true, inflight, method, start)
    }

    /// Like [`new`](Self::new); with `queued` false the request shows in the
    /// route's metrics but not in its `/queue` counters (a static answer).
    pub fn with_queue(
        route: Option<Arc<RouteCounters>>,
        queued: bool,
        inflight: Arc<Inflight>,
        method: &Method,
        start: Instant,
    ) -> RequestGuard {
        let queued = queued && route.is_some();
        if let Some(r) = route.as_ref().filter(|_| queued) {
            r.concurrency.fetch_add(1, Ordering::Relaxed);
            r.request_count.fetch_add(1, Ordering::Relaxed);
        }
        inflight.count.fetch_add(1, Ordering::AcqRel);
        RequestGuard {
            route,
            queued,
            inflight,
            start,
            method: method.clone(),
            status: CLIENT_CLOSED_REQUEST,
            log: None,
        }
    }

    /// Turns the access-log line on for this request.
    pub fn log(&mut self, host: Option<&HeaderValue>, uri: &Uri, route: Option<&Arc<str>>) {
        self.log = Some(Box::new(LogInfo {
            host: host.cloned(),
            uri: uri.clone(),
            route: route.cloned(),
        }));
    }

    /// The status the request ended with (default: 499, the client went away).
    pub fn set_status(&mut self, status: u16) {
        self.status = status;
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let elapsed = self.start.elapsed();
        if let Some(r) = &self.route {
            if self.queued {
                r.concurrency.fetch_sub(1, Ordering::Relaxed);
            }
            r.observe(&self.method, self.status, elapsed);
        }
        if self.inflight.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inflight.idle.notify_waiters();
        }
        if let Some(l) = &self.log {
            let host = l
                .host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .or_else(|| l.uri.host())
                .unwrap_or("");
            info!(
                target: "interceptor::access",
                method = %self.method,
                host,
                path = l.uri.path(),
                status = self.status,
                duration_ms = elapsed.as_secs_f64() * 1e3,
                route = l.route.as_deref().unwrap_or("-"),
                "request"
            );
        }
    }
}

enum Inner {
    Empty,
    Full(Option<Bytes>),
    Stream(Incoming, Option<crate::pool::Lease>),
}

/// A response body: empty, a fixed buffer, or the backend's body streamed
/// through; it carries the request's guard until it ends, and the request's
/// deadline (`KEDA_HTTP_REQUEST_TIMEOUT` or the route's `timeouts.request`),
/// which covers the streamed body too: a body still streaming at the
/// deadline is cut off (the connection or HTTP/2 stream is reset, since the
/// status line has already gone out).
pub struct ProxyBody {
    inner: Inner,
    guard: Option<RequestGuard>,
    deadline: Option<(Pin<Box<tokio::time::Sleep>>, Duration)>,
}

/// The request timeout passed while the response body was streaming.
#[derive(Debug, thiserror::Error)]
#[error("request timeout of {0:?} passed while the response body was streaming")]
pub struct BodyTimeout(pub Duration);

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyBody")
    }
}

impl ProxyBody {
    /// No body.
    pub fn empty() -> ProxyBody {
        ProxyBody {
            inner: Inner::Empty,
            guard: None,
            deadline: None,
        }
    }

    /// A fixed body.
    pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
        let bytes = bytes.into();
        ProxyBody {
            inner: if bytes.is_empty() {
                Inner::Empty
            } else {
                Inner::Full(Some(bytes))
            },
            guard: None,
            deadline: None,
        }
    }

    /// The backend's body, streamed; its connection goes back to the pool
    /// (`lease`) when the body has been read to its end.
    pub fn stream(body: Incoming, lease: Option<crate::pool::Lease>) -> ProxyBody {
        ProxyBody {
            inner: Inner::Stream(body, lease),
            guard: None,
            deadline: None,
        }
    }

    /// Cuts a streamed body off at `deadline` (`timeout` is what the error
    /// reports). Fixed bodies are never cut.
    pub fn with_deadline(mut self, deadline: tokio::time::Instant, timeout: Duration) -> ProxyBody {
        if matches!(self.inner, Inner::Stream(..)) {
            self.deadline = Some((Box::pin(tokio::time::sleep_until(deadline)), timeout));
        }
        self
    }

    /// Attaches the request's guard, dropped when the body ends.
    pub fn with_guard(mut self, guard: RequestGuard) -> ProxyBody {
        self.guard = Some(guard);
        self
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // hyper may stop polling once `is_end_stream` says the body is
        // complete; the connection is reusable then all the same.
        if let Inner::Stream(s, lease) = &mut self.inner
            && s.is_end_stream()
            && let Some(lease) = lease.take()
        {
            lease.release();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let out: Poll<Option<Result<Frame<Bytes>, Self::Error>>> = match &mut this.inner {
            Inner::Empty => Poll::Ready(None),
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(s, lease) => match Pin::new(&mut *s).poll_frame(cx) {
                Poll::Ready(None) => {
                    if let Some(lease) = lease.take() {
                        lease.release();
                    }
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Ok(frame))) => {
                    // The last frame: the connection can go back now.
                    if s.is_end_stream()
                        && let Some(lease) = lease.take()
                    {
                        lease.release();
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    lease.take();
                    Poll::Ready(Some(Err(Box::new(e) as Self::Error)))
                }
                Poll::Pending => {
                    let expired = match &mut this.deadline {
                        Some((sleep, timeout)) => {
                            sleep.as_mut().poll(cx).is_ready().then_some(*timeout)
                        }
                        None => None,
                    };
                    match expired {
                        Some(timeout) => {
                            this.deadline = None;
                            this.inner = Inner::Empty;
                            tracing::debug!(
                                ?timeout,
                                "response body cut off at the request timeout"
                            );
                            Poll::Ready(Some(Err(Box::new(BodyTimeout(timeout)) as Self::Error)))
                        }
                        None => Poll::Pending,
                    }
                }
            },
        };
        if let Poll::Ready(None) = out {
            this.guard.take();
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::Full(b) => b.is_none(),
            Inner::Stream(s, _) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Stream(s, _) => s.size_hint(),
        }
    }
}
