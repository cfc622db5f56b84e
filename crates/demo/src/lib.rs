//! `http-addon demo`: the whole add-on on one machine, walked through step
//! by step with measured numbers.
//!
//! Every program runs as a child process of the same `http-addon` binary
//! (what runs is what ships), on loopback and ephemeral ports: the API
//! server (`http-addon api`), the operator, the scaler, one cache, three
//! interceptors reading through the cache (on 127.0.0.1, .2 and .3, as
//! three pods would), and echo backends. The demo then plays the user
//! (applies manifests with server-side apply), the clients (requests with
//! a Host header through each interceptor), KEDA (asks the scaler over its
//! gRPC API) and the kubelet (marks an EndpointSlice ready), and checks each
//! promise of the add-on as it goes. A step that does not hold fails the
//! demo (exit status 1) with what it saw; the programs' logs are kept then.

mod report;
mod system;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use report::Report;
use system::{System, until};

/// Flags of `http-addon demo`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct DemoArgs {
    /// Leave the system running after the walk-through (until Ctrl-C),
    /// also when a step failed, and print the commands to try it by hand.
    #[arg(long)]
    pub keep_running: bool,

    /// Also write the results as JSON to this file ("-": stdout; the
    /// walk-through then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// The `http-addon` binary the programs run as (default: this one).
    #[arg(long, value_name = "FILE", hide = true)]
    pub bin: Option<PathBuf>,
}

/// Runs the demo; an error when a step does not hold.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let to_stdout = args.json.as_deref() == Some(std::path::Path::new("-"));
    let mut report = Report::new(to_stdout);
    let bin = match &args.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("finding the http-addon binary")?,
    };
    report.line(&format!(
        "http-addon demo: the KEDA HTTP Add-on on this machine (programs: {})",
        bin.display()
    ));
    let mut signals = process::Signals::new();
    let mut system = None;
    let result = tokio::select! {
        r = walk(&bin, &mut report, &mut system) => r,
        s = signals.recv() => Err(anyhow::anyhow!("interrupted ({s})")),
    };
    if let Err(e) = &result {
        report.fail(&format!("{e:#}"));
        if let Some(sys) = &mut system {
            report.line(&format!(
                "The programs' logs are kept in {}",
                sys.keep_logs().display()
            ));
        }
    }
    if let Some(sys) = &system {
        report.meta("dir", json!(sys.dir().display().to_string()));
        report.meta("programs", json!(sys.programs()));
    }
    report.summary();
    if let Some(path) = &args.json {
        let doc = serde_json::to_string_pretty(&report.json())?;
        if to_stdout {
            println!("{doc}");
        } else {
            std::fs::write(path, doc + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let (Some(system), true) = (&system, args.keep_running) {
        report.line(&system.try_it());
        signals.recv().await;
    }
    if let Some(sys) = &mut system {
        sys.stop().await;
    }
    drop(system);
    result
}

/// The objects of the walk-through.
mod manifests {
    use serde_json::{Value, json};

    pub const NS: &str = "demo";

    /// An HTTPScaledObject routing `hosts` (and `paths`, if any) to the
    /// Service named like it.
    pub fn hso(name: &str, hosts: &[&str], paths: &[&str]) -> Value {
        let mut spec = json!({
            "hosts": hosts,
            "scaleTargetRef": {"name": name, "kind": "Deployment", "apiVersion": "apps/v1",
                               "service": name, "port": 8080},
            "replicas": {"min": 0, "max": 10},
            "scalingMetric": {"concurrency": {"targetValue": 1}},
        });
        if !paths.is_empty() {
            spec["pathPrefixes"] = json!(paths);
        }
        json!({
            "apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        })
    }

    /// An InterceptorRoute for `host` with header `name: value`.
    pub fn ir_with_header(name: &str, host: &str, header: (&str, &str)) -> Value {
        json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "target": {"service": name, "port": 8080},
                "rules": [{"hosts": [host], "headers": [{"name": header.0, "value": header.1}]}],
                "scalingMetric": {"concurrency": {"targetValue": 10}},
            },
        })
    }

    /// An InterceptorRoute whose cold-start placeholder is the page in
    /// ConfigMap `page` (the key derived from the path: `/` is `index.html`).
    pub fn ir_with_page(name: &str, host: &str, page: &str) -> Value {
        json!({
            "apiVersion": "http.keda.sh/v1beta1", "kind": "InterceptorRoute",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "target": {"service": name, "port": 8080},
                "rules": [{"hosts": [host]}],
                "scalingMetric": {"concurrency": {"targetValue": 10}},
                "coldStart": {"placeholder": {"response": {
                    "bodyFromConfigMap": {"name": page},
                    "headers": {"Refresh": "2"},
                }}},
            },
        })
    }

    /// A ConfigMap the interceptors serve pages from (it carries the
    /// response-body label).
    pub fn page(name: &str, index: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": NS,
                         "labels": {"http.keda.sh/response-body": "true"}},
            "data": {"index.html": index},
        })
    }

    pub fn service(name: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": 8080}]},
        })
    }

    /// The Service's EndpointSlice: one ready pod at 127.0.0.1:`port`, or
    /// no ready pod (`None`: the app is scaled to zero).
    pub fn slice(name: &str, port: Option<u16>) -> Value {
        let endpoints = match port {
            Some(_) => json!([{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]),
            None => json!([]),
        };
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": NS,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port.unwrap_or(8080)}],
            "endpoints": endpoints,
        })
    }
}

