//! The sync loop against a Kubernetes-compatible API server (testkit) over
//! real sockets, with injected faults. No fixed sleeps where a change can be
//! awaited; every wait is bounded so a failing test fails instead of hanging.

mod common;

use std::time::{Duration, Instant};
use testkit::StartTestApi;

use common::{count, service_of};

use serde_json::{Value, json};
use sync::{Source, SyncConfig, SyncHandle};
use testkit::fixtures::{Hso, Ir};
use testkit::{FailOn, TestApi, Verb};

fn httpso(name: &str, host: &str, service: &str) -> Value {
    Hso::new("apps", name)
        .host(host)
        .service(service, 8080)
        .json()
}

fn interceptor_route(name: &str, host: &str, service: &str) -> Value {
    Ir::new("apps", name).host(host).service(service, 80).json()
}

/// Puts the HTTPScaledObjects `app<i>` for each `i` in `apps`, routing
/// `app<i>.<domain>` to `service`.
fn put_apps(api: &TestApi, apps: std::ops::Range<usize>, domain: &str, service: &str) {
    for i in apps {
        let name = format!("app{i}");
        api.put_object(httpso(&name, &format!("{name}.{domain}"), service))
            .unwrap();
    }
}

/// A test API server bookmarking every 100 ms; with `digests` its
/// bookmarks carry the content digest, else they look like kube-apiserver's.
async fn bookmarking_api(digests: bool) -> TestApi {
    TestApi::builder()
        .digest_bookmarks(digests)
        .bookmark_interval(Duration::from_millis(100))
        .started()
        .await
}

fn start(api: &TestApi, resync: Duration) -> SyncHandle {
    let mut registry = prometheus_client::registry::Registry::default();
    let config = SyncConfig {
        resync_interval: resync,
        endpoints: false,
        ..SyncConfig::default()
    };
    sync::start(Source::Kubernetes(api.client()), config, &mut registry)
}

/// [`start`], once the sync loop is ready.
async fn start_ready(api: &TestApi, resync: Duration) -> SyncHandle {
    let handle = start(api, resync);
    ready(&handle).await;
    handle
}

async fn ready(handle: &SyncHandle) {
    tokio::time::timeout(Duration::from_secs(10), handle.table.wait_ready())
        .await
        .expect("the sync loop became ready");
}

/// Waits until `host` routes to `want`; returns how long it took.
async fn routes_to(
    handle: &SyncHandle,
    host: &str,
    want: Option<&str>,
    within: Duration,
) -> Duration {
    let start = Instant::now();
    tokio::time::timeout(
        within,
        handle
            .table
            .wait_for(|t| service_of(t, host).as_deref() == want),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{host} did not route to {want:?} within {within:?} (it routes to {:?})",
            service_of(&handle.table.load(), host)
        )
    });
    start.elapsed()
}

/// Asserts that the resync or a digest bookmark repaired at least `n` routes.
fn assert_repaired(handle: &SyncHandle, n: u64) {
    let repairs = handle.metrics.total_repairs();
    assert!(repairs >= n, "repairs counted: {repairs}");
}

#[tokio::test]
async fn not_ready_until_the_delayed_initial_list_completes() {
    let api = TestApi::start().await;
    put_apps(&api, 0..5, "com", "svc");
    api.faults().set_list_delay(Duration::from_millis(800));
    let started = Instant::now();
    let handle = start(&api, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handle.table.is_ready(), "ready before the list completed");
    ready(&handle).await;
    assert!(started.elapsed() >= Duration::from_millis(800));
    // Ready means complete: every object is in the first published table.
    assert_eq!(handle.table.load().len(), 5);
}

#[tokio::test]
async fn created_changed_and_deleted_objects_show_in_the_table() {
    let api = TestApi::start().await;
    let handle = start_ready(&api, Duration::from_secs(1)).await;
    let within = Duration::from_secs(5);

    api.put_object(httpso("a", "a.com", "svc-a")).unwrap();
    routes_to(&handle, "a.com", Some("svc-a"), within).await;
    api.put_object(httpso("a", "a.com", "svc-a2")).unwrap();
    routes_to(&handle, "a.com", Some("svc-a2"), within).await;
    api.delete_object(&Hso::gvr(), "apps", "a").unwrap();
    routes_to(&handle, "a.com", None, within).await;

    api.put_object(interceptor_route("r", "r.com", "svc-r"))
        .unwrap();
    routes_to(&handle, "r.com", Some("svc-r"), within).await;
    api.put_object(interceptor_route("r", "r.com", "svc-r2"))
        .unwrap();
    routes_to(&handle, "r.com", Some("svc-r2"), within).await;
    api.delete_object(&Ir::gvr(), "apps", "r").unwrap();
    routes_to(&handle, "r.com", None, within).await;
    // Nothing was lost by the watch, so the resync repaired nothing.
    assert_eq!(handle.metrics.total_repairs(), 0);
}

