//! [`RoutingTable`]: an immutable, cheaply cloned snapshot of every route,
//! indexed for lookups whose cost does not depend on the table's size.
//!
//! # Index
//! Three host tiers, probed in precedence order:
//! - `exact`: normalised host -> bucket;
//! - `wildcard`: suffix -> bucket, probed from the request host's longest
//!   proper suffix down (`a.b.c` probes `b.c`, then `c`), skipping suffix
//!   lengths (in labels) that no wildcard has;
//! - `any`: the catch-all bucket.
//!
//! A bucket maps a normalised path prefix to a short list of entries sorted
//! by precedence. Small buckets are a slice scanned longest prefix first;
//! large ones a hash map probed with the request path's segment prefixes
//! (`/a/b/c`, `/a/b`, `/a`, `/`), so a bucket of 100,000 prefixes costs
//! O(path depth). The first entry whose header filters match wins; if none
//! does, the next shorter prefix, then the next tier, is tried.
//!
//! Every map is persistent (`imbl`, hashed with foldhash), so a clone is a few
//! reference-count increments and an update copies only the O(log n) nodes on
//! the paths to the buckets it touches.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use api::validation::FieldError;
use api::{HTTPScaledObject, InterceptorRoute};
use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

use crate::request::{MAX_HOST_LEN, RequestHeaders, normalize_host_bytes, normalize_path};
use crate::route::{HostPattern, Route, Rule, SourceKind, StaticRoute};

type FastHash = foldhash::fast::RandomState;
type Map<K, V> = imbl::GenericHashMap<K, V, FastHash, imbl::shared_ptr::DefaultSharedPtr>;

/// A host or wildcard suffix as a map key, looked up by bytes so the request
/// host never needs a UTF-8 check.
#[derive(Clone, PartialEq, Eq)]
struct HostKey(Arc<str>);

impl Hash for HostKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash exactly as `[u8]` does, for `Borrow<[u8]>`.
        self.0.as_bytes().hash(state)
    }
}

