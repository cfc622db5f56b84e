//! One collection on a server: its lists and its watches.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::error::Error;
use crate::watch::{WatchStream, stall_bound};

/// A collection on a Kubernetes-compatible server (the API server, a
/// cache, testkit): a list path such as
/// `/apis/http.keda.sh/v1alpha1/namespaces/apps/httpscaledobjects`, with an
/// optional label selector, read through a `kube::Client` (kube's own, or
/// the HTTP/2 one of [`crate::client`]). Cloning is cheap.
#[derive(Clone)]
pub struct Collection {
    client: kube::Client,
    path: String,
    /// `labelSelector=<encoded value>`.
    selector: Option<String>,
}

impl fmt::Debug for Collection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collection")
            .field("path", &self.path)
            .field("selector", &self.selector)
            .finish()
    }
}

/// How to list (see [`Collection::list`]).
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    /// Read from the server's cache (`resourceVersion=0`: cheap, possibly
    /// slightly old); otherwise a consistent read of the latest state.
    pub from_cache: bool,
    /// Page size (`limit`) of a consistent list and of every continuation
    /// page; `None`: whatever the server sends (continue tokens are still
    /// followed).
    pub page_size: Option<usize>,
    /// Answer [`ListOutcome::Unchanged`] (`304`) when this still holds.
    pub if_none_match: Option<IfNoneMatch>,
    /// Ask for each object reduced to its metadata
    /// ([`wire::METADATA_LIST_ACCEPT`]); a server that cannot do that sends
    /// full objects ([`List::metadata_only`] says which came).
    pub metadata_only: bool,
}

/// The condition of a conditional list (`If-None-Match`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfNoneMatch {
    /// The `ETag` of an earlier list, as the server sent it.
    ETag(String),
    /// The content digest of what the client holds ([`wire::digest`]): a
    /// `listwatch` server answers 304 when its list has the same digest;
    /// other servers ignore it.
    Digest(u64),
}

impl IfNoneMatch {
    fn header_value(&self) -> String {
        match self {
            IfNoneMatch::ETag(e) => e.clone(),
            IfNoneMatch::Digest(d) => wire::digest::entity_tag(*d),
        }
    }
}

/// What a list returned.
#[derive(Debug)]
pub enum ListOutcome {
    /// `304 Not Modified`: the condition still holds.
    Unchanged,
    /// The complete list (all pages).
    Listed(List),
}

/// A complete list.
#[derive(Debug)]
pub struct List {
    /// The objects' JSON text, each a slice of its page's body (no copy).
    pub items: Vec<Bytes>,
    /// The list's resourceVersion (of the first page that has one).
    pub resource_version: Option<String>,
    /// The first page's `ETag`, for a later [`IfNoneMatch::ETag`].
    pub etag: Option<String>,
    /// The items are `PartialObjectMetadata` (only their `metadata`), not
    /// full objects.
    pub metadata_only: bool,
}

