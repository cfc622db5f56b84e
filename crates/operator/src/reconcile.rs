//! The two controllers: HTTPScaledObject -> ScaledObject (with status,
//! finalizer, the skip and orphan annotations), and InterceptorRoute ->
//! status.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use api::{
    FieldError, HTTPSCALEDOBJECT_FINALIZER, HTTPScaledObject, InterceptorRoute,
    ORPHAN_SCALEDOBJECT_ANNOTATION, SKIP_SCALEDOBJECT_CREATION_ANNOTATION, ScaledObject,
};
use futures::StreamExt;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Resource, ResourceExt};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Settings;
use crate::scaled_object;

/// The field manager of our server-side applies (and the events' reporter).
pub const FIELD_MANAGER: &str = "http-add-on-operator";

/// Reasons of the `Ready` condition.
const RECONCILED: &str = "Reconciled";
const CREATE_ERROR: &str = "CreateError";
const INVALID_SPEC: &str = "InvalidSpec";

/// Labels of the per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

/// The operator's metrics, with controller-runtime's names.
#[derive(Clone, Debug)]
pub struct OperatorMetrics {
    reconciles: Family<ControllerLabel, Counter>,
    errors: Family<ControllerLabel, Counter>,
    /// 1 while this process holds the leader Lease (or runs without
    /// leader election).
    pub leader: Gauge,
}

impl OperatorMetrics {
    /// Registers the metrics.
    pub fn new(registry: &mut Registry) -> Self {
        let m = OperatorMetrics {
            reconciles: Family::default(),
            errors: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "controller_runtime_reconcile",
            "Reconciliations per controller",
            m.reconciles.clone(),
        );
        registry.register(
            "controller_runtime_reconcile_errors",
            "Failed reconciliations per controller",
            m.errors.clone(),
        );
        registry.register(
            "leader_election_master_status",
            "1 while this process leads (holds the Lease http-add-on.keda.sh)",
            m.leader.clone(),
        );
        m
    }

    fn count(&self, controller: &str, ok: bool) {
        let label = ControllerLabel {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&label).inc();
        if !ok {
            self.errors.get_or_create(&label).inc();
        }
    }
}

/// Why a reconciliation failed (it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// KEDA's ScaledObject CRD is not installed.
    #[error(
        "KEDA's ScaledObject CRD (scaledobjects.keda.sh) is not installed: install KEDA first; retrying with backoff"
    )]
    KedaMissing,
    /// An API call failed.
    #[error("{action} {object}: {source}")]
    Kube {
        /// What we were doing.
        action: &'static str,
        /// The object, `Kind namespace/name`.
        object: String,
        /// The API's error.
        source: kube::Error,
    },
}

/// What every reconciliation shares.
struct Ctx {
    settings: Settings,
    recorder: Recorder,
    metrics: OperatorMetrics,
    client: kube::Client,
    hso: ApiResource,
    ir: ApiResource,
    so: ApiResource,
    /// KEDA's CRD was found missing (reported once until it appears).
    keda_missing: AtomicBool,
    /// Failed attempts in a row, per object, for the retry backoff.
    attempts: Mutex<HashMap<String, u32>>,
}

impl Ctx {
    fn api(&self, ar: &ApiResource, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, ar)
    }

    async fn event(
        &self,
        obj: &DynamicObject,
        ar: &ApiResource,
        warning: bool,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(ar)).await {
            debug!(error = %e, "event not recorded");
        }
    }
}

fn describe(kind: &str, obj: &DynamicObject) -> String {
    format!(
        "{kind} {}/{}",
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Runs both controllers until `cancel`.
pub(crate) async fn run(
    client: kube::Client,
    settings: Settings,
    metrics: OperatorMetrics,
    cancel: CancellationToken,
) {
    let hso = ApiResource::erase::<HTTPScaledObject>(&());
    let ir = ApiResource::erase::<InterceptorRoute>(&());
    let so = ApiResource::erase::<ScaledObject>(&());
    let api = |ar: &ApiResource| match &settings.watch_namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, ar),
        None => Api::<DynamicObject>::all_with(client.clone(), ar),
    };
    let (hsos, irs, sos) = (api(&hso), api(&ir), api(&so));
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_string(),
        instance: std::env::var("POD_NAME").ok(),
    };
    info!(
        scaler = %settings.scaler_address,
        namespace = settings.watch_namespace.as_deref().unwrap_or("(all)"),
        "operator running"
    );
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        settings,
        metrics,
        client,
        hso: hso.clone(),
        ir: ir.clone(),
        so: so.clone(),
        keda_missing: AtomicBool::new(false),
        attempts: Mutex::new(HashMap::new()),
    });
    let config = watcher::Config::default();
    let queue_errors = Arc::new(AtomicBool::new(false));
    let (hso_reader, hso_trigger) = trigger(hsos, &config, &hso);
    let (ir_reader, ir_trigger) = trigger(irs, &config, &ir);
    let so_trigger = watch_events(sos, &config).applied_objects();
    let hso_controller = Controller::for_stream_with(hso_trigger, hso_reader, hso)
        .trigger_backoff(WatchBackoff::new())
        .owns_stream_with(so_trigger, so)
        .graceful_shutdown_on(cancel.clone().cancelled_owned())
        .run(reconcile_hso, retry, ctx.clone())
        .for_each(|r| {
            report(r, "httpscaledobject", &queue_errors);
            futures::future::ready(())
        });
    let ir_controller = Controller::for_stream_with(ir_trigger, ir_reader, ir)
        .trigger_backoff(WatchBackoff::new())
        .graceful_shutdown_on(cancel.cancelled_owned())
        .run(reconcile_ir, retry, ctx)
        .for_each(|r| {
            report(r, "interceptorroute", &queue_errors);
            futures::future::ready(())
        });
    tokio::join!(hso_controller, ir_controller);
}