use manifests::{hso, ir_with_header, ir_with_page, page, service, slice};

/// How many steps [`walk`] takes (a run that stops early is a failure).
pub(crate) const STEPS: usize = 8;

/// The walk-through; the running system stays in `slot`.
async fn walk(
    bin: &std::path::Path,
    report: &mut Report,
    slot: &mut Option<System>,
) -> anyhow::Result<()> {
    // 1. The programs.
    let mut step = report.step("start", "start every program as its own process");
    let started = Instant::now();
    let sys = slot.insert(System::start(bin, &mut step).await?);
    for app in ["shop", "api-v1", "api-v2", "docs", "app"] {
        sys.apply(service(app)).await?;
        let port = if app == "app" {
            None
        } else {
            Some(sys.backend(app))
        };
        sys.apply(slice(app, port)).await?;
    }
    step.fact("programs", json!(sys.programs()));
    step.fact("up_ms", json!(started.elapsed().as_millis() as u64));
    step.headline(&format!("{} programs up", sys.programs().len()));
    report.done(step);

    // 2. Routes, ScaledObjects, requests through each interceptor.
    let mut step = report.step(
        "routes",
        "apply 2 HTTPScaledObjects and 1 InterceptorRoute; the operator writes ScaledObjects",
    );
    let counted_from = sys.cache_counters().await?;
    let t0 = Instant::now();
    sys.apply(hso("shop", &["*.shop.example"], &["/cart", "/api"]))
        .await?;
    sys.apply(hso("api-v1", &["api.example"], &[])).await?;
    sys.apply(ir_with_header("api-v2", "api.example", ("x-version", "v2")))
        .await?;
    for name in ["shop", "api-v1"] {
        let so = until(
            &format!("the operator writes ScaledObject {name}"),
            async || sys.get("keda.sh/v1alpha1", "ScaledObject", name).await,
        )
        .await?;
        let trigger = &so["spec"]["triggers"][0];
        if trigger["type"] != "external-push"
            || trigger["metadata"]["httpScaledObject"] != name
            || trigger["metadata"]["scalerAddress"] != json!(sys.scaler_address())
        {
            bail!("ScaledObject {name} has the wrong trigger: {trigger}");
        }
        step.detail(&format!(
            "ScaledObject {}/{name}: trigger external-push scalerAddress={} httpScaledObject={name}, minReplicas={} maxReplicas={}",
            manifests::NS,
            trigger["metadata"]["scalerAddress"].as_str().unwrap_or(""),
            so["spec"]["minReplicaCount"],
            so["spec"]["maxReplicaCount"],
        ));
        step.fact(&format!("scaledobject_{name}"), so["spec"].clone());
    }
    let checks: [(&str, &str, Header<'_>, Option<&str>); 5] = [
        ("a.shop.example", "/cart/42", None, Some("shop")),
        ("b.shop.example", "/api/items", None, Some("shop")),
        ("a.shop.example", "/about", None, None),
        ("api.example", "/v", None, Some("api-v1")),
        (
            "api.example",
            "/v",
            Some(("x-version", "v2")),
            Some("api-v2"),
        ),
    ];
    for i in 0..sys.interceptors() {
        for (host, path, header, want) in checks {
            let got = until(
                &format!("interceptor {} routes {host}{path} to {want:?}", i + 1),
                async || {
                    let got = sys.request(i, host, path, header).await.ok()?;
                    (got.backend.as_deref() == want).then_some(got)
                },
            )
            .await?;
            if i == 0 {
                let h = header
                    .map(|(k, v)| format!(" ({k}: {v})"))
                    .unwrap_or_default();
                step.detail(&format!(
                    "{host}{path}{h} -> {} ({})",
                    want.unwrap_or("404, no route"),
                    got.status
                ));
            }
        }
    }
    step.fact("checked_requests", json!(checks.len() * sys.interceptors()));
    step.headline(&format!(
        "2 ScaledObjects; {} requests, each to the right backend",
        checks.len() * sys.interceptors()
    ));
    step.fact("ms", json!(t0.elapsed().as_millis() as u64));
    report.done(step);

    // 3. Propagation of a new route to every interceptor.
    let mut step = report.step("propagation", "a new route reaches every interceptor");
    let applied = Instant::now();
    sys.apply(hso("docs", &["docs.example"], &[])).await?;
    let times = sys
        .time_until_all(applied, "docs.example", "/", None, Some("docs"))
        .await?;
    step.detail(&format!(
        "docs.example routed by each interceptor after {}",
        ms_list(&times)
    ));
    step.fact("ms_per_interceptor", json!(times));
    step.headline(&format!(
        "new route on all 3 interceptors: {}",
        ms_list(&times)
    ));
    report.done(step);

    // 4. Scale from zero.
    let step_title = "a request for an app with no ready pod is held; the scaler reports it; the pod turns ready; the request completes";
    let mut step = report.step("scale-from-zero", step_title);
    sys.apply(hso("app", &["app.example"], &[])).await?;
    let app_so = sys.keda_ref("app", &[("httpScaledObject", "app")]);
    until("the scaler knows the app and reports it idle", async || {
        let active = sys.scaler_active(&app_so).await.ok()?;
        let value = sys.scaler_metric(&app_so).await.ok()?;
        (!active && value == 0.0).then_some(())
    })
    .await?;
    let held_since = Instant::now();
    let held = sys.request_in_background(1, "app.example", "/hello", None);
    // A slow request to the InterceptorRoute, so its concurrency shows too.
    let slow = sys.request_in_background(
        2,
        "api.example",
        "/slow?delay=2s",
        Some(("x-version", "v2")),
    );
    let ir_so = sys.keda_ref("api-v2-so", &[("interceptorRoute", "api-v2")]);
    let fleet_so = sys.keda_ref(
        "interceptors",
        &[("interceptorTargetPendingRequests", "200")],
    );
    let (active, app_value, ir_value, fleet_value) = until(
        "the scaler reports the held request (IsActive, metric 1), the InterceptorRoute's and the fleet's",
        async || {
            let active = sys.scaler_active(&app_so).await.ok()?;
            let app_value = sys.scaler_metric(&app_so).await.ok()?;
            let ir_value = sys.scaler_metric(&ir_so).await.ok()?;
            let fleet_value = sys.scaler_metric(&fleet_so).await.ok()?;
            (active && app_value == 1.0 && ir_value == 1.0 && fleet_value == 2.0)
                .then_some((active, app_value, ir_value, fleet_value))
        },
    )
    .await?;
    let reported_ms = held_since.elapsed().as_millis() as u64;
    if held.is_finished() {
        bail!("the request for app.example was answered while the app had no ready pod");
    }
    step.detail(&format!(
        "scaler after {reported_ms} ms: IsActive={active}, http-demo_002Fapp={app_value}, http_api-v2_concurrency={ir_value} (InterceptorRoute), interceptorTargetPendingRequests metric={fleet_value} (fleet)"
    ));
    let app_specs = sys.scaler_specs(&app_so).await?;
    let ir_specs = sys.scaler_specs(&ir_so).await?;
    step.detail(&format!(
        "GetMetricSpec app: {app_specs}; api-v2: {ir_specs}"
    ));
    // Play KEDA, the HPA and the kubelet: the pod is up and ready.
    let ready_at = Instant::now();
    sys.apply(slice("app", Some(sys.backend("app")))).await?;
    let answer = tokio::time::timeout(Duration::from_secs(20), held)
        .await
        .context("the held request never completed")???;
    let released = ready_at.elapsed();
    let held_for = held_since.elapsed();
    if answer.backend.as_deref() != Some("app") {
        bail!(
            "the held request got {} from {:?}, not the app",
            answer.status,
            answer.backend
        );
    }
    let slow = slow.await??;
    if slow.backend.as_deref() != Some("api-v2") {
        bail!("the slow request went to {:?}, not api-v2", slow.backend);
    }
    until("the scaler's metric returns to 0", async || {
        let active = sys.scaler_active(&app_so).await.ok()?;
        let v = sys.scaler_metric(&app_so).await.ok()?;
        (!active && v == 0.0).then_some(())
    })
    .await?;
    step.detail(&format!(
        "held {} ms in all; answered by app {} ms after its endpoint turned ready; metric back to 0",
        held_for.as_millis(),
        released.as_millis()
    ));
    step.fact("scaler_reported_ms", json!(reported_ms));
    step.fact("metric_app", json!(app_value));
    step.fact("metric_interceptor_route", json!(ir_value));
    step.fact("metric_fleet_pending", json!(fleet_value));
    step.fact("metric_specs_app", app_specs);
    step.fact("metric_specs_interceptor_route", ir_specs);
    step.fact("held_ms", json!(held_for.as_millis() as u64));
    step.headline(&format!(
        "IsActive + metric 1 after {reported_ms} ms; held {} ms; released {} ms after ready",
        held_for.as_millis(),
        released.as_millis()
    ));
    step.fact("ready_to_released_ms", json!(released.as_millis() as u64));
    report.done(step);

    // 5. Change and delete.
    let mut step = report.step("change-delete", "change a path prefix and delete a route");
    let changed = Instant::now();
    sys.apply(hso("shop", &["*.shop.example"], &["/basket", "/api"]))
        .await?;
    let gone = sys
        .time_until_all(changed, "a.shop.example", "/cart/42", None, None)
        .await?;
    let new = sys
        .time_until_all(changed, "a.shop.example", "/basket/1", None, Some("shop"))
        .await?;
    step.detail(&format!(
        "/cart -> 404 after {}; /basket -> shop after {}",
        ms_list(&gone),
        ms_list(&new)
    ));
    let deleted = Instant::now();
    sys.delete("http.keda.sh/v1alpha1", "HTTPScaledObject", "api-v1")
        .await?;
    let removed = sys
        .time_until_all(deleted, "api.example", "/v", None, None)
        .await?;
    let header_route = sys
        .request(0, "api.example", "/v", Some(("x-version", "v2")))
        .await?;
    if header_route.backend.as_deref() != Some("api-v2") {
        bail!(
            "deleting api-v1 broke the InterceptorRoute api-v2: {:?}",
            header_route.backend
        );
    }
    step.detail(&format!(
        "HTTPScaledObject api-v1 deleted: api.example -> 404 after {} (with x-version: v2 still api-v2)",
        ms_list(&removed)
    ));
    let worst = gone
        .iter()
        .chain(&new)
        .chain(&removed)
        .copied()
        .max()
        .unwrap_or(0);
    if worst > 1000 {
        bail!("a change took {worst} ms to reach an interceptor (promise: within 1 s)");
    }
    // Every change so far reached the cache as a watch event: its 1 s
    // resync (the safety net for lost events) had next to nothing to do.
    let (events_now, repairs_now) = sys.cache_counters().await?;
    let events = events_now - counted_from.0;
    let repairs = repairs_now - counted_from.1;
    step.detail(&format!(
        "the cache got {events} watch events for steps 2-5; its resync had to repair {repairs}"
    ));
    if events == 0 || repairs * 5 > events {
        bail!(
            "the cache is not following the API's watch events: {repairs} of {events} changes arrived only through its resync"
        );
    }
    step.fact("cache_watch_events", json!(events));
    step.fact("cache_resync_repairs", json!(repairs));
    step.fact("path_change_ms", json!(gone));
    step.fact("delete_ms", json!(removed));
    step.headline(&format!("404 everywhere within {worst} ms"));
    report.done(step);

    // 6. The API server goes away; routing continues; a change after it is back.
    let mut step = report.step(
        "api-outage",
        "kill -9 the API server: routing continues; restart it: a change reaches every interceptor",
    );
    sys.kill("api").await?;
    let outage = Duration::from_secs(3);
    let (ok, failed) = sys.load_for(outage).await;
    step.detail(&format!(
        "API down {} s: {ok} requests through the interceptors answered by the right backend, {failed} not",
        outage.as_secs()
    ));
    if failed > 0 || ok == 0 {
        bail!("routing did not continue while the API server was down ({ok} ok, {failed} failed)");
    }
    let restarted = Instant::now();
    sys.start_api().await?;
    let back_ms = restarted.elapsed().as_millis() as u64;
    let applied = Instant::now();
    sys.apply(hso("news", &["news.example"], &[])).await?;
    sys.apply(service("news")).await?;
    sys.apply(slice("news", Some(sys.backend("docs")))).await?;
    let times = sys
        .time_until_all(applied, "news.example", "/", None, Some("docs"))
        .await?;
    step.detail(&format!(
        "API back (state file restored) in {back_ms} ms; a new route then reached each interceptor after {}",
        ms_list(&times)
    ));
    until(
        "the operator writes the new route's ScaledObject",
        async || sys.get("keda.sh/v1alpha1", "ScaledObject", "news").await,
    )
    .await?;
    let operator_ms = restarted.elapsed().as_millis() as u64;
    step.detail(&format!(
        "the operator (kube-runtime watches, relisting after the restart) wrote its ScaledObject {operator_ms} ms after the restart"
    ));
    step.fact("operator_resumed_ms", json!(operator_ms));
    step.fact("requests_ok_during_outage", json!(ok));
    step.fact("requests_failed_during_outage", json!(failed));
    step.fact("api_restart_ms", json!(back_ms));
    step.fact("change_after_restart_ms", json!(times));
    step.headline(&format!(
        "{ok} ok / {failed} failed while down; change after restart: {}",
        ms_list(&times)
    ));
    report.done(step);

    // 7. A bad manifest.
    let mut step = report.step(
        "bad-manifest",
        "a bad manifest: a clear error, routing untouched",
    );
    let mut bad = hso("broken", &["broken.example"], &[]);
    bad["spec"]["timeouts"] = json!({"conditionWait": "soon"});
    let applied = Instant::now();
    sys.apply(bad).await?;
    let condition = until(
        "the operator reports the bad HTTPScaledObject",
        async || {
            let obj = sys
                .get("http.keda.sh/v1alpha1", "HTTPScaledObject", "broken")
                .await?;
            let c = obj["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (c["status"] == "False").then_some(c)
        },
    )
    .await?;
    let reported_ms = applied.elapsed().as_millis() as u64;
    let message = condition["message"].as_str().unwrap_or_default().to_owned();
    if !message.contains("conditionWait") {
        bail!("the error does not name the field: {message}");
    }
    step.detail(&format!(
        "HTTPScaledObject demo/broken, after {reported_ms} ms: Ready=False reason={} message={message:?}",
        condition["reason"].as_str().unwrap_or("")
    ));
    step.fact("operator_reported_ms", json!(reported_ms));
    let (ok, failed) = sys.load_for(Duration::from_millis(500)).await;
    let broken = sys.request(0, "broken.example", "/", None).await?;
    if failed > 0 || broken.status != 404 {
        bail!(
            "routing changed after the bad manifest: {failed} failed, broken.example -> {}",
            broken.status
        );
    }
    step.detail(&format!(
        "every other route still answers ({ok} requests checked); broken.example -> 404"
    ));
    step.fact("condition", condition);
    step.headline("Ready=False naming spec.timeouts.conditionWait; routing untouched");
    report.done(step);

    // 8. A placeholder page from a ConfigMap, changed in place.
    let mut step = report.step(
        "placeholder-page",
        "an app scaled to zero answers with a page from a ConfigMap; the page is edited",
    );
    const FIRST: &str = "<h1>Waking up...</h1>";
    const SECOND: &str = "<h1>Almost there</h1>";
    sys.apply(page("asleep-page", FIRST)).await?;
    sys.apply(service("asleep")).await?;
    sys.apply(slice("asleep", None)).await?;
    // The route first (the page is already there), then an edit of the page.
    let changes = [
        (
            "the page",
            ir_with_page("asleep", "asleep.example", "asleep-page"),
            FIRST,
        ),
        ("the edited page", page("asleep-page", SECOND), SECOND),
    ];
    let mut times = Vec::new();
    for (what, obj, body) in changes {
        let since = Instant::now();
        sys.apply(obj).await?;
        let t = sys
            .time_until_each(
                since,
                &format!("every interceptor serves {what}"),
                ("asleep.example", "/", None),
                |a| a.status == 503 && a.body == body,
            )
            .await?;
        step.detail(&format!(
            "asleep.example/ -> 503 with {what} (ConfigMap demo/asleep-page, index.html) on each interceptor after {}",
            ms_list(&t)
        ));
        times.push(t);
    }
    let (first, changed) = (&times[0], &times[1]);
    step.fact("first_ms_per_interceptor", json!(first));
    step.fact("edit_ms_per_interceptor", json!(changed));
    step.headline(&format!(
        "placeholder page from a ConfigMap; an edit on all 3 interceptors: {}",
        ms_list(changed)
    ));
    report.done(step);

    Ok(())
}

fn ms_list(times: &[u64]) -> String {
    let parts: Vec<String> = times.iter().map(|t| format!("{t} ms")).collect();
    parts.join(", ")
}

/// A request header to send: (name, value).
pub(crate) type Header<'a> = Option<(&'a str, &'a str)>;

/// What a check through an interceptor saw.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The echo backend that answered (its `server` field), if any.
    pub(crate) backend: Option<String>,
    /// The body, as text.
    pub(crate) body: String,
}

impl Answer {
    fn from(status: u16, body: &[u8]) -> Answer {
        let backend = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["server"].as_str().map(str::to_owned));
        Answer {
            status,
            backend: if status == 200 { backend } else { None },
            body: String::from_utf8_lossy(body).into_owned(),
        }
    }
}

/// Scaler metadata for a ScaledObject reference.
pub(crate) fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
