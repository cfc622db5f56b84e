//! Kubernetes API types of the KEDA HTTP Add-on.
//!
//! Data enters as JSON or YAML (from the API server, a cache, or a routes
//! directory) and leaves as typed Rust values: [`HTTPScaledObject`]
//! (`http.keda.sh/v1alpha1`), [`InterceptorRoute`] (`http.keda.sh/v1beta1`)
//! and the subset of KEDA's [`ScaledObject`] (`keda.sh/v1alpha1`) that the
//! operator writes.

pub mod common;
pub mod httpscaledobject;
pub mod interceptorroute;
pub mod scaledobject;

pub use common::*;
pub use httpscaledobject::*;
pub use interceptorroute::*;
pub use scaledobject::*;
pub mod validation;
pub use validation::{
    FieldError, HostPattern, parse_go_duration, validate_http_scaled_object,
    validate_interceptor_route,
};
