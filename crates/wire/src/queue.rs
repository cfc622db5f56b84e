//! The interceptor's `/queue` bodies, in both forms, written and read here
//! only: the interceptor (and the benchmark's simulated fleet) encodes them,
//! the scaler decodes them.
//!
//! Plain `GET /queue` is upstream's JSON, one entry per route, whatever
//! changed (at 1,000 routes that is ~60 kB per poll):
//!
//! ```text
//! {"<ns>/<name>":{"Concurrency":n,"RequestCount":m},...}
//! ```
//!
//! A client that sends `Accept:` [`COMPACT_CONTENT_TYPE`] gets the compact
//! delta form instead: lines of text, first a header naming the process
//! instance and a snapshot epoch, then only what changed since the snapshot
//! the client names with `?since=<instance>.<epoch>` ([`CompactQueue::since`];
//! or every route, when it names none the replica still keeps):
//!
//! ```text
//! kq1 <instance, hex> <epoch> full|delta
//! <ns>/<name> <Concurrency> <RequestCount>     (a route added or changed)
//! -<ns>/<name>                                 (a route gone; delta only)
//! ```
//!
//! An idle replica answers a delta poll with the header line alone. A new
//! instance id tells the client the process restarted and its counters
//! began again at zero. Route keys are Kubernetes names (no spaces, never
//! starting with `-`; see [`is_compact_key`]).
//!
//! ```
//! use wire::queue;
//! let body = queue::encode_compact(0xff, 7, false, [("apps/web", 2, 40)], ["apps/old"]);
//! assert_eq!(body, "kq1 ff 7 delta\napps/web 2 40\n-apps/old\n");
//! let q = queue::parse_compact(&body).unwrap();
//! assert_eq!((q.instance, q.epoch, q.full), (255, 7, false));
//! assert_eq!(q.since(), "ff.7");
//!
//! let json = queue::encode_plain([("apps/web", 2, 40)]);
//! assert_eq!(json, r#"{"apps/web":{"Concurrency":2,"RequestCount":40}}"#);
//! assert_eq!(queue::decode_plain(json.as_bytes()).unwrap()[0].1, 2);
//! ```

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The media type of the compact form (request `Accept`, response `Content-Type`).
pub const COMPACT_CONTENT_TYPE: &str = "application/vnd.keda-http.queue-delta";

/// One route's entry, decoded: (key, Concurrency, RequestCount).
pub type Entry<'a> = (Cow<'a, str>, i64, u64);

