//! The interceptor: every request to a scaled app passes through it.
//!
//! Requests enter on the proxy port (HTTP/1.1, HTTP/2, h2c; optionally TLS
//! with certificates chosen by SNI), are matched against the routing table
//! that the [`sync`] loop keeps equal to the central one, are counted per
//! route for their whole life, wait through a cold start if the app has no
//! ready endpoint, and leave towards the app's Service (or a ready pod) over
//! pooled connections ([`proxy`]). The admin port serves `/queue`
//! (pending-request counts the scaler sums), `/readyz`, `/livez`, `/metrics`
//! and `/routing-table`; the metrics port (unless turned off) serves `/metrics`.
//!
//! ```text
//! client -> [proxy] lookup (one atomic load) -> count -> cold-start wait
//!                  -> pooled client -> backend -> streamed response -> uncount
//! ```

pub mod admin;
pub mod backend;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod queue;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{InterceptorArgs, ProxyArgs, SourceArgs};
use process::routing_source::StartError as Start;

/// Why the interceptor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The routing source could not be set up, or a port not be bound.
    #[error(transparent)]
    Start(#[from] process::routing_source::StartError),
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The proxy's worker threads could not be started.
    #[error("cannot start the proxy workers: {0}")]
    Workers(std::io::Error),
}

/// A running interceptor.
#[derive(Debug)]
pub struct Interceptor {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the TLS proxy listens, when enabled.
    pub tls_addr: Option<SocketAddr>,
    /// Where the admin server listens.
    pub admin_addr: SocketAddr,
    /// Where the metrics server listens (none with `OTEL_PROM_EXPORTER_ENABLED=false`).
    pub metrics_addr: Option<SocketAddr>,
    /// The sync loop (table, endpoints, metrics).
    pub sync: sync::SyncHandle,
    /// Shared state of the admin server.
    pub admin: Arc<admin::AdminState>,
    /// The request path.
    pub proxy: Arc<proxy::Proxy>,
    /// Proxy settings.
    pub proxy_args: ProxyArgs,
    /// Stops the proxy listeners (connections then drain).
    stop_proxy: CancellationToken,
    /// The threads serving proxy connections.
    workers: Arc<server::ProxyWorkers>,
    /// The proxy accept loops; each ends once its connections are drained.
    proxy_servers: Vec<tokio::task::JoinHandle<()>>,
    /// Cancels the servers when the interceptor is dropped.
    _guard: tokio_util::sync::DropGuard,
}

