//! Shutdown signals.

use std::future::Future;

/// SIGTERM and SIGINT (Ctrl-C), registered once when created, so that a
/// signal arriving between two waits is not lost.
///
/// The programs' contract: the first signal starts a graceful shutdown, a
/// second one ends the process at once (exit status 1).
///
/// ```no_run
/// # async fn demo(server: impl std::future::Future<Output = ()>) {
/// let mut signals = process::Signals::new();
/// // ... start serving ...
/// signals.recv().await;
/// signals.graceful(server).await; // a second signal exits at once
/// # }
/// ```
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Default for Signals {
    fn default() -> Self {
        Signals::new()
    }
}

impl Signals {
    /// Registers the handlers. Needs a tokio runtime.
    pub fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next SIGTERM or SIGINT; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            if self.term.is_none() && self.int.is_none() {
                // No handler could be registered: fall back to Ctrl-C.
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
            tokio::select! {
                _ = next(&mut self.term) => "SIGTERM",
                _ = next(&mut self.int) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }

    /// Drives `shutdown` (the graceful part, started after a first signal)
    /// to its end; a further signal meanwhile ends the process at once
    /// with exit status 1.
    pub async fn graceful<F: Future>(&mut self, shutdown: F) -> F::Output {
        tokio::select! {
            out = shutdown => out,
            signal = self.recv() => {
                tracing::warn!(signal, "second signal; exiting now");
                std::process::exit(1)
            }
        }
    }
}
