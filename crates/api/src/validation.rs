//! Validation of custom resources: every problem, each with its field path.

use std::fmt;
use std::time::Duration;

use crate::{HTTPScaledObject, InterceptorRoute};

/// One problem with one field of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `namespace/name` of the object (or `<unnamed>`).
    pub object: String,
    /// Field path, e.g. `spec.scaleTargetRef` or `spec.rules[0].hosts[1]`.
    pub field: String,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

/// A parsed host pattern. Exact and wildcard hosts are lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Matches one host exactly (case-insensitive).
    Exact(String),
    /// `*.suffix`: matches any host ending in `.suffix`, at any depth; holds `suffix`.
    Wildcard(String),
    /// `*`, empty, or absent: matches every host.
    Any,
}

impl HostPattern {
    /// Parses a host pattern as written in a manifest.
    pub fn parse(s: &str) -> Result<HostPattern, String> {
        // Placeholder until the validation rules land: accepts everything.
        let lower = s.to_ascii_lowercase();
        Ok(if lower.is_empty() || lower == "*" {
            HostPattern::Any
        } else if let Some(rest) = lower.strip_prefix("*.") {
            HostPattern::Wildcard(rest.to_string())
        } else {
            HostPattern::Exact(lower)
        })
    }
}

/// Parses a Go duration (`300ms`, `1.5s`, `1m30s`, `2h`, `0s`, `0`).
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let _ = s;
    Err("not implemented yet".to_string())
}

/// Every problem with an `HTTPScaledObject`; empty when it is valid.
pub fn validate_http_scaled_object(obj: &HTTPScaledObject) -> Vec<FieldError> {
    let _ = obj;
    Vec::new()
}

/// Every problem with an `InterceptorRoute`; empty when it is valid.
pub fn validate_interceptor_route(obj: &InterceptorRoute) -> Vec<FieldError> {
    let _ = obj;
    Vec::new()
}
