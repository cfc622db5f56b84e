//! Fault injection, switchable while the server runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use apiserver::{Core, Front, Verb};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use listwatch::{Body, Reason, Store, WatchPolicy, json_response, status_json_with_code};
use parking_lot::Mutex;

use crate::stats::{CountedBody, StatsState};

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
    pub(crate) core: Arc<Core>,
    pub(crate) state: Arc<FaultState>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("state", &self.state)
            .finish()
    }
}

impl Faults {
    fn state(&self) -> &FaultState {
        &self.state
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
        for s in self.core.stores() {
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
        self.core.go_down().await;
    }

    /// Listens again on the same address, serving the same data.
    pub async fn come_up(&self) -> std::io::Result<()> {
        Core::come_up(&self.core).await
    }
}

/// Counts every request, then fails or delays it as the faults say, then
/// hands it to the product server.
pub(crate) struct TestFront {
    pub(crate) faults: Arc<FaultState>,
    pub(crate) stats: Arc<StatsState>,
}

impl Front for TestFront {
    type Body = CountedBody;

    async fn serve(&self, core: &Arc<Core>, req: Request<Incoming>) -> Response<CountedBody> {
        if !core.authorized(&req) {
            let c = self.stats.request(Verb::Other, "");
            return CountedBody::wrap(core.handle(req).await, Some(c));
        }
        let Ok((verb, path)) = apiserver::classify(&req) else {
            // A query that does not parse: the server's 400, not counted.
            return CountedBody::wrap(core.handle(req).await, None);
        };
        let Some(path) = path else {
            let c = self.stats.request(verb, "");
            return CountedBody::wrap(core.handle(req).await, Some(c));
        };
        let counter = self.stats.request(verb, &path.gvr.resource);
        if let Some(code) = self.faults.failure_for(verb) {
            let store = core.store(&path.gvr);
            return CountedBody::wrap(injected(code, verb, store.as_ref()), Some(counter));
        }
        if verb == Verb::List {
            let delay = self.faults.list_delay();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        CountedBody::wrap(core.handle(req).await, Some(counter))
    }
}

fn injected(code: u16, verb: Verb, store: Option<&Store>) -> Response<Body> {
    if code == 410 && verb == Verb::Watch {
        let rv = store.map(|s| s.resource_version()).unwrap_or(0);
        return listwatch::expired_watch_response(rv, rv);
    }
    let reason = Reason::from_code(code);
    let mut resp = json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        status_json_with_code(code, reason, &format!("injected failure ({code})")),
    );
    if code == 429 {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}
