//! The interceptor's configuration: flags with upstream's environment
//! variable names and defaults.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use process::go_bool;
use process::parse_duration as duration;
/// The routing-source flags, shared with the scaler.
pub use process::routing_source::{SOURCE_PRECEDENCE, SourceArgs};

/// Flags of `http-addon interceptor`.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = SOURCE_PRECEDENCE)]
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

    /// Port of the Prometheus metrics server (/metrics) [default: 2223].
    /// `KEDA_HTTP_METRICS_PORT` is an older name, used only when neither
    /// this flag nor `OTEL_PROM_EXPORTER_PORT` is set.
    #[arg(long, env = "OTEL_PROM_EXPORTER_PORT", value_name = "PORT")]
    pub metrics_port: Option<u16>,

    /// The older name of --metrics-port (see there).
    #[arg(long, env = "KEDA_HTTP_METRICS_PORT", value_name = "PORT", hide = true)]
    pub legacy_metrics_port: Option<u16>,

    /// Serve Prometheus metrics on the metrics port (false: no metrics
    /// listener; the admin port still serves /metrics).
    #[arg(long, env = "OTEL_PROM_EXPORTER_ENABLED", value_parser = go_bool, default_value = "true", action = clap::ArgAction::Set)]
    pub metrics_enabled: bool,

    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// The metrics port when nothing is configured (upstream's default).
pub const DEFAULT_METRICS_PORT: u16 = 2223;

impl InterceptorArgs {
    /// The metrics port in force: `--metrics-port` / `OTEL_PROM_EXPORTER_PORT`,
    /// else the older `KEDA_HTTP_METRICS_PORT`, else 2223.
    pub fn metrics_port(&self) -> u16 {
        self.metrics_port
            .or(self.legacy_metrics_port)
            .unwrap_or(DEFAULT_METRICS_PORT)
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

    /// Legacy name of --readiness-timeout; when above zero it wins (as upstream).
    #[arg(long, env = "KEDA_CONDITION_WAIT_TIMEOUT", value_parser = duration, hide = true)]
    pub condition_wait_timeout: Option<Duration>,

    /// Time allowed for the backend's response headers.
    #[arg(long, env = "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT", value_parser = duration)]
    pub response_header_timeout: Option<Duration>,

    /// Legacy name of --response-header-timeout; when above zero it wins (as upstream).
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

    /// Requests all routes together may hold in cold-start waits on this
    /// replica; more are answered 503 (0: unlimited). Ours, not upstream's.
    #[arg(
        long,
        env = "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS_TOTAL",
        default_value_t = 10_000
    )]
    pub cold_start_max_pending_requests_total: u64,

    /// Connection limits of the proxy ports.
    #[command(flatten)]
    pub limits: process::http::LimitArgs,

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

    /// Accepted for compatibility and without effect: upstream uses it to
    /// skip verifying backends' certificates, and this interceptor talks
    /// plain HTTP/1.1 or h2c to backends (a warning is logged when true).
    #[arg(long, env = "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY", value_parser = go_bool, default_value = "false", action = clap::ArgAction::Set)]
    pub tls_skip_verify: bool,

    /// Lowest TLS version the TLS proxy accepts: `VersionTLS12` (`1.2`) or
    /// `VersionTLS13` (`1.3`); empty: 1.2.
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_MIN_VERSION",
        value_name = "VERSION",
        default_value = ""
    )]
    pub tls_min_version: String,

    /// Highest TLS version the TLS proxy accepts (values as for the
    /// minimum); empty: 1.3.
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_MAX_VERSION",
        value_name = "VERSION",
        default_value = ""
    )]
    pub tls_max_version: String,

    /// Comma-separated Go cipher suite names (`TLS_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, ...); empty: all that
    /// rustls offers. As in Go, a list without TLS 1.3 suites leaves TLS 1.3
    /// on its defaults.
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES",
        value_name = "SUITES",
        default_value = ""
    )]
    pub tls_cipher_suites: String,

    /// Comma-separated Go curve names, in order of preference: `X25519`,
    /// `CurveP256`, `CurveP384` (`CurveP521` is not supported); empty: all three.
    #[arg(
        long,
        env = "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES",
        value_name = "CURVES",
        default_value = ""
    )]
    pub tls_curve_preferences: String,
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

    /// The readiness timeout in force (see [`prefer_legacy`]); zero means
    /// "until the request's deadline".
    pub fn readiness_timeout(&self) -> Duration {
        resolve_legacy(
            (self.readiness_timeout, "KEDA_HTTP_READINESS_TIMEOUT"),
            (self.condition_wait_timeout, "KEDA_CONDITION_WAIT_TIMEOUT"),
            Duration::ZERO,
        )
    }

    /// The response-header timeout in force (see [`prefer_legacy`]); zero
    /// disables it.
    pub fn response_header_timeout(&self) -> Duration {
        resolve_legacy(
            (
                self.response_header_timeout,
                "KEDA_HTTP_RESPONSE_HEADER_TIMEOUT",
            ),
            (
                self.legacy_response_header_timeout,
                "KEDA_RESPONSE_HEADER_TIMEOUT",
            ),
            DEFAULT_RESPONSE_HEADER_TIMEOUT,
        )
    }
}

