//! The versioned object store behind one resource, and a set of them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use imbl::OrdMap;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tokio::sync::{broadcast, watch};

pub use wire::EventType;

use crate::path::Gvr;

/// What a [`Store`] serves: a resource and the names its objects carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// Group, version and plural name.
    pub gvr: Gvr,
    /// Kind of the objects, e.g. `HTTPScaledObject`.
    pub kind: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl ResourceType {
    /// Builds a resource type.
    pub fn new(group: &str, version: &str, resource: &str, kind: &str, namespaced: bool) -> Self {
        ResourceType {
            gvr: Gvr::new(group, version, resource),
            kind: kind.to_owned(),
            namespaced,
        }
    }

    /// `group/version` (or `v1` for core).
    pub fn api_version(&self) -> String {
        self.gvr.api_version()
    }
}

/// Sizes of a [`Store`]'s buffers.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// How many past events are kept so watches can resume from an older
    /// resourceVersion; a watch from before them gets `410 Expired`.
    pub history: usize,
    /// Capacity of the fan-out ring shared by all watchers. A watcher that
    /// falls this many events behind is closed (its client resumes or relists).
    pub fanout_capacity: usize,
    /// How many list snapshots are kept for `continue` tokens and
    /// `resourceVersionMatch=Exact`. Snapshots share structure, so they are cheap.
    pub list_snapshots: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history: 1000,
            fanout_capacity: 1024,
            list_snapshots: 16,
        }
    }
}

/// A write that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The object is not a JSON object with `metadata.name`.
    #[error("object has no metadata.name")]
    MissingName,
    /// A namespaced resource's object has no `metadata.namespace`.
    #[error("object {0:?} has no metadata.namespace")]
    MissingNamespace(String),
    /// Writes must carry increasing resourceVersions.
    #[error("resourceVersion {rv} is not newer than the store's {current}")]
    NotNewer {
        /// The rejected resourceVersion.
        rv: u64,
        /// The store's resourceVersion.
        current: u64,
    },
    /// The object could not be encoded.
    #[error("cannot encode object: {0}")]
    Encode(String),
}

/// One stored object: its JSON encoding plus the metadata needed to index
/// and filter it. Immutable; shared by the store, lists and events.
#[derive(Debug)]
pub struct StoredObject {
    namespace: String,
    name: String,
    resource_version: u64,
    labels: BTreeMap<String, String>,
    json: Bytes,
    /// This object's share of a content digest ([`wire::digest::object_hash`]).
    content_hash: u64,
    added_line: OnceLock<Bytes>,
    deleted_line: OnceLock<Bytes>,
    metadata_json: OnceLock<Bytes>,
}

impl StoredObject {
    fn from_value(v: &Value, resource: &ResourceType, rv: u64) -> Result<Self, StoreError> {
        let meta = v.get("metadata").ok_or(StoreError::MissingName)?;
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or(StoreError::MissingName)?
            .to_owned();
        let namespace = if resource.namespaced {
            meta.get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| StoreError::MissingNamespace(name.clone()))?
                .to_owned()
        } else {
            String::new()
        };
        let labels = meta
            .get("labels")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let json = serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))?;
        Ok(StoredObject {
            content_hash: wire::digest::object_hash(&namespace, &name, &rv.to_string()),
            namespace,
            name,
            resource_version: rv,
            labels,
            json: Bytes::from(json),
            added_line: OnceLock::new(),
            deleted_line: OnceLock::new(),
            metadata_json: OnceLock::new(),
        })
    }

    /// Namespace (empty for cluster-scoped resources).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's `metadata.resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// Labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// The object's JSON encoding (with apiVersion, kind and resourceVersion).
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// This object's term of a content digest (a digest is the wrapping
    /// sum of these, truncated to 48 bits: [`wire::digest::from_sum`]).
    pub(crate) fn content_hash(&self) -> u64 {
        self.content_hash
    }

    /// Decodes the object.
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    pub(crate) fn added_line(&self) -> Bytes {
        self.added_line
            .get_or_init(|| event_line(EventType::Added, &self.json))
            .clone()
    }

    /// The object reduced to its metadata (kind `PartialObjectMetadata`),
    /// for a metadata-only list; encoded once.
    pub fn metadata_json(&self) -> &Bytes {
        self.metadata_json
            .get_or_init(|| metadata_object(&self.json))
    }

    pub(crate) fn deleted_line(&self) -> Bytes {
        self.deleted_line
            .get_or_init(|| event_line(EventType::Deleted, &self.json))
            .clone()
    }
}

