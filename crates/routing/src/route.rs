//! The compiled form of one custom resource: everything the data plane and
//! the scaler need, precomputed so a request never looks anything else up.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use kube::Resource;
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

pub use api::{HostPattern, ResponseMode};

/// Which custom resource a [`Route`] was compiled from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// `HTTPScaledObject` (`http.keda.sh/v1alpha1`).
    HttpScaledObject,
    /// `InterceptorRoute` (`http.keda.sh/v1beta1`); wins over an
    /// `HTTPScaledObject` of the same namespace/name.
    InterceptorRoute,
}

impl SourceKind {
    /// The Kubernetes `kind`, from the `kube::Resource` impl of the API type.
    pub fn as_str(self) -> &'static str {
        static HTTP_SCALED_OBJECT: LazyLock<Cow<'static, str>> =
            LazyLock::new(|| api::HTTPScaledObject::kind(&()));
        static INTERCEPTOR_ROUTE: LazyLock<Cow<'static, str>> =
            LazyLock::new(|| api::InterceptorRoute::kind(&()));
        match self {
            SourceKind::HttpScaledObject => &HTTP_SCALED_OBJECT,
            SourceKind::InterceptorRoute => &INTERCEPTOR_ROUTE,
        }
    }
}

impl Serialize for SourceKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Service port, by number or by name (resolved against the Service later).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// `port: 8080`
    Number(u16),
    /// `portName: http`
    Name(Arc<str>),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for PortRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PortRef::Number(n) => s.serialize_u16(*n),
            PortRef::Name(n) => s.serialize_str(n),
        }
    }
}

/// Where requests of a route are forwarded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// Service name.
    pub service: Arc<str>,
    /// Service namespace (always the route's namespace).
    pub namespace: Arc<str>,
    /// Service port.
    pub port: PortRef,
}

/// Per-route timeouts. `None` means "use the interceptor's global default";
/// `Some(Duration::ZERO)` means "disabled".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// Cold-start wait for a ready endpoint (HTTPSO `timeouts.conditionWait`,
    /// IR `timeouts.readiness`).
    pub readiness: Option<Duration>,
    /// Whole-request timeout (IR only).
    pub request: Option<Duration>,
    /// Time allowed for the backend's response headers.
    pub response_header: Option<Duration>,
}

/// The Service a cold request fails over to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fallback {
    /// The fallback Service (in the route's namespace).
    pub target: Target,
    /// How long to wait for the target before failing over. HTTPSO:
    /// `timeoutSeconds` (default 30 s; `0` is `None`). IR: `None`, i.e. once the readiness
    /// timeout passes.
    pub wait: Option<Duration>,
}

/// The body of a static response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResponseBody {
    /// Literal bytes.
    Inline(Bytes),
    /// A key of a ConfigMap in the route's namespace, resolved by the sync layer.
    ConfigMap {
        /// ConfigMap name.
        name: Arc<str>,
        /// Key within `data`; empty: taken from the request path (as
        /// upstream: the path without its leading `/`, `index.html` for `/`).
        key: Arc<str>,
    },
}

/// A response the interceptor writes itself (placeholder or static route).
#[derive(Clone, Debug, PartialEq)]
pub struct StaticResponse {
    /// Status code (placeholder default 503, static route default 200).
    pub status: StatusCode,
    /// Body.
    pub body: ResponseBody,
    /// Headers, already validated.
    pub headers: HeaderMap,
}

/// A static route of an `InterceptorRoute`: the requests it answers, its
/// response and when it applies.
///
/// As upstream, static routes are consulted only for a request that the
/// route's own forwarding rules already matched: they never match another
/// host or outrank another route. The first static route with a matching
/// rule wins ([`Route::static_route_for`]).
#[derive(Clone, Debug, PartialEq)]
pub struct StaticRoute {
    /// Matching rules, OR-ed (each: any of its hosts, any of its paths, all
    /// of its headers).
    pub rules: Vec<Rule>,
    /// The answer.
    pub response: StaticResponse,
    /// `Always`, or `WhenUnavailable` (only while the target has no ready endpoint;
    /// otherwise the request is forwarded to the route's target).
    pub mode: ResponseMode,
}

/// Cold-start behaviour while the target has no ready endpoint. Boxed
/// because most routes have neither, and every byte counts per route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ColdStart {
    /// Fail over to another Service.
    pub fallback: Option<Box<Fallback>>,
    /// Answer with a static response (IR `coldStart.placeholder`).
    pub placeholder: Option<Box<StaticResponse>>,
}

/// Scale on in-flight requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConcurrencyTarget {
    /// Target in-flight requests per replica.
    pub target_value: i64,
}

