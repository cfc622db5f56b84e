//! The poller: every tick, `GET /queue` on each ready interceptor pod in
//! parallel, each with its own timeout, and fold the answers into the
//! [`Fleet`] counts that the gRPC service reads.
//!
//! The pods are the ready endpoints of the interceptor admin Service, read
//! from the [`sync::ReadyEndpoints`] cache (Kubernetes, a cache URL, or a
//! routes directory). With `compact` on, each request asks for the compact
//! delta form ([`interceptor::queue`]) from the epoch that pod last
//! answered with; a pod that answers with upstream's JSON instead (an
//! older or Go interceptor) is read as such.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{debug, info, warn};

use crate::Counts;
use crate::fleet::{Fetched, Fleet, PodReport, RoundSummary};

/// Where the interceptors are and how to poll them.
#[derive(Debug, Clone)]
pub struct PollerConfig {
    /// Namespace of the interceptor admin Service.
    pub namespace: String,
    /// The interceptor admin Service.
    pub service: String,
    /// Its admin port (a Service port number; the pods are dialed on the
    /// matching endpoint port).
    pub port: u16,
    /// Time between rounds.
    pub tick: Duration,
    /// Bound on one pod's fetch.
    pub fetch_timeout: Duration,
    /// How long a pod that stops answering keeps its last counts.
    pub keep_unreachable: Duration,
    /// Ask for the compact delta form.
    pub compact: bool,
}

/// The rate window of a route without one (upstream's defaults).
pub const DEFAULT_WINDOW: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(1));

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabel {
    pod: String,
}

/// The poller's Prometheus metrics (prefix `scaler_pinger_`).
#[derive(Clone, Debug)]
pub struct PollerMetrics {
    fetch_duration: Histogram,
    fetch_errors: Family<PodLabel, Counter>,
    endpoints: Gauge,
    unreachable: Gauge,
    response_bytes: Counter,
}

impl PollerMetrics {
    /// Registers the metrics under `scaler_pinger_` in `registry`.
    pub fn new(registry: &mut Registry) -> PollerMetrics {
        let m = PollerMetrics {
            fetch_duration: Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
            ]),
            fetch_errors: Family::default(),
            endpoints: Gauge::default(),
            unreachable: Gauge::default(),
            response_bytes: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("scaler_pinger");
        r.register_with_unit(
            "fetch_duration",
            "Duration of one poll round over every interceptor pod",
            prometheus_client::registry::Unit::Seconds,
            m.fetch_duration.clone(),
        );
        r.register(
            "fetch_errors",
            "Failed /queue fetches, per interceptor pod",
            m.fetch_errors.clone(),
        );
        r.register(
            "endpoints",
            "Interceptor pods polled in the last round",
            m.endpoints.clone(),
        );
        r.register(
            "unreachable_pods",
            "Interceptor pods that did not answer and still count with their last report",
            m.unreachable.clone(),
        );
        r.register(
            "response_bytes",
            "Bytes of /queue answers read",
            m.response_bytes.clone(),
        );
        m
    }
}

/// The pods' counts as the gRPC service reads them.
pub type CountsReceiver = watch::Receiver<Arc<Counts>>;

/// See the [module docs](self).
pub struct Poller {
    config: PollerConfig,
    endpoints: Arc<sync::ReadyEndpoints>,
    table: Arc<sync::SharedTable>,
    client: Client<HttpConnector, Empty<Bytes>>,
    fleet: Fleet,
    /// The `since` each pod's next compact request sends.
    since: HashMap<SocketAddr, String>,
    counts: watch::Sender<Arc<Counts>>,
    metrics: PollerMetrics,
    health: Option<HealthReporter>,
    /// Rounds in a row in which no pod answered (`None`: none ever did).
    failed_rounds: Option<u32>,
    serving: Option<bool>,
}

impl std::fmt::Debug for Poller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poller")
            .field("config", &self.config)
            .field("pods", &self.fleet.pods())
            .finish_non_exhaustive()
    }
}

