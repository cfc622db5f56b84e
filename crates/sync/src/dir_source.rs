//! The routes-directory source: a folder of manifests standing in for a
//! cluster. Every `*.yaml`, `*.yml` and `*.json` file below it (multi-document
//! YAML and `kind: List` included) may hold HTTPScaledObjects,
//! InterceptorRoutes, Services and EndpointSlices. File notifications trigger
//! a rescan at once; a periodic rescan (the resync) catches anything a
//! notification missed. A file that fails to parse is reported with its path
//! and line, and its previous good content is kept.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use notify::Watcher;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::endpoints::{EndpointsChange, ReadyEndpoints};
use crate::index::ObjectKind;
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

#[derive(Debug, Clone)]
struct FileState {
    hash: u64,
    /// The objects of the last good parse.
    objects: Vec<Value>,
}

/// The directory's parsed state, rebuilt incrementally on each scan.
#[derive(Debug, Default)]
pub struct RoutesDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Problems seen on the last scan, by file.
    errors: BTreeMap<PathBuf, FileError>,
}

/// Everything the directory holds, grouped by kind.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DirContents {
    /// HTTPScaledObjects and InterceptorRoutes, by kind.
    pub routes: BTreeMap<ObjectKind, Vec<Value>>,
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
}

impl RoutesDir {
    /// A directory not yet scanned.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RoutesDir {
            root: root.into(),
            ..RoutesDir::default()
        }
    }

    /// The problems found by the last scan.
    pub fn errors(&self) -> impl Iterator<Item = &FileError> {
        self.errors.values()
    }

    /// Rescans the directory. Returns true when any file's content changed
    /// (added, edited, removed or renamed), and the problems newly found.
    pub fn scan(&mut self) -> Result<(bool, Vec<FileError>), FileError> {
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
        for path in paths {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    // Keep what we had: the file may be mid-rename.
                    if let Some(old) = self.files.remove(&path) {
                        seen.insert(path.clone(), old);
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
            let hash = hash_bytes(&bytes);
            match self.files.remove(&path) {
                Some(old) if old.hash == hash => {
                    seen.insert(path, old);
                }
                old => match parse_file(&path, &bytes) {
                    Ok(objects) => {
                        self.errors.remove(&path);
                        seen.insert(path, FileState { hash, objects });
                        changed = true;
                    }
                    Err(err) => {
                        // Keep the last good content of this file, if any.
                        if let Some(old) = old {
                            seen.insert(path.clone(), old);
                        }
                        self.note_error(&path, err, &mut new_errors);
                    }
                },
            }
        }
        // What is left was deleted (or renamed away).
        if !self.files.is_empty() {
            changed = true;
        }
        self.errors
            .retain(|p, _| seen.contains_key(p) || p.exists());
        self.files = seen;
        Ok((changed, new_errors))
    }

    fn note_error(&mut self, path: &Path, err: FileError, new_errors: &mut Vec<FileError>) {
        if self.errors.get(path) != Some(&err) {
            new_errors.push(err.clone());
        }
        self.errors.insert(path.to_path_buf(), err);
    }

    /// Everything the directory holds now. When two files define the same
    /// object, the first path in sort order wins (and a warning is logged).
    pub fn contents(&self) -> DirContents {
        let mut out = DirContents::default();
        let mut owners: HashMap<(String, String, String), &Path> = HashMap::new();
        for (path, state) in &self.files {
            for obj in &state.objects {
                let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
                let meta = obj.get("metadata");
                let ns = meta
                    .and_then(|m| m.get("namespace"))
                    .and_then(Value::as_str)
                    .unwrap_or("default")
                    .to_string();
                let name = meta
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if let Some(first) = owners.get(&(kind.to_string(), ns.clone(), name.clone())) {
                    warn!(
                        kind,
                        object = %format!("{ns}/{name}"),
                        kept = %first.display(),
                        ignored = %path.display(),
                        "object defined twice in the routes directory"
                    );
                    continue;
                }
                owners.insert((kind.to_string(), ns, name), path);
                if let Some(k) = ObjectKind::from_kind(kind) {
                    out.routes.entry(k).or_default().push(obj.clone());
                } else if kind == "Service" {
                    match serde_json::from_value::<Service>(obj.clone()) {
                        Ok(s) => out.services.push(s),
                        Err(e) => {
                            warn!(path = %path.display(), error = %e, "invalid Service skipped")
                        }
                    }
                } else if kind == "EndpointSlice" {
                    match serde_json::from_value::<EndpointSlice>(obj.clone()) {
                        Ok(s) => out.slices.push(s),
                        Err(e) => {
                            warn!(path = %path.display(), error = %e, "invalid EndpointSlice skipped")
                        }
                    }
                } else {
                    debug!(path = %path.display(), kind, "ignoring object of another kind");
                }
            }
        }
        out
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
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// Parses one manifest file into its objects (documents; `kind: List` items
/// are flattened). Every object gets a content-derived resourceVersion so the
/// index can tell a changed object from an unchanged one.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<Value>, FileError> {
    let display = path.display().to_string();
    let text = std::str::from_utf8(bytes).map_err(|e| FileError {
        path: display.clone(),
        line: line_of_offset(bytes, e.valid_up_to()),
        message: "not UTF-8".to_string(),
    })?;
    let mut docs = Vec::new();
    let is_json = path.extension().and_then(|e| e.to_str()) == Some("json");
    if is_json {
        let v: Value = serde_json::from_str(text).map_err(|e| FileError {
            path: display.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        docs.push((1, v));
    } else {
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let v = serde_yaml::Value::deserialize(doc).map_err(|e| FileError {
                path: display.clone(),
                line: e.location().map(|l| l.line()).unwrap_or(0),
                message: e.to_string(),
            })?;
            if v.is_null() {
                continue; // empty document (`---` at the end)
            }
            let v: Value = serde_json::to_value(v).map_err(|e| FileError {
                path: display.clone(),
                line: 0,
                message: format!("document {}: {e}", i + 1),
            })?;
            docs.push((i + 1, v));
        }
    }
    let mut out = Vec::new();
    for (doc_no, v) in docs {
        flatten(v, doc_no, &display, &mut out)?;
    }
    for obj in &mut out {
        let rv = format!("f{:x}", hash_bytes(obj.to_string().as_bytes()));
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.entry("resourceVersion").or_insert(Value::String(rv));
        }
    }
    Ok(out)
}

fn flatten(v: Value, doc_no: usize, path: &str, out: &mut Vec<Value>) -> Result<(), FileError> {
    let Value::Object(map) = &v else {
        return Err(FileError {
            path: path.to_string(),
            line: 0,
            message: format!("document {doc_no} is not an object"),
        });
    };
    match map.get("kind").and_then(Value::as_str) {
        Some(k) if k.ends_with("List") && map.contains_key("items") => {
            if let Some(Value::Array(items)) = map.get("items") {
                for item in items.clone() {
                    flatten(item, doc_no, path, out)?;
                }
            }
            Ok(())
        }
        Some(_) => {
            out.push(v);
            Ok(())
        }
        None => Err(FileError {
            path: path.to_string(),
            line: 0,
            message: format!("document {doc_no} has no kind"),
        }),
    }
}

fn line_of_offset(bytes: &[u8], offset: usize) -> usize {
    bytes[..offset.min(bytes.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

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
    let mut dir = RoutesDir::new(root.clone());
    let mut ticker = tokio::time::interval(config.resync_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent_once = false;
    loop {
        match dir.scan() {
            Ok((changed, new_errors)) => {
                for err in &new_errors {
                    metrics.sync_errors.get_or_create(&label).inc();
                    warn!(error = %err, "manifest file skipped; its last good content is kept");
                }
                // Unchanged objects keep their content-derived versions, so
                // the index ignores them; no need to keep a copy to diff.
                if changed || !sent_once {
                    send_contents(dir.contents(), &tx, &endpoints).await;
                    sent_once = true;
                }
                if tx.send(Input::DirScanned).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                metrics.sync_errors.get_or_create(&label).inc();
                warn!(error = %err, "routes directory unreadable; serving the last good table");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
            Some(()) = notify_rx.recv() => {
                // Let a burst of writes (an editor's save, a `cp -r`) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while notify_rx.try_recv().is_ok() {}
            }
        }
    }
}

async fn send_contents(
    mut contents: DirContents,
    tx: &mpsc::Sender<Input>,
    endpoints: &ReadyEndpoints,
) {
    endpoints.apply([
        EndpointsChange::ResetServices(contents.services),
        EndpointsChange::ResetSlices(contents.slices),
    ]);
    endpoints.mark_synced();
    for kind in ObjectKind::ALL {
        let items = contents.routes.remove(&kind).unwrap_or_default();
        let _ = tx
            .send(Input::Listed {
                kind,
                items,
                rv: None,
            })
            .await;
    }
}
