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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print(&api::crds_yaml()),
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
