//! Bad input: every problem is reported, naming the object and the exact field.

use api::{
    FieldError, HTTPScaledObject, InterceptorRoute, parse_http_scaled_object,
    parse_interceptor_route, parse_object, parse_object_str, validate_conditions,
    validate_http_scaled_object, validate_interceptor_route,
};
use serde_json::{Value, json};

fn yaml(text: &str) -> Value {
    api::yaml::from_str(text).unwrap()
}

/// `(field, message)` pairs of the validation errors, after checking that
/// every error names `object`.
fn fields(object: &str, errors: &[FieldError]) -> Vec<(String, String)> {
    for e in errors {
        assert_eq!(e.object, object, "{e}");
    }
    errors
        .iter()
        .map(|e| (e.field.clone(), e.message.clone()))
        .collect()
}

fn field_paths(object: &str, errors: &[FieldError]) -> Vec<String> {
    fields(object, errors).into_iter().map(|(f, _)| f).collect()
}

/// An object of kind `K` named `name` in `shop` (identity from its
/// `kube::Resource` impl).
fn object<K>(name: &str, spec: Value) -> K
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    api::parse_object(json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"name": name, "namespace": "shop"},
        "spec": spec,
    }))
    .unwrap()
}

fn httpso(spec: Value) -> HTTPScaledObject {
    object("web", spec)
}

fn route(spec: Value) -> InterceptorRoute {
    object("storefront", spec)
}

/// The InterceptorRoute `shop/storefront`, valid (target `storefront:8080`,
/// concurrency 10) but for the spec fields in `fields`, which add to or
/// replace those.
fn storefront(fields: Value) -> InterceptorRoute {
    let mut spec = json!({
        "target": {"service": "storefront", "port": 8080},
        "scalingMetric": {"concurrency": {"targetValue": 10}},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    route(spec)
}

/// A YAML manifest of kind `K` named `name` in `shop`; `spec` is YAML text.
fn manifest<K: kube::Resource<DynamicType = ()>>(name: &str, spec: &str) -> Value {
    let spec: String = spec.trim().lines().map(|l| format!("  {l}\n")).collect();
    yaml(&format!(
        "apiVersion: {}\nkind: {}\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}",
        K::api_version(&()),
        K::kind(&()),
    ))
}

#[test]
fn bad_host_patterns_are_reported_by_index() {
    let obj = httpso(json!({
        "hosts": ["ok.example.com", "*.", "a*b.com", "a..com", "example.com:http", "*.example.com", "*foo.com", "example.com:8080", "[::1]:80", "::1"],
        "scaleTargetRef": {"service": "web", "port": 8080},
    }));
    let errors = validate_http_scaled_object(&obj);
    let got = fields("shop/web", &errors);
    let paths: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.hosts[1]",
            "spec.hosts[2]",
            "spec.hosts[3]",
            "spec.hosts[4]",
            "spec.hosts[6]"
        ]
    );
    assert!(
        got[0].1.contains("needs a domain after \"*.\""),
        "{}",
        got[0].1
    );
    assert!(got[1].1.contains("whole first label"), "{}", got[1].1);
    assert!(got[2].1.contains("empty label"), "{}", got[2].1);
    // A port is stripped (upstream), so only a port that is not a number is wrong.
    assert_eq!(
        errors[3].to_string(),
        r#"shop/web: spec.hosts[4]: host "example.com:http": port "http" is not a number from 0 to 65535"#
    );
}

