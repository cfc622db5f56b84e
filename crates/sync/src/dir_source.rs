//! The routes-directory source: a folder of manifests standing in for a
//! cluster. Every `*.yaml`, `*.yml` and `*.json` file below it (multi-document
//! YAML and `kind: List` included) may hold HTTPScaledObjects,
//! InterceptorRoutes, Services and EndpointSlices. File notifications trigger
//! a rescan at once; a periodic rescan (the resync) catches anything a
//! notification missed. A file that fails to parse is reported with its path
//! and line, and its previous good content is kept.
//!
//! The directory keeps no copy of the manifests: the index, the routing table
//! and the ready-cache already hold their compiled forms. Per file it keeps
//! the identity of each object with a hash of its content, so a rescan hands
//! downstream exactly the objects that were added, changed or removed (as
//! [`DirChange`]s), parsing one document at a time.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use notify::Watcher;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::endpoints::{EndpointsChange, ReadyEndpoints, ServiceDef, SliceDef};
use crate::index::{ObjectKey, ObjectKind};
use crate::metrics::SyncMetrics;
use crate::{Input, SyncConfig};

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
    /// A Service or EndpointSlice was added, changed or removed.
    Endpoints(EndpointsChange),
}

/// The kinds the directory tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum DirKind {
    Route(ObjectKind),
    Service,
    EndpointSlice,
}

impl DirKind {
    fn from_kind(kind: &str) -> Option<DirKind> {
        match kind {
            "Service" => Some(DirKind::Service),
            "EndpointSlice" => Some(DirKind::EndpointSlice),
            k => ObjectKind::from_kind(k).map(DirKind::Route),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            DirKind::Route(k) => k.kind(),
            DirKind::Service => "Service",
            DirKind::EndpointSlice => "EndpointSlice",
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
    }
}

/// The change that applies `obj` (of `key`) downstream. A Service or
/// EndpointSlice that does not decode is skipped with a warning, and any
/// earlier version of it removed.
fn addition(key: &DirKey, obj: Value, path: &Path) -> DirChange {
    match key.kind {
        DirKind::Route(kind) => DirChange::Apply(kind, obj),
        DirKind::Service => match serde_json::from_value::<Service>(obj) {
            Ok(s) => match ServiceDef::from_service(&s) {
                Some(def) => DirChange::Endpoints(EndpointsChange::PutService(def)),
                None => removal(key),
            },
            Err(e) => {
                warn!(path = %path.display(), error = %e, "invalid Service skipped");
                removal(key)
            }
        },
        DirKind::EndpointSlice => match serde_json::from_value::<EndpointSlice>(obj) {
            Ok(s) => match SliceDef::from_slice(&s) {
                Some(def) => DirChange::Endpoints(EndpointsChange::PutSlice(def)),
                None => removal(key),
            },
            Err(e) => {
                warn!(path = %path.display(), error = %e, "invalid EndpointSlice skipped");
                removal(key)
            }
        },
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // editors' swap files, .git, kubectl's hidden dirs
        }
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

fn hash_bytes(b: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

fn open(path: &Path) -> Result<BufReader<File>, FileError> {
    File::open(path).map(BufReader::new).map_err(|e| FileError {
        path: path.display().to_string(),
        line: 0,
        message: format!("cannot read: {e}"),
    })
}

/// The hash [`visit_objects`] returns for the same bytes, read in small
/// pieces (a streaming hasher: the pieces' sizes do not matter).
fn hash_file(path: &Path) -> std::io::Result<u64> {
    let mut file = File::open(path)?;
    let mut h = DefaultHasher::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.write(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Parses one manifest file into its objects (documents; `kind: List` items
/// are flattened). Every object gets a content-derived resourceVersion so the
/// index can tell a changed object from an unchanged one.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<Value>, FileError> {
    let mut out = Vec::new();
    visit_objects(path, bytes, &mut |obj, _| out.push(obj))?;
    Ok(out)
}

/// Calls `f` with every object of a manifest and the hash of the object's
/// content; returns the hash of the manifest's bytes (as [`hash_file`]).
/// Each object gets a content-derived resourceVersion (unless it has one).
/// Stops at the first error.
///
/// YAML is read one document at a time: a file of thousands of objects
/// never exists in memory as a whole, not even as text (a large transient
/// buffer is what the allocator would keep). Lines starting with `---` or
/// `...` end a document; YAML forbids them inside one.
///
/// Hand-written on purpose: `serde-saphyr` reads a whole text (or a reader)
/// into documents but gives no per-document line offsets for a stream, and
/// this splitter is what kept the interceptor's RSS with a 10,000-route file
/// at ~39 MiB instead of ~200 MiB (BENCHMARKS.md, "Memory"); each document it
/// cuts is parsed by the library (`api::yaml`).
fn visit_objects(
    path: &Path,
    mut reader: impl BufRead,
    f: &mut dyn FnMut(Value, u64),
) -> Result<u64, FileError> {
    let error = |line: usize, message: String| FileError {
        path: path.display().to_string(),
        line,
        message,
    };
    let mut emit = |mut obj: Value| {
        let hash = hash_bytes(obj.to_string().as_bytes());
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("resourceVersion")
                .or_insert_with(|| Value::String(format!("f{hash:x}")));
        }
        f(obj, hash);
    };
    let mut hasher = DefaultHasher::new();
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| error(0, format!("cannot read: {e}")))?;
        hasher.write(&bytes);
        let v: Value =
            serde_json::from_slice(&bytes).map_err(|e| error(e.line(), e.to_string()))?;
        drop(bytes);
        flatten(v, 1, path, &mut emit)?;
        return Ok(hasher.finish());
    }
    let mut line = Vec::new();
    let mut doc = Vec::new();
    // 1-based line number of `doc`'s first line, lines read, documents seen.
    let (mut doc_line, mut lines, mut docs) = (1, 0, 0);
    let mut has_content = false;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| error(lines + 1, format!("cannot read: {e}")))?;
        hasher.write(&line);
        let marker = is_document_marker(&line);
        // `---` starts the next document, unless nothing but comments and
        // directives came before it.
        if n == 0 || (marker && line.starts_with(b"---") && has_content) {
            parse_documents(path, &doc, doc_line, &mut docs, &mut emit)?;
            doc.clear();
            has_content = false;
            doc_line = lines + 1;
        }
        if n == 0 {
            return Ok(hasher.finish());
        }
        lines += 1;
        doc.extend_from_slice(&line);
        has_content |= marker || is_content(&line);
        if marker && line.starts_with(b"...") {
            parse_documents(path, &doc, doc_line, &mut docs, &mut emit)?;
            doc.clear();
            has_content = false;
            doc_line = lines + 1;
        }
    }
}

