//! The poller: every tick, `GET /queue` on each ready interceptor pod in
//! parallel, each with its own timeout, and fold the answers into the
//! [`Fleet`] counts that the gRPC service reads.
//!
//! The pods are the ready endpoints of the interceptor admin Service, read
//! from the [`sync::ReadyEndpoints`] cache (Kubernetes, a cache URL, or a
//! routes directory). With `compact` on, each request asks for the compact
//! delta form ([`wire::queue`]) from the epoch that pod last answered
//! with; a pod that answers with upstream's JSON instead (an older or Go
//! interceptor) is read as such.
//!
//! Each pod has a [`PodLink`]: its own keep-alive connection, kept from
//! round to round while the pod stays listed. A round splits the links
//! among a few tasks (at most one per runtime worker, at least
//! [`PODS_PER_TASK`] pods each); each task starts its pods' fetches at
//! once, and what has not answered by the fetch timeout has failed (one
//! timer per task, not one per pod). The fetches are not queued behind a
//! concurrency limit: a limit would let hung pods hold the others up past
//! the timeout that bounds a round.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{debug, info, warn};

use crate::Counts;
use crate::fleet::{Fetched, Fleet, RoundSummary};
use crate::link::{Answer, FetchError, PodLink};

/// A round's fetches are split among tasks of at least this many pods:
/// one task does 1,000 compact exchanges in ~30 ms of one core, and
/// every further task costs wake-ups across the runtime's threads.
pub const PODS_PER_TASK: usize = 1000;

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
    fleet: Fleet,
    /// Every listed pod's connection and compact-form position.
    links: HashMap<SocketAddr, PodLink>,
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
        let poller = Poller {
            fleet: Fleet::new(config.keep_unreachable),
            config,
            endpoints,
            table,
            links: HashMap::new(),
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
        // Links of pods no longer listed close here.
        let mut kept = std::mem::take(&mut self.links);
        let links: Vec<PodLink> = listed
            .iter()
            .map(|a| kept.remove(a).unwrap_or_else(|| PodLink::new(*a)))
            .collect();
        drop(kept);
        let mut results = Vec::with_capacity(listed.len());
        for (addr, result) in self.fetch_all(links).await {
            match result {
                Ok(answer) => {
                    self.metrics.response_bytes.inc_by(answer.bytes as u64);
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

    /// Fetches from every pod of `links` at once, on a few tasks of their
    /// own (so a caller's task, e.g. a `block_on`, is woken once per task,
    /// not once per pod); the links come back into `self.links`.
    async fn fetch_all(
        &mut self,
        mut links: Vec<PodLink>,
    ) -> Vec<(SocketAddr, Result<Answer, FetchError>)> {
        let (compact, timeout) = (self.config.compact, self.config.fetch_timeout);
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        let tasks = workers.min(links.len().div_ceil(PODS_PER_TASK)).max(1);
        let per_task = links.len().div_ceil(tasks).max(1);
        let mut running = tokio::task::JoinSet::new();
        while !links.is_empty() {
            let mut mine = links.split_off(links.len().saturating_sub(per_task));
            running.spawn(async move {
                let results = fetch_each(&mut mine, compact, timeout).await;
                (mine, results)
            });
        }
        let mut results = Vec::with_capacity(self.links.capacity());
        while let Some(joined) = running.join_next().await {
            // A task that panicked loses its pods' links: they reconnect.
            let Ok((mine, r)) = joined else { continue };
            results.extend(r);
            self.links.extend(mine.into_iter().map(|l| (l.addr(), l)));
        }
        results
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

/// Fetches from every pod of `links` at once; what has not answered
/// after `timeout` has failed.
async fn fetch_each(
    links: &mut [PodLink],
    compact: bool,
    timeout: Duration,
) -> Vec<(SocketAddr, Result<Answer, FetchError>)> {
    let mut results = Vec::with_capacity(links.len());
    let mut late = Vec::new();
    {
        let mut fetches: FuturesUnordered<_> = links
            .iter_mut()
            .enumerate()
            .map(|(i, link)| async move { (i, link.fetch(compact).await) })
            .collect();
        let mut done = vec![false; fetches.len()];
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = fetches.next() => match next {
                    Some((i, r)) => {
                        done[i] = true;
                        results.push((i, r));
                    }
                    None => break,
                },
                () = &mut deadline => {
                    late.extend(done.iter().enumerate().filter(|(_, d)| !**d).map(|(i, _)| i));
                    break;
                }
            }
        }
    }
    // The late fetches are dropped by now; their links forget their
    // connections (a request may be half done on them) and `since`.
    let mut out: Vec<_> = results
        .into_iter()
        .map(|(i, r)| (links[i].addr(), r))
        .collect();
    for i in late {
        links[i].reset();
        out.push((links[i].addr(), Err(FetchError::Timeout(timeout))));
    }
    out
}
