//! `bench chaos`: the fault campaign (issue 15, part 2). The real programs
//! as child processes (2 `http-addon cache`, 3 `http-addon interceptor` on
//! 127.0.0.1, .2 and .3 reading through the caches, `http-addon echo`
//! backends), the testkit API server in this process, a steady request load
//! and a steady stream of route changes, while faults are injected one after
//! the other:
//!
//! | fault | how |
//! |---|---|
//! | `cache-kill` | `kill -9` one cache, restart it on the same port |
//! | `api-down` | the API server stops listening (connections refused), then comes back |
//! | `api-500` | every list and watch answered 500, open watches closed |
//! | `api-410` | open watches closed, every new watch answered `410 Expired` |
//! | `watch-stall` | watches stay open but send nothing (events lost to them) |
//! | `drop-events` | each watch loses 5 % of its events |
//! | `sigterm` | SIGTERM one interceptor; the load balancer moves off it once its `/readyz` says 503; it is started again after it exits |
//!
//! What is checked:
//! - **wrong backend**: every backend echoes its name; a request for route
//!   `r` may be answered by any backend `r` had from `--window-ms` before
//!   the request was sent until its answer arrived (a 404 only if `r` did not
//!   exist at some moment of that window). The window is the product's
//!   promise (a change reaches every replica within the 1 s resync bound)
//!   plus a tolerance. While the replicas cannot read the API at all (API
//!   down or failing, a cache killed), the window of a change made meanwhile
//!   runs until `--window-ms` after the fault ends. Anything else is a wrong
//!   backend (or a lost route);
//! - **failed requests**: anything but 200 and 404 (errors, timeouts, 5xx).
//!   The SIGTERMed replica gets no requests once its `/readyz` flips, as
//!   behind a Kubernetes Service, so its drain must fail nothing either;
//! - **convergence**: when a fault ends, the route writes pause and every
//!   interceptor's `/routing-table` (routes and their target Services) is
//!   polled every 10 ms until all equal the API's table; the time from the
//!   fault's end must be at most `--bound-ms` (1,000) plus `--poll-tolerance-ms`
//!   (100: a poll round, one GET per replica, on a loaded 2-core machine);
//! - **repairs**: `routing_resync_repairs` (interceptors) and
//!   `keda_http_cache_upstream_resync_repairs_total` (caches) per fault.
//!
//! Exit status 1 on any wrong backend, failed request or convergence beyond
//! the bound. With the resync turned off (`--cache-resync-interval 1h
//! --interceptor-resync-interval 1h`) the events lost in `watch-stall` and
//! `drop-events` are never repaired, and the campaign fails.
//!
//! ```text
//! cargo build --release -p http-addon -p bench
//! target/release/bench chaos                    # about 2 minutes
//! target/debug/bench chaos --short              # CI: about 1 minute
//! ```

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Value, json};
use testkit::FailOn;
use testkit::fixtures::{Hso, Slice, Svc};

use crate::fleet::{ApiThread, free_port, http_addon_bin, metric, progress, raise_fd_limit};

/// Flags of `bench chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// The `http-addon` binary (default: beside this one).
    #[arg(long)]
    pub http_addon: Option<PathBuf>,
    /// The CI form: shorter faults and gaps, a lower request rate (about a minute).
    #[arg(long)]
    pub short: bool,
    /// Requests per second, over all interceptors [default: 500, --short 200].
    #[arg(long)]
    pub rate: Option<u64>,
    /// Route changes per second.
    #[arg(long, default_value_t = 20)]
    pub write_rate: u64,
    /// Routes (HTTPScaledObjects) in the pool; about 90 % exist at any time.
    #[arg(long, default_value_t = 50)]
    pub routes: usize,
    /// Echo backends the routes move between.
    #[arg(long, default_value_t = 5)]
    pub backends: usize,
    /// Length of each fault, seconds [default: 8, --short 4].
    #[arg(long)]
    pub fault_secs: Option<u64>,
    /// Length of the event-drop fault, seconds [default: 20, --short 8].
    #[arg(long)]
    pub drop_secs: Option<u64>,
    /// How long the API server is down, seconds.
    #[arg(long, default_value_t = 10)]
    pub api_down_secs: u64,
    /// How long a killed cache stays dead before its restart, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub cache_down_ms: u64,
    /// Quiet time before the first fault and after each one, seconds [default: 5, --short 2].
    #[arg(long)]
    pub gap_secs: Option<u64>,
    /// Fraction of watch events dropped in `drop-events`.
    #[arg(long, default_value_t = 0.05)]
    pub drop_fraction: f64,
    /// The interceptors' `--resync-interval` (Go duration).
    #[arg(long, default_value = "1s")]
    pub interceptor_resync_interval: String,
    /// The caches' `--upstream-resync-interval` (Go duration).
    #[arg(long, default_value = "1s")]
    pub cache_resync_interval: String,
    /// Promised convergence after a fault ends, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub bound_ms: u64,
    /// Allowance for the convergence poll itself, milliseconds.
    #[arg(long, default_value_t = 100)]
    pub poll_tolerance_ms: u64,
    /// A route's old backend is still a right answer this long after a change, milliseconds.
    #[arg(long, default_value_t = 1250)]
    pub window_ms: u64,
    /// Worker threads of the bench's runtime (load, writes, checks).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Directory for the processes' logs and `chaos.json`.
    #[arg(long, default_value = "bench-results/chaos")]
    pub out: PathBuf,
    /// Also write the results here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

