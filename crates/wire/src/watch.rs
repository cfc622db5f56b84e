//! One line of a watch stream.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::digest;

/// The type of a change event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A new object (or one that started matching the watch's selectors).
    Added,
    /// A changed object.
    Modified,
    /// A removed object (carrying its last state), or one that stopped
    /// matching the watch's selectors.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// The `type` of a watch line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatchType {
    /// A change: the object is the object.
    Event(EventType),
    /// Progress without a change: the object carries only a resourceVersion
    /// (and, from a `listwatch` server, the content digest), see [`Bookmark`].
    Bookmark,
    /// The watch cannot go on: the object is a [`crate::Status`].
    Error,
}

impl WatchType {
    /// The `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Event(e) => e.as_str(),
            WatchType::Bookmark => "BOOKMARK",
            WatchType::Error => "ERROR",
        }
    }

    /// The type named `s`; `None` for a type this protocol does not know.
    pub fn parse(s: &str) -> Option<WatchType> {
        Some(match s {
            "ADDED" => WatchType::Event(EventType::Added),
            "MODIFIED" => WatchType::Event(EventType::Modified),
            "DELETED" => WatchType::Event(EventType::Deleted),
            "BOOKMARK" => WatchType::Bookmark,
            "ERROR" => WatchType::Error,
            _ => return None,
        })
    }
}

/// One line of a watch stream, `{"type":..,"object":{..}}`, decoded without
/// building a tree for the object (it stays a slice of the line): a
/// BOOKMARK, most lines of an idle watch, costs a few small reads.
///
/// ```
/// let line = br#"{"type":"ADDED","object":{"metadata":{"name":"a"}},"http.keda.sh/content-digest":"d00000000002a"}"#;
/// let l: wire::WatchLine<'_> = serde_json::from_slice(line).unwrap();
/// assert_eq!(l.watch_type(), Some(wire::WatchType::Event(wire::EventType::Added)));
/// assert_eq!(l.object.get(), r#"{"metadata":{"name":"a"}}"#);
/// assert_eq!(l.digest, Some(42));
/// ```
#[derive(Debug)]
pub struct WatchLine<'a> {
    /// The `type` as sent (see [`WatchLine::watch_type`]).
    pub event_type: Cow<'a, str>,
    /// The object, as JSON text.
    pub object: &'a RawValue,
    /// A `listwatch` server's content digest of the watch's view after this
    /// event (the field [`digest::ANNOTATION`]); `None` when absent or not a
    /// digest token.
    pub digest: Option<u64>,
}

impl WatchLine<'_> {
    /// The line's type; `None` when this protocol does not know it.
    pub fn watch_type(&self) -> Option<WatchType> {
        WatchType::parse(&self.event_type)
    }
}

impl<'de> Deserialize<'de> for WatchLine<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LineVisitor;

        impl<'de> Visitor<'de> for LineVisitor {
            type Value = WatchLine<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a watch event object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut event_type = None;
                let mut object = None;
                let mut digest = None;
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    match &*key.0 {
                        "type" => event_type = Some(map.next_value::<CowStr<'de>>()?.0),
                        "object" => object = Some(map.next_value::<&'de RawValue>()?),
                        k if k == digest::ANNOTATION => {
                            digest = map
                                .next_value::<Option<CowStr<'de>>>()?
                                .and_then(|t| digest::parse_token(&t.0));
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(WatchLine {
                    event_type: event_type.ok_or_else(|| de::Error::missing_field("type"))?,
                    object: object.ok_or_else(|| de::Error::missing_field("object"))?,
                    digest,
                })
            }
        }

        deserializer.deserialize_map(LineVisitor)
    }
}

/// The object of a BOOKMARK line:
/// `{"kind":..,"apiVersion":..,"metadata":{"resourceVersion":"..","annotations":{..}}}`.
///
/// ```
/// let object = r#"{"kind":"Pod","metadata":{"resourceVersion":"12","annotations":{"http.keda.sh/content-digest":"d00000000002a"}}}"#;
/// let b: wire::Bookmark<'_> = serde_json::from_str(object).unwrap();
/// assert_eq!((&*b.resource_version, b.digest), ("12", Some(42)));
/// ```
#[derive(Debug)]
pub struct Bookmark<'a> {
    /// The resourceVersion the watch has reached.
    pub resource_version: Cow<'a, str>,
    /// The content digest of the watch's view at `resource_version` (the
    /// annotation [`digest::ANNOTATION`]), from a `listwatch` server.
    pub digest: Option<u64>,
}

