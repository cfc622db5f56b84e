//! The routes-directory source over real files.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{count, service_of};
use sync::dir_source::{DirChange, RoutesDir};
use sync::{Source, SyncConfig};

/// The HTTPScaledObject `apps/name` for `name.example.com`, as YAML.
fn httpso_yaml(name: &str, service: &str) -> String {
    format!(
        "apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: {name}
  namespace: apps
spec:
  hosts: [\"{name}.example.com\"]
  scaleTargetRef:
    name: {name}
    kind: Deployment
    apiVersion: apps/v1
    service: {service}
    port: 8080
"
    )
}

fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).unwrap();
}

async fn wait_for_service(
    handle: &sync::SyncHandle,
    host: &str,
    want: Option<&str>,
) -> routing::RoutingTable {
    let t = tokio::time::timeout(
        Duration::from_secs(5),
        handle
            .table
            .wait_for(|t| service_of(t, host).as_deref() == want),
    )
    .await
    .unwrap_or_else(|_| panic!("{host} never routed to {want:?}"));
    (*t).clone()
}

/// A sync loop over the routes directory `dir`, once ready.
async fn start(dir: &Path, resync_interval: Duration) -> sync::SyncHandle {
    let mut registry = prometheus_client::registry::Registry::default();
    let config = SyncConfig {
        resync_interval,
        ..SyncConfig::default()
    };
    let handle = sync::start(Source::Directory(dir.into()), config, &mut registry);
    tokio::time::timeout(Duration::from_secs(5), handle.table.wait_ready())
        .await
        .expect("ready");
    handle
}

/// Writes the HTTPScaledObject `apps/name` for `name.example.com` to `file`.
fn write_httpso(dir: &Path, file: &str, name: &str, service: &str) {
    write(dir, file, &httpso_yaml(name, service));
}

/// Asserts where `host` routes now.
fn assert_routes(handle: &sync::SyncHandle, host: &str, want: Option<&str>) {
    assert_eq!(
        service_of(&handle.table.load(), host).as_deref(),
        want,
        "{host}"
    );
}