#[test]
fn interceptor_route_rule_paths_are_exact() {
    let obj = storefront(json!({
        "rules": [
            {"hosts": ["shop.example.com"]},
            {"hosts": ["ok.example.com", "bad_host.com"], "paths": [{"value": "/"}, {"value": "/a?b"}, {"value": "api"}],
             "headers": [{"name": "X Bad"}, {"name": "X-Ok", "value": "line\nbreak"}, {"name": ""}]},
        ],
        "staticRoutes": [
            {"rules": [{"hosts": ["*."]}], "response": {"statusCode": 600}},
        ],
    }));
    let errors = validate_interceptor_route(&obj);
    assert_eq!(
        field_paths("shop/storefront", &errors),
        [
            "spec.rules[1].hosts[1]",
            "spec.rules[1].paths[1].value",
            "spec.rules[1].headers[0].name",
            "spec.rules[1].headers[1].value",
            "spec.rules[1].headers[2].name",
            "spec.staticRoutes[0].rules[0].hosts[0]",
            "spec.staticRoutes[0].response.statusCode",
        ]
    );
    assert_eq!(
        errors[6].to_string(),
        "shop/storefront: spec.staticRoutes[0].response.statusCode: 600 is out of range 100-599"
    );
}

#[test]
fn port_out_of_range_and_port_xor_port_name() {
    let obj = httpso(json!({
        "scaleTargetRef": {"service": "web", "port": 70000},
        "coldStartTimeoutFailoverRef": {"service": "static", "port": 80, "portName": "http"},
    }));
    let errors = validate_http_scaled_object(&obj);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "shop/web: spec.scaleTargetRef.port: 70000 is out of range 1-65535",
            "shop/web: spec.coldStartTimeoutFailoverRef: exactly one of port or portName must be set, not both",
        ]
    );

    let obj = httpso(json!({"scaleTargetRef": {"service": "web", "port": 0}}));
    assert_eq!(
        field_paths("shop/web", &validate_http_scaled_object(&obj)),
        ["spec.scaleTargetRef.port"]
    );

    let obj = httpso(json!({"scaleTargetRef": {"service": "web"}}));
    let errors = validate_http_scaled_object(&obj);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["shop/web: spec.scaleTargetRef: exactly one of port or portName must be set"]
    );

    let obj = httpso(json!({"scaleTargetRef": {"service": "web", "port": 80, "portName": "http"}}));
    assert_eq!(
        field_paths("shop/web", &validate_http_scaled_object(&obj)),
        ["spec.scaleTargetRef"]
    );

    let obj = route(json!({
        "target": {"service": "storefront"},
        "scalingMetric": {"requestRate": {"targetValue": 5}},
        "coldStart": {"fallback": {"service": {"name": "static", "port": 80, "portName": "http"}}},
    }));
    assert_eq!(
        field_paths("shop/storefront", &validate_interceptor_route(&obj)),
        ["spec.target", "spec.coldStart.fallback.service"]
    );
}

#[test]
fn service_names_must_be_dns_labels() {
    let obj = httpso(json!({"scaleTargetRef": {"service": "", "port": 80, "name": "Web"}}));
    assert_eq!(
        field_paths("shop/web", &validate_http_scaled_object(&obj)),
        ["spec.scaleTargetRef.service", "spec.scaleTargetRef.name"]
    );
    let obj = route(json!({
        "target": {"service": "9lives", "portName": "HTTP"},
        "scalingMetric": {"concurrency": {"targetValue": 5}},
    }));
    assert_eq!(
        field_paths("shop/storefront", &validate_interceptor_route(&obj)),
        ["spec.target.service", "spec.target.portName"]
    );
}

#[test]
fn concurrency_and_request_rate_together_on_an_httpscaledobject() {
    let obj = httpso(json!({
        "scaleTargetRef": {"service": "web", "port": 8080},
        "scalingMetric": {"concurrency": {"targetValue": 10}, "requestRate": {"targetValue": 5}},
    }));
    let errors = validate_http_scaled_object(&obj);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "shop/web: spec.scalingMetric: concurrency and requestRate are mutually exclusive; set only one"
        ]
    );

    // On an InterceptorRoute both are fine, and neither is the error.
    let both = storefront(json!({
        "scalingMetric": {"concurrency": {"targetValue": 10}, "requestRate": {"targetValue": 5}},
    }));
    assert_eq!(validate_interceptor_route(&both), []);
    let neither = storefront(json!({"scalingMetric": {}}));
    assert_eq!(
        field_paths("shop/storefront", &validate_interceptor_route(&neither)),
        ["spec.scalingMetric"]
    );
}

