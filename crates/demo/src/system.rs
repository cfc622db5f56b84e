//! The running system: the child processes, their ports, and the clients
//! the demo uses to talk to them (kube for the API server, HTTP through the
//! interceptors, gRPC to the scaler as KEDA does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
};
use scaler::proto::external_scaler_client::ExternalScalerClient;
use scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

use crate::Answer;
use crate::manifests::NS;
use crate::report::Step;

/// How long any one wait of the demo may take before the step fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `check` (every 2 ms, for at most [`PATIENCE`]) until it gives a value.
pub(crate) async fn until<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out after {} s waiting until {what}",
                PATIENCE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A port nothing listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The interceptors' addresses: three "pods" on one machine.
const INTERCEPTOR_IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
const SCALER_SERVICE: &str = "keda-add-ons-http-external-scaler";
const ADMIN_SERVICE: &str = "keda-add-ons-http-interceptor-admin";
const KEDA_NS: &str = "keda";
/// The echo backends, one per app.
const BACKENDS: [&str; 5] = ["shop", "api-v1", "api-v2", "docs", "app"];

struct Program {
    name: String,
    address: String,
    child: Child,
}

pub(crate) struct System {
    bin: PathBuf,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    programs: Vec<Program>,
    api_port: u16,
    cache_port: u16,
    grpc_port: u16,
    proxy_port: u16,
    admin_port: u16,
    backends: BTreeMap<String, u16>,
    cache_metrics_port: u16,
    kube: kube::Client,
    http: Client<HttpConnector, Empty<Bytes>>,
    scaler: Option<ExternalScalerClient<Channel>>,
}

impl Drop for System {
    fn drop(&mut self) {
        for p in &mut self.programs {
            let _ = p.child.start_kill();
        }
    }
}

