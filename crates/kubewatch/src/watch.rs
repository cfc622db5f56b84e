//! A watch stream, read as typed frames.

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::time::{Instant, Sleep};
use tracing::debug;
use wire::{EventType, WatchType};

use crate::error::Error;

/// A watch line longer than this ends the watch ([`Error::LineTooLong`]):
/// no object we serve comes near it, and the buffer must stay bounded.
pub const MAX_LINE: usize = 64 << 20;

/// How long a watch may stay silent (no event, no bookmark, not even its
/// end at the server's `timeout`) before [`WatchStream::next_batch`] gives
/// it up as stalled: the server's timeout plus 5 s.
pub fn stall_bound(watch_timeout: Duration) -> Duration {
    watch_timeout + Duration::from_secs(5)
}

/// What one line of a watch stream says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchFrame {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    Event {
        /// Which.
        event_type: EventType,
        /// The object's JSON text: a slice of the received line, no copy.
        object: Bytes,
        /// From a `listwatch` server: the content digest of the watch's
        /// view after this event ([`wire::digest`]).
        digest: Option<u64>,
    },
    /// A BOOKMARK: progress without a change.
    Bookmark {
        /// The resourceVersion the watch has reached.
        resource_version: String,
        /// From a `listwatch` server: the content digest of the watch's
        /// view at `resource_version`.
        digest: Option<u64>,
    },
    /// 410 Gone (an ERROR line with a 410 Status, or a 410 answer to the
    /// watch): the resourceVersion left the server's history; relist. The
    /// stream ends with it.
    Gone,
}

/// Whether a [`WatchStream`] goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchState {
    /// More may come.
    Open,
    /// The stream is over: the server ended it (its timeout: rewatch from
    /// the last resourceVersion), or it said [`WatchFrame::Gone`].
    Ended,
}

/// A watch response, read as [`WatchFrame`]s (from
/// [`crate::Collection::watch`]).
///
/// - Framing: one JSON object per line; blank lines are skipped, a line
///   may span any number of HTTP frames.
/// - A line of a type the protocol does not know is skipped with a debug
///   log (a newer server may send more types; skipping them is what
///   kube-apiserver's clients do with unknown fields, too).
/// - An `ERROR` line with a 410 Status is [`WatchFrame::Gone`]; any other
///   ERROR is [`Error::WatchFailed`].
/// - Stall detection: a watch silent for its stall bound
///   ([`stall_bound`] of the server timeout it was asked for) is
///   [`Error::Stalled`]. One timer per watch, re-armed lazily from the last
///   data received (not per line): an idle watch costs one timer firing
///   per bound.
///
/// ```no_run
/// # async fn demo(routes: kubewatch::Collection) -> Result<(), kubewatch::Error> {
/// use std::time::Duration;
/// use kubewatch::{WatchFrame, WatchState};
/// let mut watch = routes.watch("41", Duration::from_secs(30)).await?;
/// let mut frames = Vec::new();
/// loop {
///     let state = watch.next_batch(&mut frames).await;
///     for frame in frames.drain(..) {
///         match frame {
///             WatchFrame::Event { event_type, object, .. } => println!("{event_type:?} {} bytes", object.len()),
///             WatchFrame::Bookmark { resource_version, .. } => println!("at {resource_version}"),
///             WatchFrame::Gone => println!("relist"),
///         }
///     }
///     if state? == WatchState::Ended {
///         return Ok(());
///     }
/// }
/// # }
/// ```
pub struct WatchStream {
    /// `None` once the stream is over.
    body: Option<kube::client::Body>,
    framer: Framer,
    stall: Duration,
    last_data: Instant,
    stall_timer: Pin<Box<Sleep>>,
    /// A 410 answer to the watch request, not yet reported.
    gone: bool,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("path", &self.framer.path)
            .field("open", &self.body.is_some())
            .field("buffered", &self.framer.buf.len())
            .finish()
    }
}

impl WatchStream {
    pub(crate) fn new(path: String, body: kube::client::Body, stall: Duration) -> Self {
        let now = Instant::now();
        WatchStream {
            body: Some(body),
            framer: Framer::new(path),
            stall,
            last_data: now,
            stall_timer: Box::pin(tokio::time::sleep_until(now + stall)),
            gone: false,
        }
    }

    /// The stream of a 410 answer: one [`WatchFrame::Gone`].
    pub(crate) fn gone(path: String) -> Self {
        let now = Instant::now();
        WatchStream {
            body: None,
            framer: Framer::new(path),
            stall: Duration::ZERO,
            last_data: now,
            stall_timer: Box::pin(tokio::time::sleep_until(now)),
            gone: true,
        }
    }