/// `---` or `...` at the start of a line, alone or followed by a space.
fn is_document_marker(line: &[u8]) -> bool {
    (line.starts_with(b"---") || line.starts_with(b"..."))
        && matches!(line.get(3), None | Some(b' ' | b'\t' | b'\r' | b'\n'))
}

/// Not blank, a comment or a directive.
fn is_content(line: &[u8]) -> bool {
    match line.iter().find(|b| !b.is_ascii_whitespace()) {
        None | Some(b'#') => false,
        Some(_) => line[0] != b'%',
    }
}

/// Parses the YAML text of (normally) one document that starts on line
/// `first_line` of the file.
fn parse_documents(
    path: &Path,
    text: &[u8],
    first_line: usize,
    docs: &mut usize,
    emit: &mut dyn FnMut(Value),
) -> Result<(), FileError> {
    let error = |line: usize, message: String| FileError {
        path: path.display().to_string(),
        line,
        message,
    };
    let text = std::str::from_utf8(text).map_err(|e| {
        error(
            first_line - 1 + line_of_offset(text, e.valid_up_to()),
            "not UTF-8".to_string(),
        )
    })?;
    let values = api::yaml::documents(text)
        .map_err(|e| error(e.line.map_or(0, |l| first_line - 1 + l), e.message))?;
    for v in values {
        *docs += 1;
        flatten(v, *docs, path, emit)?;
    }
    Ok(())
}

fn flatten(
    v: Value,
    doc_no: usize,
    path: &Path,
    emit: &mut dyn FnMut(Value),
) -> Result<(), FileError> {
    let error = |message: String| FileError {
        path: path.display().to_string(),
        line: 0,
        message,
    };
    let Value::Object(mut map) = v else {
        return Err(error(format!("document {doc_no} is not an object")));
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k.ends_with("List") && map.contains_key("items") => {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    flatten(item, doc_no, path, emit)?;
                }
            }
            Ok(())
        }
        Some(_) => {
            emit(Value::Object(map));
            Ok(())
        }
        None => Err(error(format!("document {doc_no} has no kind"))),
    }
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Services and EndpointSlices handed to the ready-cache at a time.
const ENDPOINTS_BATCH: usize = 256;

