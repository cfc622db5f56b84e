//! The interceptor's configuration: flags with upstream's environment
//! variable names and defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Parses a Go-style duration flag (`500ms`, `1s`, `1m30s`).
pub fn duration(s: &str) -> Result<Duration, String> {
    api::parse_go_duration(s)
}

/// Where the routing table comes from, and how often it is resynced.
#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    /// Read routes from this directory of manifests (HTTPScaledObjects,
    /// InterceptorRoutes, Services, EndpointSlices) instead of Kubernetes.
    #[arg(long, env = "KEDA_HTTP_ROUTES_DIR", value_name = "DIR")]
    pub routes_dir: Option<PathBuf>,

    /// Kubeconfig file to reach the API server (or a cache tier). Without it
    /// (and without --routes-dir or --source-url): $KUBECONFIG, ~/.kube/config,
    /// then the in-cluster service account.
    #[arg(
        long,
        env = "KUBECONFIG",
        value_name = "FILE",
        conflicts_with = "routes_dir"
    )]
    pub kubeconfig: Option<PathBuf>,

    /// URL of a Kubernetes-compatible list/watch server, e.g. a cache tier
    /// (`https://keda-http-cache:9443`).
    #[arg(long, env = "KEDA_HTTP_SOURCE_URL", value_name = "URL", conflicts_with_all = ["routes_dir", "kubeconfig"])]
    pub source_url: Option<String>,

    /// File holding the bearer token for --source-url.
    #[arg(
        long,
        env = "KEDA_HTTP_SOURCE_TOKEN_FILE",
        value_name = "FILE",
        requires = "source_url"
    )]
    pub source_token_file: Option<PathBuf>,

    /// Skip TLS verification of --source-url (testing only).
    #[arg(long, env = "KEDA_HTTP_SOURCE_INSECURE", requires = "source_url")]
    pub source_insecure: bool,

    /// Only watch this namespace (empty: all namespaces).
    #[arg(
        long,
        env = "KEDA_HTTP_WATCH_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = ""
    )]
    pub watch_namespace: String,

    /// How often the whole routing table is listed and compared with the
    /// in-memory copy, so a lost watch event is repaired within this bound.
    #[arg(long, env = "KEDA_HTTP_RESYNC_INTERVAL", value_parser = duration, default_value = "1s")]
    pub resync_interval: Duration,

    /// Server-side timeout of each watch request; a watch silent for this
    /// plus 5 s is treated as stalled and restarted.
    #[arg(long, env = "KEDA_HTTP_WATCH_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub watch_timeout: Duration,
}

/// Flags of `http-addon interceptor`.
#[derive(Args, Debug, Clone)]
pub struct InterceptorArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Address the proxy, admin and metrics servers listen on.
    #[arg(long, env = "KEDA_HTTP_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Port of the proxy (every request to a scaled app).
    #[arg(long, env = "KEDA_HTTP_PROXY_PORT", default_value_t = 8080)]
    pub proxy_port: u16,

    /// Port of the admin server: /queue, /readyz, /livez, /metrics, /routing-table.
    #[arg(long, env = "KEDA_HTTP_ADMIN_PORT", default_value_t = 9090)]
    pub admin_port: u16,

    /// Port of the Prometheus metrics server (/metrics).
    #[arg(long, env = "KEDA_HTTP_METRICS_PORT", default_value_t = 2223)]
    pub metrics_port: u16,
}