impl<'de> Deserialize<'de> for Bookmark<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Object<'a> {
            #[serde(borrow)]
            metadata: Meta<'a>,
        }
        #[derive(Deserialize)]
        struct Meta<'a> {
            #[serde(rename = "resourceVersion", borrow)]
            resource_version: Cow<'a, str>,
            #[serde(default)]
            annotations: Option<DigestAnnotation>,
        }
        let o = Object::deserialize(deserializer)?;
        Ok(Bookmark {
            resource_version: o.metadata.resource_version,
            digest: o.metadata.annotations.and_then(|a| a.0),
        })
    }
}

/// An `annotations` map, reduced to its content digest.
struct DigestAnnotation(Option<u64>);

impl<'de> Deserialize<'de> for DigestAnnotation {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AnnotationsVisitor;

        impl<'de> Visitor<'de> for AnnotationsVisitor {
            type Value = DigestAnnotation;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an annotations map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut digest = None;
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    if key.0 == digest::ANNOTATION {
                        digest = map
                            .next_value::<Option<CowStr<'de>>>()?
                            .and_then(|t| digest::parse_token(&t.0));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(DigestAnnotation(digest))
            }
        }

        deserializer.deserialize_map(AnnotationsVisitor)
    }
}

/// A string borrowed from the input when it has no escapes.
#[derive(Deserialize)]
struct CowStr<'a>(#[serde(borrow)] Cow<'a, str>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_decode_borrowing_the_object() {
        let line = br#"{"object":{"metadata":{"name":"a"}},"type":"DELETED","extra":[1,{"x":2}]}"#;
        let l: WatchLine<'_> = serde_json::from_slice(line).unwrap();
        assert_eq!(l.watch_type(), Some(WatchType::Event(EventType::Deleted)));
        assert!(matches!(l.event_type, Cow::Borrowed(_)));
        assert_eq!(l.object.get(), r#"{"metadata":{"name":"a"}}"#);
        assert_eq!(l.digest, None);

        let unknown: WatchLine<'_> =
            serde_json::from_slice(br#"{"type":"SOMETHING","object":{}}"#).unwrap();
        assert_eq!(unknown.watch_type(), None);
        assert_eq!(unknown.event_type, "SOMETHING");

        for bad in [
            &br#"{"type":"ADDED"}"#[..],
            br#"{"object":{}}"#,
            b"[1]",
            b"{",
        ] {
            assert!(serde_json::from_slice::<WatchLine<'_>>(bad).is_err());
        }
    }

    #[test]
    fn a_digest_that_is_not_a_token_is_no_digest() {
        let field = digest::ANNOTATION;
        let line = format!(r#"{{"type":"ADDED","object":{{}},"{field}":"zz"}}"#);
        assert_eq!(
            serde_json::from_str::<WatchLine<'_>>(&line).unwrap().digest,
            None
        );
        let line = format!(r#"{{"type":"ADDED","object":{{}},"{field}":null}}"#);
        assert_eq!(
            serde_json::from_str::<WatchLine<'_>>(&line).unwrap().digest,
            None
        );
    }

    #[test]
    fn bookmarks_carry_their_version_and_digest() {
        let token = digest::Token(7);
        let object = format!(
            r#"{{"kind":"X","apiVersion":"v1","metadata":{{"resourceVersion":"9","annotations":{{"other":"1","{}":"{token}"}}}}}}"#,
            digest::ANNOTATION
        );
        let b: Bookmark<'_> = serde_json::from_str(&object).unwrap();
        assert_eq!((&*b.resource_version, b.digest), ("9", Some(7)));
        let plain: Bookmark<'_> =
            serde_json::from_str(r#"{"metadata":{"resourceVersion":"3"}}"#).unwrap();
        assert_eq!((&*plain.resource_version, plain.digest), ("3", None));
        assert!(serde_json::from_str::<Bookmark<'_>>(r#"{"metadata":{}}"#).is_err());
    }

    #[test]
    fn type_names_round_trip() {
        for t in [
            WatchType::Event(EventType::Added),
            WatchType::Event(EventType::Modified),
            WatchType::Event(EventType::Deleted),
            WatchType::Bookmark,
            WatchType::Error,
        ] {
            assert_eq!(WatchType::parse(t.as_str()), Some(t));
        }
    }
}