/// Upstream's JSON: every entry, keys in order (as Go's `encoding/json`
/// writes a map), the last of two equal keys winning. Values are written
/// as given (the interceptor clamps a negative concurrency before).
pub fn encode_plain<K: AsRef<str>>(entries: impl IntoIterator<Item = (K, i64, u64)>) -> String {
    let mut sorted: Vec<(K, i64, u64)> = entries.into_iter().collect();
    // Stable: of equal keys the last given stays last, and wins below.
    sorted.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
    let mut out = String::with_capacity(2 + sorted.len() * 64);
    out.push('{');
    let mut first = true;
    for (i, (k, c, n)) in sorted.iter().enumerate() {
        if sorted
            .get(i + 1)
            .is_some_and(|next| next.0.as_ref() == k.as_ref())
        {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        // A str always serializes; escaping is serde_json's, as for a map key.
        out.push_str(&serde_json::to_string(k.as_ref()).unwrap_or_default());
        let _ = write!(out, r#":{{"Concurrency":{c},"RequestCount":{n}}}"#);
    }
    out.push('}');
    out
}

/// Reads upstream's JSON: the entries in body order (a key given twice
/// appears twice), keys borrowed from `body` unless escaped. A missing
/// field is 0, unknown fields are ignored, as Go's `encoding/json` reads it.
pub fn decode_plain(body: &[u8]) -> Result<Vec<Entry<'_>>, serde_json::Error> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Vec<Entry<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of route keys to {Concurrency, RequestCount}")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some((Key(k), v)) = map.next_entry::<Key<'de>, PlainCounts>()? {
                out.push((k, v.concurrency, v.request_count));
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let entries = de.deserialize_map(Entries)?;
    de.end()?;
    Ok(entries)
}

/// Upstream's `/queue` value.
#[derive(Deserialize)]
struct PlainCounts {
    #[serde(rename = "Concurrency", default)]
    concurrency: i64,
    #[serde(rename = "RequestCount", default)]
    request_count: u64,
}

/// A map key, borrowed from the body when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a route key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// True when the compact form can carry `key`: not empty, no whitespace
/// or control characters, not starting with `-`. Every route key
/// (`<namespace>/<name>`, Kubernetes names) is one.
pub fn is_compact_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('-')
        && !key.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The compact form: the header, then one line per changed route and one
/// per removed route. Every key must pass [`is_compact_key`] (route keys
/// do); a client reads back exactly what was given ([`parse_compact`]).
pub fn encode_compact<'k>(
    instance: u64,
    epoch: u64,
    full: bool,
    changed: impl IntoIterator<Item = (&'k str, i64, u64)>,
    removed: impl IntoIterator<Item = &'k str>,
) -> String {
    let mut out = String::with_capacity(64);
    let kind = if full { "full" } else { "delta" };
    let _ = writeln!(out, "kq1 {instance:x} {epoch} {kind}");
    for (k, c, n) in changed {
        let _ = writeln!(out, "{k} {c} {n}");
    }
    for k in removed {
        let _ = writeln!(out, "-{k}");
    }
    out
}

/// The `since` a client sends: `<instance hex>.<epoch>`.
pub fn format_since(instance: u64, epoch: u64) -> String {
    format!("{instance:x}.{epoch}")
}

/// Reads a `since` value (`None`: not one of ours).
pub fn parse_since(s: &str) -> Option<(u64, u64)> {
    let (i, e) = s.split_once('.')?;
    Some((u64::from_str_radix(i, 16).ok()?, e.parse().ok()?))
}

/// A decoded compact answer, its keys borrowed from the body.
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
        format_since(self.instance, self.epoch)
    }

    /// This answer, encoded again ([`encode_compact`]).
    pub fn encode(&self) -> String {
        encode_compact(
            self.instance,
            self.epoch,
            self.full,
            self.changed.iter().copied(),
            self.removed.iter().copied(),
        )
    }
}

/// Why a compact answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactError {
    /// The header line is missing or not `kq1 <hex> <epoch> full|delta`.
    Header(String),
    /// An entry line is not `<key> <int> <int>` or `-<key>`.
    Line {
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactError::Header(h) => write!(f, "compact /queue: bad header line {h:?}"),
            CompactError::Line { line, text } => {
                write!(f, "compact /queue: bad line {line}: {text:?}")
            }
        }
    }
}

impl std::error::Error for CompactError {}

/// Reads a compact answer.
///
/// ```
/// let q = wire::queue::parse_compact("kq1 ff 7 delta\napps/web 2 40\n-apps/old\n").unwrap();
/// assert_eq!(q.changed, [("apps/web", 2, 40)]);
/// assert_eq!(q.removed, ["apps/old"]);
/// ```
pub fn parse_compact(body: &str) -> Result<CompactQueue<'_>, CompactError> {
    // A scaler reads ~100,000 of these lines per round at 1,000 pods: one
    // pass over each line's bytes, no searcher per field.
    let mut lines = Lines(body).enumerate();
    let header = lines.next().map_or("", |(_, l)| l);
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
    for (i, line) in lines {
        if line.is_empty() {
            continue;
        }
        if let Some(key) = line.strip_prefix('-') {
            q.removed.push(key);
            continue;
        }
        let bad = || CompactError::Line {
            line: i + 1,
            text: line.to_string(),
        };
        let (key, c, n) = three_fields(line).ok_or_else(bad)?;
        let c = c.parse().map_err(|_| bad())?;
        let n = n.parse().map_err(|_| bad())?;
        q.changed.push((key, c, n));
    }
    Ok(q)
}

/// The lines of a body, as [`str::lines`] cuts them (at `\n` or `\r\n`).
struct Lines<'a>(&'a str);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        let Some(end) = self.0.bytes().position(|b| b == b'\n') else {
            return Some(std::mem::take(&mut self.0));
        };
        let line = &self.0[..end];
        self.0 = &self.0[end + 1..];
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

