//! The Kubernetes source: a kube-rs `watcher` per kind feeding the sync loop,
//! and beside each one a periodic conditional list (the resync). A cache
//! tier is the same thing: it speaks the same protocol, answers the resync's
//! `If-None-Match` with 304 when nothing changed.

use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::endpoints::{EndpointsChange, ReadyEndpoints};
use crate::index::{ObjectKind, ResourceVersion};
use crate::metrics::SyncMetrics;
use crate::{Input, SyncConfig};

fn api_resource(kind: ObjectKind) -> ApiResource {
    let (group, version) = kind
        .api_version()
        .split_once('/')
        .expect("our api versions have a group");
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: kind.api_version().to_string(),
        kind: kind.kind().to_string(),
        plural: kind.resource().to_string(),
    }
}

fn watcher_config(config: &SyncConfig) -> watcher::Config {
    let mut wc = watcher::Config::default();
    // kube-rs treats a watch that sends nothing (not even a bookmark) for
    // timeout + 5 s as dead and restarts it: this is our stall bound.
    wc = wc.timeout(config.watch_timeout.as_secs().max(1) as u32);
    if let Some(sel) = &config.label_selector {
        wc = wc.labels(sel);
    }
    wc
}

/// Runs the watch of one routing kind until cancelled.
pub(crate) async fn watch_kind(
    client: kube::Client,
    kind: ObjectKind,
    config: SyncConfig,
    tx: mpsc::Sender<Input>,
    metrics: SyncMetrics,
    cancel: CancellationToken,
) {
    let ar = api_resource(kind);
    let api: Api<DynamicObject> = match &config.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let label = SyncMetrics::label(kind.resource());
    let mut stream = watcher(api, watcher_config(&config))
        .default_backoff()
        .boxed();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = stream.next() => next,
        };
        let input = match next {
            None => return,
            Some(Ok(event)) => match event {
                watcher::Event::Init => Input::WatchInit(kind),
                watcher::Event::InitApply(obj) => Input::WatchInitApply(kind, to_value(obj)),
                watcher::Event::InitDone => Input::WatchInitDone(kind),
                watcher::Event::Apply(obj) => Input::WatchApply(kind, to_value(obj)),
                watcher::Event::Delete(obj) => Input::WatchDelete(kind, to_value(obj)),
            },
            Some(Err(err)) => {
                metrics.sync_errors.get_or_create(&label).inc();
                metrics.watch_restarts.get_or_create(&label).inc();
                warn!(resource = kind.resource(), error = %err, "watch failed; retrying with backoff");
                continue;
            }
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

fn to_value(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
struct ListBody {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Value>,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "resourceVersion")]
    resource_version: Option<String>,
}

/// The URL path of a list of `kind`, cluster-wide or in one namespace.
pub(crate) fn list_path(kind: ObjectKind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!(
            "/apis/{}/namespaces/{}/{}",
            kind.api_version(),
            ns,
            kind.resource()
        ),
        None => format!("/apis/{}/{}", kind.api_version(), kind.resource()),
    }
}

/// What one conditional list returned.
pub(crate) enum ListResult {
    Unchanged,
    Listed {
        items: Vec<Value>,
        rv: Option<ResourceVersion>,
        etag: Option<String>,
    },
    /// The resource does not exist on the server (its CRD is not installed).
    NotFound,
}

/// One list of `path`, from the server's cache (`resourceVersion=0`), with
/// `If-None-Match` when we hold an ETag.
pub(crate) async fn conditional_list(
    client: &kube::Client,
    path: &str,
    label_selector: Option<&str>,
    etag: Option<&str>,
    digest: Option<u64>,
) -> Result<ListResult, String> {
    let mut uri = format!("{path}?resourceVersion=0");
    if let Some(sel) = label_selector {
        uri.push_str("&labelSelector=");
        uri.push_str(&percent_encode(sel));
    }
    let mut req = http::Request::get(uri).header(http::header::ACCEPT, "application/json");
    // The content digest of what the index holds (see `crate::digest`) when
    // known, else the last ETag. The digest alone suffices (equal content is
    // the question) and keeps the header short: HPACK never indexes it.
    let conditions = match (etag, digest) {
        (_, Some(d)) => Some(format!("\"d{d:012x}\"")),
        (Some(e), None) => Some(e.to_string()),
        (None, None) => None,
    };
    if let Some(c) = conditions {
        req = req.header(http::header::IF_NONE_MATCH, c);
    }
    let req = req
        .body(kube::client::Body::empty())
        .map_err(|e| e.to_string())?;
    let resp = client.send(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status == http::StatusCode::NOT_MODIFIED {
        return Ok(ListResult::Unchanged);
    }
    let etag = resp
        .headers()
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status == http::StatusCode::NOT_FOUND {
        return Ok(ListResult::NotFound);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("list {path}: HTTP {status}: {}", text.trim()));
    }
    let list: ListBody =
        serde_json::from_slice(&body).map_err(|e| format!("list {path}: bad JSON: {e}"))?;
    Ok(ListResult::Listed {
        items: list.items,
        rv: list
            .metadata
            .resource_version
            .filter(|s| !s.is_empty())
            .map(ResourceVersion::new),
        etag,
    })
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The periodic resync of one kind: a conditional list every interval,
/// beside (never in the way of) the watch.
pub(crate) async fn resync_kind(
    client: kube::Client,
    kind: ObjectKind,
    config: SyncConfig,
    tx: mpsc::Sender<Input>,
    metrics: SyncMetrics,
    cancel: CancellationToken,
    digests: std::sync::Arc<crate::digest::Digests>,
) {
    let path = list_path(kind, config.namespace.as_deref());
    let label = SyncMetrics::label(kind.resource());
    let mut etag: Option<String> = None;
    // The watcher's initial list builds the first table; the first resync
    // comes one interval later.
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + config.resync_interval,
        config.resync_interval,
    );
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_missing = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = conditional_list(&client, &path, config.label_selector.as_deref(), etag.as_deref(), digests.get(kind)) => r,
        };
        let input = match result {
            Ok(ListResult::Unchanged) => Input::ListUnchanged(kind),
            Ok(ListResult::Listed {
                items,
                rv,
                etag: new_etag,
            }) => {
                etag = new_etag;
                Input::Listed { kind, items, rv }
            }
            Ok(ListResult::NotFound) => {
                if !warned_missing {
                    warn!(
                        resource = kind.resource(),
                        "resource not served (is its CRD installed?); treating it as empty"
                    );
                    warned_missing = true;
                }
                etag = None;
                Input::Listed {
                    kind,
                    items: Vec::new(),
                    rv: None,
                }
            }
            Err(err) => {
                metrics.sync_errors.get_or_create(&label).inc();
                debug!(resource = kind.resource(), error = %err, "resync list failed");
                continue;
            }
        };
        if tx.send(input).await.is_err() {
            return;
        }
    }
}

