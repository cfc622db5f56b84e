//! The cache tier: a read-only, Kubernetes-compatible list/watch server that
//! mirrors the routing resources from one upstream and fans them out to any
//! number of subscribers (interceptors, scalers, other caches, `kubectl`).
//!
//! Without it every interceptor replica lists and watches the API server;
//! past the low thousands of replicas that load takes the control plane
//! down. With it the API server sees one watch and about one list per
//! second per resource per cache, whatever the number of replicas.
//!
//! # How data enters
//! One upstream mirror per resource (HTTPScaledObjects, InterceptorRoutes,
//! Services, EndpointSlices by default), read with the [`kubewatch`] client
//! (the upstream is a `kube::Client`: the API server's, or HTTP/2 to another
//! cache): a paged list, then a watch with
//! bookmarks, restarted from the last resourceVersion when it ends or fails,
//! and a relist on `410 Expired`. Objects keep upstream's resourceVersions,
//! so a subscriber can move between caches (or survive a cache restart)
//! without relisting. A relist is applied with `Store::replace_all`, which
//! emits only the difference as events. Beside the watches, a conditional
//! list of every resource per `upstream_resync_interval` (spread evenly over
//! it) repairs an event the upstream lost within that interval.
//!
//! # How data leaves
//! [`listwatch`] serves the stores over HTTP/1.1 and HTTP/2 on one port
//! (h2c with prior knowledge on plain TCP, ALPN `h2` with TLS):
//! - every event is encoded once and the same bytes are written to every
//!   watcher; a watcher that cannot keep up is disconnected once the
//!   fan-out ring overtakes it (it resumes from its resourceVersion, from
//!   history, or relists): the writer never waits for it and its memory is
//!   bounded by its queue (64 events) plus 64 KiB of HTTP/2 send buffer;
//! - a full list is encoded once per resourceVersion; lists carry
//!   `ETag: "<rv>"` and `If-None-Match` with the current one is a `304`
//!   without a body, and so is a content digest of exactly what the client
//!   holds (`"d<hex>"`, see [`wire::digest`]; `sync` sends it,
//!   so a replica that got a change by watch does not download the list
//!   again). An idle replica's 1 s resync of two resources over HTTP/2
//!   costs under 200 B/s;
//! - watches get a BOOKMARK every second (`bookmark_interval`; one clock
//!   for all watches, not a timer each), annotated with the content digest
//!   of the watch's view ([`wire::digest::ANNOTATION`]): a `sync` replica
//!   whose index has that digest is proven fresh and skips its conditional
//!   list, so an idle replica costs two bookmarks per second and no
//!   request; after a write the next bookmark comes within 500 ms, so a
//!   replica that lost the event repairs it at once;
//! - `/readyz` is 503 and resource requests are 503 until every initial list
//!   is complete; then the cache keeps serving its last state whatever
//!   happens upstream;
//! - writes are `405 MethodNotAllowed`; a request without an accepted bearer
//!   token is `401` ([`Authenticator`]: static tokens and/or TokenReview).
//!   A connection that presented a valid token stays authenticated for
//!   10 minutes (renewed by each valid token; the response says so in
//!   [`wire::SESSION_HEADER`]), because HTTP/2 never HPACK-indexes
//!   `authorization` and a 1 KB token per resync would cost 1 KB/s;
//! - discovery (`/version`, `/api`, `/api/v1`, `/apis`, `/apis/<g>`,
//!   `/apis/<g>/<v>`) for the served resources, so kube-rs and kubectl work.
//!
//! A cache can be another cache's upstream (a tree).
//!
//! ```no_run
//! # async fn demo(upstream: kube::Client) -> Result<(), cache::CacheError> {
//! let mut registry = prometheus_client::registry::Registry::default();
//! let config = cache::CacheConfig::default();
//! let auth = cache::Authenticator::tokens(["s3cret".to_string()]);
//! let cache = cache::Cache::start(upstream, config, auth, &mut registry).await?;
//! cache.wait_ready().await;
//! println!("serving on {}", cache.url());
//! # Ok(()) }
//! ```

mod args;
mod auth;
mod metrics;
mod resources;
mod server;
mod upstream;

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use listwatch::{HandlerConfig, ListWatch, Store, StoreConfig, Stores, WatchPolicy};
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use args::{CacheArgs, run};
pub use auth::Authenticator;
pub use metrics::CacheMetrics;
pub use resources::{ServedResource, UnknownResource, interceptor_resources, select_resources};
pub use server::TlsError;

