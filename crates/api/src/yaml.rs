//! YAML in and out, the one place that does it (the routes directory, the
//! CRD output, test manifests, the test API server's YAML bodies).
//!
//! Built on `serde-saphyr`, the maintained YAML library that kube-client
//! itself uses (`serde_yaml` is deprecated and unmaintained). Errors carry
//! the line they point at, so callers can name file and line.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A YAML document that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct YamlError {
    /// 1-based line of the problem in the text given, when known.
    pub line: Option<usize>,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for YamlError {}

impl From<serde_saphyr::Error> for YamlError {
    fn from(e: serde_saphyr::Error) -> Self {
        let line = e
            .location()
            .and_then(|l| usize::try_from(l.line()).ok())
            .filter(|&l| l > 0);
        // The plain message, without the rendered source snippet, on one line.
        let message = e.without_snippet().to_string();
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        YamlError { line, message }
    }
}

/// Every non-empty document of a YAML (or JSON) text, as JSON values.
/// Empty documents (a leading `---`, a document of comments only) are skipped.
///
/// ```
/// let docs = api::yaml::documents("---\na: 1\n---\n# nothing\n---\nb: 2\n").unwrap();
/// assert_eq!(docs, [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]);
/// let err = api::yaml::documents("a: 1\nb: [\n").unwrap_err();
/// assert!(err.line.is_some(), "{err}");
/// ```
pub fn documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)?;
    Ok(docs.into_iter().filter(|v| !v.is_null()).collect())
}

/// One YAML (or JSON) document into `T`.
///
/// ```
/// let v: serde_json::Value = api::yaml::from_str("a: [1, 2]").unwrap();
/// assert_eq!(v, serde_json::json!({"a": [1, 2]}));
/// ```
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    Ok(serde_saphyr::from_str(text)?)
}

/// `value` as a YAML document.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, YamlError> {
    serde_saphyr::to_string(value).map_err(|e| YamlError {
        line: None,
        message: e.to_string(),
    })
}
