//! The scaler over real sockets: a tonic client against the scaler's gRPC
//! server, three interceptor pods served by HTTP servers answering
//! upstream's exact `/queue` JSON, the admin Service and its EndpointSlice
//! (and the routes) in testkit. The poller is driven by hand with a
//! simulated clock, so rates over a minute take no minute.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use scaler::proto::external_scaler_client::ExternalScalerClient;
use scaler::proto::{
    GetMetricsRequest, IsActiveResponse, MetricSpec, MetricValue, ScaledObjectRef,
};
use scaler::{Scaler, ScalerArgs, Ticking};
use serde_json::{Value, json};
use testkit::TestApi;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const ADMIN_NS: &str = "keda";
const ADMIN_SVC: &str = "keda-add-ons-http-interceptor-admin";

/// One simulated interceptor pod: `/queue` from `counts`, or no answer at
/// all while `hung`.
struct FakePod {
    addr: SocketAddr,
    counts: parking_lot::Mutex<BTreeMap<String, (i64, u64)>>,
    hung: AtomicBool,
    stop: CancellationToken,
}

impl FakePod {
    fn set(&self, key: &str, concurrency: i64, request_count: u64) {
        self.counts
            .lock()
            .insert(key.to_string(), (concurrency, request_count));
    }

    fn add_requests(&self, key: &str, n: u64) {
        self.counts.lock().entry(key.to_string()).or_default().1 += n;
    }

    /// Upstream's exact `/queue` body.
    fn queue_json(&self) -> String {
        let map: serde_json::Map<String, Value> = self
            .counts
            .lock()
            .iter()
            .map(|(k, (c, n))| (k.clone(), json!({"Concurrency": c, "RequestCount": n})))
            .collect();
        Value::Object(map).to_string()
    }
}

impl Drop for FakePod {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Three pods on 127.0.0.1, .2 and .3, one admin port (as pods of one
/// Deployment are: same port, different IPs).
async fn fake_pods() -> Vec<Arc<FakePod>> {
    'retry: loop {
        let first = process::http::listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in ["127.0.0.2", "127.0.0.3"] {
            match process::http::listen(SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)) {
                Ok(l) => listeners.push(l),
                Err(_) => continue 'retry,
            }
        }
        let mut pods = Vec::new();
        for l in listeners {
            let pod = Arc::new(FakePod {
                addr: l.local_addr().unwrap(),
                counts: parking_lot::Mutex::new(BTreeMap::new()),
                hung: AtomicBool::new(false),
                stop: CancellationToken::new(),
            });
            let p = Arc::downgrade(&pod);
            tokio::spawn(process::http::serve(
                l,
                move |_req| {
                    let p = p.clone();
                    async move {
                        let Some(p) = p.upgrade() else {
                            std::future::pending::<()>().await;
                            unreachable!()
                        };
                        if p.hung.load(Ordering::Relaxed) {
                            drop(p);
                            return std::future::pending().await;
                        }
                        let body = p.queue_json();
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .unwrap(),
                        )
                    }
                },
                pod.stop.clone(),
            ));
            pods.push(pod);
        }
        return pods;
    }
}

fn admin_service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": ADMIN_SVC, "namespace": ADMIN_NS},
        "spec": {"ports": [{"name": "admin", "port": 9090, "targetPort": "admin"}]}
    })
}

/// The admin Service's EndpointSlice listing `pods` as ready.
fn admin_slice(pods: &[&Arc<FakePod>]) -> Value {
    let port = pods.first().map_or(9090, |p| p.addr.port());
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|p| json!({"addresses": [p.addr.ip().to_string()], "conditions": {"ready": true}}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "admin-x1", "namespace": ADMIN_NS,
                     "labels": {"kubernetes.io/service-name": ADMIN_SVC}},
        "addressType": "IPv4",
        "ports": [{"name": "admin", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints
    })
}

/// An object `name` in the `apps` namespace.
fn in_apps(api_version: &str, kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": {"name": name, "namespace": "apps"},
        "spec": spec
    })
}

