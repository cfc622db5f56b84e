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
    let mut svc_buf: Option<Vec<Service>> = None;
    let mut slice_buf: Option<Vec<EndpointSlice>> = None;
    let (mut svc_synced, mut slices_synced) = (false, false);
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
