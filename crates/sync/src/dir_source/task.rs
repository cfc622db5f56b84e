//! The directory source as a task: scans on start, on file notifications
//! (debounced) and every resync interval, and hands the changes to the index
//! writer (one batch per scan: a scan is published whole, never half of it)
//! and the ready-cache.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{DirChange, RoutesDir, SETTLE};
use crate::SyncConfig;
use crate::endpoints::ReadyEndpoints;
use crate::index::ObjectKind;
use crate::metrics::SyncMetrics;
use crate::writer::{Batch, Event, Writer};

/// Services and EndpointSlices handed to the ready-cache at a time.
const ENDPOINTS_BATCH: usize = 256;

/// Runs the directory source until cancelled: scans on start, on every file
/// notification (debounced) and every resync interval.
pub(crate) async fn run_dir(
    root: PathBuf,
    config: SyncConfig,
    writer: Arc<Writer>,
    endpoints: Arc<ReadyEndpoints>,
    metrics: SyncMetrics,
    cancel: CancellationToken,
) {
    let (notify_tx, mut notify_rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Our own rescan reads every file: those access events must not
        // trigger another rescan, or the loop never rests.
        if res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = notify_tx.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&root, notify::RecursiveMode::Recursive)?;
        Ok(w)
    });
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(dir = %root.display(), error = %e, "file notifications unavailable; relying on the periodic rescan");
            None
        }
    };
    let label = SyncMetrics::label("files");
    let mut dir = RoutesDir::new(root.clone()).settle(SETTLE);
    let mut ticker = tokio::time::interval(config.resync_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first scan that succeeds is the directory's complete listing.
    let mut listed = false;
    loop {
        let mut scanning = std::mem::take(&mut dir);
        // Reading and parsing files blocks: off the async workers. The
        // scan's route objects go to the writer in one batch (opened at the
        // first change, published when the scan ends); the ready-cache
        // takes its changes in small batches, so that a large scan never
        // holds them all at once.
        let (writer_scan, endpoints_scan) = (writer.clone(), endpoints.clone());
        let (metrics_scan, label_scan) = (metrics.clone(), label.clone());
        let scanned = tokio::task::spawn_blocking(move || {
            let first = !listed;
            let open = || {
                let mut batch = writer_scan.batch();
                if first {
                    for kind in ObjectKind::ALL {
                        batch.apply(Event::Init(kind, None));
                    }
                }
                batch
            };
            let mut batch: Option<Batch<'_>> = None;
            let mut endpoint_changes = Vec::new();
            let result = scanning.scan(|change| match change {
                DirChange::Apply(kind, obj) => {
                    let b = batch.get_or_insert_with(open);
                    b.apply(if first {
                        Event::InitApply(kind, obj.into())
                    } else {
                        Event::Apply(kind, obj.into())
                    });
                }
                DirChange::Delete(key) => {
                    batch
                        .get_or_insert_with(open)
                        .apply(Event::Delete(key, None));
                }
                DirChange::Endpoints(change) => {
                    endpoint_changes.push(change);
                    if endpoint_changes.len() == ENDPOINTS_BATCH {
                        endpoints_scan.apply(endpoint_changes.drain(..));
                    }
                }
            });
            if !endpoint_changes.is_empty() {
                endpoints_scan.apply(endpoint_changes);
            }
            if let Ok((_, new_errors)) = &result {
                // Reported, and the ready-cache marked, before the table
                // is published: whoever sees the new table sees them too.
                for err in new_errors {
                    metrics_scan.sync_errors.get_or_create(&label_scan).inc();
                    warn!(error = %err, "manifest file skipped; its last good content is kept");
                }
                endpoints_scan.mark_synced();
                let b = batch.get_or_insert_with(open);
                if first {
                    for kind in ObjectKind::ALL {
                        b.apply(Event::InitDone(kind));
                    }
                } else {
                    b.apply(Event::Current);
                }
            }
            drop(batch);
            (scanning, result)
        })
        .await;
        let (scanned_dir, result) = match scanned {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "routes directory scan panicked");
                return;
            }
        };
        dir = scanned_dir;
        match result {
            Ok(_) => listed = true,
            Err(err) => {
                metrics.sync_errors.get_or_create(&label).inc();
                warn!(error = %err, "routes directory unreadable; serving the last good table");
            }
        }
        let unsettled = dir.has_unsettled();
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
            // A file still being written: look again once it has settled.
            _ = tokio::time::sleep(SETTLE), if unsettled => {}
            Some(()) = notify_rx.recv() => {
                // Let a burst of writes (an editor's save, a `cp -r`) settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while notify_rx.try_recv().is_ok() {}
            }
        }
    }
}