fn httpso(name: &str, scaling: Value) -> Value {
    let spec = json!({
        "hosts": [format!("{name}.example.com")],
        "scaleTargetRef": {"name": name, "kind": "Deployment", "apiVersion": "apps/v1",
                           "service": name, "port": 8080},
        "scalingMetric": scaling
    });
    in_apps("http.keda.sh/v1alpha1", "HTTPScaledObject", name, spec)
}

fn interceptor_route(name: &str, scaling: Value) -> Value {
    let spec = json!({
        "target": {"service": name, "port": 8080},
        "rules": [{"hosts": [format!("{name}.example.com")]}],
        "scalingMetric": scaling
    });
    in_apps("http.keda.sh/v1beta1", "InterceptorRoute", name, spec)
}

/// The route most tests use: HTTPScaledObject `web` on concurrency,
/// target 10.
fn web_on_concurrency() -> Value {
    httpso("web", json!({"concurrency": {"targetValue": 10}}))
}

struct Setup {
    api: TestApi,
    pods: Vec<Arc<FakePod>>,
    scaler: Scaler,
    client: ExternalScalerClient<Channel>,
}

impl Setup {
    /// testkit with the admin Service, its slice of three pods and
    /// `objects`; a scaler on it, ticking by hand.
    async fn start(objects: Vec<Value>, extra: &[&str]) -> Setup {
        let api = TestApi::start().await;
        let pods = fake_pods().await;
        api.put_object(admin_service()).unwrap();
        api.put_object(admin_slice(&pods.iter().collect::<Vec<_>>()))
            .unwrap();
        for o in objects {
            api.put_object(o).unwrap();
        }
        let kubeconfig = api.kubeconfig_path().display().to_string();
        let mut argv = vec![
            "scaler",
            "--kubeconfig",
            &kubeconfig,
            "--bind-address",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-port",
            "0",
            "--target-admin-namespace",
            ADMIN_NS,
            "--target-admin-service",
            ADMIN_SVC,
            "--target-admin-deployment",
            "keda-add-ons-http-interceptor",
            "--target-admin-port",
            "9090",
            "--fetch-timeout",
            "300ms",
            "--keep-unreachable",
            "5s",
        ];
        argv.extend_from_slice(extra);
        let scaler = start_scaler(&argv, 3).await;
        let client = scaler_client(scaler.grpc_addr).await;
        Setup {
            api,
            pods,
            scaler,
            client,
        }
    }

    fn poller(&mut self) -> &mut scaler::Poller {
        self.scaler.poller.as_mut().unwrap()
    }

    async fn wait_listed(&mut self, n: usize) {
        wait_listed(self.poller(), n).await;
    }

    async fn tick(&mut self, now_ms: u64) -> scaler::fleet::RoundSummary {
        self.poller().poll_once(Duration::from_millis(now_ms)).await
    }

    async fn specs(&mut self, r: ScaledObjectRef) -> Result<Vec<MetricSpec>, tonic::Status> {
        Ok(self
            .client
            .get_metric_spec(r)
            .await?
            .into_inner()
            .metric_specs)
    }

    async fn values(
        &mut self,
        r: ScaledObjectRef,
        metric: &str,
    ) -> Result<Vec<MetricValue>, tonic::Status> {
        Ok(self
            .client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(r),
                metric_name: metric.to_string(),
            })
            .await?
            .into_inner()
            .metric_values)
    }

    async fn active(&mut self, r: ScaledObjectRef) -> bool {
        self.client.is_active(r).await.unwrap().into_inner().result
    }

    async fn stream_active(&mut self, r: ScaledObjectRef) -> tonic::Streaming<IsActiveResponse> {
        self.client.stream_is_active(r).await.unwrap().into_inner()
    }
}

/// A scaler started from `argv`, ticking by hand, once its routing table
/// is ready and it lists `pods` interceptor pods.
async fn start_scaler(argv: &[&str], pods: usize) -> Scaler {
    let args = ScalerArgs::try_parse_from(argv).unwrap();
    let mut scaler = Scaler::start(&args, Ticking::Manual).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), scaler.sync.table.wait_ready())
        .await
        .expect("routing table ready");
    wait_listed(scaler.poller.as_mut().unwrap(), pods).await;
    scaler
}

