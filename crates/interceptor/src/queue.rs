//! The interceptor's side of `/queue`: what it keeps to answer in the
//! compact delta form. The two body formats, and their encoders and
//! decoders, are [`wire::queue`]'s; this module decides what goes in them.
//!
//! Plain `GET /queue` is upstream's JSON, one entry per route
//! ([`plain`]). A client that asks for the compact form gets only what
//! changed since the snapshot it names ([`QueueHistory::compact`]): the
//! replica keeps the last [`KEPT_SNAPSHOTS`] distinct snapshots (a few
//! scaler replicas each poll from their own epoch); taking one costs one
//! pass over the table's counters. An idle replica answers a delta poll
//! with the header line alone (~30 bytes), whatever its route count.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use wire::queue::{encode_compact, encode_plain, parse_since};

/// How many distinct snapshots a replica keeps for delta answers.
pub const KEPT_SNAPSHOTS: usize = 16;

/// `(Concurrency, RequestCount)` per route key.
type Snapshot = HashMap<Arc<str>, (i64, u64)>;

/// Pending-request counts per route: upstream's `/queue` body.
pub fn plain(table: &routing::RoutingTable) -> String {
    encode_plain(table.routes().map(|r| {
        let (concurrency, request_count) = r.counters.snapshot();
        (r.key().clone(), concurrency.max(0), request_count)
    }))
}

/// The snapshots one replica keeps for the compact form.
#[derive(Debug)]
pub struct QueueHistory {
    instance: u64,
    kept: parking_lot::Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    next_epoch: u64,
    snapshots: VecDeque<(u64, Arc<Snapshot>)>,
}

impl Default for QueueHistory {
    fn default() -> Self {
        QueueHistory::new()
    }
}

impl QueueHistory {
    /// A history for a new process instance (a random id).
    pub fn new() -> QueueHistory {
        QueueHistory::with_instance(fastrand::u64(1..))
    }

    /// A history with a given instance id (tests).
    pub fn with_instance(instance: u64) -> QueueHistory {
        QueueHistory {
            instance,
            kept: parking_lot::Mutex::new(Kept::default()),
        }
    }

    /// This process instance's id.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// The compact answer for a client that last saw `since` (the raw
    /// `since` query value; anything unparsable means "nothing").
    pub fn compact(&self, table: &routing::RoutingTable, since: Option<&str>) -> String {
        self.compact_counts(
            table.routes().map(|r| {
                let (c, n) = r.counters.snapshot();
                (r.key().clone(), c, n)
            }),
            since,
        )
    }

    /// [`compact`](Self::compact) over `(key, Concurrency, RequestCount)`
    /// triples instead of a table (simulated interceptors in benchmarks).
    pub fn compact_counts(
        &self,
        counts: impl IntoIterator<Item = (Arc<str>, i64, u64)>,
        since: Option<&str>,
    ) -> String {
        let now: Snapshot = counts
            .into_iter()
            .map(|(k, c, n)| (k, (c.max(0), n)))
            .collect();
        let since = since.and_then(parse_since);
        let (epoch, base) = {
            let mut kept = self.kept.lock();
            let epoch = match kept.snapshots.back() {
                Some((e, s)) if **s == now => *e,
                _ => {
                    kept.next_epoch += 1;
                    let e = kept.next_epoch;
                    if kept.snapshots.len() == KEPT_SNAPSHOTS {
                        kept.snapshots.pop_front();
                    }
                    kept.snapshots.push_back((e, Arc::new(now.clone())));
                    e
                }
            };
            let base = since
                .filter(|(instance, _)| *instance == self.instance)
                .and_then(|(_, e)| kept.snapshots.iter().find(|(k, _)| *k == e))
                .map(|(_, s)| s.clone());
            (epoch, base)
        };
        match base {
            None => encode_compact(
                self.instance,
                epoch,
                true,
                now.iter().map(|(k, (c, n))| (&**k, *c, *n)),
                [],
            ),
            Some(base) => encode_compact(
                self.instance,
                epoch,
                false,
                now.iter()
                    .filter(|(k, v)| base.get(*k) != Some(*v))
                    .map(|(k, (c, n))| (&**k, *c, *n)),
                base.keys().filter(|k| !now.contains_key(*k)).map(|k| &**k),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::queue::parse_compact;

    fn table(names: &[&str]) -> routing::RoutingTable {
        let objs: Vec<api::HTTPScaledObject> = names
            .iter()
            .map(|n| {
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "http.keda.sh/v1alpha1",
                    "kind": "HTTPScaledObject",
                    "metadata": {"name": n, "namespace": "apps"},
                    "spec": {"hosts": [format!("{n}.example.com")],
                             "scaleTargetRef": {"name": n, "service": n, "port": 80}}
                }))
                .unwrap()
            })
            .collect();
        routing::RoutingTable::from_objects(&objs, []).0
    }

    fn bump(t: &routing::RoutingTable, key: &str, c: i64, n: u64) {
        let (ns, name) = key.split_once('/').unwrap();
        let r = t.get(ns, name).unwrap();
        r.counters
            .concurrency
            .store(c, std::sync::atomic::Ordering::Relaxed);
        r.counters
            .request_count
            .store(n, std::sync::atomic::Ordering::Relaxed);
    }

    #[test]
    fn full_then_deltas_then_idle() {
        let h = QueueHistory::with_instance(0xabc);
        let t = table(&["a", "b", "c"]);
        bump(&t, "apps/a", 1, 5);
        let first = h.compact(&t, None);
        let q = parse_compact(&first).unwrap();
        assert!(q.full);
        assert_eq!(q.instance, 0xabc);
        let mut got = q.changed.clone();
        got.sort();
        assert_eq!(got, [("apps/a", 1, 5), ("apps/b", 0, 0), ("apps/c", 0, 0)]);

        // Nothing changed: the header alone, same epoch.
        let idle = h.compact(&t, Some(&q.since()));
        assert_eq!(idle, format!("kq1 abc {} delta\n", q.epoch));

        // One route changes: only it.
        bump(&t, "apps/b", 0, 9);
        let d = h.compact(&t, Some(&q.since()));
        let d = parse_compact(&d).unwrap();
        assert!(!d.full);
        assert_eq!(d.changed, [("apps/b", 0, 9)]);
        assert!(d.epoch > q.epoch);

        // A route removed from the table.
        let t2 = table(&["a", "b"]);
        bump(&t2, "apps/a", 1, 5);
        bump(&t2, "apps/b", 0, 9);
        let r = h.compact(&t2, Some(&d.since()));
        let r = parse_compact(&r).unwrap();
        assert_eq!(r.removed, ["apps/c"]);
        assert!(r.changed.is_empty());
    }

    #[test]
    fn another_instance_or_a_forgotten_epoch_gets_everything() {
        let h = QueueHistory::with_instance(1);
        let t = table(&["a", "b"]);
        let first = h.compact(&t, None);
        let q = parse_compact(&first).unwrap();
        // Another process's token (a restart): full.
        let other = h.compact(&t, Some(&format!("2.{}", q.epoch)));
        let other = parse_compact(&other).unwrap();
        assert!(other.full);
        assert_eq!(other.changed.len(), 2);
        // An epoch no longer kept: full.
        for i in 0..KEPT_SNAPSHOTS as u64 + 1 {
            bump(&t, "apps/a", 0, i + 1);
            h.compact(&t, None);
        }
        assert!(
            parse_compact(&h.compact(&t, Some(&q.since())))
                .unwrap()
                .full
        );
        // Garbage: full.
        assert!(parse_compact(&h.compact(&t, Some("zz"))).unwrap().full);
    }
}
