//! `http-addon cache`: flags (upstream's environment variable style) and the
//! process around a [`Cache`]: upstream client, auth, metrics port, signals.

use std::convert::Infallible;
use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use process::parse_duration as duration;
use process::source::{Choice, Given, Names, SourceNames};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::{Authenticator, Cache, CacheConfig, CacheError, select_resources, server, upstream};

/// The cache's upstream flags and variables, for [`process::source::resolve`].
const UPSTREAM: SourceNames = SourceNames {
    dir: None,
    url: Names {
        flag: "--upstream-url",
        env: "KEDA_HTTP_CACHE_UPSTREAM_URL",
    },
};

/// How the cache picks its upstream (the long help shows it).
const UPSTREAM_PRECEDENCE: &str = "\
Upstream precedence (the first that names one wins):
  1. --upstream-url or --kubeconfig on the command line (not both)
  2. $KEDA_HTTP_CACHE_UPSTREAM_URL
  3. $KUBECONFIG
  4. ~/.kube/config, if it exists
  5. the in-cluster service account
So an exported KUBECONFIG does not get in the way of --upstream-url.";

/// Flags of `http-addon cache`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_long_help = UPSTREAM_PRECEDENCE)]
pub struct CacheArgs {
    /// Address to listen on.
    #[arg(long, env = "KEDA_HTTP_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// Port subscribers connect to (HTTP/1.1 and HTTP/2 on the same port).
    #[arg(long, env = "KEDA_HTTP_CACHE_PORT", default_value_t = 9443)]
    pub port: u16,

    /// Port of /metrics, /readyz and /livez (no auth); 0 turns it off.
    #[arg(long, env = "KEDA_HTTP_METRICS_PORT", default_value_t = 2223)]
    pub metrics_port: u16,

    /// Kubeconfig of the upstream API server. Without it and without an
    /// upstream URL: $KUBECONFIG, ~/.kube/config, then in-cluster (see
    /// "Upstream precedence" below).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// URL of an upstream that speaks HTTP/2 (another cache: h2c for
    /// http://, ALPN h2 for https://). Also $KEDA_HTTP_CACHE_UPSTREAM_URL,
    /// which the command line overrides.
    #[arg(long, value_name = "URL", conflicts_with = "kubeconfig")]
    pub upstream_url: Option<String>,

    /// Bearer token file for the upstream URL.
    #[arg(long, env = "KEDA_HTTP_CACHE_UPSTREAM_TOKEN_FILE", value_name = "FILE")]
    pub upstream_token_file: Option<PathBuf>,

    /// CA certificates (PEM) for an https upstream URL.
    #[arg(long, env = "KEDA_HTTP_CACHE_UPSTREAM_CA_FILE", value_name = "FILE")]
    pub upstream_ca_file: Option<PathBuf>,

    /// Skip TLS verification of the upstream URL (testing only).
    #[arg(long, env = "KEDA_HTTP_CACHE_UPSTREAM_INSECURE")]
    pub upstream_insecure: bool,

    /// Only mirror this namespace (empty: all namespaces).
    #[arg(long, env = "KEDA_HTTP_WATCH_NAMESPACE", default_value = "")]
    pub watch_namespace: String,

    /// Only mirror objects matching this label selector.
    #[arg(long, env = "KEDA_HTTP_LABEL_SELECTOR", default_value = "")]
    pub label_selector: String,

    /// Resources to mirror and serve (plural names).
    #[arg(
        long,
        env = "KEDA_HTTP_CACHE_RESOURCES",
        value_delimiter = ',',
        default_value = "httpscaledobjects,interceptorroutes,services,endpointslices,configmaps"
    )]
    pub resources: Vec<String>,

    /// File of accepted bearer tokens, one per line.
    #[arg(long, env = "KEDA_HTTP_CACHE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Also accept any token the upstream API server authenticates (TokenReview).
    #[arg(long, env = "KEDA_HTTP_CACHE_TOKEN_REVIEW")]
    pub token_review: bool,

    /// How long a TokenReview's positive answer is trusted.
    #[arg(long, env = "KEDA_HTTP_CACHE_TOKEN_REVIEW_TTL", value_parser = duration, default_value = "5m")]
    pub token_review_ttl: Duration,

    /// Accept requests without a token (testing only).
    #[arg(long, env = "KEDA_HTTP_CACHE_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// PEM certificate chain: serve TLS (needs --tls-key).
    #[arg(long, env = "KEDA_HTTP_CACHE_TLS_CERT_PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "KEDA_HTTP_CACHE_TLS_KEY_PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often every watch gets a BOOKMARK.
    #[arg(long, env = "KEDA_HTTP_CACHE_BOOKMARK_INTERVAL", value_parser = duration, default_value = "1s")]
    pub bookmark_interval: Duration,

    /// Every resource gets one conditional upstream list per this interval,
    /// spread evenly over it (repairs events the upstream lost).
    #[arg(long, env = "KEDA_HTTP_CACHE_UPSTREAM_RESYNC_INTERVAL", value_parser = duration, default_value = "1s")]
    pub upstream_resync_interval: Duration,

    /// Server-side timeout of each upstream watch.
    #[arg(long, env = "KEDA_HTTP_CACHE_UPSTREAM_WATCH_TIMEOUT", value_parser = duration, default_value = "60s")]
    pub upstream_watch_timeout: Duration,

    /// Events kept per resource so subscribers can resume.
    #[arg(long, env = "KEDA_HTTP_CACHE_HISTORY", default_value_t = 4096)]
    pub history: usize,

    /// Connection limits of the subscriber port.
    #[command(flatten)]
    pub limits: process::http::LimitArgs,

    /// Testing: drop this fraction of live events per watcher.
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub drop_watch_events: f64,
}

