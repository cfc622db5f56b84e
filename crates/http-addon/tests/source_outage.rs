//! An outage of the routes source is reported as an operator wants to read
//! it (issue 17): one WARN when the source becomes unreachable, reminders at
//! most every 30 s, one INFO when it is back, and `routing_source_up` 0 then
//! 1; the kube client's own per-request errors are not logged. Each test runs
//! the real `http-addon interceptor` with the default log filter.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use testkit::fixtures::Hso;

/// Spawns `cmd` reading from `source`, with the default log level and no
/// kubeconfig from the environment, logging to `log`.
fn spawn_logged(cmd: &mut Command, source: &[&str], log: &Path) -> Proc {
    cmd.args(source)
        .env_remove("RUST_LOG")
        .env_remove("KUBECONFIG");
    spawn(cmd, Some(log))
}

/// A cache on free ports reading from `source`, logging to `log`; returns it
/// and its (serving, metrics) ports.
fn spawn_cache(source: &[&str], log: &Path) -> (Proc, u16, u16) {
    let (port, metrics) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["cache", "--bind-address", "127.0.0.1", "--allow-anonymous"])
        .args(["--port", &port.to_string()])
        .args(["--metrics-port", &metrics.to_string()]);
    (spawn_logged(&mut cmd, source, log), port, metrics)
}

/// An interceptor on free ports, logging to `log`; returns it and its
/// (admin, metrics) ports.
fn spawn_interceptor(source: &[&str], log: &Path) -> (Proc, u16, u16) {
    let ports = InterceptorPorts::free();
    let mut cmd = Command::new(BIN);
    cmd.arg("interceptor").args(ports.flags());
    (
        spawn_logged(&mut cmd, source, log),
        ports.admin,
        ports.metrics,
    )
}

async fn source_up(client: &HttpClient, metrics_port: u16) -> Option<f64> {
    let url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let (_, body) = get(client, &url, "metrics").await.ok()?;
    gauge(&String::from_utf8_lossy(&body), "routing_source_up")
}

/// Polls `routing_source_up` until it reads `want`.
async fn wait_source_up(client: &HttpClient, metrics_port: u16, want: f64, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while source_up(client, metrics_port).await != Some(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "routing_source_up never read {want}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lines at WARN or above, and the recovery lines, of a log.
fn warnings_and_recoveries(log: &Path) -> (Vec<String>, usize) {
    let text = std::fs::read_to_string(log).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .map(str::to_string)
        .collect();
    let recoveries = text
        .lines()
        .filter(|l| l.contains(" INFO ") && l.contains("source reachable again"))
        .count();
    (warnings, recoveries)
}

/// Polls `url` until it answers 200 (30 s at most; the log is shown if not).
async fn wait_ok(client: &HttpClient, url: &str, log: &Path) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !matches!(get(client, url, "probe").await, Ok((200, _))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never ready:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Takes the API down for 10 s (after `routing_source_up` read 1), brings
/// it back, and checks the outage cost 1-3 WARN lines and one recovery line.
async fn outage_of_10_s(api: &testkit::TestApi, client: &HttpClient, metrics: u16, log: &Path) {
    assert_eq!(source_up(client, metrics).await, Some(1.0));
    api.faults().go_down().await;
    wait_source_up(client, metrics, 0.0, log).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    api.faults().come_up().await.unwrap();
    wait_source_up(client, metrics, 1.0, log).await;

    let (warnings, recoveries) = warnings_and_recoveries(log);
    assert!(
        (1..=3).contains(&warnings.len()),
        "{} WARN/ERROR lines for a 10 s outage:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert_eq!(recoveries, 1, "{}", std::fs::read_to_string(log).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_source_is_one_warning_not_one_per_retry() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("interceptor.log");
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (mut proc, _, metrics) = spawn_interceptor(&["--source-url", &dead], &log);
    let client = client();
    wait_source_up(&client, metrics, 0.0, &log).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(source_up(&client, metrics).await, Some(0.0));
    assert!(
        proc.0.try_wait().unwrap().is_none(),
        "the interceptor exited"
    );
    let (warnings, _) = warnings_and_recoveries(&log);
    assert!(
        (1..=3).contains(&warnings.len()),
        "{} WARN/ERROR lines in 10 s of outage:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        warnings[0].contains("source unreachable"),
        "{}",
        warnings[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_down_for_10_s_is_one_warning_and_one_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("interceptor.log");
    let api = testkit::TestApi::start().await;
    api.put_object(
        Hso::new("ns", "app")
            .host("app.test")
            .service("app", 80)
            .json(),
    )
    .unwrap();
    let kubeconfig = api.kubeconfig_path().to_str().unwrap().to_owned();
    let (_proc, admin, metrics) = spawn_interceptor(&["--kubeconfig", &kubeconfig], &log);
    let client = client();
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    wait_ok(&client, &readyz, &log).await;
    // Still serving its last good table during the outage.
    let still_ready = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        matches!(get(&client, &readyz, "admin").await, Ok((200, _)))
    };
    let (ready_meanwhile, ()) =
        tokio::join!(still_ready, outage_of_10_s(&api, &client, metrics, &log));
    assert!(ready_meanwhile);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_reports_its_upstream_outage_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cache.log");
    let api = testkit::TestApi::start().await;
    let kubeconfig = api.kubeconfig_path().to_str().unwrap().to_owned();
    let (_proc, port, metrics) = spawn_cache(&["--kubeconfig", &kubeconfig], &log);
    let client = client();
    wait_ok(&client, &format!("http://127.0.0.1:{port}/readyz"), &log).await;
    outage_of_10_s(&api, &client, metrics, &log).await;
}
