//! The periodic resync of every routing kind, in one task (one timer per
//! replica, not per kind): a list of a kind beside (never in the way of)
//! its watch, when [`Freshness::resync_due`] says so.
//!
//! Each list is as cheap as the server allows:
//! - conditional on the content digest of what the index holds (`If-None-Match`):
//!   a `listwatch` server (the cache tier, testkit) answers `304` when it
//!   holds the same;
//! - metadata-only (`as=PartialObjectMetadataList`, served by
//!   kube-apiserver's watch cache at `resourceVersion=0`): the replica
//!   compares names and resourceVersions with the index and fetches only the
//!   objects that differ, one `GET` each. A real API server sends no
//!   digests, so without this every replica would list every object in full
//!   every second. Many differences (past [`MAX_FETCHES`]), or a server that
//!   cannot serve metadata lists, take a full list instead.

use std::sync::Arc;

use futures::StreamExt;
use kubewatch::{Collection, IfNoneMatch, List, ListOutcome, ListParams};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::freshness::{Due, ResyncClock};
use super::{KubeSource, json_items};
use crate::index::{JsonObject, ObjectKind, ResourceVersion};
use crate::metrics::SyncMetrics;
use crate::writer::Event;

/// At most this many objects (or a tenth of the list, if more) are fetched
/// one by one after a metadata-only list; more take a full list.
pub(crate) const MAX_FETCHES: usize = 16;

/// Objects fetched at once.
const FETCH_CONCURRENCY: usize = 8;

/// The resync state of one kind.
struct KindResync {
    kind: ObjectKind,
    collection: Collection,
    resyncs: prometheus_client::metrics::counter::Counter,
    etag: Option<String>,
    clock: ResyncClock,
    warned_missing: bool,
}

/// Runs the resync until cancelled.
pub(crate) async fn resync(src: Arc<KubeSource>) {
    let interval = src.config.resync_interval;
    // The watches' initial lists build the first table; the first resync
    // comes one interval later.
    let first = Instant::now() + interval;
    let mut kinds: Vec<KindResync> = ObjectKind::ALL
        .iter()
        .map(|&kind| KindResync {
            kind,
            collection: src.collection(kind),
            resyncs: src
                .metrics
                .resyncs
                .get_or_create(&SyncMetrics::label(kind.resource()))
                .clone(),
            etag: None,
            clock: ResyncClock::new(first),
            warned_missing: false,
        })
        .collect();
    let [first_kind, second_kind] = ObjectKind::ALL;
    loop {
        let wake = kinds
            .iter()
            .map(|k| k.clock.deadline)
            .min()
            .unwrap_or(first);
        let repair = tokio::select! {
            _ = src.cancel.cancelled() => return,
            _ = tokio::time::sleep_until(wake) => None,
            _ = src.freshness.repair_requested(first_kind) => Some(first_kind),
            _ = src.freshness.repair_requested(second_kind) => Some(second_kind),
        };
        for k in kinds.iter_mut() {
            let due = src.freshness.resync_due(
                k.kind,
                &mut k.clock,
                Instant::now(),
                interval,
                repair == Some(k.kind),
            );
            match due {
                Due::Later => {}
                Due::Proven => {
                    k.resyncs.inc();
                }
                Due::Now => {
                    tokio::select! {
                        _ = src.cancel.cancelled() => return,
                        () = resync_kind(&src, k) => {}
                    }
                }
            }
        }
    }
}

/// What one resync of a kind found.
enum Found {
    /// The index holds what the server holds.
    Current,
    /// The objects of a complete listing at `rv` (full objects where they
    /// differ from the index).
    Listing(Vec<JsonObject>, Option<ResourceVersion>),
    /// Like `Listing`, from a metadata-only list: only the items marked
    /// `true` are full objects; the others are metadata, standing for what
    /// the index holds.
    Partial(Vec<JsonObject>, Option<ResourceVersion>, Vec<bool>),
}

