//! The routes-directory source: a folder of manifests standing in for a
//! cluster. Every `*.yaml`, `*.yml` and `*.json` file below it (multi-document
//! YAML and `kind: List` included) may hold HTTPScaledObjects,
//! InterceptorRoutes, Services, EndpointSlices and response-body ConfigMaps
//! (labelled `http.keda.sh/response-body: "true"`). File notifications trigger
//! a rescan at once; a periodic rescan (the resync) catches anything a
//! notification missed. A file that fails to parse is reported with its path
//! and line, and its previous good content is kept.
//!
//! The directory keeps no copy of the manifests: the index, the routing table
//! and the ready-cache already hold their compiled forms. Per file it keeps
//! the identity of each object with a hash of its content, so a rescan hands
//! downstream exactly the objects that were added, changed or removed (as
//! [`DirChange`]s), parsing one document at a time.
//!
//! One job per module: this one keeps the scan state ([`RoutesDir`]);
//! `manifest` reads files into objects (streamed, errors with file and
//! line); `task` runs the source (notifications, debounce, resync).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::Value;
use tracing::{debug, warn};

use crate::endpoints::{EndpointsChange, ServiceDef, SliceDef};
use crate::index::{ObjectKey, ObjectKind};

mod manifest;
mod task;

pub use manifest::parse_file;
use manifest::{collect_files, hash_file, open, visit_objects};
pub(crate) use task::run_dir;

/// A manifest file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: {message}")]
pub struct FileError {
    /// The file.
    pub path: String,
    /// 1-based line of the problem (0 when unknown).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One change a scan hands downstream.
#[derive(Debug)]
pub enum DirChange {
    /// An HTTPScaledObject or InterceptorRoute was added or changed (for the
    /// index, with a content-derived resourceVersion).
    Apply(ObjectKind, Value),
    /// An HTTPScaledObject or InterceptorRoute is gone.
    Delete(ObjectKey),
    /// A Service, EndpointSlice or ConfigMap was added, changed or removed.
    Endpoints(EndpointsChange),
}

/// The kinds the directory tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum DirKind {
    Route(ObjectKind),
    Service,
    EndpointSlice,
    ConfigMap,
}

impl DirKind {
    fn from_kind(kind: &str) -> Option<DirKind> {
        match kind {
            "Service" => Some(DirKind::Service),
            "EndpointSlice" => Some(DirKind::EndpointSlice),
            "ConfigMap" => Some(DirKind::ConfigMap),
            k => ObjectKind::from_kind(k).map(DirKind::Route),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            DirKind::Route(k) => k.kind(),
            DirKind::Service => "Service",
            DirKind::EndpointSlice => "EndpointSlice",
            DirKind::ConfigMap => "ConfigMap",
        }
    }
}

/// Identity of an object in the directory. The namespaces are interned.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct DirKey {
    kind: DirKind,
    namespace: Arc<str>,
    name: Arc<str>,
}

impl DirKey {
    fn is(&self, kind: DirKind, namespace: &str, name: &str) -> bool {
        self.kind == kind && *self.namespace == *namespace && *self.name == *name
    }
}

/// One object of a file's last good parse.
#[derive(Debug)]
struct FileObject {
    key: DirKey,
    /// Hash of the object's content.
    hash: u64,
    /// Downstream holds this definition (the first one in path order).
    held: bool,
}

#[derive(Debug)]
struct FileState {
    /// Hash of the file's bytes at its last good parse (0: parse it again).
    hash: u64,
    /// The objects of that parse, in file order.
    objects: Box<[FileObject]>,
}

/// An object's namespace (`default` when absent, as `kubectl apply` would
/// place it) and name (empty when absent).
fn namespace_and_name(obj: &Value) -> (&str, &str) {
    let meta = obj.get("metadata");
    let text = |key: &str| meta.and_then(|m| m.get(key)).and_then(Value::as_str);
    (
        text("namespace").unwrap_or("default"),
        text("name").unwrap_or_default(),
    )
}