/// Why the cache cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The listening socket.
    #[error(transparent)]
    Bind(#[from] process::http::BindError),
    /// Certificate or key.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An unknown name in `--resources`.
    #[error("--resources")]
    Resources(#[from] UnknownResource),
    /// Nothing to serve.
    #[error("no resources to serve")]
    NoResources,
    /// Neither tokens nor TokenReview, and anonymous access not allowed.
    #[error(
        "no subscriber authentication: pass --token-file FILE and/or --token-review (or --allow-anonymous for tests)"
    )]
    NoAuthentication,
    /// The token file cannot be read.
    #[error("--token-file {}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The upstream flags and variables name no single source.
    #[error("upstream")]
    Source(#[from] process::source::ResolveError),
    /// The upstream client could not be built.
    #[error("upstream")]
    Upstream(#[from] process::kube::ClientError),
}

/// Settings of a [`Cache`].
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// Where subscribers connect (default `127.0.0.1:0`).
    pub listen: SocketAddr,
    /// What to mirror and serve.
    pub resources: Vec<ServedResource>,
    /// Only this namespace (`KEDA_HTTP_WATCH_NAMESPACE`); `None` = all.
    pub namespace: Option<String>,
    /// Only objects with these labels (passed to the upstream).
    pub label_selector: Option<String>,
    /// PEM certificate chain and key: serve TLS (ALPN h2, http/1.1).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How often every watch gets a BOOKMARK (default 1 s).
    pub bookmark_interval: Duration,
    /// Every resource gets one conditional upstream list per this interval,
    /// the lists spread evenly over it (default 1 s: a lost event is
    /// repaired within 1 s; one list per second per resource).
    pub upstream_resync_interval: Duration,
    /// Server-side timeout of each upstream watch (default 60 s).
    pub upstream_watch_timeout: Duration,
    /// Page size of upstream lists.
    pub upstream_page_size: usize,
    /// History kept per resource for resuming watches, and fan-out ring size.
    pub store: StoreConfig,
    /// Encoded events queued per watcher before it counts as slow.
    pub watch_buffer: usize,
    /// Testing: drop this fraction of live events per watcher (the resync
    /// must repair them).
    pub drop_watch_events: f64,
    /// Connection limits of the subscriber port.
    pub limits: process::http::Limits,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            resources: interceptor_resources(),
            namespace: None,
            label_selector: None,
            tls: None,
            bookmark_interval: Duration::from_secs(1),
            upstream_resync_interval: Duration::from_secs(1),
            upstream_watch_timeout: Duration::from_secs(60),
            upstream_page_size: 500,
            store: StoreConfig {
                history: 4096,
                fanout_capacity: 4096,
                list_snapshots: 16,
            },
            watch_buffer: 64,
            drop_watch_events: 0.0,
            limits: process::http::Limits::default(),
        }
    }
}

/// Drops a fraction of live events per watcher (fault injection).
#[derive(Debug)]
struct DropEvents {
    ppm: AtomicU64,
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(0x9E37_79B9_7F4A_7C15 ^ (std::process::id() as u64) << 17);
}

impl WatchPolicy for DropEvents {
    fn deliver(&self) -> bool {
        let ppm = self.ppm.load(Ordering::Relaxed);
        if ppm == 0 {
            return true;
        }
        let r = RNG.with(|r| {
            let mut x = r.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            r.set(x);
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        });
        r % 1_000_000 >= ppm
    }
}