/// Watches Services and EndpointSlices into the ready-cache until cancelled.
pub(crate) async fn watch_endpoints(
    client: kube::Client,
    config: SyncConfig,
    endpoints: std::sync::Arc<ReadyEndpoints>,
    metrics: SyncMetrics,
    cancel: CancellationToken,
) {
    let (svc_api, slice_api): (Api<Service>, Api<EndpointSlice>) = match &config.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let wc = watcher::Config::default().timeout(config.watch_timeout.as_secs().max(1) as u32);
    let services = watcher(svc_api, wc.clone())
        .default_backoff()
        .map_ok(|e| EpEvent::Service(Box::new(e)));
    let slices = watcher(slice_api, wc)
        .default_backoff()
        .map_ok(|e| EpEvent::Slice(Box::new(e)));
    let mut merged = futures::stream::select(services, slices)
        .ready_chunks(512)
        .boxed();
    let mut svc_buf: Option<Vec<Service>> = None;
    let mut slice_buf: Option<Vec<EndpointSlice>> = None;
    let (mut svc_synced, mut slices_synced) = (false, false);
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = merged.next() => match b { Some(b) => b, None => return },
        };
        let mut changes = Vec::new();
        for item in batch {
            match item {
                Err(err) => {
                    metrics
                        .sync_errors
                        .get_or_create(&SyncMetrics::label("endpoints"))
                        .inc();
                    warn!(error = %err, "endpoints watch failed; retrying with backoff");
                }
                Ok(EpEvent::Service(ev)) => match *ev {
                    watcher::Event::Init => svc_buf = Some(Vec::new()),
                    watcher::Event::InitApply(s) => svc_buf.get_or_insert_default().push(s),
                    watcher::Event::InitDone => {
                        changes.push(EndpointsChange::ResetServices(
                            svc_buf.take().unwrap_or_default(),
                        ));
                        svc_synced = true;
                    }
                    watcher::Event::Apply(s) => {
                        changes.push(EndpointsChange::ApplyService(Box::new(s)))
                    }
                    watcher::Event::Delete(s) => changes.push(EndpointsChange::DeleteService {
                        namespace: s.metadata.namespace.unwrap_or_default(),
                        name: s.metadata.name.unwrap_or_default(),
                    }),
                },
                Ok(EpEvent::Slice(ev)) => match *ev {
                    watcher::Event::Init => slice_buf = Some(Vec::new()),
                    watcher::Event::InitApply(s) => slice_buf.get_or_insert_default().push(s),
                    watcher::Event::InitDone => {
                        changes.push(EndpointsChange::ResetSlices(
                            slice_buf.take().unwrap_or_default(),
                        ));
                        slices_synced = true;
                    }
                    watcher::Event::Apply(s) => {
                        changes.push(EndpointsChange::ApplySlice(Box::new(s)))
                    }
                    watcher::Event::Delete(s) => changes.push(EndpointsChange::DeleteSlice {
                        namespace: s.metadata.namespace.unwrap_or_default(),
                        name: s.metadata.name.unwrap_or_default(),
                    }),
                },
            }
        }
        if !changes.is_empty() {
            endpoints.apply(changes);
        }
        if svc_synced && slices_synced && !endpoints.is_synced() {
            info!(services = endpoints.load().len(), "endpoints synced");
            endpoints.mark_synced();
        }
    }
}

enum EpEvent {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// How long the watch may stay silent before kube-rs restarts it.
pub fn stall_bound(watch_timeout: Duration) -> Duration {
    watch_timeout + Duration::from_secs(5)
}