#[test]
fn every_numeric_and_duration_rule() {
    let obj = httpso(json!({
        "pathPrefixes": ["/ok", "/a b", "no-slash-is-fine"],
        "headers": [{"name": "X-A"}, {"name": "X-A", "value": "1"}],
        "scaleTargetRef": {"service": "web", "port": 8080},
        "coldStartTimeoutFailoverRef": {"service": "static", "portName": "http", "timeoutSeconds": -1},
        "replicas": {"min": -1, "max": 0},
        "targetPendingRequests": 0,
        "scaledownPeriod": -5,
        "initialCooldownPeriod": -1,
        "scalingMetric": {"requestRate": {"targetValue": 0, "window": "1s", "granularity": "2s"}},
        "timeouts": {"conditionWait": "20", "responseHeader": "-1s"},
    }));
    assert_eq!(
        field_paths("shop/web", &validate_http_scaled_object(&obj)),
        [
            "spec.pathPrefixes[1]",
            "spec.headers[1].name",
            "spec.coldStartTimeoutFailoverRef.timeoutSeconds",
            "spec.replicas.min",
            "spec.replicas.max",
            "spec.targetPendingRequests",
            "spec.scaledownPeriod",
            "spec.initialCooldownPeriod",
            "spec.scalingMetric.requestRate.targetValue",
            "spec.scalingMetric.requestRate.granularity",
            "spec.timeouts.conditionWait",
            "spec.timeouts.responseHeader",
        ]
    );

    let obj = httpso(json!({
        "scaleTargetRef": {"service": "web", "port": 8080},
        "replicas": {"min": 150},
        "scalingMetric": {"requestRate": {"window": "0s", "granularity": "1x"}},
    }));
    let got = fields("shop/web", &validate_http_scaled_object(&obj));
    assert_eq!(
        got,
        [
            (
                "spec.replicas".to_string(),
                "min 150 is greater than max 100 (the default)".to_string()
            ),
            (
                "spec.scalingMetric.requestRate.window".to_string(),
                "\"0s\" must be longer than zero".to_string()
            ),
            (
                "spec.scalingMetric.requestRate.granularity".to_string(),
                "invalid duration \"1x\": unknown unit \"x\" (expected ns, us, ms, s, m or h) (examples: \"500ms\", \"20s\", \"1m30s\")".to_string()
            ),
        ]
    );

    let obj = storefront(json!({
        "scalingMetric": {"concurrency": {"targetValue": 0}},
        "timeouts": {"readiness": "soon", "request": "0s", "responseHeader": "1h"},
    }));
    assert_eq!(
        field_paths("shop/storefront", &validate_interceptor_route(&obj)),
        [
            "spec.scalingMetric.concurrency.targetValue",
            "spec.timeouts.readiness"
        ]
    );
}

#[test]
fn cold_start_needs_at_least_one_of_fallback_and_placeholder() {
    let base = |cold_start: Value| storefront(json!({"coldStart": cold_start}));
    let neither = base(json!({}));
    assert_eq!(
        field_paths("shop/storefront", &validate_interceptor_route(&neither)),
        ["spec.coldStart"]
    );
    let both = base(json!({
        "fallback": {"service": {"name": "static", "port": 80}},
        "placeholder": {"response": {"statusCode": 503}},
    }));
    // Valid upstream: the placeholder answers during a cold start.
    assert!(validate_interceptor_route(&both).is_empty());
    let bad_placeholder = base(json!({
        "placeholder": {"response": {
            "statusCode": 99,
            "body": "x",
            "bodyFromConfigMap": {"name": "Page", "key": "a/b"},
            "headers": {"Bad Name": "v", "X-Ok": "bad\u{0}value"},
        }},
    }));
    assert_eq!(
        field_paths(
            "shop/storefront",
            &validate_interceptor_route(&bad_placeholder)
        ),
        [
            "spec.coldStart.placeholder.response.statusCode",
            "spec.coldStart.placeholder.response",
            "spec.coldStart.placeholder.response.bodyFromConfigMap.name",
            "spec.coldStart.placeholder.response.bodyFromConfigMap.key",
            "spec.coldStart.placeholder.response.headers[Bad Name]",
            "spec.coldStart.placeholder.response.headers[X-Ok]",
        ]
    );
}