impl Interceptor {
    /// Starts the sync loop and the servers. Ports may be 0 (tests).
    pub async fn start(args: &InterceptorArgs) -> Result<Interceptor, StartError> {
        let source = args.source.build().await.map_err(Start::from)?;
        let routes_dir = matches!(source, sync::Source::Directory(_));
        if args.proxy.tls_skip_verify {
            warn!(
                "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY=true has no effect: upstream uses it for TLS \
                 to backends, and this interceptor talks plain HTTP/1.1 or h2c to them"
            );
        }
        let tls_config = if args.proxy.tls_enabled {
            let policy = tls::TlsPolicy::from_args(&args.proxy)?;
            let store = tls::CertStore::load(
                &args.proxy.tls_cert_path,
                &args.proxy.tls_key_path,
                &tls::store_paths(&args.proxy.tls_cert_store_paths),
            )?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(
                store.server_config(&policy)?,
            )))
        } else {
            None
        };
        let bind = |port| {
            process::http::bind(SocketAddr::new(args.bind_address, port)).map_err(Start::from)
        };
        let (proxy_listener, proxy_addr) = bind(args.proxy_port)?;
        let (tls_listener, tls_addr) = (tls_config.as_ref())
            .map(|_| bind(args.proxy.tls_port))
            .transpose()?
            .unzip();
        let (admin_listener, admin_addr) = bind(args.admin_port)?;
        let metrics_port = args.metrics_port();
        let (metrics_listener, metrics_addr) = (args.metrics_enabled)
            .then(|| bind(metrics_port))
            .transpose()?
            .unzip();
        let mut registry = Registry::default();
        let sync = sync::start(source, args.source.sync_config(), &mut registry);
        let proxy_metrics = metrics::ProxyMetrics::new(sync.table.clone(), &mut registry);
        let connection_metrics = process::http::ConnectionMetrics::default();
        connection_metrics.register(
            registry.sub_registry_with_prefix("interceptor_proxy"),
            "proxy client",
        );
        let admin = Arc::new(admin::AdminState {
            table: sync.table.clone(),
            endpoints: sync.endpoints.clone(),
            registry: Arc::new(registry),
            draining: Arc::new(AtomicBool::new(false)),
            queue_history: Arc::default(),
        });
        let cancel = CancellationToken::new();
        let inflight = Arc::new(body::Inflight::default());
        let proxy_config = proxy::ProxyConfig::from_args(&args.proxy, routes_dir);
        let new_proxy = || {
            Arc::new(proxy::Proxy::new(
                sync.table.clone(),
                sync.endpoints.clone(),
                proxy_metrics.clone(),
                inflight.clone(),
                proxy_config.clone(),
            ))
        };
        let proxy = new_proxy();
        let proxies = (0..args.proxy.workers())
            .map(|i| if i == 0 { proxy.clone() } else { new_proxy() })
            .collect();
        let stop_proxy = cancel.child_token();
        let proxy_server = Arc::new(server::proxy_server(
            args.proxy.limits.limits(),
            connection_metrics,
        ));
        let workers = Arc::new(
            server::ProxyWorkers::start(
                proxies,
                proxy_server.clone(),
                tls_config,
                stop_proxy.clone(),
                cancel.clone(),
            )
            .map_err(StartError::Workers)?,
        );
        let mut proxy_servers = vec![tokio::spawn(server::serve_proxy(
            proxy_listener,
            proxy_server.clone(),
            workers.clone(),
            false,
            stop_proxy.clone(),
        ))];
        if let Some(l) = tls_listener {
            proxy_servers.push(tokio::spawn(server::serve_proxy(
                l,
                proxy_server,
                workers.clone(),
                true,
                stop_proxy.clone(),
            )));
        }
        let admin_handler = {
            let admin = admin.clone();
            move |req| admin::handle(admin.clone(), req)
        };
        tokio::spawn(process::http::serve(
            admin_listener,
            admin_handler.clone(),
            cancel.clone(),
        ));
        if let Some(l) = metrics_listener {
            tokio::spawn(process::http::serve(l, admin_handler, cancel.clone()));
        }
        info!(%proxy_addr, ?tls_addr, %admin_addr, ?metrics_addr, "interceptor started");
        Ok(Interceptor {
            proxy_addr,
            tls_addr,
            admin_addr,
            metrics_addr,
            sync,
            admin,
            proxy,
            proxy_args: args.proxy.clone(),
            stop_proxy,
            workers,
            proxy_servers,
            _guard: cancel.drop_guard(),
        })
    }

    /// Graceful shutdown: `/readyz` turns 503 at once; the proxy keeps
    /// serving for the shutdown delay (so load balancers notice), then stops
    /// accepting and waits up to the drain timeout for in-flight requests
    /// (websockets included); then everything stops.
    pub async fn shutdown(mut self) {
        self.admin.draining.store(true, Ordering::Relaxed);
        info!(delay = ?self.proxy_args.shutdown_delay, "draining: readyz reports 503");
        tokio::time::sleep(self.proxy_args.shutdown_delay).await;
        self.stop_proxy.cancel();
        let inflight = self.proxy.inflight().clone();
        let servers = futures::future::join_all(self.proxy_servers.iter_mut());
        let drained = tokio::time::timeout(self.proxy_args.drain_timeout, async {
            servers.await;
            self.workers.wait().await;
            inflight.wait_idle().await;
        })
        .await;
        match drained {
            Ok(()) => info!("drained; stopping"),
            Err(_) => warn!(
                in_flight = inflight.count(),
                timeout = ?self.proxy_args.drain_timeout,
                "drain timeout passed with requests in flight; stopping anyway"
            ),
        }
        self.stop().await;
    }

    /// Stops the servers and the sync loop.
    pub async fn stop(self) {
        let Interceptor {
            sync,
            _guard,
            proxy_servers,
            ..
        } = self;
        drop(_guard);
        for s in proxy_servers {
            s.abort();
        }
        sync.shutdown().await;
    }
}

/// Runs an interceptor until SIGTERM or SIGINT, then shuts it down
/// gracefully; a second signal exits at once.
pub async fn run(args: InterceptorArgs) -> Result<(), StartError> {
    let mut signals = process::Signals::new();
    let interceptor = Interceptor::start(&args).await?;
    let signal = signals.recv().await;
    info!(signal, "shutting down; a second signal exits at once");
    signals.graceful(interceptor.shutdown()).await;
    Ok(())
}
