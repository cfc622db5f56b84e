//! The proxy listeners: the shared accept loop ([`process::http::Server`],
//! which also holds the connection limits) hands each connection to a
//! worker thread, which serves it.

use std::sync::Arc;

use hyper::service::service_fn;
use process::http::{Accepted, ConnectionMetrics, Limits, Server, Slot};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// The proxy's HTTP server: `limits`, plus the proxy's protocol settings
/// (one write per small response instead of a writev of head and body;
/// HTTP/2 extended CONNECT for websockets).
pub fn proxy_server(limits: Limits, metrics: ConnectionMetrics) -> Server {
    let mut server = Server::new(limits, metrics);
    let builder = server.builder_mut();
    builder.http1().writev(false);
    builder.http2().enable_connect_protocol();
    server
}

/// A connection accepted by an accept loop, on its way to a worker (as a
/// std socket: it is registered with the worker's own runtime).
struct Handoff {
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    slot: Slot,
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
    senders: Vec<tokio::sync::mpsc::UnboundedSender<Handoff>>,
    next: std::sync::atomic::AtomicUsize,
    done: parking_lot::Mutex<Vec<tokio::sync::oneshot::Receiver<()>>>,
}

impl ProxyWorkers {
    /// Starts one worker per proxy in `proxies`, serving with `server`.
    /// After `stop` each worker serves the connections it already has until
    /// they finish (keep-alive off, HTTP/2 GOAWAY); `kill` ends them at once.
    pub fn start(
        proxies: Vec<Arc<crate::proxy::Proxy>>,
        server: Arc<Server>,
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
            let worker = Worker {
                proxy,
                server: server.clone(),
                tls: tls.clone(),
                stop: stop.clone(),
                kill: kill.clone(),
                tracker: TaskTracker::new(),
            };
            std::thread::Builder::new()
                .name(format!("proxy-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(worker.run(rx));
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

    fn dispatch(&self, conn: Accepted, tls: bool) {
        let Accepted { stream, peer, slot } = conn;
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "cannot hand a connection to a worker");
                return;
            }
        };
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.senders.len();
        let handoff = Handoff {
            stream,
            peer,
            slot,
            tls,
        };
        if self.senders[i].send(handoff).is_err() {
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

/// One worker thread's state.
struct Worker {
    proxy: Arc<crate::proxy::Proxy>,
    server: Arc<Server>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: CancellationToken,
    kill: CancellationToken,
    /// The connections it serves, for the drain.
    tracker: TaskTracker,
}

impl Worker {
    async fn run(self, mut accepted: tokio::sync::mpsc::UnboundedReceiver<Handoff>) {
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = self.kill.cancelled() => return,
                h = accepted.recv() => match h {
                    Some(h) => self.take(h),
                    None => break,
                },
            }
        }
        // Connections accepted before the stop are still served.
        while let Ok(h) = accepted.try_recv() {
            self.take(h);
        }
        self.tracker.close();
        tokio::select! {
            _ = self.tracker.wait() => {}
            _ = self.kill.cancelled() => {}
        }
    }

    fn take(&self, h: Handoff) {
        let Handoff {
            stream,
            peer,
            slot,
            tls,
        } = h;
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "cannot register a connection");
                return;
            }
        };
        let proxy = self.proxy.clone();
        let client = crate::proxy::Peer::new(peer, tls);
        let svc = service_fn(move |req| {
            let proxy = proxy.clone();
            let client = client.clone();
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, client).await) }
        });
        let acceptor = self.tls.clone().filter(|_| tls);
        let (server, stop, kill) = (self.server.clone(), self.stop.clone(), self.kill.clone());
        let conn = Accepted { stream, peer, slot };
        self.tracker.spawn(async move {
            server
                .serve_tcp(conn, acceptor.as_ref(), svc, &stop, &kill)
                .await
        });
    }
}

/// Accepts proxy connections on `listener` (TLS ones when `tls`) under
/// `server`'s connection cap and hands them to `workers` until `stop`.
pub async fn serve_proxy(
    listener: TcpListener,
    server: Arc<Server>,
    workers: Arc<ProxyWorkers>,
    tls: bool,
    stop: CancellationToken,
) {
    server
        .accept(listener, &stop, |conn| workers.dispatch(conn, tls))
        .await
}