impl Borrow<[u8]> for HostKey {
    fn borrow(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Buckets with at most this many path prefixes are a scanned slice. Tiny in
/// unit tests so the property tests exercise both representations.
#[cfg(not(test))]
const SMALL_MAX: usize = 8;
#[cfg(test)]
const SMALL_MAX: usize = 2;
/// Wildcard suffixes are counted by label count up to this (the last slot
/// counts everything longer).
const LABEL_SLOTS: usize = 16;
/// Prefixes of a large path index are counted by segment depth up to this
/// (the last slot counts everything deeper).
const DEPTH_SLOTS: usize = 16;

/// One candidate: rule `rule` of `route`, filed under one host and path.
#[derive(Clone)]
struct Entry {
    route: Arc<Route>,
    rule: u32,
    has_headers: bool,
}

impl Entry {
    fn rule(&self) -> &Rule {
        &self.route.rules[self.rule as usize]
    }

    fn matches<H: RequestHeaders + ?Sized>(&self, headers: &H) -> bool {
        !self.has_headers || self.rule().headers.iter().all(|f| f.matches(headers))
    }
}

/// Precedence of two entries filed under the same host and path (smaller
/// first): more header filters, more filters with values, older
/// `creationTimestamp`, then `namespace/name` in DESCENDING order (as
/// upstream sorts; ties are common, timestamps have 1 s resolution); within
/// one object, declaration order.
fn entry_order(a: &Entry, b: &Entry) -> Ordering {
    let (ra, rb) = (a.rule(), b.rule());
    rb.headers
        .len()
        .cmp(&ra.headers.len())
        .then_with(|| rb.valued_headers().cmp(&ra.valued_headers()))
        .then_with(|| a.route.created_order.cmp(&b.route.created_order))
        .then_with(|| b.route.key.cmp(&a.route.key))
        .then_with(|| a.rule.cmp(&b.rule))
}

type Entries = Arc<[Entry]>;

/// The path index of one host (or of the catch-all tier).
#[derive(Clone)]
enum PathIndex {
    /// Prefixes sorted longest first; scanned.
    Small(Arc<[(Arc<str>, Entries)]>),
    /// Probed with the request path's segment prefixes.
    Large(Arc<LargeIndex>),
}

#[derive(Clone, Default)]
struct LargeIndex {
    map: Map<Arc<str>, Entries>,
    /// Number of prefixes per segment depth (`/` 0, `/a` 1, `/a/b` 2, ...),
    /// to skip probes for depths no prefix has.
    depths: [u32; DEPTH_SLOTS],
}

fn depth_slot(prefix: &str) -> usize {
    if prefix == "/" {
        0
    } else {
        prefix
            .bytes()
            .filter(|&b| b == b'/')
            .count()
            .min(DEPTH_SLOTS - 1)
    }
}

impl LargeIndex {
    fn from_items(items: Vec<(Arc<str>, Entries)>) -> Self {
        let mut large = LargeIndex::default();
        for (prefix, entries) in items {
            large.depths[depth_slot(&prefix)] += 1;
            large.map.insert(prefix, entries);
        }
        large
    }
}

impl Default for PathIndex {
    fn default() -> Self {
        PathIndex::Small(Arc::new([]))
    }
}

impl PathIndex {
    fn is_empty(&self) -> bool {
        match self {
            PathIndex::Small(s) => s.is_empty(),
            PathIndex::Large(l) => l.map.is_empty(),
        }
    }

    /// Replaces the entries of `prefix` by `f(current)`; an empty result
    /// removes the prefix.
    fn edit(&mut self, prefix: &Arc<str>, f: impl FnOnce(&[Entry]) -> Vec<Entry>) {
        match self {
            PathIndex::Small(items) => {
                let pos = items.iter().position(|(p, _)| p == prefix);
                let current: &[Entry] = pos.map(|i| &*items[i].1).unwrap_or(&[]);
                let new = f(current);
                let mut v: Vec<(Arc<str>, Entries)> = items.to_vec();
                match (pos, new.is_empty()) {
                    (Some(i), true) => {
                        v.remove(i);
                    }
                    (Some(i), false) => v[i].1 = new.into(),
                    (None, true) => return,
                    (None, false) => v.push((prefix.clone(), new.into())),
                }
                if v.len() > SMALL_MAX {
                    *self = PathIndex::Large(Arc::new(LargeIndex::from_items(v)));
                } else {
                    v.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
                    *items = v.into();
                }
            }
            PathIndex::Large(large) => {
                let current = large.map.get(&**prefix).map(|e| &**e).unwrap_or(&[]);
                let existed = !current.is_empty();
                let new = f(current);
                if new.is_empty() && !existed {
                    return;
                }
                let large_mut = Arc::make_mut(large);
                let slot = &mut large_mut.depths[depth_slot(prefix)];
                if new.is_empty() {
                    large_mut.map.remove(&**prefix);
                    *slot -= 1;
                } else {
                    large_mut.map.insert(prefix.clone(), new.into());
                    *slot += u32::from(!existed);
                }
                if large_mut.map.len() <= SMALL_MAX / 2 {
                    let mut v: Vec<(Arc<str>, Entries)> = large_mut
                        .map
                        .iter()
                        .map(|(k, e)| (k.clone(), e.clone()))
                        .collect();
                    v.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
                    *self = PathIndex::Small(v.into());
                }
            }
        }
    }

    /// The best entry for `path`: longest matching prefix first, first entry
    /// (in precedence order) whose headers match.
    fn lookup<'a, H: RequestHeaders + ?Sized>(
        &'a self,
        path: &str,
        headers: &H,
    ) -> Option<(&'a str, &'a Entry)> {
        match self {
            PathIndex::Small(items) => items.iter().find_map(|(prefix, entries)| {
                if crate::path_prefix_matches(prefix, path) {
                    first_match(entries, headers).map(|e| (&**prefix, e))
                } else {
                    None
                }
            }),
            PathIndex::Large(large) => {
                let bytes = path.as_bytes();
                if bytes.first() == Some(&b'/') {
                    // `depth` is the number of '/' in `path[..end]`.
                    let mut depth = bytes.iter().filter(|&&b| b == b'/').count();
                    let mut end = bytes.len();
                    while end > 1 {
                        // `path[..end]` ends before a '/' or at the end; a
                        // prefix never ends in '/', so skip those.
                        if bytes[end - 1] != b'/'
                            && large.depths[depth.min(DEPTH_SLOTS - 1)] != 0
                            && let Some((k, entries)) = large.map.get_key_value(&path[..end])
                            && let Some(e) = first_match(entries, headers)
                        {
                            return Some((&**k, e));
                        }
                        end = match bytes[..end].iter().rposition(|&b| b == b'/') {
                            Some(i) => i,
                            None => break,
                        };
                        depth -= 1;
                    }
                }
                if large.depths[0] == 0 {
                    return None;
                }
                let (k, entries) = large.map.get_key_value("/")?;
                first_match(entries, headers).map(|e| (&**k, e))
            }
        }
    }

    #[cfg(test)]
    fn for_each(&self, mut f: impl FnMut(&Arc<str>, &Entries)) {
        match self {
            PathIndex::Small(items) => items.iter().for_each(|(k, v)| f(k, v)),
            PathIndex::Large(large) => large.map.iter().for_each(|(k, v)| f(k, v)),
        }
    }

    #[cfg(test)]
    fn check_depths(&self) {
        if let PathIndex::Large(large) = self {
            let mut depths = [0u32; DEPTH_SLOTS];
            for k in large.map.keys() {
                depths[depth_slot(k)] += 1;
            }
            assert_eq!(depths, large.depths);
        }
    }
}

fn first_match<'a, H: RequestHeaders + ?Sized>(
    entries: &'a [Entry],
    headers: &H,
) -> Option<&'a Entry> {
    entries.iter().find(|e| e.matches(headers))
}

