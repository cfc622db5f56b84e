//! A request rate over a sliding window of fixed buckets, fed with counter
//! deltas and read at any time. Time is passed in (a [`Duration`] since
//! some origin), so tests drive it with a simulated clock.

use std::time::Duration;

/// Requests per second over the last `window`, in `granularity` buckets.
///
/// Until the window has filled (since the first record, or since a whole
/// window passed without one), the sum is divided by the time covered so
/// far, as upstream does.
///
/// ```
/// use std::time::Duration;
/// let s = Duration::from_secs;
/// let mut w = scaler::rate::RateWindow::new(s(60), s(1));
/// for t in 0..60 {
///     w.record(s(t), 10); // 10 requests every second for a minute
/// }
/// assert_eq!(w.rate(s(59)), 10.0);
/// assert_eq!(w.rate(s(200)), 0.0); // nothing for longer than the window
/// ```
#[derive(Debug, Clone)]
pub struct RateWindow {
    window: Duration,
    granularity: Duration,
    buckets: Vec<u64>,
    /// Bucket index (time / granularity) of the oldest bucket of the
    /// current run, and of the newest written.
    first: u64,
    last: Option<u64>,
    /// Where the first run starts when it is before the first record.
    origin: Option<u64>,
    /// Sum of `buckets`.
    total: u64,
}

impl RateWindow {
    /// A window of `window` in buckets of `granularity` (both at least 1 ms;
    /// the bucket count is rounded up).
    pub fn new(window: Duration, granularity: Duration) -> RateWindow {
        let granularity = granularity.max(Duration::from_millis(1));
        let window = window.max(granularity);
        let n = window.as_nanos().div_ceil(granularity.as_nanos()) as usize;
        RateWindow {
            window,
            granularity,
            buckets: vec![0; n],
            first: 0,
            last: None,
            origin: None,
            total: 0,
        }
    }

    /// The same window, counting the time since `origin` (when nothing was
    /// seen: the scaler was already watching) as covered by its first run.
    pub fn with_origin(mut self, origin: Duration) -> RateWindow {
        self.origin = Some(self.index(origin));
        self
    }

    /// The window and granularity this was built with.
    pub fn shape(&self) -> (Duration, Duration) {
        (self.window, self.granularity)
    }

    fn index(&self, now: Duration) -> u64 {
        (now.as_nanos() / self.granularity.as_nanos()) as u64
    }

    /// Adds `delta` requests seen at `now` (times must not go backwards by
    /// more than a bucket; older records are dropped).
    pub fn record(&mut self, now: Duration, delta: u64) {
        let idx = self.index(now);
        let n = self.buckets.len() as u64;
        match self.last {
            None => {
                self.first = self.origin.map_or(idx, |o| o.min(idx));
                self.last = Some(idx);
            }
            Some(last) if idx > last => {
                if idx - last >= n {
                    self.buckets.iter_mut().for_each(|b| *b = 0);
                    self.total = 0;
                    self.first = idx;
                } else {
                    for i in last + 1..=idx {
                        let b = &mut self.buckets[(i % n) as usize];
                        self.total -= *b;
                        *b = 0;
                    }
                }
                self.last = Some(idx);
            }
            Some(last) if last - idx >= n => return,
            Some(_) => {}
        }
        self.buckets[(idx % n) as usize] += delta;
        self.total += delta;
    }

    /// Requests per second at `now`.
    pub fn rate(&self, now: Duration) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let idx = self.index(now).max(last);
        let n = self.buckets.len() as u64;
        if idx - last >= n {
            return 0.0;
        }
        // Buckets after the last write hold data a window old.
        let stale: u64 = (last + 1..=idx)
            .map(|i| self.buckets[(i % n) as usize])
            .sum();
        let covered = (idx - self.first + 1).min(n);
        (self.total - stale) as f64 / (covered as f64 * self.granularity.as_secs_f64())
    }

    /// True when nothing was recorded for a whole window before `now`.
    pub fn is_idle(&self, now: Duration) -> bool {
        self.last
            .is_none_or(|last| self.index(now).saturating_sub(last) >= self.buckets.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A window of `window_ms` in buckets of `granularity_ms`, fed `delta`
    /// requests at the start of each of its first `buckets` buckets.
    fn steady(window_ms: u64, granularity_ms: u64, buckets: u64, delta: u64) -> RateWindow {
        let mut w = RateWindow::new(ms(window_ms), ms(granularity_ms));
        for b in 0..buckets {
            w.record(ms(b * granularity_ms), delta);
        }
        w
    }

    #[test]
    fn a_partial_window_divides_by_the_time_covered() {
        let mut w = RateWindow::new(ms(60_000), ms(1000));
        w.record(ms(1000), 10);
        w.record(ms(2000), 10);
        // 20 requests over 2 buckets (1, 2).
        assert_eq!(w.rate(ms(2000)), 10.0);
        // Watched since 0: over 3 buckets.
        let mut w = RateWindow::new(ms(60_000), ms(1000)).with_origin(ms(0));
        w.record(ms(1000), 10);
        w.record(ms(2000), 10);
        assert!((w.rate(ms(2000)) - 20.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let mut w = steady(10_000, 1000, 10, 5);
        assert_eq!(w.rate(ms(9000)), 5.0);
        // Nothing more: at t=14 s the first five buckets are gone.
        assert_eq!(w.rate(ms(14_000)), 2.5);
        w.record(ms(14_000), 0);
        assert_eq!(w.rate(ms(14_000)), 2.5);
        assert!(!w.is_idle(ms(14_000)));
        assert!(w.is_idle(ms(30_000)));
        assert_eq!(w.rate(ms(30_000)), 0.0);
        // A new run after a gap starts a new partial window.
        w.record(ms(30_000), 4);
        assert_eq!(w.rate(ms(30_000)), 4.0);
    }

    #[test]
    fn granularity_other_than_a_second_is_per_second() {
        let w = steady(10_000, 2000, 5, 20);
        assert_eq!(w.rate(ms(8000)), 10.0);
    }
}
