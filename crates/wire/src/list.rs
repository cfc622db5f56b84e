//! A list response.

use serde::Deserialize;
use serde_json::value::RawValue;

/// A list response (`{"kind":"<Kind>List","metadata":{..},"items":[..]}`),
/// decoded without building a tree for the items: each stays a slice of
/// the body, so a client parses only the ones it needs.
///
/// ```
/// let body = br#"{"kind":"PodList","metadata":{"resourceVersion":"12","continue":"c1"},"items":[{"metadata":{"name":"a"}}]}"#;
/// let list: wire::ListBody<'_> = serde_json::from_slice(body).unwrap();
/// assert_eq!(list.metadata.resource_version.as_deref(), Some("12"));
/// assert_eq!(list.metadata.continue_token.as_deref(), Some("c1"));
/// assert_eq!(list.items[0].get(), r#"{"metadata":{"name":"a"}}"#);
/// ```
#[derive(Debug, Deserialize)]
pub struct ListBody<'a> {
    /// The list's `kind` (`<Kind>List`, or [`METADATA_LIST_KIND`]).
    #[serde(default, borrow)]
    pub kind: Option<std::borrow::Cow<'a, str>>,
    /// The list's metadata.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The objects, as JSON text.
    #[serde(default, borrow)]
    pub items: Vec<&'a RawValue>,
}

/// A list's `metadata`.
#[derive(Debug, Default, Deserialize)]
pub struct ListMeta {
    /// The resourceVersion the list was read at.
    #[serde(default, rename = "resourceVersion")]
    pub resource_version: Option<String>,
    /// The token of the next page (absent or empty on the last page).
    #[serde(default, rename = "continue")]
    pub continue_token: Option<String>,
}

/// The `Accept` value of a metadata-only list, as kube's clients send it:
/// each object reduced to its `metadata` (kind `PartialObjectMetadata`),
/// falling back to full objects from a server that cannot do that.
pub const METADATA_LIST_ACCEPT: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";

/// The `kind` of a metadata-only list.
pub const METADATA_LIST_KIND: &str = "PartialObjectMetadataList";

/// Whether an `Accept` header asks for a metadata-only list: one of its
/// media ranges is JSON with `as=PartialObjectMetadataList;g=meta.k8s.io`
/// and `v=v1` (or `v1beta1`). The first range the server can serve wins,
/// so a range for full JSON before it means full objects.
///
/// ```
/// assert!(wire::accepts_metadata_list(wire::METADATA_LIST_ACCEPT));
/// assert!(!wire::accepts_metadata_list("application/json"));
/// assert!(!wire::accepts_metadata_list("application/json, application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"));
/// assert!(!wire::accepts_metadata_list("application/json;as=Table;g=meta.k8s.io;v=v1"));
/// ```
pub fn accepts_metadata_list(accept: &str) -> bool {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        if !(media.eq_ignore_ascii_case("application/json") || media == "*/*") {
            continue;
        }
        let (mut as_kind, mut group, mut version) = (None, None, None);
        for p in parts {
            match p.split_once('=') {
                Some(("as", v)) => as_kind = Some(v.trim_matches('"')),
                Some(("g", v)) => group = Some(v.trim_matches('"')),
                Some(("v", v)) => version = Some(v.trim_matches('"')),
                _ => {}
            }
        }
        match as_kind {
            // Plain JSON (or a parameter we do not know) comes first: full objects.
            None => return false,
            Some(METADATA_LIST_KIND)
                if group == Some("meta.k8s.io") && matches!(version, Some("v1" | "v1beta1")) =>
            {
                return true;
            }
            // Another transformation (e.g. `as=Table`): not ours, try the next.
            Some(_) => continue,
        }
    }
    false
}
