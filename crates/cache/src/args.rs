//! `http-addon cache`: flags (upstream's environment variable style) and the
//! process around a [`Cache`]: upstream client, auth, metrics port, signals.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use listwatch::Body;
use prometheus_client::registry::Registry;

use crate::{Authenticator, Cache, CacheConfig, CacheError, select_resources, server, upstream};

fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .ok_or_else(|| format!("{s:?}: a duration needs a unit (ms, s, m, h)"))?;
    let n: f64 = num.parse().map_err(|_| format!("{s:?}: not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Flags of `http-addon cache`.
#[derive(clap::Args, Debug, Clone)]
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

    /// Kubeconfig of the upstream API server. Without it (and without
    /// --upstream-url): $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// URL of an upstream that speaks HTTP/2 (another cache: h2c for
    /// http://, ALPN h2 for https://).
    #[arg(
        long,
        env = "KEDA_HTTP_CACHE_UPSTREAM_URL",
        value_name = "URL",
        conflicts_with = "kubeconfig"
    )]
    pub upstream_url: Option<String>,

    /// Bearer token file for --upstream-url.
    #[arg(
        long,
        env = "KEDA_HTTP_CACHE_UPSTREAM_TOKEN_FILE",
        value_name = "FILE",
        requires = "upstream_url"
    )]
    pub upstream_token_file: Option<PathBuf>,

    /// CA certificates (PEM) for an https --upstream-url.
    #[arg(
        long,
        env = "KEDA_HTTP_CACHE_UPSTREAM_CA_FILE",
        value_name = "FILE",
        requires = "upstream_url"
    )]
    pub upstream_ca_file: Option<PathBuf>,

    /// Skip TLS verification of --upstream-url (testing only).
    #[arg(
        long,
        env = "KEDA_HTTP_CACHE_UPSTREAM_INSECURE",
        requires = "upstream_url"
    )]
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
        default_value = "httpscaledobjects,interceptorroutes,services,endpointslices"
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

    /// One conditional upstream list per this interval, round robin over
    /// the resources (repairs events the upstream lost).
    #[arg(long, env = "KEDA_HTTP_CACHE_UPSTREAM_RESYNC_INTERVAL", value_parser = duration, default_value = "1s")]
    pub upstream_resync_interval: Duration,

    /// Server-side timeout of each upstream watch.
    #[arg(long, env = "KEDA_HTTP_CACHE_UPSTREAM_WATCH_TIMEOUT", value_parser = duration, default_value = "60s")]
    pub upstream_watch_timeout: Duration,

    /// Events kept per resource so subscribers can resume.
    #[arg(long, env = "KEDA_HTTP_CACHE_HISTORY", default_value_t = 4096)]
    pub history: usize,

    /// Testing: drop this fraction of live events per watcher.
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub drop_watch_events: f64,
}

impl CacheArgs {
    fn config(&self) -> Result<CacheConfig, CacheError> {
        let resources = select_resources(&self.resources).map_err(CacheError::Config)?;
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
            ..CacheConfig::default()
        };
        config.store.history = self.history.max(1);
        config.store.fanout_capacity = self.history.max(1);
        Ok(config)
    }

    async fn upstream(&self) -> Result<kube::Client, CacheError> {
        let up = |e: String| CacheError::Upstream(e);
        if let Some(url) = &self.upstream_url {
            let uri: http::Uri = url.parse().map_err(|e| up(format!("{url}: {e}")))?;
            let mut c = sync::client::CacheClientConfig::new(uri);
            c.token_file = self.upstream_token_file.clone();
            c.accept_invalid_certs = self.upstream_insecure;
            if let Some(ca) = &self.upstream_ca_file {
                c.root_certs_pem =
                    Some(std::fs::read(ca).map_err(|e| up(format!("{}: {e}", ca.display())))?);
            }
            return sync::client::cache_client(c).map_err(|e| up(e.to_string()));
        }
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| up(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| up(format!("{}: {e}", path.display())))?
            }
            None => kube::Config::infer().await.map_err(|e| up(e.to_string()))?,
        };
        kube::Client::try_from(config).map_err(|e| up(e.to_string()))
    }

    fn authenticator(&self, upstream: &kube::Client) -> Result<Authenticator, CacheError> {
        if self.allow_anonymous {
            return Ok(Authenticator::anonymous());
        }
        if self.token_file.is_none() && !self.token_review {
            return Err(CacheError::Config(
                "no subscriber authentication: pass --token-file FILE and/or --token-review (or --allow-anonymous for tests)".into(),
            ));
        }
        let auth = match &self.token_file {
            Some(p) => Authenticator::from_file(p)
                .map_err(|e| CacheError::Config(format!("--token-file {}: {e}", p.display())))?,
            None => Authenticator::tokens(Vec::new()),
        };
        Ok(if self.token_review {
            auth.with_token_review(upstream.clone(), self.token_review_ttl)
        } else {
            auth
        })
    }
}

/// Runs `http-addon cache` until SIGTERM or Ctrl-C.
pub async fn run(args: CacheArgs) -> Result<(), CacheError> {
    let config = args.config()?;
    let upstream = args.upstream().await?;
    let auth = args.authenticator(&upstream)?;
    let mut registry = Registry::default();
    let cache = Cache::start(upstream, config, auth, &mut registry).await?;
    let registry = Arc::new(registry);
    let mut metrics_task = None;
    if args.metrics_port != 0 {
        let addr = SocketAddr::new(args.bind_address, args.metrics_port);
        let listener = server::bind(addr).map_err(|source| CacheError::Bind { addr, source })?;
        metrics_task = Some(tokio::spawn(serve_metrics(
            listener,
            registry.clone(),
            cache.readiness(),
        )));
        tracing::info!(%addr, "metrics listening");
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    if let Some(t) = metrics_task {
        t.abort();
    }
    cache.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `/metrics` (Prometheus text), `/readyz`, `/livez`.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    readiness: Arc<upstream::Readiness>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let registry = registry.clone();
                    let readiness = readiness.clone();
                    async move {
                        let path = req.uri().path();
                        if let Some(r) = server::health(&readiness, path) {
                            return Ok::<_, Infallible>(r);
                        }
                        if path != "/metrics" {
                            let mut r = Response::new(Body::full(Bytes::from_static(b"not found")));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            return Ok(r);
                        }
                        let mut text = String::new();
                        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                        let mut r = Response::new(Body::full(Bytes::from(text)));
                        r.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        Ok(r)
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(duration("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(duration("5m").unwrap(), Duration::from_secs(300));
        assert!(duration("5").is_err());
        assert!(duration("5x").is_err());
    }
}
