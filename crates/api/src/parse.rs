//! Turning JSON or YAML into typed custom resources, with errors that name
//! the object and the field.
//!
//! The sync loop hands over `serde_json::Value`s (from a list, a watch event
//! or a routes directory); [`parse_object`] checks `apiVersion` and `kind`
//! and deserializes, reporting the path of the first field that does not fit
//! (`spec.scaleTargetRef.port: invalid type: string "x", expected i32`).

use std::borrow::Cow;

use kube::Resource;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::validation::{FieldError, object_ref_parts};
use crate::{HTTPScaledObject, InterceptorRoute};

/// `object` of a [`FieldError`] about input that is not an object at all.
pub const UNKNOWN_OBJECT: &str = "<unknown>";

/// Parses one object of kind `K` from a JSON value.
///
/// `apiVersion` and `kind` may be absent (items of a list can omit them);
/// when present they must be `K`'s. Unknown fields are ignored, as the API
/// server would have pruned them.
///
/// ```
/// use api::{HTTPScaledObject, parse_object};
///
/// let value = serde_json::json!({
///     "apiVersion": "http.keda.sh/v1alpha1",
///     "kind": "HTTPScaledObject",
///     "metadata": {"name": "web", "namespace": "shop"},
///     "spec": {"scaleTargetRef": {"service": "web", "port": "x"}},
/// });
/// let err = parse_object::<HTTPScaledObject>(value).unwrap_err();
/// assert_eq!(err.to_string(), r#"shop/web: spec.scaleTargetRef.port: invalid type: string "x", expected i32"#);
/// ```
pub fn parse_object<K>(value: Value) -> Result<K, FieldError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let expected_kind = K::kind(&());
    let Value::Object(map) = &value else {
        return Err(FieldError {
            object: UNKNOWN_OBJECT.to_string(),
            field: ".".to_string(),
            message: format!(
                "expected an object of kind {expected_kind}, found {}",
                json_type(&value)
            ),
        });
    };
    let metadata = map.get("metadata");
    let text = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    let object = object_ref_parts(text("namespace"), text("name"));
    let error = |field: &str, message: String| FieldError {
        object: object.clone(),
        field: field.to_string(),
        message,
    };

    for (field, expected) in [
        ("apiVersion", K::api_version(&())),
        ("kind", expected_kind.clone()),
    ] {
        match map.get(field) {
            None => {}
            Some(Value::String(found)) if *found == expected => {}
            Some(Value::String(found)) => {
                return Err(error(
                    field,
                    format!("expected {expected:?}, found {found:?}"),
                ));
            }
            Some(other) => {
                return Err(error(
                    field,
                    format!(
                        "expected the string {expected:?}, found {}",
                        json_type(other)
                    ),
                ));
            }
        }
    }

    serde_path_to_error::deserialize(&value).map_err(|e| {
        let field = e.path().to_string();
        error(&field, e.into_inner().to_string())
    })
}

/// Parses an `HTTPScaledObject` (`http.keda.sh/v1alpha1`) from a JSON value.
pub fn parse_http_scaled_object(value: Value) -> Result<HTTPScaledObject, FieldError> {
    parse_object(value)
}

/// Parses an `InterceptorRoute` (`http.keda.sh/v1beta1`) from a JSON value.
pub fn parse_interceptor_route(value: Value) -> Result<InterceptorRoute, FieldError> {
    parse_object(value)
}

/// The identity of an object read straight from its JSON text, without
/// building a tree: what a sync loop needs to decide whether an object is
/// new before it pays for a full parse. Every field is borrowed when the
/// text has no escapes in it.
#[derive(Debug, Default, Deserialize)]
pub struct ObjectHead<'a> {
    /// `apiVersion`, if present.
    #[serde(rename = "apiVersion", default, borrow)]
    pub api_version: Option<Cow<'a, str>>,
    /// `kind`, if present.
    #[serde(default, borrow)]
    pub kind: Option<Cow<'a, str>>,
    /// `metadata`, if present (and an object).
    #[serde(default, borrow, deserialize_with = "optional_object")]
    pub metadata: Option<HeadMeta<'a>>,
}

