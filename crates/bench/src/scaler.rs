//! `bench scaler`: the scaler's poll round against a simulated interceptor
//! fleet, with upstream's plain `/queue` JSON and with the compact form.
//!
//! A child process (this binary, `scaler --serve-pods`) serves `/queue` for
//! N simulated interceptor pods, one per loopback address (127.1.x.y, one
//! port), R routes each; on `step` it changes 10 % of the routes on every
//! pod (new concurrency, more requests), like a fleet under load. Both
//! forms come from the interceptor's own code: upstream's JSON from
//! `wire::queue::encode_plain`, the compact form from
//! `interceptor::queue::QueueHistory` (which writes with
//! `wire::queue::encode_compact`). The child counts the bytes of every HTTP
//! exchange (requests and responses, headers included).
//!
//! This process runs the scaler's real [`scaler::Poller`] over those pods:
//! a warm-up round (connections, first full answers), then `--ticks`
//! rounds each after a `step` (10 % active), then one idle round. Per
//! round: wall time, this process's CPU time (the scaler's), and bytes.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use http_body_util::Full;
use serde::Serialize;

/// Flags of `bench scaler`.
#[derive(Debug, Args)]
pub struct ScalerBenchArgs {
    /// Simulated interceptor pods.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Routes on every pod.
    #[arg(long, default_value_t = 1000)]
    routes: usize,
    /// Percent of the routes that change on each pod every round.
    #[arg(long, default_value_t = 10)]
    active_pct: usize,
    /// Measured rounds per form (after a warm-up round).
    #[arg(long, default_value_t = 5)]
    ticks: usize,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "bench-results/scaler.json")]
    out: std::path::PathBuf,
    /// Internal: be the simulated fleet (the child process).
    #[arg(long, hide = true)]
    serve_pods: bool,
}

fn progress(msg: &str) {
    eprintln!("[scaler bench] {msg}");
}

fn pod_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

/// CPU time (user + system) of this whole process so far.
pub(crate) fn cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
/// Runs the benchmark (or, with `--serve-pods`, the simulated fleet).
pub fn run(args: ScalerBenchArgs) -> anyhow::Result<()> {
    crate::fleet::raise_fd_limit();
    let rt = crate::runtime(None)?;
    if args.serve_pods {
        return rt.block_on(serve_pods(args));
    }
    rt.block_on(measure(args))
}

#[derive(Debug, Serialize)]
struct Round {
    wall_ms: f64,
    cpu_ms: f64,
    body_bytes: u64,
    wire_bytes: u64,
    /// CPU of the simulated fleet (the child) in the round: all 1,000
    /// interceptors' /queue answers, on this machine's cores.
    fleet_cpu_ms: f64,
}

#[derive(Debug, Serialize)]
struct FormResult {
    form: &'static str,
    rounds: Vec<Round>,
    median_wall_ms: f64,
    median_cpu_ms: f64,
    median_fleet_cpu_ms: f64,
    median_wire_bytes: u64,
    idle_round: Round,
    idle_wire_bytes_per_pod: f64,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    pods: usize,
    routes: usize,
    active_pct: usize,
    cores: usize,
    forms: Vec<FormResult>,
}