/// A running cache. Dropping it stops serving and closes every connection.
pub struct Cache {
    addr: SocketAddr,
    tls: bool,
    stores: Arc<Stores>,
    readiness: Arc<upstream::Readiness>,
    metrics: CacheMetrics,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("addr", &self.addr)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Cache {
    /// Binds, starts mirroring from `upstream` and serving. Subscribers get
    /// 503 until [`wait_ready`](Cache::wait_ready) would return.
    pub async fn start(
        upstream: kube::Client,
        config: CacheConfig,
        auth: Authenticator,
        registry: &mut Registry,
    ) -> Result<Cache, CacheError> {
        if config.resources.is_empty() {
            return Err(CacheError::NoResources);
        }
        let metrics = CacheMetrics::new(registry);
        let (listener, addr) = process::http::bind(config.listen)?;
        let tls = match &config.tls {
            Some((cert, key)) => Some(server::tls_acceptor(cert, key)?),
            None => None,
        };
        let stores = Arc::new(Stores::new());
        let readiness = upstream::Readiness::new(config.resources.len());
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let upstream_config = upstream::UpstreamConfig {
            namespace: config.namespace.clone(),
            label_selector: config.label_selector.clone(),
            watch_timeout: config.upstream_watch_timeout,
            page_size: config.upstream_page_size,
        };
        let mut resync_ticks = Vec::new();
        let health = kubewatch::SourceHealth::new("upstream", metrics.source_up.clone());
        for r in &config.resources {
            // Created at 0: history starts at the first upstream list.
            let store = Store::new(r.resource.clone(), config.store.clone(), 0);
            stores.insert(store.clone());
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            resync_ticks.push(tx);
            let mirror = upstream::Mirror {
                client: upstream.clone(),
                resource: r.clone(),
                store,
                config: upstream_config.clone(),
                metrics: metrics.clone(),
                readiness: readiness.clone(),
                health: health.clone(),
                cancel: cancel.clone(),
                resync: rx,
            };
            tasks.spawn(mirror.run());
        }
        tasks.spawn(resync_scheduler(
            resync_ticks,
            config.upstream_resync_interval,
            cancel.clone(),
        ));
        {
            let readiness = readiness.clone();
            let metrics = metrics.clone();
            let cancel = cancel.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = readiness.wait() => {
                        metrics.ready.set(1);
                        tracing::info!("every initial list is complete; ready");
                    }
                }
            });
        }
        let policy: Option<Arc<dyn WatchPolicy>> = (config.drop_watch_events > 0.0).then(|| {
            Arc::new(DropEvents {
                ppm: AtomicU64::new((config.drop_watch_events.clamp(0.0, 1.0) * 1e6) as u64),
            }) as Arc<dyn WatchPolicy>
        });
        let handler = ListWatch::new(HandlerConfig {
            bookmark_interval: config.bookmark_interval,
            watch_buffer: config.watch_buffer,
            policy,
            ..HandlerConfig::default()
        });
        let served = Arc::new(server::Served {
            stores: stores.clone(),
            handler,
            auth,
            discovery: resources::discovery(&config.resources),
            readiness: readiness.clone(),
            metrics: metrics.clone(),
            addr,
        });
        let subscriber_server = Arc::new(server::subscriber_server(
            config.limits,
            metrics.connections.clone(),
        ));
        tasks.spawn(server::accept_loop(
            served,
            subscriber_server,
            listener,
            tls.clone(),
            cancel.clone(),
        ));
        tracing::info!(%addr, tls = tls.is_some(), resources = config.resources.len(), "cache listening");
        Ok(Cache {
            addr,
            tls: tls.is_some(),
            stores,
            readiness,
            metrics,
            cancel,
            tasks,
        })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` or `https://addr`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// True once every resource's initial list is complete.
    pub fn is_ready(&self) -> bool {
        self.readiness.is_ready()
    }

    /// Waits until every resource's initial list is complete.
    pub async fn wait_ready(&self) {
        self.readiness.wait().await
    }

    /// The mirrored stores.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The metrics.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// Open watches served right now.
    pub fn watcher_count(&self) -> usize {
        self.stores.all().iter().map(Store::watcher_count).sum()
    }

    /// Stops every task and closes every connection.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    pub(crate) fn readiness(&self) -> Arc<upstream::Readiness> {
        self.readiness.clone()
    }
}

/// One upstream resync of every resource per `interval`, the lists spread
/// evenly over it (round robin, one every `interval / resources`), so an
/// event the upstream lost is repaired within `interval` whichever resource
/// it belongs to. (Found by `bench chaos`: one list per `interval` in all
/// left each of the 4 default resources unchecked for 4 s, and a route
/// whose change a stalled or lossy upstream watch did not deliver sent
/// requests to its old backend for up to 4 s.)
async fn resync_scheduler(
    ticks: Vec<tokio::sync::mpsc::Sender<()>>,
    interval: Duration,
    cancel: CancellationToken,
) {
    if interval.is_zero() || ticks.is_empty() {
        return;
    }
    let mut timer = tokio::time::interval(interval / ticks.len() as u32);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer.tick().await;
    for i in 0.. {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = timer.tick() => {}
        }
        // A mirror that is not watching right now (backing off) skips it.
        let _ = ticks[i % ticks.len()].try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every resource is resynced within one interval, not one resource
    /// per interval (a lost event must be repaired within the interval).
    #[tokio::test(start_paused = true)]
    async fn every_resource_is_resynced_once_per_interval() {
        let interval = Duration::from_secs(1);
        let (txs, mut rxs): (Vec<_>, Vec<_>) =
            (0..4).map(|_| tokio::sync::mpsc::channel(1)).unzip();
        let cancel = CancellationToken::new();
        let scheduler = tokio::spawn(resync_scheduler(txs, interval, cancel.clone()));
        // Check between ticks, not at the instant of one.
        tokio::time::sleep(interval / 8).await;
        for round in 0..3 {
            tokio::time::sleep(interval).await;
            for (r, rx) in rxs.iter_mut().enumerate() {
                assert!(
                    rx.try_recv().is_ok(),
                    "resource {r} got no resync in interval {round}"
                );
            }
        }
        cancel.cancel();
        scheduler.await.unwrap();
    }
}
