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