/// How long a changed file must have been left alone before its content is
/// taken (see `RoutesDir::still_being_written`).
pub const SETTLE: Duration = Duration::from_millis(100);

/// A file modified more recently than [`SETTLE`] on every scan for this long
/// is taken anyway.
pub const MAX_UNSETTLED: Duration = Duration::from_secs(2);

/// The directory's state, updated incrementally on each scan.
#[derive(Debug, Default)]
pub struct RoutesDir {
    root: PathBuf,
    files: BTreeMap<Arc<Path>, FileState>,
    /// Definitions downstream holds that no file state marks `held` any
    /// more: those of files re-parsed or removed since the last hand-over.
    orphans: Vec<(DirKey, u64)>,
    /// Namespaces, interned: thousands of objects share a handful.
    namespaces: HashSet<Arc<str>>,
    /// Files found empty by the last scan whose objects were kept.
    emptied: HashSet<Arc<Path>>,
    /// Changed files not taken yet because they were still being written
    /// (modified less than [`SETTLE`] ago), with when that was first seen.
    unsettled: HashMap<Arc<Path>, std::time::Instant>,
    /// See [`RoutesDir::settle`]; zero takes every change at once.
    settle: Duration,
    /// Problems seen on the last scan, by file.
    errors: BTreeMap<PathBuf, FileError>,
}

/// One definition of an object, for the hand-over's sort.
struct Entry<'a> {
    key: &'a DirKey,
    /// From `orphans` (else from a file state).
    orphan: bool,
    file: u32,
    index: u32,
    hash: u64,
    held: bool,
}

