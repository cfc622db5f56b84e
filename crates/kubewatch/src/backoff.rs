//! The one retry policy of every list/watch client here: capped exponential
//! backoff. Each caller keeps its own delays (the sync loop kube-rs's 0.8 s
//! to 30 s with jitter, the cache's upstream mirrors 100 ms to 5 s).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Capped exponential backoff, optionally with +-25 % jitter (so clients
/// that failed together do not retry together).
///
/// ```
/// # use std::time::Duration;
/// let mut b = kubewatch::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// assert_eq!(b.next_delay(), Duration::from_millis(100));
/// assert_eq!(b.next_delay(), Duration::from_millis(200));
/// b.reset(); // after a success
/// assert_eq!(b.next_delay(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    jitter: bool,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`, without jitter.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
            jitter: false,
        }
    }

    /// For a client a cluster runs once or a few times (a cache's upstream
    /// watches, the operator's controllers): 100 ms doubling to 500 ms, so
    /// it is back within half a second of its API server's return (`bench
    /// chaos`: with a 5 s cap, the fleet behind a cache stayed behind the
    /// API for up to 5 s after an outage). Retrying twice a second costs a
    /// failing server little from so few clients; a fleet of thousands (the
    /// interceptors' own watches) backs off further, with jitter.
    pub fn few_clients() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_millis(500))
    }

    /// The same with +-25 % jitter on every delay.
    pub fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// The delay to wait now; the next one doubles.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        if !self.jitter {
            return base;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        base.mul_f64(0.75 + f64::from(nanos % 1000) / 2000.0)
    }

    /// Waits the next delay; false when cancelled meanwhile.
    pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// However long the upstream has been failing, the next attempt comes
    /// within 500 ms, so a cache catches up soon after the upstream returns.
    #[test]
    fn retries_never_wait_more_than_half_a_second() {
        let mut b = Backoff::few_clients();
        let delays: Vec<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert_eq!(delays[0], Duration::from_millis(100));
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(500)),
            "{delays:?}"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
        let mut j = Backoff::new(Duration::from_millis(800), Duration::from_secs(30)).with_jitter();
        let d = j.next_delay();
        assert!(
            d >= Duration::from_millis(600) && d <= Duration::from_millis(1000),
            "{d:?}"
        );
    }
}
