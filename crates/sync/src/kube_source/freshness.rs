//! Freshness of the index against a Kubernetes-compatible source: content
//! digests ([`wire::digest`]) from the watch, and when the resync must list.
//!
//! The resync sends `If-None-Match: "d<digest>"`, where the digest covers
//! exactly the objects (namespace, name, resourceVersion) the index holds
//! for the kind ([`crate::RouteIndex::digest`]). A server built on
//! `listwatch` (the cache tier, testkit) answers 304 when the list it would
//! send has the same digest. So a replica that received a change by watch
//! pays a 304 for its next resync, not a full list: with thousands of
//! replicas, a write no longer triggers thousands of full lists. A lost
//! event still shows as a different digest, so the resync still repairs it.
//! Servers that ignore the token (the API server) answer with a list: a
//! metadata-only one (see `resync`).
//!
//! The same digest also arrives without any request: a `listwatch` server
//! annotates each watch BOOKMARK with the digest of the watch's view at the
//! bookmark's resourceVersion ([`wire::digest::ANNOTATION`]), and puts it on
//! events too. The watch compares it with the index after applying
//! everything before it ([`Freshness::check`]): equal proves the index
//! fresh, and that interval's list is skipped; different means an event was
//! lost, and the resync lists at once. Without such digests (a real API
//! server, a stalled watch) the resync lists every interval.
//!
//! Everything about freshness lives in this one type: the proofs, the
//! repair requests, and the resync's schedule ([`Freshness::resync_due`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::index::ObjectKind;
use crate::writer::{Batch, Event};

/// A content digest from the watch stream (a digest BOOKMARK, or an event
/// that carries one): what the server holds for the watch's view at `rv`,
/// after every event sent before it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proof {
    pub(crate) digest: u64,
    pub(crate) rv: Option<u64>,
}

/// What the watches and the resync of one source share, per kind.
#[derive(Debug)]
pub(crate) struct Freshness {
    /// Milliseconds after `base` of the last matching digest, + 1 (0 = never).
    verified_ms: [AtomicU64; 2],
    repair: [Notify; 2],
    /// Like `verified_ms`, for the last line (event or bookmark) the watch
    /// received.
    alive_ms: [AtomicU64; 2],
    /// The server sends digests on the watch.
    digests_seen: [AtomicBool; 2],
    base: Instant,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            verified_ms: Default::default(),
            repair: Default::default(),
            alive_ms: Default::default(),
            digests_seen: Default::default(),
            base: Instant::now(),
        }
    }
}

/// When one kind's resync lists next (kept by the resync task).
#[derive(Debug)]
pub(crate) struct ResyncClock {
    /// When the kind is next due.
    pub(crate) deadline: Instant,
    /// The digest last counted as a resync.
    proven: Option<Instant>,
}

impl ResyncClock {
    pub(crate) fn new(first: Instant) -> Self {
        ResyncClock {
            deadline: first,
            proven: None,
        }
    }
}

/// The resync's decision for one kind at one wake-up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// List now.
    Now,
    /// Not yet (the clock's deadline says when to look again).
    Later,
    /// A digest from the watch proved the index fresh since the last
    /// resync: it stands for this interval's list (count it as a resync).
    Proven,
}

impl Freshness {
    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    fn instant(&self, ms: u64) -> Option<Instant> {
        (ms != 0).then(|| self.base + Duration::from_millis(ms - 1))
    }

    /// The watch of `kind` received something at `now`.
    pub(crate) fn watch_alive(&self, kind: ObjectKind, now: Instant) {
        self.alive_ms[kind.slot()].store(self.stamp(now), Ordering::Relaxed);
    }

    /// Compares a digest from the watch stream with the index, after
    /// everything the watch sent before it is applied (in the same batch):
    /// equal proves the index fresh (it stands for this interval's
    /// resync), different means an event was lost (list now).
    pub(crate) fn check(&self, batch: &mut Batch<'_>, kind: ObjectKind, proof: Proof) {
        if !batch.is_complete(kind) {
            return;
        }
        // A list newer than this proof is already applied (the stream lags
        // behind the lists): it describes an older state and can prove
        // nothing either way. Repairing on it would list again, get the
        // newest write before its event, and keep a lagging replica
        // listing on every write.
        if proof.rv.is_some_and(|r| r < batch.listed_rv(kind)) {
            return;
        }
        self.digests_seen[kind.slot()].store(true, Ordering::Relaxed);
        if batch.digest(kind) == Some(proof.digest) {
            let now = self.stamp(Instant::now());
            self.verified_ms[kind.slot()].store(now, Ordering::Relaxed);
            batch.apply(Event::Current);
        } else {
            self.repair[kind.slot()].notify_one();
        }
    }

