//! The upstream side: one list + watch per resource on the upstream (the
//! API server or another cache, read with [`kubewatch`]), mirrored into a
//! `listwatch` [`Store`] with upstream's own resourceVersions, plus a
//! periodic conditional resync.
//!
//! ```text
//! list (paged, consistent)  -> store.replace_all(items, list rv)   # diff emitted as events
//! watch from rv, bookmarks  -> store.apply / delete / advance       # one event in, one fan-out
//!   stream ends             -> rewatch from the last rv
//!   error / stall           -> back off, rewatch from the last rv
//!   410 Expired             -> relist (subscribers keep their watches)
//! resync tick               -> conditional list; a newer list repairs the store
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use kubewatch::{
    Backoff, Collection, IfNoneMatch, ListOutcome, ListParams, WatchFrame, WatchState,
};
use listwatch::Store;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wire::EventType;

use crate::metrics::CacheMetrics;
use crate::resources::ServedResource;

/// How the mirror talks to its upstream.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamConfig {
    pub(crate) namespace: Option<String>,
    pub(crate) label_selector: Option<String>,
    /// Server-side timeout of each upstream watch; a watch silent for this
    /// plus 5 s is restarted.
    pub(crate) watch_timeout: Duration,
    /// Page size of upstream lists.
    pub(crate) page_size: usize,
}

/// Tracks which resources have completed their first list.
#[derive(Debug)]
pub(crate) struct Readiness {
    total: usize,
    synced: watch::Sender<usize>,
}

impl Readiness {
    pub(crate) fn new(total: usize) -> Arc<Readiness> {
        Arc::new(Readiness {
            total,
            synced: watch::Sender::new(0),
        })
    }

    fn mark_synced(&self) {
        self.synced.send_modify(|n| *n += 1);
    }

    pub(crate) fn is_ready(&self) -> bool {
        *self.synced.borrow() >= self.total
    }

    pub(crate) async fn wait(&self) {
        let mut rx = self.synced.subscribe();
        let total = self.total;
        let _ = rx.wait_for(|n| *n >= total).await;
    }
}