/// The child: stdin commands `step` / `bytes`, one answer line each.
struct Child {
    proc: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Child {
    fn command(&mut self, cmd: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        anyhow::ensure!(!line.is_empty(), "the simulated fleet exited");
        Ok(line.trim().to_string())
    }

    fn bytes(&mut self) -> anyhow::Result<u64> {
        Ok(self.command("bytes")?.parse()?)
    }

    /// The fleet simulator's CPU time.
    fn cpu(&mut self) -> anyhow::Result<Duration> {
        Ok(Duration::from_nanos(self.command("cpu")?.parse()?))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn measure(args: ScalerBenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut proc = Command::new(exe)
        .args(["scaler", "--serve-pods"])
        .args(["--pods", &args.pods.to_string()])
        .args(["--routes", &args.routes.to_string()])
        .args(["--active-pct", &args.active_pct.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the simulated fleet")?;
    let mut child = Child {
        stdin: proc.stdin.take().unwrap(),
        stdout: BufReader::new(proc.stdout.take().unwrap()),
        proc,
    };
    let port: u16 = child.command("port")?.parse().context("the fleet's port")?;
    progress(&format!(
        "{} pods x {} routes on 127.1.x.y:{port}",
        args.pods, args.routes
    ));

    // The admin Service's ready endpoints, as the sync loop would publish them.
    let endpoints = sync::ReadyEndpoints::new();
    endpoints.apply([sync::endpoints::EndpointsChange::PutSlice(
        sync::endpoints::SliceDef {
            namespace: "keda".into(),
            name: "admin-1".into(),
            service: "admin".into(),
            ports: vec![("admin".into(), port)],
            ready: (0..args.pods).map(pod_ip).collect(),
        },
    )]);
    let table = sync::SharedTable::new();
    let mut forms = Vec::new();
    for (form, compact) in [("plain JSON", false), ("compact", true)] {
        let mut registry = prometheus_client::registry::Registry::default();
        let config = scaler::poller::PollerConfig {
            namespace: "keda".into(),
            service: "admin".into(),
            port,
            tick: Duration::from_millis(500),
            fetch_timeout: Duration::from_secs(10),
            keep_unreachable: Duration::from_secs(5),
            compact,
        };
        let (mut poller, counts) =
            scaler::Poller::new(config, endpoints.clone(), table.clone(), &mut registry);
        anyhow::ensure!(poller.listed().len() == args.pods, "pods listed");
        let mut now = Duration::ZERO;
        let mut round =
            async |poller: &mut scaler::Poller, child: &mut Child| -> anyhow::Result<Round> {
                now += Duration::from_millis(500);
                let (f0, b0, w0) = (child.cpu()?, poller.response_bytes(), child.bytes()?);
                let (c0, t0) = (cpu_now(), Instant::now());
                let summary = poller.poll_once(now).await;
                let (t1, c1) = (t0.elapsed(), cpu_now());
                let fleet_cpu_ms = (child.cpu()? - f0).as_secs_f64() * 1e3;
                anyhow::ensure!(
                    summary.answered == args.pods,
                    "every pod answered: {summary:?}"
                );
                Ok(Round {
                    wall_ms: t1.as_secs_f64() * 1e3,
                    cpu_ms: (c1 - c0).as_secs_f64() * 1e3,
                    body_bytes: poller.response_bytes() - b0,
                    wire_bytes: child.bytes()? - w0,
                    fleet_cpu_ms,
                })
            };
        let warm = round(&mut poller, &mut child).await?;
        progress(&format!("{form}: warm-up round {:.0} ms", warm.wall_ms));
        let mut rounds = Vec::new();
        for _ in 0..args.ticks {
            child.command("step")?;
            let r = round(&mut poller, &mut child).await?;
            progress(&format!(
                "{form}: {:.1} ms wall, {:.1} ms CPU, {} bytes (fleet simulator CPU {:.0} ms)",
                r.wall_ms, r.cpu_ms, r.wire_bytes, r.fleet_cpu_ms
            ));
            rounds.push(r);
        }
        let idle = round(&mut poller, &mut child).await?;
        let active = counts.borrow().by_key.len();
        progress(&format!(
            "{form}: idle round {:.1} ms wall, {:.1} ms CPU, {} bytes; {active} routes counted",
            idle.wall_ms, idle.cpu_ms, idle.wire_bytes
        ));
        forms.push(FormResult {
            form,
            median_wall_ms: median(rounds.iter().map(|r| r.wall_ms).collect()),
            median_cpu_ms: median(rounds.iter().map(|r| r.cpu_ms).collect()),
            median_fleet_cpu_ms: median(rounds.iter().map(|r| r.fleet_cpu_ms).collect()),
            median_wire_bytes: median(rounds.iter().map(|r| r.wire_bytes as f64).collect()) as u64,
            idle_wire_bytes_per_pod: idle.wire_bytes as f64 / args.pods as f64,
            idle_round: idle,
            rounds,
        });
    }
    let result = BenchResult {
        pods: args.pods,
        routes: args.routes,
        active_pct: args.active_pct,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        forms,
    };
    println!(
        "| /queue form | wall per round | scaler CPU per round | bytes per round | idle round: bytes per pod | idle round: scaler CPU | fleet simulator CPU per round |"
    );
    println!("|---|---|---|---|---|---|---|");
    for f in &result.forms {
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.2} MB | {:.0} B | {:.1} ms | {:.0} ms |",
            f.form,
            f.median_wall_ms,
            f.median_cpu_ms,
            f.median_wire_bytes as f64 / 1e6,
            f.idle_wire_bytes_per_pod,
            f.idle_round.cpu_ms,
            f.median_fleet_cpu_ms
        );
    }
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&result)?)?;
    progress(&format!("results in {}", args.out.display()));
    Ok(())
}

/// Bytes of every HTTP exchange, both ways.
static WIRE_BYTES: AtomicU64 = AtomicU64::new(0);

/// A stream that counts what passes through it into [`WIRE_BYTES`].
struct Counted(tokio::net::TcpStream);

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        WIRE_BYTES.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
        r
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.0).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            WIRE_BYTES.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// One simulated interceptor pod.
struct Pod {
    counts: parking_lot::Mutex<Vec<(i64, u64)>>,
    history: interceptor::queue::QueueHistory,
    /// Answers prepared between rounds (untimed), so that the simulated
    /// fleet costs the round little more than its HTTP exchanges, as a
    /// real fleet on its own machines would; a request that does not
    /// match (another `since`) is computed as before.
    prepared: parking_lot::Mutex<Prepared>,
}

