//! The data plane: route a request, hold it through a cold start, forward it.
//!
//! Per request: one atomic load of the routing table and one lookup; the
//! matched route's counters count the request until its response body ends
//! ([`RequestGuard`]); if the target Service has no ready endpoint the
//! request waits on the ready-cache (woken by the EndpointSlice change, no
//! polling), fails over, or gets the route's placeholder; then it is
//! forwarded over a pooled connection with its body streamed both ways.
//!
//! Known limits: static bodies from ConfigMaps
//! (`bodyFromConfigMap`) are answered 500 "not resolved" because the sync
//! layer does not fetch ConfigMaps.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use routing::{Action, PortRef, ResponseBody, ResponseMode, Route, StaticResponse};
use sync::{EndpointsSnapshot, ReadyEndpoints, SharedTable};
use tracing::{Instrument, debug, warn};

use crate::backend::{Backends, Dialer};
use crate::body::{Inflight, ProxyBody, RequestGuard};
use crate::config::ProxyArgs;
use crate::error::ProxyError;
use crate::metrics::{ProxyMetrics, RouteStats};

/// The cold-start response header.
pub const COLD_START_HEADER: HeaderName = HeaderName::from_static("x-keda-http-cold-start");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Settings of the proxy, resolved from the flags.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Forward to endpoint addresses instead of Service names.
    pub direct_pod_routing: bool,
    /// Default readiness timeout (zero: until the request's deadline).
    pub readiness_timeout: Duration,
    /// Default response-header timeout (zero: none).
    pub response_header_timeout: Duration,
    /// Default request timeout (zero: none).
    pub request_timeout: Duration,
    /// Add `X-KEDA-HTTP-Cold-Start`.
    pub cold_start_header: bool,
    /// Cold-start waiters per route (zero: unlimited).
    pub max_pending: u64,
    /// One access-log line per request.
    pub log_requests: bool,
    /// Dial attempt timeout.
    pub connect_timeout: Duration,
    /// Idle HTTP/1.1 connections per backend address, per worker.
    pub max_idle_per_host: usize,
    /// Idle HTTP/1.1 connections of all workers together.
    pub idle_budget: Arc<crate::pool::IdleBudget>,
}

impl ProxyConfig {
    /// From the flags; `routes_dir` implies direct-pod routing (there is no
    /// DNS for `<service>.<namespace>` without a cluster).
    pub fn from_args(args: &ProxyArgs, routes_dir: bool) -> ProxyConfig {
        ProxyConfig {
            direct_pod_routing: args.direct_pod_routing || routes_dir,
            readiness_timeout: args.readiness_timeout(),
            response_header_timeout: args.response_header_timeout(),
            request_timeout: args.request_timeout,
            cold_start_header: args.enable_cold_start_header,
            max_pending: args.cold_start_max_pending_requests,
            log_requests: args.log_requests,
            connect_timeout: args.connect_timeout,
            // The per-host cap is shared out among the workers' pools.
            max_idle_per_host: args.max_idle_conns_per_host.div_ceil(args.workers()),
            idle_budget: crate::pool::IdleBudget::new(args.max_idle_conns),
        }
    }
}

/// Everything the request path reads.
#[derive(Debug)]
pub struct Proxy {
    table: Arc<SharedTable>,
    endpoints: Arc<ReadyEndpoints>,
    backends: Backends,
    metrics: ProxyMetrics,
    inflight: Arc<Inflight>,
    config: ProxyConfig,
    next_endpoint: AtomicUsize,
    /// Formatted endpoint addresses (see [`Proxy::authority_of`]).
    authorities: parking_lot::Mutex<std::collections::HashMap<SocketAddr, Arc<str>>>,
}

/// Bound on [`Proxy::authority_of`]'s cache.
const AUTHORITY_CACHE_MAX: usize = 65_536;

