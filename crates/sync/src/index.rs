//! The index the sync loop drives with `apply / delete / reconcile`, and that
//! turns objects into routes in its working [`RoutingTable`].
//!
//! Every input is guarded by resourceVersion when the source gives numeric
//! ones (Kubernetes does: they are etcd revisions): a watch event or a list
//! older than what the index already holds never rolls it back. That lets
//! the watch and the periodic resync run side by side, each applied the
//! moment it arrives, without either one undoing the other.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use api::{FieldError, HTTPScaledObject, InterceptorRoute, ObjectHead};
use bytes::Bytes;
use routing::RoutingTable;
use serde_json::Value;

/// The two kinds of object that make routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// `http.keda.sh/v1alpha1` `HTTPScaledObject`.
    HttpScaledObject,
    /// `http.keda.sh/v1beta1` `InterceptorRoute`.
    InterceptorRoute,
}

impl ObjectKind {
    /// Both kinds, in a fixed order.
    pub const ALL: [ObjectKind; 2] = [ObjectKind::HttpScaledObject, ObjectKind::InterceptorRoute];

    fn ident(self) -> &'static Ident {
        &IDENTS[self.slot()]
    }

    /// The plural resource name (`httpscaledobjects`).
    pub fn resource(self) -> &'static str {
        &self.ident().plural
    }

    /// The `Kind`.
    pub fn kind(self) -> &'static str {
        &self.ident().kind
    }

    /// The `apiVersion`.
    pub fn api_version(self) -> &'static str {
        &self.ident().api_version
    }

    /// The kind for a `Kind` string, if it makes routes.
    pub fn from_kind(kind: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.kind() == kind)
    }

    /// Position in [`ObjectKind::ALL`] (per-kind arrays are indexed by it).
    pub(crate) fn slot(self) -> usize {
        match self {
            ObjectKind::HttpScaledObject => 0,
            ObjectKind::InterceptorRoute => 1,
        }
    }

    fn routing_kind(self) -> routing::SourceKind {
        match self {
            ObjectKind::HttpScaledObject => routing::SourceKind::HttpScaledObject,
            ObjectKind::InterceptorRoute => routing::SourceKind::InterceptorRoute,
        }
    }
}

/// The identity of a routing kind, read once from its `kube::Resource`
/// impl (the one place the CRDs are named: `api`).
#[derive(Debug)]
struct Ident {
    kind: String,
    plural: String,
    api_version: String,
}

impl Ident {
    fn of<K: kube::Resource<DynamicType = ()>>() -> Ident {
        Ident {
            kind: K::kind(&()).into_owned(),
            plural: K::plural(&()).into_owned(),
            api_version: K::api_version(&()).into_owned(),
        }
    }
}

/// In [`ObjectKind::ALL`] order.
static IDENTS: std::sync::LazyLock<[Ident; 2]> = std::sync::LazyLock::new(|| {
    [
        Ident::of::<HTTPScaledObject>(),
        Ident::of::<InterceptorRoute>(),
    ]
});

/// `kind`, namespace and name of an object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Which kind.
    pub kind: ObjectKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.kind(), self.namespace, self.name)
    }
}

/// A resourceVersion: opaque, but compared as a number when it is one.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResourceVersion {
    raw: String,
    num: Option<u64>,
}

impl ResourceVersion {
    /// Wraps a resourceVersion string.
    pub fn new(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let num = raw.parse().ok();
        ResourceVersion { raw, num }
    }

    /// The string as the source sent it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True when both are numeric and `self` is strictly newer than `other`.
    fn newer_than(&self, other: &ResourceVersion) -> bool {
        matches!((self.num, other.num), (Some(a), Some(b)) if a > b)
    }
}

#[derive(Clone, Debug)]
struct Seen {
    rv: ResourceVersion,
    /// False when the latest version we saw is invalid (the table keeps the
    /// last good one, if any).
    valid: bool,
    /// The last [`Listing`] that named this object (its generation; 0:
    /// none). Marking the entry costs nothing where a set of the listed
    /// keys would hold a second copy of every key during each listing.
    listing: u32,
}

