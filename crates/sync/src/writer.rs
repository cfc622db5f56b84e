//! The one writer of the routing index, in the shape of kube-runtime's
//! reflector `Writer`: every source emits the same [`Event`]s (a complete
//! listing as `Init` / `InitApply` / `InitDone`, single `Apply` and
//! `Delete`s, and `Current` when it confirmed nothing changed), and the
//! writer applies them without knowing whether they came from a watch, a
//! resync list or a directory scan.
//!
//! One concurrency model for every source: a source opens a [`Batch`] on its
//! own task (a lock, held while it applies what it read, never across an
//! await), and the batch publishes the table once when it ends, so a burst
//! read in one frame, or a whole directory scan, becomes one table version.
//! Readers never take the lock: they load the published table
//! ([`SharedTable`]).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::FieldError;
use parking_lot::{Mutex, MutexGuard};
use serde_json::Value;
use tracing::{info, warn};

use crate::index::{
    JsonObject, Listing, ObjectKey, ObjectKind, Outcome, ResourceVersion, SourceObject,
};
use crate::metrics::SyncMetrics;
use crate::{RouteIndex, SharedTable};

/// An object as a source hands it to the writer.
#[derive(Debug)]
pub(crate) enum Object {
    /// JSON text off the wire (a list item, a watch event's object).
    Json(JsonObject),
    /// A parsed document (a routes directory's YAML).
    Value(Value),
}

impl From<JsonObject> for Object {
    fn from(o: JsonObject) -> Self {
        Object::Json(o)
    }
}

impl From<Value> for Object {
    fn from(v: Value) -> Self {
        Object::Value(v)
    }
}

impl SourceObject for Object {
    fn identify(&self, kind: ObjectKind) -> Result<(ObjectKey, ResourceVersion), FieldError> {
        match self {
            Object::Json(o) => o.identify(kind),
            Object::Value(v) => v.identify(kind),
        }
    }

    fn compile(self, kind: ObjectKind) -> Result<routing::Route, Vec<FieldError>> {
        match self {
            Object::Json(o) => o.compile(kind),
            Object::Value(v) => v.compile(kind),
        }
    }
}

/// What a source tells the writer.
#[derive(Debug)]
pub(crate) enum Event {
    /// A complete listing of the kind begins (a watch's (re)list, a resync
    /// list, a directory's first scan), read at this resourceVersion.
    Init(ObjectKind, Option<ResourceVersion>),
    /// One object of the listing: applied at once if it differs from the
    /// index (the listing is never held whole).
    InitApply(ObjectKind, Object),
    /// The listing is complete: the index drops what it lacked (except
    /// where it holds something newer). The kind is complete from now on.
    InitDone(ObjectKind),
    /// An object added or changed.
    Apply(ObjectKind, Object),
    /// An object gone, with the resourceVersion of its deletion when known.
    Delete(ObjectKey, Option<ResourceVersion>),
    /// The source confirmed the kind is current (a `304` to a conditional
    /// list, a digest that matched): nothing to apply.
    Current,
}

/// The writer: the index, the table it publishes, and the source-neutral
/// bookkeeping (which kinds are complete, the newest listing per kind).
#[derive(Debug)]
pub(crate) struct Writer {
    state: Mutex<State>,
    table: Arc<SharedTable>,
    metrics: SyncMetrics,
}

#[derive(Debug, Default)]
struct State {
    index: RouteIndex,
    /// Per kind (`ObjectKind::slot`): a complete listing was applied.
    complete: [bool; 2],
    /// Per kind: the listing being received (between `Init` and `InitDone`).
    listing: [Option<Listing>; 2],
    /// Per kind: the resourceVersion of the newest listing applied.
    listed_rv: [u64; 2],
}

impl Writer {
    pub(crate) fn new(table: Arc<SharedTable>, metrics: SyncMetrics) -> Writer {
        Writer {
            state: Mutex::new(State::default()),
            table,
            metrics,
        }
    }

    /// Opens a batch: events apply in order; the table is published once,
    /// when the batch is dropped. Do not hold it across an await.
    pub(crate) fn batch(&self) -> Batch<'_> {
        Batch {
            state: self.state.lock(),
            writer: self,
        }
    }

    /// Version of the table being served (for outage logs).
    pub(crate) fn table_version(&self) -> u64 {
        self.table.load().version()
    }
}

