//! Checks of the small syntaxes inside a manifest: Kubernetes names, URL
//! paths, HTTP header names and values, condition types and reasons. Each
//! returns a one-line reason.

use crate::schema::{CONDITION_REASON_MAX, CONDITION_TYPE_MAX};

/// A DNS-1035 label, the syntax of a Service name: at most 63 characters,
/// lower-case letters, digits and `-`, starting with a letter and ending with
/// a letter or digit.
pub fn dns1035_label(s: &str) -> Result<(), String> {
    dns_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{s:?} must start with a lower-case letter"));
    }
    Ok(())
}

/// A DNS-1123 label, the syntax of a Service port name: at most 63
/// characters, lower-case letters, digits and `-`, starting and ending with a
/// letter or digit.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    dns_label(s)
}

/// A DNS-1123 subdomain, the syntax of most object names: at most 253
/// characters, dot-separated DNS-1123 labels.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.len() > 253 {
        return Err(format!("{s:?} is longer than 253 characters"));
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err(format!("{s:?} has an empty part between dots"));
        }
        dns_label(label).map_err(|e| format!("{s:?}: {e}"))?;
    }
    Ok(())
}

fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.len() > 63 {
        return Err(format!("{s:?} is longer than 63 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{s:?} contains {c:?}; only lower-case letters, digits and '-' are allowed"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!("{s:?} must not start or end with '-'"));
    }
    Ok(())
}

/// A ConfigMap data key: at most 253 characters of letters, digits, `-`,
/// `_` and `.`, and not `.` or `..`.
pub fn config_map_key(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.len() > 253 {
        return Err(format!("{s:?} is longer than 253 characters"));
    }
    if s == "." || s == ".." {
        return Err(format!("{s:?} is not a valid key"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "{s:?} contains {c:?}; only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    Ok(())
}

/// A path prefix: no query, fragment, whitespace or control character (a
/// request path never contains them, so such a prefix could never match). A
/// missing leading `/` is implied (`api` is `/api`), as upstream: routing
/// trims every leading and trailing `/` before matching.
pub fn path_prefix(s: &str) -> Result<(), String> {
    if let Some(c) = s
        .chars()
        .find(|c| matches!(c, '?' | '#') || c.is_whitespace() || c.is_control())
    {
        let what = match c {
            '?' => "a query ('?')".to_string(),
            '#' => "a fragment ('#')".to_string(),
            c if c.is_whitespace() => format!("whitespace ({c:?})"),
            c => format!("a control character ({c:?})"),
        };
        return Err(format!(
            "path {s:?} must not contain {what}; a path prefix matches the path only"
        ));
    }
    Ok(())
}

/// An HTTP field name: a non-empty RFC 9110 token.
pub fn header_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("header name must not be empty".to_string());
    }
    if let Some(c) = s.chars().find(|c| !is_tchar(*c)) {
        return Err(format!(
            "header name {s:?} contains {c:?}; a header name is a token of letters, digits and !#$%&'*+-.^_`|~"
        ));
    }
    Ok(())
}

/// An HTTP field value: no control characters other than horizontal tab.
pub fn header_value(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(format!(
            "header value {s:?} contains the control character {c:?}"
        ));
    }
    Ok(())
}

/// The `type` of a `metav1.Condition`: `CamelCase` or
/// `example.com/CamelCase`, at most 316 characters. The name is letters,
/// digits, `-`, `_` and `.`, starting and ending with a letter or digit; the
/// optional prefix is dot-separated lower-case DNS labels.
pub fn condition_type(s: &str) -> Result<(), String> {
    if s.chars().count() > CONDITION_TYPE_MAX {
        return Err(format!(
            "{s:?} is longer than {CONDITION_TYPE_MAX} characters"
        ));
    }
    let (prefix, name) = match s.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, s),
    };
    if let Some(prefix) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !prefix.split('.').all(label_ok) {
            return Err(format!(
                "prefix {prefix:?} of {s:?} is not dot-separated lower-case DNS labels"
            ));
        }
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let inner_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !(edge_ok(name.chars().next()) && edge_ok(name.chars().last()) && name.chars().all(inner_ok))
    {
        return Err(format!(
            "{s:?} is not a condition type: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, after an optional \"example.com/\" prefix"
        ));
    }
    Ok(())
}

