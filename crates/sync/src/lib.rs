//! The routing-table sync loop: keeps an interceptor's (or a scaler's)
//! in-memory routing table equal to the central one.
//!
//! Data enters from a [`Source`]: a Kubernetes-compatible API (the API server
//! or a cache tier, through our own list-then-watch loop over the
//! [`kubewatch`] client plus a periodic resync list), or a routes
//! directory. Every source emits the same events (a complete listing, an
//! apply, a delete) to one writer (`writer`), in the shape of kube-runtime's
//! reflector: it applies them to the [`RouteIndex`] under a lock, on the
//! source's own task (no hop to another task; watch events stay JSON text
//! until they are known to be new, then parse straight into the typed
//! object), and publishes an immutable [`routing::RoutingTable`] into the
//! [`SharedTable`] once per batch (a frame read, a list, a directory scan).
//! Services, EndpointSlices and the response-body ConfigMaps flow into the
//! [`ReadyEndpoints`] ready-cache.
//!
//! ```text
//! table = full list from the source          # complete copy first
//! mark ready                                 # only now
//! loop:
//!   on watch event    -> apply it at once (bursts coalesced into one publish)
//!   on a digest (a bookmark's, or an event's from a `listwatch` server)
//!                     -> equal to the index's digest: fresh, skip this interval's list
//!                         different: an event was lost, list now
//!   every resync tick -> (no digest proved freshness this interval)
//!                        list beside the watch: conditional (304 when equal),
//!                        metadata-only (fetch just what differs); repair and count
//! ```
//!
//! ```no_run
//! # async fn demo(client: kube::Client) {
//! use sync::{Source, SyncConfig};
//! let mut registry = prometheus_client::registry::Registry::default();
//! let handle = sync::start(Source::Kubernetes(client), SyncConfig::default(), &mut registry);
//! handle.table.wait_ready().await;
//! let table = handle.table.load();
//! # }
//! ```

pub mod dir_source;
pub mod endpoints;
mod index;
mod kube_source;
pub mod metrics;
mod publish;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use endpoints::{EndpointsSnapshot, ReadyEndpoints, ResolveError, ResolvedPort};
pub use index::{
    JsonObject, Listing, ObjectKey, ObjectKind, Outcome, Reconciled, ResourceVersion, RouteIndex,
    SourceObject,
};
pub use metrics::SyncMetrics;
pub use publish::SharedTable;

/// Where the routing table comes from.
#[derive(Clone)]
pub enum Source {
    /// A Kubernetes-compatible API: the API server, or a cache tier.
    Kubernetes(kube::Client),
    /// A directory of manifests (no cluster).
    Directory(PathBuf),
}

impl Source {
    /// What the source is, for logs.
    fn describe(&self) -> String {
        match self {
            Source::Kubernetes(_) => "Kubernetes API".to_string(),
            Source::Directory(p) => format!("routes directory {}", p.display()),
        }
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kubernetes(_) => f.write_str("Kubernetes"),
            Source::Directory(p) => write!(f, "Directory({})", p.display()),
        }
    }
}

/// Settings of the sync loop.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// How often the whole table is listed and compared (default 1 s).
    pub resync_interval: Duration,
    /// Server-side timeout of each watch call; a watch silent for this plus
    /// 5 s (no event, no bookmark) is treated as stalled and restarted.
    pub watch_timeout: Duration,
    /// Only this namespace (`KEDA_HTTP_WATCH_NAMESPACE`); `None` = all.
    pub namespace: Option<String>,
    /// Only objects with these labels.
    pub label_selector: Option<String>,
    /// Also sync Services and EndpointSlices into the ready-cache.
    pub endpoints: bool,
    /// With `endpoints`, also the ConfigMaps labelled
    /// `http.keda.sh/response-body=true` (the interceptor's static bodies;
    /// the scaler does not need them).
    pub response_bodies: bool,
    /// Resync lists ask for metadata only (names and resourceVersions) and
    /// fetch just the objects that differ from the index (default on); off,
    /// every resync that is not answered `304` lists every object in full.
    pub metadata_resync: bool,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            resync_interval: Duration::from_secs(1),
            watch_timeout: Duration::from_secs(30),
            namespace: None,
            label_selector: None,
            endpoints: true,
            response_bodies: true,
            metadata_resync: true,
        }
    }
}

/// A running sync loop. Dropping it stops every task.
#[derive(Debug)]
pub struct SyncHandle {
    /// The published routing table and readiness latch.
    pub table: Arc<SharedTable>,
    /// The Service / EndpointSlice ready-cache, with the response-body ConfigMaps.
    pub endpoints: Arc<ReadyEndpoints>,
    /// The loop's metrics.
    pub metrics: SyncMetrics,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl SyncHandle {
    /// Stops every task and waits for them to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for SyncHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts the sync loop on the current tokio runtime.
pub fn start(
    source: Source,
    config: SyncConfig,
    registry: &mut prometheus_client::registry::Registry,
) -> SyncHandle {
    let metrics = SyncMetrics::new(registry);
    let table = SharedTable::new();
    let endpoints = ReadyEndpoints::new();
    let cancel = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let writer = Arc::new(writer::Writer::new(table.clone(), metrics.clone()));
    match &source {
        Source::Kubernetes(client) => {
            let src = Arc::new(kube_source::KubeSource {
                client: client.clone(),
                config: config.clone(),
                writer,
                metrics: metrics.clone(),
                health: kubewatch::SourceHealth::new(source.describe(), metrics.source_up.clone()),
                freshness: Default::default(),
                cancel: cancel.clone(),
            });
            for kind in ObjectKind::ALL {
                tasks.spawn(kube_source::watch_kind(src.clone(), kind));
            }
            tasks.spawn(kube_source::resync(src.clone()));
            if config.endpoints {
                tasks.spawn(kube_source::watch_endpoints(
                    client.clone(),
                    config.clone(),
                    endpoints.clone(),
                    metrics.clone(),
                    src.health.clone(),
                    cancel.clone(),
                ));
            } else {
                endpoints.mark_synced();
            }
        }
        Source::Directory(dir) => {
            tasks.spawn(dir_source::run_dir(
                dir.clone(),
                config.clone(),
                writer,
                endpoints.clone(),
                metrics.clone(),
                cancel.clone(),
            ));
        }
    }
    SyncHandle {
        table,
        endpoints,
        metrics,
        cancel,
        tasks,
    }
}
