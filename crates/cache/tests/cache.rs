//! The cache over real sockets with testkit as its upstream, and real `sync`
//! loops as subscribers (over HTTP/2 with `kubewatch::client`). Every wait is
//! bounded, so a failing test fails instead of hanging. At the end, the
//! subscriber port's connection limits against hostile clients.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cache::{Authenticator, Cache, CacheConfig, interceptor_resources};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sync::{Source, SyncConfig, SyncHandle};
use testkit::TestApi;
use testkit::fixtures::{Hso, Ir, Svc};
use testkit::hostile::{Slowloris, open_http1 as open, until_closed};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TOKEN: &str = "subscriber-token";
const WAIT: Duration = Duration::from_secs(15);

fn httpso(name: &str, host: &str, service: &str) -> Value {
    Hso::new("apps", name)
        .host(host)
        .service(service, 8080)
        .json()
}

fn config_at(listen: SocketAddr) -> CacheConfig {
    CacheConfig {
        listen,
        ..CacheConfig::default()
    }
}

async fn start_cache(upstream: kube::Client, listen: SocketAddr) -> Cache {
    start_cache_with(upstream, config_at(listen)).await
}

async fn start_cache_with(upstream: kube::Client, config: CacheConfig) -> Cache {
    let mut registry = prometheus_client::registry::Registry::default();
    Cache::start(
        upstream,
        config,
        Authenticator::tokens([TOKEN.to_string()]),
        &mut registry,
    )
    .await
    .expect("cache starts")
}

/// A cache on an ephemeral port, once it is ready.
async fn ready_cache(upstream: kube::Client) -> Cache {
    let cache = start_cache(upstream, "127.0.0.1:0".parse().unwrap()).await;
    tokio::time::timeout(WAIT, cache.wait_ready())
        .await
        .unwrap();
    cache
}

fn h2_client(url: &str) -> kube::Client {
    let mut c = kubewatch::client::CacheClientConfig::new(url.parse().unwrap());
    c.token = Some(TOKEN.to_string());
    kubewatch::client::cache_client(c).unwrap()
}

fn subscribe(client: kube::Client) -> SyncHandle {
    let mut registry = prometheus_client::registry::Registry::default();
    let config = SyncConfig {
        resync_interval: Duration::from_millis(300),
        endpoints: false,
        ..SyncConfig::default()
    };
    sync::start(Source::Kubernetes(client), config, &mut registry)
}

async fn ready(h: &SyncHandle) {
    tokio::time::timeout(WAIT, h.table.wait_ready())
        .await
        .expect("subscriber ready");
}

/// namespace/name -> target service, for every route in the table.
fn routes(t: &routing::RoutingTable) -> BTreeMap<String, String> {
    t.routes()
        .map(|r| {
            (
                format!("{}/{}", r.namespace(), r.name()),
                r.target.service.to_string(),
            )
        })
        .collect()
}

async fn until(h: &SyncHandle, what: &str, mut pred: impl FnMut(&routing::RoutingTable) -> bool) {
    if tokio::time::timeout(WAIT, h.table.wait_for(|t| pred(t)))
        .await
        .is_err()
    {
        panic!(
            "timed out waiting for: {what}; table = {:?}",
            routes(&h.table.load())
        );
    }
}

fn service_of(t: &routing::RoutingTable, host: &str) -> Option<String> {
    t.lookup(host, "/", &routing::NoHeaders)
        .map(|m| m.route.target.service.to_string())
}

