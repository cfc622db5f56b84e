//! Listening sockets and the small servers of admin, health and metrics
//! endpoints (the data paths, proxy and list/watch, have their own).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;

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

/// Serves `handler` on `listener` (HTTP/1.1 and HTTP/2 on one port) until
/// `cancel`; open connections are closed then too.
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
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors, mostly: give it a moment.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service_fn(handler));
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                _ = cancel.cancelled() => {}
            }
        });
    }
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
