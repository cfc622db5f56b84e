//! The upstream side: one list + watch per resource on the upstream (the
//! API server or another cache), mirrored into a `listwatch` [`Store`] with
//! upstream's own resourceVersions, plus a periodic conditional resync.
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

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use listwatch::Store;
use serde::Deserialize;
use serde_json::Value;
use sync::retry::{Backoff, encode_query_value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
#[derive(Debug)]
enum UpstreamError {
    /// 410: the resourceVersion or continue token is too old.
    Expired,
    /// 404: the upstream does not serve this resource (CRD not installed).
    NotFound,
    Other(String),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Expired => f.write_str("410 Expired"),
            UpstreamError::NotFound => f.write_str("404 resource not served"),
            UpstreamError::Other(s) => f.write_str(s),
        }
    }
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct WatchLine {
    #[serde(rename = "type")]
    kind: String,
    object: Value,
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

/// The mirrors' backoff: 100 ms doubling to 5 s.
fn upstream_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5))
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
    pub(crate) cancel: CancellationToken,
    /// Ticks telling this mirror to resync (the cache spreads one list per
    /// interval over its resources).
    pub(crate) resync: tokio::sync::mpsc::Receiver<()>,
}

impl Mirror {
    fn path(&self) -> String {
        self.resource
            .collection_path(self.config.namespace.as_deref())
    }

    fn name(&self) -> &str {
        &self.resource.resource.gvr.resource
    }

    fn selector_query(&self) -> String {
        match &self.config.label_selector {
            Some(s) if !s.is_empty() => format!("&labelSelector={}", encode_query_value(s)),
            _ => String::new(),
        }
    }

    async fn get(
        &self,
        uri: String,
        etag: Option<&str>,
    ) -> Result<http::Response<kube::client::Body>, UpstreamError> {
        let mut req = http::Request::get(uri).header(http::header::ACCEPT, "application/json");
        if let Some(e) = etag {
            req = req.header(http::header::IF_NONE_MATCH, e);
        }
        let req = req
            .body(kube::client::Body::empty())
            .map_err(|e| UpstreamError::Other(e.to_string()))?;
        self.client
            .send(req)
            .await
            .map_err(|e| UpstreamError::Other(e.to_string()))
    }

