//! Serve the Kubernetes list/watch HTTP protocol from an in-memory,
//! versioned object store.
//!
//! The protocol's shared pieces (the content digest, its annotation, the
//! `Status` object, event types) come from the `wire` crate, which the
//! clients (`kubewatch`) read with too; this crate is only the server.
//!
//! Two servers are built on this crate: `testkit` (a writable fake API
//! server for tests) and the `cache` tier (a read-only mirror of an upstream
//! API server that fans out to thousands of subscribers). To clients such as
//! kube-rs's `watcher` or `kubectl get -w` both look like kube-apiserver.
//!
//! # How data enters
//! One [`Store`] per group/version/resource (kept together in [`Stores`]).
//! The writer assigns every resourceVersion itself: testkit from one global
//! counter (like etcd's revision), the cache from upstream's events.
//! - [`Store::apply`]`(object, rv)`: create or replace (an ADDED or MODIFIED event);
//! - [`Store::delete`]`(namespace, name, rv)`: a DELETED event;
//! - [`Store::replace_all`]`(objects, rv)`: a relist; the difference is emitted
//!   as events, so watchers carry on without relisting;
//! - [`Store::advance`]`(rv)`: progress without a change (carried by bookmarks).
//!
//! Each object is encoded to JSON once when written ([`StoredObject`]); each
//! change is encoded once as a watch line and kept in a bounded history
//! ([`StoreConfig::history`]) for watches that resume from an older
//! resourceVersion.
//!
//! # How data leaves
//! [`ListWatch`] answers HTTP `GET`s (hyper 1; body type [`Body`]):
//! - lists: `resourceVersion` unset / `0` / `N` with
//!   `resourceVersionMatch=NotOlderThan|Exact`, `labelSelector`,
//!   `fieldSelector` (`metadata.name`, `metadata.namespace`), `limit` +
//!   `continue` (pages read one consistent snapshot), `ETag: "<rv>"` and
//!   `If-None-Match` -> `304`; `If-None-Match` may also carry a content
//!   digest (`"d<hex>"`, [`wire::digest`]) of what the client holds, and
//!   is `304` when the list would contain exactly that. The whole,
//!   unfiltered list is encoded once per resourceVersion and the same bytes
//!   go to every client.
//! - watches (`watch=1`): from `resourceVersion=N` (changes after N), from `0`
//!   or unset (synthetic ADDED for current objects first), streaming lists
//!   (`sendInitialEvents=true`: ADDED for current objects, then a BOOKMARK
//!   annotated `k8s.io/initial-events-end`), `allowWatchBookmarks`,
//!   `timeoutSeconds`, selectors (an object that stops matching is sent as
//!   DELETED, one that starts matching as ADDED). Bookmarks come from one
//!   clock per handler through each store's fan-out ring (not a timer per
//!   watcher) and carry, in the annotation [`wire::digest::ANNOTATION`], the
//!   content digest of the watch's view at the bookmark's resourceVersion:
//!   a client that holds the same digest is up to date without a list; one
//!   that lost an event sees a difference (after a change the clock's next
//!   tick comes within [`HandlerConfig::burst_bookmark_delay`], so it learns
//!   it quickly). On a watch of the whole resource each event carries the
//!   store's digest after it too, as the event field of the same name
//!   (clients that do not know it ignore it), and the watcher skips the
//!   next tick if it comes within half an interval: while writes keep
//!   coming, a write costs one message per watcher, not an event and a
//!   bookmark. A watcher that dropped an event (a fault policy) still gets
//!   the bookmark. A resourceVersion older than
//!   the history gets `200` with one `ERROR` event (a `410 Expired` Status), as
//!   kube-apiserver does; kube-rs's watcher then relists.
//! - errors are `Status` objects ([`wire::Status`]; [`status_json`],
//!   [`status_response`]).
//! - discovery documents (`/api`, `/apis`, `/apis/<g>/<v>`, `/version`)
//!   come from a [`Discovery`] of [`ResourceDef`]s, whose identities come
//!   from the types' `kube::Resource` impls.
//!
//! # Fan-out
//! Each store has one bounded `tokio::sync::broadcast` ring of `Arc`'d
//! changes ([`StoreConfig::fanout_capacity`]). Each watch is a task that reads
//! the ring, picks the pre-encoded line (a `Bytes` refcount, never a
//! re-encoding) and forwards it into a small per-watch channel
//! ([`HandlerConfig::watch_buffer`]) that feeds the response body. A slow
//! client fills its channel, its task stops reading the ring, and once the
//! ring overtakes it (`Lagged`) the watch is closed: the writer never waits
//! for a watcher, other watchers are not delayed, and memory per watcher is
//! bounded by its channel plus socket buffers. The closed client resumes from
//! its last resourceVersion (served from history) or relists.
//! We chose closing over replaying from history on lag so that a watcher that
//! cannot keep up is shed rather than kept at the edge of the ring.

mod body;
mod discovery;
mod handler;
mod path;
mod selector;
mod status;
mod store;
mod tick;

pub use body::Body;
pub use discovery::{Access, Discovery, ResourceDef, Scope};
pub use handler::{
    HandlerConfig, ListWatch, ListWatchQuery, WatchPolicy, expired_event, expired_watch_response,
};
pub use path::{Gvr, ResourcePath, parse_path, version_priority};
pub use selector::{FieldSelector, LabelSelector, SelectorError};
pub use status::{Reason, json_response, status_json, status_json_with_code, status_response};
pub use store::{
    EventType, ReplaceSummary, ResourceType, Snapshot, Store, StoreConfig, StoreError,
    StoredObject, Stores,
};
