//! Our generated CRDs against a checked-in description of upstream's
//! (`tests/upstream_crds.json`, written from kedacore/http-add-on's CRD
//! files): every field path with its default, required-ness, bounds,
//! lengths, enum, pattern, list type and CEL rules by meaning. Every
//! mismatch is reported, by path, in one run.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// Normalized attributes of one field.
type Attrs = BTreeMap<String, Value>;
/// Every field of a CRD by path.
type Fields = BTreeMap<String, Attrs>;

const DESCRIPTION: &str = include_str!("upstream_crds.json");

/// The meaning of a CEL rule of one of the three forms both CRDs use, so
/// that `has(self.a) != has(self.b)` and `has(self.b) != has(self.a)` agree.
fn meaning(rule: &str) -> String {
    fn has(term: &str) -> Option<&str> {
        let name = term.trim().strip_prefix("has(self.")?.strip_suffix(')')?;
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            .then_some(name)
    }
    fn names(terms: Vec<&str>) -> Option<String> {
        let mut names = terms.into_iter().map(has).collect::<Option<Vec<_>>>()?;
        names.sort_unstable();
        Some(names.join(", "))
    }
    let rule = rule.trim();
    let parsed = if let Some(inner) = rule.strip_prefix("!(").and_then(|r| r.strip_suffix(')')) {
        let terms: Vec<&str> = inner.split("&&").collect();
        (terms.len() == 2)
            .then(|| names(terms))
            .flatten()
            .map(|n| format!("at most one of {n}"))
    } else if rule.contains("!=") {
        let terms: Vec<&str> = rule.split("!=").collect();
        (terms.len() == 2)
            .then(|| names(terms))
            .flatten()
            .map(|n| format!("exactly one of {n}"))
    } else {
        names(rule.split("||").collect()).map(|n| format!("at least one of {n}"))
    };
    parsed.unwrap_or_else(|| format!("unrecognised rule {rule:?}"))
}

/// One attribute in a form both sides share (numbers as `f64` or `u64`,
/// rule meanings sorted).
fn normalize(name: &str, value: &Value) -> Value {
    match name {
        "minimum" | "maximum" => value.as_f64().map_or(value.clone(), Value::from),
        "minLength" | "maxLength" | "minItems" | "maxItems" => value
            .as_f64()
            .map_or(value.clone(), |n| Value::from(n as u64)),
        "cel" => {
            let mut meanings: Vec<String> = value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect();
            meanings.sort();
            Value::from(meanings)
        }
        _ => value.clone(),
    }
}

fn normalized(mut attrs: Attrs) -> Attrs {
    if attrs.get("type") == Some(&Value::from("array")) {
        attrs
            .entry("listType".into())
            .or_insert_with(|| Value::from("atomic"));
    }
    attrs
        .into_iter()
        .map(|(k, v)| {
            let v = normalize(&k, &v);
            (k, v)
        })
        .collect()
}

/// The attributes of one node of our schema.
fn our_attrs(node: &Map<String, Value>, required: bool) -> Attrs {
    let mut attrs = Attrs::new();
    let type_ = node.get("type").cloned();
    for key in [
        "type",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "enum",
        "pattern",
        "nullable",
    ] {
        if let Some(value) = node.get(key) {
            attrs.insert(key.into(), value.clone());
        }
    }
    // Integer formats (int32 / int64) do not change what the API server
    // accepts; string formats (date-time) do.
    if type_ == Some(Value::from("string"))
        && let Some(format) = node.get("format")
    {
        attrs.insert("format".into(), format.clone());
    }
    if required {
        attrs.insert("required".into(), Value::Bool(true));
    }
    if let Some(list_type) = node.get("x-kubernetes-list-type") {
        attrs.insert("listType".into(), list_type.clone());
    }
    if let Some(keys) = node.get("x-kubernetes-list-map-keys") {
        attrs.insert("listMapKeys".into(), keys.clone());
    }
    if let Some(Value::Array(rules)) = node.get("x-kubernetes-validations") {
        let meanings: Vec<Value> = rules
            .iter()
            .map(|r| Value::from(meaning(r["rule"].as_str().unwrap_or_default())))
            .collect();
        attrs.insert("cel".into(), Value::from(meanings));
    }
    normalized(attrs)
}