/// Upstream's `/queue` entry.
#[derive(Deserialize)]
struct QueueCount {
    #[serde(rename = "Concurrency", default)]
    concurrency: i64,
    #[serde(rename = "RequestCount", default)]
    request_count: u64,
}

/// Why one fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Http(String),
    #[error("status {0}")]
    Status(u16),
    #[error("bad JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Compact(#[from] interceptor::queue::CompactError),
    #[error("answer is not UTF-8")]
    Utf8,
}

/// What one fetch brought back.
struct Answer {
    report: PodReport,
    since: Option<String>,
    bytes: usize,
}

impl Poller {
    /// A poller over `endpoints` (for the pods) and `table` (for the rate
    /// windows); the receiver reads its counts.
    pub fn new(
        config: PollerConfig,
        endpoints: Arc<sync::ReadyEndpoints>,
        table: Arc<sync::SharedTable>,
        registry: &mut Registry,
    ) -> (Poller, CountsReceiver) {
        let (tx, rx) = watch::channel(Arc::new(Counts::default()));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.fetch_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let poller = Poller {
            fleet: Fleet::new(config.keep_unreachable),
            config,
            endpoints,
            table,
            client,
            since: HashMap::new(),
            counts: tx,
            metrics: PollerMetrics::new(registry),
            health: None,
            failed_rounds: None,
            serving: None,
        };
        (poller, rx)
    }

    /// Reports health (`liveness`, `readiness` and the server's own "")
    /// here: NOT_SERVING until a round succeeds, and after 2 rounds in a
    /// row in which no pod answered.
    pub fn set_health(&mut self, reporter: HealthReporter) {
        self.health = Some(reporter);
    }

    /// Bytes of `/queue` answers read so far (bodies only).
    pub fn response_bytes(&self) -> u64 {
        self.metrics.response_bytes.get()
    }

    /// The ready interceptor pods, from the EndpointSlices of the admin Service.
    pub fn listed(&self) -> Vec<SocketAddr> {
        let snap = self.endpoints.load();
        snap.get(&self.config.namespace, &self.config.service)
            .and_then(|e| e.ready_addresses(&routing::PortRef::Number(self.config.port)))
            .map(|a| a.to_vec())
            .unwrap_or_default()
    }