#[tokio::test]
async fn table_follows_file_edits_adds_deletes_and_renames() {
    let dir = tempfile::tempdir().unwrap();
    write_httpso(dir.path(), "a.yaml", "a", "svc-a");
    let handle = start(dir.path(), Duration::from_millis(200)).await;
    assert_routes(&handle, "a.example.com", Some("svc-a"));

    // Edit.
    write_httpso(dir.path(), "a.yaml", "a", "svc-a2");
    wait_for_service(&handle, "a.example.com", Some("svc-a2")).await;
    // Add (a multi-document file).
    let two = [httpso_yaml("b", "svc-b"), httpso_yaml("c", "svc-c")].join("---\n");
    write(dir.path(), "bc.yml", &two);
    wait_for_service(&handle, "b.example.com", Some("svc-b")).await;
    wait_for_service(&handle, "c.example.com", Some("svc-c")).await;
    // Rename: same objects, new path; nothing is lost on the way.
    std::fs::rename(dir.path().join("bc.yml"), dir.path().join("renamed.yaml")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_routes(&handle, "b.example.com", Some("svc-b"));
    // Delete.
    std::fs::remove_file(dir.path().join("a.yaml")).unwrap();
    wait_for_service(&handle, "a.example.com", None).await;
    assert_routes(&handle, "c.example.com", Some("svc-c"));
}

#[tokio::test]
async fn broken_file_keeps_its_last_good_routes() {
    let dir = tempfile::tempdir().unwrap();
    write_httpso(dir.path(), "a.yaml", "a", "svc-a");
    write_httpso(dir.path(), "b.yaml", "b", "svc-b");
    let handle = start(dir.path(), Duration::from_millis(100)).await;

    // Break a.yaml (bad indentation on line 4) and change b.yaml at the same time.
    write(
        dir.path(),
        "a.yaml",
        "apiVersion: http.keda.sh/v1alpha1\nkind: HTTPScaledObject\nmetadata:\n  name: a\n   namespace: [\n",
    );
    write_httpso(dir.path(), "b.yaml", "b", "svc-b2");
    wait_for_service(&handle, "b.example.com", Some("svc-b2")).await;
    // a's last good content still routes.
    assert_routes(&handle, "a.example.com", Some("svc-a"));
    let errors = count(&handle.metrics.sync_errors, "files");
    assert!(errors >= 1, "the broken file was counted");

    // Fix it: the new content is taken.
    write_httpso(dir.path(), "a.yaml", "a", "svc-a3");
    wait_for_service(&handle, "a.example.com", Some("svc-a3")).await;
}

#[tokio::test]
async fn a_file_rewritten_in_pieces_never_loses_its_other_routes() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let a = httpso_yaml("a", "svc-a");
    let b = httpso_yaml("b", "svc-b");
    write(dir.path(), "routes.yaml", &format!("{a}---\n{b}"));
    let handle = start(dir.path(), Duration::from_millis(10)).await;
    wait_for_service(&handle, "b.example.com", Some("svc-b")).await;

    // Watch b's route the whole time the file is rewritten.
    let table = handle.table.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lost = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if service_of(&table.load(), "b.example.com").is_none() {
                    lost += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            lost
        })
    };
    // A writer that truncates, writes the first document, pauses (many
    // rescans happen meanwhile), then writes the rest: b's route changes
    // target in the end, but is never gone in between.
    let path = dir.path().join("routes.yaml");
    let b2 = httpso_yaml("b", "svc-b2");
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(format!("{a}---\n").as_bytes()).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(60));
        f.write_all(b2.as_bytes()).unwrap();
    })
    .await
    .unwrap();
    wait_for_service(&handle, "b.example.com", Some("svc-b2")).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let lost = watching.await.unwrap();
    assert_eq!(
        lost, 0,
        "b's route was missing while its file was being written"
    );
    assert_routes(&handle, "a.example.com", Some("svc-a"));
}

#[test]
fn broken_file_error_names_path_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n   bad: [\n",
    );
    write(
        dir.path(),
        "bad.json",
        "{\n  \"kind\": \"Service\",\n  oops\n}\n",
    );
    let mut routes = RoutesDir::new(dir.path());
    let (_, errors) = routes.scan(|_| {}).unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let json_err = errors
        .iter()
        .find(|e| e.path.ends_with("bad.json"))
        .unwrap();
    assert_eq!(json_err.line, 3, "{json_err}");
    let yaml_err = errors
        .iter()
        .find(|e| e.path.ends_with("bad.yaml"))
        .unwrap();
    assert!(yaml_err.line >= 4, "{yaml_err}");
    assert!(yaml_err.to_string().contains("bad.yaml:"), "{yaml_err}");
}

#[test]
fn services_and_endpointslices_are_read() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "svc.yaml",
        "apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec:
  ports:
  - {name: http, port: 80, targetPort: http, appProtocol: kubernetes.io/h2c}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: apps
  labels: {kubernetes.io/service-name: web}
addressType: IPv4
ports: [{name: http, port: 9000}]
endpoints:
- addresses: [127.0.0.1]
  conditions: {ready: true}
- addresses: [127.0.0.2]
  conditions: {ready: false}
",
    );
    let mut routes = RoutesDir::new(dir.path());
    let mut changes = Vec::new();
    let (changed, errors) = routes
        .scan(|c| match c {
            DirChange::Endpoints(e) => changes.push(e),
            other => panic!("unexpected {other:?}"),
        })
        .unwrap();
    assert!(changed);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        changes.len(),
        2,
        "one Service, one EndpointSlice: {changes:?}"
    );

    let endpoints = sync::ReadyEndpoints::new();
    endpoints.apply(changes);
    let snap = endpoints.load();
    let port = routing::PortRef::Name("http".into());
    let resolved = snap.resolve("apps", "web", &port).unwrap();
    assert_eq!(resolved.port, 80);
    assert!(resolved.h2c);
    let addrs = snap
        .get("apps", "web")
        .unwrap()
        .ready_addresses(&port)
        .unwrap();
    assert_eq!(
        addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        vec!["127.0.0.1:9000"]
    );
}

