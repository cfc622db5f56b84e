//! The fleet's counts: what every interceptor pod last reported, summed
//! per route, with request rates from the per-pod `RequestCount` deltas.
//! Pure state, no I/O: a poll round's results go in with the time they
//! were taken ([`Fleet::apply`]) and a [`Counts`] snapshot comes out.
//!
//! - Concurrency per route: the sum over pods of their last report. A pod
//!   that stops answering keeps its last report for `keep_unreachable`,
//!   then drops out; a pod no longer listed (not ready, deleted) drops out
//!   at once.
//! - Rate per route: `RequestCount` increases seen after the scaler's
//!   first poll of that pod and route (as upstream), in a
//!   [`RateWindow`](crate::rate::RateWindow) with the route's window and
//!   granularity. A counter that went down (the pod restarted), or a new
//!   process instance in the compact form, counts its whole value.
//!
//! The sums are kept incrementally: a round costs O(what changed), so an
//! idle pod in the compact form costs nothing here.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use crate::rate::RateWindow;
use crate::{Counts, KeyCounts};

/// What one pod's `/queue` answer said. The route keys live in one
/// buffer (a round of 1,000 pods x 100 changed routes would otherwise be
/// 100,000 small strings).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodReport {
    /// The process instance (compact form only).
    pub instance: Option<u64>,
    /// Every route (plain JSON, or a full compact answer), or only changes.
    pub full: bool,
    keys: String,
    /// (key range in `keys`, Concurrency, RequestCount).
    changed: Vec<(Range<usize>, i64, u64)>,
    /// Routes gone (delta answers): key ranges in `keys`.
    removed: Vec<Range<usize>>,
}

impl PodReport {
    /// An empty report.
    pub fn new(instance: Option<u64>, full: bool) -> PodReport {
        PodReport {
            instance,
            full,
            ..PodReport::default()
        }
    }

    /// The report of a compact answer.
    pub fn from_compact(q: &wire::queue::CompactQueue<'_>) -> PodReport {
        let mut r = PodReport::new(Some(q.instance), q.full);
        let len = q.changed.iter().map(|e| e.0.len()).sum::<usize>()
            + q.removed.iter().map(|k| k.len()).sum::<usize>();
        r.keys.reserve_exact(len);
        r.changed.reserve_exact(q.changed.len());
        for (k, c, n) in &q.changed {
            r.push_changed(k, *c, *n);
        }
        for k in &q.removed {
            r.push_removed(k);
        }
        r
    }

    /// The report of upstream's JSON: every route, a negative concurrency
    /// read as 0.
    pub fn from_plain(entries: &[wire::queue::Entry<'_>]) -> PodReport {
        let mut r = PodReport::new(None, true);
        r.keys
            .reserve_exact(entries.iter().map(|e| e.0.len()).sum::<usize>());
        r.changed.reserve_exact(entries.len());
        for (k, c, n) in entries {
            r.push_changed(k, (*c).max(0), *n);
        }
        r
    }

    fn key(&mut self, key: &str) -> Range<usize> {
        let start = self.keys.len();
        self.keys.push_str(key);
        start..self.keys.len()
    }

    /// Adds a route that was added or changed.
    pub fn push_changed(&mut self, key: &str, concurrency: i64, request_count: u64) {
        let k = self.key(key);
        self.changed.push((k, concurrency, request_count));
    }

    /// Adds a route that is gone.
    pub fn push_removed(&mut self, key: &str) {
        let k = self.key(key);
        self.removed.push(k);
    }

    /// The routes added or changed: (key, Concurrency, RequestCount).
    pub fn changed(&self) -> impl Iterator<Item = (&str, i64, u64)> {
        self.changed
            .iter()
            .map(|(k, c, n)| (&self.keys[k.clone()], *c, *n))
    }

    /// The routes gone.
    pub fn removed(&self) -> impl Iterator<Item = &str> {
        self.removed.iter().map(|k| &self.keys[k.clone()])
    }
}

/// The result of one pod's fetch in a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// It answered.
    Report(PodReport),
    /// It did not (timeout, refused, bad answer).
    Failed,
}

/// How a round went, for metrics and health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundSummary {
    /// Pods listed as ready.
    pub listed: usize,
    /// Pods that answered.
    pub answered: usize,
    /// Pods listed that did not answer but still count (kept).
    pub unreachable: usize,
    /// Pods dropped this round (vanished, or unreachable too long).
    pub dropped: usize,
}