#[tokio::test]
async fn a_lost_watch_event_is_repaired_by_the_resync() {
    let api = TestApi::start().await;
    let resync = Duration::from_millis(500);
    let handle = start_ready(&api, resync).await;
    api.faults().set_drop_watch_events(1.0);
    api.put_object(httpso("a", "a.com", "svc-a")).unwrap();
    routes_to(&handle, "a.com", Some("svc-a"), 2 * resync).await;
    api.delete_object(&Hso::gvr(), "apps", "a").unwrap();
    routes_to(&handle, "a.com", None, 2 * resync).await;
    assert_repaired(&handle, 2);
}

#[tokio::test]
async fn a_stalled_watch_is_covered_by_the_resync() {
    let api = TestApi::start().await;
    let resync = Duration::from_millis(500);
    let handle = start_ready(&api, resync).await;
    api.faults().set_stall_watches(true);
    api.put_object(interceptor_route("r", "r.com", "svc-r"))
        .unwrap();
    routes_to(&handle, "r.com", Some("svc-r"), 2 * resync).await;
    assert_repaired(&handle, 1);
}

#[tokio::test]
async fn after_410_gone_a_relist_removes_what_was_deleted_meanwhile() {
    // A short history, so a watch that was away for a few writes must relist.
    let api = TestApi::builder().history(2).started().await;
    api.put_object(httpso("keep", "keep.com", "svc-k")).unwrap();
    api.put_object(httpso("gone", "gone.com", "svc-g")).unwrap();
    // A resync far away, so only the watcher's relist can notice the delete.
    let handle = start_ready(&api, Duration::from_secs(3600)).await;
    assert_eq!(
        service_of(&handle.table.load(), "gone.com").as_deref(),
        Some("svc-g")
    );
    // Keep the watchers out (rewatches fail) while the delete and enough
    // other writes happen to push it out of the kept history.
    api.faults().fail_all(FailOn::Watch, 500);
    api.faults().close_watches();
    api.delete_object(&Hso::gvr(), "apps", "gone").unwrap();
    for i in 0..5 {
        api.put_object(httpso(&format!("x{i}"), &format!("x{i}.com"), "svc-x"))
            .unwrap();
    }
    let store = api.store(&Hso::gvr()).unwrap();
    assert!(
        store.oldest_resource_version() > 0,
        "the delete left the history"
    );
    api.faults().clear_failures();
    // The rewatch from the old resourceVersion gets 410 Expired; the relist
    // that follows no longer has `gone`.
    routes_to(&handle, "gone.com", None, Duration::from_secs(15)).await;
    assert_eq!(
        service_of(&handle.table.load(), "keep.com").as_deref(),
        Some("svc-k")
    );
    assert_eq!(handle.metrics.total_repairs(), 0, "no periodic resync ran");
}

#[tokio::test]
async fn api_down_keeps_the_last_table_and_reconverges_after() {
    let api = TestApi::start().await;
    api.put_object(httpso("a", "a.com", "svc-a")).unwrap();
    let resync = Duration::from_millis(500);
    let handle = start_ready(&api, resync).await;
    api.faults().go_down().await;
    // Changes land in the central store while this replica cannot reach it.
    api.put_object(httpso("a", "a.com", "svc-a2")).unwrap();
    api.put_object(httpso("b", "b.com", "svc-b")).unwrap();
    tokio::time::sleep(3 * resync).await;
    assert!(handle.table.is_ready(), "stays ready while the API is down");
    assert_eq!(
        service_of(&handle.table.load(), "a.com").as_deref(),
        Some("svc-a"),
        "the last good table keeps serving"
    );
    api.faults().come_up().await.unwrap();
    routes_to(
        &handle,
        "a.com",
        Some("svc-a2"),
        2 * resync + Duration::from_millis(500),
    )
    .await;
    routes_to(&handle, "b.com", Some("svc-b"), 2 * resync).await;
}

