//! Leader election on the real binary: two `http-addon operator
//! --leader-elect` processes against testkit; only the holder of the Lease
//! `http-add-on.keda.sh` reconciles; killed with SIGKILL, the other takes
//! over once the lease expires; stopped with SIGTERM, the leader releases
//! the lease on its way out.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

const LEASE: Duration = Duration::from_secs(2);

struct Operator {
    proc: Proc,
    metrics: u16,
}

fn spawn_operator(api_url: &str, log: &std::path::Path) -> Operator {
    let (metrics, health) = (free_port(), free_port());
    let mut cmd = Command::new(BIN);
    cmd.args(["operator", "--leader-elect", "--api-url", api_url])
        .args(["--metrics-bind-address", &format!("127.0.0.1:{metrics}")])
        .args([
            "--health-probe-bind-address",
            &format!("127.0.0.1:{health}"),
        ])
        .env("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", "scaler")
        .env("KEDA_HTTP_OPERATOR_NAMESPACE", "keda")
        .env("KEDA_HTTP_OPERATOR_LEADER_ELECTION_LEASE_DURATION", "2s")
        .env(
            "KEDA_HTTP_OPERATOR_LEADER_ELECTION_RENEW_DEADLINE",
            "1500ms",
        )
        .env("KEDA_HTTP_OPERATOR_LEADER_ELECTION_RETRY_PERIOD", "250ms")
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    Operator {
        proc: Proc(cmd.spawn().unwrap()),
        metrics,
    }
}

async fn metrics(client: &HttpClient, op: &Operator) -> Option<String> {
    let url = format!("http://127.0.0.1:{}/metrics", op.metrics);
    let (_, body) = get(client, &url, "metrics").await.ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

async fn leads(client: &HttpClient, op: &Operator) -> Option<bool> {
    let m = metrics(client, op).await?;
    gauge(&m, "leader_election_master_status").map(|v| v == 1.0)
}

fn hso(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"hosts": [format!("{name}.example.com")],
                 "scaleTargetRef": {"name": name, "service": name, "port": 80}}
    })
}

async fn wait_for<T>(what: &str, within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Creates the HTTPScaledObject `shop/name` and waits for the ScaledObject
/// that `who` (the leader) makes of it.
async fn reconciled(api: &testkit::TestApi, name: &str, who: &str) {
    api.put_object(hso(name)).unwrap();
    let scaled_objects = listwatch::Gvr::new("keda.sh", "v1alpha1", "scaledobjects");
    wait_for(
        &format!("{who}'s ScaledObject"),
        Duration::from_secs(10),
        async || api.store(&scaled_objects)?.get("shop", name),
    )
    .await;
}

#[tokio::test]
async fn one_leader_writes_and_a_standby_takes_over() {
    let api = testkit::TestApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client();
    let a = spawn_operator(&api.url(), &dir.path().join("a.log"));
    let b = spawn_operator(&api.url(), &dir.path().join("b.log"));
    let (leader, _) = wait_for("one leader", Duration::from_secs(20), async || {
        match (leads(&client, &a).await?, leads(&client, &b).await?) {
            (true, false) => Some((a.proc.0.id(), b.proc.0.id())),
            (false, true) => Some((b.proc.0.id(), a.proc.0.id())),
            _ => None,
        }
    })
    .await;
    let (mut leader, standby) = if leader == a.proc.0.id() {
        (a, b)
    } else {
        (b, a)
    };
    let leases: Api<Lease> = Api::namespaced(api.client(), "keda");
    let lease = leases.get("http-add-on.keda.sh").await.unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();

    reconciled(&api, "one", "the leader").await;
    let standby_metrics = metrics(&client, &standby).await.unwrap();
    assert!(
        !standby_metrics.contains("controller_runtime_reconcile_total{"),
        "the standby reconciled:\n{standby_metrics}"
    );
    assert!(
        metrics(&client, &leader)
            .await
            .unwrap()
            .contains("controller_runtime_reconcile_total{controller=\"httpscaledobject\"}")
    );

    // SIGKILL: no release; the standby waits out the lease, then leads.
    let killed = Instant::now();
    leader.proc.0.kill().unwrap();
    leader.proc.0.wait().unwrap();
    wait_for("the standby to lead", LEASE * 3, async || {
        leads(&client, &standby).await?.then_some(())
    })
    .await;
    let took = killed.elapsed();
    eprintln!("takeover {took:?} after SIGKILL (lease {LEASE:?})");
    let lease = leases.get("http-add-on.keda.sh").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_ne!(spec.holder_identity.as_deref(), Some(holder.as_str()));
    assert!(spec.lease_transitions.unwrap() >= 1);
    reconciled(&api, "two", "the new leader").await;

    // SIGTERM: the leader releases the lease as it exits.
    let status = Command::new("kill")
        .args(["-TERM", &standby.proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut standby = standby;
    let exit = wait_for(
        "the operator to exit",
        Duration::from_secs(10),
        async || standby.proc.0.try_wait().unwrap(),
    )
    .await;
    assert!(exit.success(), "graceful exit: {exit:?}");
    let lease = leases.get("http-add-on.keda.sh").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "released on shutdown"
    );
}