impl CacheArgs {
    fn config(&self) -> Result<CacheConfig, CacheError> {
        let resources = select_resources(&self.resources)?;
        let mut config = CacheConfig {
            listen: SocketAddr::new(self.bind_address, self.port),
            resources,
            namespace: (!self.watch_namespace.is_empty()).then(|| self.watch_namespace.clone()),
            label_selector: (!self.label_selector.is_empty()).then(|| self.label_selector.clone()),
            tls: self.tls_cert.clone().zip(self.tls_key.clone()),
            bookmark_interval: self.bookmark_interval,
            upstream_resync_interval: self.upstream_resync_interval,
            upstream_watch_timeout: self.upstream_watch_timeout,
            drop_watch_events: self.drop_watch_events,
            limits: self.limits.limits(),
            ..CacheConfig::default()
        };
        config.store.history = self.history.max(1);
        config.store.fanout_capacity = self.history.max(1);
        Ok(config)
    }

    /// Chooses the upstream: the command line, then
    /// `KEDA_HTTP_CACHE_UPSTREAM_URL`, then `KUBECONFIG`, `~/.kube/config`,
    /// in-cluster ([`process::source::resolve`]); `env` looks up variables.
    pub fn upstream_source(
        &self,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<Choice, CacheError> {
        let url_option = [
            (self.upstream_token_file.is_some(), "--upstream-token-file"),
            (self.upstream_ca_file.is_some(), "--upstream-ca-file"),
            (self.upstream_insecure, "--upstream-insecure"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag));
        let given = Given {
            dir: None,
            url: self.upstream_url.clone(),
            kubeconfig: self.kubeconfig.clone(),
            url_option,
        };
        Ok(process::source::resolve(&UPSTREAM, given, env)?)
    }

    async fn upstream(&self) -> Result<kube::Client, CacheError> {
        let choice = self.upstream_source(process::source::process_env)?;
        tracing::info!(upstream = %choice.source, from = %choice.origin, "upstream chosen");
        let options = process::kube::UrlOptions {
            token_file: self.upstream_token_file.clone(),
            ca_file: self.upstream_ca_file.clone(),
            insecure: self.upstream_insecure,
        };
        Ok(process::kube::client(&choice.source, &options).await?)
    }

    fn authenticator(&self, upstream: &kube::Client) -> Result<Authenticator, CacheError> {
        if self.allow_anonymous {
            return Ok(Authenticator::anonymous());
        }
        if self.token_file.is_none() && !self.token_review {
            return Err(CacheError::NoAuthentication);
        }
        let auth = match &self.token_file {
            Some(p) => Authenticator::from_file(p).map_err(|source| CacheError::TokenFile {
                path: p.clone(),
                source,
            })?,
            None => Authenticator::tokens(Vec::new()),
        };
        Ok(if self.token_review {
            auth.with_token_review(upstream.clone(), self.token_review_ttl)
        } else {
            auth
        })
    }
}

/// Runs `http-addon cache` until SIGTERM or SIGINT, then shuts down; a
/// second signal exits at once.
pub async fn run(args: CacheArgs) -> Result<(), CacheError> {
    let mut signals = process::Signals::new();
    let config = args.config()?;
    let upstream = args.upstream().await?;
    let auth = args.authenticator(&upstream)?;
    let mut registry = Registry::default();
    let cache = Cache::start(upstream, config, auth, &mut registry).await?;
    let registry = Arc::new(registry);
    let stop_metrics = CancellationToken::new();
    if args.metrics_port != 0 {
        let addr = SocketAddr::new(args.bind_address, args.metrics_port);
        let (listener, _) = process::http::bind(addr)?;
        let readiness = cache.readiness();
        tokio::spawn(process::http::serve(
            listener,
            move |req: http::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let readiness = readiness.clone();
                async move { Ok::<_, Infallible>(metrics_port(&registry, &readiness, req.uri().path())) }
            },
            stop_metrics.clone(),
        ));
        tracing::info!(%addr, "metrics listening");
    }
    let signal = signals.recv().await;
    tracing::info!(signal, "shutting down; a second signal exits at once");
    stop_metrics.cancel();
    signals.graceful(cache.shutdown()).await;
    Ok(())
}