const NS: &str = "chaos";
const INTERCEPTOR_IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// Requests in flight at most; beyond, a scheduled request is skipped (and counted).
const MAX_IN_FLIGHT: usize = 512;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Convergence polling gives up after this long (and the fault fails).
const CONVERGENCE_LIMIT: Duration = Duration::from_secs(15);

/// Runs the campaign; exit status 1 if any check failed.
pub fn run(args: ChaosArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    let rt = crate::runtime(Some(args.threads))?;
    let passed = rt.block_on(campaign(args))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Processes

/// A child `http-addon` process; killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    args: Vec<String>,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Spawner {
    bin: PathBuf,
    logs: PathBuf,
}

impl Spawner {
    fn spawn(&self, name: &str, args: Vec<String>) -> anyhow::Result<Proc> {
        let log = self.logs.join(format!("{name}.log"));
        // Appended: a restarted program keeps its earlier log.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = Command::new(&self.bin)
            .args(&args)
            .env("RUST_LOG", "warn")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {} {}", self.bin.display(), args.join(" ")))?;
        Ok(Proc {
            name: name.to_string(),
            args,
            child,
        })
    }

    fn respawn(&self, old: &Proc) -> anyhow::Result<Proc> {
        self.spawn(&old.name, old.args.clone())
    }
}

struct Cache {
    proc: Proc,
    port: u16,
    metrics_port: u16,
}

struct Interceptor {
    proc: Option<Proc>,
    ip: &'static str,
    proxy_port: u16,
    admin_port: u16,
    metrics_port: u16,
}

impl Interceptor {
    fn admin(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.ip, self.admin_port)
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build(connector)
}

