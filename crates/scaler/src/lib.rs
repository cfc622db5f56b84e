//! The external scaler: turns the interceptor fleet's pending-request
//! counts into metrics for KEDA, over KEDA's `externalscaler.ExternalScaler`
//! gRPC contract.
//!
//! Data enters from two sides: the routing table and the interceptor admin
//! Service's EndpointSlices, through the same [`sync`] machinery as the
//! interceptor (Kubernetes, a cache URL, or a routes directory); and every
//! tick the [`poller`] reads `/queue` from each ready interceptor pod and
//! folds the answers into the [`fleet`] counts (summed concurrency, request
//! rates from counter deltas). It leaves as gRPC answers ([`service`]): the
//! metric specs and values for each ScaledObject's trigger
//! ([`metadata`]), `IsActive`, and the push streams `StreamIsActive` and
//! `StreamMetricSpec`; plus `grpc.health.v1.Health` and Prometheus metrics.
//!
//! ```text
//! EndpointSlices ──> ready interceptor pods ──> poller: GET /queue (parallel, timeouts)
//!                                                  │
//! routing table ──> targets, windows ──> fleet counts (Arc snapshot, watch channel)
//!                                                  │
//!                       KEDA <── gRPC ExternalScaler + Health <──┘
//! ```

pub mod config;
pub mod fleet;
pub mod link;
pub mod metadata;
pub mod poller;
pub mod rate;
pub mod service;

/// The generated messages, server and client of `proto/externalscaler.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::ScalerArgs;
pub use poller::Poller;
pub use service::ScalerService;

/// One route's counts summed over the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeyCounts {
    /// Requests in flight on every interceptor.
    pub concurrency: i64,
    /// Requests per second over the route's window.
    pub rate: f64,
}

/// The fleet's counts, published after every poll round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts {
    /// Per route key (`namespace/name`); routes with nothing in flight and
    /// no rate are absent.
    pub by_key: HashMap<Arc<str>, KeyCounts>,
    /// Every in-flight request on every interceptor.
    pub total_concurrency: i64,
}

impl Counts {
    /// The counts of `key` (zero when absent).
    pub fn get(&self, key: &str) -> KeyCounts {
        self.by_key.get(key).copied().unwrap_or_default()
    }
}

/// Why the scaler could not start: its routing source or a port.
pub use process::routing_source::StartError;

/// Whether the poller ticks on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ticking {
    /// Every `--queue-tick-duration` (the program).
    Auto,
    /// Never: the caller drives [`Scaler::poller`] (tests with a simulated clock).
    Manual,
}

/// A running scaler.
#[derive(Debug)]
pub struct Scaler {
    /// Where the gRPC server listens.
    pub grpc_addr: SocketAddr,
    /// Where the metrics server listens, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    /// The sync loop (routing table, endpoints).
    pub sync: sync::SyncHandle,
    /// The poller, with [`Ticking::Manual`].
    pub poller: Option<Poller>,
    health: tonic_health::server::HealthReporter,
    /// Ends the push streams.
    streams: CancellationToken,
    /// Stops the gRPC server (graceful).
    stop_grpc: CancellationToken,
    /// Stops the poller and the metrics server.
    stop_rest: CancellationToken,
    grpc: tokio::task::JoinHandle<()>,
    drain_timeout: Duration,
}

impl Scaler {
    /// Starts the sync loop, the poller and the servers. Ports may be 0.
    pub async fn start(args: &ScalerArgs, ticking: Ticking) -> Result<Scaler, StartError> {
        let source = args.source.build().await?;
        let bind = |port| process::http::bind(SocketAddr::new(args.bind_address, port));
        let (grpc_listener, grpc_addr) = bind(args.port)?;
        let (metrics_listener, metrics_addr) = (args.metrics_enabled)
            .then(|| bind(args.metrics_port))
            .transpose()?
            .unzip();

        let mut registry = Registry::default();
        let sync_config = sync::SyncConfig {
            // The interceptors' static bodies are none of the scaler's business.
            response_bodies: false,
            ..args.source.sync_config()
        };
        let sync = sync::start(source, sync_config, &mut registry);
        let (mut poller, counts) = Poller::new(
            args.poller_config(),
            sync.endpoints.clone(),
            sync.table.clone(),
            &mut registry,
        );
        let (health, health_service) = tonic_health::server::health_reporter();
        poller::set_health(&health, false).await;
        poller.set_health(health.clone());

        let streams = CancellationToken::new();
        let stop_grpc = CancellationToken::new();
        let stop_rest = CancellationToken::new();
        let service = ScalerService::new(
            sync.table.clone(),
            counts,
            Duration::from_millis(args.stream_interval_ms.max(1)),
            streams.clone(),
        );
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        let shutdown = stop_grpc.clone().cancelled_owned();
        let grpc = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(proto::external_scaler_server::ExternalScalerServer::new(
                    service,
                ))
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await;
            if let Err(e) = served {
                warn!(error = %e, "gRPC server ended with an error");
            }
        });

        if let Some(l) = metrics_listener {
            let registry = Arc::new(registry);
            tokio::spawn(process::http::serve(
                l,
                move |_req| {
                    let registry = registry.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            process::http::metrics_response(&registry)
                                .map(http_body_util::Full::new),
                        )
                    }
                },
                stop_rest.clone(),
            ));
        }
        let poller = match ticking {
            Ticking::Auto => {
                tokio::spawn(poller.run(stop_rest.clone()));
                None
            }
            Ticking::Manual => Some(poller),
        };
        info!(
            %grpc_addr,
            ?metrics_addr,
            interceptors = format!(
                "{}/{}:{} (deployment {})",
                args.target_admin_namespace,
                args.target_admin_service,
                args.target_admin_port,
                args.target_admin_deployment
            ),
            "scaler started"
        );
        Ok(Scaler {
            grpc_addr,
            metrics_addr,
            sync,
            poller,
            health,
            streams,
            stop_grpc,
            stop_rest,
            grpc,
            drain_timeout: args.drain_timeout,
        })
    }

    /// Graceful shutdown: health NOT_SERVING, push streams end, the gRPC
    /// server stops accepting and lets calls in flight finish (bounded by
    /// the drain timeout), then the poller and the sync loop stop.
    pub async fn shutdown(mut self) {
        poller::set_health(&self.health, false).await;
        self.streams.cancel();
        self.stop_grpc.cancel();
        if tokio::time::timeout(self.drain_timeout, &mut self.grpc)
            .await
            .is_err()
        {
            warn!(timeout = ?self.drain_timeout, "gRPC calls still open after the drain timeout; stopping anyway");
            self.grpc.abort();
        }
        self.stop_rest.cancel();
        self.sync.shutdown().await;
        info!("scaler stopped");
    }
}

/// Runs a scaler until SIGTERM or SIGINT, then shuts it down gracefully; a
/// second signal exits at once.
pub async fn run(args: ScalerArgs) -> Result<(), StartError> {
    let mut signals = process::Signals::new();
    let scaler = Scaler::start(&args, Ticking::Auto).await?;
    let signal = signals.recv().await;
    info!(signal, "shutting down; a second signal exits at once");
    signals.graceful(scaler.shutdown()).await;
    Ok(())
}