#[tokio::test]
async fn an_invalid_object_is_skipped_and_reported() {
    let api = TestApi::start().await;
    api.put_object(httpso("good", "good.com", "svc-good"))
        .unwrap();
    let mut bad = httpso("bad", "bad.com", "svc-bad");
    bad["spec"]["hosts"] = json!(["a*b.com"]);
    api.put_object(bad).unwrap();
    let handle = start_ready(&api, Duration::from_secs(1)).await;
    assert_eq!(
        service_of(&handle.table.load(), "good.com").as_deref(),
        Some("svc-good")
    );
    assert_eq!(service_of(&handle.table.load(), "bad.com"), None);
    let invalid = count(&handle.metrics.invalid_objects, &Hso::gvr().resource);
    assert!(invalid >= 1);
    // The watch goes on: a later valid change still arrives.
    api.put_object(httpso("later", "later.com", "svc-later"))
        .unwrap();
    routes_to(
        &handle,
        "later.com",
        Some("svc-later"),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn a_thousand_objects_sync_completely() {
    let api = TestApi::start().await;
    put_apps(&api, 0..1000, "example.com", "svc");
    let handle = start_ready(&api, Duration::from_secs(1)).await;
    let table = handle.table.load();
    assert_eq!(table.len(), 1000);
    assert!(
        table
            .lookup("app999.example.com", "/", &routing::NoHeaders)
            .is_some()
    );
}

#[tokio::test]
async fn a_stalled_watch_is_restarted() {
    let api = TestApi::start().await;
    let mut registry = prometheus_client::registry::Registry::default();
    let config = SyncConfig {
        resync_interval: Duration::from_millis(500),
        // Stall bound = watch timeout + 5 s (kube-rs's idle margin).
        watch_timeout: Duration::from_secs(3),
        endpoints: false,
        ..SyncConfig::default()
    };
    let handle = sync::start(Source::Kubernetes(api.client()), config, &mut registry);
    ready(&handle).await;
    let open = Instant::now() + Duration::from_secs(5);
    while api.stats().open_watches < 2 {
        assert!(Instant::now() < open, "watches never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.faults().set_stall_watches(true);
    let stalled_at = Instant::now();
    let watches_before = api.stats().total_requests(testkit::Verb::Watch);
    // A stalled watch sends nothing, not even a bookmark or its own end: the
    // client must give up on it and open a new one.
    let deadline =
        Instant::now() + kubewatch::stall_bound(Duration::from_secs(3)) + Duration::from_secs(5);
    while api.stats().total_requests(testkit::Verb::Watch) <= watches_before {
        assert!(
            Instant::now() < deadline,
            "the stalled watch was never restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("stalled watch restarted after {:?}", stalled_at.elapsed());
}

fn lists(api: &TestApi) -> u64 {
    api.stats().total_requests(testkit::Verb::List)
}

#[tokio::test]
async fn a_digest_bookmark_mismatch_repairs_without_waiting_for_the_resync() {
    let api = TestApi::start().await;
    // No periodic resync within the test: only a bookmark whose digest
    // differs from the index can bring the lost event in.
    let handle = start_ready(&api, Duration::from_secs(3600)).await;
    api.faults().set_drop_watch_events(1.0);
    api.put_object(httpso("a", "a.com", "svc-a")).unwrap();
    routes_to(&handle, "a.com", Some("svc-a"), Duration::from_secs(5)).await;
    api.put_object(interceptor_route("r", "r.com", "svc-r"))
        .unwrap();
    routes_to(&handle, "r.com", Some("svc-r"), Duration::from_secs(5)).await;
    assert_repaired(&handle, 2);
}

#[tokio::test]
async fn matching_digest_bookmarks_stand_for_the_resync_lists() {
    let api = bookmarking_api(true).await;
    api.put_object(httpso("a", "a.com", "svc-a")).unwrap();
    let handle = start_ready(&api, Duration::from_millis(100)).await;
    let lists_before = lists(&api);
    let resyncs = |h: &SyncHandle| {
        [Hso::gvr(), Ir::gvr()]
            .iter()
            .map(|gvr| count(&h.metrics.resyncs, &gvr.resource))
            .sum::<u64>()
    };
    let resyncs_before = resyncs(&handle);
    let deadline = Instant::now() + Duration::from_secs(10);
    while resyncs(&handle) < resyncs_before + 20 {
        assert!(Instant::now() < deadline, "resyncs did not go on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listed = lists(&api) - lists_before;
    assert!(
        listed < 10,
        "{listed} lists for 20 resyncs: digest bookmarks should stand for most of them"
    );
    // Fresh and still following changes.
    api.put_object(httpso("a", "a.com", "svc-a2")).unwrap();
    routes_to(&handle, "a.com", Some("svc-a2"), Duration::from_secs(5)).await;
    assert_eq!(handle.metrics.total_repairs(), 0);
}

#[tokio::test]
async fn without_digest_bookmarks_the_resync_lists_every_interval() {
    // kube-apiserver's bookmarks carry no digest.
    let api = bookmarking_api(false).await;
    let handle = start_ready(&api, Duration::from_millis(100)).await;
    let before = lists(&api);
    let deadline = Instant::now() + Duration::from_secs(10);
    // Two kinds, one conditional list each per interval.
    while lists(&api) < before + 20 {
        assert!(
            Instant::now() < deadline,
            "only {} resync lists",
            lists(&api) - before
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And a lost event is still repaired by those lists.
    api.faults().set_drop_watch_events(1.0);
    api.put_object(httpso("a", "a.com", "svc-a")).unwrap();
    routes_to(&handle, "a.com", Some("svc-a"), Duration::from_secs(5)).await;
    assert_repaired(&handle, 1);
}

const PLAIN_RESYNC: Duration = Duration::from_millis(300);

/// A testkit that looks to a client like kube-apiserver (no digests on the
/// watch, no 304 to a list) holding `objects` HTTPScaledObjects
/// `app<i>` -> `svc-1`, and a ready replica resyncing every
/// [`PLAIN_RESYNC`].
async fn plain_api(objects: usize) -> (TestApi, SyncHandle) {
    let api = TestApi::builder()
        .digest_bookmarks(false)
        .conditional_lists(false)
        .started()
        .await;
    put_apps(&api, 0..objects, "com", "svc-1");
    let handle = start(&api, PLAIN_RESYNC);
    ready(&handle).await;
    (api, handle)
}

#[tokio::test]
async fn against_a_plain_api_server_the_resync_lists_metadata_and_fetches_only_what_differs() {
    let (api, handle) = plain_api(100).await;
    let resync = PLAIN_RESYNC;
    assert_eq!(handle.table.load().len(), 100);
    api.reset_stats();
    // Idle resyncs: metadata lists only, nothing fetched.
    tokio::time::sleep(3 * resync).await;
    let idle = api.stats();
    assert!(idle.requests(Verb::List, "httpscaledobjects") >= 3);
    assert_eq!(idle.requests(Verb::Get, "httpscaledobjects"), 0);
    // A change and a delete whose events are lost: the resync fetches the
    // changed object alone, and the metadata list alone shows the delete.
    api.faults().set_drop_watch_events(1.0);
    api.put_object(httpso("app7", "app7.com", "svc-2")).unwrap();
    api.delete_object(&Hso::gvr(), "apps", "app8").unwrap();
    routes_to(&handle, "app7.com", Some("svc-2"), 4 * resync).await;
    routes_to(&handle, "app8.com", None, 4 * resync).await;
    let after = api.stats();
    assert_eq!(
        after.requests(Verb::Get, "httpscaledobjects"),
        1,
        "only the changed object is fetched"
    );
    assert_repaired(&handle, 2);
    // The lists were metadata: each far smaller than the full objects.
    let lists = after.requests(Verb::List, "httpscaledobjects");
    let per_list = after.response_bytes(Verb::List, "httpscaledobjects") / lists;
    let full: u64 = api
        .store(&Hso::gvr())
        .unwrap()
        .snapshot()
        .iter()
        .map(|o| o.json().len() as u64)
        .sum();
    assert!(
        per_list < full * 3 / 4,
        "a metadata list of {per_list} B per list, the objects {full} B"
    );
}

#[tokio::test]
async fn against_a_plain_api_server_many_differences_take_one_full_list() {
    let (api, handle) = plain_api(60).await;
    let resync = PLAIN_RESYNC;
    api.faults().set_drop_watch_events(1.0);
    // More than the resync fetches one by one.
    put_apps(&api, 0..40, "com", "svc-2");
    for i in 0..40 {
        routes_to(&handle, &format!("app{i}.com"), Some("svc-2"), 4 * resync).await;
    }
    assert_eq!(api.stats().requests(Verb::Get, "httpscaledobjects"), 0);
    assert_repaired(&handle, 40);
}
