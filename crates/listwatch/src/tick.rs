//! The bookmark clock: one timer for every store a [`ListWatch`] serves.
//!
//! Every `interval` the group puts one [`Message::Tick`] into the fan-out
//! ring of each store it serves; each watcher with `allowWatchBookmarks`
//! answers it with a BOOKMARK. One timer per handler instead of one per
//! watcher (with 10,000 watchers that is 1 wake-up per interval instead of
//! 10,000), and since all stores tick together, a client's watches on
//! several resources get their bookmarks in the same instant: over HTTP/2
//! one write and one packet instead of one per resource.
//!
//! A write to any store of the group pulls the next tick in to at most
//! `pull_in` after it (and the schedule carries on from there), so a client
//! that lost an event learns it from the next bookmark's content digest
//! within `pull_in`, while the number of bookmarks per interval stays one
//! when writes are rarer than `pull_in`.
//!
//! [`ListWatch`]: crate::ListWatch

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use crate::store::{Inner, Message, Store};

/// What a store of a group holds to signal a write.
#[derive(Debug, Default)]
pub(crate) struct TickSignal {
    /// A write happened since the last tick.
    dirty: AtomicBool,
    /// Wakes the clock on the first write after a tick.
    changed: Notify,
}

impl TickSignal {
    /// Called by a store on every write.
    pub(crate) fn written(&self) {
        if !self.dirty.swap(true, Ordering::Relaxed) {
            self.changed.notify_one();
        }
    }
}

/// The clock of one handler (shared by its clones).
#[derive(Debug)]
pub(crate) struct TickGroup {
    signal: Arc<TickSignal>,
    stores: Arc<Mutex<Vec<Weak<Inner>>>>,
    started: OnceLock<()>,
    interval: Duration,
    pull_in: Option<Duration>,
}

impl TickGroup {
    pub(crate) fn new(interval: Duration, pull_in: Option<Duration>) -> TickGroup {
        TickGroup {
            signal: Arc::new(TickSignal::default()),
            stores: Arc::new(Mutex::new(Vec::new())),
            started: OnceLock::new(),
            interval: interval.max(Duration::from_millis(1)),
            pull_in,
        }
    }

    /// Makes `store` tick with this group (a store ticks with the first
    /// group that asks) and starts the clock on first use. Needs a tokio
    /// runtime.
    pub(crate) fn serve(&self, store: &Store) {
        if store.inner.tick.set(self.signal.clone()).is_ok() {
            self.stores.lock().push(Arc::downgrade(&store.inner));
        }
        if self.started.set(()).is_ok() {
            tokio::spawn(run(
                Arc::downgrade(&self.stores),
                self.signal.clone(),
                self.interval,
                self.pull_in,
            ));
        }
    }
}

/// The clock; ends when its group is dropped.
async fn run(
    stores: Weak<Mutex<Vec<Weak<Inner>>>>,
    signal: Arc<TickSignal>,
    interval: Duration,
    pull_in: Option<Duration>,
) {
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            _ = sleep_until(next) => {}
            _ = signal.changed.notified(), if pull_in.is_some() => {
                if let Some(d) = pull_in {
                    next = next.min(Instant::now() + d);
                }
                continue;
            }
        }
        let Some(stores) = stores.upgrade() else {
            return;
        };
        // Writes after this point pull the next tick in again.
        signal.dirty.store(false, Ordering::Relaxed);
        let mut stores = stores.lock();
        stores.retain(|s| match s.upgrade() {
            Some(inner) => {
                // No receivers is fine: nobody is watching.
                let _ = inner.tx.send(Message::Tick);
                true
            }
            None => false,
        });
        drop(stores);
        next = Instant::now() + interval;
    }
}
