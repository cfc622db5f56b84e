//! Our `externalscaler.proto` against KEDA's published definition
//! (kedacore/keda, pkg/scalers/externalscaler/externalscaler.proto): the
//! package, the service and its methods (request, response, streaming),
//! and every message's fields by name, number, type and label. A change
//! that would break the wire contract with KEDA fails here.

use prost_types::field_descriptor_proto::{Label, Type};

/// KEDA's service: (method, request, response, server streaming).
const METHODS: &[(&str, &str, &str, bool)] = &[
    ("IsActive", "ScaledObjectRef", "IsActiveResponse", false),
    (
        "StreamIsActive",
        "ScaledObjectRef",
        "IsActiveResponse",
        true,
    ),
    (
        "GetMetricSpec",
        "ScaledObjectRef",
        "GetMetricSpecResponse",
        false,
    ),
    (
        "GetMetrics",
        "GetMetricsRequest",
        "GetMetricsResponse",
        false,
    ),
    (
        "StreamMetricSpec",
        "ScaledObjectRef",
        "GetMetricSpecResponse",
        true,
    ),
];

/// A field: (name, number, type, repeated, message type).
type Field = (&'static str, i32, Type, bool, &'static str);

/// MetricSpec and MetricValue share one layout: the metric's name, then
/// one number as an int64 and as a double.
const fn metric_fields(int: &'static str, float: &'static str) -> [Field; 3] {
    [
        ("metricName", 1, Type::String, false, ""),
        (int, 2, Type::Int64, false, ""),
        (float, 3, Type::Double, false, ""),
    ]
}

/// KEDA's messages: (message, fields).
const MESSAGES: &[(&str, &[Field])] = &[
    (
        "ScaledObjectRef",
        &[
            ("name", 1, Type::String, false, ""),
            ("namespace", 2, Type::String, false, ""),
            // map<string, string>: a repeated entry message.
            (
                "scalerMetadata",
                3,
                Type::Message,
                true,
                "ScalerMetadataEntry",
            ),
        ],
    ),
    ("IsActiveResponse", &[("result", 1, Type::Bool, false, "")]),
    (
        "GetMetricSpecResponse",
        &[("metricSpecs", 1, Type::Message, true, "MetricSpec")],
    ),
    (
        "MetricSpec",
        &metric_fields("targetSize", "targetSizeFloat"),
    ),
    (
        "GetMetricsRequest",
        &[
            (
                "scaledObjectRef",
                1,
                Type::Message,
                false,
                "ScaledObjectRef",
            ),
            ("metricName", 2, Type::String, false, ""),
        ],
    ),
    (
        "GetMetricsResponse",
        &[("metricValues", 1, Type::Message, true, "MetricValue")],
    ),
    (
        "MetricValue",
        &metric_fields("metricValue", "metricValueFloat"),
    ),
];

#[test]
fn the_proto_matches_kedas_published_definition() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let fds = protox::compile(["externalscaler.proto"], [dir]).unwrap();
    let file = &fds.file[0];
    assert_eq!(file.package(), "externalscaler");
    assert_eq!(file.syntax(), "proto3");

    assert_eq!(file.service.len(), 1);
    let service = &file.service[0];
    assert_eq!(service.name(), "ExternalScaler");
    let got: Vec<(String, String, String, bool)> = service
        .method
        .iter()
        .map(|m| {
            (
                m.name().to_string(),
                m.input_type().to_string(),
                m.output_type().to_string(),
                m.server_streaming(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, bool)> = METHODS
        .iter()
        .map(|(n, i, o, s)| {
            (
                n.to_string(),
                format!(".externalscaler.{i}"),
                format!(".externalscaler.{o}"),
                *s,
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(service.method.iter().all(|m| !m.client_streaming()));

    let names: Vec<&str> = file.message_type.iter().map(|m| m.name()).collect();
    let want_names: Vec<&str> = MESSAGES.iter().map(|m| m.0).collect();
    assert_eq!(names, want_names);
    for (msg, fields) in MESSAGES {
        let m = file.message_type.iter().find(|m| m.name() == *msg).unwrap();
        let got: Vec<(String, i32, Type, bool, String)> = m
            .field
            .iter()
            .map(|f| {
                (
                    f.name().to_string(),
                    f.number(),
                    f.r#type(),
                    f.label() == Label::Repeated,
                    f.type_name().rsplit('.').next().unwrap_or("").to_string(),
                )
            })
            .collect();
        let want: Vec<(String, i32, Type, bool, String)> = fields
            .iter()
            .map(|(n, num, t, r, tn)| (n.to_string(), *num, *t, *r, tn.to_string()))
            .collect();
        assert_eq!(got, want, "message {msg}");
    }
    // The map entry: string -> string.
    let entry = &file.message_type[0].nested_type[0];
    assert!(entry.options.as_ref().unwrap().map_entry());
    let kv: Vec<(&str, Type)> = entry.field.iter().map(|f| (f.name(), f.r#type())).collect();
    assert_eq!(kv, [("key", Type::String), ("value", Type::String)]);
}