fn flatten(node: &Value, path: &str, required: bool, out: &mut Fields) {
    let Some(node) = node.as_object() else {
        out.insert(path.into(), Attrs::from([("schema".into(), node.clone())]));
        return;
    };
    out.insert(path.into(), our_attrs(node, required));
    let required_children: BTreeSet<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for (name, child) in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let child_path = format!("{path}.{name}");
        flatten(
            child,
            &child_path,
            required_children.contains(name.as_str()),
            out,
        );
    }
    if let Some(items) = node.get("items") {
        flatten(items, &format!("{path}[]"), false, out);
    }
    if let Some(values @ Value::Object(_)) = node.get("additionalProperties") {
        flatten(values, &format!("{path}{{}}"), false, out);
    }
}

/// Our fields under `spec` and `status` (upstream's root also has
/// `apiVersion`, `kind` and `metadata`, which the API server owns).
fn our_fields(crd_name: &str) -> Fields {
    let crd = api::crds()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(crd_name))
        .unwrap_or_else(|| panic!("we generate no CRD {crd_name}"));
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("a schema"),
    )
    .unwrap();
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut fields = Fields::new();
    for (name, child) in schema["properties"].as_object().expect("root properties") {
        flatten(child, name, required.contains(name.as_str()), &mut fields);
    }
    fields
}

fn join(path: &str, relative: &str) -> String {
    match relative.chars().next() {
        None => path.to_string(),
        Some('[' | '{') => format!("{path}{relative}"),
        Some(_) => format!("{path}.{relative}"),
    }
}

