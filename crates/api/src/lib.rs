//! Kubernetes API types of the KEDA HTTP Add-on.
//!
//! Data enters as JSON or YAML (from the API server, a cache, or a routes
//! directory) and leaves as typed Rust values: [`HTTPScaledObject`]
//! (`http.keda.sh/v1alpha1`), [`InterceptorRoute`] (`http.keda.sh/v1beta1`)
//! and the subset of KEDA's [`ScaledObject`] (`keda.sh/v1alpha1`) that the
//! operator writes.
//!
//! - [`parse_object`] (and [`parse_http_scaled_object`],
//!   [`parse_interceptor_route`]) turns a `serde_json::Value` into a typed
//!   object, or a [`FieldError`] naming the object and the field.
//! - [`validate_http_scaled_object`] and [`validate_interceptor_route`]
//!   return every semantic problem of a typed object, each a [`FieldError`];
//!   [`validate_conditions`] does the same for the conditions of a status.
//! - [`HostPattern::parse`] and [`parse_go_duration`] parse the two small
//!   languages inside the specs.
//! - [`crds`] / [`crds_yaml`] produce the CustomResourceDefinitions.
//! - [`yaml`] reads and writes YAML (the one place that does).

pub mod common;
pub mod crd;
pub mod httpscaledobject;
pub mod interceptorroute;
pub mod parse;
pub mod scaledobject;
mod schema;
pub mod validation;
pub mod yaml;

pub use common::*;
pub use crd::{crds, crds_yaml};
pub use httpscaledobject::*;
pub use interceptorroute::*;
pub use parse::{
    HeadMeta, ObjectHead, parse_http_scaled_object, parse_interceptor_route, parse_object,
    parse_object_json, parse_object_json_unchecked, parse_object_str, yaml_documents,
};
pub use scaledobject::*;
pub use validation::{
    FieldError, HostPattern, object_ref, parse_go_duration, validate_conditions,
    validate_http_scaled_object, validate_interceptor_route,
};
