//! Request and byte counters.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use parking_lot::Mutex;

pub use apiserver::Verb;

#[derive(Debug, Default)]
pub(crate) struct Counter {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Live counters, shared by the server.
#[derive(Debug, Default)]
pub(crate) struct StatsState {
    counters: Mutex<HashMap<(Verb, String), Arc<Counter>>>,
}

impl StatsState {
    /// Counts a request and returns the counter its response bytes go to.
    pub(crate) fn request(&self, verb: Verb, resource: &str) -> Arc<Counter> {
        let c = self
            .counters
            .lock()
            .entry((verb, resource.to_owned()))
            .or_default()
            .clone();
        c.requests.fetch_add(1, Ordering::Relaxed);
        c
    }

    pub(crate) fn snapshot(&self, open_watches: usize) -> Stats {
        let counters = self.counters.lock();
        let mut s = Stats {
            open_watches,
            ..Stats::default()
        };
        for (k, c) in counters.iter() {
            s.requests
                .insert(k.clone(), c.requests.load(Ordering::Relaxed));
            s.response_bytes
                .insert(k.clone(), c.bytes.load(Ordering::Relaxed));
        }
        s
    }

    pub(crate) fn reset(&self) {
        self.counters.lock().clear();
    }
}

/// A snapshot of the server's counters, from [`TestApi::stats`](crate::TestApi::stats).
///
/// Keys are `(verb, plural resource name)`; non-resource requests are
/// counted under `(Verb::Other, "")`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests received.
    pub requests: BTreeMap<(Verb, String), u64>,
    /// Response body bytes sent (watch bytes are counted as they stream).
    pub response_bytes: BTreeMap<(Verb, String), u64>,
    /// Watches open right now.
    pub open_watches: usize,
}

impl Stats {
    /// Requests for `verb` on `resource` (plural name, e.g. `httpscaledobjects`).
    pub fn requests(&self, verb: Verb, resource: &str) -> u64 {
        count(&self.requests, verb, resource)
    }

    /// Requests for `verb` on any resource.
    pub fn total_requests(&self, verb: Verb) -> u64 {
        total(&self.requests, verb)
    }

    /// Response bytes for `verb` on `resource`.
    pub fn response_bytes(&self, verb: Verb, resource: &str) -> u64 {
        count(&self.response_bytes, verb, resource)
    }

    /// Response bytes for `verb` on any resource.
    pub fn total_response_bytes(&self, verb: Verb) -> u64 {
        total(&self.response_bytes, verb)
    }
}

/// The count for `verb` on `resource` in one of [`Stats`]' maps (0 if none).
fn count(counts: &BTreeMap<(Verb, String), u64>, verb: Verb, resource: &str) -> u64 {
    counts
        .get(&(verb, resource.to_owned()))
        .copied()
        .unwrap_or(0)
}

/// The sum for `verb` over every resource in one of [`Stats`]' maps.
fn total(counts: &BTreeMap<(Verb, String), u64>, verb: Verb) -> u64 {
    counts
        .iter()
        .filter(|((v, _), _)| *v == verb)
        .map(|(_, n)| n)
        .sum()
}

/// A response body that adds what it sends to a counter.
#[derive(Debug)]
pub struct CountedBody {
    inner: listwatch::Body,
    counter: Option<Arc<Counter>>,
}

impl CountedBody {
    pub(crate) fn wrap(
        resp: http::Response<listwatch::Body>,
        counter: Option<Arc<Counter>>,
    ) -> http::Response<CountedBody> {
        resp.map(|inner| CountedBody { inner, counter })
    }
}

impl http_body::Body for CountedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(f))), Some(c)) = (&r, &this.counter)
            && let Some(d) = f.data_ref()
        {
            c.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
