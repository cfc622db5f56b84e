//! `/queue` in two forms: upstream's JSON, and a compact delta form that
//! the scaler negotiates.
//!
//! Plain `GET /queue` is upstream's exact JSON,
//! `{"<ns>/<name>": {"Concurrency": n, "RequestCount": m}, ...}`, one entry
//! per route, whatever changed: at 1,000 routes that is ~60 kB per poll.
//!
//! A client that sends `Accept: application/vnd.keda-http.queue-delta` gets
//! the compact form instead: lines of text, first a header naming this
//! process instance and a snapshot epoch, then only what changed since the
//! snapshot the client names with `?since=<instance>.<epoch>` (or every
//! route, when it names none, or one this replica no longer keeps, or
//! another instance's):
//!
//! ```text
//! kq1 <instance, hex> <epoch> full|delta
//! <ns>/<name> <Concurrency> <RequestCount>     (a route added or changed)
//! -<ns>/<name>                                 (a route gone; delta only)
//! ```
//!
//! An idle replica answers a delta poll with the header line alone (~30
//! bytes), whatever its route count. A new instance id tells the client
//! the process restarted and its counters began again at zero. Route keys
//! are Kubernetes names (no spaces, never starting with `-`).
//!
//! The replica keeps the last [`KEPT_SNAPSHOTS`] distinct snapshots (a few
//! scaler replicas each poll from their own epoch); taking one costs one
//! pass over the table's counters.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use serde::Serialize;

/// The media type of the compact form (request `Accept`, response `Content-Type`).
pub const COMPACT_CONTENT_TYPE: &str = "application/vnd.keda-http.queue-delta";

/// How many distinct snapshots a replica keeps for delta answers.
pub const KEPT_SNAPSHOTS: usize = 16;

/// `(Concurrency, RequestCount)` per route key.
type Snapshot = HashMap<Arc<str>, (i64, u64)>;

/// Pending-request counts per route, in upstream's `/queue` shape.
pub fn plain(table: &routing::RoutingTable) -> serde_json::Map<String, serde_json::Value> {
    #[derive(Serialize)]
    struct Counts {
        #[serde(rename = "Concurrency")]
        concurrency: i64,
        #[serde(rename = "RequestCount")]
        request_count: u64,
    }
    table
        .routes()
        .map(|r| {
            let (concurrency, request_count) = r.counters.snapshot();
            (
                r.key().to_string(),
                serde_json::to_value(Counts {
                    concurrency: concurrency.max(0),
                    request_count,
                })
                .unwrap_or_default(),
            )
        })
        .collect()
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
        let mut out = String::with_capacity(64);
        let kind = if base.is_some() { "delta" } else { "full" };
        let _ = writeln!(out, "kq1 {:x} {epoch} {kind}", self.instance);
        match base {
            None => {
                for (k, (c, n)) in &now {
                    let _ = writeln!(out, "{k} {c} {n}");
                }
            }
            Some(base) => {
                for (k, v) in &now {
                    if base.get(k) != Some(v) {
                        let _ = writeln!(out, "{k} {} {}", v.0, v.1);
                    }
                }
                for k in base.keys().filter(|k| !now.contains_key(*k)) {
                    let _ = writeln!(out, "-{k}");
                }
            }
        }
        out
    }
}

/// `<instance hex>.<epoch>`.
fn parse_since(s: &str) -> Option<(u64, u64)> {
    let (i, e) = s.split_once('.')?;
    Some((u64::from_str_radix(i, 16).ok()?, e.parse().ok()?))
}

/// A parsed compact answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactQueue<'a> {
    /// The replica's process instance.
    pub instance: u64,
    /// The snapshot this answer describes.
    pub epoch: u64,
    /// Every route (true), or only changes since the client's `since`.
    pub full: bool,
    /// Routes added or changed: (key, Concurrency, RequestCount).
    pub changed: Vec<(&'a str, i64, u64)>,
    /// Routes gone (delta answers only).
    pub removed: Vec<&'a str>,
}

impl CompactQueue<'_> {
    /// The `since` value for the next poll.
    pub fn since(&self) -> String {
        format!("{:x}.{}", self.instance, self.epoch)
    }
}

/// Why a compact answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    /// The header line is missing or not `kq1 <hex> <epoch> full|delta`.
    #[error("compact /queue: bad header line {0:?}")]
    Header(String),
    /// An entry line is not `<key> <int> <int>` or `-<key>`.
    #[error("compact /queue: bad line {line}: {text:?}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

/// Reads a compact answer.
///
/// ```
/// let q = interceptor::queue::parse_compact("kq1 ff 7 delta\napps/web 2 40\n-apps/old\n").unwrap();
/// assert_eq!((q.instance, q.epoch, q.full), (255, 7, false));
/// assert_eq!(q.changed, [("apps/web", 2, 40)]);
/// assert_eq!(q.removed, ["apps/old"]);
/// assert_eq!(q.since(), "ff.7");
/// ```
pub fn parse_compact(body: &str) -> Result<CompactQueue<'_>, CompactError> {
    let mut lines = body.lines();
    let header = lines.next().unwrap_or_default();
    let bad_header = || CompactError::Header(header.to_string());
    let mut parts = header.split(' ');
    if parts.next() != Some("kq1") {
        return Err(bad_header());
    }
    let instance = parts
        .next()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or_else(bad_header)?;
    let epoch = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad_header)?;
    let full = match parts.next() {
        Some("full") => true,
        Some("delta") => false,
        _ => return Err(bad_header()),
    };
    let mut q = CompactQueue {
        instance,
        epoch,
        full,
        changed: Vec::new(),
        removed: Vec::new(),
    };
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(key) = line.strip_prefix('-') {
            q.removed.push(key);
            continue;
        }
        let bad = || CompactError::Line {
            line: i + 2,
            text: line.to_string(),
        };
        let mut f = line.split(' ');
        let (Some(key), Some(c), Some(n), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return Err(bad());
        };
        let c = c.parse().map_err(|_| bad())?;
        let n = n.parse().map_err(|_| bad())?;
        q.changed.push((key, c, n));
    }
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn parse_errors_name_the_line() {
        assert_eq!(
            parse_compact("{}").unwrap_err().to_string(),
            "compact /queue: bad header line \"{}\""
        );
        assert_eq!(
            parse_compact("kq1 1 2 full\napps/a x 3\n")
                .unwrap_err()
                .to_string(),
            "compact /queue: bad line 2: \"apps/a x 3\""
        );
    }
}