async fn wait_listed(poller: &mut scaler::Poller, n: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while poller.listed().len() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} interceptor pods listed"));
}

async fn scaler_client(addr: SocketAddr) -> ExternalScalerClient<Channel> {
    ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn health_client(addr: SocketAddr) -> HealthClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel)
}

/// The next message of a stream (bounded wait, so a missing push fails).
async fn next(stream: &mut tonic::Streaming<IsActiveResponse>) -> IsActiveResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message")
        .unwrap()
        .unwrap()
}

/// The Prometheus text of the metrics server.
async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    c.read_to_string(&mut buf).await.unwrap();
    buf
}

fn so(name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    let mut scaler_metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // KEDA passes the whole trigger metadata; the address is always there.
    scaler_metadata.insert("scalerAddress".into(), "scaler.keda:9090".into());
    ScaledObjectRef {
        name: name.into(),
        namespace: "apps".into(),
        scaler_metadata,
    }
}

fn spec(name: &str, size: i64, float: f64) -> MetricSpec {
    MetricSpec {
        metric_name: name.into(),
        target_size: size,
        target_size_float: float,
    }
}

fn value(name: &str, v: i64, float: f64) -> MetricValue {
    MetricValue {
        metric_name: name.into(),
        metric_value: v,
        metric_value_float: float,
    }
}

/// Asserts that a call failed with `code` and a message naming `what`.
#[track_caller]
fn assert_status<T: std::fmt::Debug>(got: Result<T, tonic::Status>, code: Code, what: &str) {
    let err = got.unwrap_err();
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().contains(what), "{err:?}");
}

#[tokio::test]
async fn each_metadata_kind_reports_its_names_targets_and_values() {
    let mut s = Setup::start(
        vec![
            web_on_concurrency(),
            httpso("idle", json!({"concurrency": {"targetValue": 3}})),
            interceptor_route(
                "api",
                json!({"concurrency": {"targetValue": 7},
                       "requestRate": {"targetValue": 20, "window": "1m", "granularity": "1s"}}),
            ),
        ],
        &[],
    )
    .await;
    // In flight, held across three interceptors: web 2+3+1, api 1+0+3.
    let [p1, p2, p3] = [&s.pods[0], &s.pods[1], &s.pods[2]];
    p1.set("apps/web", 2, 10);
    p2.set("apps/web", 3, 10);
    p3.set("apps/web", 1, 10);
    p1.set("apps/api", 1, 0);
    p3.set("apps/api", 3, 0);
    for p in [p1, p2, p3] {
        p.set("apps/idle", 0, 0);
    }
    let round = s.tick(0).await;
    assert_eq!((round.listed, round.answered), (3, 3));

    let web = so("web-so", &[("httpScaledObject", "web")]);
    assert_eq!(
        s.specs(web.clone()).await.unwrap(),
        [spec("http-apps_002Fweb", 10, 0.0)]
    );
    // The metric name asked for is ignored for an HTTPScaledObject, as upstream.
    assert_eq!(
        s.values(web.clone(), "whatever").await.unwrap(),
        [value("http-apps_002Fweb", 6, 0.0)]
    );
    assert!(s.active(web).await);

    let idle = so("idle-so", &[("httpScaledObject", "idle")]);
    assert_eq!(
        s.values(idle.clone(), "").await.unwrap(),
        [value("http-apps_002Fidle", 0, 0.0)]
    );
    assert!(!s.active(idle).await);

    let api = so("api-so", &[("interceptorRoute", "api")]);
    assert_eq!(
        s.specs(api.clone()).await.unwrap(),
        [
            spec("http_api_concurrency", 0, 7.0),
            spec("http_api_rate", 0, 20.0)
        ]
    );
    assert_eq!(
        s.values(api.clone(), "").await.unwrap(),
        [
            value("http_api_concurrency", 0, 4.0),
            value("http_api_rate", 0, 0.0)
        ]
    );
    assert_eq!(
        s.values(api.clone(), "http_api_concurrency").await.unwrap(),
        [value("http_api_concurrency", 0, 4.0)]
    );
    assert_eq!(s.values(api.clone(), "http_other_rate").await.unwrap(), []);
    // Both keys: the InterceptorRoute wins, as upstream.
    let both = so(
        "both",
        &[("interceptorRoute", "api"), ("httpScaledObject", "web")],
    );
    assert_eq!(s.values(both, "").await.unwrap().len(), 2);

    // The interceptor fleet's own ScaledObject: every in-flight request.
    let fleet = ScaledObjectRef {
        namespace: "keda".into(),
        ..so(
            "keda-add-ons-http-interceptor",
            &[("interceptorTargetPendingRequests", "200")],
        )
    };
    assert_eq!(
        s.specs(fleet.clone()).await.unwrap(),
        [spec(
            "http-keda_002Fkeda-add-ons-http-interceptor",
            200,
            0.0
        )]
    );
    assert_eq!(
        s.values(fleet, "").await.unwrap(),
        [value(
            "http-keda_002Fkeda-add-ons-http-interceptor",
            10,
            0.0
        )]
    );

    // Errors name the key or the object.
    assert_status(
        s.specs(so("x", &[("interceptorRoute", "nope")])).await,
        Code::NotFound,
        "InterceptorRoute apps/nope",
    );
    assert_status(
        s.values(so("x", &[("httpScaledObject", "gone")]), "").await,
        Code::NotFound,
        "HTTPScaledObject apps/gone",
    );
    assert_status(
        s.client.is_active(so("x", &[("host", "a")])).await,
        Code::InvalidArgument,
        "keys given: host, scalerAddress",
    );
    assert_status(
        s.specs(so("x", &[("interceptorTargetPendingRequests", "many")]))
            .await,
        Code::InvalidArgument,
        "interceptorTargetPendingRequests",
    );
}

