//! A small accept loop for hyper services on a bound listener.

use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::debug;

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
