//! Reachability of a program's source, reported as an operator wants to read
//! it: one WARN when the source becomes unreachable, a one-line reminder at
//! most every [`REMINDER_EVERY`] while it stays down, one INFO when it is
//! back; and a gauge (`routing_source_up`) so alerts need no logs.
//!
//! Every list and watch loop of a program shares one [`SourceHealth`]: a
//! failure of any of them opens the outage (the resources that failed are
//! named), a success of any of them closes it. Retries in between log at
//! debug only, so a source that is down for a minute costs three lines, not
//! one per retry and resource.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tracing::{debug, info, warn};

/// How often a continuing outage is logged again.
pub const REMINDER_EVERY: Duration = Duration::from_secs(30);

/// Reachability of one source, shared by all its loops. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SourceHealth {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// What the source is (`"https://10.0.0.1:443"`, `"cache http://..."`), for the log.
    source: String,
    /// `routing_source_up`: 1 while reachable (or not yet tried), 0 during an outage.
    up: Gauge,
    state: parking_lot::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    outage: Option<Outage>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    reminded: Instant,
    failures: u64,
    resources: BTreeSet<String>,
}

impl SourceHealth {
    /// A source that is up until a failure says otherwise; `up` is the
    /// program's registered `routing_source_up` gauge (set to 1 here).
    pub fn new(source: impl Into<String>, up: Gauge) -> Self {
        up.set(1);
        SourceHealth {
            inner: Arc::new(Inner {
                source: source.into(),
                up,
                state: parking_lot::Mutex::new(State::default()),
            }),
        }
    }

    /// 1 while the source is reachable, 0 during an outage.
    pub fn up(&self) -> i64 {
        self.inner.up.get()
    }

    /// A list or watch of `resource` failed with `error`. `table_version`
    /// names the last good state the program keeps serving (for the log).
    pub fn failure(&self, resource: &str, error: &dyn fmt::Display, table_version: u64) {
        let now = Instant::now();
        let mut state = self.inner.state.lock();
        match &mut state.outage {
            None => {
                self.inner.up.set(0);
                state.outage = Some(Outage {
                    since: now,
                    reminded: now,
                    failures: 1,
                    resources: BTreeSet::from([resource.to_string()]),
                });
                warn!(
                    source = %self.inner.source,
                    resource,
                    error = %error,
                    serving_table_version = table_version,
                    "source unreachable; serving the last good table and retrying"
                );
            }
            Some(outage) => {
                outage.failures += 1;
                outage.resources.insert(resource.to_string());
                if now.duration_since(outage.reminded) >= REMINDER_EVERY {
                    outage.reminded = now;
                    warn!(
                        source = %self.inner.source,
                        down_for = ?round(now.duration_since(outage.since)),
                        retries = outage.failures,
                        resources = ?outage.resources,
                        error = %error,
                        "source still unreachable"
                    );
                } else {
                    debug!(resource, error = %error, "source still unreachable; retrying");
                }
            }
        }
    }

    /// A list or watch of `resource` succeeded. `relisted` says whether the
    /// success was a list (the state was re-read whole, so anything missed
    /// during the outage is repaired by it) rather than watch events.
    pub fn success(&self, resource: &str, relisted: bool) {
        if self.up() == 1 {
            return;
        }
        let mut state = self.inner.state.lock();
        if let Some(outage) = state.outage.take() {
            self.inner.up.set(1);
            info!(
                source = %self.inner.source,
                resource,
                outage = ?round(outage.since.elapsed()),
                retries = outage.failures,
                relisted,
                "source reachable again"
            );
        }
    }
}

/// Durations in the log to 0.1 s.
fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64 / 100 * 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_opens_once_and_closes_once() {
        let h = SourceHealth::new("test", Gauge::default());
        assert_eq!(h.up(), 1);
        h.success("a", false);
        h.failure("a", &"refused", 7);
        h.failure("b", &"refused", 7);
        assert_eq!(h.up(), 0);
        {
            let state = h.inner.state.lock();
            let outage = state.outage.as_ref().unwrap();
            assert_eq!(outage.failures, 2);
            assert_eq!(outage.resources.len(), 2);
        }
        h.success("b", true);
        assert_eq!(h.up(), 1);
        assert!(h.inner.state.lock().outage.is_none());
    }
}
