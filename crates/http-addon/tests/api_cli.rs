//! `http-addon api` as a user runs it: kubectl applies and reads through
//! the kubeconfig it writes, and its state file keeps the objects across a
//! `kill -9` and a restart.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BIN, Proc, client, free_port, get};

fn start_api(port: u16, kubeconfig: &Path, state: &Path, log: &Path) -> Proc {
    common::spawn(
        Command::new(BIN)
            .args(["api", "--port", &port.to_string()])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--state-file")
            .arg(state),
        Some(log),
    )
}

async fn wait_ready(port: u16) {
    let http = client();
    let url = format!("http://127.0.0.1:{port}/readyz");
    tokio::time::timeout(Duration::from_secs(30), async {
        while !matches!(get(&http, &url, "api").await, Ok((200, _))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the API server answers /readyz");
}

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is on PATH (the tests need it)");
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

const HSO: &str = "apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: app
  namespace: shop
spec:
  hosts: [app.example.com]
  scaleTargetRef: {name: app, kind: Deployment, apiVersion: apps/v1, service: app, port: 8080}
";

#[tokio::test]
async fn kubectl_works_against_it_and_its_state_file_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let state = dir.path().join("state.json");
    let log = dir.path().join("api.log");
    let port = free_port();

    let mut api = start_api(port, &kubeconfig, &state, &log);
    wait_ready(port).await;
    let (ok, out) = kubectl(
        &kubeconfig,
        &["apply", "--validate=false", "-f", "-"],
        Some(HSO),
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kubeconfig,
        &[
            "get",
            "httpscaledobjects",
            "-n",
            "shop",
            "-o",
            "jsonpath={.items[*].spec.hosts}",
        ],
        None,
    );
    assert!(ok, "{out}");
    assert!(out.contains("app.example.com"), "{out}");

    // Crash it (SIGKILL: nothing runs on the way out) and start it again.
    api.0.kill().unwrap();
    api.0.wait().unwrap();
    let _api = start_api(port, &kubeconfig, &state, &log);
    wait_ready(port).await;
    let (ok, out) = kubectl(
        &kubeconfig,
        &[
            "get",
            "httpscaledobject",
            "app",
            "-n",
            "shop",
            "-o",
            "jsonpath={.spec.hosts[0]}",
        ],
        None,
    );
    assert!(
        ok,
        "{out}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(out, "app.example.com");
    // And it keeps serving writes after the restart.
    let (ok, out) = kubectl(
        &kubeconfig,
        &["delete", "httpscaledobject", "app", "-n", "shop"],
        None,
    );
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kubeconfig,
        &["get", "httpscaledobjects", "-A", "-o", "name"],
        None,
    );
    assert!(ok, "{out}");
    assert!(!out.contains("app"), "{out}");
}