/// Scale on the request rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRateTarget {
    /// Target requests per second per replica.
    pub target_value: i64,
    /// Sliding window (default 1 min).
    pub window: Duration,
    /// Bucket size (default 1 s).
    pub granularity: Duration,
}

/// What the scaler reports for a route. An `HTTPScaledObject` always has exactly
/// one of the two (falling back to `targetPendingRequests`, then 100
/// concurrency); an `InterceptorRoute` may have both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scaling {
    /// Concurrency target.
    pub concurrency: Option<ConcurrencyTarget>,
    /// Request-rate target.
    pub request_rate: Option<RequestRateTarget>,
}

/// Upper bounds (seconds) of the request-duration histogram's buckets
/// (upstream's); a last `+Inf` bucket is implied.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Live state of a route on this replica, shared by every request routed to
/// it, the admin `/queue` endpoint and the metrics collector. Created when a
/// key first enters a [`RoutingTable`](crate::RoutingTable) and carried over
/// when an object with the same namespace/name is re-applied, so in-flight
/// requests and the metrics keep counting against the same atomics.
///
/// Plain atomics: a request counts itself without a lock or an allocation
/// (a (method, status) pair the route has never seen before allocates its
/// series once; see [`observe`](RouteCounters::observe)).
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Requests in flight now (`Concurrency` in `/queue`).
    pub concurrency: AtomicI64,
    /// Requests seen since the key entered the table (`RequestCount`), monotonic.
    pub request_count: AtomicU64,
    /// Requests held in a cold-start wait for a ready endpoint now.
    pub pending: AtomicU64,
    /// Finished requests per (method, status code).
    requests: SeriesList,
}

impl RouteCounters {
    /// `(concurrency, request_count)` as seen now.
    pub fn snapshot(&self) -> (i64, u64) {
        (
            self.concurrency.load(Ordering::Relaxed),
            self.request_count.load(Ordering::Relaxed),
        )
    }

    /// Records one finished request: its (method, status) series counts it
    /// and its duration goes into that series' histogram.
    ///
    /// Lock-free once the series exists: a walk of the route's short list of
    /// series (one atomic load per step) and a few atomic adds. The first
    /// request with a new (method, status) allocates its series and links it
    /// at the end of the list; only requests racing to link a series at that
    /// same moment wait for each other, never a request of an existing series.
    ///
    /// ```
    /// let c = routing::RouteCounters::default();
    /// c.observe(&http::Method::GET, 200, std::time::Duration::from_millis(3));
    /// c.observe(&http::Method::GET, 200, std::time::Duration::from_secs(20));
    /// let s = c.request_series().next().unwrap();
    /// assert_eq!((s.method(), s.code(), s.count()), (&http::Method::GET, 200, 2));
    /// assert_eq!(s.bucket_counts()[0], 1); // <= 5 ms; 20 s is above every bound
    /// ```
    pub fn observe(&self, method: &Method, code: u16, elapsed: Duration) {
        self.requests.series(method, code).observe(elapsed);
    }

    /// The (method, status) series seen so far, oldest first.
    pub fn request_series(&self) -> impl Iterator<Item = &RequestSeries> + '_ {
        self.requests.iter()
    }
}

/// The finished requests of one route with one method and status code: a
/// counter and a duration histogram over [`LATENCY_BUCKETS`].
pub struct RequestSeries {
    method: Method,
    code: u16,
    count: AtomicU64,
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// The next series of the route, linked once and never unlinked.
    next: OnceLock<Box<RequestSeries>>,
}

impl RequestSeries {
    fn new(method: Method, code: u16) -> RequestSeries {
        RequestSeries {
            method,
            code,
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            buckets: Default::default(),
            next: OnceLock::new(),
        }
    }

    fn is(&self, method: &Method, code: u16) -> bool {
        self.code == code && self.method == *method
    }

    fn observe(&self, elapsed: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The response status code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// Requests counted.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of their durations.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed))
    }

    /// Requests per bucket of [`LATENCY_BUCKETS`] (not cumulative: a request
    /// is in the first bucket whose bound it does not exceed; those above
    /// every bound are `count() - sum of these`).
    pub fn bucket_counts(&self) -> [u64; LATENCY_BUCKETS.len()] {
        std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed))
    }
}

impl fmt::Debug for RequestSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestSeries")
            .field("method", &self.method)
            .field("code", &self.code)
            .field("count", &self.count())
            .finish_non_exhaustive()
    }
}

/// An append-only linked list of series: readers walk it with one atomic
/// load per node; a writer links a new node with a once-only slot at the
/// tail, so nodes are never moved or freed while the list lives.
#[derive(Default)]
struct SeriesList {
    head: OnceLock<Box<RequestSeries>>,
}