impl System {
    /// Starts every program and waits until each is ready.
    pub(crate) async fn start(bin: &Path, step: &mut Step) -> anyhow::Result<System> {
        let dir = tempfile::Builder::new()
            .prefix("http-addon-demo-")
            .tempdir()
            .context("creating the demo's directory")?;
        let path = dir.path().to_path_buf();
        let api_port = free_port()?;
        let kube = kube_client(api_port)?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(http);
        let mut sys = System {
            bin: bin.to_path_buf(),
            dir: Some(dir),
            path,
            programs: Vec::new(),
            api_port,
            cache_port: free_port()?,
            grpc_port: free_port()?,
            proxy_port: free_port()?,
            admin_port: free_port()?,
            backends: BTreeMap::new(),
            cache_metrics_port: 0,
            kube,
            http,
            scaler: None,
        };
        let t = Instant::now();
        sys.start_api().await?;
        step.detail(&format!(
            "api           {}   kubeconfig {} ({} ms)",
            sys.programs[0].address,
            sys.kubeconfig().display(),
            t.elapsed().as_millis()
        ));

        // What the cluster would have: the interceptor admin Service and its
        // three ready pods, which the scaler polls.
        sys.apply(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": ADMIN_SERVICE, "namespace": KEDA_NS},
            "spec": {"ports": [{"name": "admin", "port": 9090, "targetPort": sys.admin_port}]}
        }))
        .await?;
        sys.apply(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{ADMIN_SERVICE}-1"), "namespace": KEDA_NS,
                         "labels": {"kubernetes.io/service-name": ADMIN_SERVICE}},
            "addressType": "IPv4",
            "ports": [{"name": "admin", "port": sys.admin_port}],
            "endpoints": INTERCEPTOR_IPS.iter()
                .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
                .collect::<Vec<_>>(),
        }))
        .await?;

        // The cache, then everything that reads through it.
        let metrics = free_port()?;
        sys.cache_metrics_port = metrics;
        let cache = format!("http://127.0.0.1:{}", sys.cache_port);
        let kubeconfig = sys.kubeconfig().display().to_string();
        let ms = sys
            .spawn_ready(
                "cache",
                &cache,
                &[
                    "cache",
                    "--kubeconfig",
                    &kubeconfig,
                    "--bind-address",
                    "127.0.0.1",
                    "--port",
                    &sys.cache_port.to_string(),
                    "--metrics-port",
                    &metrics.to_string(),
                    "--allow-anonymous",
                ],
                &[],
                &format!("http://127.0.0.1:{metrics}/readyz"),
            )
            .await?;
        step.detail(&format!(
            "cache         {cache}   watches the API once for the fleet ({ms} ms)"
        ));

        let health = free_port()?;
        let grpc = sys.grpc_port.to_string();
        let ms = sys
            .spawn_ready(
                "operator",
                &format!("health http://127.0.0.1:{health}"),
                &[
                    "operator",
                    "--kubeconfig",
                    &kubeconfig,
                    "--health-probe-bind-address",
                    &format!("127.0.0.1:{health}"),
                    "--metrics-bind-address",
                    "0",
                ],
                &[
                    ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_SERVICE", SCALER_SERVICE),
                    ("KEDA_HTTP_OPERATOR_EXTERNAL_SCALER_PORT", &grpc),
                    ("KEDA_HTTP_OPERATOR_NAMESPACE", KEDA_NS),
                ],
                &format!("http://127.0.0.1:{health}/readyz"),
            )
            .await?;
        step.detail(&format!(
            "operator      reads the API, writes ScaledObjects ({ms} ms)"
        ));

        for (i, ip) in INTERCEPTOR_IPS.iter().enumerate() {
            let name = format!("interceptor-{}", i + 1);
            let ms = sys
                .spawn_ready(
                    &name,
                    &format!("http://{ip}:{}", sys.proxy_port),
                    &[
                        "interceptor",
                        "--source-url",
                        &cache,
                        "--bind-address",
                        ip,
                        "--proxy-port",
                        &sys.proxy_port.to_string(),
                        "--admin-port",
                        &sys.admin_port.to_string(),
                        "--metrics-port",
                        "0",
                        "--direct-pod-routing",
                        "true",
                    ],
                    &[],
                    &format!("http://{ip}:{}/readyz", sys.admin_port),
                )
                .await?;
            step.detail(&format!(
                "{name:<13} http://{ip}:{}   admin :{} (through the cache) ({ms} ms)",
                sys.proxy_port, sys.admin_port,
            ));
        }

        let t = Instant::now();
        sys.spawn(
            "scaler",
            &format!("grpc 127.0.0.1:{grpc}"),
            &[
                "scaler",
                "--source-url",
                &cache,
                "--bind-address",
                "127.0.0.1",
                "--port",
                &grpc,
                "--metrics-port",
                "0",
                "--target-admin-namespace",
                KEDA_NS,
                "--target-admin-service",
                ADMIN_SERVICE,
                "--target-admin-deployment",
                "keda-add-ons-http-interceptor",
                "--target-admin-port",
                "9090",
                "--queue-tick-duration",
                "100ms",
            ],
            &[],
        )?;
        let endpoint = format!("http://127.0.0.1:{grpc}");
        let client = until("the scaler accepts gRPC connections", async || {
            ExternalScalerClient::connect(endpoint.clone()).await.ok()
        })
        .await?;
        sys.scaler = Some(client);
        step.detail(&format!("scaler        grpc 127.0.0.1:{grpc}   polls the 3 interceptors' /queue every 100 ms ({} ms)", t.elapsed().as_millis()));

        for name in BACKENDS {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let args = ["echo", "--port", &port.to_string(), "--name", name];
            sys.spawn_ready(&format!("echo-{name}"), &url, &args, &[], &url)
                .await?;
            sys.backends.insert(name.to_string(), port);
        }
        step.detail(&format!(
            "echo          {} backends, each answering with its name: {}",
            BACKENDS.len(),
            BACKENDS.join(", ")
        ));
        Ok(sys)
    }

    /// Where the logs, the kubeconfig and the state file are.
    pub(crate) fn dir(&self) -> &Path {
        &self.path
    }

    /// Stops every program and waits until each has exited.
    pub(crate) async fn stop(&mut self) {
        for p in &mut self.programs {
            let _ = p.child.kill().await;
        }
    }

    /// Keeps the directory (logs, kubeconfig, state file) after exit.
    pub(crate) fn keep_logs(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            let _ = dir.keep();
        }
        self.path.clone()
    }

    fn kubeconfig(&self) -> PathBuf {
        self.path.join("kubeconfig")
    }

    /// Starts (or restarts) the API server on its port, with its state file.
    pub(crate) async fn start_api(&mut self) -> anyhow::Result<()> {
        let url = format!("http://127.0.0.1:{}", self.api_port);
        let kubeconfig = self.kubeconfig().display().to_string();
        let state = self.path.join("api-state.json").display().to_string();
        self.programs.retain(|p| p.name != "api");
        self.spawn(
            "api",
            &url,
            &[
                "api",
                "--port",
                &self.api_port.to_string(),
                "--kubeconfig",
                &kubeconfig,
                "--state-file",
                &state,
            ],
            &[],
        )?;
        // The API is listed first.
        let api = self.programs.pop().expect("just spawned");
        self.programs.insert(0, api);
        self.ready_http("api", &format!("{url}/readyz")).await
    }

    /// Spawns a program and waits until `ready_url` answers 200; returns
    /// how long that took, in milliseconds.
    async fn spawn_ready(
        &mut self,
        name: &str,
        address: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready_url: &str,
    ) -> anyhow::Result<u128> {
        let t = Instant::now();
        self.spawn(name, address, args, env)?;
        self.ready_http(name, ready_url).await?;
        Ok(t.elapsed().as_millis())
    }

    fn spawn(
        &mut self,
        name: &str,
        address: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let log = self.path.join(format!("{name}.log"));
        // Appended: a restarted program keeps its earlier log.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .envs(env.iter().copied())
            // Only what the flags say: no source from the environment.
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {name} ({} {})",
                self.bin.display(),
                args.join(" ")
            )
        })?;
        self.programs.push(Program {
            name: name.to_string(),
            address: address.to_string(),
            child,
        });
        Ok(())
    }

    /// Waits until `url` answers 200; fails early if `name` exits.
    async fn ready_http(&mut self, name: &str, url: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok((200, _)) = self.get_url(url, None, None).await {
                return Ok(());
            }
            if let Some(p) = self.programs.iter_mut().find(|p| p.name == name)
                && let Ok(Some(status)) = p.child.try_wait()
            {
                bail!(
                    "{name} exited ({status}) before it was ready:\n{}",
                    self.log_tail(name)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not ready within {} s:\n{}",
                    PATIENCE.as_secs(),
                    self.log_tail(name)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self, name: &str) -> String {
        let log = self.path.join(format!("{name}.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(15)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", log.display())
    }

    /// Kills a program with SIGKILL, as a crash would.
    pub(crate) async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self
            .programs
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no program {name}"))?;
        p.child.kill().await?;
        Ok(())
    }

    /// Name, pid and address of each program.
    pub(crate) fn programs(&self) -> Vec<Value> {
        self.programs
            .iter()
            .map(|p| json!({"name": p.name, "pid": p.child.id(), "address": p.address}))
            .collect()
    }

    pub(crate) fn backend(&self, name: &str) -> u16 {
        self.backends[name]
    }

    pub(crate) fn interceptors(&self) -> usize {
        INTERCEPTOR_IPS.len()
    }

    /// What the operator puts in each ScaledObject's trigger.
    pub(crate) fn scaler_address(&self) -> String {
        format!("{SCALER_SERVICE}.{KEDA_NS}:{}", self.grpc_port)
    }

    fn resource(api_version: &str, kind: &str) -> ApiResource {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()))
    }

    fn api_for(&self, obj: &Value) -> anyhow::Result<(Api<DynamicObject>, String)> {
        let api_version = obj["apiVersion"].as_str().context("apiVersion")?;
        let kind = obj["kind"].as_str().context("kind")?;
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or(NS);
        let name = obj["metadata"]["name"].as_str().context("metadata.name")?;
        let ar = Self::resource(api_version, kind);
        Ok((
            Api::namespaced_with(self.kube.clone(), ns, &ar),
            name.to_string(),
        ))
    }

    /// Server-side apply, as `kubectl apply --server-side` does.
    pub(crate) async fn apply(&self, obj: Value) -> anyhow::Result<()> {
        let (api, name) = self.api_for(&obj)?;
        api.patch(
            &name,
            &PatchParams::apply("http-addon-demo").force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {} {name}", obj["kind"].as_str().unwrap_or("")))?;
        Ok(())
    }

    pub(crate) async fn get(&self, api_version: &str, kind: &str, name: &str) -> Option<Value> {
        let ar = Self::resource(api_version, kind);
        let api: Api<DynamicObject> = Api::namespaced_with(self.kube.clone(), NS, &ar);
        let obj = api.get_opt(name).await.ok()??;
        serde_json::to_value(obj).ok()
    }

    pub(crate) async fn delete(
        &self,
        api_version: &str,
        kind: &str,
        name: &str,
    ) -> anyhow::Result<()> {
        let ar = Self::resource(api_version, kind);
        let api: Api<DynamicObject> = Api::namespaced_with(self.kube.clone(), NS, &ar);
        api.delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting {kind} {name}"))?;
        Ok(())
    }

    async fn get_url(
        &self,
        url: &str,
        host: Option<&str>,
        header: Option<(&str, &str)>,
    ) -> anyhow::Result<(u16, Bytes)> {
        fetch(&self.http, url, host, header).await
    }

    /// A request through interceptor `i` with this Host (and header).
    pub(crate) async fn request(
        &self,
        i: usize,
        host: &str,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> anyhow::Result<Answer> {
        let url = format!("http://{}:{}{path}", INTERCEPTOR_IPS[i], self.proxy_port);
        let (status, body) = self.get_url(&url, Some(host), header).await?;
        Ok(Answer::from(status, &body))
    }

    /// The same, answered in a task of its own.
    pub(crate) fn request_in_background(
        &self,
        i: usize,
        host: &str,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> tokio::task::JoinHandle<anyhow::Result<Answer>> {
        let http = self.http.clone();
        let url = format!("http://{}:{}{path}", INTERCEPTOR_IPS[i], self.proxy_port);
        let host = host.to_string();
        let header = header.map(|(k, v)| (k.to_string(), v.to_string()));
        tokio::spawn(async move {
            let header = header.as_ref().map(|(k, v)| (k.as_str(), v.as_str()));
            let (status, body) = fetch(&http, &url, Some(&host), header).await?;
            Ok(Answer::from(status, &body))
        })
    }

    /// Times (ms since `since`) until each interceptor routes `host path`
    /// to backend `want` (`None`: answers 404).
    pub(crate) async fn time_until_all(
        &self,
        since: Instant,
        host: &str,
        path: &str,
        header: Option<(&str, &str)>,
        want: Option<&str>,
    ) -> anyhow::Result<Vec<u64>> {
        let what = format!("every interceptor routes {host}{path} to {want:?}");
        self.time_until_each(since, &what, (host, path, header), |a| {
            a.backend.as_deref() == want && (want.is_some() || a.status == 404)
        })
        .await
    }

    /// Times (ms since `since`) until each interceptor's answer to
    /// `(host, path, header)` satisfies `done`.
    pub(crate) async fn time_until_each(
        &self,
        since: Instant,
        what: &str,
        (host, path, header): (&str, &str, crate::Header<'_>),
        done: impl Fn(&Answer) -> bool,
    ) -> anyhow::Result<Vec<u64>> {
        let mut times = vec![None; self.interceptors()];
        until(what, async || {
            for (i, t) in times.iter_mut().enumerate() {
                if t.is_none()
                    && let Ok(a) = self.request(i, host, path, header).await
                    && done(&a)
                {
                    *t = Some(since.elapsed().as_millis() as u64);
                }
            }
            times.iter().all(Option::is_some).then_some(())
        })
        .await?;
        Ok(times.into_iter().flatten().collect())
    }

    /// Requests round-robin over the interceptors and the live routes for
    /// `duration`: (answered by the right backend, not).
    pub(crate) async fn load_for(&self, duration: Duration) -> (u64, u64) {
        let routes: [(&str, &str, crate::Header<'_>, &str); 4] = [
            ("a.shop.example", "/api/x", None, "shop"),
            ("api.example", "/v", Some(("x-version", "v2")), "api-v2"),
            ("docs.example", "/", None, "docs"),
            ("app.example", "/", None, "app"),
        ];
        let (mut ok, mut failed) = (0, 0);
        let end = Instant::now() + duration;
        let mut n = 0usize;
        while Instant::now() < end {
            let (host, path, header, want) = routes[n % routes.len()];
            let i = n % self.interceptors();
            match self.request(i, host, path, header).await {
                Ok(a) if a.backend.as_deref() == Some(want) => ok += 1,
                _ => failed += 1,
            }
            n += 1;
        }
        (ok, failed)
    }

    /// The cache's counters: (watch events received from the API, changes
    /// only its periodic resync found, i.e. events it did not get).
    pub(crate) async fn cache_counters(&self) -> anyhow::Result<(u64, u64)> {
        let url = format!("http://127.0.0.1:{}/metrics", self.cache_metrics_port);
        let (_, body) = self.get_url(&url, None, None).await?;
        let text = String::from_utf8_lossy(&body);
        let sum = |name: &str| -> u64 {
            text.lines()
                .filter(|l| l.starts_with(name))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        };
        Ok((
            sum("keda_http_cache_upstream_events_total"),
            sum("keda_http_cache_upstream_resync_repairs_total"),
        ))
    }

    /// A ScaledObject reference as KEDA sends it.
    pub(crate) fn keda_ref(&self, name: &str, md: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: name.into(),
            namespace: NS.into(),
            scaler_metadata: crate::metadata(md),
        }
    }

    fn scaler(&self) -> ExternalScalerClient<Channel> {
        self.scaler.clone().expect("the scaler is started")
    }

    /// IsActive.
    pub(crate) async fn scaler_active(&self, so: &ScaledObjectRef) -> anyhow::Result<bool> {
        Ok(self
            .scaler()
            .is_active(so.clone())
            .await?
            .into_inner()
            .result)
    }

    /// The first metric's value of GetMetrics (all metrics asked for).
    pub(crate) async fn scaler_metric(&self, so: &ScaledObjectRef) -> anyhow::Result<f64> {
        let values = self
            .scaler()
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(so.clone()),
                metric_name: String::new(),
            })
            .await?
            .into_inner()
            .metric_values;
        let v = values.first().context("no metric value")?;
        Ok((v.metric_value as f64).max(v.metric_value_float))
    }

    /// GetMetricSpec, as JSON.
    pub(crate) async fn scaler_specs(&self, so: &ScaledObjectRef) -> anyhow::Result<Value> {
        let specs = self
            .scaler()
            .get_metric_spec(so.clone())
            .await?
            .into_inner()
            .metric_specs;
        Ok(specs
            .iter()
            .map(|s| {
                let target = if s.target_size != 0 {
                    json!(s.target_size)
                } else {
                    json!(s.target_size_float)
                };
                json!({"metricName": s.metric_name, "target": target})
            })
            .collect())
    }

    /// How to try the running system by hand.
    pub(crate) fn try_it(&self) -> String {
        format!(
            "\nThe system keeps running (Ctrl-C stops it). Try:\n\
             \x20 export KUBECONFIG={kubeconfig}\n\
             \x20 kubectl get httpscaledobjects,interceptorroutes,scaledobjects -A\n\
             \x20 curl -H 'Host: a.shop.example' http://127.0.0.1:{proxy}/api/items\n\
             \x20 curl -H 'Host: api.example' -H 'x-version: v2' http://127.0.0.2:{proxy}/\n\
             \x20 curl http://127.0.0.3:{admin}/queue\n\
             \x20 grpcurl -plaintext -d '{{\"name\":\"app\",\"namespace\":\"{NS}\",\"scalerMetadata\":{{\"httpScaledObject\":\"app\"}}}}' 127.0.0.1:{grpc} externalscaler.ExternalScaler/IsActive\n\
             Logs: {dir}",
            kubeconfig = self.kubeconfig().display(),
            proxy = self.proxy_port,
            admin = self.admin_port,
            grpc = self.grpc_port,
            dir = self.path.display(),
        )
    }
}

/// GET `url` (with this Host and header): the status and the whole body.
async fn fetch(
    http: &Client<HttpConnector, Empty<Bytes>>,
    url: &str,
    host: Option<&str>,
    header: Option<(&str, &str)>,
) -> anyhow::Result<(u16, Bytes)> {
    let mut req = http::Request::get(url);
    if let Some(h) = host {
        req = req.header(http::header::HOST, h);
    }
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let resp = http.request(req.body(Empty::new())?).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn kube_client(port: u16) -> anyhow::Result<kube::Client> {
    let mut config = kube::Config::new(format!("http://127.0.0.1:{port}").parse()?);
    config.default_namespace = NS.into();
    config.read_timeout = Some(Duration::from_secs(10));
    Ok(kube::Client::try_from(config)?)
}