/// Everything but RFC 3986's unreserved characters is encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` encoded for a query-string value (`app=web,tier!=db` ->
/// `app%3Dweb%2Ctier%21%3Ddb`).
fn encode_query_value(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

impl Collection {
    /// The collection at `path` (no query string), read through `client`.
    pub fn new(client: kube::Client, path: impl Into<String>) -> Self {
        Collection {
            client,
            path: path.into(),
            selector: None,
        }
    }

    /// Only objects with these labels (`app=web,tier!=db`); `None` or an
    /// empty selector: all.
    pub fn with_label_selector(mut self, selector: Option<&str>) -> Self {
        self.selector = selector
            .filter(|s| !s.is_empty())
            .map(|s| format!("labelSelector={}", encode_query_value(s)));
        self
    }

    /// The list path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The path with `params` and the label selector as its query string.
    fn uri(&self, mut params: Vec<String>) -> String {
        params.extend(self.selector.iter().cloned());
        if params.is_empty() {
            return self.path.clone();
        }
        format!("{}?{}", self.path, params.join("&"))
    }

    /// The path of one object of the collection: `namespace` is ignored
    /// when the collection is already one namespace's.
    fn object_path(&self, namespace: &str, name: &str) -> String {
        let (prefix, plural) = self.path.rsplit_once('/').unwrap_or(("", &self.path));
        let name = encode_query_value(name);
        if prefix.rsplit('/').nth(1) == Some("namespaces") {
            format!("{}/{name}", self.path)
        } else if namespace.is_empty() {
            format!("{prefix}/{plural}/{name}")
        } else {
            let namespace = encode_query_value(namespace);
            format!("{prefix}/namespaces/{namespace}/{plural}/{name}")
        }
    }

    /// One object of the collection as JSON text, `None` when it does not
    /// exist (404).
    pub async fn get_object(&self, namespace: &str, name: &str) -> Result<Option<Bytes>, Error> {
        let resp = self
            .get(self.object_path(namespace, name), None, "application/json")
            .await?;
        let status = resp.status();
        let body = self.read_body(resp).await?;
        match status {
            s if s.is_success() => Ok(Some(body)),
            http::StatusCode::NOT_FOUND => Ok(None),
            s => Err(self.status_error(s, &body)),
        }
    }

    async fn get(
        &self,
        uri: String,
        if_none_match: Option<&IfNoneMatch>,
        accept: &'static str,
    ) -> Result<http::Response<kube::client::Body>, Error> {
        let mut req = http::Request::get(uri).header(http::header::ACCEPT, accept);
        if let Some(c) = if_none_match {
            req = req.header(http::header::IF_NONE_MATCH, c.header_value());
        }
        let req = req
            .body(kube::client::Body::empty())
            .map_err(|source| Error::Request {
                path: self.path.clone(),
                source,
            })?;
        self.client.send(req).await.map_err(|source| Error::Send {
            path: self.path.clone(),
            source,
        })
    }

    async fn read_body(&self, resp: http::Response<kube::client::Body>) -> Result<Bytes, Error> {
        Ok(resp
            .into_body()
            .collect()
            .await
            .map_err(|source| Error::Body {
                path: self.path.clone(),
                source,
            })?
            .to_bytes())
    }

    /// The error for a non-2xx answer other than 304.
    fn status_error(&self, status: http::StatusCode, body: &[u8]) -> Error {
        let path = self.path.clone();
        match status {
            http::StatusCode::NOT_FOUND => Error::NotFound { path },
            http::StatusCode::GONE => Error::Gone { path },
            status => Error::Status {
                path,
                status,
                message: String::from_utf8_lossy(body).trim().to_string(),
            },
        }
    }

    /// A complete list: every page, following continue tokens.
    /// `If-None-Match` goes with the first page only, and a `304` to it is
    /// [`ListOutcome::Unchanged`]; a `404` is [`Error::NotFound`], a `410`
    /// (an expired continue token) [`Error::Gone`].
    ///
    /// ```no_run
    /// # async fn demo(client: kube::Client) -> Result<(), kubewatch::Error> {
    /// use kubewatch::{Collection, IfNoneMatch, ListOutcome, ListParams};
    /// let routes = Collection::new(client, "/apis/http.keda.sh/v1alpha1/httpscaledobjects");
    /// let params = ListParams { from_cache: true, ..ListParams::default() };
    /// let ListOutcome::Listed(list) = routes.list(&params).await? else { unreachable!() };
    /// // Later: a 304 unless something changed.
    /// let again = ListParams {
    ///     if_none_match: list.etag.map(IfNoneMatch::ETag),
    ///     ..params
    /// };
    /// let _unchanged = matches!(routes.list(&again).await?, ListOutcome::Unchanged);
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, params: &ListParams) -> Result<ListOutcome, Error> {
        let mut items = Vec::new();
        let mut resource_version: Option<String> = None;
        let mut etag = None;
        let mut metadata_only = false;
        let mut continue_token: Option<String> = None;
        loop {
            let first = continue_token.is_none();
            let limit = params.page_size.map(|n| format!("limit={n}"));
            let query = match &continue_token {
                None if params.from_cache => vec!["resourceVersion=0".to_string()],
                None => limit.into_iter().collect(),
                Some(c) => limit
                    .into_iter()
                    .chain([format!("continue={}", encode_query_value(c))])
                    .collect(),
            };
            let uri = self.uri(query);
            let condition = if first {
                params.if_none_match.as_ref()
            } else {
                None
            };
            let accept = if params.metadata_only {
                wire::METADATA_LIST_ACCEPT
            } else {
                "application/json"
            };
            let resp = self.get(uri, condition, accept).await?;
            let status = resp.status();
            if status == http::StatusCode::NOT_MODIFIED {
                return Ok(ListOutcome::Unchanged);
            }
            if first {
                etag = resp
                    .headers()
                    .get(http::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            }
            let body = self.read_body(resp).await?;
            if !status.is_success() {
                return Err(self.status_error(status, &body));
            }
            let page: wire::ListBody<'_> =
                serde_json::from_slice(&body).map_err(|source| Error::Decode {
                    path: self.path.clone(),
                    source,
                })?;
            if resource_version.is_none() {
                resource_version = page.metadata.resource_version.filter(|r| !r.is_empty());
            }
            if first {
                metadata_only = page.kind.as_deref() == Some(wire::METADATA_LIST_KIND);
            }
            // Each item stays a slice of the body: the caller parses only
            // what it needs.
            let base = body.as_ptr() as usize;
            items.extend(page.items.iter().map(|item| {
                let start = item.get().as_ptr() as usize - base;
                body.slice(start..start + item.get().len())
            }));
            match page.metadata.continue_token.filter(|c| !c.is_empty()) {
                Some(c) => continue_token = Some(c),
                None => break,
            }
        }
        Ok(ListOutcome::Listed(List {
            items,
            resource_version,
            etag,
            metadata_only,
        }))
    }

    /// Starts a watch of the changes after `resource_version`, with
    /// bookmarks, ended by the server after `timeout` (`timeoutSeconds`);
    /// see [`WatchStream`]. A `410` answer is a stream whose only frame is
    /// [`crate::WatchFrame::Gone`]; no response headers within
    /// [`stall_bound`]`(timeout)` is [`Error::NoResponse`].
    pub async fn watch(
        &self,
        resource_version: &str,
        timeout: Duration,
    ) -> Result<WatchStream, Error> {
        let stall = stall_bound(timeout);
        let uri = self.uri(vec![
            "watch=1".to_string(),
            format!("resourceVersion={}", encode_query_value(resource_version)),
            "allowWatchBookmarks=true".to_string(),
            format!("timeoutSeconds={}", timeout.as_secs().max(1)),
        ]);
        let resp = tokio::time::timeout(stall, self.get(uri, None, "application/json"))
            .await
            .map_err(|_| Error::NoResponse {
                path: self.path.clone(),
                after: stall,
            })??;
        let status = resp.status();
        if status == http::StatusCode::GONE {
            return Ok(WatchStream::gone(self.path.clone()));
        }
        if !status.is_success() {
            let body = self.read_body(resp).await.unwrap_or_default();
            return Err(self.status_error(status, &body));
        }
        Ok(WatchStream::new(self.path.clone(), resp.into_body(), stall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_keep_only_unreserved_characters() {
        assert_eq!(
            encode_query_value("app=web,tier!=db"),
            "app%3Dweb%2Ctier%21%3Ddb"
        );
        assert_eq!(encode_query_value("a-b_c.d~e9"), "a-b_c.d~e9");
        assert_eq!(encode_query_value("é"), "%C3%A9");
    }

    #[test]
    fn conditions_are_entity_tags() {
        assert_eq!(IfNoneMatch::ETag("\"12\"".into()).header_value(), "\"12\"");
        assert_eq!(
            IfNoneMatch::Digest(42).header_value(),
            wire::digest::entity_tag(42)
        );
    }
}