/// `json` as a `PartialObjectMetadata`: the object's `metadata`, as the
/// API server serves it in a metadata-only list.
fn metadata_object(json: &[u8]) -> Bytes {
    #[derive(serde::Deserialize)]
    struct Meta<'a> {
        #[serde(borrow)]
        metadata: Option<&'a serde_json::value::RawValue>,
    }
    let meta = serde_json::from_slice::<Meta<'_>>(json)
        .ok()
        .and_then(|m| m.metadata)
        .map_or("{}", |m| m.get());
    let mut b = BytesMut::with_capacity(meta.len() + 72);
    b.put_slice(
        b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":",
    );
    b.put_slice(meta.as_bytes());
    b.put_u8(b'}');
    b.freeze()
}

fn event_line(t: EventType, json: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(json.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(t.as_str().as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(json);
    b.put_slice(b"}\n");
    b.freeze()
}

/// A change in the store: encoded once, shared by every watcher.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) kind: EventType,
    /// The new state (or, for deletes, the last state stamped with the delete's rv).
    pub(crate) object: Arc<StoredObject>,
    /// The previous state, for modifications (selector transitions).
    pub(crate) previous: Option<Arc<StoredObject>>,
    /// `{"type":..,"object":..}\n`
    pub(crate) line: Bytes,
    /// The same line with the content digest of the whole store after this
    /// change ([`wire::digest::ANNOTATION`] as a field of the event), for watchers
    /// that see the whole store; `None` for all but the last change of a
    /// relist (the store's digest between them is not computed).
    pub(crate) digest_line: Option<Bytes>,
}

/// `line` (`{..}\n`) with `,"<wire::digest::ANNOTATION>":"d<12 hex>"` before its
/// closing brace. Kubernetes clients ignore unknown fields of a watch
/// event; ours read it as a BOOKMARK's digest that comes with the event.
pub(crate) fn digested_line(line: &[u8], digest_sum: u64) -> Bytes {
    let body = line.strip_suffix(b"}\n").unwrap_or(line);
    let annotation = wire::digest::ANNOTATION;
    let mut b = BytesMut::with_capacity(body.len() + annotation.len() + 24);
    b.put_slice(body);
    b.put_slice(b",\"");
    b.put_slice(annotation.as_bytes());
    b.put_slice(format!("\":\"{}\"}}\n", wire::digest::Token(digest_sum)).as_bytes());
    b.freeze()
}

/// What goes through the fan-out ring.
#[derive(Debug, Clone)]
pub(crate) enum Message {
    Change(Arc<Change>),
    /// The store's resourceVersion moved without a change.
    Progress(u64),
    /// Time for a BOOKMARK (the handler's one clock, see `crate::tick`).
    Tick,
    /// Close every watcher now.
    CloseAll,
}

pub(crate) type ObjectKey = (String, String);

/// An immutable view of a store's objects at one resourceVersion
/// (cloning is O(1): the map is persistent).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The store's resourceVersion when the snapshot was taken.
    pub resource_version: u64,
    pub(crate) objects: OrdMap<ObjectKey, Arc<StoredObject>>,
    /// Wrapping sum of the objects' content hashes.
    pub(crate) digest_sum: u64,
}

impl Snapshot {
    /// Number of objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Objects in (namespace, name) order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<StoredObject>> {
        self.objects.values()
    }

    /// The content digest ([`wire::digest`]) of all its objects (O(1): the
    /// store keeps the sum up to date per write).
    pub fn content_digest(&self) -> u64 {
        wire::digest::from_sum(self.digest_sum)
    }
}

struct State {
    objects: OrdMap<ObjectKey, Arc<StoredObject>>,
    /// Wrapping sum of `objects`' content hashes.
    digest_sum: u64,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    /// Watches from a resourceVersion at or after this can be served from `history`.
    compacted_rv: u64,
    snapshots: VecDeque<Snapshot>,
}

pub(crate) struct Inner {
    pub(crate) resource: ResourceType,
    config: StoreConfig,
    state: RwLock<State>,
    pub(crate) tx: broadcast::Sender<Message>,
    rv_tx: watch::Sender<u64>,
    watchers: AtomicUsize,
    pub(crate) full_list: tokio::sync::Mutex<Option<(u64, Bytes)>>,
    /// The last BOOKMARK line: (resourceVersion, digest or none, line).
    bookmark: Mutex<Option<(u64, Option<u64>, Bytes)>>,
    /// The bookmark clock this store ticks with, told of every write.
    pub(crate) tick: OnceLock<Arc<crate::tick::TickSignal>>,
}