/// What one scan handed downstream, as short strings (`apply a/svc`,
/// `delete a`, `endpoints ...`).
fn scan_changes(routes: &mut RoutesDir) -> Vec<String> {
    let mut out = Vec::new();
    routes
        .scan(|c| {
            out.push(match c {
                DirChange::Apply(_, obj) => format!(
                    "apply {}/{}",
                    obj["metadata"]["name"].as_str().unwrap(),
                    obj["spec"]["scaleTargetRef"]["service"].as_str().unwrap()
                ),
                DirChange::Delete(key) => format!("delete {}", key.name),
                DirChange::Endpoints(e) => format!("endpoints {e:?}"),
            })
        })
        .unwrap();
    out.sort();
    out
}

#[test]
fn an_edited_document_is_the_only_change_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = |b_service: &str, with_c: bool| {
        let mut docs = vec![httpso_yaml("a", "svc-a"), httpso_yaml("b", b_service)];
        if with_c {
            docs.push(httpso_yaml("c", "svc-c"));
        }
        docs.join("---\n")
    };
    write(dir.path(), "all.yaml", &file("svc-b", true));
    let mut routes = RoutesDir::new(dir.path());
    assert_eq!(
        scan_changes(&mut routes),
        ["apply a/svc-a", "apply b/svc-b", "apply c/svc-c"]
    );
    assert!(scan_changes(&mut routes).is_empty(), "nothing changed");

    write(dir.path(), "all.yaml", &file("svc-b2", true));
    assert_eq!(scan_changes(&mut routes), ["apply b/svc-b2"]);
    write(dir.path(), "all.yaml", &file("svc-b2", false));
    assert_eq!(scan_changes(&mut routes), ["delete c"]);

    // Moved to another file unchanged: nothing to do. Then removed.
    write_httpso(dir.path(), "all.yaml", "a", "svc-a");
    write_httpso(dir.path(), "b.yaml", "b", "svc-b2");
    assert!(scan_changes(&mut routes).is_empty());
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    assert_eq!(scan_changes(&mut routes), ["delete b"]);
}

#[test]
fn a_broken_file_keeps_its_objects_and_a_fix_applies_only_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let two =
        |a_service: &str| [httpso_yaml("a", a_service), httpso_yaml("b", "svc-b")].join("---\n");
    write(dir.path(), "ab.yaml", &two("svc-a"));
    let mut routes = RoutesDir::new(dir.path());
    assert_eq!(scan_changes(&mut routes).len(), 2);

    // Broken in its second document: nothing is removed, nothing applied
    // (not even the first document's edit), and the error is reported.
    write(
        dir.path(),
        "ab.yaml",
        &format!(
            "{}---\nkind: HTTPScaledObject\nmetadata:\n  name: b\n   bad: [\n",
            httpso_yaml("a", "svc-a2")
        ),
    );
    assert!(scan_changes(&mut routes).is_empty());
    let errors: Vec<_> = routes.errors().collect();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].path.ends_with("ab.yaml") && errors[0].line >= 16,
        "{}",
        errors[0]
    );

    write(dir.path(), "ab.yaml", &two("svc-a2"));
    assert_eq!(scan_changes(&mut routes), ["apply a/svc-a2"]);
    assert_eq!(routes.errors().count(), 0);
}

