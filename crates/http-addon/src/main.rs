//! `http-addon`: one binary for every component of the KEDA HTTP Add-on.
//! This file only parses arguments and dispatches to the library crates.

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// A drop-in implementation of the KEDA HTTP Add-on.
///
/// The add-on lets KEDA scale HTTP workloads, including to and from zero:
/// an interceptor fleet routes every request to its workload (holding it
/// while the workload starts), counts the requests in flight, and an
/// external scaler turns those counts into metrics for KEDA. Routes come
/// from HTTPScaledObject (http.keda.sh/v1alpha1) and InterceptorRoute
/// (http.keda.sh/v1beta1) custom resources.
#[derive(Debug, Parser)]
#[command(name = "http-addon", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as multi-document YAML.
    ///
    /// Prints the definitions of HTTPScaledObject (httpscaledobjects.http.keda.sh)
    /// and InterceptorRoute (interceptorroutes.http.keda.sh), with their
    /// structural schemas, validation rules, status subresource and print
    /// columns. Install them with: http-addon crds | kubectl apply -f -
    Crds,

    /// Run an interceptor: the proxy every request to a scaled app passes through.
    ///
    /// It keeps an in-memory copy of the routing table (HTTPScaledObjects and
    /// InterceptorRoutes), from Kubernetes (kubeconfig, in-cluster, or a cache
    /// tier via --source-url) or from a directory of manifests (--routes-dir),
    /// reports ready on the admin port (/readyz) once the first complete copy
    /// is built, and re-lists the table every --resync-interval so that a lost
    /// watch event is repaired within that bound.
    Interceptor(interceptor::InterceptorArgs),

    /// Run the external scaler: KEDA's gRPC externalscaler for the fleet.
    ///
    /// Every --queue-tick-duration it polls GET /queue on each ready
    /// interceptor pod (the EndpointSlices of the interceptor admin Service
    /// --target-admin-service in --target-admin-namespace, port
    /// --target-admin-port), in parallel with a timeout per pod, sums the
    /// in-flight requests per route and computes request rates from the
    /// counters. KEDA points a ScaledObject trigger of type `external-push`
    /// at it (`scalerAddress: <service>.<namespace>:<port>`) with metadata
    /// `httpScaledObject: <name>`, `interceptorRoute: <name>`, or
    /// `interceptorTargetPendingRequests: <n>` (the interceptors' own
    /// ScaledObject). Targets come from the HTTPScaledObjects and
    /// InterceptorRoutes, read from the same sources as the interceptor.
    Scaler(scaler::ScalerArgs),

    /// Run a cache: a read-only Kubernetes list/watch mirror for the fleet.
    ///
    /// It holds one watch per resource (HTTPScaledObjects, InterceptorRoutes,
    /// Services, EndpointSlices) on its upstream (the API server, or another
    /// cache via --upstream-url) and serves the same list/watch protocol to
    /// any number of interceptors and scalers (point them at it with
    /// --source-url), over HTTP/1.1 and HTTP/2, with bearer-token auth.
    Cache(cache::CacheArgs),

    /// Run the operator: HTTPScaledObject -> KEDA ScaledObject.
    ///
    /// For each HTTPScaledObject it applies the KEDA ScaledObject (same name
    /// and namespace, owned by it) that points KEDA at the external scaler,
    /// keeps it as the HTTPScaledObject says (a hand edit of a field it owns
    /// is put back), and reports targetWorkload, targetService and a Ready
    /// condition in the status; InterceptorRoutes get a Ready condition.
    /// Honours the skip-scaledobject-creation and orphan-scaledobject
    /// annotations. With --leader-elect only one replica writes.
    Operator(operator::OperatorArgs),

    /// Run a Kubernetes-compatible API server in memory: a control plane for a laptop.
    ///
    /// Serves the Kubernetes API (discovery, get, list, watch, create,
    /// update, patch with server-side apply, delete with finalizers, status
    /// subresources, garbage collection by owner references) over plain
    /// HTTP on loopback, and writes a kubeconfig for it, so kubectl and the
    /// other programs (--kubeconfig) work without a cluster. It knows the
    /// add-on's resources (HTTPScaledObject, InterceptorRoute, KEDA's
    /// ScaledObject) and the built-ins they use; any other resource is
    /// stored as written. --state-file keeps the objects across restarts.
    Api(apiserver::ApiArgs),

    /// Run the whole add-on on this machine and walk through what it does.
    ///
    /// Starts, as child processes of this binary on loopback: the API server
    /// (http-addon api), the operator, the scaler, one cache and three
    /// interceptors reading through it, and echo backends. Then applies
    /// routes and checks, with measured times: requests reach the right
    /// backend through every interceptor; a new route's propagation; scale
    /// from zero (a held request, the scaler's IsActive and metrics, the pod
    /// turning ready, the request released); a changed and a deleted route;
    /// an API server crash and restart; a bad manifest. Prints a summary;
    /// exits 1 if any step does not hold. Needs no cluster.
    Demo(demo::DemoArgs),

    /// Run an echo backend for tests, demos and benchmarks.
    ///
    /// Answers every request with JSON describing it (method, path, headers),
    /// or with `size` bytes; `delay` holds the answer (query parameters, or
    /// defaults from the flags); echoes websocket messages; serves HTTP/1.1
    /// and h2c (prior knowledge) on one port.
    Echo(echo::EchoArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => print(&api::crds_yaml()),
        Command::Interceptor(args) => serve(interceptor::run(args)),
        Command::Scaler(args) => serve(scaler::run(args)),
        Command::Cache(args) => serve(cache::run(args)),
        Command::Operator(args) => serve(operator::run(args)),
        Command::Api(args) => serve(apiserver::run(args)),
        // The programs log to files; the demo's own output is the walk-through.
        Command::Demo(args) => Ok(runtime()?.block_on(demo::run(args))?),
        Command::Echo(args) => serve(echo::run(args)),
    }
}

/// Runs one of the long-lived programs: logging on, then its future to the end.
fn serve<E>(program: impl Future<Output = Result<(), E>>) -> anyhow::Result<()>
where
    anyhow::Error: From<E>,
{
    init_logging();
    Ok(runtime()?.block_on(program)?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Logs to stderr; `RUST_LOG` filters (default `info`), `KEDA_HTTP_LOG_FORMAT=json` for JSON lines.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // kube's client and watcher log every failed request themselves; our
        // loops report an outage once (kubewatch::SourceHealth) instead.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,kube_client=off,kube_runtime=off")
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if std::env::var("KEDA_HTTP_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Writes to stdout; a reader that stops early (`| head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        result => result.context("writing to standard output"),
    }
}
