//! Kubernetes `Status` objects.

use serde::{Deserialize, Serialize};

/// A Kubernetes `Status`: the body of an error response, and the object of
/// a watch stream's ERROR line (`code` 410, reason `Expired`: the
/// resourceVersion left the server's history; relist).
///
/// Every field defaults when absent, so any server's Status decodes.
///
/// ```
/// let s = wire::Status::failure(410, "Expired", "too old resource version: 3 (7)");
/// let json = serde_json::to_string(&s).unwrap();
/// let back: wire::Status = serde_json::from_str(&json).unwrap();
/// assert!(back.is_gone());
/// ```
// Fields in alphabetical order: the order our servers have always written
// them in (a `serde_json::Map` without `preserve_order`), so responses stay
// byte-for-byte the same.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// The HTTP status code.
    #[serde(default)]
    pub code: u16,
    /// `Status`.
    #[serde(default)]
    pub kind: String,
    /// For a human.
    #[serde(default)]
    pub message: String,
    /// List metadata (empty).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Machine-readable: `NotFound`, `Conflict`, `Expired`, ...
    #[serde(default)]
    pub reason: String,
    /// `Failure` (or `Success`).
    #[serde(default)]
    pub status: String,
}

impl Status {
    /// A failure Status with `code`, `reason` and `message`.
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
        Status {
            api_version: "v1".to_string(),
            code,
            kind: "Status".to_string(),
            message: message.into(),
            metadata: serde_json::Map::new(),
            reason: reason.to_string(),
            status: "Failure".to_string(),
        }
    }

    /// 410 Gone (reason `Expired`): the client must relist.
    pub fn is_gone(&self) -> bool {
        self.code == 410
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_kube_apiserver_does() {
        let s = Status::failure(404, "NotFound", "pods \"x\" not found");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"apiVersion":"v1","code":404,"kind":"Status","message":"pods \"x\" not found","metadata":{},"reason":"NotFound","status":"Failure"}"#
        );
        let partial: Status = serde_json::from_str(r#"{"code":410}"#).unwrap();
        assert!(partial.is_gone());
        assert_eq!(partial.message, "");
    }
}
