//! `bench fleet`: N simulated interceptor replicas, each a real `sync` loop
//! (`sync::start`, `endpoints: false`) with its own connection(s) and its own
//! routing table, against an in-process `testkit` API server: either
//! directly (every replica lists and watches the API) or through k caches
//! (`http-addon cache` child processes, so their CPU and RSS are their own).
//!
//! Per configuration it reports: propagation from a write to "applied" at
//! each replica (p50, p99, max over every write x replica), the API
//! server's requests/s, bytes/s and open watches (testkit stats), each
//! cache's CPU and RSS, memory per replica, and the idle bytes per replica
//! per second: the whole connection (bookmarks, resyncs, pings) and the
//! resync alone (probe clients that send exactly the sync loop's
//! conditional lists, with the same `kubewatch` client, over their own
//! HTTP/2 connections). Results: a table
//! on stdout, `fleet.json` and `fleet.svg` under `--out`.
//!
//! ```text
//! cargo build --release -p http-addon -p bench
//! target/release/bench fleet --modes cache,direct --replicas 100,1000,10000
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use testkit::StartTestApi;

use anyhow::{Context, bail};
use api::{HTTPScaledObject, InterceptorRoute};
use kube::Resource;
use serde::Serialize;
use serde_json::{Value, json};
use sync::{SharedTable, SyncConfig, SyncHandle};
use testkit::fixtures::{Hso, Ir};
use testkit::{TestApi, Verb};
use tokio_util::sync::CancellationToken;

/// How replicas reach the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Through `--caches` cache processes (HTTP/2 from every replica).
    Cache,
    /// Every replica on the API server (kube's HTTP/1.1 client).
    Direct,
}

/// Flags of `bench fleet`.
#[derive(Debug, clap::Args)]
pub struct FleetArgs {
    /// Replica counts to run (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub replicas: Vec<usize>,
    /// Modes to run (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "cache,direct")]
    pub modes: Vec<Mode>,
    /// Direct mode is skipped above this many replicas.
    #[arg(long, default_value_t = 1000)]
    pub direct_max: usize,
    /// Cache processes in cache mode (replica i uses cache i mod k).
    #[arg(long, default_value_t = 2)]
    pub caches: usize,
    /// Changes written per configuration (each creates one HTTPScaledObject).
    #[arg(long, default_value_t = 20)]
    pub writes: usize,
    /// Pause between writes.
    #[arg(long, default_value_t = 300)]
    pub write_interval_ms: u64,
    /// HTTPScaledObjects in the table before the run (plus a tenth as many InterceptorRoutes).
    #[arg(long, default_value_t = 100)]
    pub objects: usize,
    /// Length of the idle measurement window.
    #[arg(long, default_value_t = 5)]
    pub idle_secs: u64,
    /// Fault mode: the caches (cache mode) or the API (direct mode) drop this fraction of watch events.
    #[arg(long, default_value_t = 0.0)]
    pub drop_events: f64,
    /// Each replica's resync interval.
    #[arg(long, default_value_t = 1000)]
    pub resync_ms: u64,
    /// Replicas started at once (each batch waits until ready).
    #[arg(long, default_value_t = 500)]
    pub start_batch: usize,
    /// Bound on one configuration's run.
    #[arg(long, default_value_t = 600)]
    pub max_secs: u64,
    /// Worker threads of the bench's runtime (replicas and API server).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// The `http-addon` binary (default: beside this one).
    #[arg(long)]
    pub cache_bin: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "bench-results/fleet")]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize, Default)]
struct Percentiles {
    samples: usize,
    missing: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    within_1s: f64,
}

