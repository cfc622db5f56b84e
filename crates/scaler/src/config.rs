//! The scaler's flags, with upstream's environment variable names and
//! defaults. The routing-source flags are the interceptor's too
//! ([`process::routing_source::SourceArgs`]): one set of names, one
//! precedence.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;
use process::go_bool;
use process::parse_duration as duration;
use process::routing_source::{SOURCE_PRECEDENCE, SourceArgs};

/// Flags of `http-addon scaler`.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = SOURCE_PRECEDENCE)]
pub struct ScalerArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Address the gRPC and metrics servers listen on.
    #[arg(long, env = "KEDA_HTTP_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Port of the gRPC server: KEDA's externalscaler.ExternalScaler service
    /// and grpc.health.v1.Health (service names "liveness", "readiness"
    /// and ""). Upstream's chart sets 9090.
    #[arg(long, env = "KEDA_HTTP_SCALER_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Namespace of the interceptor admin Service whose ready pods are polled.
    #[arg(
        long,
        env = "KEDA_HTTP_SCALER_TARGET_ADMIN_NAMESPACE",
        value_name = "NAMESPACE"
    )]
    pub target_admin_namespace: String,

    /// Name of the interceptor admin Service: its EndpointSlices list the
    /// interceptor pods to poll.
    #[arg(
        long,
        env = "KEDA_HTTP_SCALER_TARGET_ADMIN_SERVICE",
        value_name = "SERVICE"
    )]
    pub target_admin_service: String,

    /// Name of the interceptor Deployment (required, as upstream; only
    /// logged: the pods come from the Service's EndpointSlices).
    #[arg(
        long,
        env = "KEDA_HTTP_SCALER_TARGET_ADMIN_DEPLOYMENT",
        value_name = "DEPLOYMENT"
    )]
    pub target_admin_deployment: String,

    /// Admin port of the interceptor Service (a Service port number; each
    /// pod is dialed on the matching endpoint port).
    #[arg(long, env = "KEDA_HTTP_SCALER_TARGET_ADMIN_PORT", value_name = "PORT")]
    pub target_admin_port: u16,

    /// Time between poll rounds (GET /queue on every interceptor pod).
    #[arg(long, env = "KEDA_HTTP_QUEUE_TICK_DURATION", value_parser = duration, default_value = "500ms")]
    pub queue_tick_duration: Duration,

    /// StreamIsActive and StreamMetricSpec send at least this often
    /// (milliseconds), and at once when the answer changes.
    #[arg(
        long,
        env = "KEDA_HTTP_SCALER_STREAM_INTERVAL_MS",
        default_value_t = 200
    )]
    pub stream_interval_ms: u64,

    /// Bound on one pod's /queue fetch: a hung pod delays a round by at
    /// most this much.
    #[arg(long, env = "KEDA_HTTP_SCALER_FETCH_TIMEOUT", value_parser = duration, default_value = "500ms")]
    pub fetch_timeout: Duration,

    /// A pod that stops answering (but is still listed ready) keeps its
    /// last counts this long, then drops out of the sums.
    #[arg(long, env = "KEDA_HTTP_SCALER_KEEP_UNREACHABLE", value_parser = duration, default_value = "5s")]
    pub keep_unreachable: Duration,

    /// Ask interceptors for the compact /queue form (only what changed
    /// since the last poll); false polls upstream's full JSON every time.
    /// Interceptors that do not know the compact form answer JSON either way.
    #[arg(long, env = "KEDA_HTTP_SCALER_COMPACT_QUEUE", value_parser = go_bool, default_value = "true", action = clap::ArgAction::Set)]
    pub compact_queue: bool,

    /// Port of the Prometheus metrics server (/metrics).
    #[arg(long, env = "OTEL_PROM_EXPORTER_PORT", default_value_t = 2223)]
    pub metrics_port: u16,

    /// Serve Prometheus metrics on the metrics port.
    #[arg(long, env = "OTEL_PROM_EXPORTER_ENABLED", value_parser = go_bool, default_value = "true", action = clap::ArgAction::Set)]
    pub metrics_enabled: bool,

    /// After SIGTERM: health turns NOT_SERVING and streams end at once;
    /// calls in flight get this long to finish.
    #[arg(long, env = "KEDA_HTTP_DRAIN_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub drain_timeout: Duration,
}

impl ScalerArgs {
    /// The poller's settings.
    pub fn poller_config(&self) -> crate::poller::PollerConfig {
        crate::poller::PollerConfig {
            namespace: self.target_admin_namespace.clone(),
            service: self.target_admin_service.clone(),
            port: self.target_admin_port,
            tick: self.queue_tick_duration,
            fetch_timeout: self.fetch_timeout,
            keep_unreachable: self.keep_unreachable,
            compact: self.compact_queue,
        }
    }

    /// Parses `argv` (the first item is the program name) into these flags;
    /// for tests and embedders.
    pub fn try_parse_from<I, T>(argv: I) -> Result<ScalerArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: ScalerArgs,
        }
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.args)
    }
}
