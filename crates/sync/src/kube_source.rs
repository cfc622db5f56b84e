//! The Kubernetes source: a list-then-watch loop per kind (over
//! [`kubewatch`]) feeding the sync loop, and beside each one the resync: a
//! conditional list every interval, skipped while the watch's digest
//! BOOKMARKs prove the index fresh. A cache tier is the same thing: it
//! speaks the same protocol, answers the resync's `If-None-Match` with 304
//! when nothing changed, and annotates its bookmarks with content digests.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kubewatch::{
    Backoff, Collection, IfNoneMatch, ListOutcome, ListParams, WatchFrame, WatchState,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wire::EventType;

use crate::endpoints::{EndpointsChange, ReadyEndpoints};
use crate::index::{JsonObject, ObjectKind, ResourceVersion};
use crate::metrics::SyncMetrics;
use crate::{Core, Input, Proof, SyncConfig};

/// Why one watch call ended.
enum WatchEnd {
    /// The server ended it (its timeout) or it stalled: rewatch from the
    /// last resourceVersion.
    Rewatch { lines: u64 },
    /// 410 Gone: the resourceVersion left the server's history; relist.
    Gone,
    /// A failure; rewatch after a backoff.
    Failed(String),
    /// Cancelled.
    Stop,
}

/// kube-rs's default backoff shape: 0.8 s doubling to 30 s, with jitter.
fn watch_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(800), Duration::from_secs(30)).with_jitter()
}

/// The collection of `kind` the sync loop reads.
fn collection(client: &kube::Client, kind: ObjectKind, config: &SyncConfig) -> Collection {
    Collection::new(client.clone(), list_path(kind, config.namespace.as_deref()))
        .with_label_selector(config.label_selector.as_deref())
}

/// Runs the list-then-watch of one routing kind until cancelled: list
/// (`resourceVersion=0`), then watch from the list's resourceVersion with
/// bookmarks; rewatch from the last resourceVersion when a watch ends or
/// stalls; relist on 410 Gone; back off on errors. Events, and the digests
/// carried by events and BOOKMARKs, are applied on this task
/// ([`Core::ingest`]) in stream order.
///
/// Our own loop rather than kube-rs's `watcher`, because the watcher hides
/// BOOKMARKs and their digests are what lets an idle replica skip its
/// resync (see `crate::digest`).
pub(crate) async fn watch_kind(
    client: kube::Client,
    kind: ObjectKind,
    config: SyncConfig,
    core: std::sync::Arc<Core>,
    metrics: SyncMetrics,
    cancel: CancellationToken,
    digests: std::sync::Arc<crate::digest::Digests>,
) {
    let collection = collection(&client, kind, &config);
    let label = SyncMetrics::label(kind.resource());
    let mut rv: Option<String> = None;
    let mut backoff = watch_backoff();
    let w = KindWatch {
        collection: &collection,
        kind,
        config: &config,
        core: &core,
        cancel: &cancel,
        digests: &digests,
    };
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let Some(from) = rv.clone() else {
            let listed = tokio::select! {
                _ = cancel.cancelled() => return,
                r = conditional_list(&collection, None, None) => r,
            };
            let input = match listed {
                Ok(ListResult::Listed {
                    items, rv: list_rv, ..
                }) => {
                    backoff.reset();
                    core.health.success(kind.resource(), true);
                    rv = Some(list_rv.as_ref().map_or("0", |r| r.as_str()).to_string());
                    Input::WatchListed {
                        kind,
                        items,
                        rv: list_rv,
                    }
                }
                Ok(ListResult::NotFound) => {
                    // Not served (CRD missing): empty for now, and keep
                    // trying; the resync warns about it.
                    core.ingest([Input::WatchListed {
                        kind,
                        items: Vec::new(),
                        rv: None,
                    }]);
                    metrics.sync_errors.get_or_create(&label).inc();
                    if !backoff.wait(&cancel).await {
                        return;
                    }
                    continue;
                }
                Ok(ListResult::Unchanged) | Err(_) => {
                    let err = match listed {
                        Err(e) => e.to_string(),
                        _ => "unexpected 304 to an unconditional list".to_string(),
                    };
                    metrics.sync_errors.get_or_create(&label).inc();
                    metrics.watch_restarts.get_or_create(&label).inc();
                    core.health
                        .failure(kind.resource(), &err, core.table_version());
                    if !backoff.wait(&cancel).await {
                        return;
                    }
                    continue;
                }
            };
            core.ingest([input]);
            continue;
        };
        match watch_once(&w, &from, &mut rv).await {
            WatchEnd::Stop => return,
            WatchEnd::Rewatch { lines } => {
                if lines > 0 {
                    backoff.reset();
                    core.health.success(kind.resource(), false);
                }
            }
            WatchEnd::Gone => {
                debug!(resource = kind.resource(), "watch expired (410); relisting");
                rv = None;
            }
            WatchEnd::Failed(err) => {
                metrics.sync_errors.get_or_create(&label).inc();
                metrics.watch_restarts.get_or_create(&label).inc();
                core.health
                    .failure(kind.resource(), &err, core.table_version());
                if !backoff.wait(&cancel).await {
                    return;
                }
            }
        }
    }
}

