//! Schema adjustments that the derive attributes cannot express, applied
//! with `#[schemars(transform = ...)]` on the types and fields they concern.
//!
//! Each one brings a generated schema in line with upstream's CRD where a
//! Rust type is shared or comes from `k8s-openapi`.

use schemars::Schema;
use serde_json::{Map, Value, json};

/// The properties map of an object schema, created when missing.
fn properties(node: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let properties = node
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    if !properties.is_object() {
        *properties = Value::Object(Map::new());
    }
    properties
        .as_object_mut()
        .expect("properties was just made an object")
}

/// Adds `field` to the `required` list of an object schema.
fn require(node: &mut Map<String, Value>, field: &str) {
    let required = node
        .entry("required")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = required
        && !list.iter().any(|v| v == field)
    {
        list.push(Value::from(field));
    }
}

/// Drops the `default` schemars derives from `#[serde(default)]`: upstream
/// has none there, and a CRD default is written into every stored object.
pub(crate) fn no_default(schema: &mut Schema) {
    schema.remove("default");
}

/// `StaticRoute.rules` is required upstream. The Rust field keeps
/// `#[serde(default)]` so that the validator, not the parser, reports a
/// missing list by its field path.
pub(crate) fn static_route_rules_required(schema: &mut Schema) {
    require(schema.ensure_object(), "rules");
}

/// `scalingMetric` of an `InterceptorRoute`: the metric types are shared
/// with `HTTPScaledObject`, whose `targetValue` defaults to 100, but on an
/// `InterceptorRoute` upstream requires `targetValue` (at least 1) and has
/// no default for it.
pub(crate) fn route_scaling_metric(schema: &mut Schema) {
    let node = schema.ensure_object();
    for metric in ["concurrency", "requestRate"] {
        let Some(Value::Object(metric)) = properties(node).get_mut(metric) else {
            continue;
        };
        if let Some(Value::Object(target)) = properties(metric).get_mut("targetValue") {
            target.remove("default");
            target.insert("minimum".into(), json!(1));
        }
        require(metric, "targetValue");
    }
}

/// `status.conditions`: the validations Kubernetes declares on
/// `metav1.Condition`, which `k8s-openapi`'s schema leaves out and
/// upstream's CRD (generated from the Go markers) carries.
pub(crate) fn condition_list(schema: &mut Schema) {
    let Some(Value::Object(item)) = schema.get_mut("items") else {
        return;
    };
    let fields = properties(item);
    let mut constrain = |name: &str, extra: Value| {
        if let (Some(Value::Object(field)), Value::Object(extra)) = (fields.get_mut(name), extra) {
            field.extend(extra);
        }
    };
    constrain(
        "type",
        json!({"maxLength": CONDITION_TYPE_MAX, "pattern": CONDITION_TYPE_PATTERN}),
    );
    constrain("status", json!({"enum": CONDITION_STATUSES}));
    constrain("observedGeneration", json!({"minimum": 0}));
    constrain(
        "reason",
        json!({"minLength": 1, "maxLength": CONDITION_REASON_MAX, "pattern": CONDITION_REASON_PATTERN}),
    );
    constrain("message", json!({"maxLength": CONDITION_MESSAGE_MAX}));
    for field in ["lastTransitionTime", "message", "reason", "status", "type"] {
        require(item, field);
    }
}

/// Longest `type` of a condition.
pub(crate) const CONDITION_TYPE_MAX: usize = 316;
/// `type` of a condition: `CamelCase` or `example.com/CamelCase`.
pub(crate) const CONDITION_TYPE_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$";
/// The values of a condition's `status`.
pub(crate) const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];
/// Longest `reason` of a condition.
pub(crate) const CONDITION_REASON_MAX: usize = 1024;
/// `reason` of a condition: a CamelCase identifier.
pub(crate) const CONDITION_REASON_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";
/// Longest `message` of a condition.
pub(crate) const CONDITION_MESSAGE_MAX: usize = 32768;
/// Longest inline `body` of a static response.
pub(crate) const STATIC_BODY_MAX: usize = 32768;
