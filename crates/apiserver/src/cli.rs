//! `http-addon api`: the embedded control plane, as a program.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;

use crate::ApiServer;

/// Flags of `http-addon api`.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiArgs {
    /// Address to listen on. Loopback by default: the server has no TLS and,
    /// without --token, no authentication.
    #[arg(long, default_value = "127.0.0.1", env = "KEDA_HTTP_API_ADDRESS")]
    pub address: IpAddr,

    /// Port to listen on (0 = any free port). 8001 is where `kubectl proxy`
    /// serves the same plain-HTTP API.
    #[arg(long, default_value_t = 8001, env = "KEDA_HTTP_API_PORT")]
    pub port: u16,

    /// Where to write a kubeconfig for this server (kubectl, and the other
    /// programs' --kubeconfig). Default: a file in the temp directory,
    /// removed on exit.
    #[arg(long, env = "KEDA_HTTP_API_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Keep every object in this JSON file: loaded at start, rewritten
    /// before each write is answered, so a restart (even after kill -9)
    /// keeps what was applied.
    /// Without it the data lives in memory only.
    #[arg(long, env = "KEDA_HTTP_API_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// Apply every .yaml, .yml and .json manifest in this directory at
    /// start (multi-document YAML allowed).
    #[arg(long, env = "KEDA_HTTP_API_LOAD")]
    pub load: Option<PathBuf>,

    /// Require `Authorization: Bearer <token>` on every request. kubectl
    /// does not send tokens over plain HTTP; kube-rs clients do.
    #[arg(long, env = "KEDA_HTTP_API_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Runs the API server until SIGTERM or SIGINT; prints its URL and
/// kubeconfig path to stdout once it listens.
pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let mut signals = process::Signals::new();
    let mut builder = ApiServer::builder().addr(SocketAddr::new(args.address, args.port));
    if let Some(t) = &args.token {
        builder = builder.token(t.clone());
    }
    if let Some(p) = &args.state_file {
        builder = builder.state_file(p.clone());
    }
    let api = builder.start().await.with_context(|| {
        format!(
            "starting the API server on {}",
            SocketAddr::new(args.address, args.port)
        )
    })?;
    if let Some(dir) = &args.load {
        let n = api
            .load_dir(dir)
            .map_err(|e| anyhow::anyhow!("{e}: {}", error_chain(&e)))
            .with_context(|| format!("loading manifests from {}", dir.display()))?;
        tracing::info!(objects = n, dir = %dir.display(), "manifests applied");
    }
    let (kubeconfig, temporary) = match &args.kubeconfig {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!("http-addon-api-{}.kubeconfig", api.addr().port())),
            true,
        ),
    };
    std::fs::write(&kubeconfig, api.kubeconfig())
        .with_context(|| format!("writing the kubeconfig {}", kubeconfig.display()))?;
    tracing::info!(url = %api.url(), kubeconfig = %kubeconfig.display(), state_file = ?args.state_file, "API server listening");
    println!("url: {}", api.url());
    println!("kubeconfig: {}", kubeconfig.display());
    let signal = signals.recv().await;
    tracing::info!(signal, "shutting down");
    if temporary {
        let _ = std::fs::remove_file(&kubeconfig);
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