/// GET `url` (with a Host header): status, the echo's name header, body.
async fn get(
    client: &HttpClient,
    url: &str,
    host: Option<&str>,
) -> anyhow::Result<(u16, Option<String>, Bytes)> {
    let mut req = http::Request::get(url);
    if let Some(h) = host {
        req = req.header(http::header::HOST, h);
    }
    let fut = async {
        let resp = client.request(req.body(Empty::new())?).await?;
        let status = resp.status().as_u16();
        let server = resp
            .headers()
            .get("x-echo-server")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, server, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .context("timed out")?
}

async fn wait_ready(client: &HttpClient, what: &str, url: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok((200, _, _)) = get(client, url, None).await {
            return Ok(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("{what} not ready within 30 s ({url})")
}

// ---------------------------------------------------------------------------
// The API's routing table over time

/// Since when a route had which backend (`None`: the route did not exist).
type State = (Instant, Option<usize>);

/// What the API said each route's backend was, over time, and the faults
/// during which no replica could learn of a change.
struct Model {
    /// Per route: (since, backend index or `None` = no such route).
    history: Vec<Mutex<Vec<State>>>,
    /// (start, end) of the faults that blind the replicas.
    blind: Mutex<Vec<(Instant, Option<Instant>)>>,
    window: Duration,
}

impl Model {
    fn current(&self, route: usize) -> Option<usize> {
        self.history[route].lock().last().and_then(|e| e.1)
    }

    fn set(&self, route: usize, backend: Option<usize>) {
        self.history[route].lock().push((Instant::now(), backend));
    }

    /// Whether `answer` was the route's state at some moment from the
    /// window before `sent` until `received`.
    fn accepts(
        &self,
        route: usize,
        answer: Option<usize>,
        sent: Instant,
        received: Instant,
    ) -> bool {
        let mut from = sent.checked_sub(self.window).unwrap_or(sent);
        for &(start, end) in self.blind.lock().iter() {
            if end.is_none_or(|e| e + self.window > sent) {
                from = from.min(start);
            }
        }
        let history = self.history[route].lock();
        // The state in force at `from`, then every state set before `received`.
        let first = history.partition_point(|e| e.0 <= from).saturating_sub(1);
        history[first..]
            .iter()
            .take_while(|e| e.0 <= received)
            .any(|e| e.1 == answer)
    }

    /// The table as `(key, service)` pairs.
    fn table(&self) -> BTreeSet<(String, String)> {
        (0..self.history.len())
            .filter_map(|r| {
                self.current(r)
                    .map(|b| (format!("{NS}/{}", route_name(r)), backend_name(b)))
            })
            .collect()
    }

    fn blind_start(&self) {
        self.blind.lock().push((Instant::now(), None));
    }

    fn blind_end(&self) {
        if let Some(last) = self.blind.lock().last_mut() {
            last.1.get_or_insert_with(Instant::now);
        }
    }
}

fn route_name(r: usize) -> String {
    format!("r-{r}")
}

fn backend_name(b: usize) -> String {
    format!("be-{b}")
}

fn route_object(r: usize, backend: usize) -> Value {
    let name = route_name(r);
    Hso::new(NS, &name)
        .host(&format!("{name}.chaos.test"))
        .service(&backend_name(backend), 80)
        .spec("replicas", json!({"min": 1, "max": 10}))
        .json()
}

// ---------------------------------------------------------------------------
// Counters

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    /// Answered by a backend (or a 404) that was right only in the window.
    in_transition: AtomicU64,
    not_found: AtomicU64,
    failed: AtomicU64,
    wrong: AtomicU64,
    skipped: AtomicU64,
    writes: AtomicU64,
}

#[derive(Debug, Clone, Serialize, Default)]
struct PhaseReport {
    name: String,
    what: String,
    seconds: f64,
    requests: u64,
    ok: u64,
    not_found: u64,
    in_transition: u64,
    failed: u64,
    wrong_backend: u64,
    skipped: u64,
    writes: u64,
    /// From the fault's end until every replica's table equals the API's.
    convergence_ms: Option<f64>,
    interceptor_repairs: u64,
    cache_repairs: u64,
    notes: Vec<String>,
    passed: bool,
}

struct Shared {
    model: Model,
    /// Counters of each phase, by index; `phase` is the current one.
    counters: Vec<Counters>,
    phase: AtomicUsize,
    /// Which interceptors the load balancer sends to.
    in_rotation: [AtomicBool; 3],
    /// Held by the writer around each write; held by the campaign to pause it.
    write_gate: tokio::sync::Mutex<()>,
    failures: Mutex<Vec<String>>,
    wrongs: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Shared {
    fn counters(&self) -> &Counters {
        &self.counters[self.phase.load(Ordering::Relaxed)]
    }
}

fn sample(list: &Mutex<Vec<String>>, line: String) {
    let mut l = list.lock();
    if l.len() < 20 {
        l.push(line);
    }
}

// ---------------------------------------------------------------------------
// Load and writes

struct Target {
    ip: &'static str,
    port: u16,
}

/// An open-loop generator: `rate` requests a second, each to a random route
/// through a random interceptor in rotation.
async fn load(shared: Arc<Shared>, client: HttpClient, targets: Vec<Target>, rate: u64) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            sent += 1;
            let live: Vec<usize> = (0..targets.len())
                .filter(|&i| shared.in_rotation[i].load(Ordering::Relaxed))
                .collect();
            let Some(&i) = live.get(fastrand::usize(..live.len().max(1))) else {
                continue;
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                shared.counters().skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let route = fastrand::usize(..shared.model.history.len());
            let url = format!("http://{}:{}/", targets[i].ip, targets[i].port);
            let (shared, client) = (shared.clone(), client.clone());
            tokio::spawn(async move {
                one_request(&shared, &client, i, &url, route).await;
                drop(permit);
            });
        }
    }
}

async fn one_request(
    shared: &Shared,
    client: &HttpClient,
    replica: usize,
    url: &str,
    route: usize,
) {
    let counters = shared.counters();
    counters.requests.fetch_add(1, Ordering::Relaxed);
    let host = format!("{}.chaos.test", route_name(route));
    let sent = Instant::now();
    let result = get(client, url, Some(&host)).await;
    let received = Instant::now();
    let model = &shared.model;
    let answer = match &result {
        Ok((200, Some(server), _)) => server
            .strip_prefix("be-")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Some),
        Ok((404, None, _)) => Some(None),
        _ => None,
    };
    let Some(answer) = answer else {
        counters.failed.fetch_add(1, Ordering::Relaxed);
        let what = match result {
            Ok((status, server, body)) => format!(
                "{status} from {server:?}: {}",
                String::from_utf8_lossy(&body[..body.len().min(120)]).trim()
            ),
            Err(e) => format!("{e:#}"),
        };
        sample(
            &shared.failures,
            format!(
                "interceptor-{} {host}: {what} ({} ms)",
                replica + 1,
                (received - sent).as_millis()
            ),
        );
        return;
    };
    if answer.is_none() {
        counters.not_found.fetch_add(1, Ordering::Relaxed);
    }
    let now = model.current(route);
    if answer == now && model.accepts(route, answer, sent, sent) {
        counters.ok.fetch_add(1, Ordering::Relaxed);
    } else if model.accepts(route, answer, sent, received) {
        counters.in_transition.fetch_add(1, Ordering::Relaxed);
    } else {
        counters.wrong.fetch_add(1, Ordering::Relaxed);
        let history: Vec<String> = model.history[route]
            .lock()
            .iter()
            .rev()
            .take(4)
            .map(|(t, b)| {
                format!(
                    "{:?} {} ms before send",
                    b.map(backend_name),
                    sent.saturating_duration_since(*t).as_millis()
                )
            })
            .collect();
        sample(
            &shared.wrongs,
            format!(
                "interceptor-{} {host}: answered by {:?}; latest states: {}",
                replica + 1,
                answer.map(backend_name),
                history.join(", ")
            ),
        );
    }
}

