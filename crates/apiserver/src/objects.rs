//! The write verbs: create, update, patch, delete, with the metadata a real
//! API server stamps (resourceVersion, uid, creationTimestamp, generation).

use listwatch::{Reason, Store};
use serde_json::{Map, Value};

use crate::registry::ResourceDef;

/// A failed API call: the reason (and so the HTTP code) and the message of
/// its `Status` object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason:?}: {message}")]
pub struct ApiError {
    /// Machine-readable reason.
    pub reason: Reason,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
        }
    }
}

fn new_uid() -> String {
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// RFC 7386 JSON merge patch.
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    let o = obj.as_object_mut().expect("checked to be an object");
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut().expect("just made an object")
}

/// A non-empty string field of the object's metadata.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            o.remove(k);
        }
    }
    v
}

/// Checks that the body is an object of this resource's apiVersion/kind.
pub(crate) fn check_type(def: &ResourceDef, obj: &Value) -> Result<(), ApiError> {
    let Some(o) = obj.as_object() else {
        return Err(ApiError::new(
            Reason::Invalid,
            "the request body must be a JSON object",
        ));
    };
    let want_av = def.resource.api_version();
    if let Some(av) = o.get("apiVersion").and_then(Value::as_str)
        && av != want_av
    {
        return Err(ApiError::new(
            Reason::Invalid,
            format!("apiVersion {av:?} does not match the request path ({want_av})"),
        ));
    }
    if let Some(kind) = o.get("kind").and_then(Value::as_str)
        && kind != def.resource.kind
    {
        return Err(ApiError::new(
            Reason::Invalid,
            format!(
                "kind {kind:?} does not match the request path ({})",
                def.resource.kind
            ),
        ));
    }
    if o.get("metadata").is_some_and(|m| !m.is_object()) {
        return Err(ApiError::new(Reason::Invalid, "metadata must be an object"));
    }
    Ok(())
}

fn not_found(def: &ResourceDef, name: &str) -> ApiError {
    ApiError::new(
        Reason::NotFound,
        format!("{} \"{name}\" not found", def.gvr().qualified_resource()),
    )
}

fn conflict(def: &ResourceDef, name: &str) -> ApiError {
    ApiError::new(
        Reason::Conflict,
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            def.gvr().qualified_resource()
        ),
    )
}

fn store_error(e: listwatch::StoreError) -> ApiError {
    ApiError::new(Reason::Invalid, e.to_string())
}

/// Sets the namespace from the path (or checks it), for namespaced resources.
fn place(def: &ResourceDef, obj: &mut Value, namespace: &str) -> Result<(), ApiError> {
    let meta = meta_mut(obj);
    if def.resource.namespaced {
        if namespace.is_empty() {
            return Err(ApiError::new(
                Reason::NotFound,
                "the server could not find the requested resource (a namespaced resource needs a namespace in the path)",
            ));
        }
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !ns.is_empty() && ns != namespace => {
                return Err(ApiError::new(
                    Reason::BadRequest,
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), Value::String(namespace.to_owned()));
            }
        }
    } else {
        meta.remove("namespace");
    }
    Ok(())
}

/// Sets apiVersion, kind and resourceVersion as the store will, so the
/// returned object equals the stored one.
fn stamp(def: &ResourceDef, obj: &mut Value, rv: u64) {
    if let Some(o) = obj.as_object_mut() {
        o.insert(
            "apiVersion".into(),
            Value::String(def.resource.api_version()),
        );
        o.insert("kind".into(), Value::String(def.resource.kind.clone()));
    }
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rv.to_string()));
}

fn scope<'a>(def: &ResourceDef, namespace: &'a str) -> &'a str {
    if def.resource.namespaced {
        namespace
    } else {
        ""
    }
}

/// Creates `obj`; `rv` is the global counter, bumped on a write.
pub(crate) fn create(
    store: &Store,
    def: &ResourceDef,
    namespace: &str,
    mut obj: Value,
    rv: &mut u64,
) -> Result<Value, ApiError> {
    check_type(def, &obj)?;
    place(def, &mut obj, namespace)?;
    let name = match meta_str(&obj, "name") {
        Some(n) => n.to_owned(),
        None => match meta_str(&obj, "generateName") {
            Some(prefix) => format!("{prefix}{}", random_suffix()),
            None => {
                return Err(ApiError::new(
                    Reason::Invalid,
                    format!(
                        "{} is invalid: metadata.name: Required value: name or generateName is required",
                        def.resource.kind
                    ),
                ));
            }
        },
    };
    if store.get(scope(def, namespace), &name).is_some() {
        return Err(ApiError::new(
            Reason::AlreadyExists,
            format!(
                "{} \"{name}\" already exists",
                def.gvr().qualified_resource()
            ),
        ));
    }
    if def.status_subresource
        && let Some(o) = obj.as_object_mut()
    {
        o.remove("status");
    }
    let meta = meta_mut(&mut obj);
    meta.insert("name".into(), Value::String(name));
    meta.insert("uid".into(), Value::String(new_uid()));
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    meta.insert("generation".into(), Value::from(1));
    for k in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        meta.remove(k);
    }
    let next = *rv + 1;
    stamp(def, &mut obj, next);
    store.apply(obj.clone(), next).map_err(store_error)?;
    *rv = next;
    Ok(obj)
}

