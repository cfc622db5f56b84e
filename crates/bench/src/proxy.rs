//! `bench proxy`: the interceptor and nginx side by side, same echo backend,
//! same load generators, on loopback.
//!
//! ```text
//! cargo build --release -p http-addon -p bench
//! target/release/bench proxy            # --help for the knobs
//! ```
//!
//! It starts `http-addon echo` (the backend), `http-addon interceptor` on a
//! routes directory of `--routes` HTTPScaledObjects (each with its own
//! Service and EndpointSlice, all pointing at the echo backend) and nginx
//! (`proxy_pass` to an upstream with keepalive, one worker per core, its own
//! config under a temp dir), all on 127.0.0.1, then measures:
//!
//! - (a) CPU time per proxied request: user+sys CPU of the proxy's processes
//!   (from `/proc/<pid>/stat`, nginx master and workers summed) over the
//!   requests wrk completed, at `--connections` keep-alive connections; the
//!   interceptor's requests spread over all routes by Host header;
//! - (b) latency added over direct-to-backend at a constant `--rate`
//!   (an open-loop generator: requests are sent on schedule whether or not
//!   earlier ones have been answered, so a stall is not hidden by
//!   coordinated omission; each is timed from its send);
//! - (c) the interceptor's resident memory (VmRSS, and VmHWM as the peak)
//!   with all routes loaded, sampled during the load.
//!
//! Results print as a table and go to `bench-results/proxy.json`.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

/// Flags of `bench proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// The `http-addon` binary (build it with --release).
    #[arg(long, default_value = "target/release/http-addon")]
    pub http_addon: PathBuf,
    /// nginx binary.
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// wrk binary.
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
    /// Routes in the interceptor's table.
    #[arg(long, default_value_t = 10_000)]
    pub routes: usize,
    /// Keep-alive connections for the CPU measurement.
    #[arg(long, default_value_t = 50)]
    pub connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Duration of each CPU measurement (seconds).
    #[arg(long, default_value_t = 10)]
    pub cpu_seconds: u64,
    /// Constant rate (requests/s) of the latency measurement.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Duration of each latency measurement (seconds).
    #[arg(long, default_value_t = 10)]
    pub latency_seconds: u64,
    /// Response body size of the echo backend (bytes).
    #[arg(long, default_value_t = 128)]
    pub body_size: usize,
    /// nginx worker processes (default: one per core).
    #[arg(long)]
    pub nginx_workers: Option<usize>,
    /// Where results go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
    /// Only start the interceptor with its routes and report its idle RSS
    /// (phase c without load); no nginx or wrk needed.
    #[arg(long)]
    pub rss_only: bool,
}

