//! Keep-alive HTTP/1.1 connections to backends, with both of upstream's
//! idle bounds: `KEDA_HTTP_MAX_IDLE_CONNS_PER_HOST` (per backend address)
//! and `KEDA_HTTP_MAX_IDLE_CONNS` (all backends together; when it is
//! reached the least recently used idle connection is closed, as Go's
//! transport does).
//!
//! Each proxy worker has its own [`H1Pool`] (its connections live on its
//! thread); the global idle count is an [`IdleBudget`] shared by all of
//! them. A connection is leased for one request and comes back to the pool
//! when the response body has been read to its end and the connection is
//! ready for the next request; a response cut short, an upgrade (101) or a
//! `Connection: close` never comes back. Idle connections are closed after
//! [`POOL_IDLE_TIMEOUT`]. A request that a pooled connection could not take
//! (the backend closed it while it sat idle) is retried on another
//! connection, since it was never sent.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::backend::Dialer;

/// How long an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How often a pool closes the connections idle for longer than
/// [`POOL_IDLE_TIMEOUT`].
const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The idle connections of all workers together, against their cap.
#[derive(Debug)]
pub struct IdleBudget {
    idle: AtomicUsize,
    max: usize,
}

impl IdleBudget {
    /// A budget of `max` idle connections (0: none are kept).
    pub fn new(max: usize) -> Arc<IdleBudget> {
        Arc::new(IdleBudget {
            idle: AtomicUsize::new(0),
            max,
        })
    }

    /// Idle connections now, over all pools sharing this budget.
    pub fn idle(&self) -> usize {
        self.idle.load(Ordering::Relaxed)
    }

    fn try_take(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self) {
        self.idle.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made.
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The HTTP/1.1 handshake or the exchange failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

struct Idle<B> {
    seq: u64,
    since: Instant,
    sender: http1::SendRequest<B>,
}

struct State<B> {
    /// Idle connections by backend address, oldest first.
    idle: HashMap<Arc<str>, VecDeque<Idle<B>>>,
    /// Every idle connection of this pool by age: seq -> address.
    lru: BTreeMap<u64, Arc<str>>,
    seq: u64,
    sweeping: bool,
}

impl<B> Default for State<B> {
    fn default() -> Self {
        State {
            idle: HashMap::new(),
            lru: BTreeMap::new(),
            seq: 0,
            sweeping: false,
        }
    }
}

struct Inner<B> {
    state: Mutex<State<B>>,
    dialer: Dialer,
    max_idle_per_host: usize,
    budget: Arc<IdleBudget>,
}

/// One worker's HTTP/1.1 connections, sending request bodies of type `B`;
/// see the module docs.
pub struct H1Pool<B = Incoming> {
    inner: Arc<Inner<B>>,
}

impl<B> Clone for H1Pool<B> {
    fn clone(&self) -> Self {
        H1Pool {
            inner: self.inner.clone(),
        }
    }
}

impl<B> std::fmt::Debug for H1Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("max_idle_per_host", &self.inner.max_idle_per_host)
            .field("idle", &self.inner.state.lock().lru.len())
            .finish()
    }
}

/// A connection lent to one request; give it back with [`Lease::release`]
/// once the response body has ended.
pub struct Lease<B = Incoming> {
    pool: Weak<Inner<B>>,
    key: Arc<str>,
    sender: http1::SendRequest<B>,
}

impl<B> std::fmt::Debug for Lease<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("backend", &self.key).finish()
    }
}

impl<B> Lease<B>
where
    B: Body + Send + 'static,
{
    /// The response body ended: once the connection is ready for another
    /// request (the backend may still be finishing), it goes back to the
    /// pool. Must be called inside a tokio runtime.
    pub fn release(mut self) {
        if self.sender.is_ready() {
            if let Some(pool) = self.pool.upgrade() {
                put(&pool, self.key, self.sender);
            }
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            if self.sender.ready().await.is_ok()
                && let Some(pool) = self.pool.upgrade()
            {
                put(&pool, self.key, self.sender);
            }
        });
    }
}

