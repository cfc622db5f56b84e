//! A small accept loop for hyper services on a bound listener.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

/// Serves `handler` on `listener` (HTTP/1.1 and HTTP/2) until `cancel`.
pub async fn serve<S, F, B>(
    listener: TcpListener,
    state: Arc<S>,
    handler: fn(Arc<S>, http::Request<Incoming>) -> F,
    cancel: CancellationToken,
) where
    S: Send + Sync + 'static,
    F: Future<Output = Result<http::Response<B>, std::convert::Infallible>> + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handler(state.clone(), req));
            let builder = auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                }
                _ = cancel.cancelled() => {}
            }
        });
    }
}

/// Serves the proxy on `listener` (plain, or TLS when `tls` is set):
/// HTTP/1.1 with upgrades, HTTP/2 (ALPN `h2` or h2c prior knowledge). When
/// `stop` fires it stops accepting, asks every connection to finish its
/// in-flight requests and close (keep-alive off, HTTP/2 GOAWAY), and
/// returns once they all have.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<crate::proxy::Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel::<ProxyConn>();
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            Some(conn) = conn_rx.recv() => {
                // A TLS connection finished its handshake: serve it under the
                // graceful-shutdown watch.
                spawn_conn(&graceful, conn);
                continue;
            }
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    // Out of file descriptors and the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => spawn_conn(
                &graceful,
                ProxyConn {
                    io: Box::new(stream),
                    peer,
                    proxy: proxy.clone(),
                },
            ),
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let tx = conn_tx.clone();
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(stream),
                    );
                    match handshake.await {
                        Ok(Ok(s)) => {
                            let _ = tx.send(ProxyConn {
                                io: Box::new(s),
                                peer,
                                proxy,
                            });
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An accepted proxy connection, plain or TLS.
struct ProxyConn {
    io: Box<dyn Io>,
    peer: std::net::SocketAddr,
    proxy: Arc<crate::proxy::Proxy>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

fn spawn_conn(graceful: &hyper_util::server::graceful::GracefulShutdown, conn: ProxyConn) {
    let ProxyConn { io, peer, proxy } = conn;
    let svc = service_fn(move |req| {
        let proxy = proxy.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // One write per small response instead of a writev of head + body.
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .writev(false);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .enable_connect_protocol();
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc)
        .into_owned();
    let conn = graceful.watch(conn);
    let span = tracing::debug_span!("proxy_connection", %peer);
    tokio::spawn(
        async move {
            if let Err(e) = conn.await {
                debug!(error = %e, "proxy connection ended with an error");
            }
        }
        .instrument(span),
    );
}
