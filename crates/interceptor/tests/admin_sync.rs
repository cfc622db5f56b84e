//! The interceptor process's sync side, over real sockets: readiness, the
//! routing-table dump and metrics on the admin port, against testkit.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod common;

use common::{args, raw_request};
use interceptor::{Interceptor, InterceptorArgs};
use serde_json::{Value, json};
use testkit::TestApi;
use testkit::fixtures::Hso;

/// Interceptor flags for the API server `api`.
fn api_args(api: &TestApi) -> InterceptorArgs {
    let kubeconfig = api.kubeconfig_path().display().to_string();
    args(
        &["--kubeconfig", &kubeconfig],
        &["--resync-interval", "500ms"],
    )
}

/// A plain HTTP/1.1 GET; returns (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let r = raw_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (r.status, r.body)
}

/// Polls `/readyz` the way a kubelet does until it answers 200.
async fn wait_readyz(addr: SocketAddr) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while get(addr, "/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("/readyz answers 200");
}

/// An HTTPScaledObject `apps/name` for the host `name.example.com`.
fn httpso(name: &str) -> Value {
    Hso::new("apps", name)
        .host(&format!("{name}.example.com"))
        .path_prefix("/api")
        .service(&format!("{name}-svc"), 8080)
        .json()
}

#[tokio::test]
async fn readyz_waits_for_the_complete_table_then_serves_it() {
    let api = TestApi::start().await;
    for i in 0..3 {
        api.put_object(httpso(&format!("app{i}"))).unwrap();
    }
    api.faults().set_list_delay(Duration::from_millis(1000));
    let started = Instant::now();
    let ic = Interceptor::start(&api_args(&api)).await.unwrap();
    let (status, body) = get(ic.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(get(ic.admin_addr, "/livez").await.0, 200);

    // It must flip right after the list.
    wait_readyz(ic.admin_addr).await;
    assert!(started.elapsed() >= Duration::from_millis(1000));
    // Ready means complete.
    let (status, body) = get(ic.admin_addr, "/routing-table").await;
    assert_eq!(status, 200);
    let table: Value = serde_json::from_str(&body).unwrap();
    let routes = table["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 3, "{body}");
    assert!(table["version"].as_u64().unwrap() > 0);
    let app0 = routes.iter().find(|r| r["key"] == "apps/app0").unwrap();
    assert_eq!(app0["rules"][0]["hosts"][0], "app0.example.com");
    assert_eq!(app0["rules"][0]["paths"][0], "/api");
    assert_eq!(app0["target"]["service"], "app0-svc");

    // /queue has every route, with zero counts.
    let (_, body) = get(ic.admin_addr, "/queue").await;
    let queue: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        queue["apps/app1"],
        json!({"Concurrency": 0, "RequestCount": 0})
    );

    // Metrics on both the admin and the metrics port.
    for addr in [ic.admin_addr, ic.metrics_addr.expect("metrics listener")] {
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("routing_table_routes 3"), "{body}");
        assert!(body.contains("routing_table_version"), "{body}");
        assert!(
            body.contains("routing_last_sync_timestamp_seconds"),
            "{body}"
        );
    }
    ic.stop().await;
}

#[tokio::test]
async fn stays_ready_on_the_last_table_while_the_api_is_down() {
    let api = TestApi::start().await;
    api.put_object(httpso("a")).unwrap();
    let ic = Interceptor::start(&api_args(&api)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), ic.sync.table.wait_ready())
        .await
        .unwrap();
    wait_readyz(ic.admin_addr).await;
    api.faults().go_down().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(get(ic.admin_addr, "/readyz").await.0, 200);
    let (_, body) = get(ic.admin_addr, "/routing-table").await;
    assert!(body.contains("a.example.com"));
    let (_, metrics) = get(ic.admin_addr, "/metrics").await;
    assert!(
        metrics.contains("routing_sync_errors_total{"),
        "errors are exported: {metrics}"
    );
    api.faults().come_up().await.unwrap();
    ic.stop().await;
}

