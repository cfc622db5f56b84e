//! The data plane: route a request, hold it through a cold start, forward it.
//!
//! Per request (`handle`): one atomic load of the routing table and one
//! lookup; the matched route's own counters (in the table, see
//! [`routing::RouteCounters`]) count the request until its response body
//! ends ([`RequestGuard`](crate::body::RequestGuard)); one atomic load of
//! the endpoints snapshot answers both "is the target ready?" and "which
//! backend?" ([`sync::endpoints::ServiceBackends`]). If the target Service
//! has no ready endpoint the request waits on the ready-cache (woken by the
//! EndpointSlice change, no polling), fails over, or gets the route's
//! placeholder (`cold_start`); then it is forwarded over a pooled
//! connection with its body streamed both ways (`forward`).
//!
//! | module | job |
//! |---|---|
//! | `handle` | a request's life: Host check, lookup, counting, timeouts, the routing decision |
//! | `cold_start` | the wait for a ready endpoint: waiter limit, readiness timeout, fallback, placeholder |
//! | `forward` | the backend exchange: outgoing request, pooled clients, response-header timeout |
//! | `respond` | responses the interceptor writes itself: static, placeholder, error, 400 |
//! | `headers` | header rewriting: `Host`, `X-Forwarded-*`, hop-by-hop |
//! | `upgrade` | upgrades: HTTP/2 extended CONNECT to HTTP/1.1 upgrade, the tunnel |
//!
//! Static bodies from ConfigMaps (`bodyFromConfigMap`) are read at answer
//! time from the ready-cache's response-body ConfigMaps (those labelled
//! `http.keda.sh/response-body: "true"`, as upstream).
//!
//! Upgrades: an HTTP/1.1 `Upgrade` (websockets) is passed to the backend
//! as is; an HTTP/2 extended CONNECT (RFC 8441) is turned into the
//! equivalent HTTP/1.1 upgrade towards the backend; either way the bytes
//! are then tunnelled both ways.
//!
//! The request timeout runs from the request's arrival to the end of its
//! response body (a body still streaming then is cut off); an upgraded
//! connection (websocket) is not bounded by it, since its life is the
//! tunnel's.

mod cold_start;
mod forward;
mod handle;
mod headers;
mod respond;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderValue;
use sync::endpoints::Addressing;
use sync::{ReadyEndpoints, SharedTable};

use crate::backend::{Backends, Dialer};
use crate::body::Inflight;
use crate::config::ProxyArgs;
use crate::metrics::ProxyMetrics;

/// Settings of the proxy, resolved from the flags.
#[derive(Clone, Debug)]
pub(crate) struct ProxyConfig {
    /// Forward to endpoint addresses instead of Service names.
    pub(crate) direct_pod_routing: bool,
    /// Default readiness timeout (zero: until the request's deadline).
    pub(crate) readiness_timeout: Duration,
    /// Default response-header timeout (zero: none).
    pub(crate) response_header_timeout: Duration,
    /// Default request timeout (zero: none).
    pub(crate) request_timeout: Duration,
    /// Add `X-KEDA-HTTP-Cold-Start`.
    pub(crate) cold_start_header: bool,
    /// Cold-start waiters per route (zero: unlimited).
    pub(crate) max_pending: u64,
    /// Cold-start waiters of all routes together (zero: unlimited).
    pub(crate) max_pending_total: u64,
    /// Cold-start waiters of all routes now, shared by every worker.
    pub(crate) pending_total: Arc<std::sync::atomic::AtomicU64>,
    /// One access-log line per request.
    pub(crate) log_requests: bool,
    /// Dial attempt timeout.
    pub(crate) connect_timeout: Duration,
    /// Idle HTTP/1.1 connections per backend address, per worker.
    pub(crate) max_idle_per_host: usize,
    /// Idle HTTP/1.1 connections of all workers together.
    pub(crate) idle_budget: Arc<crate::pool::IdleBudget>,
}

impl ProxyConfig {
    /// From the flags; `routes_dir` implies direct-pod routing (there is no
    /// DNS for `<service>.<namespace>` without a cluster).
    pub(crate) fn from_args(args: &ProxyArgs, routes_dir: bool) -> ProxyConfig {
        ProxyConfig {
            direct_pod_routing: args.direct_pod_routing || routes_dir,
            readiness_timeout: args.readiness_timeout(),
            response_header_timeout: args.response_header_timeout(),
            request_timeout: args.request_timeout,
            cold_start_header: args.enable_cold_start_header,
            max_pending: args.cold_start_max_pending_requests,
            max_pending_total: args.cold_start_max_pending_requests_total,
            pending_total: Arc::default(),
            log_requests: args.log_requests,
            connect_timeout: args.connect_timeout,
            // The per-host cap is shared out among the workers' pools.
            max_idle_per_host: args.max_idle_conns_per_host.div_ceil(args.workers()),
            idle_budget: crate::pool::IdleBudget::new(args.max_idle_conns),
        }
    }
}

/// Everything the request path of one proxy worker reads.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<SharedTable>,
    endpoints: Arc<ReadyEndpoints>,
    backends: Backends,
    metrics: ProxyMetrics,
    inflight: Arc<Inflight>,
    config: ProxyConfig,
    /// Round robin over ready endpoints (direct-pod routing).
    next_endpoint: AtomicUsize,
}

/// The client end of a connection, with its `X-Forwarded-For` entry
/// formatted once per connection rather than once per request, and the
/// scheme of the listener it came in on.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    /// Its IP as `X-Forwarded-For` lists it.
    forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto`: `http`, or `https` on the TLS listener.
    forwarded_proto: HeaderValue,
}

impl Peer {
    /// A peer at `addr`, connected over TLS or not.
    pub(crate) fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip().to_canonical().to_string();
        Peer {
            forwarded_for: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("")),
            forwarded_proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }
}

impl Proxy {
    /// A proxy over the sync loop's table and ready-cache.
    pub(crate) fn new(
        table: Arc<SharedTable>,
        endpoints: Arc<ReadyEndpoints>,
        metrics: ProxyMetrics,
        inflight: Arc<Inflight>,
        config: ProxyConfig,
    ) -> Proxy {
        let give_up_after = [config.request_timeout, config.response_header_timeout]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(crate::config::DEFAULT_RESPONSE_HEADER_TIMEOUT);
        let dialer = Dialer {
            attempt_timeout: config.connect_timeout,
            give_up_after,
        };
        Proxy {
            table,
            endpoints,
            backends: Backends::new(dialer, config.max_idle_per_host, config.idle_budget.clone()),
            metrics,
            inflight,
            config,
            next_endpoint: AtomicUsize::new(0),
        }
    }

    /// Requests in flight (the drain waits for zero).
    pub fn inflight(&self) -> &Arc<Inflight> {
        &self.inflight
    }

    /// How this request addresses its backend: by Service name, or the next
    /// ready endpoint in turn.
    fn addressing(&self) -> Addressing {
        if self.config.direct_pod_routing {
            Addressing::Pod {
                turn: self.next_endpoint.fetch_add(1, Ordering::Relaxed),
            }
        } else {
            Addressing::Service
        }
    }
}
