//! The request side of a lookup: host and path normalisation (allocation-free)
//! and access to the request's headers.

use http::{HeaderMap, HeaderName};

use crate::route::HeaderFilter;

/// Hosts longer than this (after the port is stripped) match catch-all routes
/// only: DNS names are at most 253 bytes, and the lower-casing buffer lives on
/// the stack.
pub const MAX_HOST_LEN: usize = 255;

/// The headers of a request, as the matcher needs them.
///
/// Implemented for [`http::HeaderMap`], for slices, arrays and `Vec`s of
/// `(name, value)` pairs (names compared case-insensitively), and for
/// [`NoHeaders`].
///
/// ```
/// use routing::RequestHeaders;
/// let name = http::HeaderName::from_static("x-tenant");
/// let pairs = [("X-Tenant", "a"), ("x-tenant", "b")];
/// assert_eq!(pairs.values(&name).count(), 2);
/// ```
pub trait RequestHeaders {
    /// Every value the request carries for `name` (which is lower-case).
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a;
}

impl<T: RequestHeaders + ?Sized> RequestHeaders for &T {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        (**self).values(name)
    }
}

impl<V> RequestHeaders for HeaderMap<V>
where
    V: AsRef<[u8]>,
{
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name).iter().map(AsRef::as_ref)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> RequestHeaders for [(K, V)] {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(k, _)| k.as_ref().eq_ignore_ascii_case(name.as_str()))
            .map(|(_, v)| v.as_ref())
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>, const N: usize> RequestHeaders for [(K, V); N] {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.as_slice().values(name)
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> RequestHeaders for Vec<(K, V)> {
    fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.as_slice().values(name)
    }
}

/// A request without headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHeaders;

impl RequestHeaders for NoHeaders {
    fn values<'a>(&'a self, _name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        std::iter::empty()
    }
}

impl HeaderFilter {
    /// Whether the request satisfies this filter: the header is present and,
    /// when a value is set, one of the request's values equals it exactly.
    pub fn matches<H: RequestHeaders + ?Sized>(&self, headers: &H) -> bool {
        match &self.value {
            None => headers.values(&self.name).next().is_some(),
            Some(want) => headers
                .values(&self.name)
                .any(|have| have == want.as_bytes()),
        }
    }
}

/// Normalises a request host for matching, without allocating: strips the port
/// (`host:8080`, `[::1]:8080`, IPv6 brackets), one trailing dot, and lower-cases
/// into `buf` when needed. `None` when the host is longer than [`MAX_HOST_LEN`].
///
/// Hand-written rather than built on `url`/`http` parsing on purpose: it runs
/// once per request on the lookup path, which must not allocate
/// (`tests/no_alloc.rs`), and in one vectorisable pass.
///
/// ```
/// let mut buf = [0u8; routing::MAX_HOST_LEN];
/// assert_eq!(routing::normalize_host("Example.COM.:8080", &mut buf), Some("example.com"));
/// assert_eq!(routing::normalize_host("[::1]:80", &mut buf), Some("::1"));
/// ```
pub fn normalize_host<'a>(host: &'a str, buf: &'a mut [u8; MAX_HOST_LEN]) -> Option<&'a str> {
    // ASCII lower-casing of valid UTF-8 is valid UTF-8, so this never fails.
    normalize_host_bytes(host.as_bytes(), buf).and_then(|h| std::str::from_utf8(h).ok())
}

/// [`normalize_host`] on bytes: the result always lives in `buf`.
pub(crate) fn normalize_host_bytes<'a>(
    host: &[u8],
    buf: &'a mut [u8; MAX_HOST_LEN],
) -> Option<&'a [u8]> {
    let mut h = host;
    let bracketed = h.first() == Some(&b'[');
    if bracketed {
        h = &h[1..];
        if let Some(i) = h.iter().position(|&b| b == b']') {
            h = &h[..i];
        }
    }
    if h.len() > MAX_HOST_LEN {
        // Rare: only a port can bring a long host back under the limit.
        h = strip_port(h);
        if h.len() > MAX_HOST_LEN {
            return None;
        }
    }
    // Copy, lower-case and look for a colon in one vectorisable pass.
    let out = &mut buf[..h.len()];
    let mut colon = false;
    for (o, &b) in out.iter_mut().zip(h) {
        *o = b.to_ascii_lowercase();
        colon |= b == b':';
    }
    let mut out: &[u8] = out;
    if colon && !bracketed {
        out = strip_port(out);
    }
    if let [rest @ .., b'.'] = out {
        out = rest;
    }
    Some(out)
}

/// `host:port` -> `host`; a bare IPv6 address (several colons) is kept whole.
fn strip_port(h: &[u8]) -> &[u8] {
    match h.iter().rposition(|&b| b == b':') {
        Some(i) if !h[..i].contains(&b':') => &h[..i],
        _ => h,
    }
}

/// Normalises a request path for matching, without allocating: the query
/// string is dropped and leading slashes collapse to one (upstream trims
/// every leading `/`, so `///x` matches `/x`). Trailing slashes need no
/// trimming: prefixes match on whole segments, so `/x//` matches `/x`.
/// A path without a leading `/` (`*`, or an empty one) is returned as is
/// and matches only `/`.
///
/// ```
/// assert_eq!(routing::normalize_path("///api/x?y=/z"), "/api/x");
/// assert_eq!(routing::normalize_path("/"), "/");
/// assert_eq!(routing::normalize_path("*"), "*");
/// ```
pub fn normalize_path(path: &str) -> &str {
    let path = match path.find('?') {
        Some(i) => &path[..i],
        None => path,
    };
    let rest = path.trim_start_matches('/');
    if rest.len() < path.len() {
        &path[path.len() - rest.len() - 1..]
    } else {
        path
    }
}