impl<B> H1Pool<B>
where
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A pool dialing with `dialer`, keeping at most `max_idle_per_host`
    /// idle connections per address, within the shared `budget`.
    pub fn new(dialer: Dialer, max_idle_per_host: usize, budget: Arc<IdleBudget>) -> Self {
        H1Pool {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                dialer,
                max_idle_per_host,
                budget,
            }),
        }
    }

    /// Idle connections in this pool.
    pub fn idle(&self) -> usize {
        self.inner.state.lock().lru.len()
    }

    /// Sends `req` (origin-form URI, `Host` set) to `authority`
    /// (`host:port`) over an idle connection or a new one. The lease is
    /// `None` when the connection cannot be reused (101 Switching
    /// Protocols: it now belongs to the upgrade).
    pub async fn send(
        &self,
        authority: &Arc<str>,
        mut req: Request<B>,
    ) -> Result<(Response<Incoming>, Option<Lease<B>>), SendError> {
        let key = authority.clone();
        // Idle connections first; one the backend closed meanwhile hands
        // the request back unsent, and the next one is tried.
        while let Some(mut sender) = self.checkout(&key) {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.lease(key, sender, resp)),
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(SendError::Http(e.into_error())),
                },
            }
        }
        let io = self
            .inner
            .dialer
            .clone()
            .dial_authority(authority)
            .await
            .map_err(SendError::Connect)?;
        let (mut sender, conn) = http1::Builder::new().writev(false).handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended with an error");
            }
        });
        let resp = sender.send_request(req).await?;
        Ok(self.lease(key, sender, resp))
    }

    fn lease(
        &self,
        key: Arc<str>,
        sender: http1::SendRequest<B>,
        resp: Response<Incoming>,
    ) -> (Response<Incoming>, Option<Lease<B>>) {
        let lease = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS).then(|| Lease {
            pool: Arc::downgrade(&self.inner),
            key,
            sender,
        });
        (resp, lease)
    }

    fn checkout(&self, key: &Arc<str>) -> Option<http1::SendRequest<B>> {
        let mut st = self.inner.state.lock();
        expire(&mut st, &self.inner.budget, Instant::now());
        loop {
            // Most recently used first: it is the least likely to have been
            // closed by the backend's own idle timeout.
            let Some(idle) = st.idle.get_mut(key)?.pop_back() else {
                st.idle.remove(key);
                return None;
            };
            st.lru.remove(&idle.seq);
            self.inner.budget.give_back();
            if idle.sender.is_ready() {
                drop_queue_if_empty(&mut st, key);
                return Some(idle.sender);
            }
            // Closed while idle: dropped; try the next one.
        }
    }
}

fn drop_queue_if_empty<B>(st: &mut State<B>, key: &Arc<str>) {
    if st.idle.get(key).is_some_and(VecDeque::is_empty) {
        st.idle.remove(key);
    }
}

/// Closes the connections idle for longer than the idle timeout.
fn expire<B>(st: &mut State<B>, budget: &IdleBudget, now: Instant) {
    while let Some((seq, key)) = st.lru.first_key_value() {
        // The LRU index and the queues move together: the oldest entry of
        // the index is the front of its address's queue.
        let since = st
            .idle
            .get(key)
            .and_then(VecDeque::front)
            .filter(|i| i.seq == *seq)
            .map(|i| i.since);
        if since.is_some_and(|t| now.duration_since(t) < POOL_IDLE_TIMEOUT) {
            return;
        }
        evict_oldest(st, budget);
    }
}

/// Closes this pool's least recently used idle connection, if it has one.
fn evict_oldest<B>(st: &mut State<B>, budget: &IdleBudget) -> bool {
    let Some((seq, key)) = st.lru.pop_first() else {
        return false;
    };
    if let Some(queue) = st.idle.get_mut(&key)
        && queue.front().is_some_and(|i| i.seq == seq)
    {
        queue.pop_front();
        budget.give_back();
    }
    drop_queue_if_empty(st, &key);
    true
}

fn put<B: Send + 'static>(pool: &Arc<Inner<B>>, key: Arc<str>, sender: http1::SendRequest<B>) {
    if pool.max_idle_per_host == 0 {
        return;
    }
    let mut st = pool.state.lock();
    let now = Instant::now();
    expire(&mut st, &pool.budget, now);
    if st
        .idle
        .get(&key)
        .is_some_and(|q| q.len() >= pool.max_idle_per_host)
    {
        return; // dropped: the connection closes
    }
    // Within the global budget, making room by closing our oldest idle
    // connection when it is full.
    while !pool.budget.try_take() {
        if !evict_oldest(&mut st, &pool.budget) {
            return; // all idle connections are other workers': drop this one
        }
    }
    st.seq += 1;
    let seq = st.seq;
    st.lru.insert(seq, key.clone());
    st.idle.entry(key).or_default().push_back(Idle {
        seq,
        since: now,
        sender,
    });
    if !st.sweeping
        && let Ok(rt) = tokio::runtime::Handle::try_current()
    {
        st.sweeping = true;
        let weak = Arc::downgrade(pool);
        rt.spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_INTERVAL).await;
                let Some(pool) = weak.upgrade() else { return };
                let mut st = pool.state.lock();
                expire(&mut st, &pool.budget, Instant::now());
                if st.lru.is_empty() {
                    st.sweeping = false;
                    return;
                }
            }
        });
    }
}

impl<B> Drop for Inner<B> {
    fn drop(&mut self) {
        let st = self.state.get_mut();
        for _ in 0..st.lru.len() {
            self.budget.give_back();
        }
    }
}