/// Why a list or watch failed.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    /// What the client met (404 and 410 included).
    #[error(transparent)]
    Client(#[from] kubewatch::Error),
    /// A list without a resourceVersion the store can order by.
    #[error("list {path}: no numeric metadata.resourceVersion")]
    ListVersion { path: String },
    /// An object that is not JSON.
    #[error("{path}: bad object: {source}")]
    Object {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A watch event without a resourceVersion the store can order by.
    #[error("watch {path}: event without a numeric resourceVersion")]
    EventVersion { path: String },
}

/// How one watch call ended, when it did not fail.
enum WatchEnd {
    /// The upstream ended it (its timeout): rewatch from the last rv.
    Ended,
    /// 410: the resourceVersion left the upstream's history; relist.
    Gone,
}

fn rv_of(v: &Value) -> Option<u64> {
    v.pointer("/metadata/resourceVersion")?
        .as_str()?
        .parse()
        .ok()
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// What a completed list returned.
struct Listed {
    items: Vec<Value>,
    rv: u64,
    etag: Option<String>,
}

/// Mirrors one resource from the upstream into `store`.
pub(crate) struct Mirror {
    pub(crate) client: kube::Client,
    pub(crate) resource: ServedResource,
    pub(crate) store: Store,
    pub(crate) config: UpstreamConfig,
    pub(crate) metrics: CacheMetrics,
    pub(crate) readiness: Arc<Readiness>,
    /// Reachability of the upstream, shared by every mirror.
    pub(crate) health: kubewatch::SourceHealth,
    pub(crate) cancel: CancellationToken,
    /// Ticks telling this mirror to resync (the cache spreads one list per
    /// interval over its resources).
    pub(crate) resync: tokio::sync::mpsc::Receiver<()>,
}

impl Mirror {
    fn collection(&self) -> Collection {
        Collection::new(
            self.client.clone(),
            self.resource
                .collection_path(self.config.namespace.as_deref()),
        )
        .with_label_selector(
            crate::resources::upstream_selector(
                &self.resource,
                self.config.label_selector.as_deref(),
            )
            .as_deref(),
        )
    }

    fn name(&self) -> &str {
        &self.resource.resource.gvr.resource
    }

    /// A complete list (all pages). `rv0` lists from the upstream's cache
    /// (`resourceVersion=0`, may be slightly old; used by resyncs);
    /// otherwise a consistent read. `Ok(None)`: 304 Not Modified.
    async fn list(
        &self,
        collection: &Collection,
        rv0: bool,
        etag: Option<&str>,
    ) -> Result<Option<Listed>, UpstreamError> {
        let params = ListParams {
            from_cache: rv0,
            page_size: Some(self.config.page_size),
            if_none_match: etag.map(|e| IfNoneMatch::ETag(e.to_string())),
            metadata_only: false,
        };
        let list = match collection.list(&params).await? {
            ListOutcome::Unchanged => return Ok(None),
            ListOutcome::Listed(list) => list,
        };
        let path = || collection.path().to_string();
        let rv = list
            .resource_version
            .as_deref()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| UpstreamError::ListVersion { path: path() })?;
        let items = list
            .items
            .iter()
            .map(|item| serde_json::from_slice(item))
            .collect::<Result<Vec<Value>, _>>()
            .map_err(|source| UpstreamError::Object {
                path: path(),
                source,
            })?;
        self.metrics
            .upstream_lists
            .get_or_create(&CacheMetrics::label(self.name()))
            .inc();
        Ok(Some(Listed {
            items,
            rv,
            etag: list.etag,
        }))
    }

    /// Applies a list to the store; false if it is older than the store.
    fn apply_list(&self, listed: Listed, resync: bool) -> bool {
        match self.store.replace_all(listed.items, listed.rv) {
            Ok(summary) => {
                let changes = summary.added + summary.modified + summary.deleted;
                if resync && changes > 0 {
                    self.metrics
                        .upstream_resync_repairs
                        .get_or_create(&CacheMetrics::label(self.name()))
                        .inc_by(changes as u64);
                    info!(
                        resource = self.name(),
                        ?summary,
                        "upstream resync repaired the cache"
                    );
                } else if changes > 0 {
                    debug!(resource = self.name(), ?summary, rv = listed.rv, "listed");
                }
                true
            }
            Err(e) => {
                debug!(resource = self.name(), error = %e, "list older than the store; ignored");
                false
            }
        }
    }

    /// Counts and reports a failed list or watch, then backs off; false
    /// once cancelled.
    async fn failed(&self, e: &UpstreamError, backoff: &mut Backoff) -> bool {
        self.metrics
            .upstream_restarts
            .get_or_create(&CacheMetrics::label(self.name()))
            .inc();
        self.health
            .failure(self.name(), e, self.store.resource_version());
        backoff.wait(&self.cancel).await
    }

    /// Runs until cancelled.
    pub(crate) async fn run(mut self) {
        let label = CacheMetrics::label(self.name());
        let collection = self.collection();
        let mut backoff = Backoff::few_clients();
        let mut synced = false;
        let mut etag: Option<String> = None;
        'relist: loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let listed = match self.list(&collection, false, None).await {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(UpstreamError::Client(kubewatch::Error::NotFound { .. })) => {
                    if !synced {
                        warn!(
                            resource = self.name(),
                            "upstream does not serve this resource (CRD not installed?); serving it empty and retrying"
                        );
                        synced = true;
                        self.readiness.mark_synced();
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    }
                    continue;
                }
                Err(e) => {
                    if !self.failed(&e, &mut backoff).await {
                        return;
                    }
                    continue;
                }
            };
            self.health.success(self.name(), true);
            let list_rv = listed.rv;
            etag = listed.etag.clone().or(etag);
            if !self.apply_list(listed, false) && self.store.resource_version() > list_rv {
                // An upstream behind us (a lagging cache, or a restored
                // etcd): wait for it rather than go back in time.
                warn!(
                    resource = self.name(),
                    upstream = list_rv,
                    ours = self.store.resource_version(),
                    "upstream list is older than the cache; retrying"
                );
                if !backoff.wait(&self.cancel).await {
                    return;
                }
                continue;
            }
            if !synced {
                synced = true;
                info!(
                    resource = self.name(),
                    rv = list_rv,
                    objects = self.store.snapshot().len(),
                    "initial list complete"
                );
                self.readiness.mark_synced();
            }
            // Watch from what we hold, restarting as needed.
            loop {
                let rv = self.store.resource_version();
                let cancel = self.cancel.clone();
                let result = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = self.watch(&collection, rv, &mut etag, &mut backoff) => r,
                };
                match result {
                    Ok(WatchEnd::Ended) => {}
                    Ok(WatchEnd::Gone) => {
                        self.metrics.upstream_restarts.get_or_create(&label).inc();
                        info!(
                            resource = self.name(),
                            rv, "upstream watch expired; relisting"
                        );
                        continue 'relist;
                    }
                    Err(e) => {
                        if !self.failed(&e, &mut backoff).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// One watch call from `rv`, serving resync ticks while it streams.
    /// Returns when the stream ends.
    async fn watch(
        &mut self,
        collection: &Collection,
        rv: u64,
        etag: &mut Option<String>,
        backoff: &mut Backoff,
    ) -> Result<WatchEnd, UpstreamError> {
        let mut stream = collection
            .watch(&rv.to_string(), self.config.watch_timeout)
            .await?;
        let label = CacheMetrics::label(self.name());
        let mut frames = Vec::new();
        loop {
            let state = tokio::select! {
                s = stream.next_batch(&mut frames) => s,
                Some(()) = self.resync.recv() => {
                    self.resync(collection, etag).await;
                    continue;
                }
            };
            let arrived = Instant::now();
            for frame in frames.drain(..) {
                match frame {
                    WatchFrame::Event {
                        event_type, object, ..
                    } => self.event(collection, event_type, &object, &label, arrived)?,
                    WatchFrame::Bookmark {
                        resource_version, ..
                    } => {
                        if let Ok(rv) = resource_version.parse() {
                            self.store.advance(rv);
                        }
                    }
                    WatchFrame::Gone => return Ok(WatchEnd::Gone),
                }
                backoff.reset();
            }
            match state? {
                WatchState::Open => {}
                WatchState::Ended => return Ok(WatchEnd::Ended),
            }
        }
    }

    /// Applies one watch event.
    fn event(
        &self,
        collection: &Collection,
        event_type: EventType,
        object: &[u8],
        label: &crate::metrics::ResourceLabel,
        arrived: Instant,
    ) -> Result<(), UpstreamError> {
        let object: Value =
            serde_json::from_slice(object).map_err(|source| UpstreamError::Object {
                path: collection.path().to_string(),
                source,
            })?;
        let current = self.store.resource_version();
        self.metrics.upstream_events.get_or_create(label).inc();
        let Some(rv) = rv_of(&object) else {
            return Err(UpstreamError::EventVersion {
                path: collection.path().to_string(),
            });
        };
        if rv <= current {
            return Ok(()); // already have it (a rewatch overlap)
        }
        let result = if event_type == EventType::Deleted {
            let ns = str_at(&object, "/metadata/namespace").to_owned();
            let name = str_at(&object, "/metadata/name").to_owned();
            self.store.delete(&ns, &name, rv).map(|gone| {
                if gone.is_none() {
                    self.store.advance(rv);
                }
            })
        } else {
            self.store.apply(object, rv).map(|_| ())
        };
        if let Err(e) = result {
            warn!(resource = self.name(), error = %e, "upstream event not applied");
        }
        self.metrics
            .propagation_seconds
            .observe(arrived.elapsed().as_secs_f64());
        Ok(())
    }

    /// A periodic conditional list beside the watch: repairs the store if
    /// the upstream has something the watch did not deliver.
    async fn resync(&self, collection: &Collection, etag: &mut Option<String>) {
        match self.list(collection, true, etag.as_deref()).await {
            Ok(None) => self.health.success(self.name(), false),
            Ok(Some(listed)) => {
                self.health.success(self.name(), true);
                let new_etag = listed.etag.clone();
                // A list from the upstream's cache may be older than what
                // the watch already delivered: then it proves nothing.
                if listed.rv >= self.store.resource_version() && self.apply_list(listed, true) {
                    *etag = new_etag;
                }
            }
            Err(e) => self
                .health
                .failure(self.name(), &e, self.store.resource_version()),
        }
    }
}
