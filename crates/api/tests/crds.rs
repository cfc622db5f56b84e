//! The generated CustomResourceDefinitions: names, subresources, print
//! columns, CEL rules, and a structural schema.

use api::{crds_yaml, yaml_documents};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn parsed() -> Vec<CustomResourceDefinition> {
    let yaml = crds_yaml();
    let docs = yaml_documents(&yaml).unwrap();
    assert_eq!(docs.len(), 2, "two YAML documents");
    docs.into_iter()
        .map(|doc| {
            assert_eq!(doc["apiVersion"], "apiextensions.k8s.io/v1");
            assert_eq!(doc["kind"], "CustomResourceDefinition");
            serde_json::from_value(doc).unwrap()
        })
        .collect()
}

fn by_name(name: &str) -> CustomResourceDefinition {
    parsed()
        .into_iter()
        .find(|crd| crd.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no CRD {name}"))
}

fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    serde_json::to_value(
        version
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.clone(), c.type_.clone(), c.json_path.clone()))
        .collect()
}

#[test]
fn names_versions_and_subresources() {
    let crds = parsed();
    let names: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "httpscaledobjects.http.keda.sh",
            "interceptorroutes.http.keda.sh"
        ]
    );
    for (crd, kind, version) in [
        (&crds[0], "HTTPScaledObject", "v1alpha1"),
        (&crds[1], "InterceptorRoute", "v1beta1"),
    ] {
        assert_eq!(crd.spec.group, "http.keda.sh");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.versions.len(), 1);
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, version);
        assert!(v.served && v.storage);
        let subresources = v.subresources.as_ref().expect("subresources");
        assert!(subresources.status.is_some(), "{kind}: status subresource");
        assert!(subresources.scale.is_none());
    }
    assert_eq!(
        crds[0].spec.names.short_names.as_deref(),
        Some(&["httpso".to_string()][..])
    );
    assert_eq!(crds[0].spec.names.plural, "httpscaledobjects");
    assert_eq!(crds[1].spec.names.plural, "interceptorroutes");
}

#[test]
fn print_columns_match_upstream() {
    let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    let ready = r#".status.conditions[?(@.type=="Ready")].status"#;
    assert_eq!(
        columns(&by_name("httpscaledobjects.http.keda.sh")),
        [
            s("TargetWorkload", "string", ".status.targetWorkload"),
            s("TargetService", "string", ".status.targetService"),
            s("MinReplicas", "integer", ".spec.replicas.min"),
            s("MaxReplicas", "integer", ".spec.replicas.max"),
            s("Age", "date", ".metadata.creationTimestamp"),
            s("Ready", "string", ready),
        ]
    );
    assert_eq!(
        columns(&by_name("interceptorroutes.http.keda.sh")),
        [
            s("TargetService", "string", ".spec.target.service"),
            s("Ready", "string", ready),
            s("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
}

/// Walks a schema and reports where it is not structural
/// (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema>).
fn structural_problems(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: schema is not an object"));
        return;
    };
    let has = |key: &str| node.contains_key(key);
    let typed = has("type")
        || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
        || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !typed {
        out.push(format!("{path}: no type"));
    }
    if let Some(t) = node.get("type")
        && !t.is_string()
    {
        out.push(format!("{path}: type {t} is not a single type name"));
    }
    for forbidden in ["$ref", "definitions", "$defs", "$schema"] {
        if has(forbidden) {
            out.push(format!("{path}: {forbidden} is not allowed"));
        }
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        if node.get("type") != Some(&Value::from("object")) {
            out.push(format!("{path}: properties on a non-object"));
        }
        for (name, child) in properties {
            structural_problems(child, &format!("{path}.{name}"), out);
        }
        for required in node
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !properties.contains_key(required.as_str().unwrap_or_default()) {
                out.push(format!("{path}: required {required} is not a property"));
            }
        }
    }
    if let Some(items) = node.get("items") {
        if node.get("type") != Some(&Value::from("array")) {
            out.push(format!("{path}: items on a non-array"));
        }
        structural_problems(items, &format!("{path}[]"), out);
    }
    if let Some(additional) = node.get("additionalProperties") {
        if additional.is_object() {
            structural_problems(additional, &format!("{path}{{}}"), out);
        }
        if has("properties") {
            out.push(format!("{path}: both properties and additionalProperties"));
        }
    }
    // Inside the logical junctors only value validations may appear: no
    // types, defaults, nullability or descriptions, at any depth.
    for junctor in ["anyOf", "oneOf", "allOf", "not"] {
        let Some(branches) = node.get(junctor) else {
            continue;
        };
        let branches = match branches {
            Value::Array(list) => list.clone(),
            other => vec![other.clone()],
        };
        for (i, branch) in branches.iter().enumerate() {
            junctor_problems(branch, &format!("{path}.{junctor}[{i}]"), out);
        }
    }
}

fn junctor_problems(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        return;
    };
    for key in [
        "type",
        "default",
        "nullable",
        "description",
        "additionalProperties",
    ] {
        if node.contains_key(key) {
            out.push(format!("{path}: {key} inside a logical junctor"));
        }
    }
    for child in node
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        junctor_problems(child.1, &format!("{path}.{}", child.0), out);
    }
    if let Some(items) = node.get("items") {
        junctor_problems(items, &format!("{path}[]"), out);
    }
}