#[derive(Debug, Clone, Serialize, Default)]
struct ApiLoad {
    seconds: f64,
    requests_per_sec: f64,
    lists_per_sec: f64,
    watch_requests_per_sec: f64,
    response_bytes_per_sec: f64,
    open_watches: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
struct ProcUse {
    pid: u32,
    cpu_idle_pct: f64,
    cpu_writes_pct: f64,
    rss_mb: f64,
    subscribers: Option<f64>,
    events_fanned_out: Option<f64>,
    bytes_sent: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
struct RunResult {
    mode: Mode,
    replicas: usize,
    caches: usize,
    drop_events: f64,
    writes: usize,
    objects: usize,
    start_secs: f64,
    propagation: Percentiles,
    api_idle: ApiLoad,
    api_writes: ApiLoad,
    cache_procs: Vec<ProcUse>,
    bench_cpu_idle_pct: f64,
    bench_cpu_writes_pct: f64,
    /// Whole machine busy % (all processes, 100 = one core) during the writes:
    /// other work on the machine shows here.
    machine_cpu_writes_pct: f64,
    loadavg_before_writes: String,
    bench_rss_mb: f64,
    memory_per_replica_kb: f64,
    idle_wire_bytes_per_replica_per_sec: Option<f64>,
    idle_resync_bytes_per_replica_per_sec: Option<f64>,
    resync_repairs: u64,
    watch_restarts: u64,
}

/// Runs the benchmark.
pub fn run(args: FleetArgs) -> anyhow::Result<()> {
    raise_fd_limit();
    crate::runtime(Some(args.threads))?.block_on(run_all(args))
}

async fn run_all(args: FleetArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let bin = http_addon_bin(args.cache_bin.as_deref());
    if args.modes.contains(&Mode::Cache) && !bin.exists() {
        bail!(
            "{} not found: build it (cargo build --release -p http-addon) or pass --cache-bin",
            bin.display()
        );
    }
    let mut results = Vec::new();
    for &n in &args.replicas {
        for &mode in &args.modes {
            if mode == Mode::Direct && n > args.direct_max {
                progress(&format!("skip direct N={n} (> --direct-max)"));
                continue;
            }
            progress(&format!("=== {mode:?} N={n} ==="));
            let bound = Duration::from_secs(args.max_secs);
            match tokio::time::timeout(bound, run_one(&args, &bin, mode, n)).await {
                Ok(Ok(r)) => {
                    print_result(&r);
                    results.push(r);
                }
                Ok(Err(e)) => progress(&format!("{mode:?} N={n} failed: {e:#}")),
                Err(_) => progress(&format!("{mode:?} N={n} exceeded {}s", args.max_secs)),
            }
            // Let sockets of the last configuration close.
            tokio::time::sleep(Duration::from_secs(2)).await;
            write_outputs(&args, &results)?;
        }
    }
    println!();
    print_table(&results);
    write_outputs(&args, &results)?;
    println!(
        "\nwrote {} and {}",
        args.out.join("fleet.json").display(),
        args.out.join("fleet.svg").display()
    );
    Ok(())
}

/// The `http-addon` binary: `given`, else the one beside this bench binary
/// (`cargo build` puts both in the same target directory).
pub(crate) fn http_addon_bin(given: Option<&Path>) -> PathBuf {
    given.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("http-addon")))
            .unwrap_or_else(|| PathBuf::from("http-addon"))
    })
}

/// A progress line on stderr, stamped with the wall-clock time (UTC).
pub(crate) fn progress(msg: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, ms) = (now.as_secs(), now.subsec_millis());
    eprintln!(
        "[{:02}:{:02}:{:02}.{ms:03}] {msg}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    );
}

fn httpso(name: &str, ns: &str, host: &str) -> Value {
    Hso::new(ns, name)
        .host(host)
        .path_prefix("/")
        .service(&format!("{name}-svc"), 8080)
        .spec("replicas", json!({"min": 0, "max": 10}))
        .spec(
            "scalingMetric",
            json!({"concurrency": {"targetValue": 100}}),
        )
        .json()
}

fn interceptor_route(name: &str, host: &str) -> Value {
    Ir::new("routes", name)
        .host(host)
        .path_prefix("/api")
        .service(&format!("{name}-svc"), 80)
        .json()
}

/// The plurals of the two routing resources, from the api types.
fn routing_resources() -> [String; 2] {
    [
        HTTPScaledObject::plural(&()).into_owned(),
        InterceptorRoute::plural(&()).into_owned(),
    ]
}

