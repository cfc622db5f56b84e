//! The response body type used by every handler in this crate.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body: a complete buffer, or a stream of chunks fed by a watch task.
///
/// Streams end when the sending side is dropped (timeout, lag, close, or
/// server shutdown). Dropping the body (client gone) makes the sender fail,
/// which ends the watch task.
#[derive(Debug)]
pub struct Body {
    inner: Inner,
    /// Sees every chunk as it is sent ([`Body::observe`]).
    observer: Option<Observer>,
}

/// What [`Body::observe`] installs.
struct Observer(Box<dyn FnMut(&Bytes) + Send>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observer")
    }
}

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body {
    /// A body holding `bytes` (sent with a `Content-Length`).
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        Body::of(Inner::Full((!bytes.is_empty()).then_some(bytes)))
    }

    /// An empty body.
    pub fn empty() -> Body {
        Body::of(Inner::Full(None))
    }

    /// A chunked body fed by `rx`; ends when every sender is dropped.
    pub fn channel(rx: mpsc::Receiver<Bytes>) -> Body {
        Body::of(Inner::Stream(rx))
    }

    fn of(inner: Inner) -> Body {
        Body {
            inner,
            observer: None,
        }
    }

    /// Calls `observer` with every chunk as it is handed to the connection
    /// (the cache counts bytes, events and bookmarks with it). The observer
    /// is dropped with the body, so what it owns can mark the end of a
    /// response (a watch's subscriber gauge, say).
    pub fn observe(mut self, observer: impl FnMut(&Bytes) + Send + 'static) -> Body {
        self.observer = Some(Observer(Box::new(observer)));
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let chunk = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take()),
            Inner::Stream(rx) => rx.poll_recv(cx),
        };
        if let (Poll::Ready(Some(b)), Some(Observer(observe))) = (&chunk, &mut this.observer) {
            observe(b);
        }
        chunk.map(|o| o.map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.inner, Inner::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}