/// The part of `metadata` an [`ObjectHead`] reads.
#[derive(Debug, Default, Deserialize)]
pub struct HeadMeta<'a> {
    /// `metadata.name`.
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    /// `metadata.namespace`.
    #[serde(default, borrow)]
    pub namespace: Option<Cow<'a, str>>,
    /// `metadata.resourceVersion`.
    #[serde(rename = "resourceVersion", default, borrow)]
    pub resource_version: Option<Cow<'a, str>>,
}

impl<'a> ObjectHead<'a> {
    /// Reads the head of one JSON object; `Err` when the text is not a JSON
    /// object (or its head fields have the wrong types).
    pub fn parse(json: &'a [u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice::<ObjectOnly<ObjectHead<'a>>>(json).map(|o| o.0)
    }

    /// Whether `apiVersion` and `kind` are `K`'s (or absent, as in the
    /// items of a list).
    pub fn fits<K: Resource<DynamicType = ()>>(&self) -> bool {
        self.api_version
            .as_deref()
            .is_none_or(|v| v == K::api_version(&()))
            && self.kind.as_deref().is_none_or(|k| k == K::kind(&()))
    }
}

/// `T` read only from a JSON object. Serde's derived structs also take an
/// array, field by field in order (`"metadata": ["x"]` would name the object
/// `x`), which a reading by name (a `Value`, the API server) never does: a
/// head must say what its object's `Value` says.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Fields<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Fields(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// An optional field that must be an object when present (see [`ObjectOnly`]).
fn optional_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<ObjectOnly<T>>::deserialize(d)?.map(|o| o.0))
}

/// Parses one object of kind `K` from JSON text: the same result as
/// [`parse_object`] on the parsed value, but deserialized straight into the
/// typed object (no intermediate `Value`) when it fits. Only input that does
/// not fit pays for a second pass, which finds the path of the field at
/// fault.
pub fn parse_object_json<K>(json: &[u8]) -> Result<K, FieldError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    if let Ok(head) = ObjectHead::parse(json)
        && head.fits::<K>()
    {
        return parse_object_json_unchecked(json);
    }
    parse_object_json_slow(json)
}

/// [`parse_object_json`] for text whose [`ObjectHead`] the caller has
/// already checked with [`ObjectHead::fits`]: one pass straight into the
/// typed object, and only on an error the pass that names the field.
pub fn parse_object_json_unchecked<K>(json: &[u8]) -> Result<K, FieldError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    match serde_json::from_slice::<K>(json) {
        Ok(object) => Ok(object),
        Err(_) => parse_object_json_slow(json),
    }
}

fn parse_object_json_slow<K>(json: &[u8]) -> Result<K, FieldError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let value: Value = serde_json::from_slice(json).map_err(|e| FieldError {
        object: UNKNOWN_OBJECT.to_string(),
        field: ".".to_string(),
        message: format!("not valid JSON: {e}"),
    })?;
    parse_object(value)
}

/// Parses one object of kind `K` from JSON or YAML text (JSON is YAML).
pub fn parse_object_str<K>(text: &str) -> Result<K, FieldError>
where
    K: Resource<DynamicType = ()> + DeserializeOwned,
{
    let value: Value = crate::yaml::from_str(text).map_err(|e| FieldError {
        object: UNKNOWN_OBJECT.to_string(),
        field: ".".to_string(),
        message: format!("not valid YAML or JSON: {e}"),
    })?;
    parse_object(value)
}

/// Splits YAML text (or JSON) into its documents, skipping empty ones (a
/// leading `---`, or a document holding only comments).
///
/// ```
/// let docs = api::yaml_documents("---\na: 1\n---\n# nothing\n---\nb: 2\n").unwrap();
/// assert_eq!(docs, [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]);
/// ```
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    crate::yaml::documents(text).map_err(|e| format!("YAML {e}"))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
