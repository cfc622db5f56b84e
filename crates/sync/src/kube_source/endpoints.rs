//! Services and EndpointSlices into the ready-cache, through kube-runtime's
//! watcher (their events need no digests, and the ready-cache is their
//! only consumer).

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::SyncConfig;
use crate::endpoints::{EndpointsChange, ReadyEndpoints};
use crate::metrics::SyncMetrics;

/// Watches Services and EndpointSlices into the ready-cache until cancelled.
pub(crate) async fn watch_endpoints(
    client: kube::Client,
    config: SyncConfig,
    endpoints: std::sync::Arc<ReadyEndpoints>,
    metrics: SyncMetrics,
    health: kubewatch::SourceHealth,
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
    let mut services = Relist::<Service>::default();
    let mut slices = Relist::<EndpointSlice>::default();
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            b = merged.next() => match b { Some(b) => b, None => return },
        };
        let mut changes = Vec::new();
        // `Init` opens a relist before any request is made: it proves nothing.
        let answered = |item: &Result<EpEvent, watcher::Error>| match item {
            Ok(EpEvent::Service(ev)) => !matches!(**ev, watcher::Event::Init),
            Ok(EpEvent::Slice(ev)) => !matches!(**ev, watcher::Event::Init),
            Err(_) => false,
        };
        if batch.iter().any(answered) {
            health.success("endpoints", false);
        }
        for item in batch {
            match item {
                Err(err) => {
                    metrics
                        .sync_errors
                        .get_or_create(&SyncMetrics::label("endpoints"))
                        .inc();
                    // The table's version is not known here; the endpoints
                    // fail together with the routes' watches anyway.
                    health.failure("endpoints", &err, 0);
                }
                Ok(EpEvent::Service(ev)) => changes.extend(services.event(
                    *ev,
                    EndpointsChange::ResetServices,
                    EndpointsChange::ApplyService,
                    |namespace, name| EndpointsChange::DeleteService { namespace, name },
                )),
                Ok(EpEvent::Slice(ev)) => changes.extend(slices.event(
                    *ev,
                    EndpointsChange::ResetSlices,
                    EndpointsChange::ApplySlice,
                    |namespace, name| EndpointsChange::DeleteSlice { namespace, name },
                )),
            }
        }
        if !changes.is_empty() {
            endpoints.apply(changes);
        }
        if services.synced && slices.synced && !endpoints.is_synced() {
            info!(services = endpoints.load().len(), "endpoints synced");
            endpoints.mark_synced();
        }
    }
}

enum EpEvent {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// One kind's events in kube-runtime's shape: a relist (`Init`,
/// `InitApply`..., `InitDone`) buffered into one reset, then single changes.
struct Relist<K> {
    buf: Option<Vec<K>>,
    /// A complete list was applied.
    synced: bool,
}

impl<K> Default for Relist<K> {
    fn default() -> Self {
        Relist {
            buf: None,
            synced: false,
        }
    }
}

impl<K: kube::Resource> Relist<K> {
    /// The ready-cache change an event makes, if any.
    fn event(
        &mut self,
        event: watcher::Event<K>,
        reset: fn(Vec<K>) -> EndpointsChange,
        apply: fn(Box<K>) -> EndpointsChange,
        delete: fn(String, String) -> EndpointsChange,
    ) -> Option<EndpointsChange> {
        match event {
            watcher::Event::Init => {
                self.buf = Some(Vec::new());
                None
            }
            watcher::Event::InitApply(o) => {
                self.buf.get_or_insert_default().push(o);
                None
            }
            watcher::Event::InitDone => {
                self.synced = true;
                Some(reset(self.buf.take().unwrap_or_default()))
            }
            watcher::Event::Apply(o) => Some(apply(Box::new(o))),
            watcher::Event::Delete(o) => {
                let meta = o.meta();
                Some(delete(
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                ))
            }
        }
    }
}