#[test]
fn object_name_without_namespace() {
    let obj = parse_http_scaled_object(json!({
        "metadata": {"name": "web"},
        "spec": {"scaleTargetRef": {"service": "web"}},
    }))
    .unwrap();
    let errors = validate_http_scaled_object(&obj);
    assert_eq!(errors[0].object, "<no-namespace>/web");
}

#[test]
fn non_object_json_is_an_error_naming_the_field() {
    for value in [
        json!([1, 2]),
        json!("str"),
        json!(42),
        json!(null),
        json!(true),
    ] {
        let err = parse_http_scaled_object(value.clone()).unwrap_err();
        assert_eq!(err.object, "<unknown>", "{value}");
        assert_eq!(err.field, ".", "{value}");
        assert!(
            err.message
                .starts_with("expected an object of kind HTTPScaledObject, found "),
            "{err}"
        );
    }
    let err = parse_interceptor_route(json!([1, 2])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "<unknown>: .: expected an object of kind InterceptorRoute, found an array"
    );
}

#[test]
fn type_errors_name_object_and_field_path() {
    let err = parse_http_scaled_object(manifest::<HTTPScaledObject>(
        "web",
        r#"scaleTargetRef: {service: web, port: "x"}"#,
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"shop/web: spec.scaleTargetRef.port: invalid type: string "x", expected i32"#
    );

    let err = parse_interceptor_route(manifest::<InterceptorRoute>(
        "storefront",
        "
target: {service: storefront, port: 80}
scalingMetric: {concurrency: {targetValue: 1}}
rules:
  - hosts: [a.example.com]
  - hosts: a.example.com
",
    ))
    .unwrap_err();
    assert_eq!(err.object, "shop/storefront");
    assert_eq!(err.field, "spec.rules[1].hosts");
    assert!(err.message.starts_with("invalid type: string"), "{err}");

    let err = parse_interceptor_route(json!({
        "metadata": {"name": "storefront", "namespace": "shop"},
        "spec": {"target": {"port": 80}, "scalingMetric": {}},
    }))
    .unwrap_err();
    assert_eq!(
        (err.field.as_str(), err.message.as_str()),
        ("spec.target", "missing field `service`")
    );

    let err = parse_interceptor_route(json!({
        "metadata": {"name": "storefront", "namespace": "shop"},
        "spec": {"target": {"service": "s", "port": 80}, "scalingMetric": {}, "staticRoutes": [{"response": {}, "responseMode": "Sometimes"}]},
    }))
    .unwrap_err();
    assert_eq!(err.field, "spec.staticRoutes[0].responseMode");
    assert!(err.message.contains("unknown variant `Sometimes`"), "{err}");
}

#[test]
fn wrong_api_version_or_kind() {
    let err = parse_http_scaled_object(json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"scaleTargetRef": {"service": "web", "port": 80}},
    }))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"shop/web: apiVersion: expected "http.keda.sh/v1alpha1", found "http.keda.sh/v1beta1""#
    );

    let err = parse_object::<InterceptorRoute>(json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "HTTPScaledObject",
        "metadata": {"name": "web"},
        "spec": {},
    }))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"<no-namespace>/web: kind: expected "InterceptorRoute", found "HTTPScaledObject""#
    );

    let err = parse_http_scaled_object(json!({"kind": 7, "metadata": {}})).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"<no-namespace>/<unnamed>: kind: expected the string "HTTPScaledObject", found a number"#
    );

    let err = parse_http_scaled_object(json!({"metadata": {"name": "web", "namespace": "shop"}}))
        .unwrap_err();
    assert_eq!(err.to_string(), "shop/web: .: missing field `spec`");
}

