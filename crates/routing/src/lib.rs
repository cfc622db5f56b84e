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
//! Among all candidates (a rule of an active route whose host pattern matches,
//! one of whose path prefixes matches on whole segments, and all of whose
//! header filters match), the best is the smallest by:
//! 1. host: exact, then wildcard with a longer suffix, then shorter suffix,
//!    then catch-all. Hosts are case-insensitive; the port and a trailing dot
//!    are ignored. `*.example.com` matches `a.example.com` and
//!    `a.b.example.com`, not `example.com`.
//! 2. longer path prefix. Prefixes match whole segments: `/api` matches `/api`,
//!    `/api/` and `/api/x`, not `/apiv2`; `/` matches everything; a configured
//!    `/api/` is the same prefix as `/api`. Paths are case-sensitive and
//!    compared as received (no percent-decoding); the query string is ignored.
//! 3. more header filters, then more filters with a value;
//! 4. older `creationTimestamp` (an object without one is the youngest);
//! 5. namespace, then name, ascending;
//! 6. within one object: a static route's rule before a forwarding rule, then
//!    declaration order.
//!
//! Because header filters are part of the candidate test, a request whose
//! headers reject every route at the longest prefix falls back to shorter
//! prefixes on the same host, then to wildcards, then to catch-all routes
//! (upstream jumps straight to wildcards). An `InterceptorRoute` shadows an
//! `HTTPScaledObject` with the same namespace/name; removing it re-activates
//! the `HTTPScaledObject`. An `InterceptorRoute` without rules, or an
//! `HTTPScaledObject` without hosts, is a catch-all (on `/` when it has no
//! paths).

mod compile;
mod request;
mod route;
mod table;

pub use compile::{compile_all, compile_http_scaled_object, compile_interceptor_route};
pub use request::{MAX_HOST_LEN, NoHeaders, RequestHeaders, normalize_host};
pub use route::{
    ColdStart, ConcurrencyTarget, Fallback, HeaderFilter, HostMatch, PortRef, ProxyMode,
    RequestRateTarget, ResponseBody, ResponseMode, Route, RouteCounters, Rule, RuleAction, Scaling,
    SourceKind, StaticResponse, StaticRoute, Target, Timeouts, path_prefix_matches,
};
pub use table::{Action, RouteMatch, RoutingTable};

#[cfg(test)]
mod proptests;