#[test]
fn the_first_file_wins_a_duplicate_and_the_second_takes_over_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    write_httpso(dir.path(), "1.yaml", "a", "svc-1");
    write_httpso(dir.path(), "2.yaml", "a", "svc-2");
    let mut routes = RoutesDir::new(dir.path());
    assert_eq!(scan_changes(&mut routes), ["apply a/svc-1"]);
    std::fs::remove_file(dir.path().join("1.yaml")).unwrap();
    assert_eq!(scan_changes(&mut routes), ["apply a/svc-2"]);
    std::fs::remove_file(dir.path().join("2.yaml")).unwrap();
    assert_eq!(scan_changes(&mut routes), ["delete a"]);
}

#[test]
fn services_and_slices_change_and_go_one_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let slice = |ready: bool| {
        format!(
            "apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: apps, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 9000}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: {ready}}}}}]
"
        )
    };
    write(
        dir.path(),
        "svc.yaml",
        "kind: Service\nmetadata: {name: web, namespace: apps}\nspec: {ports: [{name: http, port: 80}]}\n",
    );
    write(dir.path(), "slice.yaml", &slice(false));
    let endpoints = sync::ReadyEndpoints::new();
    let mut routes = RoutesDir::new(dir.path());
    let apply = |routes: &mut RoutesDir| {
        let mut changes = Vec::new();
        routes
            .scan(|c| {
                if let DirChange::Endpoints(e) = c {
                    changes.push(e)
                }
            })
            .unwrap();
        let n = changes.len();
        endpoints.apply(changes);
        n
    };
    assert_eq!(apply(&mut routes), 2);
    assert!(endpoints.load().get("apps", "web").unwrap().has_service);
    assert!(!endpoints.load().has_ready("apps", "web"));

    write(dir.path(), "slice.yaml", &slice(true));
    assert_eq!(apply(&mut routes), 1);
    assert!(endpoints.load().has_ready("apps", "web"));

    std::fs::remove_file(dir.path().join("slice.yaml")).unwrap();
    assert_eq!(apply(&mut routes), 1);
    assert!(!endpoints.load().has_ready("apps", "web"));
    std::fs::remove_file(dir.path().join("svc.yaml")).unwrap();
    assert_eq!(apply(&mut routes), 1);
    assert!(endpoints.load().get("apps", "web").is_none());
}

#[test]
fn objects_of_other_kinds_do_not_disturb_which_document_is_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let file = |b_service: &str| {
        [
            "kind: Deployment\nmetadata: {name: x}\n".to_string(),
            httpso_yaml("a", "svc-a"),
            "kind: Secret\nmetadata: {name: y}\n".to_string(),
            httpso_yaml("b", b_service),
        ]
        .join("---\n")
    };
    write(dir.path(), "mixed.yaml", &file("svc-b"));
    let mut routes = RoutesDir::new(dir.path());
    assert_eq!(
        scan_changes(&mut routes),
        ["apply a/svc-a", "apply b/svc-b"]
    );
    write(dir.path(), "mixed.yaml", &file("svc-b2"));
    assert_eq!(scan_changes(&mut routes), ["apply b/svc-b2"]);
}

#[test]
fn an_emptied_file_loses_its_objects_on_the_second_scan_that_finds_it_empty() {
    let dir = tempfile::tempdir().unwrap();
    write_httpso(dir.path(), "a.yaml", "a", "svc-a");
    let mut routes = RoutesDir::new(dir.path());
    assert_eq!(scan_changes(&mut routes), ["apply a/svc-a"]);
    // Truncated by a writer that has not written yet: kept.
    write(dir.path(), "a.yaml", "");
    assert!(scan_changes(&mut routes).is_empty());
    write_httpso(dir.path(), "a.yaml", "a", "svc-a2");
    assert_eq!(scan_changes(&mut routes), ["apply a/svc-a2"]);
    // Emptied for good.
    write(dir.path(), "a.yaml", "");
    assert!(scan_changes(&mut routes).is_empty());
    assert_eq!(scan_changes(&mut routes), ["delete a"]);
}