/// The writes of one configuration and when each replica applied them.
struct Writes {
    names: Vec<String>,
    t0: Vec<std::sync::OnceLock<Instant>>,
    started: AtomicUsize,
    replicas: usize,
    /// `[write][replica]` microseconds; `u32::MAX` = not yet.
    applied_us: Vec<AtomicU32>,
    remaining: AtomicUsize,
    done: tokio::sync::Notify,
}

impl Writes {
    fn new(m: usize, n: usize) -> Arc<Writes> {
        Arc::new(Writes {
            names: (0..m).map(|k| format!("w{k}")).collect(),
            t0: (0..m).map(|_| std::sync::OnceLock::new()).collect(),
            started: AtomicUsize::new(0),
            replicas: n,
            applied_us: (0..m * n).map(|_| AtomicU32::new(u32::MAX)).collect(),
            remaining: AtomicUsize::new(m * n),
            done: tokio::sync::Notify::new(),
        })
    }

    fn record(&self, write: usize, replica: usize, at: Instant) {
        let Some(t0) = self.t0[write].get() else {
            return;
        };
        let us = at
            .saturating_duration_since(*t0)
            .as_micros()
            .min(u32::MAX as u128 - 1) as u32;
        self.applied_us[write * self.replicas + replica].store(us, Ordering::Relaxed);
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }
}

/// Per replica: records when each write shows up in its table.
async fn observe(
    replica: usize,
    table: Arc<SharedTable>,
    writes: Arc<Writes>,
    cancel: CancellationToken,
) {
    let mut rx = table.subscribe();
    let mut seen = vec![false; writes.names.len()];
    let mut first_unseen = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
        let started = writes.started.load(Ordering::Acquire);
        if first_unseen >= started {
            continue;
        }
        let now = Instant::now();
        let t = table.load();
        for (j, seen_j) in seen.iter_mut().enumerate().take(started).skip(first_unseen) {
            if !*seen_j && t.get("bench", &writes.names[j]).is_some() {
                *seen_j = true;
                writes.record(j, replica, now);
            }
        }
        while first_unseen < started && seen[first_unseen] {
            first_unseen += 1;
        }
    }
}

/// The testkit API server on a runtime and OS thread of its own, as a real
/// API server is a process of its own: its watch fan-out to the caches and
/// its lists never wait in the run queue behind thousands of replica tasks.
pub(crate) struct ApiThread {
    api: Option<TestApi>,
    rt: Option<tokio::runtime::Runtime>,
}

impl ApiThread {
    pub(crate) async fn start() -> anyhow::Result<ApiThread> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("api-server")
            .enable_all()
            .build()?;
        let api = rt
            .spawn(
                TestApi::builder()
                    .history(10_000)
                    .fanout_capacity(10_000)
                    .start_test(),
            )
            .await??;
        Ok(ApiThread {
            api: Some(api),
            rt: Some(rt),
        })
    }
}

impl std::ops::Deref for ApiThread {
    type Target = TestApi;
    fn deref(&self) -> &TestApi {
        self.api.as_ref().expect("present until dropped")
    }
}

impl Drop for ApiThread {
    fn drop(&mut self) {
        drop(self.api.take());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A child `http-addon cache` process; killed when dropped.
struct CacheProc {
    child: Child,
    port: u16,
    metrics_port: u16,
}

impl Drop for CacheProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Status code and body of a plain HTTP/1.1 GET (cache health and metrics).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

fn start_cache(
    bin: &Path,
    kubeconfig: &Path,
    token_file: &Path,
    drop_events: f64,
    log: &Path,
) -> anyhow::Result<CacheProc> {
    let port = free_port()?;
    let metrics_port = free_port()?;
    let log = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .arg("cache")
        .args(["--bind-address", "127.0.0.1"])
        .args(["--port", &port.to_string()])
        .args(["--metrics-port", &metrics_port.to_string()])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--resources", &routing_resources().join(",")])
        .arg("--token-file")
        .arg(token_file)
        .args(["--drop-watch-events", &drop_events.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(CacheProc {
        child,
        port,
        metrics_port,
    })
}

/// Cumulative CPU seconds (user + system) and RSS (MiB) of a process.
fn proc_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is index 0, utime 11, stime 12.
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks / hz, rss_kb / 1024.0))
}

/// Busy and total jiffies of the whole machine (all cores).
fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0.0) + f.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn clock_ticks() -> f64 {
    // Linux reports /proc times in USER_HZ, 100 on every mainstream build.
    100.0
}

