//! Services, EndpointSlices and response-body ConfigMaps into the
//! ready-cache, through kube-runtime's watcher (their events need no
//! digests, and the ready-cache is their only consumer).

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::SyncConfig;
use crate::endpoints::{EndpointsChange, RESPONSE_BODY_SELECTOR, ReadyEndpoints};
use crate::metrics::SyncMetrics;

/// Watches Services, EndpointSlices and the ConfigMaps labelled
/// `http.keda.sh/response-body=true` into the ready-cache until cancelled.
pub(crate) async fn watch_endpoints(
    client: kube::Client,
    config: SyncConfig,
    endpoints: std::sync::Arc<ReadyEndpoints>,
    metrics: SyncMetrics,
    health: kubewatch::SourceHealth,
    cancel: CancellationToken,
) {
    let (svc_api, slice_api, cm_api): (Api<Service>, Api<EndpointSlice>, Api<ConfigMap>) =
        match &config.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client, ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
        };
    let wc = watcher::Config::default().timeout(config.watch_timeout.as_secs().max(1) as u32);
    let services = watcher(svc_api, wc.clone())
        .default_backoff()
        .map_ok(|e| EpEvent::Service(Box::new(e)));
    let slices = watcher(slice_api, wc.clone())
        .default_backoff()
        .map_ok(|e| EpEvent::Slice(Box::new(e)));
    let config_maps = if config.response_bodies {
        watcher(cm_api, wc.labels(RESPONSE_BODY_SELECTOR))
            .default_backoff()
            .map_ok(|e| EpEvent::ConfigMap(Box::new(e)))
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let mut merged =
        futures::stream::select(futures::stream::select(services, slices), config_maps)
            .ready_chunks(512)
            .boxed();
    let mut services = Relist::<Service>::default();
    let mut slices = Relist::<EndpointSlice>::default();
    let mut config_maps = Relist::<ConfigMap> {
        // Not watched: nothing to wait for.
        synced: !config.response_bodies,
        ..Relist::default()
    };
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
            Ok(EpEvent::ConfigMap(ev)) => !matches!(**ev, watcher::Event::Init),
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
                Ok(EpEvent::ConfigMap(ev)) => changes.extend(config_maps.event(
                    *ev,
                    EndpointsChange::ResetConfigMaps,
                    EndpointsChange::ApplyConfigMap,
                    |namespace, name| EndpointsChange::DeleteConfigMap { namespace, name },
                )),
            }
        }
        if !changes.is_empty() {
            endpoints.apply(changes);
        }
        if services.synced && slices.synced && config_maps.synced && !endpoints.is_synced() {
            info!(
                services = endpoints.load().len(),
                response_bodies = endpoints.bodies().len(),
                "endpoints synced"
            );
            endpoints.mark_synced();
        }
    }
}

enum EpEvent {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    ConfigMap(Box<watcher::Event<ConfigMap>>),
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
