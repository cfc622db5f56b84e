//! The list/watch wire protocol, each piece defined once: what a
//! Kubernetes-compatible server (`listwatch`, and the `cache` and `testkit`
//! built on it) writes and what a client (`kubewatch`, used by `sync`,
//! `cache` and `bench`) reads.
//!
//! Plain data and pure functions: no I/O, no async runtime.
//!
//! - The Kubernetes types a list/watch client decodes: [`ListBody`] (a
//!   list response, items left as raw JSON), [`WatchLine`] (one line of a
//!   watch stream, the object left as raw JSON), [`Bookmark`] (the object of
//!   a BOOKMARK line), [`Status`] (an error body, or the object of an ERROR
//!   line) and [`EventType`].
//! - Our additions to the protocol, which Kubernetes clients ignore:
//!   - the content digest ([`digest`]): a 48-bit, order-independent digest
//!     of a set of (namespace, name, resourceVersion). A client sends the
//!     digest of what it holds as an `If-None-Match` token (`"d<12 hex>"`)
//!     and a `listwatch` server answers `304` when its list has the same
//!     digest; the server annotates BOOKMARKs (and puts a field on events)
//!     with the digest of the watch's view ([`digest::ANNOTATION`]), so a
//!     client that holds the same digest knows it is up to date without a
//!     list;
//!   - the connection-level session ([`SESSION_HEADER`]): a cache grants
//!     it to a connection that presented a valid bearer token, so the
//!     client may omit the token on that connection for a while.
//! - The interceptor's `/queue` bodies that the scaler polls ([`queue`]):
//!   upstream's JSON and our compact delta form, encoded and decoded here
//!   only.
//!
//! ```
//! let held = wire::digest::content_digest([("apps", "web", "7"), ("apps", "api", "9")]);
//! let token = wire::digest::entity_tag(held); // `"d<12 hex>"`, an If-None-Match value
//! assert_eq!(wire::digest::from_if_none_match(&format!("\"12\", {token}")), Some(held));
//! ```

pub mod digest;
mod list;
pub mod queue;
mod status;
mod watch;

pub use list::{
    ListBody, ListMeta, METADATA_LIST_ACCEPT, METADATA_LIST_KIND, accepts_metadata_list,
};
pub use status::Status;
pub use watch::{Bookmark, EventType, WatchLine, WatchType};

/// The response header by which a cache grants a connection-level session:
/// its value is the number of seconds the connection stays authenticated,
/// during which the client may omit its bearer token (HTTP/2's HPACK never
/// indexes `authorization`, so a ~1 KB token would cost 1 KB per request).
pub const SESSION_HEADER: &str = "x-keda-http-cache-session";
