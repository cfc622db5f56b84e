//! The Kubernetes source: a list-then-watch loop per kind (over
//! [`kubewatch`]) feeding the index's [`Writer`], and beside the watches the
//! resync (`resync`): a list every interval, skipped while digests from the
//! watch prove the index fresh (`freshness`), metadata-only against a
//! server that sends no digests. A cache tier is the same thing: it speaks
//! the same protocol, answers the resync's `If-None-Match` with 304 when
//! nothing changed, and annotates its bookmarks with content digests.
//! Services and EndpointSlices go to the ready-cache (`endpoints`).

use std::sync::Arc;
use std::time::Duration;

use kubewatch::{Backoff, Collection, ListOutcome, ListParams, WatchFrame, WatchState};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use wire::EventType;

use crate::SyncConfig;
use crate::index::{JsonObject, ObjectKind, ResourceVersion};
use crate::metrics::SyncMetrics;
use crate::writer::{Event, Writer};

mod endpoints;
mod freshness;
mod resync;

pub(crate) use endpoints::watch_endpoints;
use freshness::{Freshness, Proof};
pub(crate) use resync::resync;

/// What every task of one Kubernetes source shares.
pub(crate) struct KubeSource {
    pub(crate) client: kube::Client,
    pub(crate) config: SyncConfig,
    pub(crate) writer: Arc<Writer>,
    pub(crate) metrics: SyncMetrics,
    /// Reachability of the source, shared by every loop reading it.
    pub(crate) health: kubewatch::SourceHealth,
    pub(crate) freshness: Freshness,
    pub(crate) cancel: CancellationToken,
}

impl KubeSource {
    /// The collection of `kind` the sync loop reads.
    fn collection(&self, kind: ObjectKind) -> Collection {
        Collection::new(
            self.client.clone(),
            list_path(kind, self.config.namespace.as_deref()),
        )
        .with_label_selector(self.config.label_selector.as_deref())
    }

    /// A list or watch of `kind` failed: counted, and reported once per
    /// outage ([`kubewatch::SourceHealth`]).
    fn watch_failed(&self, kind: ObjectKind, err: &str) {
        self.count_error(kind);
        self.metrics
            .watch_restarts
            .get_or_create(&SyncMetrics::label(kind.resource()))
            .inc();
        self.health
            .failure(kind.resource(), &err, self.writer.table_version());
    }

    fn count_error(&self, kind: ObjectKind) {
        self.metrics
            .sync_errors
            .get_or_create(&SyncMetrics::label(kind.resource()))
            .inc();
    }
}

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

/// The items of a list, as the index reads them: each stays a slice of the
/// body, parsed only if it differs from what the index holds.
fn json_items(items: Vec<bytes::Bytes>) -> Vec<JsonObject> {
    items.into_iter().map(JsonObject::new).collect()
}