/// A batch of events under the writer's lock (see [`Writer::batch`]).
pub(crate) struct Batch<'a> {
    state: MutexGuard<'a, State>,
    writer: &'a Writer,
}

impl Batch<'_> {
    /// Applies one event; returns how many objects it added, changed or
    /// removed (a listing counts its differences when it is done).
    pub(crate) fn apply(&mut self, event: Event) -> usize {
        let st = &mut *self.state;
        match event {
            Event::Init(kind, rv) => {
                st.listing[kind.slot()] = Some(Listing::new(kind, rv));
                0
            }
            Event::InitApply(kind, object) => {
                let listing =
                    st.listing[kind.slot()].get_or_insert_with(|| Listing::new(kind, None));
                st.index.listing_item(listing, object);
                0
            }
            Event::InitDone(kind) => {
                let listing = st.listing[kind.slot()]
                    .take()
                    .unwrap_or_else(|| Listing::new(kind, None));
                if let Ok(r) = listing.resource_version().as_str().parse::<u64>() {
                    let slot = &mut st.listed_rv[kind.slot()];
                    *slot = (*slot).max(r);
                }
                let result = st.index.finish_listing(listing);
                report_invalid(&self.writer.metrics, kind, result.invalid);
                st.complete[kind.slot()] = true;
                touch(&self.writer.metrics);
                result.changes
            }
            Event::Apply(kind, object) => match st.index.apply(kind, object) {
                Outcome::Changed => 1,
                Outcome::Unchanged => 0,
                Outcome::Invalid(errors) => {
                    report_invalid(&self.writer.metrics, kind, errors);
                    0
                }
            },
            Event::Delete(key, rv) => usize::from(st.index.delete(&key, rv) == Outcome::Changed),
            Event::Current => {
                touch(&self.writer.metrics);
                0
            }
        }
    }

    /// A complete listing in one call: `Init`, an `InitApply` per item,
    /// `InitDone`. Returns the number of differences it repaired.
    pub(crate) fn list(
        &mut self,
        kind: ObjectKind,
        items: impl IntoIterator<Item = impl Into<Object>>,
        rv: Option<ResourceVersion>,
    ) -> usize {
        self.apply(Event::Init(kind, rv));
        for item in items {
            self.apply(Event::InitApply(kind, item.into()));
        }
        self.apply(Event::InitDone(kind))
    }

    /// Whether a complete listing of `kind` was applied.
    pub(crate) fn is_complete(&self, kind: ObjectKind) -> bool {
        self.state.complete[kind.slot()]
    }

    /// The content digest of what the index holds of `kind`
    /// ([`wire::digest`]), once it is complete.
    pub(crate) fn digest(&self, kind: ObjectKind) -> Option<u64> {
        self.is_complete(kind)
            .then(|| self.state.index.digest(kind))
    }

    /// The resourceVersion of the newest listing of `kind` applied.
    pub(crate) fn listed_rv(&self, kind: ObjectKind) -> u64 {
        self.state.listed_rv[kind.slot()]
    }

    /// The index (read-only: for a source comparing a listing with it).
    pub(crate) fn index(&self) -> &RouteIndex {
        &self.state.index
    }
}

impl Drop for Batch<'_> {
    /// Publishes what the batch changed, and marks the table ready once
    /// every kind is complete.
    fn drop(&mut self) {
        let (index, complete) = (&self.state.index, self.state.complete);
        let Writer { table, metrics, .. } = self.writer;
        if index.table().version() != table.load().version() {
            let t = index.table().clone();
            metrics.table_version.set(t.version() as i64);
            metrics.table_routes.set(t.len() as i64);
            table.publish(t);
        }
        if !table.is_ready() && complete.iter().all(|c| *c) {
            let t = table.load();
            info!(
                routes = t.len(),
                version = t.version(),
                "routing table complete; ready"
            );
            table.mark_ready();
        }
    }
}

fn report_invalid(metrics: &SyncMetrics, kind: ObjectKind, errors: Vec<FieldError>) {
    if errors.is_empty() {
        return;
    }
    let label = SyncMetrics::label(kind.resource());
    for err in errors {
        metrics.invalid_objects.get_or_create(&label).inc();
        warn!(kind = kind.kind(), error = %err, "invalid object skipped");
    }
}

/// The table was just confirmed (or made) equal to the source.
fn touch(metrics: &SyncMetrics) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    metrics.last_sync_timestamp_seconds.set(now);
}