/// A cache in front of `api` that accepts `token`.
async fn start_cache(api: &TestApi, token: &str) -> cache::Cache {
    let mut registry = prometheus_client::registry::Registry::default();
    cache::Cache::start(
        api.client(),
        cache::CacheConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..cache::CacheConfig::default()
        },
        cache::Authenticator::tokens([token.to_string()]),
        &mut registry,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn an_interceptor_reads_its_table_from_a_cache_by_url_alone() {
    const TOKEN: &str = "subscriber-token";
    let api = TestApi::start().await;
    api.put_object(httpso("a")).unwrap();
    let cache = start_cache(&api, TOKEN).await;
    tokio::time::timeout(Duration::from_secs(10), cache.wait_ready())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let url = cache.url();
    let token_path = token_file.display().to_string();
    let args = args(
        &["--source-url", &url, "--source-token-file", &token_path],
        &["--resync-interval", "300ms"],
    );
    let ic = Interceptor::start(&args).await.unwrap();
    wait_readyz(ic.admin_addr).await;
    let (_, body) = get(ic.admin_addr, "/routing-table").await;
    assert!(body.contains("a.example.com"), "{body}");
    // A change upstream reaches the interceptor through the cache.
    api.put_object(httpso("b")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        ic.sync.table.wait_for(|t| t.get("apps", "b").is_some()),
    )
    .await
    .expect("b arrived through the cache");
    ic.stop().await;
}

fn config_map(name: &str, labelled: bool, index: &str) -> Value {
    // `put_object` merges, so "unlabelled" is the label set to something else.
    let labels = json!({"http.keda.sh/response-body": if labelled { "true" } else { "false" }});
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "apps", "labels": labels},
        "data": {"index.html": index}
    })
}

/// The `index.html` of ConfigMap `apps/name` as the interceptor holds it.
fn held(ic: &Interceptor, name: &str) -> Option<String> {
    let bodies = ic.sync.endpoints.bodies();
    let body = bodies.get("apps", name)?.get("index.html")?;
    Some(String::from_utf8_lossy(body).into_owned())
}

/// Waits until every interceptor holds `want` for `name`.
async fn all_hold(ics: &[&Interceptor], name: &str, want: Option<&str>) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while ics.iter().any(|ic| held(ic, name).as_deref() != want) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let got: Vec<_> = ics.iter().map(|ic| held(ic, name)).collect();
        panic!("{name} is not {want:?} everywhere: {got:?}")
    });
}

#[tokio::test]
async fn response_body_config_maps_arrive_directly_and_through_a_cache() {
    const TOKEN: &str = "subscriber-token";
    let api = TestApi::start().await;
    api.put_object(config_map("pages", true, "home")).unwrap();
    api.put_object(config_map("other", false, "not ours"))
        .unwrap();
    let cache = start_cache(&api, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let (url, token_path) = (cache.url(), token_file.display().to_string());
    let direct = Interceptor::start(&api_args(&api)).await.unwrap();
    let cached = Interceptor::start(&args(
        &["--source-url", &url, "--source-token-file", &token_path],
        &[],
    ))
    .await
    .unwrap();
    wait_readyz(direct.admin_addr).await;
    wait_readyz(cached.admin_addr).await;
    let both = [&direct, &cached];
    // Ready means listed: the labelled ConfigMap is there, the other never is.
    for ic in both {
        assert_eq!(held(ic, "pages").as_deref(), Some("home"));
        assert_eq!(held(ic, "other"), None);
    }

    api.put_object(config_map("pages", true, "changed"))
        .unwrap();
    all_hold(&both, "pages", Some("changed")).await;
    // Labelled later: it starts serving; label removed: it stops.
    api.put_object(config_map("other", true, "now ours"))
        .unwrap();
    all_hold(&both, "other", Some("now ours")).await;
    api.put_object(config_map("other", false, "now ours"))
        .unwrap();
    all_hold(&both, "other", None).await;
    let gvr = testkit::ResourceDef::of::<k8s_openapi::api::core::v1::ConfigMap>()
        .gvr()
        .clone();
    api.delete_object(&gvr, "apps", "pages").unwrap();
    all_hold(&both, "pages", None).await;
    assert_eq!(held(&cached, "other"), None);
    direct.stop().await;
    cached.stop().await;
}