/// The client end of a connection, with its `X-Forwarded-For` entry
/// formatted once per connection rather than once per request, and the
/// scheme of the listener it came in on.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// Its IP as `X-Forwarded-For` lists it.
    forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto`: `http`, or `https` on the TLS listener.
    forwarded_proto: HeaderValue,
}

impl Peer {
    /// A peer at `addr`, connected over TLS or not.
    pub fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = addr.ip().to_canonical().to_string();
        Peer {
            addr,
            forwarded_for: HeaderValue::from_str(&ip).unwrap_or(HeaderValue::from_static("")),
            forwarded_proto: HeaderValue::from_static(if tls { "https" } else { "http" }),
        }
    }
}

/// A forwarded response, and the two halves of an upgrade when the backend
/// switched protocols.
struct Forwarded {
    response: Response<ProxyBody>,
    upgrade: Option<(OnUpgrade, OnUpgrade)>,
}

impl Proxy {
    /// A proxy over the sync loop's table and ready-cache.
    pub fn new(
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
            authorities: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Requests in flight (the drain waits for zero).
    pub fn inflight(&self) -> &Arc<Inflight> {
        &self.inflight
    }

    /// Handles one request from `peer`.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        if let Some(problem) = host_problem(&req) {
            return bad_request(problem);
        }
        let matched = {
            let table = self.table.load();
            let host = request_host(&req);
            table
                .lookup(host, req.uri().path(), req.headers())
                .map(|m| {
                    let static_index = match m.action {
                        Action::Forward => None,
                        Action::Static { index, .. } => Some(index),
                    };
                    (m.route.clone(), static_index)
                })
        };
        let Some((route, static_index)) = matched else {
            // Counted in the metrics with empty route labels, never in /queue.
            let mut guard = RequestGuard::with_queue(
                Some(self.metrics.unrouted().clone()),
                false,
                self.inflight.clone(),
                req.method(),
                start,
            );
            if self.config.log_requests {
                guard.log(req.headers().get(header::HOST), req.uri(), None);
            }
            let err = ProxyError::NoRoute {
                host: request_host(&req).to_string(),
                path: req.uri().path().to_string(),
            };
            return self.error_response(&err, guard, None);
        };
        let stats = self.metrics.stats(&route);
        // Static routes are not counted in /queue: static traffic must not
        // scale the app (as upstream).
        let mut guard = RequestGuard::with_queue(
            Some(stats.clone()),
            static_index.is_none(),
            self.inflight.clone(),
            req.method(),
            start,
        );
        if self.config.log_requests {
            guard.log(
                req.headers().get(header::HOST),
                req.uri(),
                Some(route.key()),
            );
        }
        let request_timeout = route
            .timeouts
            .request
            .unwrap_or(self.config.request_timeout);
        let work = self.route_request(req, peer, &route, static_index, &stats);
        let deadline = tokio::time::Instant::from_std(start) + request_timeout;
        let result = if request_timeout.is_zero() {
            work.await
        } else {
            match tokio::time::timeout_at(deadline, work).await {
                Ok(r) => r,
                Err(_) => Err((ProxyError::RequestTimeout(request_timeout), None)),
            }
        };
        match result {
            Ok(Forwarded {
                mut response,
                upgrade,
            }) => {
                guard.set_status(response.status().as_u16());
                match upgrade {
                    Some((client, backend)) => {
                        // The request lives as long as the tunnel.
                        let span = tracing::debug_span!("upgraded", route = %route.key());
                        tokio::spawn(tunnel(client, backend, guard).instrument(span));
                        response
                    }
                    None => {
                        let mut body = std::mem::replace(response.body_mut(), ProxyBody::empty());
                        if !request_timeout.is_zero() {
                            body = body.with_deadline(deadline, request_timeout);
                        }
                        *response.body_mut() = body.with_guard(guard);
                        response
                    }
                }
            }
            Err((err, cold)) => {
                debug!(route = %route.key(), error = %err, "request failed");
                self.error_response(&err, guard, cold)
            }
        }
    }

    fn error_response(
        &self,
        err: &ProxyError,
        mut guard: RequestGuard,
        cold: Option<bool>,
    ) -> Response<ProxyBody> {
        let status = err.status();
        guard.set_status(status.as_u16());
        if status.is_server_error() && !matches!(err, ProxyError::TooManyPending { .. }) {
            warn!(error = %err, status = status.as_u16(), "proxy error");
        }
        let mut resp = Response::new(ProxyBody::full(format!("{err}\n")).with_guard(guard));
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(cold) = cold {
            self.cold_header(resp.headers_mut(), cold);
        }
        resp
    }

    fn cold_header(&self, headers: &mut HeaderMap, cold: bool) {
        if self.config.cold_start_header {
            headers.insert(
                COLD_START_HEADER,
                HeaderValue::from_static(if cold { "true" } else { "false" }),
            );
        }
    }

    async fn route_request(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        route: &Arc<Route>,
        static_index: Option<usize>,
        stats: &Arc<RouteStats>,
    ) -> Result<Forwarded, (ProxyError, Option<bool>)> {
        let target = &route.target;
        let ready = self
            .endpoints
            .load()
            .has_ready(&target.namespace, &target.service);
        let direct = self.config.direct_pod_routing;
        let rht = route
            .timeouts
            .response_header
            .unwrap_or(self.config.response_header_timeout);
        if let Some(sr) = static_index.and_then(|i| route.static_routes.get(i)) {
            // A static route answers (no cold-start header), or, in
            // `WhenUnavailable` mode while the target is ready, the request is
            // forwarded without cold-start handling (and uncounted).
            if sr.mode == ResponseMode::Always || !ready {
                return static_response(&sr.response).map_err(|e| (e, None));
            }
            return self
                .forward(
                    req,
                    peer,
                    &target.namespace,
                    &target.service,
                    &target.port,
                    direct,
                    false,
                    rht,
                )
                .await
                .map_err(|e| (e, None));
        }
        if ready {
            return self
                .forward(
                    req,
                    peer,
                    &target.namespace,
                    &target.service,
                    &target.port,
                    direct,
                    false,
                    rht,
                )
                .await
                .map_err(|e| (e, Some(false)));
        }

        // Cold start.
        if let Some(placeholder) = &route.cold_start.placeholder {
            let mut f = static_response(placeholder).map_err(|e| (e, Some(true)))?;
            self.cold_header(f.response.headers_mut(), true);
            return Ok(f);
        }
        let Some(_slot) = stats.try_pending(self.config.max_pending) else {
            return Err((
                ProxyError::TooManyPending {
                    route: route.key().to_string(),
                    limit: self.config.max_pending,
                },
                Some(true),
            ));
        };
        let readiness = route
            .timeouts
            .readiness
            .unwrap_or(self.config.readiness_timeout);
        let fallback = route.cold_start.fallback.as_ref();
        let wait = fallback.and_then(|f| f.wait).unwrap_or(readiness);
        let became_ready = {
            let waiting = self
                .endpoints
                .wait_ready(&target.namespace, &target.service);
            if wait.is_zero() {
                waiting.await;
                true
            } else {
                tokio::time::timeout(wait, waiting).await.is_ok()
            }
        };
        drop(_slot);
        if became_ready {
            return self
                .forward(
                    req,
                    peer,
                    &target.namespace,
                    &target.service,
                    &target.port,
                    direct,
                    true,
                    rht,
                )
                .await
                .map_err(|e| (e, Some(true)));
        }
        match fallback {
            Some(fb) => self
                .forward(
                    req,
                    peer,
                    &fb.namespace,
                    &fb.service,
                    &fb.port,
                    direct,
                    true,
                    rht,
                )
                .await
                .map_err(|e| (e, Some(true))),
            None => Err((
                ProxyError::ReadinessTimeout {
                    service: format!("{}/{}", target.namespace, target.service),
                    timeout: wait,
                },
                Some(true),
            )),
        }
    }

    /// Where to send a request for `namespace/service:port`: an authority
    /// and whether the port speaks h2c.
    fn resolve(
        &self,
        snap: &EndpointsSnapshot,
        namespace: &str,
        service: &str,
        port: &PortRef,
        direct: bool,
    ) -> Result<(Arc<str>, bool), ProxyError> {
        let entry = snap.get(namespace, service);
        let service_port = entry.and_then(|e| e.resolve(port));
        if let (PortRef::Name(name), Some(e), None) = (port, entry, service_port)
            && e.has_service
        {
            return Err(ProxyError::Unresolvable(format!(
                "service {namespace}/{service} has no port named {name}"
            )));
        }
        let h2c = service_port.is_some_and(|p| p.is_h2c());
        if direct {
            let addrs = entry
                .and_then(|e| e.ready_addresses(port))
                .filter(|a| !a.is_empty())
                .ok_or_else(|| {
                    ProxyError::Unresolvable(format!(
                        "service {namespace}/{service} has no ready endpoint for port {port}"
                    ))
                })?;
            let i = self.next_endpoint.fetch_add(1, Ordering::Relaxed) % addrs.len();
            return Ok((self.authority_of(addrs[i]), h2c));
        }
        let resolved = snap
            .resolve(namespace, service, port)
            .map_err(|e| ProxyError::Unresolvable(e.to_string()));
        let port = match (port, resolved) {
            (_, Ok(p)) => p.port,
            // A numbered port needs no Service lookup.
            (PortRef::Number(n), Err(_)) => *n,
            (PortRef::Name(_), Err(e)) => return Err(e),
        };
        Ok((Arc::from(format!("{service}.{namespace}:{port}")), h2c))
    }

    /// `ip:port` of an endpoint, formatted once and kept (endpoint
    /// addresses are few and stable; the cache is dropped when it grows
    /// past [`AUTHORITY_CACHE_MAX`]).
    fn authority_of(&self, addr: SocketAddr) -> Arc<str> {
        let mut cache = self.authorities.lock();
        if let Some(a) = cache.get(&addr) {
            return a.clone();
        }
        if cache.len() >= AUTHORITY_CACHE_MAX {
            cache.clear();
        }
        let a: Arc<str> = Arc::from(addr.to_string());
        cache.insert(addr, a.clone());
        a
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: Peer,
        namespace: &str,
        service: &str,
        port: &PortRef,
        direct: bool,
        cold: bool,
        timeout: Duration,
    ) -> Result<Forwarded, ProxyError> {
        let (authority, h2c) = {
            let snap = self.endpoints.load();
            self.resolve(&snap, namespace, service, port, direct)?
        };
        // An HTTP/2 extended CONNECT (RFC 8441, `:protocol: websocket`)
        // becomes an HTTP/1.1 upgrade towards the backend.
        let h2_connect = req.method() == http::Method::CONNECT
            && req.version() == Version::HTTP_2
            && req.extensions().get::<hyper::ext::Protocol>().is_some();
        let upgrade =
            h2_connect || (req.version() == Version::HTTP_11 && is_upgrade(req.headers()));
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        if h2_connect {
            h2_connect_to_upgrade(&mut parts);
        }

        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let use_h2c = h2c && !upgrade;
        // HTTP/1.1 goes out in origin form (`/path?query`, with `Host`); the
        // h2c client takes the absolute form and makes `:authority` of it.
        let uri = if use_h2c {
            Uri::builder()
                .scheme(http::uri::Scheme::HTTP)
                .authority(&*authority)
                .path_and_query(path)
                .build()
                .map_err(|e| {
                    ProxyError::Unresolvable(format!("bad backend URI for {authority}: {e}"))
                })?
        } else {
            Uri::from(path)
        };
        set_host_and_forwarded_host(&mut parts, &authority);
        strip_hop_by_hop(&mut parts.headers, upgrade);
        append_forwarded_for(&mut parts.headers, &peer);
        parts
            .headers
            .entry(X_FORWARDED_PROTO)
            .or_insert_with(|| peer.forwarded_proto.clone());
        parts.uri = uri;
        parts.version = if h2c && !upgrade {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let out = Request::from_parts(parts, body);

        let sent = async {
            if use_h2c {
                self.backends
                    .h2c
                    .request(out)
                    .await
                    .map(|r| (r, None))
                    .map_err(|e| error_chain(&e))
            } else {
                self.backends
                    .http1
                    .send(&authority, out)
                    .await
                    .map_err(|e| error_chain(&e))
            }
        };
        let result = if timeout.is_zero() {
            sent.await
        } else {
            match tokio::time::timeout(timeout, sent).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(ProxyError::ResponseHeaderTimeout {
                        backend: authority.to_string(),
                        timeout,
                    });
                }
            }
        };
        let (mut resp, lease) = result.map_err(|message| ProxyError::Upstream {
            message,
            backend: authority.to_string(),
        })?;
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let backend_upgrade = switching.then(|| hyper::upgrade::on(&mut resp));
        let (mut parts, body) = resp.into_parts();
        if switching && h2_connect {
            // HTTP/2 answers an accepted extended CONNECT with 200 and no
            // connection-specific headers.
            parts.status = StatusCode::OK;
            parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
            strip_hop_by_hop(&mut parts.headers, false);
        } else {
            strip_hop_by_hop(&mut parts.headers, switching);
        }
        self.cold_header(&mut parts.headers, cold);
        let body = if switching {
            ProxyBody::empty()
        } else {
            ProxyBody::stream(body, lease)
        };
        let upgrade = match (client_upgrade, backend_upgrade) {
            (Some(c), Some(b)) => Some((c, b)),
            _ => None,
        };
        Ok(Forwarded {
            response: Response::from_parts(parts, body),
            upgrade,
        })
    }
}

/// The host a request is for: the URI's authority (HTTP/2, absolute-form
/// HTTP/1.1), else the `Host` header.
fn request_host(req: &Request<Incoming>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.as_str();
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

fn static_response(sr: &StaticResponse) -> Result<Forwarded, ProxyError> {
    let body = match &sr.body {
        ResponseBody::Inline(b) => b.clone(),
        // The sync layer does not resolve ConfigMaps yet.
        ResponseBody::ConfigMap { name, key } => {
            return Err(ProxyError::BodyNotResolved(format!("{name}/{key}")));
        }
    };
    let mut resp = Response::new(ProxyBody::full(body));
    *resp.status_mut() = sr.status;
    *resp.headers_mut() = sr.headers.clone();
    Ok(Forwarded {
        response: resp,
        upgrade: None,
    })
}

/// Rewrites an HTTP/2 extended CONNECT into the HTTP/1.1 upgrade request
/// it stands for: `GET` with `Connection: upgrade`, `Upgrade: <protocol>`
/// and, for websockets, a fresh `Sec-WebSocket-Key` (HTTP/2 clients send
/// none; the backend's `Sec-WebSocket-Accept` answers it and is not passed
/// back).
fn h2_connect_to_upgrade(parts: &mut http::request::Parts) {
    let protocol = parts
        .extensions
        .remove::<hyper::ext::Protocol>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    parts.method = http::Method::GET;
    if let Ok(v) = HeaderValue::from_str(&protocol) {
        parts.headers.insert(header::UPGRADE, v);
    }
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if protocol.eq_ignore_ascii_case("websocket") {
        if let Ok(v) = HeaderValue::from_str(&websocket_key()) {
            parts.headers.insert(header::SEC_WEBSOCKET_KEY, v);
        }
        parts
            .headers
            .entry(header::SEC_WEBSOCKET_VERSION)
            .or_insert(HeaderValue::from_static("13"));
    }
}

/// A `Sec-WebSocket-Key`: 16 bytes, base64. It only has to differ between
/// handshakes (RFC 6455 4.1), not be secret.
fn websocket_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    base64(&bytes)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| connection_has(v, "upgrade"))
}

fn connection_has(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

const HOP_BY_HOP: [HeaderName; 6] = [
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers (and those `Connection` names); an upgrade
/// keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for n in named {
            if n != header::UPGRADE {
                headers.remove(n);
            }
        }
    }
    for h in &HOP_BY_HOP {
        if *h == header::TE && headers.get(h).is_some_and(|v| v == "trailers") {
            continue;
        }
        headers.remove(h);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// Why an HTTP/1.x request's `Host` header makes it unanswerable, as Go's
/// net/http judges: HTTP/1.1 requires exactly one (CONNECT excepted);
/// HTTP/1.0 may omit it (and is routed with an empty host). HTTP/2 names
/// its host in `:authority`.
fn host_problem(req: &Request<Incoming>) -> Option<&'static str> {
    if req.version() != Version::HTTP_11 && req.version() != Version::HTTP_10 {
        return None;
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Some("too many Host headers"),
        (None, _) if req.version() == Version::HTTP_11 && req.method() != http::Method::CONNECT => {
            Some("missing required Host header")
        }
        _ => None,
    }
}

/// A 400 for a request rejected before routing (not counted: Go's server
/// rejects these before any handler sees them); the connection is closed.
fn bad_request(problem: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(format!("400 Bad Request: {problem}")));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Sets `X-Forwarded-Host` (unless the client sent one) to the host the
/// request was for, as received: the URI's authority (HTTP/2
/// `:authority`, absolute-form HTTP/1.1), else `Host`. A request without
/// `Host` gets one: that authority, else (HTTP/1.0 without a host) the
/// backend's address, as Go's transport would send.
fn set_host_and_forwarded_host(parts: &mut http::request::Parts, backend: &str) {
    let from_uri = parts
        .uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let host = parts.headers.get(header::HOST).cloned();
    let has_host = host.is_some();
    let forwarded_host = from_uri.clone().or(host);
    if !has_host {
        let v = from_uri.or_else(|| HeaderValue::from_str(backend).ok());
        if let Some(v) = v {
            parts.headers.insert(header::HOST, v);
        }
    }
    if let Some(v) = forwarded_host
        && let http::header::Entry::Vacant(e) = parts.headers.entry(X_FORWARDED_HOST)
    {
        e.insert(v);
    }
}

/// Sets `X-Forwarded-For` to every line the client sent, joined with
/// `, ` in order, then the client's address.
fn append_forwarded_for(headers: &mut HeaderMap, peer: &Peer) {
    let ip = peer.forwarded_for.as_bytes();
    let prior = || {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter(|v| !v.is_empty())
    };
    let len: usize = prior().map(|v| v.len() + 2).sum();
    if len == 0 {
        headers.insert(X_FORWARDED_FOR, peer.forwarded_for.clone());
        return;
    }
    let mut joined = Vec::with_capacity(len + ip.len());
    for v in prior() {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(ip);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Copies bytes both ways between an upgraded client and backend until
/// either side closes; the request stays counted meanwhile.
async fn tunnel(client: OnUpgrade, backend: OnUpgrade, guard: RequestGuard) {
    let (client, backend) = match tokio::try_join!(client, backend) {
        Ok(x) => x,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            drop(guard);
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut backend = TokioIo::new(backend);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
        debug!(error = %e, "upgraded connection ended");
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(input.as_bytes()), want);
        }
        let a = super::websocket_key();
        assert_eq!(a.len(), 24);
        assert_ne!(a, super::websocket_key());
    }
}
