//! Why a list or a watch failed.

use std::time::Duration;

/// Why a list or a watch failed. Each variant names the collection's path;
/// the underlying error, when there is one, is the [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be built (a path the `http` crate rejects).
    #[error("{path}: cannot build the request: {source}")]
    Request {
        /// The collection.
        path: String,
        /// What `http` said.
        #[source]
        source: http::Error,
    },
    /// The request could not be sent (connect, TLS, connection lost).
    #[error("{path}: {source}")]
    Send {
        /// The collection.
        path: String,
        /// What the transport said.
        #[source]
        source: kube::Error,
    },
    /// No response to a watch within its stall bound ([`crate::stall_bound`]).
    #[error("watch {path}: no response within {after:?}")]
    NoResponse {
        /// The collection.
        path: String,
        /// How long we waited.
        after: Duration,
    },
    /// The response body broke off.
    #[error("{path}: reading the response: {source}")]
    Body {
        /// The collection.
        path: String,
        /// What the transport said.
        #[source]
        source: kube::Error,
    },
    /// 404: the server does not serve this resource (its CRD is not installed).
    #[error("{path}: 404 resource not served")]
    NotFound {
        /// The collection.
        path: String,
    },
    /// 410 to a list: a continue token older than the server's history;
    /// list again from the start. (A watch reports 410 as
    /// [`crate::WatchFrame::Gone`].)
    #[error("{path}: 410 Expired")]
    Gone {
        /// The collection.
        path: String,
    },
    /// Any other non-2xx answer.
    #[error("{path}: HTTP {status}: {message}")]
    Status {
        /// The collection.
        path: String,
        /// The HTTP status.
        status: http::StatusCode,
        /// The response body (usually a `Status` object), trimmed.
        message: String,
    },
    /// A watch ERROR line other than 410 Gone.
    #[error("watch {path}: error {code}: {message}")]
    WatchFailed {
        /// The collection.
        path: String,
        /// The Status's code (0 when the object is not a Status).
        code: u16,
        /// The Status's message (the object's text when it is not a Status).
        message: String,
    },
    /// A list body or a watch line that is not what the protocol says.
    #[error("{path}: bad JSON: {source}")]
    Decode {
        /// The collection.
        path: String,
        /// What `serde_json` said.
        #[source]
        source: serde_json::Error,
    },
    /// A watch line longer than [`crate::MAX_LINE`] bytes.
    #[error("watch {path}: a line over {} bytes", crate::MAX_LINE)]
    LineTooLong {
        /// The collection.
        path: String,
    },
    /// The watch sent nothing (no event, no bookmark, not even its end at
    /// the server's timeout) for its stall bound ([`crate::stall_bound`]).
    #[error("watch {path}: silent for {silent:?}; stalled")]
    Stalled {
        /// The collection.
        path: String,
        /// How long it was silent.
        silent: Duration,
    },
}