impl RoutesDir {
    /// A directory not yet scanned.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RoutesDir {
            root: root.into(),
            ..RoutesDir::default()
        }
    }

    /// Leaves a changed file that already had content alone until it has
    /// not been modified for `settle` (the sync loop uses [`SETTLE`]; the
    /// default, zero, takes every change at once).
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// The problems found by the last scan.
    pub fn errors(&self) -> impl Iterator<Item = &FileError> {
        self.errors.values()
    }

    /// True when the last scan left a changed file for later because it was
    /// still being written: scan again after [`SETTLE`].
    pub fn has_unsettled(&self) -> bool {
        !self.unsettled.is_empty()
    }

    /// Whether a changed file is still being written: modified less than
    /// [`SETTLE`] ago (a writer that truncates and then writes, or writes a
    /// large file in pieces, would otherwise have its half-written content
    /// taken for the truth and its other objects deleted). A file that stays
    /// that fresh for [`MAX_UNSETTLED`] (a clock in the future, a file
    /// rewritten without pause) is taken anyway.
    fn still_being_written(&mut self, path: &Arc<Path>, now: std::time::Instant) -> bool {
        if self.settle.is_zero() {
            return false;
        }
        let settle = self.settle;
        let fresh = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                std::time::SystemTime::now()
                    .duration_since(t)
                    .map_or(true, |age| age < settle)
            });
        if !fresh {
            self.unsettled.remove(path);
            return false;
        }
        let since = *self.unsettled.entry(path.clone()).or_insert(now);
        if now.duration_since(since) >= MAX_UNSETTLED {
            self.unsettled.remove(path);
            return false;
        }
        true
    }

    /// Rescans the directory and hands `sink` every object added, changed
    /// or removed since the last scan. Returns true when any file's content
    /// changed (added, edited, removed or renamed), and the problems newly
    /// found. When two files define the same object, the first path in sort
    /// order wins (and a warning is logged).
    pub fn scan(
        &mut self,
        mut sink: impl FnMut(DirChange),
    ) -> Result<(bool, Vec<FileError>), FileError> {
        let mut paths = Vec::new();
        collect_files(&self.root, &mut paths).map_err(|e| FileError {
            path: self.root.display().to_string(),
            line: 0,
            message: format!("cannot read directory: {e}"),
        })?;
        paths.sort();
        let mut changed = false;
        let mut new_errors = Vec::new();
        let mut seen = BTreeMap::new();
        let mut emptied = HashSet::new();
        let scan_started = std::time::Instant::now();
        self.unsettled
            .retain(|p, _| paths.iter().any(|q| q.as_path() == &**p));
        for path in paths {
            let path: Arc<Path> = Arc::from(path);
            // Streamed: an unchanged file costs no buffer of its size.
            let hash = match hash_file(&path) {
                Ok(h) => h,
                Err(e) => {
                    // Keep what we had: the file may be mid-rename.
                    if let Some((path, old)) = self.files.remove_entry(&path) {
                        seen.insert(path, old);
                    }
                    let err = FileError {
                        path: path.display().to_string(),
                        line: 0,
                        message: format!("cannot read: {e}"),
                    };
                    self.note_error(&path, err, &mut new_errors);
                    continue;
                }
            };
            match self.files.remove_entry(&path) {
                Some((path, old)) if old.hash == hash => {
                    self.unsettled.remove(&path);
                    seen.insert(path, old);
                }
                // Changed, but still being written: keep what it held until
                // it has settled (a new file has nothing to lose: taken now).
                Some((path, old)) if self.still_being_written(&path, scan_started) => {
                    seen.insert(path, old);
                }
                // A file that had objects and is now empty is most often
                // being rewritten (truncated, not yet written): keep its
                // content until a second scan finds it still empty.
                Some((path, old))
                    if hash == DefaultHasher::new().finish()
                        && !old.objects.is_empty()
                        && !self.emptied.contains(&path) =>
                {
                    emptied.insert(path.clone());
                    seen.insert(path, old);
                }
                old => match self.parse_keys(&path) {
                    Ok(state) => {
                        if let Some((_, old)) = old {
                            self.orphan(old);
                        }
                        self.errors.remove(&*path);
                        seen.insert(path, state);
                        changed = true;
                    }
                    Err(err) => {
                        // Keep the last good content of this file, if any.
                        if let Some((path, old)) = old {
                            seen.insert(path, old);
                        }
                        self.note_error(&path, err, &mut new_errors);
                    }
                },
            }
        }
        self.emptied = emptied;
        // What is left was deleted (or renamed away).
        for (_, old) in std::mem::take(&mut self.files) {
            self.orphan(old);
            changed = true;
        }
        self.errors
            .retain(|p, _| seen.contains_key(p.as_path()) || p.exists());
        self.files = seen;
        if changed || !self.orphans.is_empty() {
            self.hand_over(&mut sink);
        }
        Ok((changed, new_errors))
    }

    /// Remembers what downstream holds from a file state being dropped.
    fn orphan(&mut self, state: FileState) {
        self.orphans.extend(
            state
                .objects
                .into_vec()
                .into_iter()
                .filter(|o| o.held)
                .map(|o| (o.key, o.hash)),
        );
    }

    fn note_error(&mut self, path: &Path, err: FileError, new_errors: &mut Vec<FileError>) {
        if self.errors.get(path) != Some(&err) {
            new_errors.push(err.clone());
        }
        self.errors.insert(path.to_path_buf(), err);
    }

    /// Pass one over a changed file: every object's identity and content
    /// hash, one document at a time, nothing else kept.
    fn parse_keys(&mut self, path: &Path) -> Result<FileState, FileError> {
        let mut objects = Vec::new();
        let file = open(path)?;
        let hash = visit_objects(path, file, &mut |obj, hash| {
            let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
            let Some(kind) = DirKind::from_kind(kind) else {
                debug!(path = %path.display(), kind, "ignoring object of another kind");
                return;
            };
            let (namespace, name) = namespace_and_name(&obj);
            let namespace = match self.namespaces.get(namespace) {
                Some(ns) => ns.clone(),
                None => {
                    let ns: Arc<str> = Arc::from(namespace);
                    self.namespaces.insert(ns.clone());
                    ns
                }
            };
            let key = DirKey {
                kind,
                namespace,
                name: Arc::from(name),
            };
            objects.push(FileObject {
                key,
                hash,
                held: false,
            });
        })?;
        Ok(FileState {
            hash,
            objects: objects.into_boxed_slice(),
        })
    }

    /// Compares what the files define now with what downstream holds, and
    /// hands over the difference: removals first, then every new or changed
    /// object, read again from its file (pass two). Sorting every definition
    /// by key finds both without a map of all objects.
    fn hand_over(&mut self, sink: &mut impl FnMut(DirChange)) {
        let orphans = std::mem::take(&mut self.orphans);
        let paths: Vec<Arc<Path>> = self.files.keys().cloned().collect();
        let mut set_held: Vec<(u32, u32)> = Vec::new();
        let mut clear_held: Vec<(u32, u32)> = Vec::new();
        // (file, index, hash downstream holds for the key, if any)
        let mut to_apply: Vec<(u32, u32, Option<u64>)> = Vec::new();
        {
            let total = self.files.values().map(|f| f.objects.len()).sum::<usize>();
            let mut entries: Vec<Entry<'_>> = Vec::with_capacity(total + orphans.len());
            for (file, state) in self.files.values().enumerate() {
                for (index, o) in state.objects.iter().enumerate() {
                    entries.push(Entry {
                        key: &o.key,
                        orphan: false,
                        file: file as u32,
                        index: index as u32,
                        hash: o.hash,
                        held: o.held,
                    });
                }
            }
            entries.extend(orphans.iter().map(|(key, hash)| Entry {
                key,
                orphan: true,
                file: 0,
                index: 0,
                hash: *hash,
                held: true,
            }));
            // Per key: file definitions in path and file order, then orphans.
            entries.sort_unstable_by(|a, b| {
                (a.key, a.orphan, a.file, a.index).cmp(&(b.key, b.orphan, b.file, b.index))
            });
            for group in entries.chunk_by(|a, b| a.key == b.key) {
                let key = group[0].key;
                let held = group.iter().find(|e| e.held);
                let Some(winner) = group.first().filter(|e| !e.orphan) else {
                    if held.is_some() {
                        sink(removal(key));
                    }
                    continue;
                };
                for dup in group[1..].iter().filter(|e| !e.orphan) {
                    warn!(
                        kind = key.kind.as_str(),
                        object = %format!("{}/{}", key.namespace, key.name),
                        kept = %paths[winner.file as usize].display(),
                        ignored = %paths[dup.file as usize].display(),
                        "object defined twice in the routes directory"
                    );
                }
                if let Some(h) =
                    held.filter(|h| !h.orphan && (h.file, h.index) != (winner.file, winner.index))
                {
                    clear_held.push((h.file, h.index));
                }
                match held {
                    // Same content (possibly moved to another file): nothing to do.
                    Some(h) if h.hash == winner.hash => set_held.push((winner.file, winner.index)),
                    _ => to_apply.push((winner.file, winner.index, held.map(|h| h.hash))),
                }
            }
        }
        drop(orphans);
        let mut states: Vec<&mut FileState> = self.files.values_mut().collect();
        for (file, index) in clear_held {
            states[file as usize].objects[index as usize].held = false;
        }
        for (file, index) in set_held {
            states[file as usize].objects[index as usize].held = true;
        }
        drop(states);
        to_apply.sort_unstable();
        for items in to_apply.chunk_by(|a, b| a.0 == b.0) {
            self.apply_from(&paths[items[0].0 as usize], items, sink);
        }
    }

    /// Pass two over one file: hands over its objects at the given indexes
    /// (sorted), marking them held. If the file changed since pass one, what
    /// was not handed over stays an orphan and the file is parsed again on
    /// the next scan.
    fn apply_from(
        &mut self,
        path: &Arc<Path>,
        items: &[(u32, u32, Option<u64>)],
        sink: &mut impl FnMut(DirChange),
    ) {
        let Some(state) = self.files.get_mut(&**path) else {
            return;
        };
        let expected = state.hash;
        let objects = &mut state.objects;
        let mut next = items.iter().peekable();
        let mut index = 0u32;
        let parsed = open(path).and_then(|file| {
            visit_objects(path, file, &mut |obj, hash| {
                // Numbered as pass one did: the kinds the directory tracks.
                let Some(kind) = obj
                    .get("kind")
                    .and_then(Value::as_str)
                    .and_then(DirKind::from_kind)
                else {
                    return;
                };
                let at = index;
                index += 1;
                if next.peek().is_none_or(|item| item.1 != at) {
                    return;
                }
                next.next();
                let Some(o) = objects.get_mut(at as usize) else {
                    return;
                };
                let (namespace, name) = namespace_and_name(&obj);
                let same = o.key.is(kind, namespace, name) && o.hash == hash;
                if !same {
                    return; // not what pass one saw at this place
                }
                o.held = true;
                sink(addition(&o.key, obj, path));
            })
        });
        let complete = parsed.is_ok_and(|h| h == expected);
        for &(_, at, held_hash) in items {
            let o = &self.files[&**path].objects[at as usize];
            if let (false, Some(h)) = (o.held, held_hash) {
                self.orphans.push((o.key.clone(), h));
            }
        }
        if !complete {
            self.forget_hash(path);
        }
    }

    fn forget_hash(&mut self, path: &Path) {
        if let Some(state) = self.files.get_mut(path) {
            state.hash = 0;
        }
    }
}