#[test]
fn text_that_is_not_yaml() {
    let err = parse_object_str::<HTTPScaledObject>("a: [unclosed").unwrap_err();
    assert_eq!(
        (err.object.as_str(), err.field.as_str()),
        ("<unknown>", ".")
    );
    assert!(err.message.starts_with("not valid YAML or JSON"), "{err}");
    let err = parse_object_str::<HTTPScaledObject>("[1, 2]").unwrap_err();
    assert_eq!(
        err.to_string(),
        "<unknown>: .: expected an object of kind HTTPScaledObject, found an array"
    );
}

#[test]
fn target_values_are_required_on_an_interceptor_route_only() {
    let obj = storefront(json!({
        "scalingMetric": {"concurrency": {}, "requestRate": {"window": "2m"}},
    }));
    let errors = validate_interceptor_route(&obj);
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "shop/storefront: spec.scalingMetric.concurrency.targetValue: required on an InterceptorRoute (there is no default)",
            "shop/storefront: spec.scalingMetric.requestRate.targetValue: required on an InterceptorRoute (there is no default)",
        ]
    );
    // An HTTPScaledObject defaults it to 100.
    let obj = httpso(json!({
        "scaleTargetRef": {"service": "web", "port": 8080},
        "scalingMetric": {"requestRate": {}},
    }));
    assert_eq!(validate_http_scaled_object(&obj), []);
}

#[test]
fn a_static_route_needs_at_least_one_rule() {
    let obj = storefront(json!({
        "staticRoutes": [
            {"rules": [{"paths": [{"value": "/healthz"}]}], "response": {"statusCode": 200}},
            {"response": {"statusCode": 200}},
            {"rules": [], "response": {"statusCode": 200}},
        ],
    }));
    let errors = validate_interceptor_route(&obj);
    assert_eq!(
        field_paths("shop/storefront", &errors),
        ["spec.staticRoutes[1].rules", "spec.staticRoutes[2].rules"]
    );
    assert_eq!(errors[0].message, "at least one rule is required");
}

#[test]
fn header_names_must_not_be_empty() {
    let obj = httpso(json!({
        "headers": [{"name": "X-Ok"}, {"name": "", "value": "v"}],
        "scaleTargetRef": {"service": "web", "port": 8080},
    }));
    assert_eq!(
        fields("shop/web", &validate_http_scaled_object(&obj)),
        [(
            "spec.headers[1].name".to_string(),
            "header name must not be empty".to_string()
        )]
    );
}

#[test]
fn static_response_body_length_and_source() {
    let base = |response: Value| {
        storefront(json!({"staticRoutes": [{"rules": [{}], "response": response}]}))
    };
    // The limit counts characters, as the API server's maxLength does.
    let at_limit = base(json!({"body": "\u{e9}".repeat(32768)}));
    assert_eq!(validate_interceptor_route(&at_limit), []);
    let over = base(json!({"body": "x".repeat(32769)}));
    assert_eq!(
        fields("shop/storefront", &validate_interceptor_route(&over)),
        [(
            "spec.staticRoutes[0].response.body".to_string(),
            "body is 32769 characters, more than 32768; use bodyFromConfigMap".to_string()
        )]
    );
    let both = base(json!({"body": "x", "bodyFromConfigMap": {"name": "page"}}));
    assert_eq!(
        field_paths("shop/storefront", &validate_interceptor_route(&both)),
        ["spec.staticRoutes[0].response"]
    );
}