/// Raises this process's open-file limit to the hard limit (the fleet and
/// the scaler bench open thousands of sockets).
pub(crate) fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    lim.current = lim.maximum;
    let set = setrlimit(Resource::Nofile, lim).is_ok();
    progress(&format!(
        "file descriptors: limit {:?} ({})",
        lim.current,
        if set {
            "raised to the hard limit"
        } else {
            "could not raise"
        }
    ));
}

fn api_load(before: &testkit::Stats, after: &testkit::Stats, secs: f64) -> ApiLoad {
    let d = |verb: Option<Verb>| -> f64 {
        let sum = |s: &testkit::Stats| -> u64 {
            s.requests
                .iter()
                .filter(|((v, _), _)| verb.is_none_or(|w| *v == w))
                .map(|(_, n)| *n)
                .sum()
        };
        sum(after).saturating_sub(sum(before)) as f64 / secs
    };
    let bytes = |s: &testkit::Stats| -> u64 { s.response_bytes.values().sum() };
    ApiLoad {
        seconds: secs,
        requests_per_sec: d(None),
        lists_per_sec: d(Some(Verb::List)),
        watch_requests_per_sec: d(Some(Verb::Watch)),
        response_bytes_per_sec: bytes(after).saturating_sub(bytes(before)) as f64 / secs,
        open_watches: after.open_watches,
    }
}

/// The sum of every sample of the metric family whose lines start with `name`.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .reduce(|a, b| a + b)
}

/// Sends the sync loop's conditional list (`?resourceVersion=0`,
/// `If-None-Match: "d<content digest of what it holds>"`) for both routing
/// resources every `interval`: the resync alone, on its own HTTP/2 connection.
async fn resync_probe(client: kube::Client, interval: Duration, cancel: CancellationToken) {
    let collections = [
        HTTPScaledObject::url_path(&(), None),
        InterceptorRoute::url_path(&(), None),
    ]
    .map(|p| kubewatch::Collection::new(client.clone(), p));
    let mut digests: [Option<u64>; 2] = [None, None];
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (i, collection) in collections.iter().enumerate() {
            let params = kubewatch::ListParams {
                from_cache: true,
                page_size: None,
                if_none_match: digests[i].map(kubewatch::IfNoneMatch::Digest),
                metadata_only: false,
            };
            // A 304 keeps the digest; a failure is retried next tick.
            let Ok(kubewatch::ListOutcome::Listed(list)) = collection.list(&params).await else {
                continue;
            };
            let held: Vec<(String, String, String)> = list
                .items
                .iter()
                .filter_map(|item| serde_json::from_slice::<Value>(item).ok())
                .map(|o| {
                    let m = &o["metadata"];
                    let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                    (s("namespace"), s("name"), s("resourceVersion"))
                })
                .collect();
            digests[i] = Some(wire::digest::content_digest(
                held.iter()
                    .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())),
            ))
            .filter(|d| *d != 0);
        }
    }
}

/// Percentiles of delays in microseconds (`u32::MAX` = missing).
fn percentiles(delays_us: &[AtomicU32]) -> Percentiles {
    let mut v: Vec<u32> = delays_us
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .collect();
    let missing = v.iter().filter(|x| **x == u32::MAX).count();
    v.retain(|x| *x != u32::MAX);
    v.sort_unstable();
    if v.is_empty() {
        return Percentiles {
            missing,
            ..Percentiles::default()
        };
    }
    let at =
        |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1] as f64 / 1000.0;
    Percentiles {
        samples: v.len(),
        missing,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: *v.last().unwrap_or(&0) as f64 / 1000.0,
        within_1s: v.iter().filter(|x| **x <= 1_000_000).count() as f64
            / (v.len() + missing) as f64,
    }
}

