//! The plumbing every `http-addon` program shares, written once: what a
//! process needs around its library (duration flags, signals, where its
//! Kubernetes-style data comes from, the listening sockets of its metrics
//! and health endpoints, the HTTP server of every port). Nothing here knows
//! about routing, except the one set of routing-source flags behind the
//! `routing-source` feature.
//!
//! - [`parse_duration`]: the one duration syntax of every flag and variable
//!   (Go's `time.ParseDuration`: `500ms`, `1m30s`), as upstream's Go programs;
//!   [`go_bool`]: their boolean values (`strconv.ParseBool`).
//! - [`Signals`]: SIGTERM or SIGINT starts a graceful shutdown; a second one
//!   ends the process at once.
//! - [`source`]: which source a program reads (a directory, a URL, a
//!   kubeconfig, in-cluster), chosen from the command line, then the
//!   environment, in one documented order; with the `kube` feature,
//!   [`kube::client`] builds the Kubernetes client for it; with the
//!   `routing-source` feature, [`routing_source::SourceArgs`] are the flags
//!   of the programs that keep a routing table (interceptor, scaler) and
//!   build their `sync::Source`.
//! - [`http`]: a bound listener with `SO_REUSEADDR`, and the one HTTP
//!   server of every port ([`http::Server`]: the accept loop, hyper, TLS,
//!   connection limits, drain), and the Prometheus text response.
//!
//! Data enters as flag values and environment variables (passed in, so
//! tests need not change the process environment) and leaves as plain
//! values, a `kube::Client`, or a running server task.

mod boolean;
mod duration;
pub mod http;
#[cfg(feature = "kube")]
pub mod kube;
#[cfg(feature = "routing-source")]
pub mod routing_source;
mod signal;
pub mod source;

pub use boolean::go_bool;
pub use duration::{DurationError, parse_duration};
pub use signal::Signals;