#[test]
fn schemas_are_structural() {
    for crd in parsed() {
        let schema = schema_of(&crd);
        let mut problems = Vec::new();
        structural_problems(&schema, "", &mut problems);
        assert!(
            problems.is_empty(),
            "{}: {problems:#?}",
            crd.metadata.name.unwrap()
        );
        assert!(schema["properties"]["spec"].is_object());
        assert!(schema["properties"]["status"].is_object());
        assert!(
            schema["properties"].get("metadata").is_none(),
            "metadata is the API server's"
        );
    }
}

#[test]
fn the_structural_check_catches_what_it_should() {
    let mut problems = Vec::new();
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "untyped": {"description": "x"},
            "mixed": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "multi": {"type": ["string", "null"]},
        },
        "required": ["missing"],
    });
    structural_problems(&bad, "", &mut problems);
    assert_eq!(problems.len(), 6, "{problems:#?}");
}

fn rules_at<'a>(schema: &'a Value, pointer: &str) -> Vec<(&'a str, &'a str)> {
    let node = schema
        .pointer(pointer)
        .unwrap_or_else(|| panic!("no {pointer}"));
    node["x-kubernetes-validations"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules at {pointer}"))
        .iter()
        .map(|r| (r["rule"].as_str().unwrap(), r["message"].as_str().unwrap()))
        .collect()
}

#[test]
fn cel_rules_for_the_exclusive_fields() {
    let httpso = schema_of(&by_name("httpscaledobjects.http.keda.sh"));
    let spec = "/properties/spec/properties";
    let upstream_rule = (
        "has(self.portName) != has(self.port)",
        "must define either the 'portName' or the 'port'",
    );
    assert_eq!(
        rules_at(&httpso, &format!("{spec}/scaleTargetRef")),
        [upstream_rule]
    );
    assert_eq!(
        rules_at(&httpso, &format!("{spec}/coldStartTimeoutFailoverRef")),
        [upstream_rule]
    );
    assert_eq!(
        rules_at(&httpso, &format!("{spec}/scalingMetric")),
        [(
            "!(has(self.concurrency) && has(self.requestRate))",
            "'concurrency' and 'requestRate' are mutually exclusive"
        )]
    );
    let port = httpso
        .pointer(&format!("{spec}/scaleTargetRef/properties/port"))
        .unwrap();
    assert_eq!(port["minimum"], 1.0);
    assert_eq!(port["maximum"], 65535.0);
    assert_eq!(
        httpso.pointer(&format!("{spec}/headers/x-kubernetes-list-type")),
        Some(&Value::from("map"))
    );

    let route = schema_of(&by_name("interceptorroutes.http.keda.sh"));
    let xor = (
        "has(self.port) != has(self.portName)",
        "exactly one of 'port' or 'portName' must be set",
    );
    assert_eq!(rules_at(&route, &format!("{spec}/target")), [xor]);
    assert_eq!(
        rules_at(
            &route,
            &format!("{spec}/coldStart/properties/fallback/properties/service")
        ),
        [xor]
    );
    assert_eq!(
        rules_at(&route, &format!("{spec}/scalingMetric")),
        [(
            "has(self.concurrency) || has(self.requestRate)",
            "at least one of 'concurrency' or 'requestRate' must be set"
        )]
    );
    // Upstream accepts both (the placeholder answers during a cold start).
    assert_eq!(
        rules_at(&route, &format!("{spec}/coldStart")),
        [(
            "has(self.fallback) || has(self.placeholder)",
            "set 'fallback', 'placeholder' or both"
        )]
    );
    let one_body = (
        "!(has(self.body) && has(self.bodyFromConfigMap))",
        "set 'body' or 'bodyFromConfigMap', not both",
    );
    for response in [
        format!("{spec}/coldStart/properties/placeholder/properties/response"),
        format!("{spec}/staticRoutes/items/properties/response"),
    ] {
        assert_eq!(rules_at(&route, &response), [one_body], "{response}");
    }
    // The API server validates defaults against CEL rules, so a field with a
    // rule must not carry a default that breaks it.
    assert!(
        route
            .pointer(&format!("{spec}/scalingMetric/default"))
            .is_none()
    );
    let required = route.pointer("/properties/spec/required").unwrap();
    assert!(
        required
            .as_array()
            .unwrap()
            .contains(&Value::from("scalingMetric"))
    );
}

/// What the API server writes into objects that leave a field out: the
/// CRD defaults, which must be upstream's, and nothing else.
#[test]
fn defaults_are_upstreams() {
    fn defaults(schema: &Value, path: &str, out: &mut Vec<(String, Value)>) {
        if let Some(default) = schema.get("default") {
            out.push((path.to_string(), default.clone()));
        }
        for (name, child) in schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            defaults(child, &format!("{path}.{name}"), out);
        }
        if let Some(items) = schema.get("items") {
            defaults(items, &format!("{path}[]"), out);
        }
    }
    let of = |crd: &str| {
        let mut out = Vec::new();
        defaults(&schema_of(&by_name(crd)), "", &mut out);
        out
    };
    let d = |path: &str, value: Value| (path.to_string(), value);
    assert_eq!(
        of("httpscaledobjects.http.keda.sh"),
        [
            d(
                ".spec.coldStartTimeoutFailoverRef.timeoutSeconds",
                30.into()
            ),
            d(".spec.scalingMetric.concurrency.targetValue", 100.into()),
            d(".spec.scalingMetric.requestRate.granularity", "1s".into()),
            d(".spec.scalingMetric.requestRate.targetValue", 100.into()),
            d(".spec.scalingMetric.requestRate.window", "1m".into()),
        ]
    );
    // No default targetValue on an InterceptorRoute: it is required there.
    assert_eq!(
        of("interceptorroutes.http.keda.sh"),
        [
            d(".spec.scalingMetric.requestRate.granularity", "1s".into()),
            d(".spec.scalingMetric.requestRate.window", "1m".into()),
            d(
                ".spec.staticRoutes[].responseMode",
                "WhenUnavailable".into()
            ),
        ]
    );
}

/// `nullable` would keep a `null` (and skip the default) where upstream's
/// CRD, which never sets it, has the API server prune it.
#[test]
fn no_field_is_nullable() {
    let yaml = crds_yaml();
    assert!(!yaml.contains("nullable"), "{yaml}");
}
