//! `http-addon scaler` and three `http-addon interceptor` processes against
//! testkit, with a tonic client in KEDA's place: scale from zero end to
//! end, over the compact `/queue` form the scaler negotiates with real
//! interceptors.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Proc, client, free_port, get};
use scaler::proto::external_scaler_client::ExternalScalerClient;
use scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use serde_json::json;
use testkit::TestApi;
use tonic::transport::Channel;

const ADMIN_SVC: &str = "interceptor-admin";

/// Waits (bounded) until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("never: {what}"));
}

/// (IsActive, the metric's value) for the HTTPScaledObject `app`.
async fn observe(client: &mut ExternalScalerClient<Channel>) -> Option<(bool, i64)> {
    let so = ScaledObjectRef {
        name: "app".into(),
        namespace: "apps".into(),
        scaler_metadata: HashMap::from([("httpScaledObject".into(), "app".into())]),
    };
    let active = client.is_active(so.clone()).await.ok()?.into_inner().result;
    let values = client
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(so),
            metric_name: "http-apps_002Fapp".into(),
        })
        .await
        .ok()?
        .into_inner()
        .metric_values;
    assert_eq!(values.len(), 1);
    assert_eq!(values[0].metric_name, "http-apps_002Fapp");
    Some((active, values[0].metric_value))
}

fn app_slice(ready: Option<u16>) -> serde_json::Value {
    let (endpoints, port) = match ready {
        Some(port) => (
            json!([{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]),
            port,
        ),
        None => (json!([]), 8080),
    };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "app-1", "namespace": "apps",
                     "labels": {"kubernetes.io/service-name": "app"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": endpoints
    })
}

#[tokio::test]
async fn scale_from_zero_end_to_end() {
    let api = TestApi::start().await;
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let admin_port = free_port();
    let proxy_port = free_port();
    // The app: an HTTPScaledObject whose Service has no ready endpoint.
    api.put_object(json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": "app", "namespace": "apps"},
        "spec": {"hosts": ["app.example.com"],
                 "scaleTargetRef": {"name": "app", "kind": "Deployment", "apiVersion": "apps/v1",
                                    "service": "app", "port": 8080},
                 "scalingMetric": {"concurrency": {"targetValue": 1}}}
    }))
    .unwrap();
    api.put_object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "app", "namespace": "apps"},
        "spec": {"ports": [{"name": "http", "port": 8080}]}
    }))
    .unwrap();
    api.put_object(app_slice(None)).unwrap();
    // The interceptor admin Service: three pods, 127.0.0.1 to .3.
    api.put_object(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": ADMIN_SVC, "namespace": "keda"},
        "spec": {"ports": [{"name": "admin", "port": 9090, "targetPort": admin_port}]}
    }))
    .unwrap();
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    api.put_object(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "admin-1", "namespace": "keda",
                     "labels": {"kubernetes.io/service-name": ADMIN_SVC}},
        "addressType": "IPv4",
        "ports": [{"name": "admin", "port": admin_port}],
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip]})).collect::<Vec<_>>()
    }))
    .unwrap();

    let _interceptors: Vec<Proc> = ips
        .iter()
        .map(|ip| {
            Proc(
                Command::new(BIN)
                    .args(["interceptor", "--kubeconfig", &kubeconfig])
                    .args(["--bind-address", ip])
                    .args(["--proxy-port", &proxy_port.to_string()])
                    .args(["--admin-port", &admin_port.to_string()])
                    .args(["--metrics-port", "0", "--direct-pod-routing", "true"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let grpc_port = free_port();
    let _scaler = Proc(
        Command::new(BIN)
            .args(["scaler", "--kubeconfig", &kubeconfig])
            .args(["--bind-address", "127.0.0.1"])
            .args(["--port", &grpc_port.to_string(), "--metrics-port", "0"])
            .args(["--target-admin-namespace", "keda"])
            .args(["--target-admin-service", ADMIN_SVC])
            .args(["--target-admin-deployment", "interceptor"])
            .args(["--target-admin-port", "9090"])
            .args(["--queue-tick-duration", "100ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = client();
    for ip in ips {
        let readyz = format!("http://{ip}:{admin_port}/readyz");
        eventually("interceptor ready", async || {
            matches!(get(&http, &readyz, "admin").await, Ok((200, _)))
        })
        .await;
    }
    let mut keda = None;
    eventually("scaler answers", async || {
        keda = ExternalScalerClient::connect(format!("http://127.0.0.1:{grpc_port}"))
            .await
            .ok();
        keda.is_some()
    })
    .await;
    let mut keda = keda.unwrap();
    eventually("scaler reports the idle app", async || {
        observe(&mut keda).await == Some((false, 0))
    })
    .await;

    // One request arrives at the second interceptor and is held: no endpoint.
    let held = {
        let http = http.clone();
        let url = format!("http://127.0.0.2:{proxy_port}/hello");
        tokio::spawn(async move { get(&http, &url, "app.example.com").await })
    };
    eventually("scaler reports IsActive true and metric 1", async || {
        observe(&mut keda).await == Some((true, 1))
    })
    .await;
    assert!(!held.is_finished(), "the request waits for an endpoint");

    // The app becomes ready: the request completes, the metric returns to 0.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_port = backend.local_addr().unwrap().port();
    tokio::spawn(
        echo::Echo::new(echo::EchoArgs {
            name: "app".into(),
            ..echo::EchoArgs::default()
        })
        .serve(backend),
    );
    api.put_object(app_slice(Some(backend_port))).unwrap();
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), held)
        .await
        .expect("the held request completes")
        .unwrap()
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    eventually("scaler reports IsActive false and metric 0", async || {
        observe(&mut keda).await == Some((false, 0))
    })
    .await;
}
