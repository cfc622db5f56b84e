//! The operator against testkit over real sockets, with kube's own client:
//! every test writes objects as a user would and waits (bounded) for the
//! operator's result.

use std::future::Future;
use std::time::Duration;

use api::ScaledObject;
use k8s_openapi::api::events::v1::Event as EventsEvent;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use listwatch::Gvr;
use operator::config::{BindAddress, LeaseTiming, OperatorArgs, Settings};
use serde_json::{Value, json};
use testkit::TestApi;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);
const SCALER: &str = "keda-add-ons-http-external-scaler.keda:9090";

struct Running {
    api: TestApi,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), operator::OperatorError>>,
}

impl Running {
    async fn start() -> Running {
        Running::with(TestApi::start().await)
    }

    fn with(api: TestApi) -> Running {
        let cancel = CancellationToken::new();
        let settings = Settings {
            scaler_address: SCALER.to_string(),
            namespace: "keda".to_string(),
            watch_namespace: None,
            lease: LeaseTiming::default(),
            deprecated: Vec::new(),
        };
        let args = OperatorArgs {
            metrics_bind_address: BindAddress(None),
            health_probe_bind_address: BindAddress(None),
            leader_elect: false,
            kubeconfig: None,
            api_url: None,
            api_token_file: None,
        };
        let client = api.client();
        let stop = cancel.clone();
        let task =
            tokio::spawn(async move { operator::run_with(client, settings, &args, stop).await });
        Running { api, cancel, task }
    }

    fn dynamic(&self, ar: &ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.api.client(), "shop", ar)
    }

    fn hsos(&self) -> Api<DynamicObject> {
        self.dynamic(&ApiResource::erase::<api::HTTPScaledObject>(&()))
    }

    fn irs(&self) -> Api<DynamicObject> {
        self.dynamic(&ApiResource::erase::<api::InterceptorRoute>(&()))
    }

    fn sos(&self) -> Api<DynamicObject> {
        self.dynamic(&ApiResource::erase::<ScaledObject>(&()))
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the operator stops when cancelled")
            .unwrap()
            .unwrap();
    }
}

/// Polls `f` until it returns `Some`, or fails the test after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hso(name: &str, spec_extra: Value) -> Value {
    let mut spec = json!({
        "hosts": [format!("{name}.example.com")],
        "scaleTargetRef": {"name": name, "kind": "Deployment", "apiVersion": "apps/v1", "service": name, "port": 8080}
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in extra {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "http.keda.sh/v1alpha1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": name, "namespace": "shop", "labels": {"team": "a"}, "annotations": {"note": "n"}},
        "spec": spec
    })
}

fn ready(obj: &DynamicObject) -> Option<&Value> {
    obj.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Ready")
}

async fn get(api: &Api<DynamicObject>, name: &str) -> Option<DynamicObject> {
    api.get_opt(name).await.unwrap()
}

/// Waits for the HTTPScaledObject's Ready condition with this status.
async fn ready_status(api: &Api<DynamicObject>, name: &str, status: &str) -> Value {
    eventually(&format!("{name} Ready={status}"), || async {
        let obj = get(api, name).await?;
        let c = ready(&obj)?;
        (c["status"] == status).then(|| c.clone())
    })
    .await
}

/// Waits for `name`'s Ready condition to turn False with a message that
/// mentions `text`, and returns the condition.
async fn not_ready(api: &Api<DynamicObject>, name: &str, text: &str) -> Value {
    let c = ready_status(api, name, "False").await;
    assert!(c["message"].as_str().unwrap().contains(text), "{c}");
    c
}