/// What one input did to the index.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The table changed.
    Changed,
    /// Nothing to do (same version, or an older one than the index holds).
    Unchanged,
    /// The object is invalid and was skipped; the table keeps its last good
    /// version (if it had one).
    Invalid(Vec<FieldError>),
}

/// The sync loop's working state: what it has seen of each object, and the
/// routing table built from the valid ones.
#[derive(Debug, Default)]
pub struct RouteIndex {
    table: RoutingTable,
    seen: HashMap<ObjectKey, Seen>,
    /// Deleted objects with the resourceVersion of their deletion, so a stale
    /// list or a late event cannot bring them back. Pruned by newer lists.
    tombstones: HashMap<ObjectKey, ResourceVersion>,
    /// Per kind, the running sum of [`wire::digest::object_hash`] over `seen`.
    digest_sums: [u64; 2],
    /// Generations handed to listings ([`Listing::generation`]).
    listings: u32,
}

/// The result of reconciling the index with a complete list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Objects added, changed or removed to match the list.
    pub changes: usize,
    /// Invalid objects in the list (skipped).
    pub invalid: Vec<FieldError>,
}

impl RouteIndex {
    /// An empty index.
    pub fn new() -> Self {
        RouteIndex::default()
    }

    /// The working table (publish a clone: cloning is cheap).
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// Number of objects seen (valid or not) of `kind`.
    pub fn len(&self, kind: ObjectKind) -> usize {
        self.seen.keys().filter(|k| k.kind == kind).count()
    }

    /// (namespace, name, resourceVersion) of every object of `kind` the
    /// index holds, valid or not (for the resync's content digest).
    pub fn versions(&self, kind: ObjectKind) -> impl Iterator<Item = (&str, &str, &str)> {
        self.seen
            .iter()
            .filter(move |(k, _)| k.kind == kind)
            .map(|(k, s)| (k.namespace.as_str(), k.name.as_str(), s.rv.as_str()))
    }

    /// The content digest of `kind` ([`wire::digest`]), kept up to date on
    /// every change: O(1) to read.
    pub fn digest(&self, kind: ObjectKind) -> u64 {
        wire::digest::from_sum(self.digest_sums[kind.slot()])
    }

    fn insert_seen(&mut self, key: ObjectKey, mut seen: Seen) {
        let slot = key.kind.slot();
        let hash = wire::digest::object_hash(&key.namespace, &key.name, seen.rv.as_str());
        self.digest_sums[slot] = self.digest_sums[slot].wrapping_add(hash);
        match self.seen.entry(key) {
            Entry::Occupied(mut e) => {
                // A newer version of an object a listing named is still named.
                seen.listing = e.get().listing;
                let old = e.insert(seen);
                let key = e.key();
                let old_hash =
                    wire::digest::object_hash(&key.namespace, &key.name, old.rv.as_str());
                self.digest_sums[slot] = self.digest_sums[slot].wrapping_sub(old_hash);
            }
            Entry::Vacant(e) => {
                e.insert(seen);
            }
        }
    }

    fn remove_seen(&mut self, key: &ObjectKey) {
        if let Some(old) = self.seen.remove(key) {
            let slot = key.kind.slot();
            let old_hash = wire::digest::object_hash(&key.namespace, &key.name, old.rv.as_str());
            self.digest_sums[slot] = self.digest_sums[slot].wrapping_sub(old_hash);
        }
    }

    /// Objects whose latest version is invalid (the table keeps their last
    /// good version, if they had one).
    pub fn invalid(&self) -> impl Iterator<Item = &ObjectKey> {
        self.seen.iter().filter(|(_, s)| !s.valid).map(|(k, _)| k)
    }