/// The route window settings for a key: (window, granularity).
pub type WindowOf<'a> = &'a dyn Fn(&str) -> (Duration, Duration);

#[derive(Debug)]
struct Pod {
    instance: Option<u64>,
    /// (Concurrency, RequestCount) by key id: dense, since every pod
    /// reports (nearly) every route.
    counts: Vec<Option<(i64, u64)>>,
    last_answer: Duration,
}

/// The fleet's state; see the [module docs](self).
#[derive(Debug)]
pub struct Fleet {
    keep_unreachable: Duration,
    /// Route key -> id: looked up once per changed route per pod per round
    /// (100,000 times a round at 1,000 pods), so with a fast hasher.
    ids: HashMap<Arc<str>, u32, foldhash::fast::RandomState>,
    keys: Vec<Arc<str>>,
    /// When each key was first reported (its rate window starts there).
    first_seen: Vec<Duration>,
    /// Summed concurrency per key id.
    concurrency: Vec<i64>,
    rates: HashMap<u32, RateWindow>,
    pods: HashMap<SocketAddr, Pod>,
}

impl Fleet {
    /// An empty fleet; an unreachable pod counts for `keep_unreachable`.
    pub fn new(keep_unreachable: Duration) -> Fleet {
        Fleet {
            keep_unreachable,
            ids: HashMap::default(),
            keys: Vec::new(),
            first_seen: Vec::new(),
            concurrency: Vec::new(),
            rates: HashMap::new(),
            pods: HashMap::new(),
        }
    }

    fn id(&mut self, key: &str, now: Duration) -> u32 {
        if let Some(id) = self.ids.get(key) {
            return *id;
        }
        let id = self.keys.len() as u32;
        let key: Arc<str> = Arc::from(key);
        self.keys.push(key.clone());
        self.first_seen.push(now);
        self.ids.insert(key, id);
        self.concurrency.push(0);
        id
    }

    /// Pods the fleet counts now.
    pub fn pods(&self) -> usize {
        self.pods.len()
    }

    fn drop_pod(&mut self, addr: &SocketAddr) -> bool {
        let Some(pod) = self.pods.remove(addr) else {
            return false;
        };
        for (id, entry) in pod.counts.into_iter().enumerate() {
            if let Some((c, _)) = entry {
                self.concurrency[id] -= c;
            }
        }
        true
    }

    /// Applies a round taken at `now`: `listed` are the ready pods, `results`
    /// what each of them answered.
    pub fn apply(
        &mut self,
        now: Duration,
        listed: &[SocketAddr],
        results: Vec<(SocketAddr, Fetched)>,
        window_of: WindowOf<'_>,
    ) -> RoundSummary {
        let mut summary = RoundSummary {
            listed: listed.len(),
            ..RoundSummary::default()
        };
        let listed_set: HashSet<&SocketAddr> = listed.iter().collect();
        let gone: Vec<SocketAddr> = self
            .pods
            .keys()
            .filter(|a| !listed_set.contains(a))
            .copied()
            .collect();
        for a in gone {
            if self.drop_pod(&a) {
                summary.dropped += 1;
            }
        }
        let mut deltas: Vec<u64> = Vec::new();
        for (addr, fetched) in results {
            match fetched {
                Fetched::Report(report) => {
                    summary.answered += 1;
                    self.apply_report(now, addr, report, &mut deltas);
                }
                Fetched::Failed => {
                    let expired = self
                        .pods
                        .get(&addr)
                        .is_some_and(|p| now.saturating_sub(p.last_answer) > self.keep_unreachable);
                    if expired {
                        self.drop_pod(&addr);
                        summary.dropped += 1;
                    } else if self.pods.contains_key(&addr) {
                        summary.unreachable += 1;
                    }
                }
            }
        }
        for (id, delta) in deltas.into_iter().enumerate() {
            if delta == 0 {
                continue;
            }
            let id = id as u32;
            let shape = window_of(&self.keys[id as usize]);
            let origin = self.first_seen[id as usize];
            let new = || RateWindow::new(shape.0, shape.1).with_origin(origin);
            let w = self.rates.entry(id).or_insert_with(new);
            if w.shape() != shape {
                *w = new();
            }
            w.record(now, delta);
        }
        self.rates.retain(|_, w| !w.is_idle(now));
        summary
    }