/// What one kind's watch calls share.
struct KindWatch<'a> {
    collection: &'a Collection,
    kind: ObjectKind,
    config: &'a SyncConfig,
    core: &'a Core,
    cancel: &'a CancellationToken,
    digests: &'a crate::digest::Digests,
}

/// One watch call from `from`; `rv` follows the events and bookmarks.
async fn watch_once(w: &KindWatch<'_>, from: &str, rv: &mut Option<String>) -> WatchEnd {
    let KindWatch {
        collection,
        kind,
        config,
        core,
        cancel,
        digests,
    } = *w;
    let mut stream = tokio::select! {
        _ = cancel.cancelled() => return WatchEnd::Stop,
        r = collection.watch(from, config.watch_timeout) => match r {
            Ok(stream) => stream,
            Err(e) => return WatchEnd::Failed(e.to_string()),
        },
    };
    let mut frames = Vec::new();
    let mut inputs = Vec::new();
    let mut lines = 0u64;
    // Registered once for the whole watch, not once per frame.
    let cancelled = cancel.cancelled();
    tokio::pin!(cancelled);
    loop {
        let state = tokio::select! {
            biased;
            _ = &mut cancelled => return WatchEnd::Stop,
            s = stream.next_batch(&mut frames) => s,
        };
        if matches!(state, Ok(WatchState::Open)) {
            digests.watch_alive(kind, Instant::now());
        }
        // Every line of the frame is parsed, then all are applied under
        // one lock and published once, on this task.
        lines += frames.len() as u64;
        let mut end = None;
        for frame in frames.drain(..) {
            match handle_frame(kind, frame, rv) {
                Ok(Some(input)) => inputs.push(input),
                Ok(None) => {}
                Err(e) => {
                    end = Some(e);
                    break;
                }
            }
        }
        if !inputs.is_empty() {
            core.ingest(inputs.drain(..));
        }
        if let Some(end) = end {
            return end;
        }
        match state {
            Ok(WatchState::Open) => {}
            Ok(WatchState::Ended) => return WatchEnd::Rewatch { lines },
            Err(kubewatch::Error::Stalled { .. }) => {
                debug!(
                    resource = kind.resource(),
                    "watch silent past the stall bound; rewatching"
                );
                return WatchEnd::Rewatch { lines };
            }
            Err(e) => return WatchEnd::Failed(e.to_string()),
        }
    }
}