/// Runs the directory source until cancelled: scans on start, on every file
/// notification (debounced) and every resync interval.
pub(crate) async fn run_dir(
    root: PathBuf,
    config: SyncConfig,
    tx: mpsc::Sender<Input>,
    endpoints: Arc<ReadyEndpoints>,
    metrics: SyncMetrics,
    cancel: CancellationToken,
) {
    let (notify_tx, mut notify_rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own rescan reads every file: those access events must not
        // trigger another rescan, or the loop never rests.
        if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = notify_tx.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&root, notify::RecursiveMode::Recursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(dir = %root.display(), error = %e, "file notifications unavailable; relying on the periodic rescan");
            None
        }
    };
    let label = SyncMetrics::label("files");
    let mut dir = RoutesDir::new(root.clone()).settle(SETTLE);
    let mut ticker = tokio::time::interval(config.resync_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut scanning = std::mem::take(&mut dir);
        // Reading and parsing files blocks: off the async workers. Route
        // objects stream to the owner task (which publishes nothing until
        // `DirScanned`); the ready-cache takes the changes in small batches,
        // so that a large scan never holds them all at once.
        let (tx_scan, endpoints_scan) = (tx.clone(), endpoints.clone());
        let scanned = tokio::task::spawn_blocking(move || {
            let mut batch = Vec::new();
            let result = scanning.scan(|change| match change {
                DirChange::Apply(kind, obj) => {
                    let _ = tx_scan.blocking_send(Input::DirApply(kind, obj));
                }
                DirChange::Delete(key) => {
                    let _ = tx_scan.blocking_send(Input::DirDelete(key));
                }
                DirChange::Endpoints(change) => {
                    batch.push(change);
                    if batch.len() == ENDPOINTS_BATCH {
                        endpoints_scan.apply(batch.drain(..));
                    }
                }
            });
            if !batch.is_empty() {
                endpoints_scan.apply(batch);
            }
            (scanning, result)
        })
        .await;
        let (scanned_dir, result) = match scanned {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "routes directory scan panicked");
                return;
            }
        };
        dir = scanned_dir;
        match result {
            Ok((_, new_errors)) => {
                for err in &new_errors {
                    metrics.sync_errors.get_or_create(&label).inc();
                    warn!(error = %err, "manifest file skipped; its last good content is kept");
                }
                endpoints.mark_synced();
                if tx.send(Input::DirScanned).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                metrics.sync_errors.get_or_create(&label).inc();
                warn!(error = %err, "routes directory unreadable; serving the last good table");
            }
        }
        let unsettled = dir.has_unsettled();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
            // A file still being written: look again once it has settled.
            _ = tokio::time::sleep(SETTLE), if unsettled => {}
            Some(()) = notify_rx.recv() => {
                // Let a burst of writes (an editor's save, a `cp -r`) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while notify_rx.try_recv().is_ok() {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole stream parsed at once by the YAML library: what the
    /// per-document reader must reproduce.
    fn whole(text: &str) -> Vec<Value> {
        api::yaml::documents(text).unwrap()
    }

    fn without_rv(mut objects: Vec<Value>) -> Vec<Value> {
        for o in &mut objects {
            o["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("resourceVersion");
        }
        objects
    }

    #[test]
    fn documents_read_one_at_a_time_equal_the_whole_stream() {
        let text = "# leading comment\n%YAML 1.2\n---\nkind: A\nmetadata: {name: a}\n\
                    text: |\n  --- not a marker (indented)\n---\n# between\n\n\
                    kind: B\nmetadata: {name: b}\n...\n---\n--- {kind: C, metadata: {name: c}}\n\
                    ---\r\nkind: D\r\nmetadata: {name: d}\r\nx: ---not-a-marker\r\n---\n";
        let got = parse_file(Path::new("t.yaml"), text.as_bytes()).unwrap();
        assert_eq!(without_rv(got), whole(text));
    }

    #[test]
    fn the_streamed_hash_equals_the_file_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        let text =
            "---\nkind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata: {name: b}\n".repeat(2000);
        std::fs::write(&path, &text).unwrap();
        let streamed = visit_objects(&path, text.as_bytes(), &mut |_, _| {}).unwrap();
        assert_eq!(streamed, hash_file(&path).unwrap());
    }

    #[test]
    fn an_error_in_a_later_document_names_its_line_in_the_file() {
        let text = "kind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata:\n  name: b\n   bad: [\n";
        let err = parse_file(Path::new("t.yaml"), text.as_bytes()).unwrap_err();
        assert!(err.line >= 6, "{err}");
        let err =
            parse_file(Path::new("t.yaml"), b"kind: A\n---\nkind: B\n---\n- 1\n").unwrap_err();
        assert!(err.message.contains("document 3"), "{err}");
    }
}