/// The `reason` of a `metav1.Condition`: a CamelCase identifier of 1 to 1024
/// characters; a letter, then letters, digits, `_`, `,` and `:`, not ending
/// with `,` or `:`.
pub fn condition_reason(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".to_string());
    }
    if s.chars().count() > CONDITION_REASON_MAX {
        return Err(format!(
            "{s:?} is longer than {CONDITION_REASON_MAX} characters"
        ));
    }
    let starts_ok = s.starts_with(|c: char| c.is_ascii_alphabetic());
    let ends_ok = !s.ends_with([',', ':']);
    let chars_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ',' | ':'));
    if !(starts_ok && ends_ok && chars_ok) {
        return Err(format!(
            "{s:?} is not a condition reason: a letter, then letters, digits, '_', ',' and ':', not ending with ',' or ':'"
        ));
    }
    Ok(())
}

/// `tchar` of RFC 9110, section 5.6.2.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '\''
                | '*'
                | '+'
                | '-'
                | '.'
                | '^'
                | '_'
                | '`'
                | '|'
                | '~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `check` accepts every `ok` and rejects every `bad`.
    fn accepts(check: fn(&str) -> Result<(), String>, ok: &[&str], bad: &[&str]) {
        for s in ok {
            assert_eq!(check(s), Ok(()), "{s:?}");
        }
        for s in bad {
            assert!(check(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn service_names() {
        accepts(
            dns1035_label,
            &["a", "web", "my-svc", "s3", &"a".repeat(63)],
            &[
                "",
                "3web",
                "-web",
                "web-",
                "Web",
                "my_svc",
                "my.svc",
                &"a".repeat(64),
            ],
        );
        assert_eq!(dns1123_label("8080-http"), Ok(()));
        assert!(dns1123_label("HTTP").is_err());
    }

    #[test]
    fn subdomains() {
        accepts(
            dns1123_subdomain,
            &["web", "web.v1", "0abc", "a-b.c-d"],
            &["", "a..b", ".a", "a.", "A", "a_b", &"a".repeat(254)],
        );
    }

    #[test]
    fn condition_types_and_reasons() {
        accepts(
            condition_type,
            &[
                "Ready",
                "a",
                "http.keda.sh/Ready",
                "x-y.z/A_b.c-D",
                "9",
                &"R".repeat(316),
            ],
            &[
                "",
                "-Ready",
                "Ready.",
                "Re ady",
                "/Ready",
                "Example.com/Ready",
                "a..b/Ready",
                "a/b/Ready",
                "a/",
                &"R".repeat(317),
            ],
        );
        accepts(
            condition_reason,
            &[
                "Reconciled",
                "a",
                "Create_Error",
                "A,b:c_",
                &"R".repeat(1024),
            ],
            &[
                "",
                "1abc",
                "_abc",
                "abc,",
                "abc:",
                "a-b",
                "a b",
                &"R".repeat(1025),
            ],
        );
    }

    #[test]
    fn config_map_keys() {
        accepts(
            config_map_key,
            &["index.html", "a_b-C.d", ".hidden"],
            &["", ".", "..", "a/b", "a b"],
        );
    }

    #[test]
    fn paths() {
        // Without a leading '/' (upstream trims leading slashes): "api" is "/api".
        for ok in [
            "/",
            "/api",
            "/api/v1/",
            "/a%20b",
            "/caf\u{e9}",
            "",
            "api",
            "//a//",
        ] {
            assert_eq!(path_prefix(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("/a?b=1", "a query"),
            ("/a#top", "a fragment"),
            ("/a b", "whitespace"),
            ("/a\tb", "whitespace"),
            ("/a\u{0}b", "control character"),
        ] {
            let err = path_prefix(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn headers() {
        accepts(
            header_name,
            &["X-Tenant", "x_y", "a!#$%&'*+-.^_`|~9"],
            &[
                "",
                "X Tenant",
                "X:Tenant",
                ":authority",
                "X-\u{e9}",
                "a\"b",
                "a(b)",
            ],
        );
        accepts(
            header_value,
            &["", "v", "a b", "a\tb", "caf\u{e9}", "\"quoted\""],
            &["a\nb", "a\rb", "a\u{0}", "a\u{7f}"],
        );
    }
}