/// The objects of one namespace/name: at most one of each kind. The active
/// one (indexed for lookups) is the `InterceptorRoute` when there is one.
#[derive(Clone, Default)]
struct Slot {
    http_scaled_object: Option<Arc<Route>>,
    interceptor_route: Option<Arc<Route>>,
}

impl Slot {
    fn active(&self) -> Option<&Arc<Route>> {
        self.interceptor_route
            .as_ref()
            .or(self.http_scaled_object.as_ref())
    }

    fn get_mut(&mut self, kind: SourceKind) -> &mut Option<Arc<Route>> {
        match kind {
            SourceKind::HttpScaledObject => &mut self.http_scaled_object,
            SourceKind::InterceptorRoute => &mut self.interceptor_route,
        }
    }

    fn get(&self, kind: SourceKind) -> Option<&Arc<Route>> {
        match kind {
            SourceKind::HttpScaledObject => self.http_scaled_object.as_ref(),
            SourceKind::InterceptorRoute => self.interceptor_route.as_ref(),
        }
    }
}

/// The best route for a request, borrowed from a [`RoutingTable`].
#[derive(Clone, Copy, Debug)]
pub struct RouteMatch<'a> {
    /// The matched route (clone the `Arc` to keep it past the table snapshot).
    pub route: &'a Arc<Route>,
    /// The rule that matched.
    pub rule: &'a Rule,
    /// The normalised path prefix that matched (`/` for catch-all paths).
    pub path_prefix: &'a str,
    /// What to do with the request.
    pub action: Action<'a>,
}

/// What the interceptor does with a matched request.
#[derive(Clone, Copy, Debug)]
pub enum Action<'a> {
    /// Forward to `route.target` (counted, with the route's cold-start policy).
    Forward,
    /// A static route of the matched route answers: `route.static_routes[index]`.
    /// Not counted (static traffic must not scale the app). With
    /// [`ResponseMode::WhenUnavailable`](crate::ResponseMode) the interceptor
    /// answers only while the target has no ready endpoint, and otherwise
    /// forwards to `route.target` (still uncounted, no cold-start wait).
    Static {
        /// Index into [`Route::static_routes`].
        index: usize,
        /// The static route.
        route: &'a StaticRoute,
    },
}

