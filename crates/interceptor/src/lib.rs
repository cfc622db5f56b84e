//! The interceptor: every request to a scaled app passes through it.
//!
//! Requests enter on the proxy port, are matched against the routing table
//! that the [`sync`] loop keeps equal to the central one, and leave towards
//! the app's Service. The admin port serves `/queue` (pending-request counts
//! the scaler sums), `/readyz`, `/livez`, `/metrics` and `/routing-table`.

pub mod admin;
pub mod config;
pub mod server;
pub mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use config::{InterceptorArgs, SourceArgs};

/// Why the interceptor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The routing source could not be set up.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// A port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running interceptor.
#[derive(Debug)]
pub struct Interceptor {
    /// Where the admin server listens.
    pub admin_addr: SocketAddr,
    /// Where the metrics server listens.
    pub metrics_addr: SocketAddr,
    /// The sync loop (table, endpoints, metrics).
    pub sync: sync::SyncHandle,
    /// Shared state of the admin server.
    pub admin: Arc<admin::AdminState>,
    /// Cancels the servers when the interceptor is dropped.
    _guard: tokio_util::sync::DropGuard,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

impl Interceptor {
    /// Starts the sync loop and the servers. Ports may be 0 (tests).
    pub async fn start(args: &InterceptorArgs) -> Result<Interceptor, StartError> {
        let source = args.source.build().await?;
        let admin_listener = bind(SocketAddr::new(args.bind_address, args.admin_port)).await?;
        let metrics_listener = bind(SocketAddr::new(args.bind_address, args.metrics_port)).await?;
        let mut registry = Registry::default();
        let sync = sync::start(source, args.source.sync_config(), &mut registry);
        let admin = Arc::new(admin::AdminState {
            table: sync.table.clone(),
            endpoints: sync.endpoints.clone(),
            registry: Arc::new(registry),
            draining: Arc::new(AtomicBool::new(false)),
        });
        let cancel = CancellationToken::new();
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: SocketAddr::new(args.bind_address, args.admin_port),
                source,
            })?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: SocketAddr::new(args.bind_address, args.metrics_port),
                source,
            })?;
        tokio::spawn(server::serve(
            admin_listener,
            admin.clone(),
            admin::handle,
            cancel.clone(),
        ));
        tokio::spawn(server::serve(
            metrics_listener,
            admin.clone(),
            admin::handle,
            cancel.clone(),
        ));
        info!(%admin_addr, %metrics_addr, "interceptor started");
        Ok(Interceptor {
            admin_addr,
            metrics_addr,
            sync,
            admin,
            _guard: cancel.drop_guard(),
        })
    }

    /// Stops the servers and the sync loop.
    pub async fn stop(self) {
        let Interceptor { sync, _guard, .. } = self;
        drop(_guard);
        sync.shutdown().await;
    }
}

/// Runs an interceptor until SIGTERM or SIGINT.
pub async fn run(args: InterceptorArgs) -> Result<(), StartError> {
    let interceptor = Interceptor::start(&args).await?;
    shutdown_signal().await;
    info!("shutting down");
    interceptor
        .admin
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    interceptor.stop().await;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
