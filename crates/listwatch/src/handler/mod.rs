//! HTTP list, watch and get over a [`Store`]: request handling and lists
//! here; the query (`query`) and the watch stream (`watch`) in their own modules.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

use crate::body::Body;
use crate::path::parse_path;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{Reason, json_response, status_json, status_response};
use crate::store::{
    Change, EventType, Message, ObjectKey, Snapshot, Store, StoredObject, Stores, Subscription,
    WatchStart, bookmark_line,
};
use crate::tick::TickGroup;

mod query;
mod watch;

pub use query::ListWatchQuery;
use query::*;
use watch::*;
pub use watch::{expired_event, expired_watch_response};

/// Lets the embedding server interfere with watches (testkit's fault
/// injection). The default methods change nothing.
pub trait WatchPolicy: Send + Sync + 'static {
    /// Called once per live change per watcher; `false` drops it for that watcher.
    fn deliver(&self) -> bool {
        true
    }

    /// While `true`, watchers send nothing at all (changes are discarded,
    /// no bookmarks) but keep their connections open.
    fn stalled(&self) -> bool {
        false
    }
}

/// Settings of a [`ListWatch`] handler.
#[derive(Clone)]
pub struct HandlerConfig {
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK
    /// (one tick per store shared by all its watchers; the first watch of a
    /// store fixes it).
    pub bookmark_interval: Duration,
    /// Annotate every BOOKMARK with the content digest of the watch's view
    /// at its resourceVersion ([`wire::digest::ANNOTATION`]), so a client
    /// can check freshness without a list.
    pub digest_bookmarks: bool,
    /// With `digest_bookmarks`: after a change, the next BOOKMARK comes at
    /// most this long after it (the clock's next tick is pulled in, not
    /// added), so a client that lost an event learns it within this delay.
    pub burst_bookmark_delay: Option<Duration>,
    /// How long a list for a resourceVersion newer than the store waits for
    /// it before answering 504 "Too large resource version".
    pub too_large_wait: Duration,
    /// Encoded events buffered per watcher between its task and its
    /// connection; past this the watcher stops reading the ring and, once
    /// the ring overtakes it, is closed.
    pub watch_buffer: usize,
    /// Answer a list's `If-None-Match` with `304 Not Modified` when it
    /// holds (an ETag equal to the list's resourceVersion, or the content
    /// digest of the list). Off behaves like kube-apiserver, which sends
    /// every list whole.
    pub conditional_lists: bool,
    /// Optional interference with watches.
    pub policy: Option<Arc<dyn WatchPolicy>>,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            bookmark_interval: Duration::from_secs(1),
            digest_bookmarks: true,
            // Half the sync loop's default resync interval: a lost event
            // is repaired well within 1 s, and a write's fan-out to
            // thousands of watchers gets that long before the bookmarks
            // (which the watchers that sent the write's event with its
            // digest then skip).
            burst_bookmark_delay: Some(Duration::from_millis(500)),
            too_large_wait: Duration::from_secs(3),
            watch_buffer: 64,
            conditional_lists: true,
            policy: None,
        }
    }
}

impl std::fmt::Debug for HandlerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerConfig")
            .field("bookmark_interval", &self.bookmark_interval)
            .field("digest_bookmarks", &self.digest_bookmarks)
            .field("burst_bookmark_delay", &self.burst_bookmark_delay)
            .field("too_large_wait", &self.too_large_wait)
            .field("watch_buffer", &self.watch_buffer)
            .field("conditional_lists", &self.conditional_lists)
            .field("policy", &self.policy.is_some())
            .finish()
    }
}

/// The form of a list's items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemForm {
    /// The objects as stored.
    Full,
    /// Each object reduced to its metadata (`PartialObjectMetadataList`).
    Metadata,
}

impl ItemForm {
    fn of(headers: &HeaderMap) -> ItemForm {
        let metadata = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(wire::accepts_metadata_list);
        if metadata {
            ItemForm::Metadata
        } else {
            ItemForm::Full
        }
    }

    fn item(self, o: &StoredObject) -> &Bytes {
        match self {
            ItemForm::Full => o.json(),
            ItemForm::Metadata => o.metadata_json(),
        }
    }
}

