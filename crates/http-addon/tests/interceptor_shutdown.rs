//! `http-addon interceptor` and `http-addon echo` as child processes: a
//! SIGTERM during load fails no in-flight request, /readyz reports 503
//! during the shutdown delay, and the process exits once drained; a second
//! signal exits at once. The cache stops on SIGTERM.

mod common;

use common::{BIN, HttpClient, InterceptorPorts, Proc, client, free_port, get, spawn};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::fixtures::{Hso, Slice, Svc};

/// Starts `http-addon echo --port 0` and reads its address from stdout.
fn start_echo() -> (Proc, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["echo", "--port", "0", "--name", "child-echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Proc(child), addr)
}

/// `http-addon interceptor` reading the routes directory `dir`, with `flags`.
fn spawn_interceptor(dir: &Path, flags: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(["interceptor", "--routes-dir"])
        .arg(dir)
        .args(flags);
    spawn(&mut cmd, None)
}

async fn wait_status(client: &HttpClient, url: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((s, _)) = get(client, url, "admin").await
            && s == want
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{url} never answered {want}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let (_echo, echo_addr) = start_echo();
    let dir = tempfile::tempdir().unwrap();
    let yaml = [
        Hso::new("ns", "app")
            .host("app.test")
            .service("app", 80)
            .yaml_document(),
        Svc::new("ns", "app").port("http", 80).yaml_document(),
        Slice::new("ns", "app-1", "app")
            .port("http", echo_addr.port())
            .ready("127.0.0.1")
            .yaml_document(),
    ];
    std::fs::write(dir.path().join("app.yaml"), yaml.concat()).unwrap();
    let ports = InterceptorPorts::free();
    let (proxy, admin) = (ports.proxy, ports.admin);
    let mut flags = ports.flags();
    flags.extend(["--shutdown-delay", "1s", "--drain-timeout", "20s"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut child = spawn_interceptor(dir.path(), &flags);
    let client = client();
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    wait_status(&client, &readyz, 200).await;
    let app = format!("http://127.0.0.1:{proxy}");
    let (s, _) = get(&client, &format!("{app}/warm"), "app.test")
        .await
        .unwrap();
    assert_eq!(s, 200);

    // 20 slow requests in flight when the signal arrives.
    let slow: Vec<_> = (0..20)
        .map(|i| {
            let client = client.clone();
            let url = format!("{app}/slow/{i}?delay=1500ms");
            tokio::spawn(async move { get(&client, &url, "app.test").await })
        })
        .collect();
    let queue = format!("http://127.0.0.1:{admin}/queue");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) = get(&client, &queue, "admin").await.unwrap();
        let q: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if q["ns/app"]["Concurrency"] == 20 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never 20 in flight: {q}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill("-TERM", &child);

    // During the shutdown delay: not ready, still serving new requests.
    wait_status(&client, &readyz, 503).await;
    for i in 0..10 {
        let got = get(&client, &format!("{app}/during/{i}"), "app.test").await;
        assert_eq!(
            got.map(|r| r.0),
            Ok(200),
            "request {i} during the shutdown delay"
        );
    }

    let mut failed = 0;
    for (i, h) in slow.into_iter().enumerate() {
        match h.await.unwrap() {
            Ok((200, body)) => {
                let j: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(j["path"], format!("/slow/{i}"));
            }
            other => {
                eprintln!("in-flight request {i} failed: {other:?}");
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 0, "in-flight requests failed during the drain");

    // Drained: the process exits by itself, successfully.
    let code = exit_status(&mut child, Duration::from_secs(20)).await;
    assert!(code.success(), "exit status {code:?}");
    assert!(
        get(&client, &format!("{app}/after"), "app.test")
            .await
            .is_err()
    );
}

/// Sends `signal` to the child.
fn kill(signal: &str, child: &Proc) {
    let status = Command::new("kill")
        .args([signal, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the child's exit status.
async fn exit_status(child: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let admin = free_port();
    let admin_s = admin.to_string();
    let ports = [
        "--bind-address",
        "127.0.0.1",
        "--proxy-port",
        "0",
        "--admin-port",
        &admin_s,
    ];
    let delay = ["--metrics-enabled", "false", "--shutdown-delay", "60s"];
    let mut child = spawn_interceptor(dir.path(), &[&ports[..], &delay[..]].concat());
    let client = client();
    let readyz = format!("http://127.0.0.1:{admin}/readyz");
    wait_status(&client, &readyz, 200).await;

    // The first signal starts a 60 s shutdown delay ...
    kill("-TERM", &child);
    wait_status(&client, &readyz, 503).await;
    // ... which a second one cuts short.
    kill("-INT", &child);
    let status = exit_status(&mut child, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(1), "{status:?}");
}

#[tokio::test]
async fn the_cache_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let api = testkit::TestApi::start().await;
    let metrics = free_port();
    let mut child = spawn(
        Command::new(BIN)
            .args(["cache", "--bind-address", "127.0.0.1", "--port", "0"])
            .args(["--metrics-port", &metrics.to_string(), "--allow-anonymous"])
            .arg("--kubeconfig")
            .arg(api.kubeconfig_path())
            .env("HOME", dir.path()),
        None,
    );
    let client = client();
    wait_status(&client, &format!("http://127.0.0.1:{metrics}/readyz"), 200).await;
    let (status, body) = get(&client, &format!("http://127.0.0.1:{metrics}/metrics"), "x")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("# EOF"),
        "not Prometheus text"
    );
    kill("-TERM", &child);
    let status = exit_status(&mut child, Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}
