//! Freshness from content digests ([`wire::digest`]), for the resync's
//! conditional list.
//!
//! The resync sends `If-None-Match: "d<digest>"`, where the digest covers
//! exactly the objects (namespace, name, resourceVersion) the index holds
//! for the kind ([`crate::RouteIndex::digest`]). A server built on
//! `listwatch` (the cache tier, testkit) answers 304 when the list it would
//! send has the same digest. So a replica that received a change by watch
//! pays a 304 for its next resync, not a full list: with thousands of
//! replicas, a write no longer triggers thousands of full lists. A lost
//! event still shows as a different digest, so the resync still repairs
//! it. Servers that ignore the token (the API server) answer as before.
//!
//! The same digest also arrives without any request: a `listwatch` server
//! annotates each watch BOOKMARK with the digest of the watch's view at the
//! bookmark's resourceVersion ([`wire::digest::ANNOTATION`]). The owner
//! task compares it with the index after applying everything before the
//! bookmark: equal proves the index fresh, and that interval's conditional
//! list is skipped; different means an event was lost, and the resync lists
//! at once. Without such bookmarks (a real API server, a stalled watch) the
//! resync lists every interval as before.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::index::ObjectKind;

/// What the index's writer (`Core`) shares with the resync task: the content
/// digests it holds (for the conditional list), when a digest BOOKMARK last
/// proved the index fresh, and a request to list at once (a BOOKMARK's
/// digest differed: an event was lost).
#[derive(Debug)]
pub(crate) struct Digests {
    /// 0 means "not known yet" (before the kind's first complete list).
    by_kind: [AtomicU64; 2],
    /// Milliseconds after `base` of the last matching digest bookmark, + 1
    /// (0 = never).
    verified_ms: [AtomicU64; 2],
    repair: [Notify; 2],
    /// Like `verified_ms`, for the last line (event or bookmark) the watch
    /// received.
    alive_ms: [AtomicU64; 2],
    /// The server annotates bookmarks with digests.
    digest_bookmarks: [AtomicBool; 2],
    base: Instant,
}

impl Default for Digests {
    fn default() -> Self {
        Digests {
            by_kind: Default::default(),
            verified_ms: Default::default(),
            repair: Default::default(),
            alive_ms: Default::default(),
            digest_bookmarks: Default::default(),
            base: Instant::now(),
        }
    }
}

pub(crate) fn slot(kind: ObjectKind) -> usize {
    match kind {
        ObjectKind::HttpScaledObject => 0,
        ObjectKind::InterceptorRoute => 1,
    }
}

impl Digests {
    pub(crate) fn set(&self, kind: ObjectKind, digest: u64) {
        // 0 is reserved for "unknown"; an empty set's digest is 0 too, and
        // sending none for it only costs a list of nothing.
        self.by_kind[slot(kind)].store(digest, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, kind: ObjectKind) -> Option<u64> {
        Some(self.by_kind[slot(kind)].load(Ordering::Relaxed)).filter(|d| *d != 0)
    }

    /// A digest BOOKMARK matched the index just now.
    pub(crate) fn verified(&self, kind: ObjectKind) {
        let ms = self.base.elapsed().as_millis() as u64 + 1;
        self.verified_ms[slot(kind)].store(ms, Ordering::Relaxed);
    }

    /// When a digest BOOKMARK last matched the index.
    pub(crate) fn verified_at(&self, kind: ObjectKind) -> Option<Instant> {
        match self.verified_ms[slot(kind)].load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// The watch of `kind` received something at `now`.
    pub(crate) fn watch_alive(&self, kind: ObjectKind, now: Instant) {
        let ms = now.saturating_duration_since(self.base).as_millis() as u64 + 1;
        self.alive_ms[slot(kind)].store(ms, Ordering::Relaxed);
    }

    /// When the watch of `kind` last received something.
    pub(crate) fn watch_alive_at(&self, kind: ObjectKind) -> Option<Instant> {
        match self.alive_ms[slot(kind)].load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// The server of `kind`'s watch annotates its bookmarks with digests.
    pub(crate) fn digest_bookmarks_seen(&self, kind: ObjectKind) {
        self.digest_bookmarks[slot(kind)].store(true, Ordering::Relaxed);
    }

    pub(crate) fn has_digest_bookmarks(&self, kind: ObjectKind) -> bool {
        self.digest_bookmarks[slot(kind)].load(Ordering::Relaxed)
    }

    /// A digest BOOKMARK did not match: ask the kind's resync to list now.
    pub(crate) fn request_repair(&self, kind: ObjectKind) {
        self.repair[slot(kind)].notify_one();
    }

    /// Resolves when a repair was requested for `kind`.
    pub(crate) fn repair_requested(&self, kind: ObjectKind) -> tokio::sync::futures::Notified<'_> {
        self.repair[slot(kind)].notified()
    }
}
