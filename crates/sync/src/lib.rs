//! The routing-table sync loop: keeps an interceptor's (or a scaler's)
//! in-memory routing table equal to the central one.
//!
//! Data enters from a [`Source`]: a Kubernetes-compatible API (the API server
//! or a cache tier, through our own list-then-watch loop over the
//! [`kubewatch`] client plus a periodic conditional list), or a routes
//! directory. Each source
//! task applies what it reads to one [`RouteIndex`] (apply / delete /
//! reconcile, under a lock: one writer at a time, no hop to another task;
//! watch events stay JSON text until they are known to be new, then parse
//! straight into the typed object) and publishes immutable
//! [`routing::RoutingTable`] snapshots into a [`SharedTable`], once per frame
//! read; Services and EndpointSlices flow into the [`ReadyEndpoints`]
//! ready-cache.
//!
//! ```text
//! table = full list from the source          # complete copy first
//! mark ready                                 # only now
//! loop:
//!   on watch event    -> apply it at once (bursts coalesced into one publish)
//!   on a digest (a bookmark's, or an event's from a `listwatch` server)
//!                     -> equal to the index's digest: fresh, skip this interval's list
//!                         different: an event was lost, conditional list now
//!   every resync tick -> (no digest bookmark proved freshness this interval)
//!                        conditional full list beside the watch; repair and count differences
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

mod digest;
pub mod dir_source;
pub mod endpoints;
pub mod index;
mod kube_source;
pub mod metrics;
pub mod publish;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use endpoints::{EndpointsSnapshot, ReadyEndpoints, ResolveError, ResolvedPort};
pub use index::{
    JsonObject, ObjectKey, ObjectKind, Outcome, ResourceVersion, RouteIndex, SourceObject,
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
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            resync_interval: Duration::from_secs(1),
            watch_timeout: Duration::from_secs(30),
            namespace: None,
            label_selector: None,
            endpoints: true,
        }
    }
}

/// A content digest from the watch stream (a digest BOOKMARK, or an event
/// that carries one): what the server holds for the watch's view at `rv`,
/// after every event sent before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proof {
    digest: u64,
    rv: Option<u64>,
}

/// What the sources hand to the index's writer (`Core::ingest`).
#[derive(Debug)]
pub(crate) enum Input {
    /// The watch's (re)list: the complete content at `rv`.
    WatchListed {
        kind: ObjectKind,
        items: Vec<JsonObject>,
        rv: Option<ResourceVersion>,
    },
    /// A watch event, with the server's digest after it when it sent one.
    WatchApply(ObjectKind, JsonObject, Option<Proof>),
    WatchDelete(ObjectKind, JsonObject, Option<Proof>),
    /// A complete list (the periodic resync).
    Listed {
        kind: ObjectKind,
        items: Vec<JsonObject>,
        rv: Option<ResourceVersion>,
    },
    /// A conditional list answered 304: nothing changed since the last one.
    ListUnchanged(ObjectKind),
    /// The directory source found an object added or changed.
    DirApply(ObjectKind, Value),
    /// The directory source found an object gone.
    DirDelete(ObjectKey),
    /// A watch BOOKMARK's content digest: what the server holds for the
    /// watch's view, after every event sent before it.
    Bookmark {
        kind: ObjectKind,
        proof: Proof,
    },
    /// The directory source finished a scan (changed or not): its changes,
    /// if any, are all sent.
    DirScanned,
}