    /// One round at `now` (time since an origin of the caller's choice:
    /// the loop uses real time, tests a simulated clock).
    pub async fn poll_once(&mut self, now: Duration) -> RoundSummary {
        let started = Instant::now();
        let listed = self.listed();
        let listed_set: std::collections::HashSet<&SocketAddr> = listed.iter().collect();
        self.since.retain(|a, _| listed_set.contains(a));
        let mut tasks = tokio::task::JoinSet::new();
        for addr in &listed {
            let client = self.client.clone();
            let since = self.since.get(addr).cloned();
            let (compact, timeout) = (self.config.compact, self.config.fetch_timeout);
            let addr = *addr;
            tasks.spawn(async move {
                let result = match tokio::time::timeout(
                    timeout,
                    fetch(&client, addr, compact, since.as_deref()),
                )
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(FetchError::Timeout(timeout)),
                };
                (addr, result)
            });
        }
        let mut results = Vec::with_capacity(listed.len());
        while let Some(joined) = tasks.join_next().await {
            let Ok((addr, result)) = joined else { continue };
            match result {
                Ok(answer) => {
                    self.metrics.response_bytes.inc_by(answer.bytes as u64);
                    match answer.since {
                        Some(s) => self.since.insert(addr, s),
                        None => self.since.remove(&addr),
                    };
                    results.push((addr, Fetched::Report(answer.report)));
                }
                Err(e) => {
                    debug!(pod = %addr, error = %e, "GET /queue failed");
                    self.metrics
                        .fetch_errors
                        .get_or_create(&PodLabel {
                            pod: addr.to_string(),
                        })
                        .inc();
                    // Next time, everything (the pod may have restarted).
                    self.since.remove(&addr);
                    results.push((addr, Fetched::Failed));
                }
            }
        }
        let table = self.table.load();
        let window_of = |key: &str| -> (Duration, Duration) {
            key.split_once('/')
                .and_then(|(ns, name)| table.get(ns, name))
                .and_then(|r| r.scaling.request_rate)
                .map_or(DEFAULT_WINDOW, |rr| (rr.window, rr.granularity))
        };
        let summary = self.fleet.apply(now, &listed, results, &window_of);
        drop(table);
        let counts = self.fleet.counts(now);
        self.counts.send_if_modified(|c| {
            if **c == counts {
                false
            } else {
                *c = Arc::new(counts);
                true
            }
        });
        self.metrics
            .fetch_duration
            .observe(started.elapsed().as_secs_f64());
        self.metrics.endpoints.set(listed.len() as i64);
        self.metrics.unreachable.set(summary.unreachable as i64);
        self.update_health(summary.answered > 0).await;
        if summary.dropped > 0 {
            info!(
                dropped = summary.dropped,
                pods = self.fleet.pods(),
                "interceptor pods left the count"
            );
        }
        summary
    }

    async fn update_health(&mut self, ok: bool) {
        self.failed_rounds = match (ok, self.failed_rounds) {
            (true, _) => Some(0),
            (false, Some(n)) => Some(n + 1),
            (false, None) => None,
        };
        let serving = self.failed_rounds.is_some_and(|n| n < 2);
        if self.serving == Some(serving) {
            return;
        }
        match (self.serving, serving) {
            (Some(false), true) => info!("a poll round succeeded again: SERVING"),
            (Some(true), false) => {
                warn!("no interceptor answered /queue for 2 rounds: NOT_SERVING");
            }
            _ => {}
        }
        self.serving = Some(serving);
        if let Some(h) = &self.health {
            set_health(h, serving).await;
        }
    }

    /// Polls every tick until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        let origin = Instant::now();
        let mut tick = tokio::time::interval(self.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.poll_once(origin.elapsed()) => {}
            }
        }
    }
}

/// Sets `liveness`, `readiness` and "" to SERVING or NOT_SERVING.
pub async fn set_health(h: &HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in ["", "liveness", "readiness"] {
        h.set_service_status(name, status).await;
    }
}

async fn fetch(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    compact: bool,
    since: Option<&str>,
) -> Result<Answer, FetchError> {
    let uri = match since {
        Some(s) if compact => format!("http://{addr}/queue?since={s}"),
        _ => format!("http://{addr}/queue"),
    };
    let mut req = http::Request::get(uri);
    if compact {
        req = req.header(header::ACCEPT, interceptor::queue::COMPACT_CONTENT_TYPE);
    }
    let req = req
        .body(Empty::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let resp = client
        .request(req)
        .await
        .map_err(|e| FetchError::Http(format!("{e:?}")))?;
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    let is_compact = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(interceptor::queue::COMPACT_CONTENT_TYPE));
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?
        .to_bytes();
    let bytes = body.len();
    if is_compact {
        let text = std::str::from_utf8(&body).map_err(|_| FetchError::Utf8)?;
        let q = interceptor::queue::parse_compact(text)?;
        Ok(Answer {
            since: Some(q.since()),
            report: PodReport {
                instance: Some(q.instance),
                full: q.full,
                changed: q
                    .changed
                    .iter()
                    .map(|(k, c, n)| (k.to_string(), *c, *n))
                    .collect(),
                removed: q.removed.iter().map(|k| k.to_string()).collect(),
            },
            bytes,
        })
    } else {
        let map: HashMap<String, QueueCount> = serde_json::from_slice(&body)?;
        Ok(Answer {
            since: None,
            report: PodReport {
                instance: None,
                full: true,
                changed: map
                    .into_iter()
                    .map(|(k, v)| (k, v.concurrency.max(0), v.request_count))
                    .collect(),
                removed: Vec::new(),
            },
            bytes,
        })
    }
}