/// An immutable snapshot of every route, indexed for lookups.
///
/// Cheap to clone (persistent maps and `Arc`s): the sync loop clones the
/// published table, applies changes, and publishes the result; readers keep
/// using their snapshot. [`version`](RoutingTable::version) increases with
/// every change.
///
/// ```
/// use routing::{NoHeaders, RoutingTable};
/// let obj: api::HTTPScaledObject = api::yaml::from_str(r#"
/// apiVersion: http.keda.sh/v1alpha1
/// kind: HTTPScaledObject
/// metadata: {name: app, namespace: team}
/// spec:
///   hosts: [app.example.com]
///   pathPrefixes: [/api]
///   scaleTargetRef: {name: app, service: app-svc, port: 8080}
/// "#).unwrap();
/// let mut table = RoutingTable::new();
/// assert!(table.apply(routing::compile_http_scaled_object(&obj).unwrap()));
/// let m = table.lookup("App.Example.com:8080", "/api/users?x=1", &NoHeaders).unwrap();
/// assert_eq!(&**m.route.key(), "team/app");
/// assert!(table.lookup("app.example.com", "/apiv2", &NoHeaders).is_none());
/// ```
#[derive(Clone, Default)]
pub struct RoutingTable {
    version: u64,
    objects: Map<Arc<str>, Slot>,
    active: usize,
    exact: Map<HostKey, PathIndex>,
    wildcard: Map<HostKey, PathIndex>,
    /// Number of wildcard suffixes per label count (index `labels - 1`, the
    /// last slot counting all longer ones), to skip pointless probes.
    wildcard_labels: [u32; LABEL_SLOTS],
    any: PathIndex,
}

impl fmt::Debug for RoutingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoutingTable")
            .field("version", &self.version)
            .field("routes", &self.active)
            .field("exact_hosts", &self.exact.len())
            .field("wildcard_hosts", &self.wildcard.len())
            .finish_non_exhaustive()
    }
}

fn label_slot(suffix: &str) -> usize {
    (suffix.bytes().filter(|&b| b == b'.').count()).min(LABEL_SLOTS - 1)
}

impl RoutingTable {
    /// An empty table, version 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table holding `routes` (later duplicates of a kind and key win).
    pub fn from_routes(routes: impl IntoIterator<Item = Route>) -> Self {
        let mut t = Self::new();
        t.extend(routes);
        t
    }