/// The change that removes `key` downstream.
fn removal(key: &DirKey) -> DirChange {
    let (namespace, name) = (key.namespace.to_string(), key.name.to_string());
    match key.kind {
        DirKind::Route(kind) => DirChange::Delete(ObjectKey {
            kind,
            namespace,
            name,
        }),
        DirKind::Service => {
            DirChange::Endpoints(EndpointsChange::DeleteService { namespace, name })
        }
        DirKind::EndpointSlice => {
            DirChange::Endpoints(EndpointsChange::DeleteSlice { namespace, name })
        }
        DirKind::ConfigMap => {
            DirChange::Endpoints(EndpointsChange::DeleteConfigMap { namespace, name })
        }
    }
}

/// The change that applies `obj` (of `key`) downstream. A Service,
/// EndpointSlice or ConfigMap that does not decode is skipped with a
/// warning, and any earlier version of it removed (a ConfigMap without the
/// response-body label is not kept, as in a cluster).
fn addition(key: &DirKey, obj: Value, path: &Path) -> DirChange {
    let change = match key.kind {
        DirKind::Route(kind) => return DirChange::Apply(kind, obj),
        DirKind::Service => decode::<Service>(obj, path)
            .and_then(|s| ServiceDef::from_service(&s))
            .map(EndpointsChange::PutService),
        DirKind::EndpointSlice => decode::<EndpointSlice>(obj, path)
            .and_then(|s| SliceDef::from_slice(&s))
            .map(EndpointsChange::PutSlice),
        DirKind::ConfigMap => decode::<ConfigMap>(obj, path).map(|mut cm| {
            // The namespace as the directory reads it (absent: `default`).
            cm.metadata.namespace = Some(key.namespace.to_string());
            EndpointsChange::ApplyConfigMap(Box::new(cm))
        }),
    };
    change.map_or_else(|| removal(key), DirChange::Endpoints)
}

/// `obj` as a `K`, or `None` with a warning naming the file.
fn decode<K: k8s_openapi::Resource + serde::de::DeserializeOwned>(
    obj: Value,
    path: &Path,
) -> Option<K> {
    serde_json::from_value(obj)
        .inspect_err(|e| warn!(path = %path.display(), error = %e, "invalid {} skipped", K::KIND))
        .ok()
}