/// One HTTP/1.1 GET or other method; returns status, headers, body.
async fn http1(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// The status of an authorized conditional GET.
async fn get_if_none_match(cache: &Cache, path: &str, etag: &str) -> http::StatusCode {
    let auth = format!("Bearer {TOKEN}");
    let headers = [("authorization", auth.as_str()), ("if-none-match", etag)];
    http1(cache.addr(), "GET", path, &headers).await.0
}

#[tokio::test]
async fn subscriber_through_cache_sees_the_same_table_as_one_on_the_api() {
    let api = TestApi::start().await;
    api.put_object(httpso("a", "a.example.com", "svc-a"))
        .unwrap();
    api.put_object(
        Ir::new("apps", "r")
            .host("r.example.com")
            .service("svc-r", 80)
            .json(),
    )
    .unwrap();
    let cache = ready_cache(api.client()).await;

    let direct = subscribe(api.client());
    let via = subscribe(h2_client(&cache.url()));
    ready(&direct).await;
    ready(&via).await;
    assert_eq!(routes(&direct.table.load()), routes(&via.table.load()));
    assert_eq!(routes(&via.table.load()).len(), 2);

    // Create, modify, delete: both converge to the same table.
    api.put_object(httpso("b", "b.example.com", "svc-b"))
        .unwrap();
    api.put_object(httpso("a", "a.example.com", "svc-a2"))
        .unwrap();
    api.delete_object(&Ir::gvr(), "apps", "r").unwrap();
    let want: BTreeMap<String, String> = [
        ("apps/a".to_string(), "svc-a2".to_string()),
        ("apps/b".to_string(), "svc-b".to_string()),
    ]
    .into();
    until(&direct, "direct converged", |t| routes(t) == want).await;
    until(&via, "through the cache converged", |t| routes(t) == want).await;
    assert!(cache.metrics().events_fanned_out.get() >= 3);
}

#[tokio::test]
async fn chained_caches_serve_the_same_table() {
    let api = TestApi::start().await;
    api.put_object(httpso("a", "a.example.com", "svc-a"))
        .unwrap();
    let first = start_cache(api.client(), "127.0.0.1:0".parse().unwrap()).await;
    let second = ready_cache(h2_client(&first.url())).await;
    let leaf = subscribe(h2_client(&second.url()));
    ready(&leaf).await;
    assert_eq!(
        service_of(&leaf.table.load(), "a.example.com").as_deref(),
        Some("svc-a")
    );
    api.put_object(httpso("a", "a.example.com", "svc-a3"))
        .unwrap();
    until(&leaf, "change through two caches", |t| {
        service_of(t, "a.example.com").as_deref() == Some("svc-a3")
    })
    .await;
    // The second cache mirrors the first's resourceVersions, which mirror the API's.
    let rv = api.resource_version();
    let s = second.stores().get(&Hso::gvr()).unwrap();
    assert!(s.wait_for(rv - 1, WAIT).await);
    // One watch per resource from the second cache on the first.
    assert_eq!(first.watcher_count(), interceptor_resources().len());
}

#[tokio::test]
async fn requests_without_a_token_get_401_and_writes_405() {
    let api = TestApi::start().await;
    let cache = ready_cache(api.client()).await;
    let path = "/apis/http.keda.sh/v1alpha1/httpscaledobjects";

    let (status, _, body) = http1(cache.addr(), "GET", path, &[]).await;
    assert_eq!(status, 401);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["reason"], "Unauthorized");

    let (status, _, _) = http1(
        cache.addr(),
        "GET",
        path,
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(status, 401);

    let auth = format!("Bearer {TOKEN}");
    let (status, _, body) = http1(cache.addr(), "POST", path, &[("authorization", &auth)]).await;
    assert_eq!(status, 405);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "MethodNotAllowed");

    // Health needs no token; discovery does.
    let (status, _, _) = http1(cache.addr(), "GET", "/readyz", &[]).await;
    assert_eq!(status, 200);
    let (status, _, body) = http1(cache.addr(), "GET", "/apis", &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "APIGroupList");
}