/// Applies a JSON merge patch to `name`, as `kubectl patch --type merge`.
async fn merge(api: &Api<DynamicObject>, name: &str, patch: Value) {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_httpscaledobject_becomes_a_scaled_object_and_follows_its_changes() {
    let op = Running::start().await;
    op.api
        .put_object(hso(
            "web",
            json!({"replicas": {"min": 1, "max": 7}, "scaledownPeriod": 120, "initialCooldownPeriod": 30}),
        ))
        .unwrap();
    let so = eventually("the ScaledObject", || async { get(&op.sos(), "web").await }).await;
    let owner = get(&op.hsos(), "web").await.unwrap();
    assert_eq!(
        so.data["spec"]["scaleTargetRef"],
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})
    );
    assert_eq!(so.data["spec"]["minReplicaCount"], 1);
    assert_eq!(so.data["spec"]["maxReplicaCount"], 7);
    assert_eq!(so.data["spec"]["cooldownPeriod"], 120);
    assert_eq!(so.data["spec"]["initialCooldownPeriod"], 30);
    assert_eq!(so.data["spec"]["pollingInterval"], 15);
    assert_eq!(
        so.data["spec"]["advanced"]["restoreToOriginalReplicaCount"],
        true
    );
    assert_eq!(
        so.data["spec"]["triggers"],
        json!([{"type": "external-push", "metadata": {"httpScaledObject": "web", "scalerAddress": SCALER}}])
    );
    assert_eq!(so.metadata.labels.as_ref().unwrap()["team"], "a");
    assert_eq!(so.metadata.annotations.as_ref().unwrap()["note"], "n");
    let refs = so.metadata.owner_references.clone().unwrap();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].kind, "HTTPScaledObject");
    assert_eq!(refs[0].uid, owner.metadata.uid.clone().unwrap());
    assert_eq!(refs[0].controller, Some(true));

    let ready = ready_status(&op.hsos(), "web", "True").await;
    assert_eq!(ready["reason"], "Reconciled");
    assert_eq!(ready["message"], "ScaledObject created and configured");
    let obj = get(&op.hsos(), "web").await.unwrap();
    assert_eq!(
        ready["observedGeneration"],
        obj.metadata.generation.unwrap()
    );
    assert_eq!(
        obj.data["status"]["targetWorkload"],
        "apps/v1/Deployment/web"
    );
    assert_eq!(obj.data["status"]["targetService"], "web:8080");
    assert_eq!(
        obj.metadata.finalizers.as_deref(),
        Some(&["httpscaledobject.http.keda.sh".to_string()][..])
    );

    // A change follows; bounds no longer set are removed.
    op.api
        .put_object(hso("web", json!({"scaledownPeriod": 60})))
        .unwrap();
    let hsos = op.hsos();
    merge(&hsos, "web", json!({"spec": {"replicas": null}})).await;
    eventually("the ScaledObject to follow", || async {
        let so = get(&op.sos(), "web").await?;
        let spec = &so.data["spec"];
        (spec["cooldownPeriod"] == 60
            && spec.get("maxReplicaCount").is_none()
            && spec.get("minReplicaCount").is_none())
        .then_some(())
    })
    .await;

    // Deleted: the finalizer is removed, the ScaledObject goes with it.
    hsos.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("both gone", || async {
        (get(&op.hsos(), "web").await.is_none() && get(&op.sos(), "web").await.is_none())
            .then_some(())
    })
    .await;
    op.stop().await;
}

#[tokio::test]
async fn a_hand_edit_of_our_fields_is_put_back_and_other_fields_stay() {
    let op = Running::start().await;
    op.api
        .put_object(hso("web", json!({"replicas": {"max": 5}})))
        .unwrap();
    eventually("the ScaledObject", || async { get(&op.sos(), "web").await }).await;
    merge(
        &op.sos(),
        "web",
        json!({"spec": {"maxReplicaCount": 99, "fallback": {"failureThreshold": 3, "replicas": 2}}}),
    )
    .await;
    let so = eventually("the edit reverted", || async {
        let so = get(&op.sos(), "web").await?;
        (so.data["spec"]["maxReplicaCount"] == 5).then_some(so)
    })
    .await;
    assert_eq!(
        so.data["spec"]["fallback"]["replicas"], 2,
        "a field we do not own stays"
    );
    // Settled: nothing is written again and again (no reconcile loop).
    ready_status(&op.hsos(), "web", "True").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = op.api.resource_version();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        op.api.resource_version(),
        before,
        "the operator keeps writing"
    );
    op.stop().await;
}