/// Route changes at `rate` a second: mostly a move to another backend, else
/// a delete or a (re)create, keeping about 90 % of the routes in existence.
async fn writer(shared: Arc<Shared>, api: Arc<ApiThread>, rate: u64, backends: usize) {
    let gvr = Hso::gvr();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let routes = shared.model.history.len();
    while !shared.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let _gate = shared.write_gate.lock().await;
        let r = fastrand::usize(..routes);
        let live = (0..routes)
            .filter(|&i| shared.model.current(i).is_some())
            .count();
        let before = shared.model.current(r);
        let after = match before {
            Some(_) if fastrand::f64() < 0.1 && live * 10 > routes * 8 => None,
            Some(b) => Some((b + 1 + fastrand::usize(..backends - 1)) % backends),
            None => Some(fastrand::usize(..backends)),
        };
        // Recorded before the write: a replica may route by the new state
        // a moment after the store has it, before this task runs again.
        shared.model.set(r, after);
        let result = match after {
            None => api.delete_object(&gvr, NS, &route_name(r)).map(drop),
            Some(b) => api.put_object(route_object(r, b)).map(drop),
        };
        match result {
            Ok(()) => {
                shared.counters().writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.model.set(r, before);
                progress(&format!("write of {} failed: {}", route_name(r), e.message));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Observation

/// The routes and target Services of one interceptor's `/routing-table`.
async fn replica_table(
    client: &HttpClient,
    i: &Interceptor,
) -> anyhow::Result<BTreeSet<(String, String)>> {
    let (status, _, body) = get(client, &i.admin("/routing-table"), None).await?;
    if status != 200 {
        bail!("/routing-table answered {status}");
    }
    let v: Value = serde_json::from_slice(&body)?;
    Ok(v["routes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap_or_default().to_string(),
                r["target"]["service"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect())
}

/// Polls every running interceptor's table until all equal the API's;
/// the time since `since`, or `None` past [`CONVERGENCE_LIMIT`] (with the
/// differences left).
async fn converge(
    client: &HttpClient,
    interceptors: &[Interceptor],
    want: &BTreeSet<(String, String)>,
    since: Instant,
) -> Result<Duration, String> {
    loop {
        let polls = interceptors
            .iter()
            .filter(|i| i.proc.is_some())
            .map(|i| replica_table(client, i));
        let tables = futures::future::join_all(polls).await;
        let mut diff = Vec::new();
        for (i, t) in tables.iter().enumerate() {
            match t {
                Ok(t) if t == want => {}
                Ok(t) => {
                    let missing: Vec<_> = want.difference(t).take(3).collect();
                    let extra: Vec<_> = t.difference(want).take(3).collect();
                    diff.push(format!(
                        "interceptor-{}: lacks {missing:?}, has {extra:?}",
                        i + 1
                    ));
                }
                Err(e) => diff.push(format!("interceptor-{}: {e:#}", i + 1)),
            }
        }
        if diff.is_empty() {
            return Ok(since.elapsed());
        }
        if since.elapsed() > CONVERGENCE_LIMIT {
            return Err(diff.join("; "));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Repair counters of every process, summed: (interceptors, caches).
struct RepairCounts {
    interceptors: Vec<u64>,
    caches: Vec<u64>,
}

async fn repair_counts(
    client: &HttpClient,
    interceptors: &[Interceptor],
    caches: &[Cache],
) -> RepairCounts {
    let mut out = RepairCounts {
        interceptors: Vec::new(),
        caches: Vec::new(),
    };
    for i in interceptors {
        let url = format!("http://{}:{}/metrics", i.ip, i.metrics_port);
        let text = get(client, &url, None)
            .await
            .map(|r| r.2)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        out.interceptors
            .push(metric(&text, "routing_resync_repairs").unwrap_or(0.0) as u64);
    }
    for c in caches {
        let url = format!("http://127.0.0.1:{}/metrics", c.metrics_port);
        let text = get(client, &url, None)
            .await
            .map(|r| r.2)
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        out.caches.push(
            metric(&text, "keda_http_cache_upstream_resync_repairs_total").unwrap_or(0.0) as u64,
        );
    }
    out
}

/// Counter increase; a restarted process starts from zero.
fn increase(before: &[u64], after: &[u64]) -> u64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| if a >= b { a - b } else { *a })
        .sum()
}

// ---------------------------------------------------------------------------
// The campaign

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Fault {
    Baseline,
    CacheKill,
    ApiDown,
    Api500,
    Api410,
    WatchStall,
    DropEvents,
    Sigterm,
}

impl Fault {
    const ALL: [Fault; 8] = [
        Fault::Baseline,
        Fault::CacheKill,
        Fault::ApiDown,
        Fault::Api500,
        Fault::Api410,
        Fault::WatchStall,
        Fault::DropEvents,
        Fault::Sigterm,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::Baseline => "baseline",
            Fault::CacheKill => "cache-kill",
            Fault::ApiDown => "api-down",
            Fault::Api500 => "api-500",
            Fault::Api410 => "api-410",
            Fault::WatchStall => "watch-stall",
            Fault::DropEvents => "drop-events",
            Fault::Sigterm => "sigterm",
        }
    }
}

struct System {
    api: Arc<ApiThread>,
    spawner: Spawner,
    caches: Vec<Cache>,
    interceptors: Vec<Interceptor>,
    _backends: Vec<Proc>,
    client: HttpClient,
}

async fn start_system(args: &ChaosArgs, bin: PathBuf) -> anyhow::Result<System> {
    let api = Arc::new(ApiThread::start().await?);
    let spawner = Spawner {
        bin,
        logs: args.out.clone(),
    };
    let client = http_client();
    // Backends: one echo each, a Service and an EndpointSlice pointing at it.
    let mut backends = Vec::new();
    for b in 0..args.backends {
        let port = free_port()?;
        let name = backend_name(b);
        backends.push(spawner.spawn(
            &name,
            vec![
                "echo".into(),
                "--name".into(),
                name.clone(),
                "--port".into(),
                port.to_string(),
            ],
        )?);
        wait_ready(&client, &name, &format!("http://127.0.0.1:{port}/")).await?;
        let put = |obj: Value| {
            api.put_object(obj)
                .map_err(|e| anyhow::anyhow!("{}", e.message))
        };
        put(Svc::new(NS, &name).port("http", 80).json())?;
        put(Slice::new(NS, &format!("{name}-1"), &name)
            .port("http", port)
            .ready("127.0.0.1")
            .json())?;
    }
    let kubeconfig = api.kubeconfig_path().display().to_string();
    let mut caches = Vec::new();
    for c in 0..2 {
        let (port, metrics_port) = (free_port()?, free_port()?);
        let proc = spawner.spawn(
            &format!("cache-{}", c + 1),
            vec![
                "cache".into(),
                "--kubeconfig".into(),
                kubeconfig.clone(),
                "--allow-anonymous".into(),
                "--bind-address".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.to_string(),
                "--metrics-port".into(),
                metrics_port.to_string(),
                "--upstream-resync-interval".into(),
                args.cache_resync_interval.clone(),
            ],
        )?;
        caches.push(Cache {
            proc,
            port,
            metrics_port,
        });
    }
    for c in &caches {
        let url = format!("http://127.0.0.1:{}/readyz", c.metrics_port);
        wait_ready(&client, &c.proc.name, &url).await?;
    }
    let mut interceptors = Vec::new();
    for (k, ip) in INTERCEPTOR_IPS.iter().enumerate() {
        let (proxy_port, admin_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
        // Interceptors 1 and 3 read through cache 1, interceptor 2 through cache 2.
        let cache = &caches[k % 2];
        let proc = spawner.spawn(
            &format!("interceptor-{}", k + 1),
            vec![
                "interceptor".into(),
                "--source-url".into(),
                format!("http://127.0.0.1:{}", cache.port),
                "--bind-address".into(),
                ip.to_string(),
                "--proxy-port".into(),
                proxy_port.to_string(),
                "--admin-port".into(),
                admin_port.to_string(),
                "--metrics-port".into(),
                metrics_port.to_string(),
                "--direct-pod-routing".into(),
                "true".into(),
                "--resync-interval".into(),
                args.interceptor_resync_interval.clone(),
                "--proxy-workers".into(),
                "1".into(),
            ],
        )?;
        interceptors.push(Interceptor {
            proc: Some(proc),
            ip,
            proxy_port,
            admin_port,
            metrics_port,
        });
    }
    for i in &interceptors {
        let name = &i.proc.as_ref().expect("started").name;
        wait_ready(&client, name, &i.admin("/readyz")).await?;
    }
    Ok(System {
        api,
        spawner,
        caches,
        interceptors,
        _backends: backends,
        client,
    })
}

struct Timing {
    fault: Duration,
    drop: Duration,
    gap: Duration,
}

async fn campaign(args: ChaosArgs) -> anyhow::Result<bool> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    for entry in std::fs::read_dir(&args.out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            std::fs::remove_file(path)?;
        }
    }
    let bin = http_addon_bin(args.http_addon.as_deref());
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p http-addon) or pass --http-addon",
            bin.display()
        );
    }
    if args.backends < 2 || args.routes == 0 {
        bail!("--backends must be at least 2 and --routes at least 1");
    }
    let pick =
        |v: Option<u64>, long: u64, short: u64| v.unwrap_or(if args.short { short } else { long });
    let rate = pick(args.rate, 500, 200);
    let timing = Timing {
        fault: Duration::from_secs(pick(args.fault_secs, 8, 4)),
        drop: Duration::from_secs(pick(args.drop_secs, 20, 8)),
        gap: Duration::from_secs(pick(args.gap_secs, 5, 2)),
    };
    let loadavg = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let load_before = loadavg();
    progress(&format!(
        "chaos: {} routes over {} backends, {rate} req/s, {} writes/s; resync: interceptors {}, caches {}; load average {load_before}",
        args.routes,
        args.backends,
        args.write_rate,
        args.interceptor_resync_interval,
        args.cache_resync_interval
    ));
    let started = Instant::now();
    let mut sys = start_system(&args, bin).await?;
    let model = Model {
        history: (0..args.routes).map(|_| Mutex::new(Vec::new())).collect(),
        blind: Mutex::new(Vec::new()),
        window: Duration::from_millis(args.window_ms),
    };
    for r in 0..args.routes {
        let b = r % args.backends;
        sys.api
            .put_object(route_object(r, b))
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        model.set(r, Some(b));
    }
    let shared = Arc::new(Shared {
        model,
        counters: Fault::ALL.iter().map(|_| Counters::default()).collect(),
        phase: AtomicUsize::new(0),
        in_rotation: std::array::from_fn(|_| AtomicBool::new(true)),
        write_gate: tokio::sync::Mutex::new(()),
        failures: Mutex::new(Vec::new()),
        wrongs: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let want = shared.model.table();
    converge(&sys.client, &sys.interceptors, &want, Instant::now())
        .await
        .map_err(|d| anyhow::anyhow!("the initial table never reached every interceptor: {d}"))?;
    progress(&format!(
        "started in {:.1} s: 2 caches, 3 interceptors, {} backends; logs in {}",
        started.elapsed().as_secs_f64(),
        args.backends,
        args.out.display()
    ));

    let targets = sys
        .interceptors
        .iter()
        .map(|i| Target {
            ip: i.ip,
            port: i.proxy_port,
        })
        .collect();
    let load_task = tokio::spawn(load(shared.clone(), sys.client.clone(), targets, rate));
    let write_task = tokio::spawn(writer(
        shared.clone(),
        sys.api.clone(),
        args.write_rate,
        args.backends,
    ));

    let bound = Duration::from_millis(args.bound_ms + args.poll_tolerance_ms);
    let mut reports = Vec::new();
    for (k, &fault) in Fault::ALL.iter().enumerate() {
        shared.phase.store(k, Ordering::Relaxed);
        let before = repair_counts(&sys.client, &sys.interceptors, &sys.caches).await;
        let t0 = Instant::now();
        progress(&format!("--- {}", fault.name()));
        let mut notes = Vec::new();
        let what = inject(fault, &args, &timing, &mut sys, &shared, &mut notes).await?;
        let ended = Instant::now();
        // Pause the writes and measure how soon every replica has the API's table.
        let convergence = {
            let _gate = shared.write_gate.lock().await;
            let want = shared.model.table();
            converge(&sys.client, &sys.interceptors, &want, ended).await
        };
        let convergence_ms = match &convergence {
            Ok(d) => Some(d.as_secs_f64() * 1000.0),
            Err(diff) => {
                notes.push(format!(
                    "not converged after {} s: {diff}",
                    CONVERGENCE_LIMIT.as_secs()
                ));
                None
            }
        };
        // The quiet gap after the fault belongs to it (late failures show here).
        tokio::time::sleep(timing.gap).await;
        let after = repair_counts(&sys.client, &sys.interceptors, &sys.caches).await;
        let c = &shared.counters[k];
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut report = PhaseReport {
            name: fault.name().into(),
            what,
            seconds: t0.elapsed().as_secs_f64(),
            requests: get(&c.requests),
            ok: get(&c.ok),
            not_found: get(&c.not_found),
            in_transition: get(&c.in_transition),
            failed: get(&c.failed),
            wrong_backend: get(&c.wrong),
            skipped: get(&c.skipped),
            writes: get(&c.writes),
            convergence_ms,
            interceptor_repairs: increase(&before.interceptors, &after.interceptors),
            cache_repairs: increase(&before.caches, &after.caches),
            notes,
            passed: false,
        };
        report.passed = report.failed == 0
            && report.wrong_backend == 0
            && report
                .convergence_ms
                .is_some_and(|ms| ms <= bound.as_secs_f64() * 1000.0);
        progress(&format!(
            "{}: {} requests, {} failed, {} wrong backend, {} in transition, {} writes, convergence {}, repairs {} interceptor / {} cache{}",
            report.name,
            report.requests,
            report.failed,
            report.wrong_backend,
            report.in_transition,
            report.writes,
            report
                .convergence_ms
                .map(|ms| format!("{ms:.0} ms"))
                .unwrap_or_else(|| "NONE".into()),
            report.interceptor_repairs,
            report.cache_repairs,
            if report.passed { "" } else { "  FAILED" }
        ));
        for n in &report.notes {
            progress(&format!("  {n}"));
        }
        reports.push(report);
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = write_task.await;
    let _ = load_task.await;
    // Requests still in flight land in the last phase; let them finish.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let total = |f: fn(&PhaseReport) -> u64| reports.iter().map(f).sum::<u64>();
    let max_convergence = reports
        .iter()
        .filter_map(|r| r.convergence_ms)
        .fold(0.0, f64::max);
    let passed = reports.iter().all(|r| r.passed);
    print_table(&reports);
    println!(
        "\ntotal: {} requests ({} skipped by the generator), {} failed, {} wrong backend, {} in transition, {} writes; max convergence {max_convergence:.0} ms (bound {} ms); repairs {} interceptor / {} cache; {:.0} s; load average {load_before} -> {}",
        total(|r| r.requests),
        total(|r| r.skipped),
        total(|r| r.failed),
        total(|r| r.wrong_backend),
        total(|r| r.in_transition),
        total(|r| r.writes),
        bound.as_millis(),
        total(|r| r.interceptor_repairs),
        total(|r| r.cache_repairs),
        started.elapsed().as_secs_f64(),
        loadavg()
    );
    let failures = shared.failures.lock().clone();
    let wrongs = shared.wrongs.lock().clone();
    for f in &failures {
        println!("failed: {f}");
    }
    for w in &wrongs {
        println!("wrong backend: {w}");
    }
    println!("{}", if passed { "PASSED" } else { "FAILED" });
    let doc = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "load_average_before": load_before,
        "load_average_after": loadavg(),
        "rate": rate,
        "write_rate": args.write_rate,
        "routes": args.routes,
        "backends": args.backends,
        "interceptor_resync_interval": args.interceptor_resync_interval,
        "cache_resync_interval": args.cache_resync_interval,
        "bound_ms": args.bound_ms,
        "poll_tolerance_ms": args.poll_tolerance_ms,
        "window_ms": args.window_ms,
        "seconds": started.elapsed().as_secs_f64(),
        "faults": reports,
        "totals": {
            "requests": total(|r| r.requests),
            "failed": total(|r| r.failed),
            "wrong_backend": total(|r| r.wrong_backend),
            "in_transition": total(|r| r.in_transition),
            "writes": total(|r| r.writes),
            "max_convergence_ms": max_convergence,
            "interceptor_repairs": total(|r| r.interceptor_repairs),
            "cache_repairs": total(|r| r.cache_repairs),
        },
        "failure_samples": failures,
        "wrong_backend_samples": wrongs,
        "passed": passed,
    });
    let text = serde_json::to_vec_pretty(&doc)?;
    let out = args.out.join("chaos.json");
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    if let Some(path) = &args.json {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(passed)
}

/// Injects one fault and returns when it has ended (the system is whole
/// again), saying what was done.
async fn inject(
    fault: Fault,
    args: &ChaosArgs,
    timing: &Timing,
    sys: &mut System,
    shared: &Shared,
    notes: &mut Vec<String>,
) -> anyhow::Result<String> {
    let faults = sys.api.faults();
    let model = &shared.model;
    Ok(match fault {
        Fault::Baseline => {
            tokio::time::sleep(timing.gap).await;
            format!("no fault, {} s", timing.gap.as_secs())
        }
        Fault::CacheKill => {
            model.blind_start();
            let cache = &mut sys.caches[0];
            cache.proc.child.kill()?; // SIGKILL
            cache.proc.child.wait()?;
            tokio::time::sleep(Duration::from_millis(args.cache_down_ms)).await;
            cache.proc = sys.spawner.respawn(&cache.proc)?;
            let url = format!("http://127.0.0.1:{}/readyz", cache.metrics_port);
            let ready = wait_ready(&sys.client, "cache-1", &url).await?;
            model.blind_end();
            format!(
                "kill -9 cache-1 (interceptors 1 and 3 read through it), restarted after {} ms, ready in {} ms",
                args.cache_down_ms,
                ready.as_millis()
            )
        }
        Fault::ApiDown => {
            model.blind_start();
            faults.go_down().await;
            tokio::time::sleep(Duration::from_secs(args.api_down_secs)).await;
            faults.come_up().await?;
            model.blind_end();
            format!(
                "API server stopped for {} s (writes go on into its store)",
                args.api_down_secs
            )
        }
        Fault::Api500 => {
            model.blind_start();
            faults.fail_all(FailOn::ListAndWatch, 500);
            faults.close_watches();
            tokio::time::sleep(timing.fault).await;
            faults.clear_failures();
            model.blind_end();
            format!(
                "every list and watch answered 500 for {} s, open watches closed",
                timing.fault.as_secs()
            )
        }
        Fault::Api410 => {
            let end = Instant::now() + timing.fault;
            let mut rounds = 0;
            while Instant::now() < end {
                // 2 caches x 4 resources: every watch comes back to a 410.
                faults.fail_next(FailOn::Watch, 410, 8);
                faults.close_watches();
                rounds += 1;
                tokio::time::sleep(Duration::from_secs(2).min(end - Instant::now())).await;
            }
            faults.clear_failures();
            format!(
                "{rounds} rounds of: every watch closed, the next 8 watches answered 410 Expired"
            )
        }
        Fault::WatchStall => {
            faults.set_stall_watches(true);
            tokio::time::sleep(timing.fault).await;
            faults.set_stall_watches(false);
            format!(
                "watches silent for {} s (no events, no bookmarks, connections open)",
                timing.fault.as_secs()
            )
        }
        Fault::DropEvents => {
            faults.set_drop_watch_events(args.drop_fraction);
            tokio::time::sleep(timing.drop).await;
            faults.set_drop_watch_events(0.0);
            format!(
                "{:.0} % of watch events dropped for {} s",
                args.drop_fraction * 100.0,
                timing.drop.as_secs()
            )
        }
        Fault::Sigterm => {
            let k = 2;
            let i = &mut sys.interceptors[k];
            let proc = i.proc.take().context("interceptor-3 runs")?;
            let t = Instant::now();
            rustix::process::kill_process(
                rustix::process::Pid::from_child(&proc.child),
                rustix::process::Signal::TERM,
            )?;
            // The load balancer's readiness probe.
            while let Ok((200, _, _)) = get(&sys.client, &i.admin("/readyz"), None).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            shared.in_rotation[k].store(false, Ordering::Relaxed);
            let unready = t.elapsed();
            let mut proc = proc;
            let status = loop {
                if let Some(s) = proc.child.try_wait()? {
                    break s;
                }
                if t.elapsed() > Duration::from_secs(60) {
                    bail!("interceptor-3 did not exit within 60 s of SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let exited = t.elapsed();
            if !status.success() {
                notes.push(format!("interceptor-3 exited with {status}"));
            }
            let new = sys.spawner.respawn(&proc)?;
            drop(proc);
            i.proc = Some(new);
            let ready = wait_ready(&sys.client, "interceptor-3", &i.admin("/readyz")).await?;
            shared.in_rotation[k].store(true, Ordering::Relaxed);
            format!(
                "SIGTERM interceptor-3: unready after {} ms (out of rotation), exited after {} ms ({status}), restarted and ready in {} ms (back in rotation)",
                unready.as_millis(),
                exited.as_millis(),
                ready.as_millis()
            )
        }
    })
}

fn print_table(reports: &[PhaseReport]) {
    println!(
        "\n| fault | what | s | requests | failed | wrong backend | in transition | writes | convergence ms | repairs (interceptors / caches) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        println!(
            "| {} | {} | {:.1} | {} | {} | {} | {} | {} | {} | {} / {} |",
            r.name,
            r.what,
            r.seconds,
            r.requests,
            r.failed,
            r.wrong_backend,
            r.in_transition,
            r.writes,
            r.convergence_ms
                .map(|ms| format!("{ms:.0}"))
                .unwrap_or_else(|| "never".into()),
            r.interceptor_repairs,
            r.cache_repairs
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(window_ms: u64) -> Model {
        Model {
            history: vec![Mutex::new(Vec::new())],
            blind: Mutex::new(Vec::new()),
            window: Duration::from_millis(window_ms),
        }
    }

    #[test]
    fn an_answer_is_right_if_the_route_had_it_within_the_window() {
        let m = model(1000);
        let t0 = Instant::now();
        m.history[0].lock().push((t0, Some(0)));
        m.history[0]
            .lock()
            .push((t0 + Duration::from_secs(5), Some(1)));
        m.history[0]
            .lock()
            .push((t0 + Duration::from_secs(6), None));
        let at = |s: u64| t0 + Duration::from_millis(s);
        // Before the move only backend 0.
        assert!(m.accepts(0, Some(0), at(4000), at(4001)));
        assert!(!m.accepts(0, Some(1), at(4000), at(4001)));
        // Sent before the move, answered after it: both.
        assert!(m.accepts(0, Some(1), at(4999), at(5001)));
        // The old backend up to the window after the change, not later.
        assert!(m.accepts(0, Some(0), at(5900), at(5901)));
        assert!(!m.accepts(0, Some(0), at(6100), at(6101)));
        // Deleted: a 404, or its last backend within the window.
        assert!(m.accepts(0, None, at(6000), at(6001)));
        assert!(m.accepts(0, Some(1), at(6500), at(6501)));
        assert!(!m.accepts(0, Some(1), at(7500), at(7501)));
        // Never had backend 2.
        assert!(!m.accepts(0, Some(2), at(5500), at(5501)));
    }

    #[test]
    fn a_blind_fault_stretches_the_window_to_its_end() {
        let m = model(1000);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        m.history[0].lock().push((t0, Some(0)));
        m.history[0].lock().push((at(3000), Some(1)));
        m.blind.lock().push((at(2000), Some(at(8000))));
        // Changed while no replica could read the API: the old backend is
        // right until the window after the fault's end.
        assert!(m.accepts(0, Some(0), at(8500), at(8501)));
        assert!(!m.accepts(0, Some(0), at(9100), at(9101)));
    }

    #[test]
    fn repair_counters_of_a_restarted_process_count_from_zero() {
        assert_eq!(increase(&[3, 5], &[4, 2]), 1 + 2);
    }
}