#[derive(Default)]
struct Prepared {
    plain: Option<Bytes>,
    /// (the `since` it answers, the body).
    compact: Option<(String, Bytes)>,
    /// The `since` the pod's last compact answer told the scaler to send.
    next_since: Option<String>,
}

impl Pod {
    /// Prepares the next round's answers: upstream's JSON, and the compact
    /// delta for the `since` the scaler will send.
    fn prepare(&self, keys: &[Arc<str>]) {
        let counts = self.counts.lock().clone();
        let plain =
            wire::queue::encode_plain(keys.iter().zip(&counts).map(|(k, (c, n))| (k, *c, *n)));
        let mut p = self.prepared.lock();
        p.plain = Some(Bytes::from(plain));
        p.compact = p.next_since.take().map(|since| {
            let triples = keys
                .iter()
                .zip(&counts)
                .map(|(k, (c, n))| (k.clone(), *c, *n));
            let body = self.history.compact_counts(triples, Some(&since));
            p.next_since = next_since(&body);
            (since, Bytes::from(body))
        });
    }
}

/// The `since` a compact answer tells its client to send next.
fn next_since(body: &str) -> Option<String> {
    wire::queue::parse_compact(body).ok().map(|q| q.since())
}

/// The child process: N pods, commands on stdin.
async fn serve_pods(args: ScalerBenchArgs) -> anyhow::Result<()> {
    let keys: Arc<Vec<Arc<str>>> = Arc::new(
        (0..args.routes)
            .map(|r| Arc::from(format!("team-{:03}/app-{r:05}", r % 100)))
            .collect(),
    );
    let first = process::http::listen(SocketAddr::new(pod_ip(0), 0))?;
    let port = first.local_addr()?.port();
    let mut listeners = vec![first];
    for i in 1..args.pods {
        listeners.push(
            process::http::listen(SocketAddr::new(pod_ip(i), port))
                .with_context(|| format!("binding {}:{port}", pod_ip(i)))?,
        );
    }
    let pods: Vec<Arc<Pod>> = (0..args.pods)
        .map(|_| {
            Arc::new(Pod {
                counts: parking_lot::Mutex::new(vec![(0, 0); args.routes]),
                history: interceptor::queue::QueueHistory::new(),
                prepared: parking_lot::Mutex::default(),
            })
        })
        .collect();
    for (listener, pod) in listeners.into_iter().zip(&pods) {
        let (pod, keys) = (pod.clone(), keys.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let (pod, keys) = (pod.clone(), keys.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let body = answer(&pod, &keys, &req);
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .header("content-type", body.0)
                                        .body(Full::new(body.1))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(Counted(stream));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
    }
    let stdin = tokio::task::spawn_blocking(move || {
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { return };
            let reply = match line.trim() {
                "port" => port.to_string(),
                "bytes" => WIRE_BYTES.load(Ordering::Relaxed).to_string(),
                "cpu" => cpu_now().as_nanos().to_string(),
                "step" => {
                    let active = args.routes * args.active_pct / 100;
                    for pod in &pods {
                        let mut c = pod.counts.lock();
                        for entry in c.iter_mut().take(active) {
                            entry.0 = fastrand::i64(1..5);
                            entry.1 += fastrand::u64(1..10);
                        }
                    }
                    for pod in &pods {
                        pod.prepare(&keys);
                    }
                    "ok".to_string()
                }
                other => format!("unknown command {other:?}"),
            };
            if writeln!(out, "{reply}").and_then(|()| out.flush()).is_err() {
                return;
            }
        }
    });
    stdin.await?;
    Ok(())
}

/// (content type, body) of one pod's `/queue`: the prepared answer when it
/// is the one asked for, else computed now.
fn answer(
    pod: &Pod,
    keys: &[Arc<str>],
    req: &http::Request<hyper::body::Incoming>,
) -> (&'static str, Bytes) {
    let compact = req
        .headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains(wire::queue::COMPACT_CONTENT_TYPE));
    if compact {
        let since = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")));
        let mut prepared = pod.prepared.lock();
        if let (Some((for_since, body)), Some(since)) = (&prepared.compact, since)
            && for_since == since
        {
            return (wire::queue::COMPACT_CONTENT_TYPE, body.clone());
        }
        let counts = pod.counts.lock().clone();
        let triples = keys.iter().zip(counts).map(|(k, (c, n))| (k.clone(), c, n));
        let body = pod.history.compact_counts(triples, since);
        prepared.next_since = next_since(&body);
        (wire::queue::COMPACT_CONTENT_TYPE, Bytes::from(body))
    } else {
        if let Some(body) = &pod.prepared.lock().plain {
            return ("application/json", body.clone());
        }
        let counts = pod.counts.lock().clone();
        let triples = keys.iter().zip(counts).map(|(k, (c, n))| (k, c, n));
        (
            "application/json",
            Bytes::from(wire::queue::encode_plain(triples)),
        )
    }
}
