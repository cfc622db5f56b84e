//! Routing for the KEDA HTTP Add-on: custom resources in, routing decisions out.
//!
//! Pure: no I/O, no async runtime, no clock.
//!
//! # Data flow
//! - **In:** the sync loop hands each `HTTPScaledObject` / `InterceptorRoute`
//!   (typed, from the `api` crate) to [`compile_http_scaled_object`] /
//!   [`compile_interceptor_route`]. Validation (`api::validation`) runs first;
//!   an invalid object yields [`FieldError`](api::validation::FieldError)s naming
//!   the object and field, and never affects other objects
//!   ([`compile_all`], [`RoutingTable::from_objects`]).
//! - **Index:** the resulting [`Route`]s go into a [`RoutingTable`] with
//!   [`apply`](RoutingTable::apply), [`remove`](RoutingTable::remove) and
//!   [`reset`](RoutingTable::reset) (a full relist). The table is an immutable,
//!   cheaply cloned snapshot: clone the published one, change it, publish it
//!   (e.g. through an `ArcSwap`). One changed object costs O(its rules x log n).
//! - **Out:** the proxy calls [`RoutingTable::lookup`] per request (no
//!   allocation, no lock, cost independent of the table size) and gets a
//!   [`RouteMatch`]: the [`Route`] (target, timeouts, cold-start policy,
//!   [`RouteCounters`]) and the [`Action`] (forward, or a static response).
//!   The scaler reads [`Route::scaling`] and the counters; the admin server
//!   serialises the table (`/routing-table`) and the counters (`/queue`).
//!
//! # Precedence
//! Among all candidates (a forwarding rule of an active route whose host
//! pattern matches, one of whose path prefixes matches on whole segments, and
//! all of whose header filters match), the best is the smallest by:
//! 1. host: exact, then wildcard with a longer suffix, then shorter suffix,
//!    then catch-all. Hosts are case-insensitive; the port and a trailing dot
//!    are ignored, in rules (`example.com:8080`) as in requests; IPv6
//!    literals (`::1`, `[::1]:8080`) are hosts. `*.example.com` matches
//!    `a.example.com` and `a.b.example.com`, not `example.com`.
//! 2. longer path prefix. Prefixes match whole segments: `/api` matches `/api`,
//!    `/api/` and `/api/x`, not `/apiv2`; `/` matches everything. As upstream,
//!    every leading and trailing `/` of rule paths and request paths is
//!    trimmed before matching (`api`, `/api/` and `//api//` are the prefix
//!    `/api`; a request for `///api` matches it); the request target sent to
//!    the backend is untouched. Paths are case-sensitive and compared as
//!    received (no percent-decoding); the query string is ignored.
//! 3. more header filters, then more filters with a value;
//! 4. older `creationTimestamp` (an object without one is the youngest);
//! 5. `namespace/name` in descending order, as upstream (`beta/app` before
//!    `alpha/app`);
//! 6. within one object, declaration order.
//!
//! Because header filters are part of the candidate test, a request whose
//! headers reject every route at the longest prefix falls back to shorter
//! prefixes on the same host, then to wildcards, then to catch-all routes
//! (upstream jumps straight to wildcards). An `InterceptorRoute` shadows an
//! `HTTPScaledObject` with the same namespace/name; removing it re-activates
//! the `HTTPScaledObject`. An `HTTPScaledObject` without hosts is a
//! catch-all (on `/` when it has no paths); an `InterceptorRoute` without
//! rules routes nothing, as upstream (its key stays in the table, so
//! `/queue` lists it).
//!
//! # Static routes
//! The `staticRoutes` of an `InterceptorRoute` are not candidates of their
//! own: once a request is routed to an `InterceptorRoute` by its forwarding
//! rules, its static routes are tried in order and the first with a matching
//! rule answers ([`Action::Static`]). So a static route never captures
//! another host or outranks another route.

mod compile;
mod request;
mod route;
mod table;

pub use compile::{compile_all, compile_http_scaled_object, compile_interceptor_route};
pub use request::{MAX_HOST_LEN, NoHeaders, RequestHeaders, normalize_host, normalize_path};
pub use route::{
    ColdStart, ConcurrencyTarget, Fallback, HeaderFilter, HostPattern, PortRef, RequestRateTarget,
    ResponseBody, ResponseMode, Route, RouteCounters, Rule, Scaling, SourceKind, StaticResponse,
    StaticRoute, Target, Timeouts, path_prefix_matches,
};
pub use route::{LATENCY_BUCKETS, RequestSeries};
pub use table::{Action, RouteMatch, RoutingTable};

#[cfg(test)]
mod proptests;
#[cfg(any(test, feature = "reference"))]
pub mod reference;
