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
/// ```
/// let mut buf = [0u8; routing::MAX_HOST_LEN];
/// assert_eq!(routing::normalize_host("Example.COM.:8080", &mut buf), Some("example.com"));
/// assert_eq!(routing::normalize_host("[::1]:80", &mut buf), Some("::1"));
/// ```
pub fn normalize_host<'a>(host: &'a str, buf: &'a mut [u8; MAX_HOST_LEN]) -> Option<&'a str> {
    // ASCII lower-casing of valid UTF-8 is valid UTF-8, so this never fails.
    normalize_host_bytes(host.as_bytes(), buf).and_then(|h| std::str::from_utf8(h.bytes).ok())
}

/// A normalised host and its number of dots (for wildcard probing).
pub(crate) struct NormalizedHost<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) dots: usize,
}

/// [`normalize_host`] on bytes, in one pass over the host.
pub(crate) fn normalize_host_bytes<'a>(
    host: &'a [u8],
    buf: &'a mut [u8; MAX_HOST_LEN],
) -> Option<NormalizedHost<'a>> {
    let mut h = host;
    if let [b'[', rest @ ..] = h {
        h = match rest.iter().position(|&b| b == b']') {
            Some(i) => &rest[..i],
            None => rest,
        };
    }
    // One pass: colons (a single one starts the port; more is a bare IPv6
    // address, kept whole), dots and upper-case letters.
    let (mut colons, mut last_colon, mut dots_before_colon) = (0usize, 0usize, 0usize);
    let (mut dots, mut upper) = (0usize, false);
    for (i, &b) in h.iter().enumerate() {
        if b == b':' {
            colons += 1;
            last_colon = i;
            dots_before_colon = dots;
        }
        dots += usize::from(b == b'.');
        upper |= b.is_ascii_uppercase();
    }
    if colons == 1 {
        h = &h[..last_colon];
        dots = dots_before_colon;
    }
    if let [rest @ .., b'.'] = h {
        h = rest;
        dots -= 1;
    }
    if h.len() > MAX_HOST_LEN {
        return None;
    }
    if !upper {
        return Some(NormalizedHost { bytes: h, dots });
    }
    let out = &mut buf[..h.len()];
    out.copy_from_slice(h);
    out.make_ascii_lowercase();
    Some(NormalizedHost { bytes: out, dots })
}

/// The path without its query string.
pub(crate) fn strip_query(path: &str) -> &str {
    match path.find('?') {
        Some(i) => &path[..i],
        None => path,
    }
}