/// Encodes a `<Kind>List` (or a `PartialObjectMetadataList`) from
/// already-encoded items.
fn encode_list<'a>(
    store: &Store,
    form: ItemForm,
    rv: u64,
    items: impl Iterator<Item = &'a Arc<StoredObject>>,
    continue_token: Option<&str>,
    remaining: Option<usize>,
) -> Bytes {
    let res = store.resource();
    let items: Vec<&Bytes> = items.map(|o| form.item(o)).collect();
    let size: usize = items.iter().map(|o| o.len() + 1).sum();
    let mut b = BytesMut::with_capacity(size + 256);
    let head = match form {
        ItemForm::Full => serde_json::json!({
            "apiVersion": res.api_version(),
            "kind": format!("{}List", res.kind),
        }),
        ItemForm::Metadata => serde_json::json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": wire::METADATA_LIST_KIND,
        }),
    };
    // Head without its closing brace, so metadata and items follow.
    let head = serde_json::to_vec(&head).unwrap_or_default();
    b.put_slice(&head[..head.len() - 1]);
    b.put_slice(b",\"metadata\":{\"resourceVersion\":\"");
    b.put_slice(rv.to_string().as_bytes());
    b.put_u8(b'"');
    if let Some(c) = continue_token {
        b.put_slice(b",\"continue\":\"");
        b.put_slice(c.as_bytes());
        b.put_u8(b'"');
    }
    if let Some(r) = remaining {
        b.put_slice(b",\"remainingItemCount\":");
        b.put_slice(r.to_string().as_bytes());
    }
    b.put_slice(b"},\"items\":[");
    for (i, o) in items.iter().enumerate() {
        if i > 0 {
            b.put_u8(b',');
        }
        b.put_slice(o);
    }
    b.put_slice(b"]}");
    b.freeze()
}

fn etag_matches(headers: &HeaderMap, rv: u64) -> bool {
    let Some(v) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let want = rv.to_string();
    v.split(',').any(|t| {
        let t = t.trim();
        let t = t.strip_prefix("W/").unwrap_or(t);
        t.trim_matches('"') == want
    })
}