impl fmt::Debug for SeriesList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl SeriesList {
    /// The series of (method, code), linked at the end if new.
    fn series(&self, method: &Method, code: u16) -> &RequestSeries {
        let mut slot = &self.head;
        loop {
            let s = match slot.get() {
                Some(s) => s,
                // Losers of a race to fill this slot wait for the winner
                // and then compare against its series.
                None => slot.get_or_init(|| Box::new(RequestSeries::new(method.clone(), code))),
            };
            if s.is(method, code) {
                return s;
            }
            slot = &s.next;
        }
    }

    fn iter(&self) -> impl Iterator<Item = &RequestSeries> + '_ {
        std::iter::successors(self.head.get().map(|s| &**s), |s| {
            s.next.get().map(|n| &**n)
        })
    }
}

impl Drop for SeriesList {
    fn drop(&mut self) {
        // Unlink one node at a time: dropping the head would otherwise
        // recurse once per series.
        let mut next = self.head.take();
        while let Some(mut s) = next {
            next = s.next.take();
        }
    }
}

/// A header a request must carry; `value: None` means "present with any value".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderFilter {
    /// Header name (lower-case, as `http` stores it).
    pub name: HeaderName,
    /// Exact value, compared byte for byte against each of the request's values.
    pub value: Option<HeaderValue>,
}

impl Serialize for HeaderFilter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("HeaderFilter", 2)?;
        st.serialize_field("name", self.name.as_str())?;
        match &self.value {
            Some(v) => st.serialize_field("value", &String::from_utf8_lossy(v.as_bytes()))?,
            None => st.skip_field("value")?,
        }
        st.end()
    }
}

/// One matching rule: any of `hosts`, any of `paths`, all of `headers`.
///
/// Paths are normalised prefixes, as upstream trims every leading and
/// trailing `/`: they start with exactly one `/` and have no trailing `/`
/// (except `/` itself), so `api`, `/api/` and `//api//` all behave as `/api`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub(crate) hosts: Vec<HostPattern>,
    pub(crate) paths: Vec<Arc<str>>,
    pub(crate) headers: Vec<HeaderFilter>,
}

impl Rule {
    /// Host patterns (never empty: no hosts compiles to [`HostPattern::Any`]).
    pub fn hosts(&self) -> &[HostPattern] {
        &self.hosts
    }
    /// Normalised path prefixes (never empty: no paths compiles to `/`).
    pub fn paths(&self) -> &[Arc<str>] {
        &self.paths
    }
    /// Header filters, all of which must match.
    pub fn headers(&self) -> &[HeaderFilter] {
        &self.headers
    }
    /// Number of header filters that require a value.
    pub fn valued_headers(&self) -> usize {
        self.headers.iter().filter(|h| h.value.is_some()).count()
    }

    /// Whether a request matches this rule on its own: any host pattern, any
    /// path prefix (on whole segments), all header filters. `host` is the
    /// normalised request host (see [`normalize_host`](crate::normalize_host))
    /// and `path` the request path with one leading `/` (see
    /// [`normalize_path`](crate::normalize_path)).
    pub fn matches<H: crate::RequestHeaders + ?Sized>(
        &self,
        host: &str,
        path: &str,
        headers: &H,
    ) -> bool {
        self.hosts.iter().any(|h| h.matches(host))
            && self.paths.iter().any(|p| path_prefix_matches(p, path))
            && self.headers.iter().all(|f| f.matches(headers))
    }
}

/// Whether a normalised prefix matches a request path on whole segments.
/// `/` matches everything; `/api` matches `/api`, `/api/`, `/api/x`, not `/apiv2`.
pub fn path_prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// One compiled `HTTPScaledObject` or `InterceptorRoute`.
///
/// Built by [`compile_http_scaled_object`](crate::compile_http_scaled_object) or
/// [`compile_interceptor_route`](crate::compile_interceptor_route); immutable once
/// in a [`RoutingTable`](crate::RoutingTable), where it lives in an `Arc`.
/// Equality compares content and ignores [`counters`](Route::counters).
#[derive(Debug)]
pub struct Route {
    pub(crate) kind: SourceKind,
    pub(crate) key: Arc<str>,
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) rules: Vec<Rule>,
    /// Nanoseconds since the epoch of `created`, `i128::MAX` when unknown, so
    /// objects without a timestamp lose ties to every object with one.
    pub(crate) created_order: i128,
    /// Where requests go.
    pub target: Target,
    /// Per-route timeouts.
    pub timeouts: Timeouts,
    /// Cold-start policy.
    pub cold_start: ColdStart,
    /// Static routes (IR only), indexed by [`Action::Static`](crate::Action::Static).
    pub static_routes: Vec<StaticRoute>,
    /// What the scaler reports.
    pub scaling: Scaling,
    /// `metadata.creationTimestamp`.
    pub created: Option<SystemTime>,
    /// `metadata.resourceVersion` of the source object.
    pub resource_version: Option<Arc<str>>,
    /// `metadata.generation` of the source object.
    pub generation: Option<i64>,
    /// Live counters (`/queue`, cold-start waiters, request metrics),
    /// shared across re-applies of the same key.
    pub counters: Arc<RouteCounters>,
}