    /// Waits for the next data from the server and appends a frame for
    /// each complete line in it to `frames` (none when the data only
    /// continued a line). One call per HTTP frame lets a caller apply a
    /// burst that arrived together as one batch.
    ///
    /// Returns [`WatchState::Ended`] once the stream is over. An error ends
    /// the stream too; the frames of the lines before the failing one are
    /// still appended. Cancel safe: dropping the future loses nothing.
    pub async fn next_batch(&mut self, frames: &mut Vec<WatchFrame>) -> Result<WatchState, Error> {
        if std::mem::take(&mut self.gone) {
            frames.push(WatchFrame::Gone);
            return Ok(WatchState::Ended);
        }
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(WatchState::Ended);
            };
            let frame = tokio::select! {
                biased;
                f = body.frame() => f,
                _ = &mut self.stall_timer => {
                    let silent = self.last_data.elapsed();
                    if silent >= self.stall {
                        self.body = None;
                        return Err(Error::Stalled { path: self.framer.path.clone(), silent });
                    }
                    let at = self.last_data + self.stall;
                    self.stall_timer.as_mut().reset(at);
                    continue;
                }
            };
            let data = match frame {
                None => {
                    self.body = None;
                    return Ok(WatchState::Ended);
                }
                Some(Err(source)) => {
                    self.body = None;
                    return Err(Error::Body {
                        path: self.framer.path.clone(),
                        source,
                    });
                }
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue, // trailers
                },
            };
            self.last_data = Instant::now();
            self.framer.buf.extend_from_slice(&data);
            let state = self.framer.frame_lines(frames);
            if !matches!(state, Ok(WatchState::Open)) {
                self.body = None;
            }
            return state;
        }
    }
}

/// Splits the received bytes into lines and decodes each into a frame.
struct Framer {
    path: String,
    /// Received bytes not yet framed into lines.
    buf: BytesMut,
    /// `buf[..scanned]` holds no newline.
    scanned: usize,
}

impl Framer {
    fn new(path: String) -> Self {
        Framer {
            path,
            buf: BytesMut::new(),
            scanned: 0,
        }
    }

    /// Turns every complete line in the buffer into a frame.
    fn frame_lines(&mut self, frames: &mut Vec<WatchFrame>) -> Result<WatchState, Error> {
        while let Some(nl) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
            let end = self.scanned + nl;
            let mut line = self.buf.split_to(end + 1).freeze();
            line.truncate(end);
            self.scanned = 0;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.decode(line)? {
                Some(WatchFrame::Gone) => {
                    frames.push(WatchFrame::Gone);
                    return Ok(WatchState::Ended);
                }
                Some(frame) => frames.push(frame),
                None => {}
            }
        }
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_LINE {
            return Err(Error::LineTooLong {
                path: self.path.clone(),
            });
        }
        Ok(WatchState::Open)
    }

    /// What one line says (`None`: a type we skip).
    fn decode(&self, line: Bytes) -> Result<Option<WatchFrame>, Error> {
        let decode_error = |source| Error::Decode {
            path: self.path.clone(),
            source,
        };
        let l: wire::WatchLine<'_> = serde_json::from_slice(&line).map_err(decode_error)?;
        let object = l.object.get();
        Ok(Some(match l.watch_type() {
            Some(WatchType::Event(event_type)) => {
                let start = object.as_ptr() as usize - line.as_ptr() as usize;
                WatchFrame::Event {
                    event_type,
                    object: line.slice(start..start + object.len()),
                    digest: l.digest,
                }
            }
            Some(WatchType::Bookmark) => {
                let b: wire::Bookmark<'_> = serde_json::from_str(object).map_err(decode_error)?;
                WatchFrame::Bookmark {
                    resource_version: b.resource_version.into_owned(),
                    digest: b.digest,
                }
            }
            Some(WatchType::Error) => {
                let status: wire::Status =
                    serde_json::from_str(object).unwrap_or_else(|_| wire::Status {
                        message: object.to_string(),
                        ..wire::Status::default()
                    });
                if status.is_gone() {
                    WatchFrame::Gone
                } else {
                    return Err(Error::WatchFailed {
                        path: self.path.clone(),
                        code: status.code,
                        message: status.message,
                    });
                }
            }
            None => {
                debug!(path = %self.path, event_type = %l.event_type, "unknown watch event type; skipped");
                return Ok(None);
            }
        }))
    }
}

