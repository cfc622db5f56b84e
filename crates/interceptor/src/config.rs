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

    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// Parses a boolean the way Go's `strconv.ParseBool` does (`1`, `t`, `true`, ...).
pub fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean {s:?}")),
    }
}

/// Flags of the proxy: timeouts, pooling, cold start, TLS, shutdown, logging.
#[derive(Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Send requests to a ready endpoint address (from the EndpointSlices)
    /// instead of the Service's DNS name. Implied with --routes-dir.
    #[arg(long, env = "KEDA_HTTP_DIRECT_POD_ROUTING", value_parser = go_bool, default_value = "false", action = clap::ArgAction::Set)]
    pub direct_pod_routing: bool,

    /// How long a request waits for its Service to get a ready endpoint
    /// (0s: as long as the request timeout allows).
    #[arg(long, env = "KEDA_HTTP_READINESS_TIMEOUT", value_parser = duration)]
    pub readiness_timeout: Option<Duration>,

    /// Legacy name of --readiness-timeout.
    #[arg(long, env = "KEDA_CONDITION_WAIT_TIMEOUT", value_parser = duration, hide = true)]
    pub condition_wait_timeout: Option<Duration>,

    /// Time allowed for the backend's response headers.
    #[arg(long, env = "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", value_parser = duration)]
    pub response_header_timeout: Option<Duration>,

    /// Legacy name of --response-header-timeout.
    #[arg(long, env = "KEDA_RESPONSE_HEADER_TIMEOUT", value_parser = duration, hide = true)]
    pub legacy_response_header_timeout: Option<Duration>,

    /// Whole-request timeout, from arrival to the end of the response body;
    /// a body still streaming then is cut off (0s: none). Websocket tunnels
    /// are not bounded by it.
    #[arg(long, env = "KEDA_HTTP_REQUEST_TIMEOUT", value_parser = duration, default_value = "0s")]
    pub request_timeout: Duration,

    /// Timeout of one dial attempt; attempts repeat every 50 ms until the
    /// request's deadline.
    #[arg(long, env = "KEDA_HTTP_CONNECT_TIMEOUT", value_parser = duration, default_value = "500ms")]
    pub connect_timeout: Duration,

    /// Idle keep-alive connections kept to all backends together.
    #[arg(long, env = "KEDA_HTTP_MAX_IDLE_CONNS", default_value_t = 1000)]
    pub max_idle_conns: usize,

    /// Idle keep-alive connections kept per backend address.
    #[arg(long, env = "KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST", default_value_t = 200)]
    pub max_idle_conns_per_host: usize,

    /// Threads serving proxy connections, each with its own event loop and
    /// backend connection pools (0: one per CPU core).
    #[arg(long, env = "KEDA_HTTP_PROXY_WORKERS", default_value_t = 0)]
    pub proxy_workers: usize,

    /// Add `X-KEDA-HTTP-Cold-Start: true|false` to forwarded responses.
    #[arg(long, env = "KEDA_HTTP_ENABLE_COLD_START_HEADER", value_parser = go_bool, default_value = "true", action = clap::ArgAction::Set)]
    pub enable_cold_start_header: bool,

    /// Requests a route may hold in a cold-start wait on this replica; more
    /// are answered 503 (0: unlimited).
    #[arg(
        long,
        env = "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS",
        default_value_t = 0
    )]
    pub cold_start_max_pending_requests: u64,

    /// Log one line per request (method, host, path, status, duration, route).
    #[arg(long, env = "KEDA_HTTP_LOG_REQUESTS", value_parser = go_bool, default_value = "false", action = clap::ArgAction::Set)]
    pub log_requests: bool,

    /// After SIGTERM, keep serving (with /readyz 503) this long before
    /// closing the listeners.
    #[arg(long, env = "KEDA_HTTP_SHUTDOWN_DELAY", value_parser = duration, default_value = "5s")]
    pub shutdown_delay: Duration,

    /// After the listeners close, wait at most this long for in-flight requests.
    #[arg(long, env = "KEDA_HTTP_DRAIN_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// Also serve the proxy over TLS.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_ENABLED", value_parser = go_bool, default_value = "false", action = clap::ArgAction::Set)]
    pub tls_enabled: bool,

    /// Port of the TLS proxy.
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_PORT", default_value_t = 8443)]
    pub tls_port: u16,

    /// Default certificate (PEM chain).
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_CERT_PATH",
        default_value = "/certs/tls.crt"
    )]
    pub tls_cert_path: PathBuf,

    /// Key of the default certificate (PEM).
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_KEY_PATH",
        default_value = "/certs/tls.key"
    )]
    pub tls_key_path: PathBuf,

    /// Comma-separated directories or files holding more certificate/key
    /// pairs, chosen by SNI from their DNS names (wildcards too).
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_CERT_STORE_PATHS", default_value = "")]
    pub tls_cert_store_paths: String,
}

/// The response-header timeout when nothing is configured (upstream's default).
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(300);

impl ProxyArgs {
    /// Proxy worker threads in force: the flag, or one per CPU core.
    pub fn workers(&self) -> usize {
        match self.proxy_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The readiness timeout in force (new name first, then the legacy one);
    /// zero means "until the request's deadline".
    pub fn readiness_timeout(&self) -> Duration {
        self.readiness_timeout
            .or(self.condition_wait_timeout)
            .unwrap_or(Duration::ZERO)
    }

    /// The response-header timeout in force; zero disables it.
    pub fn response_header_timeout(&self) -> Duration {
        self.response_header_timeout
            .or(self.legacy_response_header_timeout)
            .unwrap_or(DEFAULT_RESPONSE_HEADER_TIMEOUT)
    }
}