/// Runs the list-then-watch of one routing kind until cancelled: list
/// (`resourceVersion=0`), then watch from the list's resourceVersion with
/// bookmarks; rewatch from the last resourceVersion when a watch ends or
/// stalls; relist on 410 Gone; back off on errors. Events, and the digests
/// carried by events and BOOKMARKs, are applied on this task, in stream
/// order, one batch per frame read.
///
/// Our own loop rather than kube-rs's `watcher`, because the watcher hides
/// BOOKMARKs and their digests are what lets an idle replica skip its
/// resync (see `freshness`).
pub(crate) async fn watch_kind(src: Arc<KubeSource>, kind: ObjectKind) {
    let collection = src.collection(kind);
    let cancel = &src.cancel;
    let mut rv: Option<String> = None;
    let mut backoff = watch_backoff();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let Some(from) = rv.clone() else {
            let params = ListParams {
                from_cache: true,
                ..ListParams::default()
            };
            let listed = tokio::select! {
                _ = cancel.cancelled() => return,
                r = collection.list(&params) => r,
            };
            match listed {
                Ok(ListOutcome::Listed(list)) => {
                    backoff.reset();
                    src.health.success(kind.resource(), true);
                    rv = Some(list.resource_version.clone().unwrap_or_else(|| "0".into()));
                    let list_rv = list.resource_version.map(ResourceVersion::new);
                    src.writer
                        .batch()
                        .list(kind, json_items(list.items), list_rv);
                    continue;
                }
                Err(kubewatch::Error::NotFound { .. }) => {
                    // Not served (CRD missing): empty for now, and keep
                    // trying; the resync warns about it.
                    src.writer
                        .batch()
                        .list(kind, Vec::<JsonObject>::new(), None);
                    src.count_error(kind);
                }
                other => {
                    let err = match other {
                        Err(e) => e.to_string(),
                        _ => "unexpected 304 to an unconditional list".to_string(),
                    };
                    src.watch_failed(kind, &err);
                }
            }
            if !backoff.wait(cancel).await {
                return;
            }
            continue;
        };
        match watch_once(&src, &collection, kind, &from, &mut rv).await {
            WatchEnd::Stop => return,
            WatchEnd::Rewatch { lines } => {
                if lines > 0 {
                    backoff.reset();
                    src.health.success(kind.resource(), false);
                }
            }
            WatchEnd::Gone => {
                debug!(resource = kind.resource(), "watch expired (410); relisting");
                rv = None;
            }
            WatchEnd::Failed(err) => {
                src.watch_failed(kind, &err);
                if !backoff.wait(cancel).await {
                    return;
                }
            }
        }
    }
}

/// One watch call from `from`; `rv` follows the events and bookmarks.
async fn watch_once(
    src: &KubeSource,
    collection: &Collection,
    kind: ObjectKind,
    from: &str,
    rv: &mut Option<String>,
) -> WatchEnd {
    let cancel = &src.cancel;
    let mut stream = tokio::select! {
        _ = cancel.cancelled() => return WatchEnd::Stop,
        r = collection.watch(from, src.config.watch_timeout) => match r {
            Ok(stream) => stream,
            Err(e) => return WatchEnd::Failed(e.to_string()),
        },
    };
    let mut frames = Vec::new();
    let mut steps = Vec::new();
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
            src.freshness.watch_alive(kind, Instant::now());
        }
        // Every line of the frame is parsed first, then all are applied in
        // one batch (one publish), on this task.
        lines += frames.len() as u64;
        let mut end = None;
        for frame in frames.drain(..) {
            match read_frame(kind, frame, rv) {
                Ok(step) => steps.push(step),
                Err(e) => {
                    end = Some(e);
                    break;
                }
            }
        }
        if !steps.is_empty() {
            let mut batch = src.writer.batch();
            for (event, proof) in steps.drain(..) {
                if let Some(event) = event {
                    batch.apply(event);
                }
                if let Some(proof) = proof {
                    src.freshness.check(&mut batch, kind, proof);
                }
            }
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

/// What one watch frame means for the index: an event to apply and a digest
/// to check after it (either may be absent).
type Step = (Option<Event>, Option<Proof>);

fn read_frame(
    kind: ObjectKind,
    frame: WatchFrame,
    rv: &mut Option<String>,
) -> Result<Step, WatchEnd> {
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
            let Ok((key, object_rv)) = obj.key(kind) else {
                return Err(WatchEnd::Failed(
                    "bad watch object: not a JSON object".to_string(),
                ));
            };
            let proof = digest.map(|digest| Proof {
                digest,
                rv: object_rv.as_ref().and_then(|r| r.as_str().parse().ok()),
            });
            if let Some(r) = &object_rv
                && rv.as_deref() != Some(r.as_str())
            {
                *rv = Some(r.as_str().to_string());
            }
            let event = if event_type == EventType::Deleted {
                Event::Delete(key, object_rv)
            } else {
                Event::Apply(kind, obj.into())
            };
            Ok((Some(event), proof))
        }
        WatchFrame::Bookmark {
            resource_version,
            digest,
        } => {
            let bookmark_rv = resource_version.parse::<u64>().ok();
            if rv.as_deref() != Some(resource_version.as_str()) {
                *rv = Some(resource_version);
            }
            let proof = digest.map(|digest| Proof {
                digest,
                rv: bookmark_rv,
            });
            Ok((None, proof))
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