/// One resync of one kind: list, compare, repair; count it.
async fn resync_kind(src: &KubeSource, k: &mut KindResync) {
    let kind = k.kind;
    let found = match list(src, k).await {
        Ok(found) => {
            src.health.success(kind.resource(), true);
            found
        }
        Err(kubewatch::Error::NotFound { .. }) => {
            if !k.warned_missing {
                warn!(
                    resource = kind.resource(),
                    "resource not served (is its CRD installed?); treating it as empty"
                );
                k.warned_missing = true;
            }
            k.etag = None;
            Found::Listing(Vec::new(), None)
        }
        Err(err) => {
            src.count_error(kind);
            src.health
                .failure(kind.resource(), &err, src.writer.table_version());
            debug!(resource = kind.resource(), error = %err, "resync list failed");
            return;
        }
    };
    let mut found = found;
    let (was_complete, repaired) = loop {
        let applied = {
            let mut batch = src.writer.batch();
            let was_complete = batch.is_complete(kind);
            match found {
                Found::Current => Some(batch.apply(Event::Current)),
                Found::Listing(items, rv) => Some(batch.list(kind, items, rv)),
                Found::Partial(items, rv, full) => {
                    // Only full objects may be applied: if the index moved
                    // since the comparison and now wants an object we hold
                    // only the metadata of, a full list decides.
                    let stale = batch.index().stale(kind, &items, rv.as_ref());
                    stale
                        .iter()
                        .all(|&i| full[i])
                        .then(|| batch.list(kind, items, rv))
                }
            }
            .map(|repaired| (was_complete, repaired))
        };
        if let Some(applied) = applied {
            break applied;
        }
        let listed = tokio::select! {
            _ = src.cancel.cancelled() => return,
            r = full_list(k) => r,
        };
        found = match listed {
            Ok(found) => found,
            Err(err) => {
                src.count_error(kind);
                debug!(resource = kind.resource(), error = %err, "resync list failed");
                return;
            }
        };
    };
    // A change found by a resync, when the index was already complete,
    // means the watch missed something: a repair.
    if was_complete {
        k.resyncs.inc();
        if repaired > 0 {
            src.metrics
                .resync_repairs
                .get_or_create(&SyncMetrics::label(kind.resource()))
                .inc_by(repaired as u64);
            info!(
                kind = kind.kind(),
                repairs = repaired,
                "resync repaired the table (a watch event was lost or late)"
            );
        }
    }
}

/// Lists `k`'s collection as cheaply as the server allows (see the module
/// doc).
async fn list(src: &KubeSource, k: &mut KindResync) -> Result<Found, kubewatch::Error> {
    let digest = src.writer.batch().digest(k.kind);
    let if_none_match = match (digest, &k.etag) {
        (Some(d), _) => Some(IfNoneMatch::Digest(d)),
        (None, Some(e)) => Some(IfNoneMatch::ETag(e.clone())),
        (None, None) => None,
    };
    let params = ListParams {
        from_cache: true,
        page_size: None,
        if_none_match,
        metadata_only: src.config.metadata_resync,
    };
    let list = match k.collection.list(&params).await? {
        ListOutcome::Unchanged => return Ok(Found::Current),
        ListOutcome::Listed(list) => list,
    };
    k.etag = list.etag.clone();
    if !list.metadata_only {
        let rv = list.resource_version.map(ResourceVersion::new);
        return Ok(Found::Listing(json_items(list.items), rv));
    }
    match complete_metadata(src, k, list).await? {
        Some(found) => Ok(found),
        None => full_list(k).await,
    }
}

/// An unconditional list of full objects.
async fn full_list(k: &KindResync) -> Result<Found, kubewatch::Error> {
    let params = ListParams {
        from_cache: true,
        ..ListParams::default()
    };
    match k.collection.list(&params).await? {
        ListOutcome::Listed(list) => Ok(Found::Listing(
            json_items(list.items),
            list.resource_version.map(ResourceVersion::new),
        )),
        ListOutcome::Unchanged => Ok(Found::Current),
    }
}

/// Turns a metadata-only list into a listing the index can apply: the
/// objects whose versions differ from the index are fetched in full (the
/// others are never compiled, so their metadata stands for them). `None`:
/// too many differ; take a full list.
async fn complete_metadata(
    src: &KubeSource,
    k: &KindResync,
    list: List,
) -> Result<Option<Found>, kubewatch::Error> {
    let kind = k.kind;
    let rv = list.resource_version.map(ResourceVersion::new);
    let mut items = json_items(list.items);
    let keys: Vec<_> = items
        .iter()
        .map(|o| o.key(kind).ok())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    if keys.len() != items.len() {
        return Ok(None); // an item without metadata: let the full list say what it is
    }
    let listed = wire::digest::content_digest(keys.iter().map(|(key, object_rv)| {
        (
            key.namespace.as_str(),
            key.name.as_str(),
            object_rv.as_ref().map_or("", |r| r.as_str()),
        )
    }));
    let stale = {
        let batch = src.writer.batch();
        if batch.digest(kind) == Some(listed) {
            return Ok(Some(Found::Current));
        }
        batch.index().stale(kind, &items, rv.as_ref())
    };
    if stale.len() > MAX_FETCHES.max(items.len() / 10) {
        return Ok(None);
    }
    let fetched: Vec<(usize, Result<Option<bytes::Bytes>, kubewatch::Error>)> =
        futures::stream::iter(stale.into_iter().map(|i| {
            let (key, _) = &keys[i];
            let object = k.collection.get_object(&key.namespace, &key.name);
            async move { (i, object.await) }
        }))
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    let mut gone = vec![false; items.len()];
    let mut full = vec![false; items.len()];
    for (i, object) in fetched {
        match object? {
            Some(json) => {
                items[i] = JsonObject::new(json);
                full[i] = true;
            }
            // Deleted since the list: the listing lacks it (its watch
            // event, newer than the list, settles the rest).
            None => gone[i] = true,
        }
    }
    let (items, full) = items
        .into_iter()
        .zip(full)
        .zip(gone)
        .filter_map(|(item, gone)| (!gone).then_some(item))
        .unzip();
    Ok(Some(Found::Partial(items, rv, full)))
}