/// The versioned store of one resource's objects.
///
/// Writers call [`apply`](Store::apply), [`delete`](Store::delete),
/// [`replace_all`](Store::replace_all) and [`advance`](Store::advance) with
/// resourceVersions they assign (a global counter in testkit, upstream's in
/// the cache); readers are the HTTP handler's lists and watches. Cloning is
/// cheap (an `Arc`).
///
/// ```
/// use listwatch::{ResourceType, Store, StoreConfig};
/// let store = Store::new(ResourceType::new("", "v1", "configmaps", "ConfigMap", true), StoreConfig::default(), 0);
/// store.apply(serde_json::json!({"metadata": {"name": "a", "namespace": "default"}}), 1).unwrap();
/// assert_eq!(store.resource_version(), 1);
/// assert_eq!(store.get("default", "a").unwrap().resource_version(), 1);
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("resource", &self.inner.resource.gvr)
            .field("resource_version", &self.resource_version())
            .finish()
    }
}

/// How many objects a [`Store::replace_all`] added, modified and deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaceSummary {
    /// New objects.
    pub added: usize,
    /// Changed objects.
    pub modified: usize,
    /// Removed objects.
    pub deleted: usize,
}

/// Where a new watch starts.
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for the current objects, then changes.
    CurrentState,
    /// Changes after this resourceVersion.
    After(u64),
    /// Only changes from now on.
    Now,
}

/// A registered watcher: events it must send first, then the live ring.
pub(crate) struct Subscription {
    pub(crate) rx: broadcast::Receiver<Message>,
    pub(crate) initial: Vec<Arc<StoredObject>>,
    pub(crate) replay: Vec<Arc<Change>>,
    /// The store's resourceVersion at subscription time.
    pub(crate) rv: u64,
    /// The store's objects and digest sum at `rv` (an O(1) copy), from which
    /// a watcher derives the digest of its own view.
    pub(crate) at_rv: Snapshot,
    pub(crate) guard: WatcherGuard,
}

/// Decrements the store's watcher count when a watch ends.
pub(crate) struct WatcherGuard(Arc<Inner>);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A watch asked for a resourceVersion older than the kept history.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TooOld {
    pub(crate) requested: u64,
    pub(crate) oldest: u64,
}

fn set_resource_version(v: &mut Value, rv: u64) {
    if let Some(obj) = v.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
    }
}

fn set_type_meta(v: &mut Value, resource: &ResourceType) {
    if let Some(obj) = v.as_object_mut() {
        if !obj.get("apiVersion").is_some_and(Value::is_string) {
            obj.insert("apiVersion".into(), Value::String(resource.api_version()));
        }
        if !obj.get("kind").is_some_and(Value::is_string) {
            obj.insert("kind".into(), Value::String(resource.kind.clone()));
        }
    }
}

fn key_of(o: &StoredObject) -> ObjectKey {
    (o.namespace.clone(), o.name.clone())
}

impl Store {
    /// An empty store at `resource_version`. Watches from before it get 410.
    ///
    /// A store created at 0 (the cache's case) takes its first write's
    /// resourceVersion as the start of its history.
    pub fn new(resource: ResourceType, config: StoreConfig, resource_version: u64) -> Store {
        let (tx, _) = broadcast::channel(config.fanout_capacity.max(1));
        let (rv_tx, _) = watch::channel(resource_version);
        Store {
            inner: Arc::new(Inner {
                resource,
                config,
                state: RwLock::new(State {
                    objects: OrdMap::new(),
                    digest_sum: 0,
                    rv: resource_version,
                    history: VecDeque::new(),
                    compacted_rv: resource_version,
                    snapshots: VecDeque::new(),
                }),
                tx,
                rv_tx,
                watchers: AtomicUsize::new(0),
                full_list: tokio::sync::Mutex::new(None),
                bookmark: Mutex::new(None),
                tick: OnceLock::new(),
            }),
        }
    }

    /// The resource this store serves.
    pub fn resource(&self) -> &ResourceType {
        &self.inner.resource
    }