/// A watch's events, without its `410 Gone` errors. A 410 says our
/// resourceVersion is older than the server's history (after an API server
/// restart, or a long disconnect): kube-runtime's watcher relists on its
/// next poll by itself, and passing the error on would make the controller
/// back off first, for up to its backoff's cap, before that relist.
fn watch_events(
    api: Api<DynamicObject>,
    config: &watcher::Config,
) -> impl futures::Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Send + 'static
{
    watcher(api, config.clone()).filter(|r| {
        let gone = matches!(r, Err(watcher::Error::WatchError(status)) if status.code == 410);
        if gone {
            debug!("watch expired (410 Gone); relisting");
        }
        futures::future::ready(!gone)
    })
}

/// A controller's main stream: the watch kept in a reflector (the
/// controller reads objects from it), as `Controller::new_with` builds it,
/// from [`watch_events`].
fn trigger(
    api: Api<DynamicObject>,
    config: &watcher::Config,
    ar: &ApiResource,
) -> (
    reflector::Store<DynamicObject>,
    impl futures::Stream<Item = Result<DynamicObject, watcher::Error>> + Send + 'static,
) {
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let stream = reflector(writer, watch_events(api, config)).applied_objects();
    (reader, stream)
}

/// How soon a controller's watches restart after they fail: the policy of
/// a client a cluster runs once ([`kubewatch::Backoff::few_clients`], as
/// the cache's upstream watches), not kube-runtime's default (800 ms to
/// 30 s), so the operator is back within a second of an API server's
/// return.
struct WatchBackoff(kubewatch::Backoff);

impl WatchBackoff {
    fn new() -> Self {
        WatchBackoff(kubewatch::Backoff::few_clients())
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.0.next_delay())
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.0.reset();
    }
}

type RunResult = Result<
    (kube::runtime::reflector::ObjectRef<DynamicObject>, Action),
    kube::runtime::controller::Error<ReconcileError, watcher::Error>,
>;

/// Logs what a controller's loop reports. Reconcile errors were logged
/// where they happened; a watch that keeps failing (a resource not served,
/// e.g. KEDA's CRD missing) is logged once at WARN, then at DEBUG.
fn report(result: RunResult, controller: &str, queue_errors: &AtomicBool) {
    match result {
        Ok((obj, _)) => debug!(controller, object = %obj, "reconciled"),
        Err(kube::runtime::controller::Error::QueueError(e)) => {
            if queue_errors.swap(true, Ordering::Relaxed) {
                debug!(controller, error = %e, "watch failed; retrying");
            } else {
                warn!(controller, error = %e, "watch failed; retrying with backoff (further failures at debug level)");
            }
        }
        Err(e) => debug!(controller, error = %e, "reconcile failed"),
    }
}

/// Retries a failed object with exponential backoff: 1 s doubling to 5 min.
fn retry(obj: Arc<DynamicObject>, _err: &ReconcileError, ctx: Arc<Ctx>) -> Action {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    let mut attempts = ctx.attempts.lock();
    let n = attempts.entry(key).or_insert(0);
    let delay = Duration::from_secs(1u64 << (*n).min(8)).min(Duration::from_secs(300));
    *n += 1;
    Action::requeue(delay)
}

fn succeeded(ctx: &Ctx, obj: &DynamicObject) {
    let key = format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any());
    ctx.attempts.lock().remove(&key);
}

