//! The query of a list or watch request: parameters, selectors, and the
//! `continue` tokens of paged lists.

use super::*;

/// The query parameters of a list or watch request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListWatchQuery {
    /// `watch=1|true`
    pub watch: bool,
    /// `resourceVersion`
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`
    pub resource_version_match: Option<String>,
    /// `labelSelector`
    pub label_selector: Option<String>,
    /// `fieldSelector`
    pub field_selector: Option<String>,
    /// `limit` (0 = none)
    pub limit: Option<usize>,
    /// `continue`
    pub continue_token: Option<String>,
    /// `timeoutSeconds`
    pub timeout_seconds: Option<u64>,
    /// `allowWatchBookmarks=true`
    pub allow_watch_bookmarks: bool,
    /// `sendInitialEvents`
    pub send_initial_events: Option<bool>,
}

pub(super) fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True" | "TRUE")
}

impl ListWatchQuery {
    /// Parses a URI query string (without `?`); unknown parameters are ignored.
    pub fn parse(query: Option<&str>) -> Result<ListWatchQuery, String> {
        let mut q = ListWatchQuery::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*k {
                "watch" => q.watch = truthy(&v),
                "resourceVersion" => q.resource_version = Some(v.into_owned()),
                "resourceVersionMatch" => q.resource_version_match = Some(v.into_owned()),
                "labelSelector" => q.label_selector = Some(v.into_owned()),
                "fieldSelector" => q.field_selector = Some(v.into_owned()),
                "limit" => {
                    let n: usize = v.parse().map_err(|_| format!("invalid limit {v:?}"))?;
                    q.limit = (n > 0).then_some(n);
                }
                "continue" => q.continue_token = Some(v.into_owned()).filter(|s| !s.is_empty()),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(
                        v.parse()
                            .map_err(|_| format!("invalid timeoutSeconds {v:?}"))?,
                    )
                }
                "allowWatchBookmarks" => q.allow_watch_bookmarks = truthy(&v),
                "sendInitialEvents" => q.send_initial_events = Some(truthy(&v)),
                _ => {}
            }
        }
        Ok(q)
    }

    pub(super) fn parsed_rv(&self) -> Result<Option<u64>, String> {
        match self.resource_version.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("invalid resource version {s:?}")),
        }
    }
}

/// Which objects a request sees.
#[derive(Clone, Debug, Default)]
pub(super) struct Filter {
    pub(super) namespace: Option<String>,
    pub(super) labels: LabelSelector,
    pub(super) fields: FieldSelector,
}

impl Filter {
    pub(super) fn new(namespace: Option<&str>, q: &ListWatchQuery) -> Result<Filter, String> {
        Ok(Filter {
            namespace: namespace.map(str::to_owned),
            labels: LabelSelector::parse(q.label_selector.as_deref().unwrap_or(""))
                .map_err(|e| e.to_string())?,
            fields: FieldSelector::parse(q.field_selector.as_deref().unwrap_or(""))
                .map_err(|e| e.to_string())?,
        })
    }

    pub(super) fn is_trivial(&self) -> bool {
        self.namespace.is_none() && self.labels.is_empty() && self.fields.is_empty()
    }

    /// The running digest sum of the objects of `snap` this filter sees
    /// (O(1) when it sees everything).
    pub(super) fn digest_sum(&self, snap: &Snapshot) -> u64 {
        if self.is_trivial() {
            return snap.digest_sum;
        }
        snap.iter()
            .filter(|o| self.matches(o))
            .fold(0u64, |sum, o| sum.wrapping_add(o.content_hash()))
    }

    /// The content digest ([`wire::digest`]) of the objects of `snap` this
    /// filter sees.
    pub(super) fn digest(&self, snap: &Snapshot) -> u64 {
        wire::digest::from_sum(self.digest_sum(snap))
    }

    /// Moves a digest sum of this filter's view across change `c`.
    pub(super) fn digest_step(&self, sum: u64, c: &Change) -> u64 {
        let mut sum = sum;
        if let Some(p) = &c.previous
            && self.matches(p)
        {
            sum = sum.wrapping_sub(p.content_hash());
        }
        if c.kind != EventType::Deleted && self.matches(&c.object) {
            sum = sum.wrapping_add(c.object.content_hash());
        }
        sum
    }

    pub(super) fn matches(&self, o: &StoredObject) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| ns == o.namespace())
            && self.fields.matches(o.namespace(), o.name())
            && self.labels.matches(o.labels())
    }

    /// The line this watcher sends for `c`, if any: an object that stops
    /// matching is sent as DELETED, one that starts matching as ADDED.
    pub(super) fn line(&self, c: &Change) -> Option<Bytes> {
        if self.is_trivial() {
            return Some(c.line.clone());
        }
        let now = self.matches(&c.object);
        match c.kind {
            EventType::Added | EventType::Deleted => now.then(|| c.line.clone()),
            EventType::Modified => {
                let before = c.previous.as_deref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => Some(c.line.clone()),
                    (false, true) => Some(c.object.added_line()),
                    (true, false) => Some(c.object.deleted_line()),
                    (false, false) => None,
                }
            }
        }
    }
}

pub(super) fn encode_continue(rv: u64, key: &ObjectKey) -> String {
    let raw = format!("{rv}/{}/{}", key.0, key.1);
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn decode_continue(token: &str) -> Option<(u64, ObjectKey)> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let mut parts = raw.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    let ns = parts.next()?.to_owned();
    let name = parts.next()?.to_owned();
    Some((rv, (ns, name)))
}