/// How a replacement object is derived from the stored one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// The main resource: `.status` is kept if it is a subresource.
    Main,
    /// `.../status`: only `.status` changes.
    Status,
}

/// Writes `new` over `old` (both full objects), keeping the identity
/// fields, honouring the status subresource and bumping `generation` when
/// anything but metadata and status changed. An update that changes
/// nothing is not written (no new resourceVersion), like the API server.
fn replace(
    store: &Store,
    def: &ResourceDef,
    old: &Value,
    new: Value,
    target: Target,
    rv: &mut u64,
) -> Result<Value, ApiError> {
    let mut result = match target {
        Target::Status => {
            let mut r = old.clone();
            if let (Some(o), Some(status)) = (r.as_object_mut(), new.get("status")) {
                o.insert("status".into(), status.clone());
            } else if let Some(o) = r.as_object_mut() {
                o.remove("status");
            }
            r
        }
        Target::Main => {
            let mut r = new;
            {
                let old_meta = old.get("metadata").and_then(Value::as_object);
                let meta = meta_mut(&mut r);
                for k in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    match old_meta.and_then(|m| m.get(k)) {
                        Some(v) => meta.insert(k.into(), v.clone()),
                        None => meta.remove(k),
                    };
                }
            }
            if def.status_subresource
                && let Some(o) = r.as_object_mut()
            {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            r
        }
    };
    let old_gen = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let generation = if spec_part(&result) != spec_part(old) {
        old_gen + 1
    } else {
        old_gen
    };
    meta_mut(&mut result).insert("generation".into(), Value::from(generation));
    let old_rv: u64 = meta_str(old, "resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    stamp(def, &mut result, old_rv);
    if &result == old {
        return Ok(result);
    }
    let next = *rv + 1;
    stamp(def, &mut result, next);
    if is_terminating(&result) && finalizers(&result).is_empty() {
        // The last finalizer of an object being deleted is gone: delete it.
        let (ns, name) = (
            meta_str(&result, "namespace").unwrap_or("").to_owned(),
            meta_str(&result, "name").unwrap_or("").to_owned(),
        );
        store.delete(&ns, &name, next).map_err(store_error)?;
    } else {
        store.apply(result.clone(), next).map_err(store_error)?;
    }
    *rv = next;
    Ok(result)
}

/// The object's `metadata.finalizers`.
pub(crate) fn finalizers(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Whether a delete was asked for (`metadata.deletionTimestamp` is set).
pub(crate) fn is_terminating(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

fn check_rv(def: &ResourceDef, name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    if let Some(want) = meta_str(new, "resourceVersion")
        && Some(want) != meta_str(old, "resourceVersion")
    {
        return Err(conflict(def, name));
    }
    Ok(())
}

/// PUT: replaces an existing object (or its status).
pub(crate) fn update(
    store: &Store,
    def: &ResourceDef,
    namespace: &str,
    name: &str,
    mut obj: Value,
    target: Target,
    rv: &mut u64,
) -> Result<Value, ApiError> {
    check_type(def, &obj)?;
    place(def, &mut obj, namespace)?;
    match meta_str(&obj, "name") {
        Some(n) if n != name => {
            return Err(ApiError::new(
                Reason::BadRequest,
                format!("the name of the object ({n}) does not match the name on the URL ({name})"),
            ));
        }
        Some(_) => {}
        None => {
            meta_mut(&mut obj).insert("name".into(), Value::String(name.to_owned()));
        }
    }
    let old = store
        .get(scope(def, namespace), name)
        .ok_or_else(|| not_found(def, name))?
        .to_value();
    check_rv(def, name, &old, &obj)?;
    replace(store, def, &old, obj, target, rv)
}

/// The patch formats we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// `application/merge-patch+json` (and strategic merge, treated alike).
    Merge,
    /// `application/apply-patch+yaml`: create, or merge into the existing object.
    Apply,
}

/// PATCH: merges `patch` into an existing object (or its status).
#[allow(clippy::too_many_arguments)]
pub(crate) fn patch(
    store: &Store,
    def: &ResourceDef,
    namespace: &str,
    name: &str,
    patch: Value,
    kind: PatchKind,
    manager: Option<&str>,
    target: Target,
    rv: &mut u64,
) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::new(
            Reason::Invalid,
            "the patch must be a JSON object",
        ));
    }
    let Some(old) = store.get(scope(def, namespace), name) else {
        if kind == PatchKind::Apply && target == Target::Main {
            let mut obj = patch;
            if meta_str(&obj, "name").is_none() && obj.is_object() {
                meta_mut(&mut obj).insert("name".into(), Value::String(name.to_owned()));
            }
            if let Some(manager) = manager
                && obj.is_object()
            {
                let applied = obj.clone();
                apply_ownership(&mut obj, &applied, manager);
            }
            return create(store, def, namespace, obj, rv);
        }
        return Err(not_found(def, name));
    };
    let old = old.to_value();
    check_rv(def, name, &old, &patch)?;
    let mut new = old.clone();
    if kind == PatchKind::Apply {
        check_type(def, &patch)?;
        if let Some(manager) = manager {
            apply_ownership(&mut new, &patch, manager);
        }
    }
    merge_patch(&mut new, &patch);
    check_type(def, &new)?;
    replace(store, def, &old, new, target, rv)
}

