//! kubectl (v1.32, from PATH) against testkit. Fails if kubectl is missing.

use std::process::Stdio;

use serde_json::Value;
use testkit::TestApi;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::common::*;

const MANIFEST: &str = "apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata:
  name: demo
  namespace: default
spec:
  hosts: [demo.example.com]
  scaleTargetRef:
    name: demo
    service: demo
    port: 8080
  replicas:
    min: 0
    max: MAX
";

async fn kubectl(api: &TestApi, args: &[&str]) -> String {
    let out = within(
        "kubectl",
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(api.kubeconfig_path())
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("kubectl must be installed (it is part of the test environment)");
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn kubectl_apply_get_and_watch() {
    let api = TestApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hso.yaml");
    let file_arg = file.to_str().unwrap();

    std::fs::write(&file, MANIFEST.replace("MAX", "10")).unwrap();
    let out = kubectl(&api, &["--validate=false", "apply", "-f", file_arg]).await;
    assert!(
        out.contains("httpscaledobject.http.keda.sh/demo created"),
        "{out}"
    );

    let out = kubectl(&api, &["get", "httpscaledobjects", "demo", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["replicas"]["max"], 10);
    assert_eq!(v["metadata"]["generation"], 1);

    // `get -w` via the short name, read line by line.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(api.kubeconfig_path())
        .args([
            "get",
            "httpso",
            "-w",
            "-o",
            "jsonpath={.metadata.name} {.spec.replicas.max}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl must be installed");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = within("kubectl get -w output", lines.next_line())
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("demo 10"));

    std::fs::write(&file, MANIFEST.replace("MAX", "20")).unwrap();
    let out = kubectl(&api, &["--validate=false", "apply", "-f", file_arg]).await;
    assert!(
        out.contains("httpscaledobject.http.keda.sh/demo configured"),
        "{out}"
    );

    let next = within("the change in kubectl get -w", lines.next_line())
        .await
        .unwrap();
    assert_eq!(next.as_deref(), Some("demo 20"));
    watch.kill().await.unwrap();

    let out = kubectl(&api, &["get", "httpscaledobjects", "demo", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["replicas"]["max"], 20);
    assert_eq!(v["metadata"]["generation"], 2);

    // An unchanged apply is a no-op; delete works too.
    let out = kubectl(&api, &["--validate=false", "apply", "-f", file_arg]).await;
    assert!(out.contains("unchanged"), "{out}");
    let out = kubectl(&api, &["delete", "httpso", "demo"]).await;
    assert!(out.contains("deleted"), "{out}");
    let out = kubectl(&api, &["get", "httpso", "-o", "name"]).await;
    assert!(out.trim().is_empty(), "{out}");
}