    /// Applies an added or modified object (from a watch, a list or a file).
    pub fn apply(&mut self, kind: ObjectKind, object: impl SourceObject) -> Outcome {
        let (key, rv) = match object.identify(kind) {
            Ok(x) => x,
            Err(e) => return Outcome::Invalid(vec![e]),
        };
        if let Some(seen) = self.seen.get(&key) {
            if seen.rv == rv || seen.rv.newer_than(&rv) {
                return Outcome::Unchanged;
            }
        } else if let Some(deleted_at) = self.tombstones.get(&key)
            && deleted_at.newer_than(&rv)
        {
            return Outcome::Unchanged;
        }
        self.tombstones.remove(&key);
        match object.compile(kind) {
            Ok(route) => {
                self.insert_seen(
                    key,
                    Seen {
                        rv,
                        valid: true,
                        listing: 0,
                    },
                );
                if self.table.apply(route) {
                    Outcome::Changed
                } else {
                    Outcome::Unchanged
                }
            }
            Err(errors) => {
                self.insert_seen(
                    key,
                    Seen {
                        rv,
                        valid: false,
                        listing: 0,
                    },
                );
                Outcome::Invalid(errors)
            }
        }
    }

    /// Applies a deletion. `rv` is the resourceVersion of the delete event,
    /// when known.
    pub fn delete(&mut self, key: &ObjectKey, rv: Option<ResourceVersion>) -> Outcome {
        let rv = rv.unwrap_or_default();
        // Only a numeric version can guard against a stale re-add; without
        // one (a routes directory's deletes) a tombstone would only pile up.
        let guards = rv.num.is_some();
        match self.seen.get(key) {
            Some(seen) if seen.rv.newer_than(&rv) => return Outcome::Unchanged,
            Some(_) => {}
            None => {
                if guards
                    && self
                        .tombstones
                        .get(key)
                        .is_none_or(|old| rv.newer_than(old))
                {
                    self.tombstones.insert(key.clone(), rv);
                }
                return Outcome::Unchanged;
            }
        }
        self.remove_seen(key);
        if guards {
            self.tombstones.insert(key.clone(), rv);
        } else {
            self.tombstones.remove(key);
        }
        if self
            .table
            .remove(key.kind.routing_kind(), &key.namespace, &key.name)
        {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        }
    }

    /// Whether a listing at `list_rv` holding `key` at `rv` would change
    /// the index: it holds another version, not newer than the listing, or
    /// nothing (and no deletion newer than the listing).
    fn differs(&self, key: &ObjectKey, rv: &ResourceVersion, list_rv: &ResourceVersion) -> bool {
        match self.seen.get(key) {
            Some(seen) => seen.rv != *rv && !seen.rv.newer_than(list_rv),
            None => self
                .tombstones
                .get(key)
                .is_none_or(|deleted_at| !deleted_at.newer_than(list_rv)),
        }
    }