async fn run_one(args: &FleetArgs, bin: &Path, mode: Mode, n: usize) -> anyhow::Result<RunResult> {
    let resync = Duration::from_millis(args.resync_ms);
    let api = ApiThread::start().await?;
    for i in 0..args.objects {
        api.put_object(httpso(
            &format!("app-{i}"),
            "apps",
            &format!("app-{i}.example.com"),
        ))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    for i in 0..args.objects.div_ceil(10) {
        api.put_object(interceptor_route(
            &format!("route-{i}"),
            &format!("route-{i}.example.com"),
        ))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    }
    // A service account token is about 1 KB: HPACK must make it cheap.
    let token: String = std::iter::repeat_n("eyJhbGciOiJSUzI1NiIsImtpZCI6", 36).collect();
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, format!("{token}\n"))?;

    let mut caches = Vec::new();
    if mode == Mode::Cache {
        for c in 0..args.caches.max(1) {
            let log = args.out.join(format!("cache-{c}.log"));
            caches.push(start_cache(
                bin,
                api.kubeconfig_path(),
                &token_file,
                args.drop_events,
                &log,
            )?);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for c in &caches {
            loop {
                if http_get(c.metrics_port, "/readyz").is_some_and(|(code, _)| code == 200) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("cache on port {} not ready within 30 s", c.port);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        progress(&format!("{} caches ready", caches.len()));
    } else if args.drop_events > 0.0 {
        api.faults().set_drop_watch_events(args.drop_events);
    }

    let self_pid = std::process::id();
    let (_, rss_before) = proc_usage(self_pid).unwrap_or_default();
    let writes = Writes::new(args.writes, n);
    let cancel = CancellationToken::new();
    let counters = kubewatch::client::IoCounters::new();
    let config = SyncConfig {
        resync_interval: resync,
        endpoints: false,
        ..SyncConfig::default()
    };
    let mut replicas: Vec<SyncHandle> = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let client = match mode {
            Mode::Direct => api.client(),
            Mode::Cache => {
                let c = &caches[i % caches.len()];
                let mut cfg = kubewatch::client::CacheClientConfig::new(
                    format!("http://127.0.0.1:{}", c.port).parse()?,
                );
                cfg.token = Some(token.clone());
                cfg.counters = Some(counters.clone());
                kubewatch::client::cache_client(cfg)?
            }
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let h = sync::start(
            sync::Source::Kubernetes(client),
            config.clone(),
            &mut registry,
        );
        tokio::spawn(observe(i, h.table.clone(), writes.clone(), cancel.clone()));
        replicas.push(h);
        if replicas.len().is_multiple_of(args.start_batch.max(1)) || replicas.len() == n {
            let from = replicas.len() - ((replicas.len() - 1) % args.start_batch.max(1)) - 1;
            let wait = async {
                for r in &replicas[from..] {
                    r.table.wait_ready().await;
                }
            };
            if tokio::time::timeout(Duration::from_secs(120), wait)
                .await
                .is_err()
            {
                bail!("replicas {from}..{} not ready within 120 s", replicas.len());
            }
            progress(&format!(
                "{} / {n} replicas ready ({:.1} s)",
                replicas.len(),
                start.elapsed().as_secs_f64()
            ));
        }
    }
    let start_secs = start.elapsed().as_secs_f64();
    // Let the start-up burst settle (first resyncs, HPACK tables warm).
    tokio::time::sleep(Duration::from_secs(2).max(resync * 2)).await;

    // Idle window.
    let probes_cancel = CancellationToken::new();
    let probe_counters = kubewatch::client::IoCounters::new();
    let probes = if mode == Mode::Cache {
        20.min(n).max(1)
    } else {
        0
    };
    for p in 0..probes {
        let c = &caches[p % caches.len()];
        let mut cfg = kubewatch::client::CacheClientConfig::new(
            format!("http://127.0.0.1:{}", c.port).parse()?,
        );
        cfg.token = Some(token.clone());
        cfg.counters = Some(probe_counters.clone());
        tokio::spawn(resync_probe(
            kubewatch::client::cache_client(cfg)?,
            resync,
            probes_cancel.clone(),
        ));
    }
    // Probes' first lists are full; keep them out of the window.
    tokio::time::sleep(resync * 3).await;
    let idle = Duration::from_secs(args.idle_secs.max(1));
    progress(&format!("idle window {} s", idle.as_secs()));
    let s0 = api.stats();
    let w0 = counters.read() + counters.written();
    let p0 = probe_counters.read() + probe_counters.written();
    let cpu0: Vec<f64> = caches
        .iter()
        .map(|c| proc_usage(c.child.id()).map(|u| u.0).unwrap_or(0.0))
        .collect();
    let self0 = proc_usage(self_pid).map(|u| u.0).unwrap_or(0.0);
    let t0 = Instant::now();
    tokio::time::sleep(idle).await;
    let secs = t0.elapsed().as_secs_f64();
    let s1 = api.stats();
    let wire = (counters.read() + counters.written() - w0) as f64 / secs / n as f64;
    let probe = (probe_counters.read() + probe_counters.written() - p0) as f64
        / secs
        / probes.max(1) as f64;
    let cpu1: Vec<f64> = caches
        .iter()
        .map(|c| proc_usage(c.child.id()).map(|u| u.0).unwrap_or(0.0))
        .collect();
    let self1 = proc_usage(self_pid).map(|u| u.0).unwrap_or(0.0);
    probes_cancel.cancel();
    let api_idle = api_load(&s0, &s1, secs);
    let (_, rss_after) = proc_usage(self_pid).unwrap_or_default();
    progress(&format!(
        "idle: API {:.1} req/s {:.0} B/s, {} open watches; per replica {:.0} B/s on the wire, resync alone {:.0} B/s",
        api_idle.requests_per_sec,
        api_idle.response_bytes_per_sec,
        api_idle.open_watches,
        wire,
        probe
    ));

    // Writes.
    progress(&format!(
        "writing {} changes, one per {} ms",
        args.writes, args.write_interval_ms
    ));
    let s2 = api.stats();
    let cpu2: Vec<f64> = caches
        .iter()
        .map(|c| proc_usage(c.child.id()).map(|u| u.0).unwrap_or(0.0))
        .collect();
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string();
    let bench2 = proc_usage(self_pid).map(|u| u.0).unwrap_or(0.0);
    let m2 = machine_jiffies();
    let t2 = Instant::now();
    for k in 0..args.writes {
        let _ = writes.t0[k].set(Instant::now());
        writes.started.store(k + 1, Ordering::Release);
        api.put_object(httpso(
            &writes.names[k],
            "bench",
            &format!("{}.bench.example.com", writes.names[k]),
        ))
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        progress(&format!("wrote {}", writes.names[k]));
        tokio::time::sleep(Duration::from_millis(args.write_interval_ms)).await;
    }
    let settle = async {
        loop {
            let notified = writes.done.notified();
            if writes.remaining.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), settle).await;
    let wsecs = t2.elapsed().as_secs_f64();
    let bench3 = proc_usage(self_pid).map(|u| u.0).unwrap_or(0.0);
    let m3 = machine_jiffies();
    let machine_cpu_writes_pct = (m3.0 - m2.0) / clock_ticks() / wsecs * 100.0;
    progress(&format!(
        "during writes: bench CPU {:.0}%, machine {:.0}% (100 = one core), load before: {loadavg}",
        (bench3 - bench2) / wsecs * 100.0,
        machine_cpu_writes_pct
    ));
    let s3 = api.stats();
    let cpu3: Vec<f64> = caches
        .iter()
        .map(|c| proc_usage(c.child.id()).map(|u| u.0).unwrap_or(0.0))
        .collect();
    let propagation = percentiles(&writes.applied_us);
    for (j, name) in writes.names.iter().enumerate() {
        let p = percentiles(&writes.applied_us[j * n..(j + 1) * n]);
        progress(&format!(
            "write {name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} missing)",
            p.p50_ms, p.p99_ms, p.max_ms, p.missing
        ));
    }
    // Every (write, replica) delivery time, for offline analysis.
    let raw = args
        .out
        .join(format!("propagation-{mode:?}-{n}.csv").to_lowercase());
    let mut text = String::from("write,replica,us\n");
    for (k, a) in writes.applied_us.iter().enumerate() {
        text.push_str(&format!(
            "{},{},{}\n",
            k / n,
            k % n,
            a.load(Ordering::Relaxed)
        ));
    }
    std::fs::write(&raw, text).with_context(|| format!("writing {}", raw.display()))?;
    progress(&format!(
        "propagation p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples, {} missing)",
        propagation.p50_ms,
        propagation.p99_ms,
        propagation.max_ms,
        propagation.samples,
        propagation.missing
    ));

    let mut cache_procs = Vec::new();
    for (i, c) in caches.iter().enumerate() {
        let (_, rss) = proc_usage(c.child.id()).unwrap_or_default();
        let text = http_get(c.metrics_port, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        cache_procs.push(ProcUse {
            pid: c.child.id(),
            cpu_idle_pct: (cpu1[i] - cpu0[i]) / secs * 100.0,
            cpu_writes_pct: (cpu3[i] - cpu2[i]) / wsecs * 100.0,
            rss_mb: rss,
            subscribers: metric(&text, "keda_http_cache_subscribers "),
            events_fanned_out: metric(&text, "keda_http_cache_events_fanned_out_total"),
            bytes_sent: metric(&text, "keda_http_cache_sent_bytes_total"),
        });
    }
    let label = |r: &str| sync::metrics::ResourceLabel {
        resource: r.to_string(),
    };
    let mut repairs = 0;
    let mut restarts = 0;
    for r in &replicas {
        repairs += r.metrics.total_repairs();
        for res in &routing_resources() {
            restarts += r.metrics.watch_restarts.get_or_create(&label(res)).get();
        }
    }
    cancel.cancel();
    drop(replicas);
    drop(caches);
    Ok(RunResult {
        mode,
        replicas: n,
        caches: if mode == Mode::Cache {
            args.caches.max(1)
        } else {
            0
        },
        drop_events: args.drop_events,
        writes: args.writes,
        objects: args.objects,
        start_secs,
        propagation,
        api_idle,
        api_writes: api_load(&s2, &s3, wsecs),
        cache_procs,
        bench_cpu_idle_pct: (self1 - self0) / secs * 100.0,
        bench_cpu_writes_pct: (bench3 - bench2) / wsecs * 100.0,
        machine_cpu_writes_pct,
        loadavg_before_writes: loadavg,
        bench_rss_mb: rss_after,
        memory_per_replica_kb: (rss_after - rss_before).max(0.0) * 1024.0 / n as f64,
        idle_wire_bytes_per_replica_per_sec: (mode == Mode::Cache).then_some(wire),
        idle_resync_bytes_per_replica_per_sec: (mode == Mode::Cache).then_some(probe),
        resync_repairs: repairs,
        watch_restarts: restarts,
    })
}

fn print_result(r: &RunResult) {
    progress(&format!(
        "{:?} N={}: p50 {:.1} / p99 {:.1} / max {:.1} ms; API idle {:.1} req/s {:.0} B/s {} watches; repairs {}",
        r.mode,
        r.replicas,
        r.propagation.p50_ms,
        r.propagation.p99_ms,
        r.propagation.max_ms,
        r.api_idle.requests_per_sec,
        r.api_idle.response_bytes_per_sec,
        r.api_idle.open_watches,
        r.resync_repairs
    ));
}

fn print_table(results: &[RunResult]) {
    println!(
        "| mode | N | drop | p50 ms | p99 ms | max ms | missing | API req/s (idle) | API lists/s | API B/s (idle) | API watches | cache CPU % idle / writes | cache RSS MB | bench CPU % idle | mem/replica KB | idle wire B/s/replica | idle resync B/s/replica | repairs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let cpu: Vec<String> = r
            .cache_procs
            .iter()
            .map(|c| format!("{:.0}/{:.0}", c.cpu_idle_pct, c.cpu_writes_pct))
            .collect();
        let rss: Vec<String> = r
            .cache_procs
            .iter()
            .map(|c| format!("{:.0}", c.rss_mb))
            .collect();
        let opt = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
        println!(
            "| {:?} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.1} | {:.2} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {} | {} | {} |",
            r.mode,
            r.replicas,
            r.drop_events,
            r.propagation.p50_ms,
            r.propagation.p99_ms,
            r.propagation.max_ms,
            r.propagation.missing,
            r.api_idle.requests_per_sec,
            r.api_idle.lists_per_sec,
            r.api_idle.response_bytes_per_sec,
            r.api_idle.open_watches,
            if cpu.is_empty() {
                "-".into()
            } else {
                cpu.join(", ")
            },
            if rss.is_empty() {
                "-".into()
            } else {
                rss.join(", ")
            },
            r.bench_cpu_idle_pct,
            r.memory_per_replica_kb,
            opt(r.idle_wire_bytes_per_replica_per_sec),
            opt(r.idle_resync_bytes_per_replica_per_sec),
            r.resync_repairs,
        );
    }
}

fn write_outputs(args: &FleetArgs, results: &[RunResult]) -> anyhow::Result<()> {
    let doc = json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "results": results,
    });
    std::fs::write(
        args.out.join("fleet.json"),
        serde_json::to_vec_pretty(&doc)?,
    )?;
    if !results.is_empty() {
        plot(&args.out.join("fleet.svg"), results)?;
    }
    Ok(())
}

fn plot(path: &Path, results: &[RunResult]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((3, 1));
    let max_n = results
        .iter()
        .map(|r| r.replicas)
        .max()
        .unwrap_or(1)
        .max(10) as f64;
    let mut by_mode: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        let key = if r.drop_events > 0.0 {
            format!("{:?} drop {}", r.mode, r.drop_events).to_lowercase()
        } else {
            format!("{:?}", r.mode).to_lowercase()
        };
        by_mode.entry(key).or_default().push(r);
    }
    for v in by_mode.values_mut() {
        v.sort_by_key(|r| r.replicas);
    }
    let colors = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    type Pick = fn(&RunResult) -> f64;
    type Chart<'a> = (&'a str, &'a str, Vec<(&'a str, Pick)>);
    let charts: [Chart<'_>; 3] = [
        (
            "Propagation, write -> applied at every replica",
            "ms",
            vec![
                ("p50", |r| r.propagation.p50_ms),
                ("p99", |r| r.propagation.p99_ms),
                ("max", |r| r.propagation.max_ms),
            ],
        ),
        (
            "API server requests/s (idle)",
            "req/s",
            vec![("requests", |r| r.api_idle.requests_per_sec)],
        ),
        (
            "API server response bytes/s (idle)",
            "B/s",
            vec![("bytes", |r| r.api_idle.response_bytes_per_sec)],
        ),
    ];
    for (panel, (title, unit, series)) in panels.iter().zip(charts.iter()) {
        let values: Vec<f64> = results
            .iter()
            .flat_map(|r| series.iter().map(move |(_, f)| f(r)))
            .collect();
        let ymax = values.iter().cloned().fold(1.0, f64::max) * 2.0;
        let mut chart = ChartBuilder::on(panel)
            .caption(*title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d((50f64..max_n * 2.0).log_scale(), (0.1f64..ymax).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("replicas (N)")
            .y_desc(*unit)
            .draw()?;
        let mut ci = 0;
        for (mode, rs) in &by_mode {
            for (name, f) in series {
                let color = colors[ci % colors.len()];
                ci += 1;
                let pts: Vec<(f64, f64)> = rs
                    .iter()
                    .map(|r| (r.replicas as f64, f(r).max(0.1)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                    .label(format!("{mode} {name}"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                chart.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
