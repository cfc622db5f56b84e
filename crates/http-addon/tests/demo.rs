//! `http-addon demo` end to end: every program as a real process (API
//! server, operator, scaler, cache, three interceptors through the cache,
//! echo backends), each step of the walk-through asserted from its JSON
//! results; then a second run right after, as a user would.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_http-addon");

fn run_demo(out: &Path) -> Value {
    let status = Command::new(BIN)
        .args(["demo", "--json"])
        .arg(out)
        .env_remove("KUBECONFIG")
        .status()
        .expect("http-addon demo runs");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(out).expect("the JSON results"))
        .expect("the results are JSON");
    assert!(status.success(), "the demo failed: {doc:#}");
    doc
}

fn step<'a>(doc: &'a Value, id: &str) -> &'a Value {
    let step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id}: {doc:#}"));
    assert_eq!(step["ok"], true, "{step:#}");
    &step["facts"]
}

/// The string `v`, or a failure that shows what it is instead.
fn text(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, found {v}"))
}

fn ms(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

fn pid_alive(pid: u64) -> bool {
    // A process that exited and was reaped has no /proc entry; a zombie is
    // not alive either.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn check(doc: &Value) {
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["steps"].as_array().unwrap().len(), 8);

    // Every program ran, and none outlives the demo.
    let programs = doc["run"]["programs"].as_array().unwrap();
    let names: Vec<&str> = programs.iter().map(|p| text(&p["name"])).collect();
    for want in [
        "api",
        "cache",
        "operator",
        "scaler",
        "interceptor-1",
        "interceptor-2",
        "interceptor-3",
        "echo-app",
    ] {
        assert!(names.contains(&want), "{want} not among {names:?}");
    }
    for p in programs {
        if let Some(pid) = p["pid"].as_u64() {
            assert!(
                !pid_alive(pid),
                "{} (pid {pid}) outlived the demo",
                p["name"]
            );
        }
    }
    let dir = text(&doc["run"]["dir"]);
    assert!(!Path::new(dir).exists(), "{dir} left behind");

    // The operator's ScaledObject: KEDA pointed at the scaler for this app.
    let routes = step(doc, "routes");
    let so = &routes["scaledobject_shop"];
    let trigger = &so["triggers"][0];
    assert_eq!(trigger["type"], "external-push", "{so:#}");
    assert_eq!(trigger["metadata"]["httpScaledObject"], "shop");
    let scaler = text(&trigger["metadata"]["scalerAddress"]);
    assert!(
        scaler.starts_with("keda-add-ons-http-external-scaler.keda:"),
        "{scaler}"
    );
    assert_eq!(so["scaleTargetRef"]["name"], "shop");
    assert_eq!(so["minReplicaCount"], 0);
    assert_eq!(so["maxReplicaCount"], 10);
    assert_eq!(so["pollingInterval"], 15);
    assert_eq!(routes["checked_requests"], 15);

    // A new route reaches all three interceptors within a second.
    let propagation = ms(&step(doc, "propagation")["ms_per_interceptor"]);
    assert_eq!(propagation.len(), 3);
    assert!(propagation.iter().all(|&t| t <= 1000), "{propagation:?}");

    // Scale from zero: the scaler saw the held request, the
    // InterceptorRoute's in-flight request and the fleet's sum; the request
    // completed once the endpoint was ready.
    let zero = step(doc, "scale-from-zero");
    assert_eq!(zero["metric_app"], 1.0);
    assert_eq!(zero["metric_interceptor_route"], 1.0);
    assert_eq!(zero["metric_fleet_pending"], 2.0);
    assert_eq!(
        zero["metric_specs_app"][0]["metricName"],
        "http-demo_002Fapp"
    );
    assert_eq!(zero["metric_specs_app"][0]["target"], 1);
    assert_eq!(
        zero["metric_specs_interceptor_route"][0]["metricName"],
        "http_api-v2_concurrency"
    );
    assert_eq!(zero["metric_specs_interceptor_route"][0]["target"], 10.0);
    assert!(zero["held_ms"].as_u64().unwrap() >= zero["ready_to_released_ms"].as_u64().unwrap());

    // A changed and a deleted route: 404 within a second everywhere.
    let change = step(doc, "change-delete");
    for t in ms(&change["path_change_ms"])
        .into_iter()
        .chain(ms(&change["delete_ms"]))
    {
        assert!(t <= 1000, "{change:#}");
    }

    // The API server down: nothing failed; after its restart, changes flow.
    let outage = step(doc, "api-outage");
    assert_eq!(outage["requests_failed_during_outage"], 0);
    assert!(outage["requests_ok_during_outage"].as_u64().unwrap() > 0);
    assert_eq!(ms(&outage["change_after_restart_ms"]).len(), 3);

    // A bad manifest: the condition names the field.
    let bad = step(doc, "bad-manifest");
    assert_eq!(bad["condition"]["reason"], "InvalidSpec");
    let message = text(&bad["condition"]["message"]);
    assert!(message.contains("spec.timeouts.conditionWait"), "{message}");

    // A placeholder page from a ConfigMap, through the cache, then edited.
    let page = step(doc, "placeholder-page");
    assert_eq!(ms(&page["first_ms_per_interceptor"]).len(), 3);
    let edit = ms(&page["edit_ms_per_interceptor"]);
    assert!(edit.iter().all(|&t| t <= 1000), "{edit:?}");
}

#[test]
fn the_demo_walks_through_every_step_twice_in_a_row() {
    let dir = tempfile::tempdir().unwrap();
    let first = run_demo(&dir.path().join("first.json"));
    check(&first);
    // Right after: no leftover process, port or file gets in the way.
    let second = run_demo(&dir.path().join("second.json"));
    check(&second);
}