/// The frames a watch stream whose body is exactly `body` yields, and how
/// it ends (`Open`: a line was left unfinished): the parser the client runs
/// on every line, without a connection (for fuzzing and tests).
pub fn parse_watch_body(body: &[u8]) -> (Vec<WatchFrame>, Result<WatchState, Error>) {
    let mut framer = Framer::new("(bytes)".to_string());
    framer.buf.extend_from_slice(body);
    let mut frames = Vec::new();
    let state = framer.frame_lines(&mut frames);
    (frames, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream over `body`, delivered as one HTTP frame.
    fn stream(body: &str) -> WatchStream {
        WatchStream::new(
            "/apis/x/v1/things".to_string(),
            kube::client::Body::from(body.as_bytes().to_vec()),
            Duration::from_secs(35),
        )
    }

    fn event(t: &str, name: &str, rv: u64) -> String {
        format!(
            r#"{{"type":"{t}","object":{{"metadata":{{"name":"{name}","resourceVersion":"{rv}"}}}}}}"#
        )
    }

    #[tokio::test]
    async fn one_frame_of_lines_is_one_batch() {
        let digest = wire::digest::Token(0x2a);
        let annotation = wire::digest::ANNOTATION;
        let body = [
            event("ADDED", "a", 2),
            String::new(),
            "  ".to_string(),
            format!(
                r#"{{"type":"MODIFIED","object":{{"metadata":{{"name":"a"}}}},"{annotation}":"{digest}"}}"#
            ),
            // A type this protocol does not know: skipped.
            r#"{"type":"SNAPSHOT","object":{}}"#.to_string(),
            format!(
                r#"{{"type":"BOOKMARK","object":{{"metadata":{{"resourceVersion":"9","annotations":{{"{annotation}":"{digest}"}}}}}}}}"#
            ),
            event("DELETED", "a", 10),
            // Not a complete line when the stream ends: dropped.
            r#"{"type":"ADDED""#.to_string(),
        ]
        .join("\n");
        let mut s = stream(&body);
        let mut frames = Vec::new();
        assert_eq!(s.next_batch(&mut frames).await.unwrap(), WatchState::Open);
        assert_eq!(frames.len(), 4, "{frames:?}");
        match &frames[0] {
            WatchFrame::Event {
                event_type: EventType::Added,
                object,
                digest: None,
            } => assert_eq!(
                &object[..],
                br#"{"metadata":{"name":"a","resourceVersion":"2"}}"#
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            frames[1],
            WatchFrame::Event {
                event_type: EventType::Modified,
                digest: Some(0x2a),
                ..
            }
        ));
        assert_eq!(
            frames[2],
            WatchFrame::Bookmark {
                resource_version: "9".to_string(),
                digest: Some(0x2a)
            }
        );
        assert!(matches!(
            frames[3],
            WatchFrame::Event {
                event_type: EventType::Deleted,
                ..
            }
        ));
        frames.clear();
        assert_eq!(s.next_batch(&mut frames).await.unwrap(), WatchState::Ended);
        assert!(frames.is_empty());
    }

    #[tokio::test]
    async fn gone_ends_the_stream_and_other_errors_fail_it() {
        let expired = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410,"message":"too old resource version: 1 (5)"}}"#;
        let mut s = stream(
            &[
                event("ADDED", "a", 2),
                expired.to_string(),
                event("ADDED", "b", 3),
            ]
            .join("\n"),
        );
        let mut frames = Vec::new();
        assert_eq!(s.next_batch(&mut frames).await.unwrap(), WatchState::Ended);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1], WatchFrame::Gone);
        frames.clear();
        assert_eq!(s.next_batch(&mut frames).await.unwrap(), WatchState::Ended);

        let failure =
            r#"{"type":"ERROR","object":{"kind":"Status","code":500,"message":"etcd is down"}}"#;
        let mut s =
            stream(&[event("ADDED", "a", 2), failure.to_string(), String::new()].join("\n"));
        let mut frames = Vec::new();
        match s.next_batch(&mut frames).await {
            Err(Error::WatchFailed {
                code: 500, message, ..
            }) => assert_eq!(message, "etcd is down"),
            other => panic!("{other:?}"),
        }
        assert_eq!(frames.len(), 1, "the lines before the error are kept");

        let mut s = stream("{\"type\":\n");
        let err = s.next_batch(&mut Vec::new()).await.unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "the source is kept"
        );
    }

    #[tokio::test]
    async fn a_410_answer_is_one_gone_frame() {
        let mut s = WatchStream::gone("/apis/x/v1/things".to_string());
        let mut frames = Vec::new();
        assert_eq!(s.next_batch(&mut frames).await.unwrap(), WatchState::Ended);
        assert_eq!(frames, [WatchFrame::Gone]);
        frames.clear();
        assert_eq!(s.next_batch(&mut frames).await.unwrap(), WatchState::Ended);
        assert!(frames.is_empty());
    }
}