#[test]
fn config_map_key_is_optional_and_the_name_is_not() {
    let base = |config_map: Value| {
        storefront(json!({
            "coldStart": {"placeholder": {"response": {"bodyFromConfigMap": config_map}}},
        }))
    };
    // Without a key (or with an empty one) the key comes from the request path.
    for ok in [json!({"name": "page"}), json!({"name": "page", "key": ""})] {
        assert_eq!(validate_interceptor_route(&base(ok.clone())), [], "{ok}");
    }
    let obj = base(json!({"name": "page"}));
    let response = &obj
        .spec
        .cold_start
        .as_ref()
        .unwrap()
        .placeholder
        .as_ref()
        .unwrap()
        .response;
    assert_eq!(response.body_from_config_map.as_ref().unwrap().key, None);
    assert_eq!(
        field_paths(
            "shop/storefront",
            &validate_interceptor_route(&base(json!({"name": ""})))
        ),
        ["spec.coldStart.placeholder.response.bodyFromConfigMap.name"]
    );
    // A ConfigMap reference needs its name.
    let err = parse_interceptor_route(json!({
        "apiVersion": "http.keda.sh/v1beta1",
        "kind": "InterceptorRoute",
        "metadata": {"name": "storefront", "namespace": "shop"},
        "spec": {
            "target": {"service": "storefront", "port": 8080},
            "scalingMetric": {"concurrency": {"targetValue": 10}},
            "coldStart": {"placeholder": {"response": {"bodyFromConfigMap": {"key": "a.html"}}}},
        },
    }))
    .unwrap_err();
    assert_eq!(
        err.field,
        "spec.coldStart.placeholder.response.bodyFromConfigMap"
    );
}

#[test]
fn conditions_follow_the_metav1_condition_rules() {
    let obj = httpso(json!({"scaleTargetRef": {"service": "web", "port": 8080}}));
    let condition = |fields: Value| {
        let mut c = json!({
            "type": "Ready",
            "status": "True",
            "reason": "Reconciled",
            "message": "",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        });
        c.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        serde_json::from_value(c).unwrap()
    };
    let good = [
        condition(json!({})),
        condition(
            json!({"type": "http.keda.sh/Synced", "status": "Unknown", "reason": "A,b:c", "observedGeneration": 0}),
        ),
    ];
    assert_eq!(validate_conditions(&obj.metadata, &good), []);

    let bad = [
        condition(json!({"type": "not ready", "status": "true"})),
        condition(json!({"type": "Ready", "reason": "", "observedGeneration": -1})),
        condition(json!({"type": "Ready", "reason": "Create-Error", "message": "m".repeat(32769)})),
    ];
    assert_eq!(
        fields("shop/web", &validate_conditions(&obj.metadata, &bad)),
        [
            (
                "status.conditions[0].type".to_string(),
                r#""not ready" is not a condition type: letters, digits, '-', '_' and '.', starting and ending with a letter or digit, after an optional "example.com/" prefix"#.to_string()
            ),
            (
                "status.conditions[0].status".to_string(),
                r#""true" is not one of True, False, Unknown"#.to_string()
            ),
            (
                "status.conditions[1].reason".to_string(),
                "must not be empty".to_string()
            ),
            (
                "status.conditions[1].observedGeneration".to_string(),
                "-1 must be at least 0".to_string()
            ),
            (
                "status.conditions[2].type".to_string(),
                r#"duplicate condition type "Ready" (also status.conditions[1])"#.to_string()
            ),
            (
                "status.conditions[2].reason".to_string(),
                r#""Create-Error" is not a condition reason: a letter, then letters, digits, '_', ',' and ':', not ending with ',' or ':'"#.to_string()
            ),
            (
                "status.conditions[2].message".to_string(),
                "message is 32769 characters, more than 32768".to_string()
            ),
        ]
    );
}
