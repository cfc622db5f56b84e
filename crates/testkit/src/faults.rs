//! Fault injection, switchable while the server runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use listwatch::WatchPolicy;
use parking_lot::Mutex;

use crate::server::Shared;
use crate::stats::Verb;

/// Which requests an injected failure applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOn {
    /// Lists only.
    List,
    /// Watches only.
    Watch,
    /// Lists and watches.
    ListAndWatch,
    /// Every resource request (discovery is never failed).
    All,
}

impl FailOn {
    fn covers(self, verb: Verb) -> bool {
        match self {
            FailOn::List => verb == Verb::List,
            FailOn::Watch => verb == Verb::Watch,
            FailOn::ListAndWatch => matches!(verb, Verb::List | Verb::Watch),
            FailOn::All => verb != Verb::Other,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Failure {
    on: FailOn,
    code: u16,
    /// `None`: every matching request.
    remaining: Option<u64>,
}

/// The fault switches, read on the request and watch paths.
#[derive(Debug, Default)]
pub(crate) struct FaultState {
    list_delay_ms: AtomicU64,
    /// Probability of dropping a watch event, in parts per million.
    drop_ppm: AtomicU64,
    stalled: AtomicBool,
    failures: Mutex<Vec<Failure>>,
}

impl FaultState {
    pub(crate) fn list_delay(&self) -> Duration {
        Duration::from_millis(self.list_delay_ms.load(Ordering::Relaxed))
    }

    /// The injected failure code for this request, if any (consumes one
    /// of a "next N" failure).
    pub(crate) fn failure_for(&self, verb: Verb) -> Option<u16> {
        let mut failures = self.failures.lock();
        let i = failures.iter().position(|f| f.on.covers(verb))?;
        let code = failures[i].code;
        if let Some(n) = &mut failures[i].remaining {
            *n -= 1;
            if *n == 0 {
                failures.remove(i);
            }
        }
        Some(code)
    }
}

impl WatchPolicy for FaultState {
    fn deliver(&self) -> bool {
        let ppm = self.drop_ppm.load(Ordering::Relaxed);
        ppm == 0 || fastrand::u64(..1_000_000) >= ppm
    }

    fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

/// Switches faults on and off while a [`TestApi`](crate::TestApi) runs.
///
/// ```no_run
/// # async fn demo() {
/// use testkit::{FailOn, TestApi};
/// let api = TestApi::start().await;
/// api.faults().fail_next(FailOn::Watch, 410, 1); // next watch gets 410 Expired
/// api.faults().set_drop_watch_events(0.5);       // each watcher loses half the events
/// api.faults().clear();
/// # }
/// ```
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("state", &self.shared.faults)
            .finish()
    }
}

impl Faults {
    fn state(&self) -> &FaultState {
        &self.shared.faults
    }

    /// Delays every list response by `delay` (zero turns it off).
    pub fn set_list_delay(&self, delay: Duration) {
        self.state()
            .list_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Drops this fraction (0.0..=1.0) of live watch events, decided per
    /// watcher per event. Initial ADDED events of a watch are not dropped.
    pub fn set_drop_watch_events(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0).round() as u64;
        self.state().drop_ppm.store(ppm, Ordering::Relaxed);
    }

    /// While on, open and new watches send nothing (no events, no
    /// bookmarks; events meanwhile are lost to them) but stay connected.
    pub fn set_stall_watches(&self, on: bool) {
        self.state().stalled.store(on, Ordering::Relaxed);
    }

    /// Ends every open watch now; clients reconnect.
    pub fn close_watches(&self) {
        for s in self.shared.stores.all() {
            s.close_watchers();
        }
    }

    /// Answers the next `count` matching requests with `code` (410, 429,
    /// 500, ...) as a Status. A watch failed with 410 gets what
    /// kube-apiserver sends: 200 and one ERROR event.
    pub fn fail_next(&self, on: FailOn, code: u16, count: u64) {
        if count > 0 {
            self.state().failures.lock().push(Failure {
                on,
                code,
                remaining: Some(count),
            });
        }
    }

    /// Answers every matching request with `code` until cleared.
    pub fn fail_all(&self, on: FailOn, code: u16) {
        self.state().failures.lock().push(Failure {
            on,
            code,
            remaining: None,
        });
    }

    /// Removes injected failures.
    pub fn clear_failures(&self) {
        self.state().failures.lock().clear();
    }

    /// Turns every fault off (does not bring a downed server up).
    pub fn clear(&self) {
        self.set_list_delay(Duration::ZERO);
        self.set_drop_watch_events(0.0);
        self.set_stall_watches(false);
        self.clear_failures();
    }

    /// Stops listening (connections are refused) and drops every open
    /// connection, watches included. Data is kept.
    pub async fn go_down(&self) {
        self.shared.go_down().await;
    }

    /// Listens again on the same address, serving the same data.
    pub async fn come_up(&self) -> std::io::Result<()> {
        Shared::come_up(&self.shared).await
    }
}
