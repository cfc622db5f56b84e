//! The content digest: a 48-bit digest of a set of objects' identities and
//! versions, the wrapping sum over the objects of FNV-1a-64 of
//! `namespace/name/resourceVersion`, truncated to 48 bits ([`MASK`]).
//!
//! A sum, so it is order independent and a holder of the objects keeps it
//! current per change in O(1) (add the new object's [`object_hash`],
//! subtract the old one's, [`from_sum`] when read). 48 bits, so its token
//! `d<12 lower-case hex digits>` ([`Token`]) is short in a header.
//!
//! Where it travels:
//! - `If-None-Match: "d<hex>"` ([`entity_tag`], read back with
//!   [`from_if_none_match`]): "answer 304 if what you would list is exactly
//!   what I hold";
//! - the annotation [`ANNOTATION`] on a BOOKMARK, and a field of the same
//!   name on a watch event: the digest of the watch's view at that point.

use std::fmt;

/// Digests are truncated to 48 bits (12 hex digits in a header or annotation).
pub const MASK: u64 = 0xFFFF_FFFF_FFFF;

/// The annotation on a BOOKMARK that carries the content digest
/// (`"d<12 hex digits>"`) of the objects the watch covers (its namespace and
/// selectors) at the bookmark's resourceVersion; also the name of the field
/// by which a watch event carries the digest after it. Kubernetes clients
/// ignore both.
pub const ANNOTATION: &str = "http.keda.sh/content-digest";

/// FNV-1a-64 of `namespace/name/resourceVersion`: one object's share of a
/// content digest (a wrapping sum of these, see [`from_sum`]).
pub fn object_hash(namespace: &str, name: &str, resource_version: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        namespace.as_bytes(),
        b"/",
        name.as_bytes(),
        b"/",
        resource_version.as_bytes(),
    ] {
        for b in part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The digest of a running wrapping sum of [`object_hash`]es.
pub fn from_sum(sum: u64) -> u64 {
    sum & MASK
}

/// The digest of a set of (namespace, name, resourceVersion).
///
/// ```
/// use wire::digest::content_digest;
/// let a = content_digest([("ns", "a", "1"), ("ns", "b", "2")]);
/// assert_eq!(a, content_digest([("ns", "b", "2"), ("ns", "a", "1")]));
/// assert_ne!(a, content_digest([("ns", "a", "1"), ("ns", "b", "3")]));
/// ```
pub fn content_digest<'a>(objects: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> u64 {
    from_sum(
        objects
            .into_iter()
            .map(|(ns, name, rv)| object_hash(ns, name, rv))
            .fold(0u64, u64::wrapping_add),
    )
}

/// A digest's token, `d<12 lower-case hex digits>` (as in an annotation);
/// formats without allocating.
///
/// ```
/// assert_eq!(wire::digest::Token(42).to_string(), "d00000000002a");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token(pub u64);

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "d{:012x}", from_sum(self.0))
    }
}

/// The digest of a token `d<hex>` (as written by [`Token`]); `None` when
/// it is not one.
pub fn parse_token(token: &str) -> Option<u64> {
    // `d` and at most 12 hex digits (48 bits; `Token` writes all 12).
    // Anything else (a sign, more digits) is not a digest of ours.
    let hex = token.strip_prefix('d')?;
    if hex.is_empty() || hex.len() > 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The digest as an entity tag for `If-None-Match`: `"d<12 hex>"`, quoted.
pub fn entity_tag(digest: u64) -> String {
    format!("\"{}\"", Token(digest))
}

/// The first digest among the entity tags of an `If-None-Match` value
/// (`"12", "d00000000002a"`; weak tags accepted).
pub fn from_if_none_match(value: &str) -> Option<u64> {
    value.split(',').find_map(|t| {
        let t = t.trim().trim_start_matches("W/").trim_matches('"');
        parse_token(t)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_token_form_parses() {
        assert_eq!(parse_token("d00000000002a"), Some(42));
        assert_eq!(parse_token(&Token(42).to_string()), Some(42));
        // Found by the list_query fuzz target: a 13th digit read as a
        // digest no server could hold.
        assert_eq!(parse_token("d100000000002a"), None);
        assert_eq!(parse_token("d+0000000002a"), None);
        assert_eq!(parse_token("d"), None);
        assert_eq!(from_if_none_match("\"d100000000002a\""), None);
    }

    #[test]
    fn order_independent_and_version_sensitive() {
        let a = content_digest([("ns", "a", "1"), ("ns", "b", "2")]);
        assert_eq!(a, content_digest([("ns", "b", "2"), ("ns", "a", "1")]));
        assert_ne!(a, content_digest([("ns", "a", "1"), ("ns", "b", "3")]));
        assert_ne!(a, content_digest([("ns", "a", "1")]));
        assert_eq!(a, a & MASK);
    }

    #[test]
    fn a_running_sum_equals_the_digest_of_the_set() {
        let mut sum = 0u64;
        sum = sum.wrapping_add(object_hash("ns", "a", "1"));
        sum = sum.wrapping_add(object_hash("ns", "b", "2"));
        // b changes to version 3.
        sum = sum.wrapping_sub(object_hash("ns", "b", "2"));
        sum = sum.wrapping_add(object_hash("ns", "b", "3"));
        assert_eq!(
            from_sum(sum),
            content_digest([("ns", "a", "1"), ("ns", "b", "3")])
        );
    }

    #[test]
    fn tokens_round_trip_and_sit_among_entity_tags() {
        let d = content_digest([("apps", "web", "17")]);
        let token = Token(d).to_string();
        assert_eq!(token.len(), 13);
        assert_eq!(parse_token(&token), Some(d));
        assert_eq!(Token(u64::MAX).to_string(), "dffffffffffff");
        assert_eq!(entity_tag(42), "\"d00000000002a\"");
        assert_eq!(from_if_none_match("\"d00000000002a\""), Some(42));
        assert_eq!(from_if_none_match("\"7\", W/\"d2a\""), Some(42));
        assert_eq!(from_if_none_match("\"7\""), None);
        assert_eq!(parse_token("x2a"), None);
        assert_eq!(parse_token("dzz"), None);
    }
}
