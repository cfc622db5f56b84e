//! Kubernetes `Status` objects: the body of every error response.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::body::Body;

/// The machine-readable `reason` of a failed request, with its HTTP code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// 400
    BadRequest,
    /// 401
    Unauthorized,
    /// 403
    Forbidden,
    /// 404
    NotFound,
    /// 405
    MethodNotAllowed,
    /// 409 on create of an existing object
    AlreadyExists,
    /// 409 on a stale `metadata.resourceVersion`
    Conflict,
    /// 410: a resourceVersion or continue token older than the kept history
    Expired,
    /// 415
    UnsupportedMediaType,
    /// 422
    Invalid,
    /// 429
    TooManyRequests,
    /// 500
    InternalError,
    /// 504, e.g. "Too large resource version"
    Timeout,
    /// 503
    ServiceUnavailable,
}

impl Reason {
    /// The `reason` string of the Status object.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Expired => "Expired",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::Invalid => "Invalid",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
            Reason::Timeout => "Timeout",
            Reason::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The HTTP status code that goes with this reason.
    pub fn code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Expired => 410,
            Reason::UnsupportedMediaType => 415,
            Reason::Invalid => 422,
            Reason::TooManyRequests => 429,
            Reason::InternalError => 500,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
        }
    }

    /// The reason the API server uses for an HTTP code (for injected failures).
    pub fn from_code(code: u16) -> Reason {
        match code {
            400 => Reason::BadRequest,
            401 => Reason::Unauthorized,
            403 => Reason::Forbidden,
            404 => Reason::NotFound,
            405 => Reason::MethodNotAllowed,
            409 => Reason::Conflict,
            410 => Reason::Expired,
            415 => Reason::UnsupportedMediaType,
            422 => Reason::Invalid,
            429 => Reason::TooManyRequests,
            503 => Reason::ServiceUnavailable,
            504 => Reason::Timeout,
            _ => Reason::InternalError,
        }
    }
}

/// Encodes a failure [`wire::Status`] object:
/// `{"apiVersion":"v1","code":N,"kind":"Status","message":..,"metadata":{},"reason":..,"status":"Failure"}`.
///
/// ```
/// let s = listwatch::status_json(listwatch::Reason::NotFound, "pods \"x\" not found");
/// let v: serde_json::Value = serde_json::from_slice(&s).unwrap();
/// assert_eq!(v["code"], 404);
/// ```
pub fn status_json(reason: Reason, message: &str) -> Bytes {
    status_json_with_code(reason.code(), reason, message)
}

/// Like [`status_json`] with an explicit code (e.g. 409 with reason `Conflict`).
pub fn status_json_with_code(code: u16, reason: Reason, message: &str) -> Bytes {
    let status = wire::Status::failure(code, reason.as_str(), message);
    Bytes::from(serde_json::to_vec(&status).unwrap_or_default())
}

/// A complete error response whose body is a `Status` object.
pub fn status_response(reason: Reason, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(reason.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        status_json(reason, message),
    )
}

/// A response with a JSON body and the given status.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