    /// Compiles the objects and builds a table of every valid one; the errors
    /// name each invalid object and field. An invalid object never costs a
    /// valid one its route.
    pub fn from_objects<'a>(
        http_scaled_objects: impl IntoIterator<Item = &'a HTTPScaledObject>,
        interceptor_routes: impl IntoIterator<Item = &'a InterceptorRoute>,
    ) -> (Self, Vec<FieldError>) {
        let (routes, errors) = crate::compile_all(http_scaled_objects, interceptor_routes);
        (Self::from_routes(routes), errors)
    }

    /// Increases with every change; unchanged by no-op updates.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Number of active routes (namespace/name keys); an `HTTPScaledObject`
    /// shadowed by an `InterceptorRoute` of the same key is not counted.
    pub fn len(&self) -> usize {
        self.active
    }

    /// Whether the table has no route.
    pub fn is_empty(&self) -> bool {
        self.active == 0
    }

    /// The active route of `namespace/name` (the `InterceptorRoute` if both
    /// kinds exist).
    pub fn get(&self, namespace: &str, name: &str) -> Option<&Arc<Route>> {
        self.slot(namespace, name).and_then(Slot::active)
    }

    /// The route compiled from the object of `kind` named `namespace/name`,
    /// active or shadowed (for the sync loop's resync comparisons).
    pub fn get_kind(&self, kind: SourceKind, namespace: &str, name: &str) -> Option<&Arc<Route>> {
        self.slot(namespace, name).and_then(|s| s.get(kind))
    }

    /// The active routes, in no particular order.
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> + '_ {
        self.objects.values().filter_map(Slot::active)
    }

    /// Every route in the table, shadowed `HTTPScaledObject`s included, in no
    /// particular order.
    pub fn all_routes(&self) -> impl Iterator<Item = &Arc<Route>> + '_ {
        self.objects.values().flat_map(|s| {
            s.http_scaled_object
                .iter()
                .chain(s.interceptor_route.iter())
        })
    }

    fn slot(&self, namespace: &str, name: &str) -> Option<&Slot> {
        let mut buf = [0u8; 320];
        let len = namespace.len() + 1 + name.len();
        if len <= buf.len() {
            buf[..namespace.len()].copy_from_slice(namespace.as_bytes());
            buf[namespace.len()] = b'/';
            buf[namespace.len() + 1..len].copy_from_slice(name.as_bytes());
            let key = std::str::from_utf8(&buf[..len]).ok()?;
            self.objects.get(key)
        } else {
            self.objects.get(format!("{namespace}/{name}").as_str())
        }
    }

    /// Adds or replaces the route of `route.kind()` at `route.key()`. Returns
    /// whether the table changed: re-applying a route equal to the stored one
    /// (same resourceVersion and content) is a no-op and keeps the version.
    ///
    /// The route takes over the counters of any route already stored under
    /// its key, so in-flight requests keep counting against the same atomics.
    pub fn apply(&mut self, route: Route) -> bool {
        let changed = self.apply_inner(route);
        if changed {
            self.version += 1;
        }
        changed
    }

    /// Removes the route of `kind` at `namespace/name`; removing an
    /// `InterceptorRoute` re-activates a shadowed `HTTPScaledObject`.
    /// Returns whether the table changed.
    pub fn remove(&mut self, kind: SourceKind, namespace: &str, name: &str) -> bool {
        let changed = self.remove_inner(kind, &format!("{namespace}/{name}"));
        if changed {
            self.version += 1;
        }
        changed
    }

    /// Applies every route; the version increases once if anything changed.
    /// Returns the number of routes that changed the table.
    pub fn extend(&mut self, routes: impl IntoIterator<Item = Route>) -> usize {
        let changed = routes
            .into_iter()
            .filter_map(|r| self.apply_inner(r).then_some(()))
            .count();
        if changed > 0 {
            self.version += 1;
        }
        changed
    }

    /// Makes the table hold exactly `routes` (a full relist): applies each,
    /// removes every stored route not among them, and keeps the counters of
    /// keys that stay. Returns the number of routes added, changed or removed
    /// (0 when the table already matched); the version increases once if
    /// that is not 0.
    pub fn reset(&mut self, routes: impl IntoIterator<Item = Route>) -> usize {
        let mut keep = std::collections::HashSet::new();
        let mut changed = 0;
        for r in routes {
            keep.insert((r.kind, r.key.clone()));
            changed += usize::from(self.apply_inner(r));
        }
        let stale: Vec<(SourceKind, Arc<str>)> = self
            .all_routes()
            .map(|r| (r.kind, r.key.clone()))
            .filter(|k| !keep.contains(k))
            .collect();
        for (kind, key) in stale {
            changed += usize::from(self.remove_inner(kind, &key));
        }
        if changed > 0 {
            self.version += 1;
        }
        changed
    }

    fn apply_inner(&mut self, mut route: Route) -> bool {
        let mut slot = self.objects.get(&*route.key).cloned().unwrap_or_default();
        if slot.get(route.kind).is_some_and(|old| **old == route) {
            return false;
        }
        if let Some(existing) = slot.active() {
            route.counters = existing.counters.clone();
        }
        let was_empty = slot.active().is_none();
        let old_active = slot.active().cloned();
        let (key, kind) = (route.key.clone(), route.kind);
        *slot.get_mut(kind) = Some(Arc::new(route));
        let new_active = slot.active().cloned();
        self.objects.insert(key, slot);
        if was_empty {
            self.active += 1;
        }
        self.reindex(old_active.as_ref(), new_active.as_ref());
        true
    }

    fn remove_inner(&mut self, kind: SourceKind, key: &str) -> bool {
        let Some(mut slot) = self.objects.get(key).cloned() else {
            return false;
        };
        let old_active = slot.active().cloned();
        if slot.get_mut(kind).take().is_none() {
            return false;
        }
        let new_active = slot.active().cloned();
        if new_active.is_none() {
            self.objects.remove(key);
            self.active -= 1;
        } else {
            // Keep the key's counters with the route that stays.
            let stored = self.objects.get_mut(key).expect("slot exists");
            *stored = slot;
        }
        self.reindex(old_active.as_ref(), new_active.as_ref());
        true
    }

    fn reindex(&mut self, old: Option<&Arc<Route>>, new: Option<&Arc<Route>>) {
        if let (Some(a), Some(b)) = (old, new)
            && Arc::ptr_eq(a, b)
        {
            return;
        }
        if let Some(old) = old {
            for (host, path) in placements(old) {
                self.edit(host, path, |entries| {
                    entries
                        .iter()
                        .filter(|e| !Arc::ptr_eq(&e.route, old))
                        .cloned()
                        .collect()
                });
            }
        }
        if let Some(new) = new {
            for (host, path) in placements(new) {
                self.edit(host, path, |entries| {
                    let mut v = entries.to_vec();
                    for (i, rule) in new.rules.iter().enumerate() {
                        if rule.hosts.contains(host) && rule.paths.contains(path) {
                            v.push(Entry {
                                route: new.clone(),
                                rule: i as u32,
                                has_headers: !rule.headers.is_empty(),
                            });
                        }
                    }
                    v.sort_by(entry_order);
                    v
                });
            }
        }
    }

    fn edit(
        &mut self,
        host: &HostPattern,
        path: &Arc<str>,
        f: impl FnOnce(&[Entry]) -> Vec<Entry>,
    ) {
        match host {
            HostPattern::Any => self.any.edit(path, f),
            HostPattern::Exact(h) => edit_bucket(&mut self.exact, h, path, f),
            HostPattern::Wildcard(s) => {
                let before = self.wildcard.contains_key(s.as_bytes());
                edit_bucket(&mut self.wildcard, s, path, f);
                let after = self.wildcard.contains_key(s.as_bytes());
                let slot = &mut self.wildcard_labels[label_slot(s)];
                match (before, after) {
                    (false, true) => *slot += 1,
                    (true, false) => *slot -= 1,
                    _ => {}
                }
            }
        }
    }

    /// The best route for a request. `host` is the `Host` header or URI
    /// authority as received (case, port and a trailing dot are ignored);
    /// `path` may carry a query string (ignored). Does not allocate.
    ///
    /// Precedence (see the crate docs): host tier (exact, then wildcards from
    /// the most specific suffix, then catch-all), then the longest matching
    /// path prefix on whole segments, then more header filters, more filters
    /// with values, older `creationTimestamp`, namespace/name. A candidate
    /// whose headers do not match is skipped, falling back to shorter
    /// prefixes on the same host tier before the next tier.
    pub fn lookup<H: RequestHeaders + ?Sized>(
        &self,
        host: &str,
        path: &str,
        headers: &H,
    ) -> Option<RouteMatch<'_>> {
        let path = normalize_path(path);
        let mut buf = [0u8; MAX_HOST_LEN];
        let host = normalize_host_bytes(host.as_bytes(), &mut buf);
        let found = host
            .and_then(|host| self.lookup_host(host, path, headers))
            .or_else(|| self.any.lookup(path, headers))?;
        let (path_prefix, entry) = found;
        let rule = entry.rule();
        let route = &entry.route;
        let action = if route.static_routes.is_empty() {
            Action::Forward
        } else {
            // Only hosts of ASCII text reach the proxy; a host too long to
            // normalise matches catch-all host patterns only.
            let host = host.and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
            match route.static_route_for(host, path, headers) {
                Some(index) => Action::Static {
                    index,
                    route: &route.static_routes[index],
                },
                None => Action::Forward,
            }
        };
        Some(RouteMatch {
            route: &entry.route,
            rule,
            path_prefix,
            action,
        })
    }

    fn lookup_host<H: RequestHeaders + ?Sized>(
        &self,
        host: &[u8],
        path: &str,
        headers: &H,
    ) -> Option<(&str, &Entry)> {
        if let Some(bucket) = self.exact.get(host)
            && let Some(found) = bucket.lookup(path, headers)
        {
            return Some(found);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        // Suffixes after each dot, longest first; `dots` counts the dots left
        // in the suffix, i.e. its labels minus one.
        let mut dots = host.iter().filter(|&&b| b == b'.').count();
        let mut start = 0;
        while dots > 0 {
            let Some(i) = host[start..].iter().position(|&b| b == b'.') else {
                break;
            };
            let dot = start + i;
            dots -= 1;
            start = dot + 1;
            // A wildcard needs a non-empty label before its suffix.
            if dot == 0 || self.wildcard_labels[dots.min(LABEL_SLOTS - 1)] == 0 {
                continue;
            }
            if let Some(bucket) = self.wildcard.get(&host[start..])
                && let Some(found) = bucket.lookup(path, headers)
            {
                return Some(found);
            }
        }
        None
    }
}

