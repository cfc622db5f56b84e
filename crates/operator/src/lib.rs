//! `http-addon operator`: turns each HTTPScaledObject into the KEDA
//! `ScaledObject` that points KEDA at the external scaler, and reports on
//! both routing kinds in their status.
//!
//! Two kube-runtime `Controller`s (`reconcile`): HTTPScaledObjects, which
//! own their ScaledObjects (server-side apply with our field manager, so a
//! hand edit of a field we own is put back and fields we do not own are
//! left alone), and InterceptorRoutes (validation into `Ready`). Objects
//! are read as dynamic objects and parsed by `api`, so one malformed object
//! gets `Ready=False` naming its field instead of stopping the watch.
//! With `--leader-elect`, only the holder of the Lease `http-add-on.keda.sh`
//! runs the controllers (`leader`); the others wait.
//!
//! Modules: `config` (flags and upstream's environment), `scaled_object`
//! (the desired ScaledObject, a pure function), `reconcile`, `leader`.

pub mod config;
pub mod leader;
mod reconcile;
pub mod scaled_object;

use std::convert::Infallible;
use std::sync::Arc;

use http::StatusCode;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{OperatorArgs, Settings};
pub use reconcile::{FIELD_MANAGER, OperatorMetrics};

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The environment is not usable.
    #[error(transparent)]
    Settings(#[from] config::SettingsError),
    /// No API server could be chosen.
    #[error(transparent)]
    Source(#[from] process::source::ResolveError),
    /// The client could not be built.
    #[error("Kubernetes client: {0}")]
    Client(#[from] process::kube::ClientError),
    /// A port could not be bound.
    #[error(transparent)]
    Listen(#[from] process::http::BindError),
    /// Another process took the lease while this one led: exit, so that
    /// two writers never overlap (the pod restarts as a candidate).
    #[error("leader election lost (lease {})", leader::LEASE_NAME)]
    LeadershipLost,
}

/// Runs `http-addon operator` until SIGTERM / SIGINT.
pub async fn run(args: OperatorArgs) -> Result<(), OperatorError> {
    let settings = Settings::from_env(process::source::process_env)?;
    for name in &settings.deprecated {
        warn!(variable = %name, "deprecated environment variable in use");
    }
    let choice = args.api_source(process::source::process_env)?;
    info!(api = %choice.source, from = %choice.origin, "API server chosen");
    let options = process::kube::UrlOptions {
        token_file: args.api_token_file.clone(),
        ..Default::default()
    };
    let client = process::kube::client(&choice.source, &options).await?;
    let cancel = CancellationToken::new();
    let mut signals = process::Signals::new();
    let run = run_with(client, settings, &args, cancel.clone());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r,
        sig = signals.recv() => {
            info!(signal = sig, "shutting down");
            cancel.cancel();
            // A second signal aborts at once.
            signals.graceful(run).await
        }
    }
}

/// Runs the operator with this client until `cancel`.
pub async fn run_with(
    client: kube::Client,
    settings: Settings,
    args: &OperatorArgs,
    cancel: CancellationToken,
) -> Result<(), OperatorError> {
    let mut registry = Registry::default();
    let metrics = OperatorMetrics::new(&mut registry);
    let registry = Arc::new(registry);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut servers = tokio::task::JoinSet::new();
    let mut serve = |addr: Option<std::net::SocketAddr>,
                     handler: fn(&Ports, &str) -> Response|
     -> Result<(), OperatorError> {
        let Some(addr) = addr else { return Ok(()) };
        let (listener, _) = process::http::bind(addr)?;
        let ports = Ports {
            registry: registry.clone(),
            ready: ready.clone(),
        };
        servers.spawn(process::http::serve(
            listener,
            move |req: http::Request<hyper::body::Incoming>| {
                let resp = handler(&ports, req.uri().path()).map(Full::new);
                async move { Ok::<_, Infallible>(resp) }
            },
            cancel.clone(),
        ));
        Ok(())
    };
    serve(args.metrics_bind_address.0, metrics_port)?;
    serve(args.health_probe_bind_address.0, health_port)?;
    // Ready as soon as the process serves: a standby is healthy too.
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let result = if args.leader_elect {
        let mut elector = leader::Elector::new(
            client.clone(),
            &settings.namespace,
            leader::identity(),
            settings.lease,
        );
        metrics.leader.set(0);
        if !elector.acquire(&cancel).await {
            Ok(())
        } else {
            metrics.leader.set(1);
            let lost = CancellationToken::new();
            let controllers = reconcile::run(client, settings, metrics.clone(), lost.clone());
            let held = async {
                let held = elector.hold(&cancel).await;
                lost.cancel();
                held
            };
            let ((), held) = tokio::join!(controllers, held);
            metrics.leader.set(0);
            elector.release().await;
            match held {
                leader::Held::Cancelled => Ok(()),
                leader::Held::Lost => Err(OperatorError::LeadershipLost),
            }
        }
    } else {
        reconcile::run(client, settings, metrics, cancel.clone()).await;
        Ok(())
    };
    cancel.cancel();
    while servers.join_next().await.is_some() {}
    result
}

type Response = http::Response<bytes::Bytes>;

/// What the metrics and health ports read.
#[derive(Clone)]
struct Ports {
    registry: Arc<Registry>,
    ready: Arc<std::sync::atomic::AtomicBool>,
}

/// `/metrics` (controller-runtime's names).
fn metrics_port(ports: &Ports, path: &str) -> Response {
    match path {
        "/metrics" => process::http::metrics_response(&ports.registry),
        _ => process::http::text_response(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/healthz` (the process serves) and `/readyz` (it is set up).
fn health_port(ports: &Ports, path: &str) -> Response {
    let ready = ports.ready.load(std::sync::atomic::Ordering::Relaxed);
    match path {
        "/healthz" => process::http::text_response(StatusCode::OK, "ok\n"),
        "/readyz" if ready => process::http::text_response(StatusCode::OK, "ok\n"),
        "/readyz" => process::http::text_response(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        _ => process::http::text_response(StatusCode::NOT_FOUND, "not found\n"),
    }
}