#[tokio::test]
async fn unchanged_list_is_304_without_a_body() {
    let api = TestApi::start().await;
    api.put_object(httpso("a", "a.example.com", "svc-a"))
        .unwrap();
    let cache = ready_cache(api.client()).await;
    let path = "/apis/http.keda.sh/v1alpha1/httpscaledobjects?resourceVersion=0";
    let auth = format!("Bearer {TOKEN}");

    let (status, headers, body) =
        http1(cache.addr(), "GET", path, &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    let etag = headers[http::header::ETAG].to_str().unwrap().to_string();
    // The connection-level session grant that lets kubewatch::client omit its token.
    assert_eq!(headers[wire::SESSION_HEADER], "600");
    assert_eq!(
        etag,
        format!("\"{}\"", v["metadata"]["resourceVersion"].as_str().unwrap())
    );

    let (status, _, body) = http1(
        cache.addr(),
        "GET",
        path,
        &[("authorization", &auth), ("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, 304);
    assert!(body.is_empty());

    // The same over HTTP/2.
    let client = h2_client(&cache.url());
    let req = http::Request::get(path)
        .header(http::header::IF_NONE_MATCH, &etag)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.version(), http::Version::HTTP_2);

    // A content digest of exactly what the client holds is a 304 too.
    let items = v["items"].as_array().unwrap();
    let held: Vec<(String, String, String)> = items
        .iter()
        .map(|o| {
            let m = &o["metadata"];
            (
                m["namespace"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
                m["resourceVersion"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let d = wire::digest::content_digest(
        held.iter()
            .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
    );
    let token = format!("\"0\", {}", wire::digest::entity_tag(d));
    let status = get_if_none_match(&cache, path, &token).await;
    assert_eq!(status, 304);
    let stale = wire::digest::entity_tag(wire::digest::from_sum(d + 1));
    let status = get_if_none_match(&cache, path, &stale).await;
    assert_eq!(status, 200);

    // A change makes the old ETag stale.
    api.put_object(httpso("b", "b.example.com", "svc-b"))
        .unwrap();
    let s = cache.stores().get(&Hso::gvr()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.get("apps", "b").is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cache got the change"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = get_if_none_match(&cache, path, &etag).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn not_ready_until_the_upstream_answers() {
    let api = TestApi::start().await;
    api.faults().go_down().await;
    let cache = start_cache(api.client(), "127.0.0.1:0".parse().unwrap()).await;
    let auth = format!("Bearer {TOKEN}");
    let (status, _, _) = http1(cache.addr(), "GET", "/readyz", &[]).await;
    assert_eq!(status, 503);
    let (status, _, body) = http1(
        cache.addr(),
        "GET",
        "/apis/http.keda.sh/v1alpha1/httpscaledobjects",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(status, 503);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "ServiceUnavailable");
    api.faults().come_up().await.unwrap();
    tokio::time::timeout(WAIT, cache.wait_ready())
        .await
        .unwrap();
    let (status, _, _) = http1(cache.addr(), "GET", "/readyz", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn subscriber_survives_an_upstream_outage_and_a_cache_restart() {
    let api = TestApi::start().await;
    api.put_object(httpso("a", "a.example.com", "svc-a"))
        .unwrap();
    api.put_object(httpso("gone", "gone.example.com", "svc-gone"))
        .unwrap();
    let cache = ready_cache(api.client()).await;
    let addr = cache.addr();
    let sub = subscribe(h2_client(&cache.url()));
    ready(&sub).await;
    assert_eq!(routes(&sub.table.load()).len(), 2);

    // Upstream outage: the cache keeps serving its last state...
    api.faults().go_down().await;
    api.put_object(httpso("a", "a.example.com", "svc-a-during-outage"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await; // a few resync periods
    assert_eq!(
        service_of(&sub.table.load(), "a.example.com").as_deref(),
        Some("svc-a")
    );
    assert!(sub.table.is_ready());
    // ...and catches up when the upstream returns, without subscribers relisting.
    api.faults().come_up().await.unwrap();
    until(&sub, "change made during the outage", |t| {
        service_of(t, "a.example.com").as_deref() == Some("svc-a-during-outage")
    })
    .await;

    // Cache restart: a delete happens while no cache runs.
    cache.shutdown().await;
    api.delete_object(&Hso::gvr(), "apps", "gone").unwrap();
    api.put_object(httpso("c", "c.example.com", "svc-c"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sub.table.is_ready(),
        "keeps its table while the cache is away"
    );
    let restarted = start_cache(api.client(), addr).await;
    until(&sub, "no stale route after the cache restart", |t| {
        service_of(t, "gone.example.com").is_none()
            && service_of(t, "c.example.com").as_deref() == Some("svc-c")
            && service_of(t, "a.example.com").as_deref() == Some("svc-a-during-outage")
    })
    .await;
    assert!(restarted.is_ready());
}

#[tokio::test]
async fn kube_discovery_and_typed_lists_work_through_the_cache() {
    let api = TestApi::start().await;
    api.put_object(Svc::new("apps", "svc-a").port("", 80).json())
        .unwrap();
    let cache = ready_cache(api.client()).await;
    let client = h2_client(&cache.url());
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    let groups: Vec<String> = discovery.groups().map(|g| g.name().to_string()).collect();
    assert!(groups.contains(&"http.keda.sh".to_string()), "{groups:?}");
    let svcs: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(client, "apps");
    let list = svcs.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn tls_with_alpn_h2() {
    let api = TestApi::start().await;
    api.put_object(httpso("a", "a.example.com", "svc-a"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let config = CacheConfig {
        tls: Some((cert, key)),
        ..CacheConfig::default()
    };
    let cache = start_cache_with(api.client(), config).await;
    assert!(cache.url().starts_with("https://"));
    tokio::time::timeout(WAIT, cache.wait_ready())
        .await
        .unwrap();
    let mut c = kubewatch::client::CacheClientConfig::new(cache.url().parse().unwrap());
    c.token = Some(TOKEN.to_string());
    c.root_certs_pem = Some(ck.cert.pem().into_bytes());
    let client = kubewatch::client::cache_client(c).unwrap();
    let req = http::Request::get("/apis/http.keda.sh/v1alpha1/httpscaledobjects")
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = client.send(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let sub = subscribe(client);
    ready(&sub).await;
    assert_eq!(
        service_of(&sub.table.load(), "a.example.com").as_deref(),
        Some("svc-a")
    );
}

// The subscriber port under hostile clients: a slowloris client is
// disconnected while a subscriber is served, past the connection cap new
// connections are closed while the open ones keep working, and an oversized
// request head gets 431.

/// A ready cache whose subscriber port has the default limits, changed by
/// `set`.
async fn limited_cache(api: &TestApi, set: impl FnOnce(&mut process::http::Limits)) -> Cache {
    let mut config = CacheConfig::default();
    set(&mut config.limits);
    let cache = start_cache_with(api.client(), config).await;
    tokio::time::timeout(WAIT, cache.wait_ready())
        .await
        .expect("cache ready");
    cache
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A list of HTTPScaledObjects over `send`; its status.
async fn list(send: &mut Sender) -> u16 {
    let req = http::Request::get("/apis/http.keda.sh/v1alpha1/httpscaledobjects")
        .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(WAIT, send.send_request(req))
        .await
        .expect("answered in time")
        .expect("served");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

async fn wait_open(cache: &Cache, want: i64) {
    let wait = async {
        while cache.metrics().connections.open.get() != want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("never {want} open connections"));
}

#[tokio::test]
async fn slowloris_is_closed_while_a_subscriber_is_served() {
    let api = TestApi::start().await;
    let cache = limited_cache(&api, |l| l.header_read_timeout = Duration::from_secs(1)).await;
    let slow = Slowloris::start(cache.addr(), "GET /apis HTTP/1.1\r\nHost: cache\r\n").await;
    let mut subscriber = open(cache.addr()).await;
    for _ in 0..5 {
        assert_eq!(list(&mut subscriber).await, 200);
    }
    slow.closed().await;
    // A silent connection is closed too.
    let mut silent = TcpStream::connect(cache.addr()).await.unwrap();
    assert_eq!(until_closed(&mut silent).await, "");
    assert!(cache.metrics().connections.without_request.get() >= 1);
    cache.shutdown().await;
}

#[tokio::test]
async fn past_the_cap_new_connections_are_closed_and_open_ones_work() {
    let api = TestApi::start().await;
    let cache = limited_cache(&api, |l| l.max_connections = 2).await;
    let mut a = open(cache.addr()).await;
    let mut b = open(cache.addr()).await;
    wait_open(&cache, 2).await;
    let mut c = TcpStream::connect(cache.addr()).await.unwrap();
    let _ = c
        .write_all(b"GET /livez HTTP/1.1\r\nHost: cache\r\n\r\n")
        .await;
    assert_eq!(until_closed(&mut c).await, "", "no response over the cap");
    assert_eq!(cache.metrics().connections.refused.get(), 1);
    for _ in 0..3 {
        assert_eq!(list(&mut a).await, 200);
        assert_eq!(list(&mut b).await, 200);
    }
    drop(a);
    wait_open(&cache, 1).await;
    assert_eq!(list(&mut open(cache.addr()).await).await, 200);
    cache.shutdown().await;
}

#[tokio::test]
async fn an_oversized_request_head_gets_431() {
    let api = TestApi::start().await;
    let cache = limited_cache(&api, |_| {}).await;
    let mut s = TcpStream::connect(cache.addr()).await.unwrap();
    let big = "a".repeat(process::http::Limits::DEFAULT_MAX_HEADER_BYTES + 1024);
    // The server may answer and close before the whole head is written.
    let _ = s
        .write_all(format!("GET /livez HTTP/1.1\r\nHost: cache\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await;
    let got = until_closed(&mut s).await;
    assert!(
        got.starts_with("HTTP/1.1 431 "),
        "{}",
        got.lines().next().unwrap_or("")
    );
    cache.shutdown().await;
}
