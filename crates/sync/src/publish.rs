//! Publishing: the one writer (the sync loop) swaps in immutable tables; any
//! number of readers load the current one with a single atomic operation.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use routing::RoutingTable;
use tokio::sync::watch;

/// The published routing table and the readiness latch, shared by the sync
/// loop (writer) and the request path, admin server and tests (readers).
#[derive(Debug)]
pub struct SharedTable {
    current: ArcSwap<RoutingTable>,
    version: watch::Sender<u64>,
    ready: watch::Sender<bool>,
}

impl Default for SharedTable {
    fn default() -> Self {
        SharedTable {
            current: ArcSwap::from_pointee(RoutingTable::new()),
            version: watch::Sender::new(0),
            ready: watch::Sender::new(false),
        }
    }
}

impl SharedTable {
    /// A new, empty, not-ready table.
    pub fn new() -> Arc<Self> {
        Arc::new(SharedTable::default())
    }

    /// The current table: one atomic load, no lock. Hold the guard briefly.
    pub fn load(&self) -> Guard<Arc<RoutingTable>> {
        self.current.load()
    }

    /// The current table as an owned `Arc`.
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }

    /// True once the first complete table has been published.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the first complete table has been published.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives in `self`, so `wait_for` can only end with the value.
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// A receiver that changes whenever a new table version is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Waits until the published table satisfies `pred` (tests and admin use this).
    pub async fn wait_for(&self, mut pred: impl FnMut(&RoutingTable) -> bool) -> Arc<RoutingTable> {
        let mut rx = self.version.subscribe();
        loop {
            let table = self.snapshot();
            if pred(&table) {
                return table;
            }
            if rx.changed().await.is_err() {
                return self.snapshot();
            }
        }
    }

    /// Publishes `table` (the sync loop is the only caller).
    pub(crate) fn publish(&self, table: RoutingTable) {
        let version = table.version();
        self.current.store(Arc::new(table));
        self.version.send_if_modified(|v| {
            if *v == version {
                false
            } else {
                *v = version;
                true
            }
        });
    }

    /// Marks the table complete: from now on readiness reports true.
    pub(crate) fn mark_ready(&self) {
        self.ready.send_if_modified(|r| !std::mem::replace(r, true));
    }
}