fn attrs_of(value: &Value) -> Attrs {
    value
        .as_object()
        .expect("attributes are an object")
        .iter()
        .filter(|(k, _)| k.as_str() != "$shape")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Upstream's fields, shapes expanded.
fn upstream_fields(description: &Value, crd_name: &str) -> Fields {
    let shapes = &description["shapes"];
    let mut fields = Fields::new();
    let listed = description["crds"][crd_name]["fields"]
        .as_object()
        .unwrap_or_else(|| panic!("no fields for {crd_name}"));
    for (path, spec) in listed {
        let own = attrs_of(spec);
        let Some(shape) = spec.get("$shape").and_then(Value::as_str) else {
            fields.insert(path.clone(), normalized(own));
            continue;
        };
        let shape = shapes[shape]
            .as_object()
            .unwrap_or_else(|| panic!("{path}: no shape {shape}"));
        for (relative, attrs) in shape {
            let mut attrs = attrs_of(attrs);
            if relative.is_empty() {
                attrs.extend(own.clone());
            }
            let full = join(path, relative);
            assert!(
                fields.insert(full.clone(), normalized(attrs)).is_none(),
                "{full} is described twice"
            );
        }
    }
    fields
}

fn show(value: Option<&Value>) -> String {
    value.map_or_else(|| "absent".to_string(), Value::to_string)
}

/// Every difference between `ours` and `upstream` for one CRD, minus the
/// documented deviations (a deviation that no longer differs is reported).
fn mismatches(
    crd_name: &str,
    description: &Value,
    upstream: &Fields,
    ours: &Fields,
) -> Vec<String> {
    let entry = &description["crds"][crd_name];
    let ours_only: Vec<&String> = entry["ours_only"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let is_ours_only = |path: &str| {
        ours_only.iter().any(|p| {
            path == p.as_str()
                || path
                    .strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[', '{']))
        })
    };
    let mut deviations: BTreeMap<(String, String), (Value, bool)> = entry["deviations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let attribute = d["attribute"].as_str().unwrap().to_string();
            let ours = normalize(&attribute, &d["ours"]);
            (
                (d["path"].as_str().unwrap().to_string(), attribute),
                (ours, false),
            )
        })
        .collect();

    let mut out = Vec::new();
    let paths: BTreeSet<&String> = upstream.keys().chain(ours.keys()).collect();
    for path in paths {
        let (up, our) = match (upstream.get(path), ours.get(path)) {
            (Some(up), Some(our)) => (up, our),
            (Some(_), None) => {
                out.push(format!(
                    "{crd_name}: {path}: upstream has this field, ours does not"
                ));
                continue;
            }
            (None, Some(_)) if is_ours_only(path) => continue,
            (None, Some(_)) => {
                out.push(format!(
                    "{crd_name}: {path}: ours has this field, upstream does not"
                ));
                continue;
            }
            (None, None) => unreachable!(),
        };
        let names: BTreeSet<&String> = up.keys().chain(our.keys()).collect();
        for name in names {
            let (u, o) = (up.get(name), our.get(name));
            if u == o {
                continue;
            }
            if let Some((allowed, used)) = deviations.get_mut(&(path.clone(), name.clone()))
                && o == Some(&*allowed)
            {
                *used = true;
                continue;
            }
            out.push(format!(
                "{crd_name}: {path}: {name}: upstream {}, ours {}",
                show(u),
                show(o)
            ));
        }
    }
    for ((path, name), (_, used)) in deviations {
        if !used {
            out.push(format!(
                "{crd_name}: {path}: {name}: listed as a deviation, but ours does not deviate that way (update upstream_crds.json)"
            ));
        }
    }
    out
}

#[test]
fn our_crds_accept_and_default_what_upstreams_do() {
    let description: Value = serde_json::from_str(DESCRIPTION).expect("upstream_crds.json");
    let names: Vec<&String> = description["crds"].as_object().unwrap().keys().collect();
    assert_eq!(
        names,
        [
            "httpscaledobjects.http.keda.sh",
            "interceptorroutes.http.keda.sh"
        ]
    );
    let mut all = Vec::new();
    for name in names {
        let upstream = upstream_fields(&description, name);
        let ours = our_fields(name);
        all.extend(mismatches(name, &description, &upstream, &ours));
    }
    assert!(
        all.is_empty(),
        "{} difference(s) from upstream's CRDs:\n{}",
        all.len(),
        all.join("\n")
    );
}

#[test]
fn rules_are_compared_by_meaning() {
    assert_eq!(
        meaning("has(self.portName) != has(self.port)"),
        meaning("has(self.port) != has(self.portName)")
    );
    assert_eq!(
        meaning("has(self.port) != has(self.portName)"),
        "exactly one of port, portName"
    );
    assert_eq!(
        meaning("has(self.fallback) || has(self.placeholder)"),
        "at least one of fallback, placeholder"
    );
    assert_eq!(
        meaning("!(has(self.body) && has(self.bodyFromConfigMap))"),
        "at most one of body, bodyFromConfigMap"
    );
    assert!(meaning("self.a > 1").starts_with("unrecognised rule"));
    assert!(meaning("has(self.a) != has(self.b) != has(self.c)").starts_with("unrecognised"));
}

/// The comparison itself, on a copy of upstream's description: a changed
/// default, a dropped rule, a missing field and an extra one are each
/// reported, all in one run.
#[test]
fn every_mismatch_is_reported_by_path() {
    let description: Value = serde_json::from_str(DESCRIPTION).unwrap();
    let name = "interceptorroutes.http.keda.sh";
    let upstream = upstream_fields(&description, name);
    let mut ours = upstream.clone();
    ours.get_mut("spec.staticRoutes[].responseMode")
        .unwrap()
        .insert("default".into(), Value::from("Always"));
    ours.get_mut("spec.coldStart").unwrap().remove("cel");
    ours.remove("spec.timeouts.request");
    ours.insert("spec.extra".into(), Attrs::new());
    let got = mismatches(name, &description, &upstream, &ours);
    assert_eq!(
        got,
        [
            format!(
                r#"{name}: spec.coldStart: cel: upstream ["at least one of fallback, placeholder"], ours absent"#
            ),
            format!("{name}: spec.extra: ours has this field, upstream does not"),
            format!(
                r#"{name}: spec.staticRoutes[].responseMode: default: upstream "WhenUnavailable", ours "Always""#
            ),
            format!("{name}: spec.timeouts.request: upstream has this field, ours does not"),
        ]
    );
}
