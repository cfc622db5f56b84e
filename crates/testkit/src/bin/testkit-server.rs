//! Runs the test API server by hand, for demos and benchmarks.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// A writable Kubernetes-compatible API server (in memory, for tests).
#[derive(Parser, Debug)]
#[command(name = "testkit-server")]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0, env = "TESTKIT_PORT")]
    port: u16,
    /// Require this bearer token.
    #[arg(long, env = "TESTKIT_TOKEN")]
    token: Option<String>,
    /// Directory of YAML/JSON manifests to preload.
    #[arg(long, env = "TESTKIT_LOAD")]
    load: Option<PathBuf>,
    /// Also write the kubeconfig here.
    #[arg(long, env = "TESTKIT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder =
        testkit::TestApi::builder().addr(SocketAddr::from(([127, 0, 0, 1], args.port)));
    if let Some(t) = &args.token {
        builder = builder.token(t.clone());
    }
    let api = builder.start().await.context("starting the server")?;
    if let Some(dir) = &args.load {
        let n = api.load_dir(dir)?;
        println!("loaded {n} objects from {}", dir.display());
    }
    let kubeconfig = match &args.kubeconfig {
        Some(p) => {
            std::fs::copy(api.kubeconfig_path(), p)
                .with_context(|| format!("writing kubeconfig {}", p.display()))?;
            p.clone()
        }
        None => api.kubeconfig_path().to_path_buf(),
    };
    println!("url: {}", api.url());
    println!("kubeconfig: {}", kubeconfig.display());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