    /// Resolves when a digest did not match for `kind` (an event was lost).
    pub(crate) fn repair_requested(&self, kind: ObjectKind) -> tokio::sync::futures::Notified<'_> {
        self.repair[kind.slot()].notified()
    }

    /// Whether the resync of `kind` lists now. `repair`: a digest differed,
    /// list whatever the schedule says. Otherwise a kind lists every
    /// `interval`, unless a digest from the watch proved the index fresh
    /// within the last 1.5 intervals (a `listwatch` server skips the
    /// BOOKMARK of a watcher whose last event, carrying the digest, went
    /// out less than half an interval before the tick) plus a fifth for
    /// jitter. Moves `clock.deadline` to the next time to look.
    pub(crate) fn resync_due(
        &self,
        kind: ObjectKind,
        clock: &mut ResyncClock,
        now: Instant,
        interval: Duration,
        repair: bool,
    ) -> Due {
        let grace = interval / 5;
        if !repair {
            if clock.deadline > now {
                return Due::Later;
            }
            let verified = self.verified_ms[kind.slot()].load(Ordering::Relaxed);
            if let Some(at) = self.instant(verified) {
                let fresh_until = at + interval + interval / 2 + grace;
                if fresh_until > now {
                    clock.deadline = fresh_until;
                    // A digest newer than the last one counted stands for
                    // this interval's resync.
                    if clock.proven != Some(at) {
                        clock.proven = Some(at);
                        return Due::Proven;
                    }
                    return Due::Later;
                }
            }
            // A server that sends digests, on a watch that is not silent:
            // the digest is late because everything is (a write's fan-out
            // to thousands of replicas), and a list now would race the
            // events in flight, take the full list, and add load exactly
            // when there is none to spare. The next digest decides; a
            // silent (stalled) watch still gets its list.
            if self.digests_seen[kind.slot()].load(Ordering::Relaxed) {
                let alive = self.alive_ms[kind.slot()].load(Ordering::Relaxed);
                if let Some(alive) = self.instant(alive)
                    && alive + interval + grace > now
                {
                    clock.deadline = alive + interval + grace;
                    return Due::Later;
                }
                // Woken this late, this process is overloaded: the watch's
                // silence is our own backlog, not a stall. Look again
                // shortly, after the backlog (the watch's lines included)
                // has had its turn.
                if now > clock.deadline + grace {
                    clock.deadline = now + grace;
                    return Due::Later;
                }
            }
        }
        clock.deadline = now + interval;
        Due::Now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND: ObjectKind = ObjectKind::HttpScaledObject;
    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn without_digests_the_resync_lists_every_interval() {
        let f = Freshness::default();
        let start = Instant::now();
        let mut clock = ResyncClock::new(start + SECOND);
        assert_eq!(
            f.resync_due(KIND, &mut clock, start, SECOND, false),
            Due::Later
        );
        let t = start + SECOND;
        assert_eq!(f.resync_due(KIND, &mut clock, t, SECOND, false), Due::Now);
        assert_eq!(clock.deadline, t + SECOND);
        // A repair lists at once, whatever the schedule.
        assert_eq!(f.resync_due(KIND, &mut clock, t, SECOND, true), Due::Now);
    }

    #[test]
    fn a_matching_digest_stands_for_one_resync_and_a_silent_watch_still_lists() {
        let f = Freshness::default();
        let start = Instant::now();
        let mut clock = ResyncClock::new(start);
        f.verified_ms[KIND.slot()].store(f.stamp(start), Ordering::Relaxed);
        f.digests_seen[KIND.slot()].store(true, Ordering::Relaxed);
        f.watch_alive(KIND, start);
        assert_eq!(
            f.resync_due(KIND, &mut clock, start, SECOND, false),
            Due::Proven
        );
        // The same proof is not counted twice.
        clock.deadline = start;
        assert_eq!(
            f.resync_due(KIND, &mut clock, start, SECOND, false),
            Due::Later
        );
        // Two intervals later, with nothing heard since: the watch stalled.
        let late = start + 2 * SECOND;
        clock.deadline = late;
        assert_eq!(
            f.resync_due(KIND, &mut clock, late, SECOND, false),
            Due::Now
        );
    }
}
