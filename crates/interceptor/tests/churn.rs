//! No request fails while the routing table changes 100 times a second
//! (objects written to the test API server, delivered by watch).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use http::StatusCode;
use testkit::fixtures::{Hso, Slice, Svc};

fn httpso(name: &str, host: &str, paths: &[String]) -> serde_json::Value {
    paths
        .iter()
        .fold(Hso::new("ns", name).host(host), |o, p| o.path_prefix(p))
        .service("app", 80)
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failed_request_while_the_table_changes_100_times_a_second() {
    let api = testkit::TestApi::start().await;
    let backend = echo("app").await;
    api.put_object(Svc::new("ns", "app").port("http", 80).json())
        .unwrap();
    api.put_object(
        Slice::new("ns", "app-1", "app")
            .port("http", backend.port())
            .ready("127.0.0.1")
            .json(),
    )
    .unwrap();
    api.put_object(httpso("stable", "stable.test", &["/".into()]))
        .unwrap();

    let kubeconfig = api.kubeconfig_path().to_str().unwrap().to_string();
    let icp = interceptor::Interceptor::start(&args(
        &["--kubeconfig", &kubeconfig],
        &["--direct-pod-routing", "true"],
    ))
    .await
    .unwrap();
    tokio::time::timeout(WAIT, icp.sync.table.wait_ready())
        .await
        .unwrap();
    wait_route(&icp, "ns", "stable").await;
    wait_ready(&icp, "ns", "app").await;
    let start_version = icp.sync.table.load().version();

    // Churn: every 10 ms, rewrite the stable route (its extra paths change)
    // and add or rewrite another route.
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        let api = Arc::new(api);
        let api2 = api.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                n += 1;
                let extra = format!("/extra-{n}");
                api2.put_object(httpso("stable", "stable.test", &["/".into(), extra]))
                    .unwrap();
                let other = format!("churn-{}", n % 50);
                api2.put_object(httpso(&other, &format!("{other}.test"), &[format!("/{n}")]))
                    .unwrap();
            }
            n
        });
        (task, api)
    };

    // Steady load: 4 connections x 250 requests.
    let proxy = icp.proxy_addr;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            tokio::spawn(async move {
                let c = client();
                let mut failures = Vec::new();
                for i in 0..250 {
                    let path = format!("/w{w}/{i}");
                    let got = get_on(&c, proxy, "stable.test", &path).await;
                    if got.status != StatusCode::OK || got.server() != "app" {
                        failures.push(format!("{path}: {} {}", got.status, got.text()));
                    }
                }
                failures
            })
        })
        .collect();
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let writes = churn.0.await.unwrap();
    let versions = icp.sync.table.load().version() - start_version;
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    // The table really did change all along (bursts may be coalesced into
    // one publish, so count versions loosely).
    // At least 100 object writes a second on average (the ticker aims at 200).
    assert!(
        writes as f64 >= 50.0 * elapsed.as_secs_f64(),
        "{writes} churn rounds in {elapsed:?}"
    );
    assert!(versions > 0, "table never changed");
    eprintln!(
        "1000 requests in {elapsed:?}; {writes} churn rounds ({} object writes); {versions} table versions",
        writes * 2
    );
    let q = queue(&icp).await;
    assert_eq!(q["ns/stable"]["RequestCount"], 1000);
    assert_eq!(q["ns/stable"]["Concurrency"], 0);
    icp.stop().await;
}