#[tokio::test]
async fn is_active_flips_and_the_stream_pushes_the_change_at_once() {
    // An interval of an hour: the only way a second message can come is
    // the push on change.
    let mut s = Setup::start(
        vec![web_on_concurrency()],
        &["--stream-interval-ms", "3600000"],
    )
    .await;
    for p in &s.pods {
        p.set("apps/web", 0, 0);
    }
    s.tick(0).await;
    let web = so("web-so", &[("httpScaledObject", "web")]);
    assert!(!s.active(web.clone()).await);
    let mut stream = s.stream_active(web.clone()).await;
    let first = next(&mut stream).await;
    assert!(!first.result, "sent when opened");

    s.pods[1].set("apps/web", 1, 1);
    s.tick(500).await;
    assert!(s.active(web.clone()).await);
    assert!(next(&mut stream).await.result, "pushed on change");

    s.pods[1].set("apps/web", 0, 1);
    s.tick(1000).await;
    assert!(!s.active(web).await);
    assert!(!next(&mut stream).await.result, "pushed on change");
}

#[tokio::test]
async fn streams_send_every_interval_and_end_cleanly_on_shutdown() {
    let mut s = Setup::start(
        vec![interceptor_route(
            "api",
            json!({"concurrency": {"targetValue": 7}}),
        )],
        &["--stream-interval-ms", "20"],
    )
    .await;
    s.tick(0).await;
    let api = so("api-so", &[("interceptorRoute", "api")]);
    let mut active = s.stream_active(api.clone()).await;
    let mut specs = s.client.stream_metric_spec(api).await.unwrap().into_inner();
    // Unchanged answers keep coming, every interval (as upstream).
    for _ in 0..3 {
        assert!(!active.message().await.unwrap().unwrap().result);
        assert_eq!(
            specs.message().await.unwrap().unwrap().metric_specs,
            [spec("http_api_concurrency", 0, 7.0)]
        );
    }
    // A spec change in the routing table is pushed.
    s.api
        .put_object(interceptor_route(
            "api",
            json!({"concurrency": {"targetValue": 9}}),
        ))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let got = specs.message().await.unwrap().unwrap().metric_specs;
            if got == [spec("http_api_concurrency", 0, 9.0)] {
                break;
            }
        }
    })
    .await
    .expect("the new target pushed");
    let Setup {
        scaler, mut client, ..
    } = s;
    let mut health = health_client(scaler.grpc_addr).await;
    let shutdown = tokio::spawn(scaler.shutdown());
    // Both streams end without an error status.
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = active.message().await.unwrap() {
            let _ = m;
        }
        while let Some(m) = specs.message().await.unwrap() {
            let _ = m;
        }
    })
    .await
    .expect("streams ended");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown finished")
        .unwrap();
    assert!(
        client
            .is_active(so("x", &[("interceptorRoute", "api")]))
            .await
            .is_err()
    );
    assert!(
        health
            .check(HealthCheckRequest {
                service: "readiness".into()
            })
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_steady_600_requests_over_60_simulated_seconds_is_10_per_second() {
    let mut s = Setup::start(
        vec![
            interceptor_route(
                "api",
                json!({"requestRate": {"targetValue": 20, "window": "1m", "granularity": "1s"}}),
            ),
            httpso(
                "web",
                json!({"requestRate": {"targetValue": 5, "window": "1m", "granularity": "1s"}}),
            ),
        ],
        &[],
    )
    .await;
    for p in &s.pods {
        p.set("apps/api", 0, 1000); // history before the scaler started: not a rate
        p.set("apps/web", 0, 0);
    }
    s.tick(0).await;
    // 600 requests, evenly over 60 s: 5 per 500 ms tick, spread over the pods.
    let mut sent = 0u64;
    for tick in 1..=120u64 {
        for _ in 0..5 {
            let pod = &s.pods[(sent % 3) as usize];
            pod.add_requests("apps/api", 1);
            pod.add_requests("apps/web", 1);
            sent += 1;
        }
        s.tick(tick * 500).await;
    }
    assert_eq!(sent, 600);
    let api = so("api-so", &[("interceptorRoute", "api")]);
    let rate = s.values(api, "http_api_rate").await.unwrap()[0].metric_value_float;
    assert!((rate - 10.0).abs() <= 0.5, "rate {rate}, want 10 ± 5 %");
    // An HTTPScaledObject on the rate reports it rounded up.
    let web = so("web-so", &[("httpScaledObject", "web")]);
    assert_eq!(
        s.values(web, "").await.unwrap(),
        [value("http-apps_002Fweb", 10, 0.0)]
    );
}

#[tokio::test]
async fn a_hung_pod_keeps_its_share_for_a_while_and_a_vanished_pod_leaves() {
    let mut s = Setup::start(vec![web_on_concurrency()], &[]).await;
    for (i, p) in s.pods.iter().enumerate() {
        p.set("apps/web", i as i64 + 1, 0); // 1 + 2 + 3
    }
    s.tick(0).await;
    let web = so("web-so", &[("httpScaledObject", "web")]);
    assert_eq!(s.values(web.clone(), "").await.unwrap()[0].metric_value, 6);

    // Pod 3 hangs: the round still ends (its fetch times out) and its last
    // counts stay for --keep-unreachable (5 s).
    s.pods[2].hung.store(true, Ordering::Relaxed);
    s.pods[0].set("apps/web", 0, 0);
    let round = s.tick(1000).await;
    assert_eq!((round.answered, round.unreachable), (2, 1));
    assert_eq!(s.values(web.clone(), "").await.unwrap()[0].metric_value, 5);
    // The metrics say which pod failed.
    let metrics = scrape(s.scaler.metrics_addr.unwrap()).await;
    let hung = format!(
        "scaler_pinger_fetch_errors_total{{pod=\"{}\"}} 1",
        s.pods[2].addr
    );
    for line in [
        hung.as_str(),
        "scaler_pinger_unreachable_pods 1",
        "scaler_pinger_endpoints 3",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    assert!(
        metrics.contains("scaler_pinger_fetch_duration_seconds_count 2"),
        "{metrics}"
    );
    let round = s.tick(7000).await;
    assert_eq!((round.answered, round.dropped), (2, 1));
    assert_eq!(s.values(web.clone(), "").await.unwrap()[0].metric_value, 2);

    // Pod 2 leaves the EndpointSlice: its share goes at once.
    let remaining = [&s.pods[0], &s.pods[2]];
    s.api.put_object(admin_slice(&remaining)).unwrap();
    s.wait_listed(2).await;
    let round = s.tick(7500).await;
    assert_eq!(round.dropped, 1);
    assert_eq!(s.values(web.clone(), "").await.unwrap()[0].metric_value, 0);

    // The hung pod recovers: it counts again.
    s.pods[2].set("apps/web", 4, 0);
    s.pods[2].hung.store(false, Ordering::Relaxed);
    s.tick(8000).await;
    assert_eq!(s.values(web, "").await.unwrap()[0].metric_value, 4);
}

#[tokio::test]
async fn a_counter_reset_counts_the_new_requests_only() {
    let mut s = Setup::start(
        vec![interceptor_route(
            "api",
            json!({"requestRate": {"targetValue": 20, "window": "10s", "granularity": "1s"}}),
        )],
        &[],
    )
    .await;
    for p in &s.pods {
        p.set("apps/api", 0, 100);
    }
    s.tick(0).await;
    s.pods[0].set("apps/api", 0, 110); // +10
    s.tick(1000).await;
    // Pod 1 restarts: its counter starts again at 0 and counts 5.
    s.pods[0].set("apps/api", 0, 5);
    s.tick(2000).await;
    let api = so("api-so", &[("interceptorRoute", "api")]);
    let rate = s.values(api, "http_api_rate").await.unwrap()[0].metric_value_float;
    // 15 requests over 3 one-second buckets; a reset read as a negative
    // delta (or as 5 - 110) would give something else.
    assert!((rate - 5.0).abs() < 1e-9, "rate {rate}");
}

#[tokio::test]
async fn health_is_not_serving_until_a_round_succeeds_and_after_two_failed_rounds() {
    let mut s = Setup::start(vec![web_on_concurrency()], &[]).await;
    let mut health = health_client(s.scaler.grpc_addr).await;
    let mut status = async |name: &str| {
        health
            .check(HealthCheckRequest {
                service: name.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status()
    };
    for name in ["", "liveness", "readiness"] {
        assert_eq!(status(name).await, ServingStatus::NotServing, "{name:?}");
    }
    s.tick(0).await;
    for name in ["", "liveness", "readiness"] {
        assert_eq!(status(name).await, ServingStatus::Serving, "{name:?}");
    }
    for p in &s.pods {
        p.hung.store(true, Ordering::Relaxed);
    }
    s.tick(500).await;
    assert_eq!(
        status("readiness").await,
        ServingStatus::Serving,
        "one failed round"
    );
    s.tick(1000).await;
    for name in ["", "liveness", "readiness"] {
        assert_eq!(status(name).await, ServingStatus::NotServing, "{name:?}");
    }
    s.pods[0].hung.store(false, Ordering::Relaxed);
    s.tick(1500).await;
    assert_eq!(status("readiness").await, ServingStatus::Serving);
}

#[tokio::test]
async fn runs_without_a_cluster_on_a_routes_directory() {
    let pods = fake_pods().await;
    for p in &pods {
        p.set("apps/web", 1, 0);
    }
    let dir = tempfile::tempdir().unwrap();
    let manifests: Vec<String> = [
        admin_service(),
        admin_slice(&pods.iter().collect::<Vec<_>>()),
        web_on_concurrency(),
    ]
    .iter()
    .map(|v| serde_json::to_string(v).unwrap())
    .collect();
    // JSON is YAML: one document per manifest.
    std::fs::write(dir.path().join("all.yaml"), manifests.join("\n---\n")).unwrap();
    let dir_arg = dir.path().display().to_string();
    let mut scaler = start_scaler(
        &[
            "scaler",
            "--routes-dir",
            &dir_arg,
            "--bind-address",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-enabled",
            "false",
            "--target-admin-namespace",
            ADMIN_NS,
            "--target-admin-service",
            ADMIN_SVC,
            "--target-admin-deployment",
            "interceptor",
            "--target-admin-port",
            "9090",
        ],
        3,
    )
    .await;
    scaler
        .poller
        .as_mut()
        .unwrap()
        .poll_once(Duration::ZERO)
        .await;
    let mut client = scaler_client(scaler.grpc_addr).await;
    let values = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so("web-so", &[("httpScaledObject", "web")])),
            metric_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .metric_values;
    assert_eq!(values, [value("http-apps_002Fweb", 3, 0.0)]);
}
