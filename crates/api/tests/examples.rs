//! The example manifests under `examples/manifests/` (used by the demos too):
//! each deserializes, validates clean and round-trips.

use std::path::{Path, PathBuf};

use api::{
    HTTPScaledObject, InterceptorRoute, ScaledObject, parse_object, validate_http_scaled_object,
    validate_interceptor_route, yaml_documents,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/manifests")
}

/// Every document of every example file, with `file#index` for messages.
fn example_documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/manifests exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for (i, doc) in yaml_documents(&text)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_iter()
            .enumerate()
        {
            documents.push((format!("{name}#{i}"), doc));
        }
    }
    documents
}

/// Fields the serializer writes although the input may leave them out,
/// because the Rust type holds their default rather than an `Option`.
const WRITTEN_DEFAULTS: &[(&str, &str)] = &[("responseMode", "WhenUnavailable"), ("name", "")];

/// Differences between `input` and `output`, ignoring fields that only
/// `output` has when they hold a known default.
fn differences(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, a_value) in a {
                let child = format!("{path}.{key}");
                match b.get(key) {
                    Some(b_value) => differences(a_value, b_value, &child, out),
                    None => out.push(format!("{child}: dropped")),
                }
            }
            for (key, b_value) in b {
                let is_default = WRITTEN_DEFAULTS
                    .iter()
                    .any(|(k, v)| k == key && b_value == &Value::from(*v));
                if !a.contains_key(key) && !is_default {
                    out.push(format!("{path}.{key}: added {b_value}"));
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (a_item, b_item)) in a.iter().zip(b).enumerate() {
                differences(a_item, b_item, &format!("{path}[{i}]"), out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

/// Deserialize, serialize, deserialize: both typed values equal, and the
/// serialized form equal to the input modulo written defaults.
fn assert_round_trips<K>(name: &str, input: &Value) -> K
where
    K: kube::Resource<DynamicType = ()>
        + DeserializeOwned
        + Serialize
        + PartialEq
        + std::fmt::Debug,
{
    let first: K = parse_object(input.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let serialized = serde_json::to_value(&first).unwrap();
    let second: K = parse_object(serialized.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(first, second, "{name}: typed value changed in a round trip");
    let mut diffs = Vec::new();
    differences(input, &serialized, "", &mut diffs);
    assert!(
        diffs.is_empty(),
        "{name}: serialized form differs: {diffs:#?}"
    );
    first
}

#[test]
fn every_example_parses_validates_and_round_trips() {
    let documents = example_documents();
    let mut seen = (0, 0);
    for (name, doc) in &documents {
        match doc["kind"].as_str() {
            Some("HTTPScaledObject") => {
                let obj: HTTPScaledObject = assert_round_trips(name, doc);
                let errors = validate_http_scaled_object(&obj);
                assert!(errors.is_empty(), "{name}: {errors:#?}");
                seen.0 += 1;
            }
            Some("InterceptorRoute") => {
                let obj: InterceptorRoute = assert_round_trips(name, doc);
                let errors = validate_interceptor_route(&obj);
                assert!(errors.is_empty(), "{name}: {errors:#?}");
                seen.1 += 1;
            }
            // Our ScaledObject type is the subset the operator writes, so only
            // check that the user-written companion objects parse.
            Some("ScaledObject") => {
                parse_object::<ScaledObject>(doc.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            other => panic!("{name}: unexpected kind {other:?}"),
        }
    }
    assert!(
        seen.0 >= 4 && seen.1 >= 4,
        "too few examples found: {seen:?}"
    );
}

/// The examples cover the features they claim to: a guard against an
/// example silently losing the field it exists to show.
#[test]
fn examples_cover_the_documented_fields() {
    let documents = example_documents();
    let all = serde_json::to_string(&documents.iter().map(|(_, d)| d).collect::<Vec<_>>()).unwrap();
    for needle in [
        r#""*.tenants.example.com""#,
        r#""pathPrefixes""#,
        r#""headers":[{"name":"X-Tenant-Tier","value":"premium"},{"name":"Authorization"}]"#,
        r#""portName":"http""#,
        r#""concurrency":{"targetValue":25}"#,
        r#""requestRate""#,
        r#""window":"2m""#,
        r#""granularity":"2s""#,
        r#""timeouts":{"conditionWait":"20s","responseHeader":"1m30s"}"#,
        r#""coldStartTimeoutFailoverRef""#,
        r#""replicas""#,
        r#""targetPendingRequests""#,
        r#""fallback""#,
        r#""placeholder""#,
        r#""responseMode":"Always""#,
        r#""responseMode":"WhenUnavailable""#,
        r#""bodyFromConfigMap""#,
        r#""readiness":"30s""#,
    ] {
        assert!(all.contains(needle), "no example has {needle}");
    }
}

#[test]
fn typed_fields_of_an_example() {
    let text =
        std::fs::read_to_string(examples_dir().join("httpso-wildcard-headers.yaml")).unwrap();
    let obj: HTTPScaledObject = api::parse_object_str(&text).unwrap();
    assert_eq!(obj.metadata.namespace.as_deref(), Some("saas"));
    let spec = &obj.spec;
    assert_eq!(spec.scale_target_ref.port_name.as_deref(), Some("http"));
    assert_eq!(spec.scale_target_ref.port, None);
    let headers = spec.headers.as_ref().unwrap();
    assert_eq!(headers[0].value.as_deref(), Some("premium"));
    assert_eq!(headers[1].value, None);
    let hosts: Vec<_> = spec
        .hosts
        .iter()
        .flatten()
        .map(|h| api::HostPattern::parse(h).unwrap())
        .collect();
    assert_eq!(
        hosts,
        [
            api::HostPattern::Wildcard("tenants.example.com".into()),
            api::HostPattern::Exact("api.example.com".into()),
        ]
    );
    let timeouts = spec.timeouts.as_ref().unwrap();
    assert_eq!(
        api::parse_go_duration(timeouts.response_header.as_deref().unwrap()),
        Ok(std::time::Duration::from_secs(90))
    );
}