    fn apply_report(
        &mut self,
        now: Duration,
        addr: SocketAddr,
        report: PodReport,
        deltas: &mut Vec<u64>,
    ) {
        let ids: Vec<(u32, i64, u64)> = report
            .changed()
            .map(|(k, c, n)| (self.id(k, now), c, n))
            .collect();
        let removed: Vec<u32> = report
            .removed()
            .filter_map(|k| self.ids.get(k).copied())
            .collect();
        let known = self.pods.contains_key(&addr);
        let pod = self.pods.entry(addr).or_insert_with(|| Pod {
            instance: report.instance,
            counts: Vec::new(),
            last_answer: now,
        });
        let keys = self.keys.len();
        if pod.counts.len() < keys {
            pod.counts.resize(keys, None);
        }
        if deltas.len() < keys {
            deltas.resize(keys, 0);
        }
        pod.last_answer = now;
        // A new process behind the same address: its counters began at zero.
        let restarted = known && pod.instance.is_some() && pod.instance != report.instance;
        pod.instance = report.instance;
        let concurrency = &mut self.concurrency;
        if report.full {
            let mut listed = vec![false; keys];
            for (id, _, _) in &ids {
                listed[*id as usize] = true;
            }
            for (id, entry) in pod.counts.iter_mut().enumerate() {
                if !listed[id]
                    && let Some((c, _)) = entry.take()
                {
                    concurrency[id] -= c;
                }
            }
        }
        for id in removed {
            if let Some((c, _)) = pod.counts[id as usize].take() {
                concurrency[id as usize] -= c;
            }
        }
        for (id, c, n) in ids {
            let old = pod.counts[id as usize].replace((c, n));
            concurrency[id as usize] += c - old.map_or(0, |o| o.0);
            let delta = match old {
                // First sight of this pod, or of this route on it: no
                // history to compare with (as upstream).
                _ if !known => 0,
                None if restarted => n,
                None => 0,
                Some(_) if restarted => n,
                Some((_, before)) if n < before => n, // counter reset
                Some((_, before)) => n - before,
            };
            deltas[id as usize] += delta;
        }
    }