/// What one watch frame means for the index (`None`: nothing to tell).
fn handle_frame(
    kind: ObjectKind,
    frame: WatchFrame,
    rv: &mut Option<String>,
) -> Result<Option<Input>, WatchEnd> {
    match frame {
        WatchFrame::Event {
            event_type,
            object,
            digest,
        } => {
            // The object stays JSON text (a slice of the line, no copy):
            // the index reads its head, and parses it into the typed object
            // only if it is new.
            let obj = JsonObject::new(object);
            if !obj.is_object() {
                return Err(WatchEnd::Failed(
                    "bad watch object: not a JSON object with string metadata".to_string(),
                ));
            }
            let event_rv = obj.resource_version();
            let proof = digest.map(|digest| Proof {
                digest,
                rv: event_rv.and_then(|r| r.parse().ok()),
            });
            if let Some(r) = event_rv
                && rv.as_deref() != Some(r)
            {
                *rv = Some(r.to_string());
            }
            Ok(Some(if event_type == EventType::Deleted {
                Input::WatchDelete(kind, obj, proof)
            } else {
                Input::WatchApply(kind, obj, proof)
            }))
        }
        WatchFrame::Bookmark {
            resource_version,
            digest,
        } => {
            let bookmark_rv = resource_version.parse::<u64>().ok();
            if rv.as_deref() != Some(resource_version.as_str()) {
                *rv = Some(resource_version);
            }
            Ok(digest.map(|digest| Input::Bookmark {
                kind,
                proof: Proof {
                    digest,
                    rv: bookmark_rv,
                },
            }))
        }
        WatchFrame::Gone => Err(WatchEnd::Gone),
    }
}

/// The URL path of a list of `kind`, cluster-wide or in one namespace.
pub(crate) fn list_path(kind: ObjectKind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!(
            "/apis/{}/namespaces/{}/{}",
            kind.api_version(),
            ns,
            kind.resource()
        ),
        None => format!("/apis/{}/{}", kind.api_version(), kind.resource()),
    }
}

/// What one conditional list returned.
pub(crate) enum ListResult {
    Unchanged,
    Listed {
        items: Vec<JsonObject>,
        rv: Option<ResourceVersion>,
        etag: Option<String>,
    },
    /// The resource does not exist on the server (its CRD is not installed).
    NotFound,
}

/// One list of the collection, from the server's cache
/// (`resourceVersion=0`), conditional on the content digest of what the
/// index holds when known (see `crate::digest`), else on the last ETag. The
/// digest alone suffices (equal content is the question) and keeps the
/// header short: HPACK never indexes it.
pub(crate) async fn conditional_list(
    collection: &Collection,
    etag: Option<&str>,
    digest: Option<u64>,
) -> Result<ListResult, kubewatch::Error> {
    let if_none_match = match (etag, digest) {
        (_, Some(d)) => Some(IfNoneMatch::Digest(d)),
        (Some(e), None) => Some(IfNoneMatch::ETag(e.to_string())),
        (None, None) => None,
    };
    let params = ListParams {
        from_cache: true,
        page_size: None,
        if_none_match,
    };
    match collection.list(&params).await {
        Ok(ListOutcome::Unchanged) => Ok(ListResult::Unchanged),
        // Each item stays a slice of the body: the index parses only the
        // ones that differ from what it holds.
        Ok(ListOutcome::Listed(list)) => Ok(ListResult::Listed {
            items: list.items.into_iter().map(JsonObject::new).collect(),
            rv: list.resource_version.map(ResourceVersion::new),
            etag: list.etag,
        }),
        Err(kubewatch::Error::NotFound { .. }) => Ok(ListResult::NotFound),
        Err(e) => Err(e),
    }
}

/// The resync state of one kind.
struct KindResync {
    kind: ObjectKind,
    collection: Collection,
    resyncs: prometheus_client::metrics::counter::Counter,
    etag: Option<String>,
    /// When this kind is next due.
    deadline: Instant,
    /// The digest bookmark last counted as a resync.
    proven: Option<Instant>,
    warned_missing: bool,
}