/// Upstream's precedence between a timeout's current variable and its
/// legacy one: the legacy value wins when set and above zero (so a
/// deployment that still sets it keeps its behaviour), else the current
/// value, else `default`. Returns the value and whether the legacy one won.
pub fn prefer_legacy(
    current: Option<Duration>,
    legacy: Option<Duration>,
    default: Duration,
) -> (Duration, bool) {
    match legacy {
        Some(l) if !l.is_zero() => (l, true),
        _ => (current.unwrap_or(default), false),
    }
}

/// [`prefer_legacy`], logging a deprecation warning when the legacy
/// variable wins.
fn resolve_legacy(
    (current, current_var): (Option<Duration>, &str),
    (legacy, legacy_var): (Option<Duration>, &str),
    default: Duration,
) -> Duration {
    let (value, legacy_won) = prefer_legacy(current, legacy, default);
    if legacy_won {
        tracing::warn!(
            value = ?value,
            "{legacy_var} is deprecated and overrides {current_var}; set {current_var} instead"
        );
    }
    value
}

/// The interceptor's flags as a command line, for the tests of every module
/// that reads them.
#[cfg(test)]
pub(crate) mod test_cli {
    use super::InterceptorArgs;
    use clap::Parser;

    #[derive(Parser)]
    pub(crate) struct Cli {
        #[command(flatten)]
        pub(crate) args: InterceptorArgs,
    }

    /// `http-addon interceptor <argv>`, parsed.
    pub(crate) fn try_parse(argv: &[&str]) -> Result<InterceptorArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("interceptor").chain(argv.iter().copied()))
            .map(|c| c.args)
    }
}

#[cfg(test)]
mod tests {
    use super::test_cli::{Cli, try_parse};
    use super::*;
    use clap::CommandFactory;

    fn parse(argv: &[&str]) -> InterceptorArgs {
        try_parse(argv).expect("valid flags")
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn prefer_legacy_follows_upstreams_precedence() {
        let d = S(300);
        // (current, legacy) -> (value, legacy won)
        for (current, legacy, want) in [
            (None, None, (d, false)),
            (Some(S(5)), None, (S(5), false)),
            (None, Some(S(7)), (S(7), true)),
            (Some(S(5)), Some(S(7)), (S(7), true)),
            (Some(S(5)), Some(Duration::ZERO), (S(5), false)),
            (None, Some(Duration::ZERO), (d, false)),
            (Some(Duration::ZERO), None, (Duration::ZERO, false)),
        ] {
            assert_eq!(
                prefer_legacy(current, legacy, d),
                want,
                "{current:?} {legacy:?}"
            );
        }
    }

    #[test]
    fn metrics_port_prefers_the_upstream_name_over_the_alias() {
        assert_eq!(parse(&[]).metrics_port(), 2223);
        assert!(parse(&[]).metrics_enabled);
        assert_eq!(
            parse(&["--legacy-metrics-port", "9000"]).metrics_port(),
            9000
        );
        assert_eq!(
            parse(&["--metrics-port", "9100", "--legacy-metrics-port", "9000"]).metrics_port(),
            9100
        );
        assert!(!parse(&["--metrics-enabled", "false"]).metrics_enabled);
    }

    #[test]
    fn legacy_timeouts_win_over_the_new_names_when_positive() {
        let a = parse(&[
            "--readiness-timeout",
            "5s",
            "--condition-wait-timeout",
            "7s",
            "--response-header-timeout",
            "10s",
            "--legacy-response-header-timeout",
            "20s",
        ]);
        assert_eq!(a.proxy.readiness_timeout(), S(7));
        assert_eq!(a.proxy.response_header_timeout(), S(20));

        // A legacy value of zero is ignored: the new name, else the default.
        let a = parse(&[
            "--readiness-timeout",
            "5s",
            "--condition-wait-timeout",
            "0s",
            "--legacy-response-header-timeout",
            "0s",
        ]);
        assert_eq!(a.proxy.readiness_timeout(), S(5));
        assert_eq!(
            a.proxy.response_header_timeout(),
            DEFAULT_RESPONSE_HEADER_TIMEOUT
        );

        let a = parse(&[]);
        assert_eq!(a.proxy.readiness_timeout(), Duration::ZERO);
        assert_eq!(
            a.proxy.response_header_timeout(),
            DEFAULT_RESPONSE_HEADER_TIMEOUT
        );
    }

    #[test]
    fn help_shows_upstreams_variable_names() {
        let help = Cli::command().render_long_help().to_string();
        for var in [
            "OTEL_PROM_EXPORTER_PORT",
            "OTEL_PROM_EXPORTER_ENABLED",
            "KEDA_HTTP_PROXY_TLS_SKIP_VERIFY",
            "KEDA_HTTP_PROXY_TLS_MIN_VERSION",
            "KEDA_HTTP_PROXY_TLS_MAX_VERSION",
            "KEDA_HTTP_PROXY_TLS_CIPHER_SUITES",
            "KEDA_HTTP_PROXY_TLS_CURVE_PREFERENCES",
            "KEDA_HTTP_COLD_START_MAX_PENDING_REQUESTS_TOTAL",
            "KEDA_HTTP_MAX_CONNECTIONS",
            "KEDA_HTTP_HEADER_READ_TIMEOUT",
            "KEDA_HTTP_MAX_HEADER_BYTES",
        ] {
            assert!(
                help.contains(&format!("[env: {var}=")),
                "{var} missing in\n{help}"
            );
        }
    }
}