impl Route {
    /// `namespace/name`, the key used by `/queue`, metrics and the scaler.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }
    /// Namespace of the source object.
    pub fn namespace(&self) -> &Arc<str> {
        &self.namespace
    }
    /// Name of the source object.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }
    /// Kind of the source object.
    pub fn kind(&self) -> SourceKind {
        self.kind
    }
    /// Forwarding rules (empty for an `InterceptorRoute` without rules,
    /// which routes nothing, as upstream).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
    /// The first static route with a rule that matches the request (as
    /// upstream: first match wins), by index into
    /// [`static_routes`](Route::static_routes). `host` and `path` are
    /// normalised as for [`Rule::matches`].
    pub fn static_route_for<H: crate::RequestHeaders + ?Sized>(
        &self,
        host: &str,
        path: &str,
        headers: &H,
    ) -> Option<usize> {
        self.static_routes
            .iter()
            .position(|sr| sr.rules.iter().any(|r| r.matches(host, path, headers)))
    }
}

impl PartialEq for Route {
    fn eq(&self, o: &Self) -> bool {
        self.kind == o.kind
            && self.key == o.key
            && self.rules == o.rules
            && self.created_order == o.created_order
            && self.target == o.target
            && self.timeouts == o.timeouts
            && self.cold_start == o.cold_start
            && self.static_routes == o.static_routes
            && self.scaling == o.scaling
            && self.created == o.created
            && self.resource_version == o.resource_version
            && self.generation == o.generation
    }
}

/// The `/routing-table` view: key, kind, rules (hosts, paths, headers,
/// action), target, resourceVersion.
impl Serialize for Route {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Route", 7)?;
        st.serialize_field("key", &*self.key)?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("rules", &self.rules)?;
        if self.static_routes.is_empty() {
            st.skip_field("staticRoutes")?;
        } else {
            let statics: Vec<StaticRouteView<'_>> = self
                .static_routes
                .iter()
                .map(|sr| StaticRouteView {
                    rules: &sr.rules,
                    response_mode: match sr.mode {
                        ResponseMode::Always => "Always",
                        ResponseMode::WhenUnavailable => "WhenUnavailable",
                    },
                    status_code: sr.response.status.as_u16(),
                })
                .collect();
            st.serialize_field("staticRoutes", &statics)?;
        }
        st.serialize_field("target", &self.target)?;
        st.serialize_field("resourceVersion", &self.resource_version.as_deref())?;
        st.serialize_field("generation", &self.generation)?;
        st.end()
    }
}

/// A static route as `/routing-table` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StaticRouteView<'a> {
    rules: &'a [Rule],
    response_mode: &'static str,
    status_code: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_created_once_per_method_and_code_under_contention() {
        let counters = RouteCounters::default();
        let methods = [
            Method::GET,
            Method::POST,
            Method::from_bytes(b"PURGE").unwrap(),
        ];
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (counters, methods) = (&counters, &methods);
                s.spawn(move || {
                    for i in 0..300u64 {
                        let method = &methods[((i + t) % 3) as usize];
                        let code = 200 + (i % 2) as u16;
                        counters.observe(method, code, Duration::from_millis(i % 20));
                    }
                });
            }
        });
        let mut seen: Vec<(String, u16, u64)> = counters
            .request_series()
            .map(|s| (s.method().to_string(), s.code(), s.count()))
            .collect();
        seen.sort();
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert_eq!(seen.iter().map(|s| s.2).sum::<u64>(), 1200);
        for s in counters.request_series() {
            let in_buckets: u64 = s.bucket_counts().iter().sum();
            // 0..20 ms: all within the 25 ms bound.
            assert_eq!(in_buckets, s.count());
        }
    }

    #[test]
    fn histogram_buckets_and_sum() {
        let c = RouteCounters::default();
        for ms in [1, 5, 6, 30, 20_000] {
            c.observe(&Method::GET, 200, Duration::from_millis(ms));
        }
        let s = c.request_series().next().unwrap();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum(), Duration::from_millis(20_042));
        // <= 5 ms: 1 and 5; <= 10 ms: 6; <= 50 ms: 30; 20 s above every bound.
        assert_eq!(s.bucket_counts(), [2, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