/// `a b c` split at its two spaces (`None` unless there are exactly two).
fn three_fields(line: &str) -> Option<(&str, &str, &str)> {
    let mut spaces = [0; 2];
    let mut found = 0;
    for (i, b) in line.bytes().enumerate() {
        if b == b' ' {
            *spaces.get_mut(found)? = i;
            found += 1;
        }
    }
    if found != 2 {
        return None;
    }
    let [a, b] = spaces;
    Some((&line[..a], &line[a + 1..b], &line[b + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_is_upstreams_json_sorted_with_the_last_duplicate_winning() {
        let body = encode_plain([("b/x", 1, 2), ("a/\"q\"", 0, 7), ("b/x", 3, 4)]);
        assert_eq!(
            body,
            r#"{"a/\"q\"":{"Concurrency":0,"RequestCount":7},"b/x":{"Concurrency":3,"RequestCount":4}}"#
        );
        // The same bytes serde_json writes for the map the interceptor used to build.
        let map: serde_json::Map<String, serde_json::Value> = [
            (
                "b/x",
                serde_json::json!({"Concurrency": 3, "RequestCount": 4}),
            ),
            (
                "a/\"q\"",
                serde_json::json!({"Concurrency": 0, "RequestCount": 7}),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(body, serde_json::Value::Object(map).to_string());
        assert_eq!(encode_plain(Vec::<(&str, i64, u64)>::new()), "{}");
    }

    #[test]
    fn plain_decodes_borrowed_keys_defaults_and_unknown_fields() {
        let body = br#"{"a/x":{"Concurrency":2,"RequestCount":9,"Extra":[1]},"a\/y":{},"a/z":{"RequestCount":1}}"#;
        let got = decode_plain(body).unwrap();
        assert_eq!(
            got,
            [
                (Cow::Borrowed("a/x"), 2, 9),
                (Cow::Owned("a/y".to_string()), 0, 0),
                (Cow::Borrowed("a/z"), 0, 1)
            ]
        );
        assert!(matches!(got[0].0, Cow::Borrowed(_)));
        assert!(matches!(got[1].0, Cow::Owned(_)));
        for bad in [
            &b"[]"[..],
            b"null",
            b"{\"a\":1}",
            b"{\"a\":{\"Concurrency\":1.5}}",
            b"{} {}",
            b"{\"a\":{\"RequestCount\":-1}}",
        ] {
            assert!(
                decode_plain(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn compact_round_trips() {
        let body = encode_compact(0xabc, 3, true, [("a/x", -1, 5), ("a/y", 0, 0)], []);
        let q = parse_compact(&body).unwrap();
        assert_eq!(q.changed, [("a/x", -1, 5), ("a/y", 0, 0)]);
        assert_eq!(q.encode(), body);
        assert_eq!(parse_since(&q.since()), Some((0xabc, 3)));
        assert_eq!(parse_since("zz"), None);
    }

    #[test]
    fn compact_keys_are_route_keys() {
        assert!(is_compact_key("apps/web"));
        for bad in ["", "-x", "a b", "a\n", "a\r", "a\u{85}"] {
            assert!(!is_compact_key(bad), "{bad:?}");
        }
    }

    #[test]
    fn lines_and_fields_cut_as_std_does() {
        for body in [
            "",
            "\n",
            "a",
            "a\n",
            "a\r\nb\r",
            "a\r\r\n\nb\n\r\n",
            "\r",
            "x\n\n\ny",
        ] {
            assert_eq!(
                Lines(body).collect::<Vec<_>>(),
                body.lines().collect::<Vec<_>>(),
                "{body:?}"
            );
        }
        for line in [
            "a b c", "a  b", " a b", "a b c ", "abc", "a b", "", "  ", "a b c d",
        ] {
            let mut f = line.split(' ');
            let want = match (f.next(), f.next(), f.next(), f.next()) {
                (Some(a), Some(b), Some(c), None) => Some((a, b, c)),
                _ => None,
            };
            assert_eq!(three_fields(line), want, "{line:?}");
        }
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
        assert_eq!(
            parse_compact("kq1 1 2 full\r\n\napps/a 1 2 3\n")
                .unwrap_err()
                .to_string(),
            "compact /queue: bad line 3: \"apps/a 1 2 3\""
        );
    }
}
