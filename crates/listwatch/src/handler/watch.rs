//! Serving one watch: the initial events, then changes and bookmarks from
//! the store's fan-out, with the expiry (410) answers.

use super::*;

/// The ERROR line of a watch that cannot continue from `requested`.
pub fn expired_event(requested: u64, oldest: u64) -> Bytes {
    let status = status_json(
        Reason::Expired,
        &format!("too old resource version: {requested} ({oldest})"),
    );
    let mut b = BytesMut::with_capacity(status.len() + 32);
    b.put_slice(b"{\"type\":\"ERROR\",\"object\":");
    b.put_slice(&status);
    b.put_slice(b"}\n");
    b.freeze()
}

/// A complete watch response that carries one ERROR event (410 Expired)
/// and ends, as kube-apiserver answers a watch from a compacted
/// resourceVersion; clients relist.
pub fn expired_watch_response(requested: u64, oldest: u64) -> Response<Body> {
    watch_headers(Response::new(Body::full(expired_event(requested, oldest))))
}

pub(super) fn watch_headers(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    resp
}

pub(super) struct WatchTask {
    pub(super) store: Store,
    pub(super) filter: Filter,
    pub(super) tx: mpsc::Sender<Bytes>,
    pub(super) deadline: Option<Instant>,
    pub(super) bookmarks: bool,
    pub(super) initial_events_end: bool,
    pub(super) skip_through: u64,
    pub(super) digest_bookmarks: bool,
    /// A BOOKMARK is skipped when a change was sent with its digest this
    /// recently (see `stream`).
    pub(super) proof_window: Duration,
    pub(super) policy: Option<Arc<dyn WatchPolicy>>,
}

/// The watcher has to stop (client gone or closed by the server).
pub(super) struct Stop;

impl WatchTask {
    pub(super) fn stalled(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| p.stalled())
    }

    pub(super) fn deliver(&self) -> bool {
        self.policy.as_ref().is_none_or(|p| p.deliver())
    }

    /// Queues `line` for the client. A client that does not read fills its
    /// queue; while waiting for room the task checks whether the ring has
    /// overtaken it, and if so closes the watch.
    pub(super) async fn send(
        &self,
        rx: &broadcast::Receiver<Message>,
        line: Bytes,
    ) -> Result<(), Stop> {
        if self.stalled() {
            return Ok(());
        }
        let line = match self.tx.try_send(line) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Stop),
            Err(mpsc::error::TrySendError::Full(line)) => line,
        };
        let capacity = self.store.fanout_capacity();
        loop {
            tokio::select! {
                permit = self.tx.reserve() => {
                    permit.map_err(|_| Stop)?.send(line);
                    return Ok(());
                }
                _ = tokio::time::sleep(LAG_CHECK) => {
                    if rx.len() >= capacity {
                        tracing::debug!(resource = %self.store.resource().gvr, "closing a watcher that fell a ring behind");
                        return Err(Stop);
                    }
                }
            }
        }
    }

    /// Sends the line of `c` this watcher's view calls for, if any; with
    /// `digested` and a view of the whole store, the line that carries the
    /// store's digest after `c`. Returns whether such a line was sent.
    pub(super) async fn send_change(
        &self,
        rx: &broadcast::Receiver<Message>,
        c: &Change,
        digested: bool,
    ) -> Result<bool, Stop> {
        if c.rv <= self.skip_through {
            return Ok(false);
        }
        if digested
            && self.filter.is_trivial()
            && let Some(line) = &c.digest_line
        {
            if !self.deliver() {
                return Ok(false);
            }
            self.send(rx, line.clone()).await?;
            return Ok(true);
        }
        match self.filter.line(c) {
            Some(line) if self.deliver() => self.send(rx, line).await.map(|()| false),
            _ => Ok(false),
        }
    }

    pub(super) async fn run(self, sub: Subscription) {
        let Subscription {
            mut rx,
            initial,
            replay,
            rv,
            at_rv,
            guard: _guard,
        } = sub;
        let _ = self.stream(&mut rx, initial, replay, rv, at_rv).await;
    }

    pub(super) async fn stream(
        &self,
        rx: &mut broadcast::Receiver<Message>,
        initial: Vec<Arc<StoredObject>>,
        replay: Vec<Arc<Change>>,
        rv: u64,
        at_rv: Snapshot,
    ) -> Result<(), Stop> {
        // The digest of this watch's view, kept per change read from the
        // ring (sent or dropped by the policy alike: it describes the
        // store, so a client that lost an event sees a different digest).
        let track_digest = self.bookmarks && self.digest_bookmarks;
        let mut digest_sum = if track_digest {
            self.filter.digest_sum(&at_rv)
        } else {
            0
        };
        drop(at_rv);
        for o in initial.iter().filter(|o| self.filter.matches(o)) {
            self.send(rx, o.added_line()).await?;
        }
        drop(initial);
        if self.initial_events_end {
            let end = ("k8s.io/initial-events-end", "true".to_string());
            self.send(rx, bookmark_line(self.store.resource(), rv, Some(end)))
                .await?;
        }
        for c in &replay {
            self.send_change(rx, c, false).await?;
        }
        drop(replay);

        let mut last_rv = rv;
        // When a change last went out carrying the digest of the store after
        // it (and nothing since). That proves the client fresh as a
        // BOOKMARK would, so the next tick skips this watcher if it comes
        // within `proof_window`: while writes keep coming, each write costs
        // one message per watcher instead of an event plus a bookmark. A
        // change the policy dropped (or that went out without a digest)
        // clears it, so a client that lost an event gets its bookmark.
        let mut proven_at: Option<Instant> = None;
        let deadline = tokio::time::sleep_until(
            self.deadline
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 24 * 3600)),
        );
        tokio::pin!(deadline);
        // Registered once for the whole watch, not once per message.
        let closed = self.tx.closed();
        tokio::pin!(closed);
        loop {
            // Bookmarks come from the store's tick through the same ring as
            // the changes, so a bookmark never claims a resourceVersion
            // whose change this watcher has not read.
            tokio::select! {
                biased;
                _ = &mut closed => return Err(Stop),
                // A stalled watch stands for a black-holed connection: it
                // does not even end at its timeout.
                _ = &mut deadline, if !self.stalled() => return Ok(()),
                msg = rx.recv() => match msg {
                    Ok(Message::Change(c)) => {
                        last_rv = last_rv.max(c.rv);
                        if track_digest {
                            digest_sum = self.filter.digest_step(digest_sum, &c);
                        }
                        let proven = self.send_change(rx, &c, track_digest).await?;
                        proven_at = proven.then(Instant::now);
                    }
                    Ok(Message::Tick) => {
                        if proven_at.take().is_some_and(|at| at.elapsed() < self.proof_window) {
                            continue;
                        }
                        if self.bookmarks {
                            let digest = track_digest.then_some(wire::digest::from_sum(digest_sum));
                            self.send(rx, self.store.bookmark_line(last_rv, digest)).await?;
                        }
                    }
                    Ok(Message::Progress(p)) => last_rv = last_rv.max(p),
                    Ok(Message::CloseAll) => return Ok(()),
                    // Too slow: close; the client resumes from its last
                    // resourceVersion (from history) or relists.
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(resource = %self.store.resource().gvr, skipped = n, "closing lagging watcher");
                        return Err(Stop);
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                },
            }
        }
    }
}
