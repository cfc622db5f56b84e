//! The proxy listeners: an accept loop that hands each connection to a worker.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug};

/// A connection accepted by an accept loop, on its way to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: bool,
}

/// The proxy's workers: one thread per worker, each running a
/// current-thread tokio runtime with its own [`crate::proxy::Proxy`] (and so
/// its own backend connection pools). A connection is accepted once, handed
/// to a worker round robin, and from then on everything it needs (its
/// requests, their backend connections, timers) runs on that one thread: no
/// task hand-off between threads on the request path, which is what the
/// multi-thread scheduler costs in wake-ups and latency.
#[derive(Debug)]
pub struct ProxyWorkers {
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Accepted>>,
    next: std::sync::atomic::AtomicUsize,
    done: parking_lot::Mutex<Vec<tokio::sync::oneshot::Receiver<()>>>,
}

impl ProxyWorkers {
    /// Starts one worker per proxy in `proxies`. After `stop` each worker
    /// serves the connections it already has until they finish (keep-alive
    /// off, HTTP/2 GOAWAY); `kill` ends them at once.
    pub fn start(
        proxies: Vec<Arc<crate::proxy::Proxy>>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        stop: CancellationToken,
        kill: CancellationToken,
    ) -> std::io::Result<ProxyWorkers> {
        let mut senders = Vec::with_capacity(proxies.len());
        let mut done = Vec::with_capacity(proxies.len());
        for (i, proxy) in proxies.into_iter().enumerate() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tls, stop, kill) = (tls.clone(), stop.clone(), kill.clone());
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(worker(rx, proxy, tls, stop, kill));
                    // Dropping the runtime here ends whatever is left.
                    drop(runtime);
                    let _ = done_tx.send(());
                })?;
            senders.push(tx);
            done.push(done_rx);
        }
        Ok(ProxyWorkers {
            senders,
            next: std::sync::atomic::AtomicUsize::new(0),
            done: parking_lot::Mutex::new(done),
        })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    fn dispatch(&self, stream: tokio::net::TcpStream, peer: std::net::SocketAddr, tls: bool) {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.senders.len();
        if self.senders[i]
            .send(Accepted { stream, peer, tls })
            .is_err()
        {
            debug!(%peer, "proxy worker gone; connection dropped");
        }
    }

    /// Resolves once every worker has ended (drained, or killed).
    pub async fn wait(&self) {
        let done = std::mem::take(&mut *self.done.lock());
        for d in done {
            let _ = d.await;
        }
    }
}

async fn worker(
    mut accepted: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    proxy: Arc<crate::proxy::Proxy>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
    kill: CancellationToken,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let (conn_tx, mut conn_rx) = tokio::sync::mpsc::unbounded_channel::<ProxyConn>();
    let take = |a: Accepted, graceful: &hyper_util::server::graceful::GracefulShutdown| {
        let Accepted {
            stream,
            peer,
            tls: is_tls,
        } = a;
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "cannot register a connection");
                return;
            }
        };
        match (&tls, is_tls) {
            (Some(acceptor), true) => {
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
                                tls: true,
                                proxy,
                            });
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            _ => spawn_conn(
                graceful,
                ProxyConn {
                    io: Box::new(stream),
                    peer,
                    tls: false,
                    proxy: proxy.clone(),
                },
            ),
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = kill.cancelled() => return,
            Some(conn) = conn_rx.recv() => spawn_conn(&graceful, conn),
            a = accepted.recv() => match a {
                Some(a) => take(a, &graceful),
                None => break,
            },
        }
    }
    // Connections accepted before the stop are still served.
    while let Ok(a) = accepted.try_recv() {
        take(a, &graceful);
    }
    drop(conn_tx);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = kill.cancelled() => {}
    }
}

/// Accepts proxy connections on `listener` (TLS ones when `tls`) and hands
/// them to `workers` until `stop`.
pub async fn serve_proxy(
    listener: TcpListener,
    workers: Arc<ProxyWorkers>,
    tls: bool,
    stop: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
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
        workers.dispatch(stream, peer, tls);
    }
}

/// An accepted proxy connection, plain or TLS.
struct ProxyConn {
    io: Box<dyn Io>,
    peer: std::net::SocketAddr,
    /// Came in on the TLS listener.
    tls: bool,
    proxy: Arc<crate::proxy::Proxy>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Io for T {}

fn spawn_conn(graceful: &hyper_util::server::graceful::GracefulShutdown, conn: ProxyConn) {
    let ProxyConn {
        io,
        peer,
        tls,
        proxy,
    } = conn;
    let client = crate::proxy::Peer::new(peer, tls);
    let svc = service_fn(move |req| {
        let proxy = proxy.clone();
        let client = client.clone();
        async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, client).await) }
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