    /// The store's current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.state.read().rv
    }

    /// The oldest resourceVersion a watch can resume from.
    pub fn oldest_resource_version(&self) -> u64 {
        self.inner.state.read().compacted_rv
    }

    pub(crate) fn fanout_capacity(&self) -> usize {
        self.inner.config.fanout_capacity.max(1)
    }

    /// The number of open watches on this store.
    pub fn watcher_count(&self) -> usize {
        self.inner.watchers.load(Ordering::Relaxed)
    }

    /// One object, if present.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<StoredObject>> {
        self.inner
            .state
            .read()
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// All objects at the current resourceVersion.
    pub fn snapshot(&self) -> Snapshot {
        let st = self.inner.state.read();
        Snapshot {
            resource_version: st.rv,
            objects: st.objects.clone(),
            digest_sum: st.digest_sum,
        }
    }

    /// A snapshot at exactly `rv`: the current state or a kept list snapshot.
    pub(crate) fn snapshot_at(&self, rv: u64) -> Option<Snapshot> {
        let st = self.inner.state.read();
        if st.rv == rv {
            return Some(Snapshot {
                resource_version: rv,
                objects: st.objects.clone(),
                digest_sum: st.digest_sum,
            });
        }
        st.snapshots
            .iter()
            .find(|s| s.resource_version == rv)
            .cloned()
    }

    /// Keeps `snap` for later pages of a paged list.
    pub(crate) fn remember(&self, snap: &Snapshot) {
        let mut st = self.inner.state.write();
        if st
            .snapshots
            .iter()
            .any(|s| s.resource_version == snap.resource_version)
        {
            return;
        }
        st.snapshots.push_back(snap.clone());
        while st.snapshots.len() > self.inner.config.list_snapshots {
            st.snapshots.pop_front();
        }
    }

    /// Waits until the store reaches `rv`; false on timeout.
    pub async fn wait_for(&self, rv: u64, timeout: Duration) -> bool {
        let mut rx = self.inner.rv_tx.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|cur| *cur >= rv))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    fn check_newer(st: &State, rv: u64) -> Result<(), StoreError> {
        if rv <= st.rv {
            Err(StoreError::NotNewer { rv, current: st.rv })
        } else {
            Ok(())
        }
    }

    fn encode(&self, mut object: Value, rv: u64) -> Result<StoredObject, StoreError> {
        if !object.is_object() {
            return Err(StoreError::MissingName);
        }
        set_type_meta(&mut object, &self.inner.resource);
        set_resource_version(&mut object, rv);
        StoredObject::from_value(&object, &self.inner.resource, rv)
    }

    /// Records `change` (history, ring) and moves the store to `rv`.
    fn publish(&self, st: &mut State, change: Change) {
        let change = Arc::new(change);
        st.history.push_back(change.clone());
        while st.history.len() > self.inner.config.history {
            if let Some(old) = st.history.pop_front() {
                st.compacted_rv = old.rv;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.inner.tx.send(Message::Change(change));
        if let Some(t) = self.inner.tick.get() {
            t.written();
        }
    }

    fn set_rv(&self, st: &mut State, rv: u64) {
        if st.rv == 0 && st.history.is_empty() {
            // A store that starts empty at 0 knows nothing before its first write.
            st.compacted_rv = rv;
        }
        st.rv = rv;
        self.inner.rv_tx.send_replace(rv);
    }

    /// Creates or replaces an object at `rv` (> the store's resourceVersion),
    /// stamping `metadata.resourceVersion` and, if missing, `apiVersion`/`kind`.
    /// Returns whether it was ADDED or MODIFIED.
    pub fn apply(&self, object: Value, rv: u64) -> Result<EventType, StoreError> {
        let obj = Arc::new(self.encode(object, rv)?);
        let mut st = self.inner.state.write();
        Self::check_newer(&st, rv)?;
        let previous = st.objects.insert(key_of(&obj), obj.clone());
        st.digest_sum = st.digest_sum.wrapping_add(obj.content_hash);
        if let Some(p) = &previous {
            st.digest_sum = st.digest_sum.wrapping_sub(p.content_hash);
        }
        let kind = if previous.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        let line = match kind {
            EventType::Added => obj.added_line(),
            _ => event_line(kind, &obj.json),
        };
        self.set_rv(&mut st, rv);
        let digest_line = Some(digested_line(&line, st.digest_sum));
        self.publish(
            &mut st,
            Change {
                rv,
                kind,
                object: obj,
                previous,
                line,
                digest_line,
            },
        );
        Ok(kind)
    }

    /// Removes an object at `rv`. The DELETED event carries its last state
    /// with `metadata.resourceVersion` set to `rv`, which is also returned.
    /// Deleting a missing object changes nothing and returns `None`.
    pub fn delete(
        &self,
        namespace: &str,
        name: &str,
        rv: u64,
    ) -> Result<Option<Arc<StoredObject>>, StoreError> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut st = self.inner.state.write();
        Self::check_newer(&st, rv)?;
        let Some(old) = st.objects.get(&key).cloned() else {
            return Ok(None);
        };
        let gone = Arc::new(self.encode(old.to_value(), rv)?);
        st.objects.remove(&key);
        st.digest_sum = st.digest_sum.wrapping_sub(old.content_hash);
        self.set_rv(&mut st, rv);
        let line = gone.deleted_line();
        let digest_line = Some(digested_line(&line, st.digest_sum));
        self.publish(
            &mut st,
            Change {
                rv,
                kind: EventType::Deleted,
                line,
                object: gone.clone(),
                previous: Some(old),
                digest_line,
            },
        );
        Ok(Some(gone))
    }

    /// Replaces the whole content with `objects` as of `rv` (a relist),
    /// emitting ADDED / MODIFIED / DELETED events for the difference so
    /// watchers continue without relisting. Objects keep their own
    /// `metadata.resourceVersion` when they have a numeric one; the events
    /// are all recorded at `rv`. `rv` may equal the current resourceVersion.
    pub fn replace_all(&self, objects: Vec<Value>, rv: u64) -> Result<ReplaceSummary, StoreError> {
        let mut fresh: OrdMap<ObjectKey, Arc<StoredObject>> = OrdMap::new();
        for mut o in objects {
            if !o.is_object() {
                return Err(StoreError::MissingName);
            }
            set_type_meta(&mut o, &self.inner.resource);
            let own = o
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok());
            let obj_rv = match own {
                Some(r) => r,
                None => {
                    set_resource_version(&mut o, rv);
                    rv
                }
            };
            let so = StoredObject::from_value(&o, &self.inner.resource, obj_rv)?;
            fresh.insert(key_of(&so), Arc::new(so));
        }
        let mut st = self.inner.state.write();
        if rv < st.rv {
            return Err(StoreError::NotNewer { rv, current: st.rv });
        }
        let mut summary = ReplaceSummary::default();
        let mut changes = Vec::new();
        let mut merged = fresh.clone();
        for (key, new) in fresh.iter() {
            match st.objects.get(key) {
                Some(old) if old.json == new.json => {
                    // Unchanged: keep the shared encoding.
                    merged.insert(key.clone(), old.clone());
                }
                Some(old) => {
                    summary.modified += 1;
                    changes.push(Change {
                        rv,
                        kind: EventType::Modified,
                        line: event_line(EventType::Modified, &new.json),
                        object: new.clone(),
                        previous: Some(old.clone()),
                        digest_line: None,
                    });
                }
                None => {
                    summary.added += 1;
                    changes.push(Change {
                        rv,
                        kind: EventType::Added,
                        line: new.added_line(),
                        object: new.clone(),
                        previous: None,
                        digest_line: None,
                    });
                }
            }
        }
        for (key, old) in st.objects.iter() {
            if !fresh.contains_key(key) {
                summary.deleted += 1;
                let gone = Arc::new(self.encode(old.to_value(), rv)?);
                changes.push(Change {
                    rv,
                    kind: EventType::Deleted,
                    line: gone.deleted_line(),
                    object: gone,
                    previous: Some(old.clone()),
                    digest_line: None,
                });
            }
        }
        st.digest_sum = merged
            .values()
            .fold(0u64, |sum, o| sum.wrapping_add(o.content_hash));
        st.objects = merged;
        let moved = rv > st.rv;
        if moved || !changes.is_empty() {
            self.set_rv(&mut st, rv);
        }
        let changed = !changes.is_empty();
        if let Some(last) = changes.last_mut() {
            last.digest_line = Some(digested_line(&last.line, st.digest_sum));
        }
        for c in changes {
            self.publish(&mut st, c);
        }
        if moved && !changed {
            let _ = self.inner.tx.send(Message::Progress(rv));
        }
        Ok(summary)
    }

    /// Moves the store's resourceVersion to `rv` without a change, so
    /// bookmarks carry upstream progress. A `rv` not newer is ignored.
    pub fn advance(&self, rv: u64) {
        let mut st = self.inner.state.write();
        if rv <= st.rv {
            return;
        }
        self.set_rv(&mut st, rv);
        let _ = self.inner.tx.send(Message::Progress(rv));
    }

    /// Ends every open watch on this store now (clients resume or relist).
    pub fn close_watchers(&self) {
        let _st = self.inner.state.write();
        let _ = self.inner.tx.send(Message::CloseAll);
    }

    /// Registers a watcher starting at `start`.
    pub(crate) fn subscribe(&self, start: WatchStart) -> Result<Subscription, TooOld> {
        let st = self.inner.state.read();
        let (initial, replay) = match start {
            WatchStart::CurrentState => (st.objects.values().cloned().collect(), Vec::new()),
            WatchStart::Now => (Vec::new(), Vec::new()),
            WatchStart::After(n) => {
                if n < st.compacted_rv {
                    return Err(TooOld {
                        requested: n,
                        oldest: st.compacted_rv,
                    });
                }
                // History is in rv order; skip what the client has seen.
                let first = st.history.partition_point(|c| c.rv <= n);
                (Vec::new(), st.history.range(first..).cloned().collect())
            }
        };
        // Subscribing under the lock: writers publish under the write lock,
        // so the ring starts exactly after the snapshot / replay.
        let rx = self.inner.tx.subscribe();
        self.inner.watchers.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            rx,
            initial,
            replay,
            rv: st.rv,
            at_rv: Snapshot {
                resource_version: st.rv,
                objects: st.objects.clone(),
                digest_sum: st.digest_sum,
            },
            guard: WatcherGuard(self.inner.clone()),
        })
    }

    /// The BOOKMARK line for `rv` (annotated with `digest` when given),
    /// encoded once per (resourceVersion, digest): every watcher of the
    /// whole resource sends the same bytes.
    pub(crate) fn bookmark_line(&self, rv: u64, digest: Option<u64>) -> Bytes {
        let mut cached = self.inner.bookmark.lock();
        if let Some((r, d, b)) = cached.as_ref()
            && *r == rv
            && *d == digest
        {
            return b.clone();
        }
        let annotation =
            digest.map(|d| (wire::digest::ANNOTATION, wire::digest::Token(d).to_string()));
        let b = bookmark_line(&self.inner.resource, rv, annotation);
        *cached = Some((rv, digest, b.clone()));
        b
    }
}