/// The metrics port: `/metrics` (Prometheus text), `/readyz`, `/livez`.
fn metrics_port(
    registry: &Registry,
    readiness: &upstream::Readiness,
    path: &str,
) -> http::Response<listwatch::Body> {
    if let Some(r) = server::health(readiness, path) {
        return r;
    }
    let resp = match path {
        "/metrics" => process::http::metrics_response(registry),
        _ => process::http::text_response(StatusCode::NOT_FOUND, "not found"),
    };
    resp.map(listwatch::Body::full)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;
    use process::source::{Origin, Source};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CacheArgs,
    }

    fn parse(argv: &[&str]) -> Result<CacheArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("cache").chain(argv.iter().copied())).map(|c| c.args)
    }

    fn choose(argv: &[&str], vars: &[(&str, &str)]) -> Result<Choice, CacheError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        parse(argv)
            .unwrap()
            .upstream_source(|k| map.get(k).map(OsString::from))
    }

    #[test]
    fn durations_take_go_syntax() {
        let a = parse(&[
            "--upstream-watch-timeout",
            "1m30s",
            "--token-review-ttl",
            "90s",
        ])
        .unwrap();
        assert_eq!(a.upstream_watch_timeout, Duration::from_secs(90));
        assert_eq!(a.token_review_ttl, Duration::from_secs(90));
        assert_eq!(a.bookmark_interval, Duration::from_secs(1));
        assert!(parse(&["--bookmark-interval", "5"]).is_err());
    }

    #[test]
    fn an_upstream_flag_wins_over_the_environment() {
        let env = [
            ("KUBECONFIG", "/env/kubeconfig"),
            ("KEDA_HTTP_CACHE_UPSTREAM_URL", "http://env-cache"),
        ];
        let c = choose(&["--upstream-url", "http://flag-cache"], &env).unwrap();
        assert_eq!(c.source, Source::Url("http://flag-cache".into()));
        assert_eq!(c.origin, Origin::Flag("--upstream-url"));
        let c = choose(&["--kubeconfig", "/flag/kubeconfig"], &env).unwrap();
        assert_eq!(
            c.source,
            Source::Kubeconfig(vec!["/flag/kubeconfig".into()])
        );
        // Both on the command line: still a usage error.
        let both = ["--upstream-url", "http://u", "--kubeconfig", "/k"];
        assert!(parse(&both).is_err());
    }

    #[test]
    fn then_the_variables_in_order() {
        let c = choose(
            &[],
            &[
                ("KUBECONFIG", "/env/kubeconfig"),
                ("KEDA_HTTP_CACHE_UPSTREAM_URL", "http://env-cache"),
            ],
        )
        .unwrap();
        assert_eq!(c.origin, Origin::Env("KEDA_HTTP_CACHE_UPSTREAM_URL"));
        let c = choose(&[], &[("KUBECONFIG", "/env/kubeconfig")]).unwrap();
        assert_eq!(c.source, Source::Kubeconfig(vec!["/env/kubeconfig".into()]));
        let home = tempfile::tempdir().unwrap();
        let c = choose(&[], &[("HOME", home.path().to_str().unwrap())]).unwrap();
        assert_eq!(c.source, Source::InCluster);
    }

    #[test]
    fn url_options_need_an_upstream_url() {
        let err = choose(&["--upstream-insecure"], &[]).unwrap_err();
        assert_eq!(
            std::error::Error::source(&err).unwrap().to_string(),
            "--upstream-insecure needs --upstream-url (or $KEDA_HTTP_CACHE_UPSTREAM_URL)"
        );
        let env = [("KEDA_HTTP_CACHE_UPSTREAM_URL", "http://env-cache")];
        assert!(choose(&["--upstream-insecure"], &env).is_ok());
    }

    #[test]
    fn help_documents_the_precedence() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Upstream precedence"), "{help}");
        assert!(help.contains("KEDA_HTTP_CACHE_UPSTREAM_URL"), "{help}");
        for var in [
            "KEDA_HTTP_MAX_CONNECTIONS",
            "KEDA_HTTP_HEADER_READ_TIMEOUT",
            "KEDA_HTTP_MAX_HEADER_BYTES",
        ] {
            assert!(help.contains(&format!("[env: {var}=")), "{var}: {help}");
        }
    }
}