/// The field manager of server-side apply, simplified: `managedFields`
/// records, per manager, the fields its last apply set (in the `FieldsV1`
/// shape: `{"f:spec": {"f:replicas": {}}}`; lists are atomic). A field the
/// manager applied before and leaves out now is removed; fields of other
/// managers are left alone. Conflicts are not detected (every apply acts as
/// `force=true`, as the operator's do).
fn apply_ownership(obj: &mut Value, applied: &Value, manager: &str) {
    let mut fields = field_set(applied);
    if let Some(meta) = fields.get_mut("f:metadata").and_then(Value::as_object_mut) {
        for k in [
            "name",
            "namespace",
            "resourceVersion",
            "uid",
            "managedFields",
        ] {
            meta.remove(&format!("f:{k}"));
        }
    }
    if let Some(o) = fields.as_object_mut() {
        o.remove("f:apiVersion");
        o.remove("f:kind");
    }
    let entries = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let previous = entries
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == "Apply")
        .map(|e| e["fieldsV1"].clone());
    if let Some(previous) = previous {
        if previous == fields {
            // The same fields again: the entry (and its time) stays, so an
            // apply that changes nothing writes nothing.
            return;
        }
        remove_missing(obj, &previous, &fields);
    }
    let mut entries: Vec<Value> = entries
        .into_iter()
        .filter(|e| !(e["manager"] == manager && e["operation"] == "Apply"))
        .collect();
    entries.push(serde_json::json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied.get("apiVersion").cloned().unwrap_or(Value::Null),
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }));
    meta_mut(obj).insert("managedFields".into(), Value::Array(entries));
}

/// The fields `v` sets, in the `FieldsV1` shape.
fn field_set(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (format!("f:{k}"), field_set(v)))
                .collect(),
        ),
        _ => Value::Object(Map::new()),
    }
}

/// Removes from `obj` what `before` has and `now` lacks.
fn remove_missing(obj: &mut Value, before: &Value, now: &Value) {
    let (Some(before), Some(target)) = (before.as_object(), obj.as_object_mut()) else {
        return;
    };
    for (k, sub) in before {
        let Some(field) = k.strip_prefix("f:") else {
            continue;
        };
        match now.get(k) {
            None => {
                target.remove(field);
            }
            Some(now_sub) => {
                if let Some(child) = target.get_mut(field) {
                    remove_missing(child, sub, now_sub);
                }
            }
        }
    }
}

/// DELETE: removes the object and returns its last state; an object with
/// finalizers is only marked (`deletionTimestamp`) until they are removed.
pub(crate) fn delete(
    store: &Store,
    def: &ResourceDef,
    namespace: &str,
    name: &str,
    rv: &mut u64,
) -> Result<Value, ApiError> {
    let ns = scope(def, namespace);
    let Some(old) = store.get(ns, name) else {
        return Err(not_found(def, name));
    };
    let old = old.to_value();
    if !finalizers(&old).is_empty() {
        // Finalizers pending: the object stays, marked for deletion, until
        // the last one is removed (by an update or patch).
        if is_terminating(&old) {
            return Ok(old);
        }
        let mut marked = old.clone();
        let meta = meta_mut(&mut marked);
        meta.insert("deletionTimestamp".into(), Value::String(now_rfc3339()));
        meta.insert("deletionGracePeriodSeconds".into(), Value::from(0));
        let next = *rv + 1;
        stamp(def, &mut marked, next);
        store.apply(marked.clone(), next).map_err(store_error)?;
        *rv = next;
        return Ok(marked);
    }
    let next = *rv + 1;
    let gone = store.delete(ns, name, next).map_err(store_error)?;
    *rv = next;
    Ok(gone.map(|o| o.to_value()).unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        // Examples from RFC 7386, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, p, want) in cases {
            merge_patch(&mut target, &p);
            assert_eq!(target, want, "patch {p}");
        }
    }

    #[test]
    fn uids_look_like_uuids() {
        let u = new_uid();
        assert_eq!(u.len(), 36, "{u}");
        assert_ne!(new_uid(), new_uid());
    }
}