/// `{"type":"BOOKMARK","object":{"kind":..,"apiVersion":..,"metadata":{"resourceVersion":".."}}}\n`,
/// with one annotation when given.
pub(crate) fn bookmark_line(
    resource: &ResourceType,
    rv: u64,
    annotation: Option<(&str, String)>,
) -> Bytes {
    let mut meta = serde_json::json!({"resourceVersion": rv.to_string()});
    if let Some((k, v)) = annotation {
        meta["annotations"] = serde_json::json!({ k: v });
    }
    let v = serde_json::json!({
        "type": wire::WatchType::Bookmark.as_str(),
        "object": {"kind": resource.kind, "apiVersion": resource.api_version(), "metadata": meta},
    });
    let mut out = serde_json::to_vec(&v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// The stores of many resources, keyed by group/version/resource.
#[derive(Debug, Default)]
pub struct Stores {
    map: RwLock<HashMap<Gvr, Store>>,
}

impl Stores {
    /// An empty set.
    pub fn new() -> Stores {
        Stores::default()
    }

    /// The store for `gvr`, if any.
    pub fn get(&self, gvr: &Gvr) -> Option<Store> {
        self.map.read().get(gvr).cloned()
    }

    /// The store for `gvr`, created with `make` if missing.
    pub fn get_or_insert_with(&self, gvr: &Gvr, make: impl FnOnce() -> Store) -> Store {
        if let Some(s) = self.get(gvr) {
            return s;
        }
        self.map
            .write()
            .entry(gvr.clone())
            .or_insert_with(make)
            .clone()
    }

    /// Adds (or replaces) a store.
    pub fn insert(&self, store: Store) {
        self.map.write().insert(store.resource().gvr.clone(), store);
    }

    /// All stores.
    pub fn all(&self) -> Vec<Store> {
        self.map.read().values().cloned().collect()
    }
}