/// Kills a child process when dropped.
struct Proc {
    child: Child,
    name: &'static str,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first so nginx's master takes its workers with it.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{}: killing", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Serialize, Default, Clone)]
struct CpuResult {
    requests: u64,
    seconds: f64,
    requests_per_second: f64,
    cpu_seconds: f64,
    cpu_us_per_request: f64,
    /// User-space part of `cpu_us_per_request`.
    user_us_per_request: f64,
    /// Kernel part of `cpu_us_per_request`.
    sys_us_per_request: f64,
    non_2xx_or_errors: u64,
}

#[derive(Debug, Serialize, Default, Clone)]
struct LatencyResult {
    requests: u64,
    errors: u64,
    /// CPU of the proxy's processes per request at this fixed rate.
    cpu_us_per_request: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

#[derive(Debug, Serialize, Default)]
struct Results {
    date: String,
    machine: String,
    routes: usize,
    connections: usize,
    rate: u64,
    interceptor_cpu: CpuResult,
    nginx_cpu: CpuResult,
    direct_latency: LatencyResult,
    interceptor_latency: LatencyResult,
    nginx_latency: LatencyResult,
    interceptor_added_p50_us: f64,
    interceptor_added_p99_us: f64,
    nginx_added_p50_us: f64,
    nginx_added_p99_us: f64,
    interceptor_rss_mib: f64,
    interceptor_peak_rss_mib: f64,
    interceptor_idle_rss_mib: f64,
    nginx_rss_mib: f64,
    cpu_ratio: f64,
}

/// Runs the benchmark.
pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    if !args.http_addon.exists() {
        bail!(
            "{} not found; build it first: cargo build --release -p http-addon",
            args.http_addon.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let rt = crate::runtime(Some(1))?;

    // Backend.
    let (echo, echo_addr) = start_echo(&args)?;
    eprintln!("echo backend on {echo_addr} (pid {})", echo.pid());

    // Interceptor with N routes.
    let routes_dir = tmp.path().join("routes");
    std::fs::create_dir_all(&routes_dir)?;
    write_routes(&routes_dir, args.routes, echo_addr)?;
    let (proxy_port, admin_port, metrics_port) = (free_port()?, free_port()?, free_port()?);
    let icp = Proc {
        child: Command::new(&args.http_addon)
            .args(["interceptor", "--routes-dir"])
            .arg(&routes_dir)
            .args(["--bind-address", "127.0.0.1"])
            .args(["--proxy-port", &proxy_port.to_string()])
            .args(["--admin-port", &admin_port.to_string()])
            .args(["--metrics-port", &metrics_port.to_string()])
            .args(["--shutdown-delay", "0s"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the interceptor")?,
        name: "interceptor",
    };
    let icp_addr: SocketAddr = ([127, 0, 0, 1], proxy_port).into();
    let last_host = format!("app-{}.bench", args.routes - 1);
    let started = Instant::now();
    rt.block_on(wait_ok(icp_addr, &last_host, Duration::from_secs(120)))
        .context("the interceptor never routed the last route")?;
    eprintln!(
        "interceptor (pid {}) routes {} routes after {:.1?}",
        icp.pid(),
        args.routes,
        started.elapsed()
    );
    let (idle_rss, idle_peak) = rss_mib(icp.pid());
    if args.rss_only {
        println!(
            "(c) interceptor RSS with {} routes: idle {idle_rss:.1} MiB, peak (VmHWM) {idle_peak:.1} MiB",
            args.routes
        );
        return Ok(());
    }

    // nginx.
    let nginx_port = free_port()?;
    let nginx = start_nginx(&args, tmp.path(), nginx_port, echo_addr)?;
    let nginx_addr: SocketAddr = ([127, 0, 0, 1], nginx_port).into();
    rt.block_on(wait_ok(nginx_addr, "app-0.bench", Duration::from_secs(20)))
        .context("nginx never answered")?;
    eprintln!("nginx (pid {}) on {nginx_addr}", nginx.pid());

    let script = tmp.path().join("hosts.lua");
    std::fs::write(&script, wrk_script(args.routes))?;

    let mut r = Results {
        date: now_utc(),
        machine: machine(),
        routes: args.routes,
        connections: args.connections,
        rate: args.rate,
        interceptor_idle_rss_mib: idle_rss,
        ..Results::default()
    };

    // (a) CPU per request, (c) RSS sampled during it.
    eprintln!(
        "(a) CPU per request, wrk -c{} -d{}s",
        args.connections, args.cpu_seconds
    );
    let icp_pids = vec![icp.pid()];
    let (cpu, rss) = cpu_run(&args, icp_addr, &script, &icp_pids)?;
    r.interceptor_cpu = cpu;
    r.interceptor_rss_mib = rss;
    r.interceptor_peak_rss_mib = rss_mib(icp.pid()).1;
    let nginx_pids = process_tree(nginx.pid());
    let (cpu, rss) = cpu_run(&args, nginx_addr, &script, &nginx_pids)?;
    r.nginx_cpu = cpu;
    r.nginx_rss_mib = rss;
    r.cpu_ratio = r.interceptor_cpu.cpu_us_per_request / r.nginx_cpu.cpu_us_per_request;

    // (b) latency at a constant rate.
    eprintln!(
        "(b) latency at {} req/s for {}s each",
        args.rate, args.latency_seconds
    );
    let n = args.rate * args.latency_seconds;
    let echo_pids = [echo.pid()];
    r.direct_latency = rt.block_on(open_loop(
        echo_addr,
        "app-1.bench",
        args.rate,
        n,
        None,
        &echo_pids,
    ))?;
    r.nginx_latency = rt.block_on(open_loop(
        nginx_addr,
        "app-1.bench",
        args.rate,
        n,
        None,
        &nginx_pids,
    ))?;
    r.interceptor_latency = rt.block_on(open_loop(
        icp_addr,
        "app-1.bench",
        args.rate,
        n,
        Some(args.routes),
        &icp_pids,
    ))?;
    r.interceptor_added_p50_us = r.interceptor_latency.p50_us - r.direct_latency.p50_us;
    r.interceptor_added_p99_us = r.interceptor_latency.p99_us - r.direct_latency.p99_us;
    r.nginx_added_p50_us = r.nginx_latency.p50_us - r.direct_latency.p50_us;
    r.nginx_added_p99_us = r.nginx_latency.p99_us - r.direct_latency.p99_us;
    let (rss_now, peak) = rss_mib(icp.pid());
    r.interceptor_rss_mib = r.interceptor_rss_mib.max(rss_now);
    r.interceptor_peak_rss_mib = peak;

    print_table(&r);
    std::fs::create_dir_all(&args.out)?;
    let path = args.out.join("proxy.json");
    std::fs::write(&path, serde_json::to_string_pretty(&r)?)?;
    eprintln!("wrote {}", path.display());
    drop(nginx);
    drop(icp);
    drop(echo);
    Ok(())
}

fn start_echo(args: &ProxyArgs) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut child = Command::new(&args.http_addon)
        .args(["echo", "--port", "0", "--size", &args.body_size.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the echo backend")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("echo stdout")?).read_line(&mut line)?;
    let proc = Proc {
        child,
        name: "echo",
    };
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected echo output {line:?}"))?
        .parse()?;
    Ok((proc, addr))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// N HTTPScaledObjects `app-<i>.bench` -> Service `app-<i>` -> the backend.
fn write_routes(dir: &Path, n: usize, backend: SocketAddr) -> anyhow::Result<()> {
    let mut out = String::with_capacity(n * 900);
    for i in 0..n {
        let _ = write!(
            out,
            r#"---
apiVersion: http.keda.sh/v1alpha1
kind: HTTPScaledObject
metadata: {{name: app-{i}, namespace: bench}}
spec:
  hosts: [app-{i}.bench]
  pathPrefixes: [/]
  scaleTargetRef: {{name: app-{i}, kind: Deployment, apiVersion: apps/v1, service: app-{i}, port: 80}}
---
apiVersion: v1
kind: Service
metadata: {{name: app-{i}, namespace: bench}}
spec:
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-{i}-1
  namespace: bench
  labels: {{kubernetes.io/service-name: app-{i}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
"#,
            port = backend.port(),
            ip = backend.ip(),
        );
    }
    std::fs::write(dir.join("routes.yaml"), out)?;
    Ok(())
}

fn start_nginx(
    args: &ProxyArgs,
    tmp: &Path,
    port: u16,
    backend: SocketAddr,
) -> anyhow::Result<Proc> {
    let prefix = tmp.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    let workers = args.nginx_workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let conf = format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    upstream backend {{
        server {backend};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#,
        prefix = prefix.display()
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(&args.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting nginx (apt-get install -y nginx)")?;
    Ok(Proc {
        child,
        name: "nginx",
    })
}

fn wrk_script(routes: usize) -> String {
    format!(
        r#"local n = {routes}
local i = 0
request = function()
  i = (i + 7919) % n
  return wrk.format("GET", "/", {{ ["Host"] = "app-" .. i .. ".bench" }})
end
"#
    )
}

async fn wait_ok(addr: SocketAddr, host: &str, limit: Duration) -> anyhow::Result<()> {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + limit;
    loop {
        let req = http::Request::builder()
            .uri(format!("http://{addr}/"))
            .header("host", host)
            .body(Empty::new())?;
        if let Ok(resp) = client.request(req).await
            && resp.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{addr} ({host}) did not answer 200 within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// User and kernel CPU seconds of `pids` together, from /proc/<pid>/stat.
fn user_sys(pids: &[u32]) -> (f64, f64) {
    let mut out = (0.0, 0.0);
    for pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<f64> = rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse().ok())
            .collect();
        if let [u, s] = f[..] {
            out.0 += u / clock_ticks();
            out.1 += s / clock_ticks();
        }
    }
    out
}

/// user+sys CPU seconds of `pids` together.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let (user, sys) = user_sys(pids);
    user + sys
}

/// `getconf CLK_TCK`, asked once.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `pid` and its children (nginx's master and workers).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat"))
                && let Some((_, rest)) = stat.rsplit_once(')')
                && rest.split_whitespace().nth(1) == Some(&pid.to_string())
            {
                pids.push(child);
            }
        }
    }
    pids
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs wrk against `addr`; returns the CPU result and the summed RSS of
/// `pids` sampled at the end of the run.
fn cpu_run(
    args: &ProxyArgs,
    addr: SocketAddr,
    script: &Path,
    pids: &[u32],
) -> anyhow::Result<(CpuResult, f64)> {
    let (user_before, sys_before) = user_sys(pids);
    let started = Instant::now();
    let out = Command::new(&args.wrk)
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.cpu_seconds))
        .arg("-s")
        .arg(script)
        .arg(format!("http://{addr}/"))
        .stderr(Stdio::inherit())
        .output()
        .context("running wrk (apt-get install -y wrk)")?;
    let seconds = started.elapsed().as_secs_f64();
    let (user_after, sys_after) = user_sys(pids);
    let rss: f64 = pids.iter().map(|p| rss_mib(*p).0).sum();
    let text = String::from_utf8_lossy(&out.stdout);
    let requests = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("cannot read wrk's output:\n{text}"))?;
    let errors: u64 = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(|l| {
            l.split(|c: char| !c.is_ascii_digit())
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    let cpu = (user_after + sys_after) - (user_before + sys_before);
    Ok((
        CpuResult {
            requests,
            seconds,
            requests_per_second: requests as f64 / seconds,
            cpu_seconds: cpu,
            cpu_us_per_request: cpu * 1e6 / requests.max(1) as f64,
            user_us_per_request: (user_after - user_before) * 1e6 / requests.max(1) as f64,
            sys_us_per_request: (sys_after - sys_before) * 1e6 / requests.max(1) as f64,
            non_2xx_or_errors: errors,
        },
        rss,
    ))
}

/// Open-loop generator: `n` GETs at `rate`/s, each timed from its scheduled
/// send. With `spread`, the Host cycles over that many routes.
async fn open_loop(
    addr: SocketAddr,
    host: &str,
    rate: u64,
    n: u64,
    spread: Option<usize>,
    pids: &[u32],
) -> anyhow::Result<LatencyResult> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http();
    // Warm the pool.
    for _ in 0..20 {
        let _ = get_once(&client, addr, host).await;
    }
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let cpu_before = cpu_seconds(pids);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let host: Arc<str> = host.into();
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let host = match spread {
            Some(routes) => format!("app-{}.bench", (i as usize * 7919) % routes).into(),
            None => host.clone(),
        };
        tasks.push(tokio::spawn(async move {
            // Timed from the actual send: the tokio timer fires on 1 ms
            // ticks, and its lateness is the generator's, not the proxy's.
            // Sends never wait for earlier responses (open loop).
            let t0 = tokio::time::Instant::now();
            let ok = get_once(&client, addr, &host).await;
            (ok, t0.elapsed())
        }));
    }
    let mut lat = Vec::with_capacity(n as usize);
    let mut errors = 0;
    for t in tasks {
        let (ok, d) = t.await?;
        if ok {
            lat.push(d.as_secs_f64() * 1e6);
        } else {
            errors += 1;
        }
    }
    let cpu = cpu_seconds(pids) - cpu_before;
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return f64::NAN;
        }
        lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
    };
    Ok(LatencyResult {
        requests: n,
        errors,
        cpu_us_per_request: cpu * 1e6 / n.max(1) as f64,
        p50_us: pct(0.50),
        p90_us: pct(0.90),
        p99_us: pct(0.99),
        max_us: lat.last().copied().unwrap_or(f64::NAN),
    })
}

async fn get_once(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    host: &str,
) -> bool {
    let Ok(req) = http::Request::builder()
        .uri(format!("http://{addr}/"))
        .header("host", host)
        .body(Empty::new())
    else {
        return false;
    };
    match client.request(req).await {
        Ok(resp) => {
            let ok = resp.status().is_success();
            ok && resp.into_body().collect().await.is_ok()
        }
        Err(_) => false,
    }
}

fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.to_string()))
        .unwrap_or_default();
    format!("{cores} cores, {cpu}, {mem}")
}

fn print_table(r: &Results) {
    println!("machine: {}", r.machine);
    println!("date:    {}", r.date);
    println!("routes in the interceptor's table: {}", r.routes);
    println!();
    println!(
        "(a) CPU per request, {} keep-alive connections (wrk)",
        r.connections
    );
    println!(
        "  {:<12} {:>10} {:>12} {:>10} {:>14} {:>10} {:>10} {:>8}",
        "proxy", "requests", "req/s", "cpu s", "cpu us/req", "user us", "sys us", "errors"
    );
    for (name, c) in [("interceptor", &r.interceptor_cpu), ("nginx", &r.nginx_cpu)] {
        println!(
            "  {:<12} {:>10} {:>12.0} {:>10.2} {:>14.1} {:>10.1} {:>10.1} {:>8}",
            name,
            c.requests,
            c.requests_per_second,
            c.cpu_seconds,
            c.cpu_us_per_request,
            c.user_us_per_request,
            c.sys_us_per_request,
            c.non_2xx_or_errors
        );
    }
    println!("  interceptor / nginx CPU per request: {:.2}", r.cpu_ratio);
    println!();
    println!("(b) latency at {} req/s (open loop), microseconds", r.rate);
    println!(
        "  {:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
        "target", "p50", "p90", "p99", "max", "errors", ""
    );
    for (name, l) in [
        ("direct", &r.direct_latency),
        ("interceptor", &r.interceptor_latency),
        ("nginx", &r.nginx_latency),
    ] {
        println!(
            "  {:<12} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8} {:>12.1}",
            name, l.p50_us, l.p90_us, l.p99_us, l.max_us, l.errors, l.cpu_us_per_request
        );
    }
    println!(
        "  added over direct: interceptor p50 {:.0} us, p99 {:.0} us; nginx p50 {:.0} us, p99 {:.0} us",
        r.interceptor_added_p50_us,
        r.interceptor_added_p99_us,
        r.nginx_added_p50_us,
        r.nginx_added_p99_us
    );
    println!();
    println!(
        "(c) interceptor RSS: idle {:.1} MiB, under load {:.1} MiB, peak (VmHWM) {:.1} MiB; nginx (all processes) {:.1} MiB",
        r.interceptor_idle_rss_mib,
        r.interceptor_rss_mib,
        r.interceptor_peak_rss_mib,
        r.nginx_rss_mib
    );
}