/// The `Ready` condition, keeping the previous transition time when the
/// status did not change.
fn ready_condition(obj: &DynamicObject, ok: bool, reason: &str, message: &str) -> Value {
    let status = if ok { "True" } else { "False" };
    let previous = obj
        .data
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
    let since = previous
        .filter(|p| p["status"] == status)
        .and_then(|p| p.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| Value::String(now()));
    json!({
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": obj.metadata.generation.unwrap_or(0),
        "lastTransitionTime": since,
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Writes `status` (merged into the current one) unless it already holds.
async fn write_status(
    ctx: &Ctx,
    ar: &ApiResource,
    obj: &DynamicObject,
    status: Value,
    kind: &str,
) -> Result<(), ReconcileError> {
    let current = obj.data.get("status").cloned().unwrap_or(json!({}));
    let mut merged = current.clone();
    if let (Some(m), Some(s)) = (merged.as_object_mut(), status.as_object()) {
        for (k, v) in s {
            m.insert(k.clone(), v.clone());
        }
    }
    if merged == current {
        return Ok(());
    }
    ctx.api(ar, &obj.namespace().unwrap_or_default())
        .patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map_err(|source| ReconcileError::Kube {
            action: "updating the status of",
            object: describe(kind, obj),
            source,
        })?;
    Ok(())
}

/// Sets or removes our finalizer (a merge patch conditional on the
/// resourceVersion read, so a concurrent change to the list is not lost).
async fn set_finalizer(
    ctx: &Ctx,
    obj: &DynamicObject,
    present: bool,
) -> Result<(), ReconcileError> {
    let mut finalizers = obj.finalizers().to_vec();
    let has = finalizers.iter().any(|f| f == HTTPSCALEDOBJECT_FINALIZER);
    if has == present {
        return Ok(());
    }
    if present {
        finalizers.push(HTTPSCALEDOBJECT_FINALIZER.to_string());
    } else {
        finalizers.retain(|f| f != HTTPSCALEDOBJECT_FINALIZER);
    }
    let patch = json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": obj.resource_version(),
    }});
    ctx.api(&ctx.hso, &obj.namespace().unwrap_or_default())
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .map_err(|source| ReconcileError::Kube {
            action: if present {
                "adding the finalizer to"
            } else {
                "removing the finalizer from"
            },
            object: describe("HTTPScaledObject", obj),
            source,
        })?;
    Ok(())
}

