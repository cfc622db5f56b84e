//! The state file: every object of every resource, and the global
//! resourceVersion, as one JSON document, so `http-addon api --state-file`
//! keeps what was applied across a restart.
//!
//! A write's event reaches watchers before the file is rewritten, so a
//! server killed in between leaves clients that saw resourceVersions the
//! file never got (the write, and what garbage collection deleted after
//! it). A restored server therefore starts past every resourceVersion the
//! previous run could have shown anyone ([`first_unused`]), and its history
//! starts there: every client of the previous run that resumes a watch gets
//! `410 Gone` and relists. None can take a reused resourceVersion for one
//! it has seen, and none misses a deletion made before the restart. Objects keep
//! their uid, creationTimestamp and resourceVersion (owner references, and
//! so garbage collection, keep working). The file is rewritten before a
//! write is answered (as etcd persists before it acknowledges), so a
//! server killed right after a write still has it; it is replaced
//! atomically (written beside, then renamed). Rewriting the whole state
//! per write suits the laptop-sized tables this server is for.

use std::path::Path;

use listwatch::{Discovery, Store, StoreConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::registry::ResourceDef;
use crate::server::Core;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Saved {
    pub(crate) resource_version: u64,
    resources: Vec<SavedResource>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedResource {
    group: String,
    version: String,
    resource: String,
    kind: String,
    namespaced: bool,
    objects: Vec<Value>,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("state file {}: {what}", path.display()),
    )
}

/// Reads the state file; `None` when it does not exist yet.
pub(crate) fn load(path: &Path) -> std::io::Result<Option<Saved>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(invalid(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| invalid(path, e))
}

/// Stores holding the saved objects, their resources registered.
/// Returns the resourceVersion the restored server starts at.
pub(crate) fn restore(
    saved: Saved,
    registry: &mut Discovery,
    config: &StoreConfig,
) -> std::io::Result<(u64, Vec<Store>)> {
    let rv = first_unused(&saved);
    let mut stores = Vec::new();
    for r in saved.resources {
        let def = ResourceDef::new(&r.group, &r.version, &r.resource, &r.kind, r.namespaced);
        let def = match registry.get(def.gvr()) {
            Some(known) => known.clone(),
            None => {
                registry.register(def.clone());
                def
            }
        };
        let store = Store::new(def.resource.clone(), config.clone(), rv);
        store.replace_all(r.objects, rv).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("restoring {}: {e}", def.gvr()),
            )
        })?;
        stores.push(store);
    }
    Ok((rv, stores))
}

/// A resourceVersion past any the run that saved `saved` could have
/// published: each write is saved before the next one starts (unless the
/// file cannot be written, which is logged as an error), so at most
/// one write was not saved, plus the garbage collection it started, which
/// deletes at most every object there was (those saved, and one the write
/// created): saved + 1 + (objects + 1), and one more to be past it.
fn first_unused(saved: &Saved) -> u64 {
    let objects: usize = saved.resources.iter().map(|r| r.objects.len()).sum();
    saved.resource_version + objects as u64 + 3
}

/// Writes the state file; the caller holds the write lock (the global
/// resourceVersion is `rv`), so the objects and the counter agree and no
/// write is acknowledged before it is in the file.
pub(crate) fn save(core: &Core, rv: u64, path: &Path) -> std::io::Result<()> {
    let resources = core
        .stores
        .all()
        .into_iter()
        .map(|s| (s.resource().clone(), s.snapshot()))
        .filter(|(_, snap)| !snap.is_empty())
        .map(|(r, snap)| SavedResource {
            group: r.gvr.group.clone(),
            version: r.gvr.version.clone(),
            resource: r.gvr.resource.clone(),
            kind: r.kind.clone(),
            namespaced: r.namespaced,
            objects: snap.iter().map(|o| o.to_value()).collect(),
        })
        .collect();
    let doc = Saved {
        resource_version: rv,
        resources,
    };
    let bytes = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::ApiServer;

    /// A server on the state file `path`.
    async fn serving(path: &std::path::Path) -> ApiServer {
        ApiServer::builder().state_file(path).start().await.unwrap()
    }

    /// An object's resourceVersion.
    fn rv_of(obj: &serde_json::Value) -> u64 {
        obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_restart_keeps_objects_uids_and_makes_old_watchers_relist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let first = serving(&path).await;
        let created = first
            .put_object(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "a", "namespace": "ns"}, "data": {"k": "v"}
            }))
            .unwrap();
        first
            .put_object(json!({
                "apiVersion": "example.com/v1", "kind": "Gadget",
                "metadata": {"name": "g", "namespace": "ns"}, "spec": {"size": 3}
            }))
            .unwrap();
        let rv = first.resource_version();
        // No explicit save: every write is in the file before it is answered.
        drop(first);

        let second = serving(&path).await;
        // Two objects: what the previous run could have shown a watcher
        // goes up to rv + 1 (a write) + 3 (the deletions it could cause).
        assert_eq!(second.resource_version(), rv + 2 + 3, "past rv + 4");
        let cms = second
            .store(&listwatch::Gvr::new("", "v1", "configmaps"))
            .expect("configmaps restored");
        let a = cms
            .get("ns", "a")
            .expect("the ConfigMap is back")
            .to_value();
        assert_eq!(a["data"]["k"], "v");
        assert_eq!(a["metadata"]["uid"], created["metadata"]["uid"]);
        assert!(
            cms.oldest_resource_version() >= rv,
            "history starts at the saved resourceVersion: older watches get 410"
        );
        // A resource registered by a write is known again.
        let gadgets = second
            .store(&listwatch::Gvr::new("example.com", "v1", "gadgets"))
            .expect("a resource registered by a write is restored");
        assert_eq!(gadgets.snapshot().len(), 1);
        // The next write continues after the saved resourceVersion.
        let next = second
            .put_object(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "b", "namespace": "ns"}
            }))
            .unwrap();
        let next_rv = rv_of(&next);
        assert!(next_rv > rv);
    }

    /// A write's event reaches watchers before the file is rewritten: a
    /// client can have seen a resourceVersion the file never got (here the
    /// rewrite fails; a kill -9 between the two does the same). After a
    /// restart that resourceVersion must not name another change, and a
    /// watch resumed from it must get 410 (found by the demo: the operator
    /// missed the first HTTPScaledObject created after the API's restart,
    /// which got the resourceVersion of a finalizer removal it had seen).
    #[tokio::test]
    async fn a_resource_version_seen_but_not_saved_is_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let cm = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}});
        let first = serving(&path).await;
        first.put_object(cm("saved")).unwrap();
        // The rewrite goes through `<file>.tmp`: a directory there fails it.
        std::fs::create_dir(dir.path().join("state.json.tmp")).unwrap();
        let lost = first.put_object(cm("lost")).unwrap();
        let seen = rv_of(&lost);
        drop(first);
        std::fs::remove_dir(dir.path().join("state.json.tmp")).unwrap();

        let second = serving(&path).await;
        let cms = second
            .store(&listwatch::Gvr::new("", "v1", "configmaps"))
            .unwrap();
        assert!(cms.get("ns", "lost").is_none(), "the file never had it");
        assert!(
            cms.oldest_resource_version() > seen,
            "a watch resumed from {seen} gets 410 (history starts at {})",
            cms.oldest_resource_version()
        );
        let next = second.put_object(cm("next")).unwrap();
        let next_rv = rv_of(&next);
        assert!(next_rv > seen, "{next_rv} reuses {seen}");
    }

    #[tokio::test]
    async fn a_corrupt_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = ApiServer::builder()
            .state_file(&path)
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