/// The periodic resync of every routing kind, in one task (one timer per
/// replica, not per kind): a conditional list of a kind beside (never in
/// the way of) its watch, every interval, unless a digest from the watch (a
/// BOOKMARK's, or an event's) proved the index fresh within the last 1.5
/// intervals (a server skips the bookmark right after an event that carried
/// the digest) plus a fifth for jitter; at once when a digest differed (see
/// `crate::digest`).
pub(crate) async fn resync(
    client: kube::Client,
    config: SyncConfig,
    core: std::sync::Arc<Core>,
    metrics: SyncMetrics,
    cancel: CancellationToken,
    digests: std::sync::Arc<crate::digest::Digests>,
) {
    let interval = config.resync_interval;
    let grace = interval / 5;
    // The watches' initial lists build the first table; the first resync
    // comes one interval later.
    let first = Instant::now() + interval;
    let mut kinds: Vec<KindResync> = ObjectKind::ALL
        .iter()
        .map(|&kind| KindResync {
            kind,
            collection: collection(&client, kind, &config),
            resyncs: metrics
                .resyncs
                .get_or_create(&SyncMetrics::label(kind.resource()))
                .clone(),
            etag: None,
            deadline: first,
            proven: None,
            warned_missing: false,
        })
        .collect();
    let [first_kind, second_kind] = ObjectKind::ALL;
    loop {
        let wake = kinds.iter().map(|k| k.deadline).min().unwrap_or(first);
        let repair = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => None,
            _ = digests.repair_requested(first_kind) => Some(first_kind),
            _ = digests.repair_requested(second_kind) => Some(second_kind),
        };
        for k in kinds.iter_mut() {
            let now = Instant::now();
            if repair != Some(k.kind) {
                if k.deadline > now {
                    continue;
                }
                if let Some(at) = digests.verified_at(k.kind) {
                    // A `listwatch` server skips the bookmark of a watcher
                    // whose last event (carrying its digest) went out less
                    // than half an interval before the tick, so proofs can
                    // be up to 1.5 intervals apart.
                    let fresh_until = at + interval + interval / 2 + grace;
                    if fresh_until > now {
                        // A digest bookmark newer than the last one counted
                        // stands for this interval's resync.
                        if k.proven != Some(at) {
                            k.proven = Some(at);
                            k.resyncs.inc();
                        }
                        k.deadline = fresh_until;
                        continue;
                    }
                }
                // A server that sends digest bookmarks, on a watch that is
                // not silent: the bookmark is late because everything is
                // (a write's fan-out to thousands of replicas), and a list
                // now would race the events in flight, take the full list,
                // and add load exactly when there is none to spare. The
                // next digest bookmark decides; a silent (stalled) watch
                // still gets its list.
                if digests.has_digest_bookmarks(k.kind) {
                    if let Some(alive) = digests.watch_alive_at(k.kind)
                        && alive + interval + grace > now
                    {
                        k.deadline = alive + interval + grace;
                        continue;
                    }
                    // Woken this late, this process is overloaded: the
                    // watch's silence is our own backlog, not a stall.
                    // Look again shortly, after the backlog (the watch's
                    // lines included) has had its turn.
                    if now > k.deadline + grace {
                        k.deadline = now + grace;
                        continue;
                    }
                }
            }
            k.deadline = now + interval;
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = conditional_list(&k.collection, k.etag.as_deref(), digests.get(k.kind)) => r,
            };
            match &result {
                Ok(_) => core.health.success(k.kind.resource(), true),
                Err(err) => core
                    .health
                    .failure(k.kind.resource(), err, core.table_version()),
            }
            if let Some(input) = resync_input(k, result, &metrics) {
                core.ingest([input]);
            }
        }
    }
}

/// What one resync list tells the index (`None`: nothing, it failed).
fn resync_input(
    k: &mut KindResync,
    result: Result<ListResult, kubewatch::Error>,
    metrics: &SyncMetrics,
) -> Option<Input> {
    let kind = k.kind;
    match result {
        Ok(ListResult::Unchanged) => Some(Input::ListUnchanged(kind)),
        Ok(ListResult::Listed { items, rv, etag }) => {
            k.etag = etag;
            Some(Input::Listed { kind, items, rv })
        }
        Ok(ListResult::NotFound) => {
            if !k.warned_missing {
                warn!(
                    resource = kind.resource(),
                    "resource not served (is its CRD installed?); treating it as empty"
                );
                k.warned_missing = true;
            }
            k.etag = None;
            Some(Input::Listed {
                kind,
                items: Vec::new(),
                rv: None,
            })
        }
        Err(err) => {
            metrics
                .sync_errors
                .get_or_create(&SyncMetrics::label(kind.resource()))
                .inc();
            debug!(resource = kind.resource(), error = %err, "resync list failed");
            None
        }
    }
}