fn with_etag(mut resp: Response<Body>, rv: u64) -> Response<Body> {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{rv}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// Serves list, watch and get for [`Store`]s over HTTP.
///
/// Use [`handle`](ListWatch::handle) as a complete read-only hyper service
/// over a [`Stores`], or the per-verb methods behind your own routing.
///
/// ```no_run
/// # async fn demo(stores: std::sync::Arc<listwatch::Stores>) {
/// use listwatch::{HandlerConfig, ListWatch};
/// let lw = ListWatch::new(HandlerConfig::default());
/// let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
///     let (lw, stores) = (lw.clone(), stores.clone());
///     async move { Ok::<_, std::convert::Infallible>(lw.handle(&stores, &req).await) }
/// });
/// # let _ = svc;
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ListWatch {
    config: HandlerConfig,
    /// The bookmark clock of every store this handler serves watches of.
    ticks: Arc<TickGroup>,
}

impl Default for ListWatch {
    fn default() -> Self {
        ListWatch::new(HandlerConfig::default())
    }
}

impl ListWatch {
    /// A handler with these settings.
    pub fn new(config: HandlerConfig) -> ListWatch {
        let pull_in = config
            .burst_bookmark_delay
            .filter(|_| config.digest_bookmarks);
        ListWatch {
            ticks: Arc::new(TickGroup::new(config.bookmark_interval, pull_in)),
            config,
        }
    }

    /// The settings.
    pub fn config(&self) -> &HandlerConfig {
        &self.config
    }

    /// A read-only Kubernetes API over `stores`: `GET` of a list, a watch
    /// or one object. Unknown resources are 404, other methods 405.
    pub async fn handle<B>(&self, stores: &Stores, req: &Request<B>) -> Response<Body> {
        if req.method() != Method::GET {
            return status_response(
                Reason::MethodNotAllowed,
                &format!("method {} is not supported", req.method()),
            );
        }
        let Some(path) = parse_path(req.uri().path()) else {
            return status_response(
                Reason::NotFound,
                "the server could not find the requested resource",
            );
        };
        let Some(store) = stores.get(&path.gvr) else {
            return status_response(
                Reason::NotFound,
                "the server could not find the requested resource",
            );
        };
        match (&path.name, &path.subresource) {
            (Some(name), None) => self.get(&store, path.namespace.as_deref().unwrap_or(""), name),
            (None, _) => {
                self.list_or_watch(
                    &store,
                    path.namespace.as_deref(),
                    req.uri().query(),
                    req.headers(),
                )
                .await
            }
            _ => status_response(
                Reason::NotFound,
                "the server could not find the requested resource",
            ),
        }
    }

    /// One object as JSON, or 404.
    pub fn get(&self, store: &Store, namespace: &str, name: &str) -> Response<Body> {
        match store.get(namespace, name) {
            Some(o) => json_response(StatusCode::OK, o.json().clone()),
            None => status_response(
                Reason::NotFound,
                &format!(
                    "{} \"{name}\" not found",
                    store.resource().gvr.qualified_resource()
                ),
            ),
        }
    }

    /// A list, or a watch when the query has `watch=1`. `namespace`
    /// restricts both to one namespace.
    pub async fn list_or_watch(
        &self,
        store: &Store,
        namespace: Option<&str>,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let q = match ListWatchQuery::parse(query) {
            Ok(q) => q,
            Err(e) => return status_response(Reason::BadRequest, &e),
        };
        if q.watch {
            self.watch(store, namespace, &q)
        } else {
            self.list(store, namespace, &q, headers).await
        }
    }

    /// Serves a list (see the crate doc for the supported parameters).
    pub async fn list(
        &self,
        store: &Store,
        namespace: Option<&str>,
        q: &ListWatchQuery,
        headers: &HeaderMap,
    ) -> Response<Body> {
        let (filter, rv) = match filter_and_rv(namespace, q) {
            Ok(x) => x,
            Err(e) => return status_response(Reason::BadRequest, &e),
        };
        let exact = q.resource_version_match.as_deref() == Some("Exact");
        if let Some(m) = q.resource_version_match.as_deref()
            && m != "Exact"
            && m != "NotOlderThan"
        {
            return status_response(
                Reason::BadRequest,
                &format!("invalid resourceVersionMatch {m:?}"),
            );
        }
        if exact && rv.unwrap_or(0) == 0 {
            return status_response(
                Reason::BadRequest,
                "resourceVersionMatch=Exact requires a non-zero resourceVersion",
            );
        }

        // Where the page starts, and which snapshot it reads.
        let mut after: Option<ObjectKey> = None;
        let snap: Snapshot = if let Some(token) = &q.continue_token {
            let Some((crv, key)) = decode_continue(token) else {
                return status_response(Reason::BadRequest, "invalid continue token");
            };
            after = Some(key);
            match store.snapshot_at(crv) {
                Some(s) => s,
                None => {
                    return status_response(
                        Reason::Expired,
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    );
                }
            }
        } else {
            let current = store.resource_version();
            match rv {
                Some(n) if n > 0 => {
                    if n > current && !store.wait_for(n, self.config.too_large_wait).await {
                        return status_response(
                            Reason::Timeout,
                            &format!(
                                "Too large resource version: {n}, current: {}",
                                store.resource_version()
                            ),
                        );
                    }
                    if exact {
                        match store.snapshot_at(n) {
                            Some(s) => s,
                            None => {
                                return status_response(
                                    Reason::Expired,
                                    &format!(
                                        "too old resource version: {n} ({})",
                                        store.resource_version()
                                    ),
                                );
                            }
                        }
                    } else {
                        store.snapshot()
                    }
                }
                _ => store.snapshot(),
            }
        };
        let rv = snap.resource_version;
        if q.continue_token.is_none()
            && self.config.conditional_lists
            && (etag_matches(headers, rv) || self.digest_matches(&snap, &filter, headers))
        {
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            return with_etag(resp, rv);
        }

        let form = ItemForm::of(headers);
        let whole = form == ItemForm::Full
            && filter.is_trivial()
            && after.is_none()
            && q.limit.is_none_or(|l| l >= snap.len())
            && rv == store.resource_version();
        let body = if whole {
            self.full_list(store, &snap).await
        } else {
            let iter: Box<dyn Iterator<Item = (&ObjectKey, &Arc<StoredObject>)>> = match &after {
                Some(k) => Box::new(snap.objects.range((
                    std::ops::Bound::Excluded(k.clone()),
                    std::ops::Bound::Unbounded,
                ))),
                None => Box::new(snap.objects.iter()),
            };
            let mut iter = iter.filter(|(_, o)| filter.matches(o));
            let limit = q.limit.unwrap_or(usize::MAX);
            let page: Vec<(&ObjectKey, &Arc<StoredObject>)> = iter.by_ref().take(limit).collect();
            let more = if page.len() == limit { iter.count() } else { 0 };
            let token = (more > 0)
                .then(|| page.last().map(|(k, _)| encode_continue(rv, k)))
                .flatten();
            if token.is_some() {
                store.remember(&snap);
            }
            let remaining =
                (token.is_some() && filter.labels.is_empty() && filter.fields.is_empty())
                    .then_some(more);
            encode_list(
                store,
                form,
                rv,
                page.iter().map(|(_, o)| *o),
                token.as_deref(),
                remaining,
            )
        };
        with_etag(json_response(StatusCode::OK, body), rv)
    }

    /// Whether `If-None-Match` carries a content digest (`"d<12 hex>"`, see
    /// [`wire::digest`]) equal to that of the objects this request lists:
    /// the client already holds exactly these objects at these versions, so
    /// a resync after a change it received by watch costs a 304, not a list.
    fn digest_matches(&self, snap: &Snapshot, filter: &Filter, headers: &HeaderMap) -> bool {
        let Some(want) = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .and_then(wire::digest::from_if_none_match)
        else {
            return false;
        };
        filter.digest(snap) == want
    }

    /// The unfiltered list at `snap`, encoded once per resourceVersion.
    async fn full_list(&self, store: &Store, snap: &Snapshot) -> Bytes {
        let mut cache = store.inner.full_list.lock().await;
        if let Some((rv, b)) = cache.as_ref()
            && *rv == snap.resource_version
        {
            return b.clone();
        }
        let b = encode_list(
            store,
            ItemForm::Full,
            snap.resource_version,
            snap.iter(),
            None,
            None,
        );
        if cache
            .as_ref()
            .is_none_or(|(r, _)| *r < snap.resource_version)
        {
            *cache = Some((snap.resource_version, b.clone()));
        }
        b
    }

    /// Starts a watch (see the crate doc): the response streams events
    /// until `timeoutSeconds`, the client leaving, the watcher lagging, or
    /// [`Store::close_watchers`].
    pub fn watch(
        &self,
        store: &Store,
        namespace: Option<&str>,
        q: &ListWatchQuery,
    ) -> Response<Body> {
        let (filter, rv) = match filter_and_rv(namespace, q) {
            Ok(x) => x,
            Err(e) => return status_response(Reason::BadRequest, &e),
        };
        let initial_events_end = q.send_initial_events == Some(true);
        let (start, skip_through) = match rv {
            _ if initial_events_end => (WatchStart::CurrentState, 0),
            None | Some(0) if q.send_initial_events == Some(false) => (WatchStart::Now, 0),
            None | Some(0) => (WatchStart::CurrentState, 0),
            Some(n) => (WatchStart::After(n), n),
        };
        let sub = match store.subscribe(start) {
            Ok(s) => s,
            Err(too_old) => return expired_watch_response(too_old.requested, too_old.oldest),
        };
        if q.allow_watch_bookmarks {
            self.ticks.serve(store);
        }
        let (tx, rx) = mpsc::channel(self.config.watch_buffer.max(1));
        let task = WatchTask {
            store: store.clone(),
            filter,
            tx,
            deadline: q
                .timeout_seconds
                .map(|s| Instant::now() + Duration::from_secs(s)),
            bookmarks: q.allow_watch_bookmarks,
            initial_events_end,
            skip_through,
            digest_bookmarks: self.config.digest_bookmarks,
            proof_window: self.config.bookmark_interval / 2,
            policy: self.config.policy.clone(),
        };
        tokio::spawn(task.run(sub));
        watch_headers(Response::new(Body::channel(rx)))
    }
}

/// How often a watcher blocked on a slow client checks how far behind it is.
const LAG_CHECK: Duration = Duration::from_millis(50);

/// The request's filter and resourceVersion, or why they are bad (400).
fn filter_and_rv(
    namespace: Option<&str>,
    q: &ListWatchQuery,
) -> Result<(Filter, Option<u64>), String> {
    Ok((Filter::new(namespace, q)?, q.parsed_rv()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_full_list_is_encoded_once_per_resource_version() {
        let store = Store::new(
            crate::ResourceType::new("", "v1", "configmaps", "ConfigMap", true),
            crate::StoreConfig::default(),
            1,
        );
        store
            .apply(
                serde_json::json!({"metadata": {"name": "a", "namespace": "n"}}),
                2,
            )
            .unwrap();
        let lw = ListWatch::default();
        let first = lw.full_list(&store, &store.snapshot()).await;
        let second = lw.full_list(&store, &store.snapshot()).await;
        assert_eq!(first.as_ptr(), second.as_ptr(), "same bytes served again");
        store
            .apply(
                serde_json::json!({"metadata": {"name": "b", "namespace": "n"}}),
                3,
            )
            .unwrap();
        let third = lw.full_list(&store, &store.snapshot()).await;
        assert_ne!(first, third);
        let v: serde_json::Value = serde_json::from_slice(&third).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "3");
        assert_eq!(v["items"][1]["apiVersion"], "v1");
    }

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("ns".to_string(), "a/b".to_string());
        let t = encode_continue(42, &key);
        assert_eq!(decode_continue(&t), Some((42, key)));
        assert_eq!(decode_continue("zz"), None);
        assert_eq!(decode_continue("abc"), None);
    }
}