    /// A complete list (all pages). `rv0` lists from the upstream's cache
    /// (`resourceVersion=0`, may be slightly old; used by resyncs);
    /// otherwise a consistent read. `Ok(None)`: 304 Not Modified.
    async fn list(&self, rv0: bool, etag: Option<&str>) -> Result<Option<Listed>, UpstreamError> {
        let path = self.path();
        let sel = self.selector_query();
        let mut items = Vec::new();
        let mut continue_token: Option<String> = None;
        let mut list_rv: Option<u64> = None;
        let mut new_etag = None;
        loop {
            let uri = match (&continue_token, rv0) {
                (Some(c), _) => format!(
                    "{path}?limit={}&continue={}{sel}",
                    self.config.page_size,
                    encode_query_value(c)
                ),
                (None, true) => format!("{path}?resourceVersion=0{sel}"),
                (None, false) => format!("{path}?limit={}{sel}", self.config.page_size),
            };
            let first = continue_token.is_none();
            let resp = self.get(uri, if first { etag } else { None }).await?;
            let status = resp.status();
            if status == http::StatusCode::NOT_MODIFIED {
                return Ok(None);
            }
            if first {
                new_etag = resp
                    .headers()
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| UpstreamError::Other(e.to_string()))?
                .to_bytes();
            match status.as_u16() {
                200..=299 => {}
                404 => return Err(UpstreamError::NotFound),
                410 => return Err(UpstreamError::Expired),
                _ => {
                    return Err(UpstreamError::Other(format!(
                        "list {path}: HTTP {status}: {}",
                        String::from_utf8_lossy(&body).trim()
                    )));
                }
            }
            let page: ListBody = serde_json::from_slice(&body)
                .map_err(|e| UpstreamError::Other(format!("list {path}: bad JSON: {e}")))?;
            if list_rv.is_none() {
                list_rv = page
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|s| s.parse().ok());
            }
            items.extend(page.items);
            match page.metadata.continue_token.filter(|c| !c.is_empty()) {
                Some(c) => continue_token = Some(c),
                None => break,
            }
        }
        let rv = list_rv.ok_or_else(|| {
            UpstreamError::Other(format!("list {path}: no numeric metadata.resourceVersion"))
        })?;
        self.metrics
            .upstream_lists
            .get_or_create(&CacheMetrics::label(self.name()))
            .inc();
        Ok(Some(Listed {
            items,
            rv,
            etag: new_etag,
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

    /// Runs until cancelled.
    pub(crate) async fn run(mut self) {
        let label = CacheMetrics::label(self.name());
        let mut backoff = upstream_backoff();
        let mut synced = false;
        let mut etag: Option<String> = None;
        'relist: loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let listed = match self.list(false, None).await {
                Ok(Some(l)) => l,
                Ok(None) => continue,
                Err(UpstreamError::NotFound) => {
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
                    self.metrics.upstream_restarts.get_or_create(&label).inc();
                    warn!(resource = self.name(), error = %e, "upstream list failed; retrying");
                    if !backoff.wait(&self.cancel).await {
                        return;
                    }
                    continue;
                }
            };
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
                    r = self.watch(rv, &mut etag, &mut backoff) => r,
                };
                match result {
                    Ok(()) => {}
                    Err(UpstreamError::Expired) => {
                        self.metrics.upstream_restarts.get_or_create(&label).inc();
                        info!(
                            resource = self.name(),
                            rv, "upstream watch expired; relisting"
                        );
                        continue 'relist;
                    }
                    Err(e) => {
                        self.metrics.upstream_restarts.get_or_create(&label).inc();
                        warn!(resource = self.name(), error = %e, "upstream watch failed; retrying");
                        if !backoff.wait(&self.cancel).await {
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
        rv: u64,
        etag: &mut Option<String>,
        backoff: &mut Backoff,
    ) -> Result<(), UpstreamError> {
        let uri = format!(
            "{}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds={}{}",
            self.path(),
            self.config.watch_timeout.as_secs().max(1),
            self.selector_query()
        );
        let resp = self.get(uri, None).await?;
        match resp.status().as_u16() {
            200..=299 => {}
            404 => return Err(UpstreamError::NotFound),
            410 => return Err(UpstreamError::Expired),
            s => return Err(UpstreamError::Other(format!("watch: HTTP {s}"))),
        }
        let mut body = resp.into_body();
        let mut buf = BytesMut::new();
        let stall = self.config.watch_timeout + Duration::from_secs(5);
        let label = CacheMetrics::label(self.name());
        loop {
            let frame = tokio::select! {
                f = tokio::time::timeout(stall, body.frame()) => f,
                Some(()) = self.resync.recv() => {
                    self.resync(etag).await;
                    continue;
                }
            };
            let frame = match frame {
                Err(_) => return Err(UpstreamError::Other("watch stalled".into())),
                Ok(None) => return Ok(()),
                Ok(Some(Err(e))) => return Err(UpstreamError::Other(e.to_string())),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let arrived = Instant::now();
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Bytes = buf.split_to(nl + 1).freeze();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                self.event(line, &label, arrived)?;
                backoff.reset();
            }
            if buf.remaining() > 64 << 20 {
                return Err(UpstreamError::Other("watch line over 64 MiB".into()));
            }
        }
    }

    /// Applies one watch line.
    fn event(
        &self,
        line: &[u8],
        label: &crate::metrics::ResourceLabel,
        arrived: Instant,
    ) -> Result<(), UpstreamError> {
        let ev: WatchLine = serde_json::from_slice(line)
            .map_err(|e| UpstreamError::Other(format!("bad watch line: {e}")))?;
        let current = self.store.resource_version();
        match ev.kind.as_str() {
            "ADDED" | "MODIFIED" | "DELETED" => {
                self.metrics.upstream_events.get_or_create(label).inc();
                let Some(rv) = rv_of(&ev.object) else {
                    return Err(UpstreamError::Other(
                        "watch event without a numeric resourceVersion".into(),
                    ));
                };
                if rv <= current {
                    return Ok(()); // already have it (a rewatch overlap)
                }
                let result = if ev.kind == "DELETED" {
                    let ns = str_at(&ev.object, "/metadata/namespace").to_owned();
                    let name = str_at(&ev.object, "/metadata/name").to_owned();
                    self.store.delete(&ns, &name, rv).map(|gone| {
                        if gone.is_none() {
                            self.store.advance(rv);
                        }
                    })
                } else {
                    self.store.apply(ev.object, rv).map(|_| ())
                };
                if let Err(e) = result {
                    warn!(resource = self.name(), error = %e, "upstream event not applied");
                }
                self.metrics
                    .propagation_seconds
                    .observe(arrived.elapsed().as_secs_f64());
            }
            "BOOKMARK" => {
                if let Some(rv) = rv_of(&ev.object) {
                    self.store.advance(rv);
                }
            }
            "ERROR" => {
                let code = ev.object.get("code").and_then(Value::as_u64).unwrap_or(0);
                if code == 410 {
                    return Err(UpstreamError::Expired);
                }
                return Err(UpstreamError::Other(format!(
                    "watch ERROR {code}: {}",
                    str_at(&ev.object, "/message")
                )));
            }
            other => debug!(
                resource = self.name(),
                kind = other,
                "unknown watch event type"
            ),
        }
        Ok(())
    }

    /// A periodic conditional list beside the watch: repairs the store if
    /// the upstream has something the watch did not deliver.
    async fn resync(&self, etag: &mut Option<String>) {
        match self.list(true, etag.as_deref()).await {
            Ok(None) => {}
            Ok(Some(listed)) => {
                let new_etag = listed.etag.clone();
                // A list from the upstream's cache may be older than what
                // the watch already delivered: then it proves nothing.
                if listed.rv >= self.store.resource_version() && self.apply_list(listed, true) {
                    *etag = new_etag;
                }
            }
            Err(e) => debug!(resource = self.name(), error = %e, "upstream resync failed"),
        }
    }
}