/// A running sync loop. Dropping it stops every task.
#[derive(Debug)]
pub struct SyncHandle {
    /// The published routing table and readiness latch.
    pub table: Arc<SharedTable>,
    /// The Service / EndpointSlice ready-cache.
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
    let digests = Arc::new(digest::Digests::default());
    let core = Arc::new(Core {
        owner: parking_lot::Mutex::new(Owner {
            index: RouteIndex::new(),
            complete: HashSet::new(),
            metrics: metrics.clone(),
            periodic_is_resync: matches!(source, Source::Kubernetes(_)),
            dir_scan_open: false,
            digests: digests.clone(),
            listed_rv: [0; 2],
        }),
        table: table.clone(),
        health: kubewatch::SourceHealth::new(source.describe(), metrics.source_up.clone()),
    });
    match &source {
        Source::Kubernetes(client) => {
            for kind in ObjectKind::ALL {
                tasks.spawn(kube_source::watch_kind(
                    client.clone(),
                    kind,
                    config.clone(),
                    core.clone(),
                    metrics.clone(),
                    cancel.clone(),
                    digests.clone(),
                ));
            }
            tasks.spawn(kube_source::resync(
                client.clone(),
                config.clone(),
                core.clone(),
                metrics.clone(),
                cancel.clone(),
                digests.clone(),
            ));
            if config.endpoints {
                tasks.spawn(kube_source::watch_endpoints(
                    client.clone(),
                    config.clone(),
                    endpoints.clone(),
                    metrics.clone(),
                    core.health.clone(),
                    cancel.clone(),
                ));
            } else {
                endpoints.mark_synced();
            }
        }
        Source::Directory(dir) => {
            let (tx, rx) = mpsc::channel(1024);
            tasks.spawn(dir_source::run_dir(
                dir.clone(),
                config.clone(),
                tx,
                endpoints.clone(),
                metrics.clone(),
                cancel.clone(),
            ));
            tasks.spawn(run_owner(rx, core, cancel.clone()));
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

/// The one writer's state behind a lock: sources hand their inputs to
/// [`Core::ingest`] on their own task (a watch applies its events the
/// moment it reads them, with no hop to another task), and each call ends
/// with one publish.
pub(crate) struct Core {
    owner: parking_lot::Mutex<Owner>,
    table: Arc<SharedTable>,
    /// Reachability of the source, shared by every loop reading it.
    pub(crate) health: kubewatch::SourceHealth,
}

impl Core {
    /// Version of the table being served (for outage logs).
    pub(crate) fn table_version(&self) -> u64 {
        self.table.load().version()
    }

    /// Applies `inputs` in order, then publishes once (a burst read in one
    /// frame, or queued together, becomes one table version).
    pub(crate) fn ingest(&self, inputs: impl IntoIterator<Item = Input>) {
        let mut owner = self.owner.lock();
        for input in inputs {
            owner.handle(input);
        }
        owner.finish(&self.table);
    }
}

/// The directory source's writer task: applies what the source sends.
async fn run_owner(mut rx: mpsc::Receiver<Input>, core: Arc<Core>, cancel: CancellationToken) {
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        batch.push(first);
        // Coalesce a burst: everything already queued goes into one publish.
        while let Ok(m) = rx.try_recv() {
            batch.push(m);
        }
        core.ingest(batch.drain(..));
    }
}

struct Owner {
    index: RouteIndex,
    complete: HashSet<ObjectKind>,
    metrics: SyncMetrics,
    periodic_is_resync: bool,
    /// A directory scan's changes are arriving (until `DirScanned`).
    dir_scan_open: bool,
    digests: Arc<digest::Digests>,
    /// Per kind, the resourceVersion of the newest list applied.
    listed_rv: [u64; 2],
}

impl Owner {
    /// After a batch of inputs: digests for the resync, one publish, and
    /// readiness once every kind is complete.
    fn finish(&mut self, table: &SharedTable) {
        if self.dir_scan_open {
            return; // publish a directory scan whole, never half of it
        }
        // Content digests for the resync's conditional list (see `digest`);
        // the index keeps them current, so this is O(1).
        for kind in ObjectKind::ALL {
            if self.complete.contains(&kind) {
                self.digests.set(kind, self.index.digest(kind));
            }
        }
        if self.index.table().version() != table.load().version() {
            let t = self.index.table().clone();
            self.metrics.table_version.set(t.version() as i64);
            self.metrics.table_routes.set(t.len() as i64);
            table.publish(t);
        }
        if !table.is_ready() && self.complete.len() == ObjectKind::ALL.len() {
            let t = table.load();
            info!(
                routes = t.len(),
                version = t.version(),
                "routing table complete; ready"
            );
            table.mark_ready();
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::WatchListed { kind, items, rv } => {
                self.reconcile(kind, items, rv, false);
            }
            Input::WatchApply(kind, obj, proof) => {
                let outcome = self.index.apply(kind, obj);
                self.report(kind, outcome);
                if let Some(proof) = proof {
                    self.check_proof(kind, proof);
                }
            }
            Input::WatchDelete(kind, obj, proof) => {
                match obj.key(kind) {
                    Ok((key, rv)) => {
                        self.index.delete(&key, rv);
                    }
                    Err(err) => warn!(kind = kind.kind(), error = %err, "bad delete event ignored"),
                }
                if let Some(proof) = proof {
                    self.check_proof(kind, proof);
                }
            }
            Input::Listed { kind, items, rv } => {
                let periodic = self.periodic_is_resync;
                self.reconcile(kind, items, rv, periodic);
            }
            Input::ListUnchanged(kind) => {
                self.metrics
                    .resyncs
                    .get_or_create(&SyncMetrics::label(kind.resource()))
                    .inc();
                self.touch();
            }
            Input::DirApply(kind, obj) => {
                self.dir_scan_open = true;
                let outcome = self.index.apply(kind, obj);
                self.report(kind, outcome);
            }
            Input::DirDelete(key) => {
                self.dir_scan_open = true;
                self.index.delete(&key, None);
            }
            Input::DirScanned => {
                // A scan sends every change it found, then this: the table
                // is the directory's, complete.
                self.dir_scan_open = false;
                self.complete.extend(ObjectKind::ALL);
                self.touch();
            }
            Input::Bookmark { kind, proof } => self.check_proof(kind, proof),
        }
    }

    /// Compares a digest from the watch stream with the index, after
    /// everything the watch sent before it is applied: equal proves the
    /// index fresh (it stands for this interval's resync), different means
    /// an event was lost (list now).
    fn check_proof(&mut self, kind: ObjectKind, proof: Proof) {
        if !self.complete.contains(&kind) {
            return;
        }
        // A list newer than this proof is already applied (the stream lags
        // behind the lists): it describes an older state and can prove
        // nothing either way. Repairing on it would list again, get the
        // newest write before its event, and keep a lagging replica
        // listing on every write.
        if proof
            .rv
            .is_some_and(|r| r < self.listed_rv[digest::slot(kind)])
        {
            return;
        }
        self.digests.digest_bookmarks_seen(kind);
        if self.index.digest(kind) == proof.digest {
            self.digests.verified(kind);
            self.touch();
        } else {
            self.digests.request_repair(kind);
        }
    }

    fn reconcile(
        &mut self,
        kind: ObjectKind,
        items: Vec<JsonObject>,
        rv: Option<ResourceVersion>,
        periodic: bool,
    ) {
        let label = SyncMetrics::label(kind.resource());
        if let Some(r) = rv.as_ref().and_then(|r| r.as_str().parse::<u64>().ok()) {
            let slot = &mut self.listed_rv[digest::slot(kind)];
            *slot = (*slot).max(r);
        }
        let result = self.index.reconcile(kind, items, rv);
        for err in &result.invalid {
            self.metrics.invalid_objects.get_or_create(&label).inc();
            warn!(kind = kind.kind(), error = %err, "invalid object skipped");
        }
        // A change found by a periodic list that was not due to an invalid
        // object means the watch missed something: a repair.
        if periodic && self.complete.contains(&kind) {
            self.metrics.resyncs.get_or_create(&label).inc();
            if result.changes > 0 {
                self.metrics
                    .resync_repairs
                    .get_or_create(&label)
                    .inc_by(result.changes as u64);
                info!(
                    kind = kind.kind(),
                    repairs = result.changes,
                    "resync repaired the table (a watch event was lost or late)"
                );
            }
        }
        self.complete.insert(kind);
        self.touch();
    }

    fn report(&mut self, kind: ObjectKind, outcome: Outcome) {
        if let Outcome::Invalid(errors) = outcome {
            let label = SyncMetrics::label(kind.resource());
            for err in errors {
                self.metrics.invalid_objects.get_or_create(&label).inc();
                warn!(kind = kind.kind(), error = %err, "invalid object skipped");
            }
        }
    }

    fn touch(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.metrics.last_sync_timestamp_seconds.set(now);
    }
}