    /// The counts at `now`: every route some pod reports, and every route
    /// with a rate.
    pub fn counts(&self, now: Duration) -> Counts {
        let mut by_key: HashMap<Arc<str>, KeyCounts> = HashMap::new();
        let mut total = 0;
        for (id, c) in self.concurrency.iter().enumerate() {
            total += c;
            if *c != 0 {
                by_key.entry(self.keys[id].clone()).or_default().concurrency = *c;
            }
        }
        for (id, w) in &self.rates {
            let rate = w.rate(now);
            if rate > 0.0 {
                by_key
                    .entry(self.keys[*id as usize].clone())
                    .or_default()
                    .rate = rate;
            }
        }
        Counts {
            by_key,
            total_concurrency: total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(1));

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 9090))
    }

    fn report(
        instance: Option<u64>,
        full: bool,
        changed: &[(&str, i64, u64)],
        removed: &[&str],
    ) -> Fetched {
        let mut r = PodReport::new(instance, full);
        for (k, c, n) in changed {
            r.push_changed(k, *c, *n);
        }
        for k in removed {
            r.push_removed(k);
        }
        Fetched::Report(r)
    }

    fn full(entries: &[(&str, i64, u64)]) -> Fetched {
        report(None, true, entries, &[])
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A round at second `at` in which pod 1, the only one listed, answers
    /// `fetched`; every route on the default window.
    fn one_pod(f: &mut Fleet, at: u64, fetched: Fetched) -> RoundSummary {
        f.apply(s(at), &[addr(1)], vec![(addr(1), fetched)], &|_| DEFAULT)
    }

    #[test]
    fn sums_pods_and_drops_vanished_ones() {
        let mut f = Fleet::new(s(5));
        f.apply(
            s(0),
            &[addr(1), addr(2)],
            vec![
                (addr(1), full(&[("a/x", 2, 10), ("a/y", 0, 0)])),
                (addr(2), full(&[("a/x", 3, 7)])),
            ],
            &|_| DEFAULT,
        );
        let c = f.counts(s(0));
        assert_eq!(c.get("a/x").concurrency, 5);
        assert_eq!(c.total_concurrency, 5);
        // Pod 2 vanishes from the EndpointSlice: its share goes at once.
        let sum = one_pod(&mut f, 1, full(&[("a/x", 2, 10)]));
        assert_eq!(sum.dropped, 1);
        assert_eq!(f.counts(s(1)).get("a/x").concurrency, 2);
    }

    #[test]
    fn an_unreachable_pod_keeps_its_share_for_a_bounded_time() {
        let mut f = Fleet::new(s(3));
        one_pod(&mut f, 0, full(&[("a/x", 4, 1)]));
        let sum = one_pod(&mut f, 2, Fetched::Failed);
        assert_eq!((sum.unreachable, sum.dropped), (1, 0));
        assert_eq!(f.counts(s(2)).get("a/x").concurrency, 4);
        let sum = one_pod(&mut f, 4, Fetched::Failed);
        assert_eq!((sum.unreachable, sum.dropped), (0, 1));
        assert_eq!(f.counts(s(4)).get("a/x").concurrency, 0);
    }

    #[test]
    fn rates_from_deltas_with_resets_and_restarts() {
        let mut f = Fleet::new(s(5));
        // First poll: 100 requests already counted are history, not rate.
        one_pod(&mut f, 0, full(&[("a/x", 0, 100)]));
        assert_eq!(f.counts(s(0)).get("a/x").rate, 0.0);
        one_pod(&mut f, 1, full(&[("a/x", 0, 110)]));
        // 10 requests over buckets 0..=1 (watched since the first poll).
        assert_eq!(f.counts(s(1)).get("a/x").rate, 5.0);
        // The counter went down: the pod restarted, 4 new requests.
        one_pod(&mut f, 2, full(&[("a/x", 0, 4)]));
        assert_eq!(f.counts(s(2)).get("a/x").rate, 14.0 / 3.0);
        // Compact form: a new instance counts its whole value even when
        // it is higher than before.
        let compact = |instance, n| report(Some(instance), true, &[("a/x", 0, n)], &[]);
        one_pod(&mut f, 3, compact(1, 6));
        one_pod(&mut f, 4, compact(2, 8));
        // buckets 0..=4: 10 + 4 + 2 (6 - 4) + 8
        assert_eq!(f.counts(s(4)).get("a/x").rate, 24.0 / 5.0);
    }

    #[test]
    fn deltas_apply_only_what_changed() {
        let mut f = Fleet::new(s(5));
        let rep = |full, changed: &[(&str, i64, u64)], removed: &[&str]| {
            report(Some(7), full, changed, removed)
        };
        one_pod(&mut f, 0, rep(true, &[("a/x", 1, 1), ("a/y", 2, 2)], &[]));
        one_pod(&mut f, 1, rep(false, &[], &[]));
        assert_eq!(f.counts(s(1)).total_concurrency, 3);
        one_pod(&mut f, 2, rep(false, &[("a/x", 0, 2)], &["a/y"]));
        let c = f.counts(s(2));
        assert_eq!(c.total_concurrency, 0);
        assert_eq!(c.get("a/x").rate, 1.0 / 3.0); // 1 request over buckets 0..=2
    }

    #[test]
    fn reports_keep_their_keys_in_one_buffer() {
        let body = "kq1 a 2 delta\napps/x 3 9\n-apps/gone\napps/y 0 1\n";
        let q = wire::queue::parse_compact(body).unwrap();
        let r = PodReport::from_compact(&q);
        assert_eq!((r.instance, r.full), (Some(10), false));
        assert_eq!(
            r.changed().collect::<Vec<_>>(),
            [("apps/x", 3, 9), ("apps/y", 0, 1)]
        );
        assert_eq!(r.removed().collect::<Vec<_>>(), ["apps/gone"]);
        let plain =
            wire::queue::decode_plain(br#"{"a\/b":{"Concurrency":-2,"RequestCount":4}}"#).unwrap();
        let r = PodReport::from_plain(&plain);
        assert_eq!((r.instance, r.full), (None, true));
        assert_eq!(r.changed().collect::<Vec<_>>(), [("a/b", 0, 4)]);
    }
}