/// Watches Services and EndpointSlices into the ready-cache until cancelled.
pub(crate) async fn watch_endpoints(
    client: kube::Client,
    config: SyncConfig,
    endpoints: std::sync::Arc<ReadyEndpoints>,
    metrics: SyncMetrics,
    health: kubewatch::SourceHealth,
    cancel: CancellationToken,
) {
    let (svc_api, slice_api): (Api<Service>, Api<EndpointSlice>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let wc = watcher::Config::default().timeout(config.watch_timeout.as_secs().max(1) as u32);
    let services = watcher(svc_api, wc.clone())
        .default_backoff()
        .map_ok(|e| EpEvent::Service(Box::new(e)));
    let slices = watcher(slice_api, wc)
        .default_backoff()
        .map_ok(|e| EpEvent::Slice(Box::new(e)));
    let mut merged = futures::stream::select(services, slices)
        .ready_chunks(512)
        .boxed();
    let mut svc_buf: Option<Vec<Service>> = None;
    let mut slice_buf: Option<Vec<EndpointSlice>> = None;
    let (mut svc_synced, mut slices_synced) = (false, false);
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = merged.next() => match b { Some(b) => b, None => return },
        };
        let mut changes = Vec::new();
        // `Init` opens a relist before any request is made: it proves nothing.
        let answered = |item: &Result<EpEvent, watcher::Error>| match item {
            Ok(EpEvent::Service(ev)) => !matches!(**ev, watcher::Event::Init),
            Ok(EpEvent::Slice(ev)) => !matches!(**ev, watcher::Event::Init),
            Err(_) => false,
        };
        if batch.iter().any(answered) {
            health.success("endpoints", false);
        }
        for item in batch {
            match item {
                Err(err) => {
                    metrics
                        .sync_errors
                        .get_or_create(&SyncMetrics::label("endpoints"))
                        .inc();
                    // The table's version is not known here; the endpoints
                    // fail together with the routes' watches anyway.
                    health.failure("endpoints", &err, 0);
                }
                Ok(EpEvent::Service(ev)) => match *ev {
                    watcher::Event::Init => svc_buf = Some(Vec::new()),
                    watcher::Event::InitApply(s) => svc_buf.get_or_insert_default().push(s),
                    watcher::Event::InitDone => {
                        changes.push(EndpointsChange::ResetServices(
                            svc_buf.take().unwrap_or_default(),
                        ));
                        svc_synced = true;
                    }
                    watcher::Event::Apply(s) => {
                        changes.push(EndpointsChange::ApplyService(Box::new(s)))
                    }
                    watcher::Event::Delete(s) => changes.push(EndpointsChange::DeleteService {
                        namespace: s.metadata.namespace.unwrap_or_default(),
                        name: s.metadata.name.unwrap_or_default(),
                    }),
                },
                Ok(EpEvent::Slice(ev)) => match *ev {
                    watcher::Event::Init => slice_buf = Some(Vec::new()),
                    watcher::Event::InitApply(s) => slice_buf.get_or_insert_default().push(s),
                    watcher::Event::InitDone => {
                        changes.push(EndpointsChange::ResetSlices(
                            slice_buf.take().unwrap_or_default(),
                        ));
                        slices_synced = true;
                    }
                    watcher::Event::Apply(s) => {
                        changes.push(EndpointsChange::ApplySlice(Box::new(s)))
                    }
                    watcher::Event::Delete(s) => changes.push(EndpointsChange::DeleteSlice {
                        namespace: s.metadata.namespace.unwrap_or_default(),
                        name: s.metadata.name.unwrap_or_default(),
                    }),
                },
            }
        }
        if !changes.is_empty() {
            endpoints.apply(changes);
        }
        if svc_synced && slices_synced && !endpoints.is_synced() {
            info!(services = endpoints.load().len(), "endpoints synced");
            endpoints.mark_synced();
        }
    }
}

enum EpEvent {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}