/// Why an object is invalid, naming its fields.
fn invalid_message(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

async fn reconcile_hso(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let result = reconcile_hso_inner(&obj, &ctx).await;
    ctx.metrics.count("httpscaledobject", result.is_ok());
    match &result {
        Ok(_) => succeeded(&ctx, &obj),
        Err(ReconcileError::KedaMissing) => {}
        Err(e) => warn!(error = %e, "reconcile failed; retrying with backoff"),
    }
    result
}

async fn reconcile_hso_inner(obj: &DynamicObject, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let kind = "HTTPScaledObject";
    if obj.metadata.deletion_timestamp.is_some() {
        // The ScaledObject is garbage-collected through its owner
        // reference (or survives, orphaned): only our finalizer is left.
        set_finalizer(ctx, obj, false).await?;
        return Ok(Action::await_change());
    }
    // Every object gets the finalizer, invalid ones too (as upstream).
    set_finalizer(ctx, obj, true).await?;

    let value = serde_json::to_value(obj).unwrap_or(Value::Null);
    let hso = match api::parse_http_scaled_object(value) {
        Ok(hso) => hso,
        Err(e) => return invalid(ctx, obj, &ctx.hso, kind, &[e]).await,
    };
    let target = &hso.spec.scale_target_ref;
    let mut status = json!({
        "targetWorkload": format!(
            "{}/{}/{}",
            target.api_version.as_deref().unwrap_or_default(),
            target.kind.as_deref().unwrap_or_default(),
            target.name
        ),
        "targetService": format!("{}:{}", target.service, target.port.unwrap_or(0)),
    });
    if let Err(errors) = routing::compile_http_scaled_object(&hso) {
        let message = invalid_message(&errors);
        status["conditions"] = json!([ready_condition(obj, false, INVALID_SPEC, &message)]);
        write_status(ctx, &ctx.hso, obj, status, kind).await?;
        ctx.event(obj, &ctx.hso, true, INVALID_SPEC, message).await;
        return Ok(Action::await_change());
    }

    let annotation = |key: &str| obj.annotations().get(key).is_some_and(|v| v == "true");
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let sos = ctx.api(&ctx.so, &namespace);
    let outcome = if annotation(ORPHAN_SCALEDOBJECT_ANNOTATION) {
        orphan(&sos, &name).await
    } else if annotation(SKIP_SCALEDOBJECT_CREATION_ANNOTATION) {
        delete_owned(&sos, &name).await
    } else {
        let desired = scaled_object::desired(&hso, &ctx.settings.scaler_address);
        let desired = serde_json::to_value(&desired).unwrap_or(Value::Null);
        sos.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map(|_| ())
    };
    match outcome {
        Ok(()) => {
            if ctx.keda_missing.swap(false, Ordering::Relaxed) {
                info!("KEDA's ScaledObject CRD is installed now; ScaledObjects are written again");
            }
            status["conditions"] = json!([ready_condition(
                obj,
                true,
                RECONCILED,
                "ScaledObject created and configured"
            )]);
            write_status(ctx, &ctx.hso, obj, status, kind).await?;
            Ok(Action::await_change())
        }
        Err(e) => {
            let missing = matches!(&e, kube::Error::Api(s) if s.code == 404);
            let err = if missing {
                ReconcileError::KedaMissing
            } else {
                ReconcileError::Kube {
                    action: "applying the ScaledObject of",
                    object: describe(kind, obj),
                    source: e,
                }
            };
            let message = format!("Failed to create scaled objects: {err}");
            if missing && !ctx.keda_missing.swap(true, Ordering::Relaxed) {
                warn!(object = %describe(kind, obj), "{err}");
            }
            status["conditions"] = json!([ready_condition(obj, false, CREATE_ERROR, &message)]);
            write_status(ctx, &ctx.hso, obj, status, kind).await?;
            ctx.event(obj, &ctx.hso, true, CREATE_ERROR, message).await;
            Err(err)
        }
    }
}

/// An invalid object: `Ready=False` naming the fields, a warning event,
/// and no retry until it changes.
async fn invalid(
    ctx: &Ctx,
    obj: &DynamicObject,
    ar: &ApiResource,
    kind: &str,
    errors: &[FieldError],
) -> Result<Action, ReconcileError> {
    let message = invalid_message(errors);
    let status = json!({"conditions": [ready_condition(obj, false, INVALID_SPEC, &message)]});
    write_status(ctx, ar, obj, status, kind).await?;
    ctx.event(obj, ar, true, INVALID_SPEC, message).await;
    Ok(Action::await_change())
}

/// The orphan annotation: our ScaledObject loses its owner reference and
/// survives the HTTPScaledObject.
async fn orphan(sos: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    let Some(so) = sos.get_opt(name).await? else {
        return Ok(());
    };
    let refs = so.owner_references();
    if !scaled_object::owned_by(Some(refs), name) {
        return Ok(());
    }
    let kept: Vec<_> = refs
        .iter()
        .filter(|r| !scaled_object::owned_by(Some(std::slice::from_ref(*r)), name))
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "ownerReferences": if kept.is_empty() { Value::Null } else { json!(kept) },
        "resourceVersion": so.resource_version(),
    }});
    sos.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    info!(
        scaledobject = name,
        "ScaledObject orphaned (owner reference removed)"
    );
    Ok(())
}

/// The skip annotation: the ScaledObject we created is deleted (one the
/// user wrote, not owned by the HTTPScaledObject, is left alone).
async fn delete_owned(sos: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    let Some(so) = sos.get_opt(name).await? else {
        return Ok(());
    };
    if scaled_object::owned_by(Some(so.owner_references()), name) {
        sos.delete(name, &DeleteParams::default()).await?;
        info!(
            scaledobject = name,
            "ScaledObject deleted (skip-scaledobject-creation)"
        );
    }
    Ok(())
}

async fn reconcile_ir(obj: Arc<DynamicObject>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let result = reconcile_ir_inner(&obj, &ctx).await;
    ctx.metrics.count("interceptorroute", result.is_ok());
    match &result {
        Ok(_) => succeeded(&ctx, &obj),
        Err(e) => warn!(error = %e, "reconcile failed; retrying with backoff"),
    }
    result
}

async fn reconcile_ir_inner(obj: &DynamicObject, ctx: &Ctx) -> Result<Action, ReconcileError> {
    let kind = "InterceptorRoute";
    if obj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let value = serde_json::to_value(obj).unwrap_or(Value::Null);
    let ir = match api::parse_interceptor_route(value) {
        Ok(ir) => ir,
        Err(e) => return invalid(ctx, obj, &ctx.ir, kind, &[e]).await,
    };
    if let Err(errors) = routing::compile_interceptor_route(&ir) {
        return invalid(ctx, obj, &ctx.ir, kind, &errors).await;
    }
    let status = json!({"conditions": [ready_condition(obj, true, RECONCILED, "InterceptorRoute reconciled")]});
    write_status(ctx, &ctx.ir, obj, status, kind).await?;
    Ok(Action::await_change())
}
