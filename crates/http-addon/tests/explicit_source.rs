//! An explicit source flag wins over the environment (issue 17): with
//! `KUBECONFIG` (and other source variables) exported, as on most laptops
//! and CI runners, `http-addon cache --upstream-url` and `http-addon
//! interceptor --source-url` start and serve.
//!
//! The chain, every program a child process with a poisoned environment:
//! testkit API -> cache A (`--kubeconfig`) -> cache B (`--upstream-url A`)
//! -> interceptor (`--source-url B`) -> echo backend.

mod common;

use common::{BIN, HttpClient, InterceptorPorts, Proc, client, free_port, get};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::fixtures::{Hso, Slice, Svc};

const WAIT: Duration = Duration::from_secs(30);

/// Source variables that must not matter when a source flag is given: a
/// kubeconfig that does not exist, and the other programs' variables.
fn poisoned(cmd: &mut Command, dir: &Path) {
    cmd.env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .env("KEDA_HTTP_ROUTES_DIR", dir.join("no-such-dir"))
        .env("KEDA_HTTP_SOURCE_URL", "http://127.0.0.1:1")
        .env("KEDA_HTTP_CACHE_UPSTREAM_URL", "http://127.0.0.1:1")
        .env("RUST_LOG", "info")
        .env_remove("KEDA_HTTP_LOG_FORMAT");
}

fn spawn(args: &[&str], dir: &Path, log: &Path) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    poisoned(&mut cmd, dir);
    common::spawn(&mut cmd, Some(log))
}

/// A cache on 127.0.0.1 reading from `source`; returns it and its
/// (serving, metrics) ports.
fn spawn_cache(source: &[&str], dir: &Path, log: &Path) -> (Proc, u16, u16) {
    let (port, metrics) = (free_port(), free_port());
    let mut args = vec!["cache", "--bind-address", "127.0.0.1", "--allow-anonymous"];
    let (port_s, metrics_s) = (port.to_string(), metrics.to_string());
    args.extend(["--port", &port_s, "--metrics-port", &metrics_s]);
    args.extend(source);
    (spawn(&args, dir, log), port, metrics)
}

/// Waits until `url` answers 200; a process that exits fails the test with its log.
async fn wait_ok(client: &HttpClient, url: &str, host: &str, proc: &mut Proc, log: &Path) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok((200, _)) = get(client, url, host).await {
            return;
        }
        if let Some(status) = proc.0.try_wait().unwrap() {
            panic!(
                "exited ({status}) before {url} answered:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered 200:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_of(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_source_flags_win_over_kubeconfig_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let logs = |name: &str| dir.path().join(format!("{name}.log"));

    // The API server with one app, and the app's backend.
    let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr: SocketAddr = backend.local_addr().unwrap();
    tokio::spawn(
        echo::Echo::new(echo::EchoArgs {
            name: "app".into(),
            ..echo::EchoArgs::default()
        })
        .serve(backend),
    );
    let api = testkit::TestApi::start().await;
    for obj in [
        Svc::new("ns", "app").port("http", 80).json(),
        Slice::new("ns", "app-1", "app")
            .port("http", backend_addr.port())
            .ready("127.0.0.1")
            .json(),
        Hso::new("ns", "app")
            .host("app.test")
            .service("app", 80)
            .json(),
    ] {
        api.put_object(obj).unwrap();
    }
    let client = client();

    // Cache A: --kubeconfig beats $KUBECONFIG and $KEDA_HTTP_CACHE_UPSTREAM_URL.
    let kubeconfig = api.kubeconfig_path().to_str().unwrap().to_owned();
    let (mut cache_a, port_a, metrics_a) =
        spawn_cache(&["--kubeconfig", &kubeconfig], dir.path(), &logs("cache-a"));
    let ready_a = format!("http://127.0.0.1:{metrics_a}/readyz");
    wait_ok(&client, &ready_a, "x", &mut cache_a, &logs("cache-a")).await;

    // Cache B: --upstream-url beats the same variables.
    let url_a = format!("http://127.0.0.1:{port_a}");
    let (mut cache_b, port_b, metrics_b) =
        spawn_cache(&["--upstream-url", &url_a], dir.path(), &logs("cache-b"));
    let ready_b = format!("http://127.0.0.1:{metrics_b}/readyz");
    wait_ok(&client, &ready_b, "x", &mut cache_b, &logs("cache-b")).await;
    let list = format!("http://127.0.0.1:{port_b}/apis/http.keda.sh/v1alpha1/httpscaledobjects");
    let (status, body) = get(&client, &list, "x").await.unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list["items"][0]["metadata"]["name"], "app", "{list}");

    // The interceptor: --source-url beats $KUBECONFIG, $KEDA_HTTP_SOURCE_URL
    // and $KEDA_HTTP_ROUTES_DIR.
    let ports = InterceptorPorts::free();
    let url_b = format!("http://127.0.0.1:{port_b}");
    let mut args = vec!["interceptor", "--source-url", &url_b];
    args.extend(["--direct-pod-routing", "true", "--shutdown-delay", "0s"]);
    let flags = ports.flags();
    args.extend(flags.iter().map(String::as_str));
    let mut interceptor = spawn(&args, dir.path(), &logs("interceptor"));
    let readyz = format!("http://127.0.0.1:{}/readyz", ports.admin);
    wait_ok(
        &client,
        &readyz,
        "admin",
        &mut interceptor,
        &logs("interceptor"),
    )
    .await;
    let (status, body) = get(
        &client,
        &format!("http://127.0.0.1:{}/hello", ports.proxy),
        "app.test",
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["server"], "app");
    assert_eq!(echoed["path"], "/hello");

    // Each says which step chose its source.
    for (name, flag) in [
        ("cache-a", "--kubeconfig on the command line"),
        ("cache-b", "--upstream-url on the command line"),
        ("interceptor", "--source-url on the command line"),
    ] {
        let log = log_of(&logs(name));
        assert!(log.contains(flag), "{name} log lacks {flag:?}:\n{log}");
    }
}
