//! The one Kubernetes list/watch client of this project, used by the sync
//! loop (`sync`), the cache tier's upstream mirrors (`cache`) and the
//! benchmarks (`bench`). It speaks to the API server, a cache or testkit
//! alike; the wire types and the content digest come from `wire`.
//!
//! Data enters as HTTP responses from a `kube::Client` (kube's own, or the
//! HTTP/2 transport in [`client`]) and leaves as:
//! - [`List`]s ([`Collection::list`]): paged (continue tokens followed),
//!   from the server's cache (`resourceVersion=0`) or consistent, and
//!   conditional ([`IfNoneMatch`]: an ETag, or the content digest of what
//!   the caller holds; `304` is [`ListOutcome::Unchanged`]); items stay
//!   raw JSON slices of the body, so the caller parses only what it needs;
//! - [`WatchFrame`]s ([`Collection::watch`], [`WatchStream`]): events
//!   (raw JSON object, plus the digest a `listwatch` server puts on them),
//!   bookmarks (resourceVersion and digest) and `Gone` (410: relist), with
//!   stall detection ([`stall_bound`]);
//! - [`Error`]s that keep their `source()`.
//!
//! The retry policy is [`Backoff`]; each caller keeps its own delays. What
//! to do with a frame (apply it to an index, to a store) stays with the
//! caller: this crate holds no state beyond one watch's line buffer.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), kubewatch::Error> {
//! use std::time::Duration;
//! use kubewatch::{Collection, ListOutcome, ListParams, WatchFrame, WatchState};
//!
//! let routes = Collection::new(client, "/apis/http.keda.sh/v1alpha1/httpscaledobjects")
//!     .with_label_selector(Some("team=shop"));
//! let ListOutcome::Listed(list) = routes.list(&ListParams::default()).await? else {
//!     unreachable!("no If-None-Match, no 304")
//! };
//! println!("{} objects", list.items.len());
//! let from = list.resource_version.unwrap_or_default();
//! let mut watch = routes.watch(&from, Duration::from_secs(290)).await?;
//! let mut frames = Vec::new();
//! while watch.next_batch(&mut frames).await? == WatchState::Open {
//!     for frame in frames.drain(..) {
//!         if frame == WatchFrame::Gone {
//!             println!("relist");
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```

mod backoff;
pub mod client;
mod collection;
mod error;
mod health;
mod watch;

pub use backoff::Backoff;
pub use collection::{Collection, IfNoneMatch, List, ListOutcome, ListParams};
pub use error::Error;
pub use health::{REMINDER_EVERY, SourceHealth};
pub use watch::{MAX_LINE, WatchFrame, WatchState, WatchStream, parse_watch_body, stall_bound};