#[tokio::test]
async fn the_skip_and_orphan_annotations() {
    let op = Running::start().await;
    let hsos = op.hsos();
    op.api.put_object(hso("skip", json!({}))).unwrap();
    eventually("the ScaledObject", || async {
        get(&op.sos(), "skip").await
    })
    .await;
    let annotate = |key: &'static str| json!({"metadata": {"annotations": {key: "true"}}});
    merge(
        &hsos,
        "skip",
        annotate("httpscaledobject.keda.sh/skip-scaledobject-creation"),
    )
    .await;
    eventually("the ScaledObject deleted", || async {
        get(&op.sos(), "skip").await.is_none().then_some(())
    })
    .await;

    op.api.put_object(hso("keep", json!({}))).unwrap();
    eventually("the ScaledObject", || async {
        get(&op.sos(), "keep").await
    })
    .await;
    merge(
        &hsos,
        "keep",
        annotate("httpscaledobject.keda.sh/orphan-scaledobject"),
    )
    .await;
    eventually("the owner reference removed", || async {
        let so = get(&op.sos(), "keep").await?;
        so.metadata
            .owner_references
            .as_ref()
            .is_none_or(|r| r.is_empty())
            .then_some(())
    })
    .await;
    hsos.delete("keep", &DeleteParams::default()).await.unwrap();
    eventually("the HTTPScaledObject gone", || async {
        get(&hsos, "keep").await.is_none().then_some(())
    })
    .await;
    assert!(
        get(&op.sos(), "keep").await.is_some(),
        "the orphaned ScaledObject survives"
    );
    op.stop().await;
}

#[tokio::test]
async fn invalid_objects_get_ready_false_naming_the_field_and_an_event() {
    let op = Running::start().await;
    op.api
        .put_object(hso(
            "both",
            json!({"scalingMetric": {"concurrency": {"targetValue": 1}, "requestRate": {"targetValue": 1}}}),
        ))
        .unwrap();
    let c = not_ready(&op.hsos(), "both", "spec.scalingMetric").await;
    assert_eq!(c["reason"], "InvalidSpec");
    assert!(
        get(&op.sos(), "both").await.is_none(),
        "no ScaledObject for an invalid object"
    );

    let mut bad_port = hso("badport", json!({}));
    bad_port["spec"]["scaleTargetRef"]["port"] = json!("http");
    op.api.put_object(bad_port).unwrap();
    not_ready(&op.hsos(), "badport", "spec.scaleTargetRef.port").await;
    let events: Api<EventsEvent> = Api::namespaced(op.api.client(), "shop");
    eventually("a warning event on the object", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("badport")
                    && e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("InvalidSpec")
            })
            .then_some(())
    })
    .await;

    // InterceptorRoutes: valid -> Ready, invalid -> Ready=False naming the field.
    op.api
        .put_object(json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": {"name": "ok", "namespace": "shop"},
            "spec": {"target": {"service": "ok", "port": 80},
                     "rules": [{"hosts": ["ok.example.com"]}],
                     "scalingMetric": {"concurrency": {"targetValue": 5}}}
        }))
        .unwrap();
    let c = ready_status(&op.irs(), "ok", "True").await;
    assert_eq!(c["message"], "InterceptorRoute reconciled");
    op.api
        .put_object(json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": {"name": "bad", "namespace": "shop"},
            "spec": {"target": {"service": "bad"}, "scalingMetric": {"concurrency": {"targetValue": 5}}}
        }))
        .unwrap();
    not_ready(&op.irs(), "bad", "spec.target").await;
    op.stop().await;
}

#[tokio::test]
async fn without_keda_the_object_says_so_and_the_operator_retries_until_it_is_installed() {
    let api = TestApi::start().await;
    let so_gvr = Gvr::new("keda.sh", "v1alpha1", "scaledobjects");
    let def = api.uninstall(&so_gvr).expect("registered out of the box");
    let op = Running::with(api);
    op.api.put_object(hso("web", json!({}))).unwrap();
    let c = not_ready(&op.hsos(), "web", "scaledobjects.keda.sh").await;
    assert_eq!(c["reason"], "CreateError");
    // KEDA installed: the retry (with backoff) creates the ScaledObject.
    op.api.register(def);
    eventually("the ScaledObject after KEDA is installed", || async {
        get(&op.sos(), "web").await
    })
    .await;
    ready_status(&op.hsos(), "web", "True").await;
    op.stop().await;
}