    /// The positions of the `items` of a listing of `kind` at `list_rv`
    /// that [`reconcile`](Self::reconcile) would apply: what a
    /// metadata-only listing must fetch in full before it is applied.
    pub fn stale<'a, O: SourceObject + 'a>(
        &self,
        kind: ObjectKind,
        items: impl IntoIterator<Item = &'a O>,
        list_rv: Option<&ResourceVersion>,
    ) -> Vec<usize> {
        let none = ResourceVersion::default();
        let list_rv = list_rv.unwrap_or(&none);
        items
            .into_iter()
            .enumerate()
            .filter(|(_, item)| {
                item.identify(kind)
                    .is_ok_and(|(key, rv)| self.differs(&key, &rv, list_rv))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Reconciles `kind` with a complete list taken at `list_rv`: applies what
    /// differs and deletes what the list lacks, except where the index already
    /// holds something newer than the list (a watch event got there first).
    pub fn reconcile<O: SourceObject>(
        &mut self,
        kind: ObjectKind,
        items: Vec<O>,
        list_rv: Option<ResourceVersion>,
    ) -> Reconciled {
        let mut listing = Listing::new(kind, list_rv);
        for item in items {
            self.listing_item(&mut listing, item);
        }
        self.finish_listing(listing)
    }

    /// One item of a [`Listing`], applied at once (so a large listing is
    /// never held whole: each object is compiled and dropped as it comes).
    pub fn listing_item<O: SourceObject>(&mut self, listing: &mut Listing, item: O) {
        let kind = listing.kind;
        let (key, rv) = match item.identify(kind) {
            Ok(x) => x,
            Err(e) => {
                listing.out.invalid.push(e);
                return;
            }
        };
        let generation = self.generation(listing);
        let differs = self.differs(&key, &rv, &listing.rv);
        if !differs {
            self.mark_listed(&key, generation);
            return;
        }
        // The list is at least as new as what we hold: take it, even if
        // its object looks older than a version we saw but lost.
        self.remove_seen(&key);
        self.tombstones.remove(&key);
        match self.apply(kind, item) {
            Outcome::Changed => listing.out.changes += 1,
            Outcome::Unchanged => {}
            Outcome::Invalid(errors) => {
                listing.out.changes += 1;
                listing.out.invalid.extend(errors);
            }
        }
        self.mark_listed(&key, generation);
    }

    /// The listing's generation, handed out on its first item.
    fn generation(&mut self, listing: &mut Listing) -> u32 {
        *listing.generation.get_or_insert_with(|| {
            // 0 means "never listed"; after u32::MAX listings the counter
            // wraps past it.
            self.listings = self.listings.wrapping_add(1).max(1);
            self.listings
        })
    }

    fn mark_listed(&mut self, key: &ObjectKey, generation: u32) {
        if let Some(seen) = self.seen.get_mut(key) {
            seen.listing = generation;
        }
    }

    /// Ends a [`Listing`]: deletes what it lacks (unless the index holds
    /// something newer than the listing).
    pub fn finish_listing(&mut self, listing: Listing) -> Reconciled {
        let Listing {
            kind,
            rv: list_rv,
            generation,
            mut out,
        } = listing;
        // An empty listing named nothing: every object of its kind is gone
        // (unless newer than the listing).
        let generation = generation.unwrap_or(0);
        let gone: Vec<ObjectKey> = self
            .seen
            .iter()
            .filter(|(k, seen)| {
                k.kind == kind
                    && (generation == 0 || seen.listing != generation)
                    && !seen.rv.newer_than(&list_rv)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.delete(&key, Some(list_rv.clone()));
            out.changes += 1;
        }
        // Tombstones at or below the list are settled: the list agrees.
        self.tombstones
            .retain(|k, rv| k.kind != kind || rv.newer_than(&list_rv));
        // Room to grow before the next rehash: the map then grows at list
        // time, not on the watch event that crosses its load factor (a
        // fleet of identical replicas would all pay that reallocation on
        // the same write). Only when it is nearly full: reserving half
        // again at every listing kept a table twice the size it needed
        // (1.7 MiB more with 10,000 routes), and a resync lists every
        // second, long before watch events alone could fill an eighth.
        let len = self.seen.len();
        if self.seen.capacity() - len < (len / 8).max(16) {
            self.seen.reserve((len / 2).max(16));
        }
        out
    }
}

/// A complete listing of one kind being applied item by item
/// ([`RouteIndex::listing_item`], then [`RouteIndex::finish_listing`]): what
/// it named so far, and what it changed.
#[derive(Debug)]
pub struct Listing {
    kind: ObjectKind,
    rv: ResourceVersion,
    /// Set on its first item ([`RouteIndex::listing_item`]); the entries it
    /// names carry it.
    generation: Option<u32>,
    out: Reconciled,
}

impl Listing {
    /// A listing of `kind` read at `rv`.
    pub fn new(kind: ObjectKind, rv: Option<ResourceVersion>) -> Listing {
        Listing {
            kind,
            rv: rv.unwrap_or_default(),
            generation: None,
            out: Reconciled::default(),
        }
    }

    /// The resourceVersion it was read at.
    pub fn resource_version(&self) -> &ResourceVersion {
        &self.rv
    }
}

/// An object as a source hands it over: a parsed JSON `Value` (a routes
/// directory's YAML) or the raw JSON text of a list item or watch event.
pub trait SourceObject {
    /// Namespace, name and resourceVersion; `Err` when it has no name.
    fn identify(&self, kind: ObjectKind) -> Result<(ObjectKey, ResourceVersion), FieldError>;
    /// The object's route, or why it is invalid.
    fn compile(self, kind: ObjectKind) -> Result<routing::Route, Vec<FieldError>>;
}

impl SourceObject for Value {
    fn identify(&self, kind: ObjectKind) -> Result<(ObjectKey, ResourceVersion), FieldError> {
        identify(kind, self)
    }

    fn compile(self, kind: ObjectKind) -> Result<routing::Route, Vec<FieldError>> {
        compile(kind, self)
    }
}

/// The JSON text of one object, as it came off the wire (a slice of the
/// watch line or list body, not a copy). Read without building a `Value`:
/// its head ([`ObjectHead`]) once, on first use, and the typed object
/// straight from the text when it is applied.
#[derive(Debug)]
pub struct JsonObject {
    json: Bytes,
    head: std::cell::OnceCell<Option<Head>>,
}

/// What an [`ObjectHead`] said, kept so the text is scanned for it once.
#[derive(Debug)]
struct Head {
    namespace: Option<String>,
    name: Option<String>,
    resource_version: Option<String>,
    /// `apiVersion` / `kind` fit, per [`ObjectKind`] (in `ObjectKind::ALL` order).
    fits: [bool; 2],
}

impl JsonObject {
    /// Wraps the JSON text of one object.
    pub fn new(json: impl Into<Bytes>) -> Self {
        JsonObject {
            json: json.into(),
            head: std::cell::OnceCell::new(),
        }
    }

    /// The text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.json
    }

    /// The head, or `None` when the text is not a JSON object. Read in one
    /// pass; text that pass cannot take (a field given twice, a head field
    /// of the wrong type) is read as a `Value` reads it, so every path (the
    /// index's key, a delete's key, the resourceVersion) names the object
    /// its `Value` names, and `fits` is false so the typed parse takes the
    /// checked path.
    fn head(&self) -> Option<&Head> {
        self.head
            .get_or_init(|| {
                let Ok(h) = ObjectHead::parse(&self.json) else {
                    let value: Value = serde_json::from_slice(&self.json).ok()?;
                    return Head::of_value(&value);
                };
                let meta = h.metadata.as_ref();
                let owned = |f: Option<&std::borrow::Cow<'_, str>>| f.map(|s| s.to_string());
                Some(Head {
                    namespace: owned(meta.and_then(|m| m.namespace.as_ref())),
                    name: owned(meta.and_then(|m| m.name.as_ref())),
                    resource_version: owned(meta.and_then(|m| m.resource_version.as_ref())),
                    fits: [h.fits::<HTTPScaledObject>(), h.fits::<InterceptorRoute>()],
                })
            })
            .as_ref()
    }

    /// Whether the text is a JSON object.
    pub fn is_object(&self) -> bool {
        self.head().is_some()
    }

    /// `metadata.resourceVersion`, if the text has one.
    pub fn resource_version(&self) -> Option<&str> {
        self.head()?.resource_version.as_deref()
    }

    /// The key and resourceVersion of the object (namespace `default` when
    /// it has none), without checking for a name: deletes use this.
    pub fn key(
        &self,
        kind: ObjectKind,
    ) -> Result<(ObjectKey, Option<ResourceVersion>), FieldError> {
        let head = self.head().ok_or_else(|| FieldError {
            object: api::parse::UNKNOWN_OBJECT.to_string(),
            field: ".".to_string(),
            message: "not a JSON object".to_string(),
        })?;
        Ok(head.key(kind))
    }
}

impl Head {
    /// The head as a `Value` reading gives it (the API server's reading);
    /// `None` when `object` is not a JSON object.
    fn of_value(object: &Value) -> Option<Head> {
        let meta = object.as_object()?.get("metadata");
        let field = |f: &str| {
            meta.and_then(|m| m.get(f))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(Head {
            namespace: field("namespace"),
            name: field("name"),
            resource_version: field("resourceVersion"),
            fits: [false; 2],
        })
    }

    /// The object's key (namespace `default` when it has none, the name
    /// possibly empty) and resourceVersion.
    fn key(&self, kind: ObjectKind) -> (ObjectKey, Option<ResourceVersion>) {
        (
            ObjectKey {
                kind,
                namespace: self.namespace.as_deref().unwrap_or("default").to_string(),
                name: self.name.clone().unwrap_or_default(),
            },
            self.resource_version.as_deref().map(ResourceVersion::new),
        )
    }
}

impl PartialEq for JsonObject {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
    }
}

impl SourceObject for JsonObject {
    fn identify(&self, kind: ObjectKind) -> Result<(ObjectKey, ResourceVersion), FieldError> {
        if !self.is_object() {
            // Not an object at all: the `Value` path words the error.
            let value: Value = serde_json::from_slice(&self.json).unwrap_or(Value::Null);
            return identify(kind, &value);
        }
        let (key, rv) = self.key(kind)?;
        if key.name.is_empty() {
            return Err(unnamed(kind, &key.namespace));
        }
        Ok((key, rv.unwrap_or_default()))
    }

    fn compile(self, kind: ObjectKind) -> Result<routing::Route, Vec<FieldError>> {
        let fits = self.head().is_some_and(|h| h.fits[kind.slot()]);
        match kind {
            ObjectKind::HttpScaledObject => {
                routing::compile_http_scaled_object(&parse_json(&self.json, fits)?)
            }
            ObjectKind::InterceptorRoute => {
                routing::compile_interceptor_route(&parse_json(&self.json, fits)?)
            }
        }
    }
}

/// `json` as a `K`: in one pass when its head was found to fit `K`, else
/// with the checks that name what does not fit.
fn parse_json<K>(json: &[u8], fits: bool) -> Result<K, Vec<FieldError>>
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    if fits {
        api::parse_object_json_unchecked(json)
    } else {
        api::parse_object_json(json)
    }
    .map_err(|e| vec![e])
}

fn unnamed(kind: ObjectKind, namespace: &str) -> FieldError {
    FieldError {
        object: format!("{namespace}/<unnamed>"),
        field: "metadata.name".to_string(),
        message: format!("a {} needs a name", kind.kind()),
    }
}

/// Reads kind-independent identity (namespace, name, resourceVersion).
fn identify(kind: ObjectKind, object: &Value) -> Result<(ObjectKey, ResourceVersion), FieldError> {
    match value_key(kind, object) {
        Some((key, rv)) if !key.name.is_empty() => Ok((key, rv.unwrap_or_default())),
        Some((key, _)) => Err(unnamed(kind, &key.namespace)),
        None => Err(unnamed(kind, "default")),
    }
}

/// The key and resourceVersion of a JSON object (see [`Head::key`]); `None`
/// when it is not an object.
fn value_key(kind: ObjectKind, object: &Value) -> Option<(ObjectKey, Option<ResourceVersion>)> {
    Head::of_value(object).map(|h| h.key(kind))
}

fn compile(kind: ObjectKind, object: Value) -> Result<routing::Route, Vec<FieldError>> {
    match kind {
        ObjectKind::HttpScaledObject => {
            let obj = api::parse_http_scaled_object(object).map_err(|e| vec![e])?;
            routing::compile_http_scaled_object(&obj)
        }
        ObjectKind::InterceptorRoute => {
            let obj = api::parse_interceptor_route(object).map_err(|e| vec![e])?;
            routing::compile_interceptor_route(&obj)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by the `list_body` fuzz target: an object with a field given
    /// twice (here `kind`) failed the one-pass head read, so `key` (deletes)
    /// found no object where `identify` (applies, lists) read `shop/r`.
    #[test]
    fn a_repeated_field_keys_alike_for_applies_and_deletes() {
        let text =
            br#"{"apiVersion": "http.keda.sh/v1beta1", "kind": "x", "kind": "InterceptorRoute",
            "metadata": {"name": "r", "namespace": "shop", "resourceVersion": "9"}}"#;
        let obj = JsonObject::new(text.to_vec());
        for kind in ObjectKind::ALL {
            let (key, rv) = obj.key(kind).unwrap();
            assert_eq!((key.namespace.as_str(), key.name.as_str()), ("shop", "r"));
            assert_eq!(rv.map(|rv| rv.as_str().to_string()).as_deref(), Some("9"));
            assert_eq!(obj.identify(kind).unwrap().0, key);
        }
        // Still not an object at all: an error, as before.
        assert!(
            JsonObject::new(b"[1]".to_vec())
                .key(ObjectKind::InterceptorRoute)
                .is_err()
        );
    }

    /// Found by the `manifest` fuzz target: serde reads a struct from an
    /// array too, field by field, so `"metadata": ["/api"]` named the object
    /// `/api` in the JSON-text path while its `Value` has no name at all.
    #[test]
    fn arrays_are_not_objects_in_the_head() {
        let texts: [&[u8]; 2] = [
            br#"{"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject", "metadata": ["/api"]}"#,
            br#"["http.keda.sh/v1alpha1", "HTTPScaledObject", {"name": "x", "namespace": "y"}]"#,
        ];
        for text in texts {
            let value: Value = serde_json::from_slice(text).unwrap();
            for kind in ObjectKind::ALL {
                let from_text = JsonObject::new(text.to_vec()).identify(kind);
                assert!(from_text.is_err(), "{from_text:?}");
                assert_eq!(from_text.is_ok(), value.identify(kind).is_ok());
            }
        }
    }

    fn hso(port: Value) -> Value {
        json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
            "spec": {
                "hosts": ["web.example.com"],
                "scaleTargetRef": {"name": "web", "service": "web", "port": port}
            }
        })
    }

    fn json_object(v: &Value) -> JsonObject {
        JsonObject::new(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn json_text_and_values_give_the_same_routes_and_errors() {
        for v in [
            hso(json!(8080)),
            hso(json!("x")),
            json!({"metadata": {"namespace": "shop"}, "spec": {}}),
            json!({"kind": "InterceptorRoute", "metadata": {"name": "web"}}),
            json!([1, 2]),
        ] {
            let kind = ObjectKind::HttpScaledObject;
            let text = json_object(&v);
            assert_eq!(text.identify(kind), v.identify(kind), "identity of {v}");
            assert_eq!(
                text.compile(kind).map_err(|e| format!("{e:?}")),
                v.clone().compile(kind).map_err(|e| format!("{e:?}")),
                "route of {v}"
            );
        }
    }

    #[test]
    fn json_text_drives_the_index() {
        let mut index = RouteIndex::new();
        let kind = ObjectKind::HttpScaledObject;
        assert_eq!(
            index.apply(kind, json_object(&hso(json!(8080)))),
            Outcome::Changed
        );
        assert_eq!(index.table().len(), 1);
        // The same version again is recognised from the head alone.
        assert_eq!(
            index.apply(kind, json_object(&hso(json!(8080)))),
            Outcome::Unchanged
        );
        let mut bad = hso(json!("x"));
        bad["metadata"]["resourceVersion"] = json!("8");
        match index.apply(kind, json_object(&bad)) {
            Outcome::Invalid(errors) => assert_eq!(
                errors[0].to_string(),
                r#"shop/web: spec.scaleTargetRef.port: invalid type: string "x", expected i32"#
            ),
            other => panic!("{other:?}"),
        }
        // The last good version keeps serving.
        assert_eq!(index.table().len(), 1);
        let (key, rv) = json_object(&bad).key(kind).unwrap();
        assert_eq!((key.namespace.as_str(), key.name.as_str()), ("shop", "web"));
        assert_eq!(rv.map(|r| r.as_str().to_string()), Some("8".to_string()));
    }

    #[test]
    fn kubernetes_clients_accept_events_that_carry_a_digest() {
        let line = format!(
            r#"{{"type":"ADDED","object":{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"a","namespace":"ns","resourceVersion":"3"}}}},"{}":"{}"}}"#,
            wire::digest::ANNOTATION,
            wire::digest::Token(42)
        );
        let ev: kube::core::WatchEvent<kube::core::DynamicObject> =
            serde_json::from_str(&line).expect("kube-rs parses the event");
        match ev {
            kube::core::WatchEvent::Added(o) => assert_eq!(o.metadata.name.as_deref(), Some("a")),
            other => panic!("{other:?}"),
        }
    }
}