fn edit_bucket(
    map: &mut Map<HostKey, PathIndex>,
    key: &Arc<str>,
    path: &Arc<str>,
    f: impl FnOnce(&[Entry]) -> Vec<Entry>,
) {
    match map.get_mut(key.as_bytes()) {
        Some(bucket) => {
            bucket.edit(path, f);
            if bucket.is_empty() {
                map.remove(key.as_bytes());
            }
        }
        None => {
            let mut bucket = PathIndex::default();
            bucket.edit(path, f);
            if !bucket.is_empty() {
                map.insert(HostKey(key.clone()), bucket);
            }
        }
    }
}

/// The distinct (host, path) pairs a route is filed under.
fn placements(route: &Route) -> Vec<(&HostPattern, &Arc<str>)> {
    let mut out: Vec<(&HostPattern, &Arc<str>)> = Vec::new();
    for rule in &route.rules {
        for host in &rule.hosts {
            for path in &rule.paths {
                if !out.iter().any(|(h, p)| *h == host && *p == path) {
                    out.push((host, path));
                }
            }
        }
    }
    out
}

/// `{"version": n, "routes": [...]}`, routes sorted by key (the
/// `/routing-table` admin view).
impl Serialize for RoutingTable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut routes: Vec<&Arc<Route>> = self.routes().collect();
        routes.sort_by(|a, b| a.key.cmp(&b.key));
        let mut st = s.serialize_struct("RoutingTable", 2)?;
        st.serialize_field("version", &self.version)?;
        st.serialize_field("routes", &routes)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (tier and host, path prefix, entries as (route key, rule index)).
    pub(crate) type IndexRow = (String, String, Vec<(String, u32)>);

    impl RoutingTable {
        /// Every (tier, host, path, entry keys) of the index, sorted: two
        /// tables with equal dumps answer every lookup alike.
        pub(crate) fn dump_index(&self) -> Vec<IndexRow> {
            let mut out = Vec::new();
            let mut add = |tier: String, idx: &PathIndex| {
                idx.for_each(|p, entries| {
                    out.push((
                        tier.clone(),
                        p.to_string(),
                        entries
                            .iter()
                            .map(|e| (e.route.key.to_string(), e.rule))
                            .collect(),
                    ))
                })
            };
            for (h, idx) in self.exact.iter() {
                idx.check_depths();
                add(format!("exact {}", h.0), idx);
            }
            for (h, idx) in self.wildcard.iter() {
                idx.check_depths();
                add(format!("wildcard {}", h.0), idx);
            }
            self.any.check_depths();
            add("any".to_string(), &self.any);
            out.sort();
            out
        }

        pub(crate) fn wildcard_label_counts(&self) -> [u32; LABEL_SLOTS] {
            self.wildcard_labels
        }
    }

    fn hso(rv: &str, hosts: &[&str]) -> Route {
        let obj: HTTPScaledObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"namespace": "ns", "name": "app", "resourceVersion": rv},
            "spec": {
                "hosts": hosts,
                "scaleTargetRef": {"name": "app", "service": "svc", "port": 8080},
            },
        }))
        .unwrap();
        crate::compile_http_scaled_object(&obj).unwrap()
    }

    /// Cold-start waiters and request series are per-route state like the
    /// `/queue` counters: an update keeps them, a key that leaves and comes
    /// back starts afresh.
    #[test]
    fn per_route_state_carries_over_updates() {
        use std::sync::atomic::Ordering::Relaxed;
        use std::time::Duration;

        let mut t = RoutingTable::new();
        t.apply(hso("1", &["a"]));
        let before = t.get("ns", "app").unwrap().clone();
        before.counters.pending.fetch_add(2, Relaxed);
        before
            .counters
            .observe(&http::Method::GET, 200, Duration::from_millis(1));

        assert!(t.apply(hso("2", &["a", "b"])));
        let after = t.get("ns", "app").unwrap();
        assert!(!Arc::ptr_eq(&before, after));
        assert_eq!(after.counters.pending.load(Relaxed), 2);
        after
            .counters
            .observe(&http::Method::GET, 200, Duration::from_millis(1));
        let series: Vec<(u16, u64)> = before
            .counters
            .request_series()
            .map(|s| (s.code(), s.count()))
            .collect();
        assert_eq!(series, [(200, 2)]);

        t.remove(SourceKind::HttpScaledObject, "ns", "app");
        t.apply(hso("3", &["a"]));
        let fresh = &t.get("ns", "app").unwrap().counters;
        assert_eq!(fresh.pending.load(Relaxed), 0);
        assert_eq!(fresh.request_series().count(), 0);
    }
}
